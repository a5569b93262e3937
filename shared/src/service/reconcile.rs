//! Reconciliation with GitHub: a deployment that holds its scope's lock while it is approved
//! or deploying learns how it ended from a `deployment_status` webhook. GitHub does not
//! redeliver a failed delivery by itself, so when that one is lost the lock would be held
//! forever. The sweeper therefore asks GitHub about deployments in flight for longer than
//! [`RECONCILE_AFTER`] and applies what it finds, as if the lost delivery had arrived:
//!
//! - the deployment's newest status: `success` opens the verification window, `failure` or
//!   `error` fails it, `inactive` (GitHub's word for a deployment another one replaced before
//!   it reported an end) cancels it; `queued`, `pending`, `in_progress` and `waiting` mean it
//!   is still going;
//! - else its workflow run: completed with `success` opens the window; `cancelled` or
//!   `skipped` cancels it; any other conclusion (`failure`, `timed_out`, ...) fails it; a run
//!   not completed is still going;
//! - when GitHub has said nothing final for the scope's `deploy_timeout` (default 1 hour) —
//!   or cannot be asked — the deployment fails with that reason.
//!
//! Failing or cancelling releases the lock in the same save (and so moves the scope's queue);
//! every outcome is announced like the status it stands for.

use std::time::Duration;

use jiff::Timestamp;

use super::lifecycle::{self, LifecycleOutcome};
use super::{update_deployment, ServiceError, Services};
use crate::domain::deployment::{Action, Actor, CallbackState, Deployment, Head, State};
use crate::domain::events::DeploymentStatus;
use crate::domain::ids::GitHubDeploymentState;
use crate::domain::policy::format_duration;
use crate::domain::time::add;
use crate::notify::Notification;

/// A deployment approved or deploying for less than this is not asked about: its own
/// webhooks normally arrive well within it.
pub const RECONCILE_AFTER: Duration = Duration::from_secs(10 * 60);

/// What reconciling one deployment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Nothing to do: not in flight, not yet due, or GitHub says it is still going.
    StillGoing,
    /// GitHub's answer moved it to this state.
    Moved(State),
    /// GitHub said nothing final within `deploy_timeout`: failed, lock released.
    TimedOut,
}

/// Since when a deployment has been in flight (approved, then deploying).
fn in_flight_since(dep: &Deployment) -> Timestamp {
    dep.deploy_started_at.unwrap_or(dep.updated_at)
}

/// The scope's `deploy_timeout`.
fn deploy_timeout(svc: &Services, dep: &Deployment) -> Duration {
    svc.policy
        .for_scope(&dep.repo, &dep.environment)
        .map(|e| e.deploy_timeout)
        .unwrap_or(crate::domain::policy::DEFAULT_DEPLOY_TIMEOUT)
}

/// Is `dep` one the sweeper should ask GitHub about at `now`? An approved deployment whose
/// answer GitHub has not had yet (a pre-deploy backup running, a retry pending) is left to
/// the answer's retries until `deploy_timeout`; any other in flight for
/// [`RECONCILE_AFTER`] (or its `deploy_timeout`, when shorter) is asked about.
pub fn is_due(svc: &Services, dep: &Deployment, now: Timestamp) -> bool {
    if !matches!(dep.state, State::Approved | State::Deploying) {
        return false;
    }
    let timeout = deploy_timeout(svc, dep);
    let after = if dep.callback == CallbackState::Pending {
        timeout
    } else {
        timeout.min(RECONCILE_AFTER)
    };
    add(in_flight_since(dep), after) <= now
}

/// Asks GitHub where `deployment_id` is and applies it (see the module documentation).
pub async fn reconcile(svc: &Services, deployment_id: &str) -> Result<Reconciled, ServiceError> {
    let now = svc.now();
    let Some(dep) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(Reconciled::StillGoing);
    };
    if !is_due(svc, &dep, now) {
        return Ok(Reconciled::StillGoing);
    }
    let timeout = deploy_timeout(svc, &dep);

    if let (Some(github), Some(installation)) = (svc.github.as_ref(), dep.installation_id) {
        if let Some(github_id) = dep.github_deployment_id {
            match github
                .latest_deployment_status(installation, dep.repo.as_str(), github_id)
                .await
            {
                Ok(Some(state)) => {
                    let state = GitHubDeploymentState::parse(&state);
                    if is_final(&state) {
                        return replay_status(svc, &dep, github_id, state).await;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(deployment_id, error = %e, "could not read the deployment's statuses from GitHub");
                }
            }
        }
        if let Some(run_id) = dep.run_id {
            match github
                .workflow_run(installation, dep.repo.as_str(), run_id)
                .await
            {
                Ok(run) if run.status == "completed" => {
                    let conclusion = run.conclusion.unwrap_or_else(|| "unknown".into());
                    return run_ended(svc, &dep, run_id, &conclusion, now).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(deployment_id, run_id, error = %e, "could not read the workflow run from GitHub");
                }
            }
        }
    }

    if add(in_flight_since(&dep), timeout) > now {
        return Ok(Reconciled::StillGoing);
    }
    let why = format!(
        "GitHub reported no end of this deployment within {} (deploy_timeout): failed, lock released",
        format_duration(timeout)
    );
    Ok(
        match end(svc, &dep.id, Action::Fail, &why, now, false).await? {
            Some(_) => Reconciled::TimedOut,
            None => Reconciled::StillGoing,
        },
    )
}

