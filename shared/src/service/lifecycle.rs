//! Deployment lifecycle after the gate: GitHub's `deployment` and `deployment_status` events,
//! verification windows, CI outcomes and commit times.
//!
//! GitHub may deliver statuses out of order (a `success` before the `in_progress`); every
//! status is applied only when the state machine allows it, so a late status is recorded in
//! the audit log and otherwise ignored, and the record ends where the deployment really is.
//!
//! A verification window that has ended is closed by whoever reads the deployment next (a
//! status here, the gate, an alert) with the sweeper's own [`finish_verification`], through
//! [`close_if_ended`] and [`close_deployment_if_ended`].

use jiff::Timestamp;

use super::update_deployment;
use super::{ServiceError, Services};
use crate::domain::deployment::{Action, Actor, Deployment, Head, State};
use crate::domain::events::{CommitsPushed, WorkflowRunCompleted};
use crate::domain::ids::{GitHubDeploymentState, RepoName, Sha};
use crate::domain::scope::Scope;
use crate::notify::Notification;
use crate::store::repo::{PushRecord, PushedCommit, ShaFact};

pub use crate::domain::events::{DeploymentCreated, DeploymentStatus};

/// What a lifecycle event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleOutcome {
    /// The deployment moved to this state.
    Moved { deployment_id: String, state: State },
    /// The event belongs to a known deployment but changes nothing (late or repeated status).
    Unchanged { deployment_id: String, state: State },
    /// shipgate never gated this deployment; the event was recorded.
    Untracked,
}

/// Is a GitHub deployment that names `shipgate_rollback_of` really the rollback shipgate
/// created for `dep`? The payload is written by whoever creates the deployment, so any
/// repository the App is installed on could name any deployment: only the same repository,
/// the same environment, the rollback's target sha and the GitHub deployment id shipgate got
/// back when it created the rollback deployment make it so.
fn owns_rollback_event(dep: &Deployment, scope: &Scope, github_id: u64, sha: &str) -> bool {
    dep.repo == scope.repo
        && dep.environment == scope.environment
        && dep
            .rollback
            .as_ref()
            .is_some_and(|rb| rb.github_deployment_id == Some(github_id) && rb.target_sha == sha)
}

async fn find(
    svc: &Services,
    github_id: u64,
    run_id: Option<u64>,
    rollback_of: Option<&str>,
    scope: &Scope,
    sha: &str,
) -> Result<Option<Deployment>, ServiceError> {
    let environment = scope.environment.as_str();
    if let Some(d) = svc.repo.deployment_for_github(github_id).await? {
        return Ok(Some(d));
    }
    if let Some(id) = rollback_of {
        // A deployment claiming to be a rollback that is not shipgate's own is recorded and
        // ignored; it is not matched to anything else either.
        return match svc.repo.get_deployment(id).await? {
            Some(d) if owns_rollback_event(&d, scope, github_id, sha) => Ok(Some(d)),
            Some(_) | None => {
                tracing::warn!(
                    github_deployment_id = github_id,
                    rollback_of = id,
                    repo = %scope.repo,
                    environment,
                    "a deployment names a shipgate rollback it is not; ignored"
                );
                Ok(None)
            }
        };
    }
    if let Some(run) = run_id {
        if let Some(d) = svc.repo.deployment_for_run(run, environment).await? {
            return Ok(Some(d));
        }
    }
    // Deployments not created by an Actions job: the scope's lock holder, if it is the
    // same sha, is the one being deployed.
    if let Some(holder) = svc.repo.lock_holder(scope).await? {
        if let Some(d) = svc.repo.get_deployment(&holder).await? {
            if d.sha == sha {
                return Ok(Some(d));
            }
        }
    }
    Ok(None)
}

