//! Rollbacks: automatic (a rollback-worthy alert during a deployment's verification window)
//! and manual (`shipgate rollback ENV --repo OWNER/NAME`, the Slack "Roll back" button).
//!
//! Everything here is per scope (a repository in an environment): a deployment rolls back to
//! the last known good of its own repository, under its own scope's lock.
//!
//! Which scope an alert acts on: the scope of the repository the policy routes its service
//! to ([`crate::domain::policy::Policy::repository_for_service`]), recorded on the incident.
//! An alert that routes to no repository rolls nothing back automatically, and a page says
//! why ([`Skipped::NoRepositoryForService`]).
//!
//! Manual rollbacks follow the same approval rules as a deploy (see [`start_manual`]): where
//! the environment requires approvals, asking opens a [`RollbackRequest`] on the current
//! deployment, and the rollback starts when its quorum is reached ([`approve_request`]),
//! unless it is cancelled ([`cancel_request`]) or expires first ([`expire_request`], the
//! sweeper). Automatic rollbacks need no approvals: acting without waiting is their point.
//!
//! Starting a rollback is one optimistic-concurrency save of the deployment (`verifying` →
//! `rolling_back` with its [`RollbackInfo`]); only the caller whose save lands goes on to ask
//! GitHub to carry it out, so twenty alerts arriving together cause exactly one rollback.
//! Carrying it out depends on the environment's policy:
//!
//! - `redeploy`: a GitHub deployment of the last known good sha, whose payload carries
//!   `shipgate_rollback_of` so its statuses are recognised as the rollback's; its id is stored
//!   in `rollback.github_deployment_id`, and the lifecycle turns its `success` into
//!   `rolled_back`.
//! - `workflow`: a `workflow_dispatch` of the named workflow with inputs `environment`, `sha`
//!   and `reason` (a marker `META#rollback-dispatch` / `{deployment id}` records that it went out).
//!
//! When the GitHub call fails the deployment stays `rolling_back` without a rollback
//! deployment, a `rollback_failed` notification goes out, and [`resume`] (the sweeper's entry
//! point) tries again later.

use jiff::Timestamp;
use serde::Serialize;

use super::update_deployment;
use super::{ServiceError, Services};
use crate::domain::deployment::{
    Action, Actor, ApproverFacts, Deployment, DeploymentKind, EnvironmentHeads, RollbackApproval,
    RollbackInfo, RollbackRefused, RollbackRequest, State,
};
use crate::domain::ids::short_sha;
use crate::domain::incident::Incident;
use crate::domain::policy::{EnvironmentPolicy, RollbackAlerts, RollbackMethod, Severity};
use crate::domain::scope::Scope;
use crate::notify::{Notification, NotificationBody};
use crate::outbound::github::NewDeployment;
use crate::store::repo::{Claim, CLAIM_LEASE};

/// How many earlier deployments a manual rollback looks through for a good version.
const HISTORY_LIMIT: usize = 200;

/// `META#` kind marking that a workflow rollback was dispatched.
pub const DISPATCH_META: &str = "rollback-dispatch";

/// Why no rollback was started for an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Skipped {
    /// The incident's environment is not in the policy.
    UnknownEnvironment,
    /// The environment does not roll back on this severity (`rollback_on`).
    SeverityNotRollingBack { severity: Severity },
    /// No deployment of the environment is inside its verification window.
    NoDeploymentVerifying,
    /// The alert names no service, or one the policy routes to no repository: nothing is
    /// rolled back automatically, and a page says why.
    NoRepositoryForService { service: Option<String> },
    /// A deployment is verifying, but the alert is not attributed to it (it began before the
    /// deployment went out, see `[alerts] start_tolerance`), and the environment rolls back
    /// only on alerts that began after the deploy (`rollback_alerts`, the default).
    NotAttributed { deployment_id: String, why: String },
}

/// What a rollback request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RollbackOutcome {
    /// The deployment is rolling back and GitHub accepted the rollback (`github_deployment_id`
    /// is the rollback's GitHub deployment for `redeploy`, `None` for `workflow`).
    Started {
        deployment_id: String,
        target_sha: String,
        github_deployment_id: Option<u64>,
    },
    /// The deployment is rolling back, but asking GitHub failed; [`resume`] retries.
    Failed {
        deployment_id: String,
        target_sha: String,
        error: String,
    },
    /// Someone else started this rollback first; nothing was done.
    AlreadyRollingBack { deployment_id: String },
    /// The alert does not call for a rollback.
    Skipped(Skipped),
    /// A rollback was called for, but the environment has no other good version to return
    /// to (its first deploy); someone was paged instead.
    NoLastKnownGood { deployment_id: String },
    /// A manual rollback that may not (or cannot) happen.
    Refused { reason: String },
    /// A manual rollback needs approvals: its request is open and waits for them.
    AwaitingApprovals {
        deployment_id: String,
        target_sha: String,
        requested_by: String,
        have: u32,
        need: u32,
        expires_at: Timestamp,
        /// True when this call opened the request, false when it was open already.
        opened: bool,
    },
    /// An approval of the open request counted; more are needed.
    ApprovalRecorded {
        deployment_id: String,
        target_sha: String,
        /// Slack user id.
        approver: String,
        have: u32,
        need: u32,
        expires_at: Timestamp,
    },
    /// A click on the open request did not count; nothing changed.
    NotCounted {
        deployment_id: String,
        refusal: RollbackRefused,
    },
    /// The open request was withdrawn.
    RequestCancelled {
        deployment_id: String,
        cancelled_by: String,
    },
    /// The button belongs to no open request (unknown deployment, or a request that was
    /// cancelled, expired or started meanwhile): nothing changed.
    StaleButton,
}

impl RollbackOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            RollbackOutcome::Started { .. } => "started",
            RollbackOutcome::Failed { .. } => "failed",
            RollbackOutcome::AlreadyRollingBack { .. } => "already_rolling_back",
            RollbackOutcome::Skipped(_) => "skipped",
            RollbackOutcome::NoLastKnownGood { .. } => "no_last_known_good",
            RollbackOutcome::Refused { .. } => "refused",
            RollbackOutcome::AwaitingApprovals { .. } => "awaiting_approvals",
            RollbackOutcome::ApprovalRecorded { .. } => "approval_recorded",
            RollbackOutcome::NotCounted { .. } => "not_counted",
            RollbackOutcome::RequestCancelled { .. } => "request_cancelled",
            RollbackOutcome::StaleButton => "stale_button",
        }
    }
}

