//! The sweeper: the time-driven half of the lifecycle, and the retries of work whose first
//! attempt failed.
//!
//! Per policy environment it expires approval requests past their TTL, expires the manual
//! rollback request of the current deployment past its TTL, closes verification
//! windows that passed quietly (the deployment succeeds and becomes last known good), resumes
//! rollbacks whose GitHub call failed, releases locks still held by deployments that ended,
//! and answers GitHub's protection-rule callbacks still pending for decided deployments. It
//! asks GitHub about deployments in flight for a while and applies what it says
//! ([`crate::service::reconcile`]), releases approvals held by a blocker that no longer holds, serves deploy queues (rejecting requests past their `queue_wait`) and times out rollback
//! drills whose legs never finished. Every step is idempotent, so a
//! sweep that overlaps another, or runs twice, changes nothing the second time.
//!
//! Closing a window is not left to the sweeper alone: the next request for the scope, a
//! promotion check and an alert close a window that has ended with the same step
//! ([`crate::service::lifecycle::close_if_ended`]); the sweeper closes the ones nobody read.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::analysis::Step;
use super::{JobContext, JobError, JobOutcome};
use crate::domain::deployment::{Action, Actor, CallbackState, Deployment, State};
use crate::domain::ids::EnvName;
use crate::domain::scope::Scope;
use crate::domain::time::add;
use crate::notify::Notification;
use crate::service::analysis::Sources;
use crate::service::answer::answer_github_again;
use crate::service::lifecycle::{finish_verification, LifecycleOutcome};
use crate::service::rollback::{self, RollbackOutcome};
use crate::service::update_deployment;
use crate::service::{ServiceError, Services};

/// How far back the sweeper looks. GitHub waits at most 30 days on a protection rule, so
/// older deployments have nobody left to answer.
pub const HORIZON_DAYS: i64 = 30;

/// A rollback's own first attempt gets this long before the sweeper tries again, so the
/// sweeper does not race the alert that is starting it right now.
pub const ROLLBACK_RETRY_AFTER: Duration = Duration::from_secs(120);

/// What one sweep did; every list holds deployment ids (environments for locks).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub expired: Vec<String>,
    /// Deployments whose manual rollback request expired unapproved.
    pub rollback_requests_expired: Vec<String>,
    pub verified: Vec<String>,
    pub rollbacks_resumed: Vec<String>,
    pub locks_released: Vec<String>,
    pub answered: Vec<String>,
    pub drills_timed_out: Vec<String>,
    /// What a migration of a store found behind the schema did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrated: Option<String>,
    /// In-flight deployments whose end GitHub reported when asked (their webhook was lost).
    pub reconciled: Vec<String>,
    /// In-flight deployments GitHub said nothing final about within `deploy_timeout`: failed.
    pub deploys_timed_out: Vec<String>,
    /// Deployments whose approvals were complete but held (a freeze, the deploy window, a
    /// critical incident) and went out once nothing blocked them.
    pub held_released: Vec<String>,
    /// Queued deployments taken out of their queue and decided.
    pub dequeued: Vec<String>,
    /// Queued deployments rejected for waiting past `queue_wait`.
    pub queue_timed_out: Vec<String>,
    /// Analysis samples taken.
    pub analysis_samples: usize,
    /// Deployments rolled back, or failed, by their analysis.
    pub analysis_failed: Vec<String>,
    /// Deployments whose analysis passed and ended their verification early.
    pub analysis_passed_early: Vec<String>,
    /// Steps that failed; they are retried by the next sweep.
    pub errors: Vec<String>,
}