async fn record_untracked(
    svc: &Services,
    kind: &str,
    github_id: u64,
    detail: serde_json::Value,
) -> Result<(), ServiceError> {
    let now = svc.now();
    let name = format!("{github_id}#{}", now.as_millisecond());
    svc.repo
        .put_meta(&format!("untracked-{kind}"), &name, &detail)
        .await?;
    tracing::info!(
        github_deployment_id = github_id,
        kind,
        "recorded an event for a deployment shipgate did not gate"
    );
    Ok(())
}

/// Links a GitHub deployment to the shipgate deployment it carries out.
pub async fn deployment_created(
    svc: &Services,
    ev: &DeploymentCreated,
) -> Result<LifecycleOutcome, ServiceError> {
    let Some(dep) = find(
        svc,
        ev.github_deployment_id,
        ev.run_id,
        ev.rollback_of.as_deref(),
        &Scope::new(ev.repo.clone(), ev.environment.clone()),
        ev.sha.as_str(),
    )
    .await?
    else {
        record_untracked(
            svc,
            "deployment",
            ev.github_deployment_id,
            serde_json::json!({"repo": ev.repo, "environment": ev.environment, "sha": ev.sha, "ref": ev.git_ref}),
        )
        .await?;
        return Ok(LifecycleOutcome::Untracked);
    };
    let now = svc.now();
    let gh = ev.github_deployment_id;
    // A second GitHub deployment for a deployment that is rolling back is the rollback's
    // own (the rollback workflow's run is linked to the deployment it rolls back).
    let is_rollback = dep.rollback.as_ref().and_then(|r| r.github_deployment_id)
        == Some(ev.github_deployment_id)
        || (dep.state == State::RollingBack
            && dep
                .github_deployment_id
                .is_some_and(|g| g != ev.github_deployment_id));
    let updated = update_deployment(svc, &dep.id, |d| {
        if is_rollback {
            let rb = d.rollback.as_mut()?;
            if rb.github_deployment_id == Some(gh) {
                return None;
            }
            rb.github_deployment_id = Some(gh);
        } else {
            if d.github_deployment_id == Some(gh) {
                return None;
            }
            d.github_deployment_id = Some(gh);
        }
        Some(vec![d.note(
            now,
            &Actor::system(),
            "github_deployment_linked",
            format!("GitHub deployment {gh}"),
        )])
    })
    .await?;
    let dep = updated.unwrap_or(dep);
    Ok(LifecycleOutcome::Unchanged {
        deployment_id: dep.id,
        state: dep.state,
    })
}

fn window_end(svc: &Services, dep: &Deployment, now: Timestamp) -> Timestamp {
    let window = svc
        .policy
        .for_scope(&dep.repo, &dep.environment)
        .map(|e| e.verification_window)
        .unwrap_or_default();
    jiff::SignedDuration::try_from(window)
        .ok()
        .and_then(|w| now.checked_add(w).ok())
        .unwrap_or(now)
}