/// The version a rollback returns to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    sha: String,
    git_ref: String,
}

/// How far back [`verifying_in`] looks for deployments still verifying (as the sweeper does).
const VERIFYING_HORIZON_DAYS: i64 = 7;

/// The deployment of a scope inside its verification window at `now`, if any. Only the
/// lock holder can be verifying: a deployment keeps its scope's lock until its window closes.
pub async fn verifying_deployment(
    svc: &Services,
    scope: &Scope,
    now: Timestamp,
) -> Result<Option<Deployment>, ServiceError> {
    let Some(holder) = svc.repo.lock_holder(scope).await? else {
        return Ok(None);
    };
    let Some(dep) = svc.repo.get_deployment(&holder).await? else {
        return Ok(None);
    };
    // A window that has ended is over: close it now rather than at the next sweep.
    crate::service::lifecycle::close_deployment_if_ended(svc, &dep, now).await?;
    Ok(Some(dep).filter(|d| d.in_verification_window(now)))
}

/// The deployments of an environment inside their verification window at `now`, one per
/// repository at most (each holds its own scope's lock), read from the environment's
/// deployment timeline in one query.
pub async fn verifying_in(
    svc: &Services,
    environment: &str,
    now: Timestamp,
) -> Result<Vec<Deployment>, ServiceError> {
    let from = now
        .checked_sub(jiff::SignedDuration::from_hours(
            24 * VERIFYING_HORIZON_DAYS,
        ))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let recent = svc
        .repo
        .deployments_in(environment, from, Timestamp::MAX, true, None)
        .await?;
    // A window that has ended is over: close it now rather than at the next sweep (no store
    // access for deployments whose window is still open).
    for dep in &recent {
        crate::service::lifecycle::close_deployment_if_ended(svc, dep, now).await?;
    }
    let mut verifying: Vec<Deployment> = recent
        .into_iter()
        .filter(|d| d.in_verification_window(now))
        .collect();
    // Newest first: keep each repository's latest.
    let mut seen = std::collections::BTreeSet::new();
    verifying.retain(|d| seen.insert(d.repo.clone()));
    Ok(verifying)
}

/// Starts the automatic rollback an incident calls for, if it calls for one.
///
/// Rolls back when the incident's severity is in the environment's `rollback_on`, a
/// deployment of the incident's scope is inside its verification window, and the incident is
/// attributed to that deployment (it began after the deployment went out; with
/// `rollback_alerts = "any_in_window"`, any incident not attributed to another deployment
/// will do). An incident with no repository (its service routes nowhere) acts on none, and
/// the page says why. Safe to call
/// many times concurrently: only one caller starts the rollback and calls GitHub.
pub async fn start_automatic(
    svc: &Services,
    environment: &str,
    incident: &Incident,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let Some(env) = svc.policy.environment(environment) else {
        return Ok(RollbackOutcome::Skipped(Skipped::UnknownEnvironment));
    };
    if !svc
        .policy
        .rolls_back_on_in_some_scope(environment, incident.severity)
    {
        return Ok(RollbackOutcome::Skipped(Skipped::SeverityNotRollingBack {
            severity: incident.severity,
        }));
    }
    let dep = match incident.scope() {
        Some(scope) => verifying_deployment(svc, &scope, now).await?,
        None => {
            page_unrouted(svc, environment, incident, now).await;
            return Ok(RollbackOutcome::Skipped(Skipped::NoRepositoryForService {
                service: incident.service.clone(),
            }));
        }
    };
    let Some(dep) = dep else {
        return Ok(RollbackOutcome::Skipped(Skipped::NoDeploymentVerifying));
    };
    // The verifying deployment's repository may override `rollback_on` and `rollback_alerts`.
    let scoped = svc.policy.for_scope(&dep.repo, &dep.environment).ok();
    let rules = scoped.as_ref().map_or(env, |s| &s.policy);
    if !rules.rolls_back_on(incident.severity) {
        return Ok(RollbackOutcome::Skipped(Skipped::SeverityNotRollingBack {
            severity: incident.severity,
        }));
    }
    let attributed = incident.caused_by_deployment.as_deref();
    let not_ours = match rules.rollback_alerts {
        RollbackAlerts::BeganAfterDeploy => attributed != Some(dep.id.as_str()),
        // Any alert of the window, but never one attributed to another deployment.
        RollbackAlerts::AnyInWindow => attributed.is_some_and(|a| a != dep.id),
    };
    if not_ours {
        // The alert began before this deployment went out (or is another one's): it is not
        // this deployment's doing, and rolling it back would not help.
        let why = incident
            .attribution
            .clone()
            .unwrap_or_else(|| format!("not attributed to {}", dep.sha.short()));
        tracing::info!(deployment_id = %dep.id, incident_id = %incident.id, %why, "alert not attributed to the verifying deployment; no automatic rollback");
        return Ok(RollbackOutcome::Skipped(Skipped::NotAttributed {
            deployment_id: dep.id.clone(),
            why,
        }));
    }
    let started_by = format!("alert:{}", incident.id);
    let reason = format!(
        "{} alert \"{}\" ({}) during the verification window of {}",
        incident.severity,
        incident.title,
        incident.id,
        dep.sha.short()
    );
    let outcome = roll_back_verifying(svc, env, &dep, started_by, reason, |d| {
        d.in_verification_window(now)
    })
    .await?;
    if let RollbackOutcome::NoLastKnownGood { .. } = outcome {
        page_no_last_known_good(svc, &dep, incident, now).await?;
    } else if let RollbackOutcome::Started { .. } = outcome {
        tracing::warn!(deployment_id = %dep.id, environment, incident_id = %incident.id, "automatic rollback started");
    }
    Ok(outcome)
}

/// Starts the rollback a failed analysis calls for: `dep` (verifying, in its window or just
/// past it) returns to its scope's last known good, exactly once however many sweeps race,
/// as for a critical alert. `reason` names the check. Without an earlier good version it
/// returns [`RollbackOutcome::NoLastKnownGood`] and changes nothing; the caller fails the
/// verification instead.
pub async fn start_from_analysis(
    svc: &Services,
    dep: &Deployment,
    reason: &str,
) -> Result<RollbackOutcome, ServiceError> {
    let Some(env) = svc.policy.environment(dep.environment.as_str()) else {
        return Ok(RollbackOutcome::Skipped(Skipped::UnknownEnvironment));
    };
    let outcome = roll_back_verifying(
        svc,
        env,
        dep,
        "analysis".to_owned(),
        reason.to_owned(),
        |d| d.state == State::Verifying,
    )
    .await?;
    if let RollbackOutcome::Started { .. } = outcome {
        tracing::warn!(deployment_id = %dep.id, environment = %dep.environment, reason, "analysis rollback started");
    }
    Ok(outcome)
}

