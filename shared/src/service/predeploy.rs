//! Pre-deploy backups: when an environment's policy names `pre_deploy_backups`, an approved
//! deployment there is not let through to GitHub until those tables have a fresh, verified
//! backup.
//!
//! The approval itself is never held up: the click (or the gate, when no approvals are needed)
//! records the decision as usual. Only the answer to GitHub waits. [`before_approving`], called
//! by [`answer_github`](super::answer::answer_github) just before it would say "approved",
//! requests the backup once — a [`NotificationBody::PreDeployBackup`] that the scheduled-jobs
//! function receives through an SNS subscription filtered on its kind (the self-hosted server
//! routes it to its jobs task) — and answers "not yet". The job backs the tables up, records
//! the backup ids under `META#pre-deploy-backup` / `{deployment id}`, and calls `answer_github`
//! again, which now finds the backup done and approves.
//!
//! Nothing is lost when a step fails: the sweeper retries pending GitHub answers every sweep,
//! and each retry comes back here. A request nobody picked up is sent again after
//! [`REQUEST_TIMEOUT`]; a job that died mid-backup after [`RUNNING_TIMEOUT`]; a failed backup
//! is tried [`MAX_ATTEMPTS`] times in all, a sweep apart. After that the deployment is
//! cancelled and GitHub is told why: deploying to production without the backup the policy
//! asks for is the one thing this must not do.
//!
//! Rollbacks are not held up: they restore a version that already ran, and waiting for a
//! backup would lengthen an outage.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{ServiceError, Services};
use crate::domain::deployment::{Deployment, DeploymentKind};
use crate::notify::{Notification, NotificationBody};

/// `META#` kind of the per-deployment backup record.
pub const META_KIND: &str = "pre-deploy-backup";
/// How many times a failing backup is tried before the deployment is cancelled.
pub const MAX_ATTEMPTS: u32 = 3;
/// A request no job has started within this time is sent again.
pub const REQUEST_TIMEOUT: SignedDuration = SignedDuration::from_mins(2);
/// A job that started but never finished within this time (the Lambda limit plus margin) is
/// presumed dead, and the request is sent again.
pub const RUNNING_TIMEOUT: SignedDuration = SignedDuration::from_mins(20);
/// A failed attempt is retried no sooner than this (the next sweep, in practice).
pub const RETRY_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// Where a deployment's pre-deploy backup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Asked for; no job has started it yet.
    Requested,
    /// A job is backing the tables up.
    Running,
    /// Every table was backed up; `backups` names them.
    Done,
    /// The last attempt failed; `error` says why.
    Failed,
}

/// `META#pre-deploy-backup` / `{deployment id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreDeployBackup {
    pub deployment_id: String,
    pub environment: String,
    pub tables: Vec<String>,
    pub status: Status,
    /// Attempts so far, counting the one in progress.
    pub attempts: u32,
    /// When the current attempt was requested, started or finished (by `status`).
    pub since: Timestamp,
    /// Backup ids, once done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What [`before_approving`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The environment asks for no backup (or this is a rollback): approve now.
    NotNeeded,
    /// The backup is requested or under way: do not answer GitHub yet.
    Waiting,
    /// The backup is done: approve now, naming these backups.
    Done(Vec<String>),
    /// The backup failed [`MAX_ATTEMPTS`] times: cancel the deployment with this reason.
    GaveUp(String),
}

/// The tables `dep` must back up before GitHub may deploy it (empty: none).
pub fn tables_for(svc: &Services, dep: &Deployment) -> Vec<String> {
    if dep.kind == DeploymentKind::Rollback {
        return Vec::new();
    }
    svc.policy
        .for_scope(&dep.repo, &dep.environment)
        .map(|env| env.policy.pre_deploy_backups)
        .unwrap_or_default()
}

/// Decides whether an approved deployment may be let through to GitHub now, requesting (or
/// re-requesting) its pre-deploy backup when it may not.
pub async fn before_approving(svc: &Services, dep: &Deployment) -> Result<Gate, ServiceError> {
    let tables = tables_for(svc, dep);
    if tables.is_empty() {
        return Ok(Gate::NotNeeded);
    }
    let now = svc.now();
    let record = svc
        .repo
        .get_meta::<PreDeployBackup>(META_KIND, &dep.id)
        .await?;
    let attempts = match record {
        None => 0,
        Some(rec) => {
            let due = match rec.status {
                Status::Done => return Ok(Gate::Done(rec.backups)),
                Status::Requested => older_than(rec.since, now, REQUEST_TIMEOUT),
                Status::Running => older_than(rec.since, now, RUNNING_TIMEOUT),
                // The last failure gives up at once; earlier ones wait for the next sweep.
                Status::Failed => {
                    rec.attempts >= MAX_ATTEMPTS || older_than(rec.since, now, RETRY_DELAY)
                }
            };
            if !due {
                return Ok(Gate::Waiting);
            }
            if rec.attempts >= MAX_ATTEMPTS {
                let last = match (rec.status, rec.error.as_deref()) {
                    (Status::Failed, Some(error)) => format!("last error: {error}"),
                    (Status::Running, _) => "the last attempt never finished".to_string(),
                    _ => "the last request was never picked up".to_string(),
                };
                return Ok(Gate::GaveUp(format!(
                    "the pre-deploy backup of {} did not succeed in {} attempts ({last})",
                    rec.tables.join(", "),
                    rec.attempts
                )));
            }
            rec.attempts
        }
    };
    let record = PreDeployBackup {
        deployment_id: dep.id.clone(),
        environment: dep.environment.to_string(),
        tables: tables.clone(),
        status: Status::Requested,
        attempts: attempts + 1,
        since: now,
        backups: Vec::new(),
        error: None,
    };
    svc.repo.put_meta(META_KIND, &dep.id, &record).await?;
    tracing::info!(
        deployment_id = %dep.id,
        environment = %dep.environment,
        tables = %tables.join(","),
        attempt = record.attempts,
        "pre-deploy backup requested; GitHub is answered once it is done"
    );
    svc.publish(Notification::new(
        now,
        NotificationBody::PreDeployBackup {
            deployment_id: dep.id.clone(),
            environment: dep.environment.to_string(),
            tables,
        },
    ))
    .await;
    Ok(Gate::Waiting)
}

fn older_than(since: Timestamp, now: Timestamp, limit: SignedDuration) -> bool {
    now.duration_since(since) >= limit
}

/// Reads a deployment's pre-deploy backup record.
pub async fn record(
    svc: &Services,
    deployment_id: &str,
) -> Result<Option<PreDeployBackup>, ServiceError> {
    Ok(svc.repo.get_meta(META_KIND, deployment_id).await?)
}

/// Stores a deployment's pre-deploy backup record (the job's progress).
pub async fn save(svc: &Services, record: &PreDeployBackup) -> Result<(), ServiceError> {
    Ok(svc
        .repo
        .put_meta(META_KIND, &record.deployment_id, record)
        .await?)
}