/// Applies a deployment status to the deployment it belongs to.
pub async fn deployment_status(
    svc: &Services,
    ev: &DeploymentStatus,
) -> Result<LifecycleOutcome, ServiceError> {
    // Rollback drills deploy on purpose through GitHub deployments shipgate created; their
    // statuses time the drill's legs and must not move any gated deployment (the lock holder
    // lookup below would otherwise match a drill leg of the current sha).
    if crate::service::drill::on_deployment_status(svc, ev).await? {
        return Ok(LifecycleOutcome::Untracked);
    }
    let Some(dep) = find(
        svc,
        ev.github_deployment_id,
        ev.run_id,
        ev.rollback_of.as_deref(),
        &Scope::new(ev.repo.clone(), ev.environment.clone()),
        ev.sha.as_str(),
    )
    .await?
    else {
        record_untracked(
            svc,
            "status",
            ev.github_deployment_id,
            serde_json::json!({"repo": ev.repo, "environment": ev.environment, "sha": ev.sha, "state": ev.state}),
        )
        .await?;
        return Ok(LifecycleOutcome::Untracked);
    };
    let now = svc.now();
    // A window that has ended is over: a status that meets it closes it first (the sweeper's
    // step; no store access while the window is open), then applies to what the deployment
    // is now.
    let dep = match close_deployment_if_ended(svc, &dep, now).await? {
        Some(_) => svc.repo.get_deployment(&dep.id).await?.unwrap_or(dep),
        None => dep,
    };
    let is_rollback_status = dep.rollback.as_ref().and_then(|r| r.github_deployment_id)
        == Some(ev.github_deployment_id)
        || (dep.state == State::RollingBack
            && dep.github_deployment_id != Some(ev.github_deployment_id));
    let actor = Actor("github".into());
    let description = ev.description.clone().unwrap_or_default();
    let status = ev.state.as_str();
    let until = window_end(svc, &dep, now);

    let action = match (is_rollback_status, &ev.state) {
        (true, GitHubDeploymentState::Success) => Some(Action::FinishRollback),
        (true, s) if s.is_failed() => Some(Action::Fail),
        (true, _) => None,
        (false, s) if s.is_started() => Some(Action::StartDeploy),
        (false, GitHubDeploymentState::Success) => Some(Action::BeginVerification),
        (false, s) if s.is_failed() => Some(Action::Fail),
        // `inactive`, `waiting` and states GitHub adds later are recorded, not acted on.
        (false, _) => None,
    };
    let Some(action) = action else {
        svc.repo
            .append_audit(&[dep.note(
                now,
                &actor,
                "status_recorded",
                format!("{status} {description}").trim().to_string(),
            )])
            .await?;
        return Ok(LifecycleOutcome::Unchanged {
            deployment_id: dep.id,
            state: dep.state,
        });
    };

    let mut moved = false;
    let updated = update_deployment(svc, &dep.id, |d| {
        moved = false;
        // Late or repeated statuses are legal to receive and illegal to apply: record them.
        if crate::domain::deployment::next_state(d.state, action).is_err() {
            return None;
        }
        let why = if is_rollback_status {
            format!("rollback deployment {}: {status}", ev.github_deployment_id)
        } else {
            format!("GitHub deployment {}: {status}", ev.github_deployment_id)
        };
        let event = d.apply(action, now, &actor, why).ok()?;
        match action {
            Action::BeginVerification => d.verify_until = Some(until),
            Action::Fail => {
                d.reason = Some(if is_rollback_status {
                    format!("rollback failed: {description}")
                } else {
                    format!("deployment failed: {description}")
                });
            }
            Action::FinishRollback => {
                if let Some(rb) = d.rollback.as_mut() {
                    rb.finished_at = Some(now);
                }
            }
            _ => {}
        }
        if !is_rollback_status && d.github_deployment_id.is_none() {
            d.github_deployment_id = Some(ev.github_deployment_id);
        }
        moved = true;
        Some(vec![event])
    })
    .await?;
    let Some(dep) = updated else {
        return Ok(LifecycleOutcome::Untracked);
    };
    if !moved {
        svc.repo
            .append_audit(&[dep.note(
                now,
                &actor,
                "status_ignored",
                format!("{status} arrived while {}", dep.state),
            )])
            .await?;
        return Ok(LifecycleOutcome::Unchanged {
            deployment_id: dep.id,
            state: dep.state,
        });
    }

    match dep.state {
        State::Verifying => {
            let head = Head {
                sha: dep.sha.to_string(),
                git_ref: dep.git_ref.clone(),
                deployment_id: dep.id.clone(),
                at: now,
                verify_until: dep.verify_until,
            };
            svc.repo.set_head(&dep.scope(), head, false).await?;
        }
        State::RolledBack => {
            if let Some(rb) = &dep.rollback {
                let heads = svc.repo.heads(&dep.scope()).await?;
                let git_ref = heads
                    .last_known_good
                    .as_ref()
                    .map(|h| h.git_ref.clone())
                    .unwrap_or_default();
                let head = Head {
                    sha: rb.target_sha.clone(),
                    git_ref,
                    deployment_id: dep.id.clone(),
                    at: now,
                    verify_until: None,
                };
                // The target was a known good version and runs again. If last known good
                // still names it, keep that record; if it names the rolled-back sha (a manual
                // rollback of a deployment that had succeeded), the target takes its place.
                let lkg_is_target = heads
                    .last_known_good
                    .as_ref()
                    .is_some_and(|h| h.sha == rb.target_sha);
                svc.repo
                    .set_head(&dep.scope(), head, !lkg_is_target)
                    .await?;
            }
        }
        _ => {}
    }
    svc.publish(Notification::deployment(now, &dep, dep.state.as_str()))
        .await;
    // A zero-length window passes at once.
    if dep.state == State::Verifying && dep.verify_until.is_some_and(|u| u <= now) {
        return finish_verification(svc, &dep.id).await;
    }
    Ok(LifecycleOutcome::Moved {
        deployment_id: dep.id,
        state: dep.state,
    })
}