/// Rolls a verifying `dep` back to its scope's last known good, when `allowed` still holds for
/// it as stored: records who started it and why, announces `rollback_started` and asks GitHub.
/// Only one caller starts it; the others learn it is already rolling back.
async fn roll_back_verifying(
    svc: &Services,
    env: &EnvironmentPolicy,
    dep: &Deployment,
    started_by: String,
    reason: String,
    allowed: impl Fn(&Deployment) -> bool,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let heads = svc.repo.heads(&dep.scope()).await?;
    let Some(target) = heads
        .last_known_good
        .as_ref()
        .filter(|h| h.sha != dep.sha)
        .map(|h| Target {
            sha: h.sha.clone(),
            git_ref: h.git_ref.clone(),
        })
    else {
        return Ok(RollbackOutcome::NoLastKnownGood {
            deployment_id: dep.id.clone(),
        });
    };
    let info = RollbackInfo {
        target_sha: target.sha.clone(),
        reason: reason.clone(),
        started_by: started_by.clone(),
        started_at: now,
        github_deployment_id: None,
        finished_at: None,
    };
    let why = format!("{reason}; rolling back to {}", short_sha(&target.sha));
    let begun = begin(svc, &dep.id, info, &Actor(started_by), &why, allowed).await?;
    let dep = match begun {
        Begun::Started(dep) => dep,
        Begun::NotStarted(Some(d)) if d.state == State::RollingBack => {
            return Ok(RollbackOutcome::AlreadyRollingBack {
                deployment_id: d.id,
            })
        }
        Begun::NotStarted(_) => {
            return Ok(RollbackOutcome::Skipped(Skipped::NoDeploymentVerifying))
        }
    };
    svc.publish(Notification::deployment(now, &dep, "rollback_started"))
        .await;
    carry_out(svc, &dep, &target.git_ref, env).await
}

/// Pages that a rollback-worthy alert could not be tied to a repository: it names no service,
/// or the policy routes its service nowhere ("no repository for service X"). Called once per opening of the incident (the alert's own
/// claim keeps repeats out); a failed page is logged, the incident itself was notified.
async fn page_unrouted(svc: &Services, environment: &str, incident: &Incident, now: Timestamp) {
    let reason = match &incident.service {
        Some(service) => format!("no repository for service {service}"),
        None => "the alert names no service".to_string(),
    };
    tracing::error!(incident_id = %incident.id, environment, %reason, "no automatic rollback");
    svc.publish(Notification::new(
        now,
        NotificationBody::Job {
            job: "rollback".into(),
            ok: false,
            summary: format!(
                "{} incident \"{}\" in {environment}: {reason}; no automatic rollback was taken",
                incident.severity, incident.title
            ),
            details: serde_json::json!({
                "environment": environment,
                "incident_id": incident.id,
                "service": incident.service,
                "reason": reason,
            }),
            page: true,
        },
    ))
    .await;
}

/// Pages once per deployment: a rollback-worthy alert arrived, but there is nothing to roll
/// back to.
async fn page_no_last_known_good(
    svc: &Services,
    dep: &Deployment,
    incident: &Incident,
    now: Timestamp,
) -> Result<(), ServiceError> {
    const SCOPE: &str = "rollback-no-lkg";
    match svc
        .repo
        .begin_event(SCOPE, &dep.id, now, CLAIM_LEASE)
        .await?
    {
        Claim::Acquired => {}
        // Paged before, or another alert is paging for this deployment right now (if that
        // one fails it gives the claim back, or its lease runs out, and a later alert pages).
        Claim::Done | Claim::InProgress => return Ok(()),
    }
    if let Err(e) = page_once(svc, dep, incident, now).await {
        if let Err(release) = svc.repo.release_event(SCOPE, &dep.id).await {
            tracing::error!(deployment_id = %dep.id, error = %release, "could not release the no-last-known-good page claim; the next alert after its lease pages");
        }
        return Err(e);
    }
    if let Err(e) = svc
        .repo
        .confirm_event(
            SCOPE,
            &dep.id,
            svc.now(),
            std::time::Duration::from_secs(30 * 24 * 3600),
        )
        .await
    {
        tracing::error!(deployment_id = %dep.id, error = %e, "could not confirm the no-last-known-good page claim; an alert after its lease pages again");
    }
    Ok(())
}

/// The page itself, with its audit note.
async fn page_once(
    svc: &Services,
    dep: &Deployment,
    incident: &Incident,
    now: Timestamp,
) -> Result<(), ServiceError> {
    let summary = format!(
        "{} incident \"{}\" in {} during the verification window of {} ({}), but there is no last known good version to roll back to; no automatic action was taken",
        incident.severity,
        incident.title,
        dep.environment,
        dep.id,
        dep.sha.short()
    );
    tracing::error!(deployment_id = %dep.id, incident_id = %incident.id, "no last known good version to roll back to");
    svc.repo
        .append_audit(&[dep.note(
            now,
            &Actor(format!("alert:{}", incident.id)),
            "rollback_impossible",
            "no last known good version to roll back to",
        )])
        .await?;
    svc.publish(Notification::new(
        now,
        NotificationBody::Job {
            job: "rollback".into(),
            ok: false,
            summary,
            details: serde_json::json!({
                "environment": dep.environment,
                "deployment_id": dep.id,
                "sha": dep.sha,
                "incident_id": incident.id,
                "reason": "no last known good version to roll back to",
            }),
            page: true,
        },
    ))
    .await;
    Ok(())
}

enum Begun {
    /// This caller moved the deployment to `rolling_back`.
    Started(Deployment),
    /// The deployment was not in a state `allowed` accepts (it is returned as read).
    NotStarted(Option<Deployment>),
}