/// Is `dep` a rollback whose own GitHub deployment the sweeper should ask about at `now`: rolling
/// back through a deployment shipgate knows, for [`RECONCILE_AFTER`] (or `deploy_timeout`
/// when shorter)?
pub fn rollback_is_due(svc: &Services, dep: &Deployment, now: Timestamp) -> bool {
    if dep.state != State::RollingBack {
        return false;
    }
    let Some(rb) = dep.rollback.as_ref() else {
        return false;
    };
    rb.github_deployment_id.is_some()
        && add(rb.started_at, deploy_timeout(svc, dep).min(RECONCILE_AFTER)) <= now
}

/// The rollback's own final status was lost: asks GitHub for it and applies it as the lost
/// delivery would have been (`success`: rolled back; `failure`/`error`: failed). When GitHub
/// has said nothing final for `deploy_timeout`, the rollback fails — the lock is freed and
/// Slack says so, for a person to look at what runs there.
pub async fn reconcile_rollback(
    svc: &Services,
    deployment_id: &str,
) -> Result<Reconciled, ServiceError> {
    let now = svc.now();
    let Some(dep) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(Reconciled::StillGoing);
    };
    if !rollback_is_due(svc, &dep, now) {
        return Ok(Reconciled::StillGoing);
    }
    let Some(rb) = dep.rollback.clone() else {
        return Ok(Reconciled::StillGoing);
    };
    let Some(rollback_id) = rb.github_deployment_id else {
        return Ok(Reconciled::StillGoing);
    };
    if let (Some(github), Some(installation)) = (svc.github.as_ref(), dep.installation_id) {
        match github
            .latest_deployment_status(installation, dep.repo.as_str(), rollback_id)
            .await
        {
            Ok(Some(state)) => {
                let state = GitHubDeploymentState::parse(&state);
                if state == GitHubDeploymentState::Success || state.is_failed() {
                    let ev = DeploymentStatus {
                        github_deployment_id: rollback_id,
                        repo: dep.repo.clone(),
                        environment: dep.environment.clone(),
                        sha: rb.target_sha.parse().unwrap_or_else(|_| dep.sha.clone()),
                        git_ref: dep.git_ref.clone(),
                        state,
                        description: Some(
                            "reported by GitHub when shipgate asked (the webhook was lost)".into(),
                        ),
                        run_id: None,
                        rollback_of: None,
                    };
                    return Ok(match lifecycle::deployment_status(svc, &ev).await? {
                        LifecycleOutcome::Moved { state, .. } => Reconciled::Moved(state),
                        _ => Reconciled::StillGoing,
                    });
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(deployment_id, error = %e, "could not read the rollback deployment's statuses from GitHub");
            }
        }
    }
    let timeout = deploy_timeout(svc, &dep);
    if add(rb.started_at, timeout) > now {
        return Ok(Reconciled::StillGoing);
    }
    let why = format!(
        "the rollback to {} reported no end within {} (deploy_timeout): failed, lock released; check what runs in {}",
        crate::domain::ids::short_sha(&rb.target_sha),
        format_duration(timeout),
        dep.environment
    );
    if super::rollback::fail_rolling_back(svc, &dep.id, now, &why)
        .await?
        .is_none()
    {
        return Ok(Reconciled::StillGoing);
    }
    tracing::warn!(
        deployment_id,
        "a rollback GitHub said nothing about timed out"
    );
    Ok(Reconciled::TimedOut)
}

fn is_final(state: &GitHubDeploymentState) -> bool {
    matches!(
        state,
        GitHubDeploymentState::Success | GitHubDeploymentState::Inactive
    ) || state.is_failed()
}