/// The critical incident blamed on `dep` since it was gated, if any (open or resolved since).
async fn critical_incident_of(
    svc: &Services,
    dep: &Deployment,
    now: Timestamp,
) -> Result<Option<String>, ServiceError> {
    let to = now
        .checked_add(jiff::SignedDuration::from_millis(1))
        .unwrap_or(now);
    Ok(svc
        .repo
        .incidents_in(dep.environment.as_str(), dep.created_at, to)
        .await?
        .into_iter()
        .find(|i| {
            i.severity == crate::domain::policy::Severity::Critical
                && i.caused_by_deployment.as_deref() == Some(dep.id.as_str())
        })
        .map(|i| i.id))
}

/// Closes a verification window that has ended. A window that passed quietly: the
/// deployment succeeded and its sha becomes the environment's last known good. A window that
/// saw a critical incident blamed on the deployment (one that could not be rolled back, for
/// want of an earlier good version): verification failed, whatever became of the incident,
/// and the sha is never a rollback target. Where the environment has analysis, the window
/// passes only once its checks have (see `service::analysis`); until then the deployment stays
/// verifying and the sweeper's analysis step decides.
///
/// Reading the deployment and the environment's incidents since it was gated costs two round
/// trips per window close (once per deployment), on the sweeper's path or the reader's that
/// meets an ended window; analysis adds one read of the deployment's samples.
pub async fn finish_verification(
    svc: &Services,
    deployment_id: &str,
) -> Result<LifecycleOutcome, ServiceError> {
    close_verification(svc, deployment_id, Closing::WindowEnded).await
}

/// Ends a deployment's verification before its window does: its analysis passed and the
/// policy lets a passed analysis end the window (`end_early`). `why` is audited.
pub async fn pass_verification_early(
    svc: &Services,
    deployment_id: &str,
    why: &str,
) -> Result<LifecycleOutcome, ServiceError> {
    close_verification(svc, deployment_id, Closing::Early(why)).await
}

/// Fails a verifying deployment its analysis failed when there is no earlier good version to
/// roll back to: like a deployment blamed for a critical incident, it never becomes a
/// rollback target.
pub async fn fail_verification(
    svc: &Services,
    deployment_id: &str,
    why: String,
) -> Result<LifecycleOutcome, ServiceError> {
    close_verification(svc, deployment_id, Closing::Failed(why)).await
}

/// How a verification ends.
enum Closing<'a> {
    /// Its window has ended.
    WindowEnded,
    /// Early, with every analysis check passed.
    Early(&'a str),
    /// Failed, with the reason.
    Failed(String),
}