/// Moves a deployment to `rolling_back` if `allowed` still holds when it is saved. The
/// version check makes this the single point where concurrent requests are decided. A
/// rollback request still open is settled by the rollback itself, so it is cleared.
async fn begin(
    svc: &Services,
    deployment_id: &str,
    info: RollbackInfo,
    actor: &Actor,
    why: &str,
    allowed: impl Fn(&Deployment) -> bool,
) -> Result<Begun, ServiceError> {
    let now = info.started_at;
    let mut changed = false;
    let updated = update_deployment(svc, deployment_id, |d| {
        changed = false;
        if !allowed(d) {
            return None;
        }
        let event = d.apply(Action::StartRollback, now, actor, why).ok()?;
        d.rollback = Some(info.clone());
        d.rollback_request = None;
        changed = true;
        Some(vec![event])
    })
    .await?;
    Ok(match updated {
        Some(dep) if changed => Begun::Started(dep),
        other => Begun::NotStarted(other),
    })
}

/// Asks GitHub to carry out a started rollback. Failures are reported, not returned: the
/// deployment is already `rolling_back` and [`resume`] retries.
async fn carry_out(
    svc: &Services,
    dep: &Deployment,
    target_ref: &str,
    env: &EnvironmentPolicy,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let Some(rb) = dep.rollback.clone() else {
        return Ok(RollbackOutcome::Refused {
            reason: format!("deployment {} has no rollback to carry out", dep.id),
        });
    };
    // Retrying cannot fix a missing App or installation: those fail the rollback at once.
    // A failed GitHub call may succeed later, and the sweeper resumes it.
    let mut cannot_retry = false;
    // `Ok(Some(id))`: the GitHub deployment created; `Ok(None)`: a workflow dispatched, whose
    // run id (when GitHub gave it) is in `dispatched_run`.
    let mut dispatched_run: Option<u64> = None;
    let result: Result<Option<u64>, String> = match (&svc.github, dep.installation_id) {
        (None, _) => {
            cannot_retry = true;
            Err("no GitHub App is configured".into())
        }
        (_, None) => {
            cannot_retry = true;
            Err(format!(
                "deployment {} has no GitHub App installation recorded",
                dep.id
            ))
        }
        (Some(github), Some(installation)) => match &env.rollback {
            RollbackMethod::Redeploy => {
                let mut new = NewDeployment::new(rb.target_sha.clone(), dep.environment.clone());
                new.description = Some(format!(
                    "shipgate rollback of {} to {}",
                    dep.sha.short(),
                    short_sha(&rb.target_sha)
                ));
                new.payload = serde_json::json!({
                    "shipgate_rollback_of": dep.id,
                    "reason": rb.reason,
                });
                github
                    .create_deployment(installation, dep.repo.as_str(), &new)
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            RollbackMethod::Workflow { workflow, git_ref } => {
                let git_ref = git_ref.as_deref().unwrap_or(target_ref);
                let mut inputs = serde_json::Map::new();
                inputs.insert("environment".into(), dep.environment.as_str().into());
                inputs.insert("sha".into(), rb.target_sha.clone().into());
                // The marker lets the run be recognised by its name where GitHub does not
                // return the run id (see `admit_rollback_run`).
                inputs.insert(
                    "reason".into(),
                    format!("{} {}", rb.reason, rollback_marker(&dep.id)).into(),
                );
                match github
                    .dispatch_workflow(installation, dep.repo.as_str(), workflow, git_ref, &inputs)
                    .await
                {
                    Ok(run_id) => {
                        dispatched_run = run_id;
                        Ok(None)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    };

    match result {
        Ok(github_id) => {
            let what = match github_id {
                Some(id) => format!("GitHub deployment {id} of {}", short_sha(&rb.target_sha)),
                None => match dispatched_run {
                    Some(run) => format!(
                        "workflow run {run} dispatched for {}",
                        short_sha(&rb.target_sha)
                    ),
                    None => format!("workflow dispatched for {}", short_sha(&rb.target_sha)),
                },
            };
            if github_id.is_none() {
                svc.repo
                    .put_meta(
                        DISPATCH_META,
                        &dep.id,
                        &Dispatch {
                            at: now,
                            target_sha: rb.target_sha.clone(),
                            run_id: dispatched_run,
                        },
                    )
                    .await?;
            }
            update_deployment(svc, &dep.id, |d| {
                if d.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(RETRY_NOTE))
                {
                    d.reason = None;
                }
                let current = d.rollback.as_mut()?;
                if let Some(id) = github_id {
                    // A concurrent carry-out (a resume) may have stored it already.
                    if current.github_deployment_id.is_none() {
                        current.github_deployment_id = Some(id);
                    }
                }
                Some(vec![d.note(
                    now,
                    &Actor::system(),
                    "rollback_requested",
                    what.clone(),
                )])
            })
            .await?;
            Ok(RollbackOutcome::Started {
                deployment_id: dep.id.clone(),
                target_sha: rb.target_sha,
                github_deployment_id: github_id,
            })
        }
        Err(error) if cannot_retry => {
            let reason = format!(
                "rollback could not be started: {error}; roll {} back by hand",
                dep.environment
            );
            tracing::error!(deployment_id = %dep.id, error = %error, "rollback cannot be started and nothing can retry it: the deployment is failed and its lock released");
            fail_rolling_back(svc, &dep.id, now, &reason).await?;
            Ok(RollbackOutcome::Failed {
                deployment_id: dep.id.clone(),
                target_sha: rb.target_sha,
                error,
            })
        }
        Err(error) => {
            tracing::error!(deployment_id = %dep.id, error = %error, "rollback could not be carried out; the sweeper retries it in 2 minutes");
            // The record says so too, since Slack shows the record: still rolling back, why
            // not yet, and that it is being retried.
            let reason = format!("{RETRY_NOTE}: {error}; retrying every 2 minutes");
            let saved = update_deployment(svc, &dep.id, |d| {
                if d.state != State::RollingBack {
                    return None;
                }
                d.reason = Some(reason.clone());
                Some(vec![d.note(
                    now,
                    &Actor::system(),
                    "rollback_failed",
                    error.clone(),
                )])
            })
            .await?;
            let shown = saved.unwrap_or_else(|| dep.clone());
            svc.publish(Notification::deployment(now, &shown, "rollback_failed"))
                .await;
            Ok(RollbackOutcome::Failed {
                deployment_id: dep.id.clone(),
                target_sha: rb.target_sha,
                error,
            })
        }
    }
}

/// The record of a dispatched rollback workflow (`META#rollback-dispatch` / `{deployment}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Dispatch {
    pub at: Timestamp,
    pub target_sha: String,
    /// The run GitHub started, when it said (`return_run_details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
}

/// `[shipgate-rollback: dep-…]`: appended to the `reason` input of a rollback workflow, whose
/// documented `run-name` carries it, so the run is recognised where GitHub does not return
/// its id.
pub fn rollback_marker(deployment_id: &str) -> String {
    format!("[shipgate-rollback: {deployment_id}]")
}

/// How a rolling-back deployment whose GitHub call failed explains itself until a retry works.
const RETRY_NOTE: &str = "rollback not started yet";

/// Retries a rollback whose GitHub call failed: a `rolling_back` deployment without a rollback
/// deployment (or, for the workflow method, without a dispatch marker). The sweeper calls
/// this; anything else is left alone and reported as already rolling back.
pub async fn resume(svc: &Services, deployment_id: &str) -> Result<RollbackOutcome, ServiceError> {
    let Some(dep) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(RollbackOutcome::Refused {
            reason: format!("no deployment {deployment_id}"),
        });
    };
    let Some(rb) = dep
        .rollback
        .as_ref()
        .filter(|_| dep.state == State::RollingBack)
    else {
        return Ok(RollbackOutcome::Refused {
            reason: format!(
                "deployment {deployment_id} is {}, not rolling back",
                dep.state
            ),
        });
    };
    let env = svc
        .policy
        .for_scope(&dep.repo, &dep.environment)
        .map(|e| e.policy)
        .unwrap_or_else(|_| EnvironmentPolicy::with_defaults(dep.environment.clone()));
    let dispatched = svc
        .repo
        .get_meta::<serde_json::Value>(DISPATCH_META, &dep.id)
        .await?
        .is_some();
    if rb.github_deployment_id.is_some() || dispatched {
        return Ok(RollbackOutcome::AlreadyRollingBack {
            deployment_id: dep.id,
        });
    }
    // The target's ref: the last known good's when it is still the target, else the
    // deployment's own branch (a workflow_dispatch needs a branch or tag, not a sha).
    let heads = svc.repo.heads(&dep.scope()).await?;
    let target_ref = heads
        .last_known_good
        .filter(|h| h.sha == rb.target_sha)
        .map(|h| h.git_ref)
        .unwrap_or_else(|| dep.git_ref.clone());
    carry_out(svc, &dep, &target_ref, &env).await
}

/// The version a manual rollback of `dep` returns to: its scope's last known good when it
/// differs from `dep`'s sha, otherwise (the current deployment *is* the last known good) the
/// most recent earlier succeeded deployment of another sha of the same repository.
async fn manual_target(
    svc: &Services,
    dep: &Deployment,
    heads: &EnvironmentHeads,
) -> Result<Option<Target>, ServiceError> {
    if let Some(good) = heads.last_known_good.as_ref().filter(|h| h.sha != dep.sha) {
        return Ok(Some(Target {
            sha: good.sha.clone(),
            git_ref: good.git_ref.clone(),
        }));
    }
    let earlier = svc
        .repo
        .deployments_in(
            dep.environment.as_str(),
            Timestamp::UNIX_EPOCH,
            dep.created_at,
            true,
            Some(HISTORY_LIMIT),
        )
        .await?;
    Ok(earlier
        .into_iter()
        .find(|d| {
            d.id != dep.id
                && d.repo == dep.repo
                && d.state == State::Succeeded
                && d.kind == DeploymentKind::Deploy
                && d.sha != dep.sha
        })
        .map(|d| Target {
            sha: d.sha.into(),
            git_ref: d.git_ref,
        }))
}

/// Deployments a manual rollback may start from: running or finished, not already undone.
fn rollable(d: &Deployment) -> bool {
    matches!(d.state, State::Verifying | State::Succeeded | State::Failed)
}

/// The identity facts of Slack user `user` (when there is one) for `env`.
fn facts<'a>(
    svc: &'a Services,
    env: &'a EnvironmentPolicy,
    user: Option<&str>,
) -> ApproverFacts<'a> {
    ApproverFacts {
        approvers: &env.approvers,
        clicker_login: user.and_then(|u| svc.policy.slack_user_login(u)),
        prevent_self_approval: env.prevent_self_approval,
    }
}