/// Applies a final status GitHub reports, as the lost `deployment_status` would have been.
async fn replay_status(
    svc: &Services,
    dep: &Deployment,
    github_id: u64,
    state: GitHubDeploymentState,
) -> Result<Reconciled, ServiceError> {
    if state == GitHubDeploymentState::Inactive {
        let why = format!(
            "GitHub marks deployment {github_id} inactive: another deployment replaced it before it reported an end"
        );
        return Ok(
            match end(svc, &dep.id, Action::Cancel, &why, svc.now(), false).await? {
                Some(d) => Reconciled::Moved(d.state),
                None => Reconciled::StillGoing,
            },
        );
    }
    let ev = DeploymentStatus {
        github_deployment_id: github_id,
        repo: dep.repo.clone(),
        environment: dep.environment.clone(),
        sha: dep.sha.clone(),
        git_ref: dep.git_ref.clone(),
        state,
        description: Some("reported by GitHub when shipgate asked (the webhook was lost)".into()),
        run_id: dep.run_id,
        rollback_of: None,
    };
    Ok(match lifecycle::deployment_status(svc, &ev).await? {
        LifecycleOutcome::Moved { state, .. } => Reconciled::Moved(state),
        LifecycleOutcome::Unchanged { .. } | LifecycleOutcome::Untracked => Reconciled::StillGoing,
    })
}

/// Applies the end of the deployment's workflow run.
async fn run_ended(
    svc: &Services,
    dep: &Deployment,
    run_id: u64,
    conclusion: &str,
    now: Timestamp,
) -> Result<Reconciled, ServiceError> {
    let why =
        format!("workflow run {run_id} ended {conclusion} (the deployment's own status was lost)");
    let action = match conclusion {
        "success" => return begin_verification(svc, dep, &why, now).await,
        "cancelled" | "skipped" => Action::Cancel,
        _ => Action::Fail,
    };
    // The run is over: GitHub waits for no answer about it any more.
    Ok(match end(svc, &dep.id, action, &why, now, true).await? {
        Some(d) => Reconciled::Moved(d.state),
        None => Reconciled::StillGoing,
    })
}

/// The run succeeded but its deployment's `success` never arrived: the window opens now.
async fn begin_verification(
    svc: &Services,
    dep: &Deployment,
    why: &str,
    now: Timestamp,
) -> Result<Reconciled, ServiceError> {
    let window = svc
        .policy
        .for_scope(&dep.repo, &dep.environment)
        .map(|e| e.verification_window)
        .unwrap_or_default();
    let until = add(now, window);
    let mut moved = false;
    let saved = update_deployment(svc, &dep.id, |d| {
        moved = false;
        let event = d
            .apply(Action::BeginVerification, now, &Actor("github".into()), why)
            .ok()?;
        d.verify_until = Some(until);
        moved = true;
        Some(vec![event])
    })
    .await?;
    let Some(dep) = saved.filter(|_| moved) else {
        return Ok(Reconciled::StillGoing);
    };
    let head = Head {
        sha: dep.sha.to_string(),
        git_ref: dep.git_ref.clone(),
        deployment_id: dep.id.clone(),
        at: now,
        verify_until: dep.verify_until,
    };
    svc.repo.set_head(&dep.scope(), head, false).await?;
    svc.publish(Notification::deployment(now, &dep, "verifying"))
        .await;
    Ok(Reconciled::Moved(dep.state))
}

/// Fails or cancels an in-flight deployment with `why`, releasing its lock; announced.
/// `run_over`: its workflow run has ended, so an answer GitHub never got is no longer owed.
async fn end(
    svc: &Services,
    deployment_id: &str,
    action: Action,
    why: &str,
    now: Timestamp,
    run_over: bool,
) -> Result<Option<Deployment>, ServiceError> {
    let mut moved = false;
    let saved = update_deployment(svc, deployment_id, |d| {
        moved = false;
        if !matches!(d.state, State::Approved | State::Deploying) {
            return None;
        }
        let event = d.apply(action, now, &Actor::system(), why).ok()?;
        d.reason = Some(why.to_string());
        if run_over && d.callback == CallbackState::Pending {
            d.callback = CallbackState::None;
        }
        moved = true;
        Some(vec![event])
    })
    .await?;
    let Some(dep) = saved.filter(|_| moved) else {
        return Ok(None);
    };
    tracing::warn!(deployment_id, state = %dep.state, reason = why, "reconciled an in-flight deployment with GitHub");
    svc.publish(Notification::deployment(now, &dep, dep.state.as_str()))
        .await;
    Ok(Some(dep))
}