async fn close_verification(
    svc: &Services,
    deployment_id: &str,
    closing: Closing<'_>,
) -> Result<LifecycleOutcome, ServiceError> {
    let now = svc.now();
    let Some(current) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(LifecycleOutcome::Untracked);
    };
    let waits_for_window = matches!(closing, Closing::WindowEnded);
    let still_open = |d: &Deployment| waits_for_window && d.verify_until.is_some_and(|u| now < u);
    let unchanged = |d: Deployment| LifecycleOutcome::Unchanged {
        deployment_id: d.id,
        state: d.state,
    };
    if current.state != State::Verifying || still_open(&current) {
        return Ok(unchanged(current));
    }
    let blamed = match &closing {
        Closing::Failed(why) => Some(why.clone()),
        _ => critical_incident_of(svc, &current, now)
            .await?
            .map(|incident| {
                format!(
                    "verification failed: critical incident {incident} opened during its window"
                )
            }),
    };
    let analysis = super::analysis::analysis_of(&svc.policy, &current);
    if let (None, true, Some(analysis)) = (&blamed, waits_for_window, &analysis) {
        if !super::analysis::passed_at_window_end(svc, &current, analysis).await? {
            return Ok(unchanged(current));
        }
    }
    let passed_why = match &closing {
        Closing::Early(why) => (*why).to_owned(),
        _ if analysis.is_some() => {
            "verification window passed without a rollback alert, and its analysis passed"
                .to_owned()
        }
        _ => "verification window passed without a rollback alert".to_owned(),
    };
    // Only the caller whose save moved the deployment records the heads, the fact and the
    // notification: a caller that lost the race (another reader, or a sweep) finds it
    // already succeeded and does nothing more.
    let mut moved = false;
    let updated = update_deployment(svc, deployment_id, |d| {
        moved = false;
        if d.state != State::Verifying || still_open(d) {
            return None;
        }
        let event = match &blamed {
            Some(why) => {
                let event = d
                    .apply(Action::Fail, now, &Actor::system(), why.clone())
                    .ok()?;
                d.reason = Some(why.clone());
                event
            }
            None => d
                .apply(
                    Action::PassVerification,
                    now,
                    &Actor::system(),
                    passed_why.clone(),
                )
                .ok()?,
        };
        moved = true;
        Some(vec![event])
    })
    .await?;
    let Some(dep) = updated else {
        return Ok(LifecycleOutcome::Untracked);
    };
    if moved && dep.state == State::Failed {
        tracing::warn!(deployment_id = %dep.id, reason = dep.reason.as_deref().unwrap_or(""), "a deployment failed verification");
        svc.publish(Notification::deployment(now, &dep, "failed"))
            .await;
        return Ok(LifecycleOutcome::Moved {
            deployment_id: dep.id,
            state: dep.state,
        });
    }
    if !moved || dep.state != State::Succeeded {
        return Ok(LifecycleOutcome::Unchanged {
            deployment_id: dep.id,
            state: dep.state,
        });
    }
    let head = Head {
        sha: dep.sha.to_string(),
        git_ref: dep.git_ref.clone(),
        deployment_id: dep.id.clone(),
        at: now,
        verify_until: None,
    };
    svc.repo.set_head(&dep.scope(), head, true).await?;
    svc.repo
        .record_sha_fact(
            &format!("OK#{}", dep.environment),
            &ShaFact {
                repo: dep.repo.clone(),
                sha: dep.sha.clone(),
                at: now,
                detail: Some(dep.id.clone()),
            },
        )
        .await?;
    svc.publish(Notification::deployment(now, &dep, "succeeded"))
        .await;
    Ok(LifecycleOutcome::Moved {
        deployment_id: dep.id,
        state: dep.state,
    })
}

/// Closes the verification window of `head`'s deployment when it has ended at `now`: the
/// readers that meet a deployment whose window is over (a new request for its scope, a
/// promotion check, an alert, `shipgate status`) close it themselves rather than wait for the
/// next sweep. It is the sweeper's own [`finish_verification`], so the result is the same and
/// happens once however many callers race (the deployment's version check decides; the
/// losers find it succeeded).
///
/// Returns the deployment's state after the call, or `None` when the head names no window
/// that has ended (no store access then: the caller read the head anyway). A head written
/// before heads carried `verify_until` is left to the sweeper.
pub async fn close_if_ended(
    svc: &Services,
    head: &Head,
    now: Timestamp,
) -> Result<Option<State>, ServiceError> {
    if head.verify_until.is_none_or(|until| until > now) {
        return Ok(None);
    }
    Ok(match finish_verification(svc, &head.deployment_id).await? {
        LifecycleOutcome::Moved { state, .. } | LifecycleOutcome::Unchanged { state, .. } => {
            Some(state)
        }
        LifecycleOutcome::Untracked => None,
    })
}