/// What one change of a rollback request did, decided inside the optimistic save.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A new request was opened (with the requester's own approval, when it counts).
    Opened(Option<RollbackApproval>),
    /// An approval of the open request counted.
    Counted(RollbackApproval),
    /// A request is open and nothing changed (the refusal, for a click that did not count).
    AlreadyOpen(Option<RollbackRefused>),
    /// The deployment can no longer be rolled back from here.
    NotRollable(State),
    /// The button belongs to no open request.
    Stale,
}

/// Fails a deployment that is still rolling back, with `reason` (which frees its lock), and
/// announces `rollback_failed`. Returns the failed deployment, or `None` when it had already
/// left `rolling_back`.
pub(crate) async fn fail_rolling_back(
    svc: &Services,
    deployment_id: &str,
    now: Timestamp,
    reason: &str,
) -> Result<Option<Deployment>, ServiceError> {
    let mut moved = false;
    let saved = update_deployment(svc, deployment_id, |d| {
        moved = false;
        if d.state != State::RollingBack {
            return None;
        }
        let event = d.apply(Action::Fail, now, &Actor::system(), reason).ok()?;
        d.reason = Some(reason.to_string());
        moved = true;
        Some(vec![event])
    })
    .await?;
    let failed = saved.filter(|_| moved);
    if let Some(failed) = &failed {
        svc.publish(Notification::deployment(now, failed, "rollback_failed"))
            .await;
    }
    Ok(failed)
}