impl SweepReport {
    pub fn is_empty(&self) -> bool {
        self == &SweepReport::default()
    }

    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "nothing to sweep".into();
        }
        let mut parts = Vec::new();
        for (n, what) in [
            (self.expired.len(), "approvals expired"),
            (
                self.rollback_requests_expired.len(),
                "rollback requests expired",
            ),
            (self.verified.len(), "verification windows closed"),
            (self.rollbacks_resumed.len(), "rollbacks resumed"),
            (self.locks_released.len(), "stale locks released"),
            (self.answered.len(), "GitHub answers sent"),
            (self.drills_timed_out.len(), "rollback drills timed out"),
            (self.reconciled.len(), "deployments reconciled with GitHub"),
            (
                self.deploys_timed_out.len(),
                "deployments failed after deploy_timeout",
            ),
            (self.held_released.len(), "held approvals released"),
            (self.dequeued.len(), "queued requests decided"),
            (
                self.queue_timed_out.len(),
                "queued requests rejected after their wait",
            ),
            (self.analysis_samples, "analysis samples taken"),
            (
                self.analysis_failed.len(),
                "deployments rolled back or failed by analysis",
            ),
            (
                self.analysis_passed_early.len(),
                "verifications ended early by analysis",
            ),
            (self.errors.len(), "errors"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if let Some(migrated) = &self.migrated {
            parts.push(migrated.clone());
        }
        parts.join(", ")
    }
}

/// The sweeper job.
pub async fn run(ctx: &JobContext) -> Result<JobOutcome, JobError> {
    // Built from the policy in force now: a source added by a policy change is queried from
    // the next sweep on.
    let sources = Sources::from_policy(
        &ctx.services.policy,
        ctx.vars.as_ref(),
        &ctx.http,
        ctx.cloudwatch.as_deref(),
    );
    let report = sweep(&ctx.services, &sources).await;
    let details = serde_json::to_value(&report).unwrap_or_default();
    if report.errors.is_empty() {
        Ok(JobOutcome::ok(report.summary(), details))
    } else {
        Ok(JobOutcome::failed(report.summary(), details))
    }
}