/// Closes the window of a deployment read as verifying when it has ended at `now` (see
/// [`close_if_ended`]); returns its state after the call, or `None` when its window is
/// still open or it was not verifying.
pub async fn close_deployment_if_ended(
    svc: &Services,
    dep: &Deployment,
    now: Timestamp,
) -> Result<Option<State>, ServiceError> {
    if dep.state != State::Verifying || dep.verify_until.is_none_or(|until| until > now) {
        return Ok(None);
    }
    Ok(match finish_verification(svc, &dep.id).await? {
        LifecycleOutcome::Moved { state, .. } | LifecycleOutcome::Unchanged { state, .. } => {
            Some(state)
        }
        LifecycleOutcome::Untracked => None,
    })
}

/// A CI outcome for a sha (`workflow_run` / `completed`). A run that did not succeed may
/// have ended while one of its jobs waited on shipgate (cancelled in the queue or before its
/// approvals): those requests are withdrawn, so nothing waits for a job that is gone. Only
/// such runs pay the read of the run's deployments.
pub async fn workflow_completed(
    svc: &Services,
    run: &WorkflowRunCompleted,
) -> Result<(), ServiceError> {
    if run.conclusion != "success" {
        crate::service::queue::withdraw_run(svc, run.run_id, &run.conclusion, run.at).await?;
    }
    svc.repo
        .record_sha_fact(
            &format!("CI#{}", run.workflow),
            &ShaFact {
                repo: run.repo.clone(),
                sha: run.sha.clone(),
                at: run.at,
                detail: Some(run.conclusion.clone()),
            },
        )
        .await?;
    Ok(())
}

/// Most commits a push record keeps (GitHub's payload lists at most 2,048).
pub const MAX_PUSH_COMMITS: usize = 2048;

/// A push: every commit's timestamp (the start of its lead time), and the push itself in its
/// head's partition, so the DORA report can tell which commits a deployment of that head was
/// the first to carry. One more write per push than the commits alone: the lead time over
/// every commit of a change needs the push's shape (its previous head).
pub async fn pushed(svc: &Services, push: &CommitsPushed) -> Result<(), ServiceError> {
    for (sha, at) in &push.commits {
        commit_seen(svc, &push.repo, sha, *at).await?;
    }
    if let Some(after) = &push.after {
        svc.repo
            .record_push(&PushRecord {
                repo: push.repo.clone(),
                before: push.before.clone(),
                after: after.clone(),
                commits: push
                    .commits
                    .iter()
                    .take(MAX_PUSH_COMMITS)
                    .map(|(sha, at)| PushedCommit {
                        sha: sha.clone(),
                        at: *at,
                    })
                    .collect(),
                received_at: Some(svc.now()),
            })
            .await?;
    }
    Ok(())
}

/// A commit's timestamp (from `push`), the start of its lead time.
pub async fn commit_seen(
    svc: &Services,
    repo: &RepoName,
    sha: &Sha,
    committed_at: Timestamp,
) -> Result<(), ServiceError> {
    // The first sighting wins: a later push of the same commit (a merge to another branch)
    // must not move its lead-time start.
    if !svc
        .repo
        .sha_facts(repo.as_str(), sha.as_str(), "COMMIT")
        .await?
        .is_empty()
    {
        return Ok(());
    }
    svc.repo
        .record_sha_fact(
            "COMMIT",
            &ShaFact {
                repo: repo.clone(),
                sha: sha.clone(),
                at: committed_at,
                detail: None,
            },
        )
        .await?;
    Ok(())
}