/// Rolls back the deployment of `scope`'s repository currently running in its environment
/// (verifying, succeeded or failed) to the repository's previous good version, or asks for
/// the approvals to do so.
/// `requested_by` is `cli:<user>` or `slack:<user id>`.
///
/// Manual rollbacks follow the same approval rules as a deploy. Where the environment needs
/// no approvals the rollback starts at once. Otherwise this opens a rollback request on the
/// current deployment (from Slack only those [`start_from_slack`] lets ask; from the CLI, an
/// operator) and the rollback starts
/// only once `approvals_required` distinct people from the environment's `approvers` approved
/// it ([`approve_request`]) before the environment's `approval_ttl` ran out. The requester is
/// the request's author: under `prevent_self_approval` their own approval does not count (a
/// CLI requester `cli:<user>` is recognised in Slack through the `[identities]` login
/// `<user>`); without it, a Slack requester who is an approver counts as the first approval.
/// Asking again while a request is open counts the Slack clicker's approval, or, from the
/// CLI, reports the open request. Automatic rollbacks ([`start_automatic`]) need no approvals.
pub async fn start_manual(
    svc: &Services,
    scope: &Scope,
    requested_by: &str,
) -> Result<RollbackOutcome, ServiceError> {
    start(svc, scope, requested_by, None).await
}

/// A "Roll back" click by `slack_user` on the message of deployment `clicked`: only someone
/// allowed to ask ([`EnvironmentPolicy::may_request_rollback`]: the `rollback_requesters`, or
/// the environment's approvers) may, and only while `clicked` is what runs, judged on the
/// same read of the scope the rollback then acts on (a deploy landing between the two cannot
/// be rolled back by a click on the one before it).
///
/// [`EnvironmentPolicy::may_request_rollback`]: crate::domain::policy::EnvironmentPolicy::may_request_rollback
pub async fn start_from_slack(
    svc: &Services,
    scope: &Scope,
    slack_user: &str,
    clicked: &str,
) -> Result<RollbackOutcome, ServiceError> {
    let effective = match svc.policy.for_scope(&scope.repo, &scope.environment) {
        Ok(effective) => effective,
        Err(why) => {
            return Ok(RollbackOutcome::Refused {
                reason: why.to_string(),
            })
        }
    };
    if !effective.policy.may_request_rollback(slack_user) {
        let who = if effective.policy.rollback_requesters.is_empty() {
            "the environment's approvers"
        } else {
            "the people in rollback_requesters"
        };
        return Ok(RollbackOutcome::Refused {
            reason: format!(
                "only {who} may roll back {} from Slack, and you are not one of them",
                scope.environment
            ),
        });
    }
    start(svc, scope, &format!("slack:{slack_user}"), Some(clicked)).await
}

async fn start(
    svc: &Services,
    scope: &Scope,
    requested_by: &str,
    expected_current: Option<&str>,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let environment = scope.environment.as_str();
    let refuse = |reason: String| Ok(RollbackOutcome::Refused { reason });
    // The repository's own rules: an override may ask more approvals or a shorter TTL.
    let effective = match svc.policy.for_scope(&scope.repo, &scope.environment) {
        Ok(effective) => effective,
        Err(why) => return refuse(why.to_string()),
    };
    let env = &effective.policy;
    let heads = svc.repo.heads(scope).await?;
    let Some(current) = heads.current.as_ref() else {
        return refuse(format!(
            "nothing of {} has been deployed to {environment} yet",
            scope.repo
        ));
    };
    if let Some(clicked) = expected_current.filter(|c| *c != current.deployment_id) {
        return refuse(format!(
            "deployment {clicked} is not what runs in {environment} now ({} is); use the message of the current deployment",
            current.deployment_id
        ));
    }
    let Some(dep) = svc.repo.get_deployment(&current.deployment_id).await? else {
        return refuse(format!(
            "the current deployment {} of {environment} is not recorded",
            current.deployment_id
        ));
    };
    if dep.state == State::RollingBack {
        return Ok(RollbackOutcome::AlreadyRollingBack {
            deployment_id: dep.id,
        });
    }
    if !rollable(&dep) {
        return refuse(format!(
            "the current deployment {} of {environment} is {}; only a verifying, succeeded or failed deployment can be rolled back",
            dep.id, dep.state
        ));
    }
    let Some(target) = manual_target(svc, &dep, &heads).await? else {
        return refuse(format!(
            "there is no earlier good version of {} in {environment} to roll back to",
            scope.repo
        ));
    };
    if let Some(holder) = svc.repo.lock_holder(scope).await?.filter(|h| *h != dep.id) {
        return refuse(format!(
            "{scope} is locked by deployment {holder}; wait for it to finish"
        ));
    }

    if env.approvals_required == 0 {
        let reason = format!("manual rollback requested by {requested_by}");
        let info = RollbackInfo {
            target_sha: target.sha.clone(),
            reason,
            started_by: requested_by.to_string(),
            started_at: now,
            github_deployment_id: None,
            finished_at: None,
        };
        let why = format!(
            "started by {requested_by}; rolling back to {}",
            short_sha(&target.sha)
        );
        return launch(
            svc,
            env,
            scope,
            &dep.id,
            info,
            &Actor(requested_by.to_string()),
            &why,
            &target.git_ref,
            &rollable,
        )
        .await;
    }

    let slack_user = requested_by
        .strip_prefix("slack:")
        .filter(|u| !u.is_empty());
    let facts = facts(svc, env, slack_user);
    let mut step = Step::Stale;
    let saved = update_deployment(svc, &dep.id, |d| {
        if !rollable(d) {
            step = Step::NotRollable(d.state);
            return None;
        }
        if d.rollback_request
            .as_ref()
            .is_some_and(|r| !r.is_expired(now))
        {
            let Some(user) = slack_user else {
                step = Step::AlreadyOpen(None);
                return None;
            };
            return match d.record_rollback_approval(user, &facts, now) {
                Ok((counted, event)) => {
                    step = Step::Counted(counted);
                    Some(vec![event])
                }
                Err(refusal) => {
                    step = Step::AlreadyOpen(Some(refusal));
                    None
                }
            };
        }
        let request = RollbackRequest {
            target_sha: target.sha.clone(),
            target_ref: target.git_ref.clone(),
            requested_by: requested_by.to_string(),
            requested_at: now,
            expires_at: crate::domain::time::add(now, env.approval_ttl),
            approvals_required: env.approvals_required,
            approvals: Vec::new(),
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        };
        let mut events = vec![d.open_rollback_request(request, now)];
        // The requester's own approval, where the self-approval rule lets it count.
        let own = slack_user.and_then(|user| d.record_rollback_approval(user, &facts, now).ok());
        let counted = own.map(|(counted, event)| {
            events.push(event);
            counted
        });
        step = Step::Opened(counted);
        Some(events)
    })
    .await?;
    let Some(saved) = saved else {
        return refuse(format!("deployment {} is no longer recorded", dep.id));
    };
    tracing::info!(deployment_id = %saved.id, environment, requested_by, step = ?step, "manual rollback requested");
    settle(svc, env, saved, step, slack_user, now).await
}