/// `4h`, `90m`, `45s`: the TTL an approval request was given.
fn ttl_text(dep: &Deployment) -> String {
    let secs = dep
        .approval_expires_at
        .map(|e| e.duration_since(dep.created_at).as_secs())
        .unwrap_or(0)
        .max(0);
    if secs > 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Expires an approval request past its TTL. Returns the expired deployment, or `None` when it
/// was decided meanwhile. GitHub is answered by the callback step of the same sweep.
pub async fn expire(
    svc: &Services,
    deployment_id: &str,
) -> Result<Option<Deployment>, ServiceError> {
    let now = svc.now();
    let mut moved = false;
    let updated = update_deployment(svc, deployment_id, |d| {
        moved = false;
        if d.state != State::AwaitingApproval || d.approval_expires_at.is_none_or(|e| now < e) {
            return None;
        }
        let why = format!("approval expired after {}", ttl_text(d));
        let event = d
            .apply(Action::Expire, now, &Actor::system(), why.clone())
            .ok()?;
        d.reason = Some(why);
        moved = true;
        Some(vec![event])
    })
    .await?;
    match updated {
        Some(dep) if moved => {
            tracing::info!(deployment_id = %dep.id, environment = %dep.environment, "approval request expired");
            svc.publish(Notification::deployment(now, &dep, "expired"))
                .await;
            Ok(Some(dep))
        }
        _ => Ok(None),
    }
}

fn is_decided(dep: &Deployment) -> bool {
    !matches!(
        dep.state,
        State::Requested | State::Queued | State::AwaitingApproval
    )
}

/// One sweep over every policy environment, querying analysis checks through `sources`. Never
/// fails as a whole: a step that fails is logged, listed in `errors` and retried next time.
pub async fn sweep(svc: &Services, sources: &Sources) -> SweepReport {
    let mut report = SweepReport::default();
    // A store behind the schema (a deploy whose `migrate` run was forgotten) is moved first:
    // one read of the version per sweep.
    match crate::store::migrate::schema_version(&svc.repo).await {
        Ok(v) if v < crate::store::migrate::SCHEMA_VERSION => {
            match crate::store::migrate::migrate(&svc.repo).await {
                Ok(done) => {
                    tracing::warn!(summary = %crate::store::migrate::summary(&done), "the sweeper migrated a store that was behind the schema");
                    report.migrated = Some(crate::store::migrate::summary(&done));
                }
                Err(e) => report.errors.push(format!("migrating the store: {e}")),
            }
        }
        Ok(_) => {}
        Err(e) => report
            .errors
            .push(format!("reading the schema version: {e}")),
    }
    let now = svc.now();
    let environments: Vec<String> = svc.policy.environments().map(|e| e.name.clone()).collect();
    for environment in &environments {
        sweep_active(svc, sources, environment, now, &mut report).await;
        // Locks and rollback requests are per scope: every repository of the environment.
        let repos = match svc.repo.repositories_in(environment).await {
            Ok(repos) => repos,
            Err(e) => {
                report
                    .errors
                    .push(format!("listing the repositories of {environment}: {e}"));
                Vec::new()
            }
        };
        for repo in repos {
            let Ok(env) = EnvName::parse(environment) else {
                continue;
            };
            let scope = Scope::new(repo, env);
            expire_rollback_request(svc, &scope, now, &mut report).await;
            match svc.repo.release_stale_lock(&scope).await {
                Ok(true) => {
                    tracing::info!(scope = %scope, "released a lock held by a deployment that ended");
                    report.locks_released.push(environment.clone());
                }
                Ok(false) => {}
                Err(e) => report.errors.push(format!("lock of {scope}: {e}")),
            }
        }
        answer_pending(svc, environment, now, &mut report).await;
    }
    match crate::service::drill::time_out_stale(svc).await {
        Ok(timed_out) => report.drills_timed_out.extend(timed_out),
        Err(e) => report.errors.push(format!("rollback drills: {e}")),
    }
    for e in &report.errors {
        tracing::warn!(error = %e, "sweep step failed; the next sweep retries it");
    }
    report
}

async fn sweep_active(
    svc: &Services,
    sources: &Sources,
    environment: &str,
    now: Timestamp,
    report: &mut SweepReport,
) {
    let active = match svc
        .repo
        .active_deployments(environment, now, HORIZON_DAYS)
        .await
    {
        Ok(active) => active,
        Err(e) => {
            report
                .errors
                .push(format!("listing deployments of {environment}: {e}"));
            return;
        }
    };
    let mut queues = std::collections::BTreeSet::new();
    for dep in active {
        // Analysis first: at the window's end its verdict decides whether the window passes.
        if dep.state == State::Verifying {
            match super::analysis::step(svc, sources, &dep, now).await {
                Ok(Step::NoAnalysis) => {}
                Ok(Step::Sampled(n)) => report.analysis_samples += n,
                Ok(Step::RolledBack { .. } | Step::Failed { .. }) => {
                    report.analysis_failed.push(dep.id.clone());
                    continue;
                }
                Ok(Step::PassedEarly) => {
                    report.analysis_passed_early.push(dep.id.clone());
                    continue;
                }
                Err(e) => report.errors.push(format!("analysis of {}: {e}", dep.id)),
            }
        }
        match dep.state {
            State::Queued => {
                queues.insert(dep.scope());
            }
            State::AwaitingApproval if dep.approval_expires_at.is_some_and(|e| e <= now) => {
                match expire(svc, &dep.id).await {
                    Ok(Some(_)) => report.expired.push(dep.id.clone()),
                    Ok(None) => {}
                    Err(e) => report.errors.push(format!("expiring {}: {e}", dep.id)),
                }
            }
            State::Approved | State::Deploying
                if crate::service::reconcile::is_due(svc, &dep, now) =>
            {
                use crate::service::reconcile::{reconcile, Reconciled};
                match reconcile(svc, &dep.id).await {
                    Ok(Reconciled::Moved(_)) => report.reconciled.push(dep.id.clone()),
                    Ok(Reconciled::TimedOut) => report.deploys_timed_out.push(dep.id.clone()),
                    Ok(Reconciled::StillGoing) => {}
                    Err(e) => report
                        .errors
                        .push(format!("reconciling {} with GitHub: {e}", dep.id)),
                }
            }
            State::AwaitingApproval if dep.approval_held() => {
                match crate::service::approvals::release_held(svc, &dep.id).await {
                    Ok(Some(_)) => report.held_released.push(dep.id.clone()),
                    Ok(None) => {}
                    Err(e) => report
                        .errors
                        .push(format!("releasing the held approval of {}: {e}", dep.id)),
                }
            }
            State::Verifying if dep.verify_until.is_some_and(|u| u <= now) => {
                match finish_verification(svc, &dep.id).await {
                    Ok(LifecycleOutcome::Moved { .. }) => report.verified.push(dep.id.clone()),
                    Ok(_) => {}
                    Err(e) => report
                        .errors
                        .push(format!("closing the window of {}: {e}", dep.id)),
                }
            }
            State::RollingBack if crate::service::reconcile::rollback_is_due(svc, &dep, now) => {
                use crate::service::reconcile::{reconcile_rollback, Reconciled};
                match reconcile_rollback(svc, &dep.id).await {
                    Ok(Reconciled::Moved(_)) => report.reconciled.push(dep.id.clone()),
                    Ok(Reconciled::TimedOut) => report.deploys_timed_out.push(dep.id.clone()),
                    Ok(Reconciled::StillGoing) => {}
                    Err(e) => report.errors.push(format!(
                        "reconciling the rollback of {} with GitHub: {e}",
                        dep.id
                    )),
                }
            }
            State::RollingBack => {
                let stuck = dep.rollback.as_ref().is_some_and(|rb| {
                    rb.github_deployment_id.is_none()
                        && add(rb.started_at, ROLLBACK_RETRY_AFTER) <= now
                });
                if !stuck {
                    continue;
                }
                match rollback::resume(svc, &dep.id).await {
                    Ok(RollbackOutcome::Started { .. }) => {
                        report.rollbacks_resumed.push(dep.id.clone())
                    }
                    Ok(RollbackOutcome::Failed { error, .. }) => report
                        .errors
                        .push(format!("rollback of {} failed again: {error}", dep.id)),
                    Ok(_) => {}
                    Err(e) => report
                        .errors
                        .push(format!("resuming the rollback of {}: {e}", dep.id)),
                }
            }
            _ => {}
        }
    }
    // Queues move when a lock is released; the sweep serves those whose release could not
    // advance them, and rejects requests past their wait.
    for scope in queues {
        match crate::service::queue::advance(svc, &scope).await {
            Ok(done) => {
                report.dequeued.extend(done.decided);
                report.queue_timed_out.extend(done.timed_out);
            }
            Err(e) => report.errors.push(format!("queue of {scope}: {e}")),
        }
    }
}

/// Expires the rollback request of the scope's current deployment (the only one a
/// request can be opened on) once it is past its TTL.
async fn expire_rollback_request(
    svc: &Services,
    scope: &Scope,
    now: Timestamp,
    report: &mut SweepReport,
) {
    let current = match svc.repo.heads(scope).await {
        Ok(heads) => heads.current,
        Err(e) => {
            report
                .errors
                .push(format!("reading the heads of {scope}: {e}"));
            return;
        }
    };
    let Some(current) = current else {
        return;
    };
    let due = match svc.repo.get_deployment(&current.deployment_id).await {
        Ok(dep) => dep
            .and_then(|d| d.rollback_request)
            .is_some_and(|r| r.is_expired(now)),
        Err(e) => {
            report
                .errors
                .push(format!("reading deployment {}: {e}", current.deployment_id));
            return;
        }
    };
    if !due {
        return;
    }
    match rollback::expire_request(svc, &current.deployment_id).await {
        Ok(Some(_)) => report
            .rollback_requests_expired
            .push(current.deployment_id.clone()),
        Ok(None) => {}
        Err(e) => report.errors.push(format!(
            "expiring the rollback request of {}: {e}",
            current.deployment_id
        )),
    }
}

async fn answer_pending(
    svc: &Services,
    environment: &str,
    now: Timestamp,
    report: &mut SweepReport,
) {
    // Without an App every attempt would only log that it cannot answer.
    if svc.github.is_none() {
        return;
    }
    let from = now
        .checked_sub(SignedDuration::from_hours(24 * HORIZON_DAYS))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let all = match svc
        .repo
        .deployments_in(environment, from, Timestamp::MAX, false, None)
        .await
    {
        Ok(all) => all,
        Err(e) => {
            report
                .errors
                .push(format!("listing deployments of {environment}: {e}"));
            return;
        }
    };
    let pending = all.iter().filter(|d| {
        d.callback == CallbackState::Pending
            && is_decided(d)
            && d.run_id.is_some()
            && d.installation_id.is_some()
    });
    for dep in pending {
        match answer_github_again(svc, &dep.id).await {
            Ok(true) => report.answered.push(dep.id.clone()),
            Ok(false) => {}
            Err(e) => report
                .errors
                .push(format!("answering GitHub for {}: {e}", dep.id)),
        }
    }
}