/// Turns what a save did into its outcome: notifies, and starts the rollback when the quorum
/// was reached (or was reached earlier, but the environment was locked then).
async fn settle(
    svc: &Services,
    env: &EnvironmentPolicy,
    dep: Deployment,
    step: Step,
    clicker: Option<&str>,
    now: Timestamp,
) -> Result<RollbackOutcome, ServiceError> {
    let awaiting = |dep: &Deployment, opened: bool| match dep.rollback_request.as_ref() {
        Some(r) => RollbackOutcome::AwaitingApprovals {
            deployment_id: dep.id.clone(),
            target_sha: r.target_sha.clone(),
            requested_by: r.requested_by.clone(),
            have: r.approval_count(),
            need: r.need(),
            expires_at: r.expires_at,
            opened,
        },
        None => RollbackOutcome::StaleButton,
    };
    let approved = dep
        .rollback_request
        .as_ref()
        .is_some_and(RollbackRequest::is_approved);
    let actor = clicker.map(Actor::slack);
    match step {
        Step::Stale => Ok(RollbackOutcome::StaleButton),
        Step::NotRollable(State::RollingBack) => Ok(RollbackOutcome::AlreadyRollingBack {
            deployment_id: dep.id,
        }),
        Step::NotRollable(state) => Ok(RollbackOutcome::Refused {
            reason: format!(
                "deployment {} is {state}; only a verifying, succeeded or failed deployment can be rolled back",
                dep.id
            ),
        }),
        Step::Opened(Some(RollbackApproval::QuorumReached { .. }))
        | Step::Counted(RollbackApproval::QuorumReached { .. }) => {
            start_approved(svc, env, &dep, actor, now).await
        }
        Step::Opened(_) => {
            svc.publish(Notification::deployment(now, &dep, "rollback_requested"))
                .await;
            Ok(awaiting(&dep, true))
        }
        Step::Counted(RollbackApproval::Progress { have, need }) => {
            svc.publish(Notification::deployment(now, &dep, "rollback_approval"))
                .await;
            let Some(r) = dep.rollback_request.as_ref() else {
                return Ok(RollbackOutcome::StaleButton);
            };
            Ok(RollbackOutcome::ApprovalRecorded {
                deployment_id: dep.id.clone(),
                target_sha: r.target_sha.clone(),
                approver: clicker.unwrap_or_default().to_string(),
                have,
                need,
                expires_at: r.expires_at,
            })
        }
        // The quorum was reached earlier but the rollback could not start then (another
        // deployment held the environment): try again. `begin` lets only one caller start it.
        Step::AlreadyOpen(_) if approved => start_approved(svc, env, &dep, actor, now).await,
        Step::AlreadyOpen(Some(refusal)) => Ok(RollbackOutcome::NotCounted {
            deployment_id: dep.id,
            refusal,
        }),
        Step::AlreadyOpen(None) => Ok(awaiting(&dep, false)),
    }
}

/// Starts the rollback an approved request asks for. Concurrent callers may all get here;
/// the version check in [`begin`] lets exactly one of them start it.
async fn start_approved(
    svc: &Services,
    env: &EnvironmentPolicy,
    dep: &Deployment,
    actor: Option<Actor>,
    now: Timestamp,
) -> Result<RollbackOutcome, ServiceError> {
    let Some(request) = dep
        .rollback_request
        .clone()
        .filter(RollbackRequest::is_approved)
    else {
        return Ok(RollbackOutcome::Refused {
            reason: format!("deployment {} has no approved rollback request", dep.id),
        });
    };
    let approvers = request.approvers().join(", ");
    let info = RollbackInfo {
        target_sha: request.target_sha.clone(),
        reason: format!(
            "manual rollback requested by {} and approved by {approvers}",
            request.requested_by
        ),
        started_by: request.requested_by.clone(),
        started_at: now,
        github_deployment_id: None,
        finished_at: None,
    };
    let why = format!(
        "requested by {}, approved by {approvers}; rolling back to {}",
        request.requested_by,
        request.short_target()
    );
    let actor = actor.unwrap_or_else(|| Actor(request.requested_by.clone()));
    let nonce = request.nonce.clone();
    launch(
        svc,
        env,
        &dep.scope(),
        &dep.id,
        info,
        &actor,
        &why,
        &request.target_ref,
        &move |d: &Deployment| {
            rollable(d)
                && d.rollback_request
                    .as_ref()
                    .is_some_and(|r| r.nonce == nonce && r.is_approved())
        },
    )
    .await
}

/// The start path every manual rollback shares: take the environment's lock back, move the
/// deployment to `rolling_back` if `allowed` still holds, then ask GitHub.
#[allow(clippy::too_many_arguments)]
async fn launch(
    svc: &Services,
    env: &EnvironmentPolicy,
    scope: &Scope,
    deployment_id: &str,
    info: RollbackInfo,
    actor: &Actor,
    why: &str,
    target_ref: &str,
    allowed: &(dyn Fn(&Deployment) -> bool + Sync),
) -> Result<RollbackOutcome, ServiceError> {
    let environment = env.name.as_str();
    let now = info.started_at;
    let target_sha = info.target_sha.clone();
    // A finished deployment gave its lock up; rolling back deploys again, so it takes its
    // scope's lock back, and waits its turn if another deployment is under way.
    if let Some(holder) = svc.repo.try_take_lock(scope, deployment_id, now).await? {
        return Ok(RollbackOutcome::Refused {
            reason: format!(
                "environment {environment} is locked by deployment {holder}; wait for it to finish"
            ),
        });
    }
    let begun = begin(svc, deployment_id, info, actor, why, allowed).await;
    let dep = match begun {
        Ok(Begun::Started(dep)) => dep,
        other => {
            // Give back a lock taken above for a rollback that did not start (a no-op when
            // the deployment is rolling back after all, or still verifying).
            if let Err(e) = svc.repo.release_stale_lock(scope).await {
                tracing::error!(environment, error = %e, "could not release the lock after a refused rollback");
            }
            return match other? {
                Begun::NotStarted(Some(d)) if d.state == State::RollingBack => {
                    Ok(RollbackOutcome::AlreadyRollingBack {
                        deployment_id: d.id,
                    })
                }
                _ => Ok(RollbackOutcome::Refused {
                    reason: format!(
                        "deployment {deployment_id} changed while the rollback was being started"
                    ),
                }),
            };
        }
    };
    tracing::warn!(deployment_id = %dep.id, environment, actor = %actor.0, target_sha = %target_sha, "manual rollback started");
    svc.publish(Notification::deployment(now, &dep, "rollback_started"))
        .await;
    carry_out(svc, &dep, target_ref, env).await
}

/// The open request of `deployment_id` whose buttons carry `nonce`, with its environment's
/// policy, or the outcome to answer instead.
async fn requested(
    svc: &Services,
    deployment_id: &str,
    nonce: &str,
) -> Result<Result<(Deployment, EnvironmentPolicy), RollbackOutcome>, ServiceError> {
    let Some(dep) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(Err(RollbackOutcome::StaleButton));
    };
    if nonce.is_empty()
        || dep
            .rollback_request
            .as_ref()
            .is_none_or(|r| r.nonce != nonce)
    {
        return Ok(Err(RollbackOutcome::StaleButton));
    }
    let Ok(env) = svc
        .policy
        .for_scope(&dep.repo, &dep.environment)
        .map(|e| e.policy)
    else {
        return Ok(Err(RollbackOutcome::Refused {
            reason: format!("environment {} is not in the policy", dep.environment),
        }));
    };
    Ok(Ok((dep, env)))
}

/// An "Approve rollback" click by Slack user `slack_user` on the request whose buttons carry
/// `nonce`. The click that completes the quorum starts the rollback; concurrent clicks are
/// decided by the version check, so exactly one of them does.
pub async fn approve_request(
    svc: &Services,
    deployment_id: &str,
    nonce: &str,
    slack_user: &str,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let (dep, env) = match requested(svc, deployment_id, nonce).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let current = svc.repo.heads(&dep.scope()).await?.current;
    if current.as_ref().map(|h| h.deployment_id.as_str()) != Some(dep.id.as_str()) {
        return Ok(RollbackOutcome::Refused {
            reason: format!(
                "{} is no longer what runs in {}, so this rollback request no longer applies",
                dep.short_sha(),
                dep.environment
            ),
        });
    }
    let facts = facts(svc, &env, Some(slack_user));
    let mut step = Step::Stale;
    let saved = update_deployment(svc, deployment_id, |d| {
        if d.rollback_request.as_ref().is_none_or(|r| r.nonce != nonce) {
            step = Step::Stale;
            return None;
        }
        if !rollable(d) {
            step = Step::NotRollable(d.state);
            return None;
        }
        match d.record_rollback_approval(slack_user, &facts, now) {
            Ok((counted, event)) => {
                step = Step::Counted(counted);
                Some(vec![event])
            }
            Err(refusal) => {
                step = Step::AlreadyOpen(Some(refusal));
                None
            }
        }
    })
    .await?;
    let Some(saved) = saved else {
        return Ok(RollbackOutcome::StaleButton);
    };
    tracing::info!(deployment_id, slack_user, step = ?step, "rollback approval click");
    settle(svc, &env, saved, step, Some(slack_user), now).await
}

/// A "Cancel rollback" click: the requester or any approver withdraws the open request.
pub async fn cancel_request(
    svc: &Services,
    deployment_id: &str,
    nonce: &str,
    slack_user: &str,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let (_, env) = match requested(svc, deployment_id, nonce).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let facts = facts(svc, &env, Some(slack_user));
    let mut result: Option<Result<(), RollbackRefused>> = None;
    let saved = update_deployment(svc, deployment_id, |d| {
        result = None;
        if d.rollback_request.as_ref().is_none_or(|r| r.nonce != nonce) {
            return None;
        }
        match d.cancel_rollback_request(slack_user, &facts, now) {
            Ok(event) => {
                result = Some(Ok(()));
                Some(vec![event])
            }
            Err(refusal) => {
                result = Some(Err(refusal));
                None
            }
        }
    })
    .await?;
    match (saved, result) {
        (Some(dep), Some(Ok(()))) => {
            tracing::info!(deployment_id, slack_user, "rollback request cancelled");
            svc.publish(Notification::deployment(
                now,
                &dep,
                "rollback_request_cancelled",
            ))
            .await;
            Ok(RollbackOutcome::RequestCancelled {
                deployment_id: dep.id,
                cancelled_by: format!("slack:{slack_user}"),
            })
        }
        (Some(dep), Some(Err(refusal))) => Ok(RollbackOutcome::NotCounted {
            deployment_id: dep.id,
            refusal,
        }),
        _ => Ok(RollbackOutcome::StaleButton),
    }
}

/// Clears `deployment_id`'s rollback request if it expired (the sweeper's step). Returns the
/// deployment when this call expired it.
pub async fn expire_request(
    svc: &Services,
    deployment_id: &str,
) -> Result<Option<Deployment>, ServiceError> {
    let now = svc.now();
    let mut moved = false;
    let saved = update_deployment(svc, deployment_id, |d| {
        let event = d.expire_rollback_request(now);
        moved = event.is_some();
        event.map(|e| vec![e])
    })
    .await?;
    match saved {
        Some(dep) if moved => {
            tracing::info!(deployment_id, environment = %dep.environment, "rollback request expired");
            svc.publish(Notification::deployment(
                now,
                &dep,
                "rollback_request_expired",
            ))
            .await;
            Ok(Some(dep))
        }
        _ => Ok(None),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn dep() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "id": "dep-1", "repo": "o/r", "environment": "production", "git_ref": "main",
            "sha": "bbbbbbb2", "requester": "octocat", "kind": "deploy", "state": "succeeded",
            "version": 1, "created_at": "2025-06-02T10:00:00Z", "updated_at": "2025-06-02T10:00:00Z",
        }))
        .expect("deployment")
    }

    #[test]
    fn an_old_record_without_a_rollback_request_still_loads() {
        assert_eq!(dep().rollback_request, None);
    }

    #[test]
    fn only_running_or_finished_deployments_can_be_rolled_back_by_hand() {
        let mut d = dep();
        for (state, ok) in [
            (State::Verifying, true),
            (State::Succeeded, true),
            (State::Failed, true),
            (State::RollingBack, false),
            (State::RolledBack, false),
            (State::AwaitingApproval, false),
        ] {
            d.state = state;
            assert_eq!(rollable(&d), ok, "{state}");
        }
    }
}
