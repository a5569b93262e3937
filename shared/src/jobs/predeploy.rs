//! The job side of pre-deploy backups (see [`service::predeploy`](crate::service::predeploy)
//! for the whole story): back up the tables a deployment waits on, record the result, and
//! answer GitHub.
//!
//! A request can arrive twice (SNS delivers at least once; the sweeper re-requests a stalled
//! one), so each attempt is claimed first: the second delivery of one attempt does nothing.

use serde::Serialize;

use super::{JobContext, JobError};
use crate::notify::{Notification, NotificationBody};
use crate::service::answer::answer_github;
use crate::service::predeploy::{self, Status};
use crate::store::repo::Claim;

/// Idempotency scope of pre-deploy backup attempts.
const CLAIM_SCOPE: &str = "pre-deploy-backup";
/// How long an attempt's claim is remembered once the attempt finished.
const CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How long a running attempt keeps redeliveries out: longer than a Lambda can run (15
/// minutes), so only a crashed attempt is taken over.
const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(20 * 60);
/// The job name in notifications and logs.
pub const JOB: &str = "pre-deploy-backup";

/// What one request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PreDeployOutcome {
    /// The tables were backed up; `github_answered` says whether GitHub was told now.
    BackedUp {
        backups: Vec<String>,
        github_answered: bool,
    },
    /// The backup failed; the sweeper retries it or, after the last attempt, cancels the
    /// deployment.
    Failed { error: String },
    /// Nothing to do: unknown deployment, no request on record, already done, or this
    /// attempt is being handled by another delivery.
    Nothing { why: String },
}

/// Runs the pre-deploy backup requested for `deployment_id`.
pub async fn run(ctx: &JobContext, deployment_id: &str) -> Result<PreDeployOutcome, JobError> {
    let svc = &ctx.services;
    let nothing = |why: &str| {
        Ok(PreDeployOutcome::Nothing {
            why: why.to_string(),
        })
    };
    let Some(record) = predeploy::record(svc, deployment_id).await? else {
        return nothing("no pre-deploy backup was requested for this deployment");
    };
    match record.status {
        Status::Done => {
            // Done, but GitHub may not have been told (the answer failed): try again.
            let answered = answer_github(svc, deployment_id).await?;
            return Ok(PreDeployOutcome::BackedUp {
                backups: record.backups,
                github_answered: answered,
            });
        }
        Status::Failed => {
            return nothing("the last attempt failed; the sweeper decides on a retry")
        }
        Status::Requested | Status::Running => {}
    }
    let claim = format!("{deployment_id}:{}", record.attempts);
    match svc
        .repo
        .begin_event(CLAIM_SCOPE, &claim, svc.now(), CLAIM_LEASE)
        .await?
    {
        Claim::Acquired => {}
        Claim::Done => return nothing("this attempt was handled before"),
        Claim::InProgress => return nothing("this attempt is already being handled"),
    }
    let result = attempt(ctx, deployment_id, record).await;
    if result.is_ok() {
        if let Err(e) = svc
            .repo
            .confirm_event(CLAIM_SCOPE, &claim, svc.now(), CLAIM_TTL)
            .await
        {
            tracing::error!(deployment_id, error = %e, "could not confirm the backup attempt's claim; a redelivery after its lease repeats the attempt");
        }
    } else if let Err(e) = svc.repo.release_event(CLAIM_SCOPE, &claim).await {
        tracing::error!(deployment_id, error = %e, "could not release the backup attempt's claim; a redelivery waits for its lease to run out");
    }
    result
}

/// One claimed attempt: back up, record the result, tell whoever needs to know. An `Err`
/// means the attempt did not get to record its outcome and a redelivery should run it.
async fn attempt(
    ctx: &JobContext,
    deployment_id: &str,
    mut record: predeploy::PreDeployBackup,
) -> Result<PreDeployOutcome, JobError> {
    let svc = &ctx.services;
    let backups = ctx.backups.as_ref().ok_or(JobError::NotConfigured {
        what: "backup storage (SHIPGATE_BACKUP_BUCKET and SHIPGATE_KMS_KEY_ID, or a local backup directory)",
    });
    let backups = match backups {
        Ok(b) => b,
        Err(e) => {
            record.status = Status::Failed;
            record.since = svc.now();
            record.error = Some(e.to_string());
            predeploy::save(svc, &record).await?;
            return Err(e);
        }
    };
    record.status = Status::Running;
    record.since = svc.now();
    predeploy::save(svc, &record).await?;
    tracing::info!(deployment_id, tables = %record.tables.join(","), attempt = record.attempts, "pre-deploy backup started");

    let result = backups.backup_tables(svc, &record.tables).await;
    let now = svc.now();
    record.since = now;
    match result {
        Ok(manifests) => {
            record.status = Status::Done;
            record.backups = manifests.iter().map(|m| m.backup_id.clone()).collect();
            record.error = None;
            predeploy::save(svc, &record).await?;
            let summary = format!(
                "backed up {} before deploying {deployment_id} to {}: {}",
                record.tables.join(", "),
                record.environment,
                manifests
                    .iter()
                    .map(|m| format!("{} ({} items)", m.backup_id, m.items))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            tracing::info!(deployment_id, %summary, "pre-deploy backup done");
            svc.publish(job_notification(now, true, summary, &record))
                .await;
            let answered = answer_github(svc, deployment_id).await?;
            Ok(PreDeployOutcome::BackedUp {
                backups: record.backups,
                github_answered: answered,
            })
        }
        Err(e) => {
            let error = e.to_string();
            record.status = Status::Failed;
            record.error = Some(error.clone());
            predeploy::save(svc, &record).await?;
            let last = record.attempts >= predeploy::MAX_ATTEMPTS;
            let summary = format!(
                "pre-deploy backup of {} for {deployment_id} ({}) failed, attempt {} of {}: {error}{}",
                record.tables.join(", "),
                record.environment,
                record.attempts,
                predeploy::MAX_ATTEMPTS,
                if last {
                    "; the deployment will be cancelled"
                } else {
                    "; the deployment waits and the sweeper retries"
                }
            );
            tracing::error!(deployment_id, %summary, "pre-deploy backup failed");
            svc.publish(job_notification(now, false, summary, &record))
                .await;
            if last {
                // Cancels the deployment and tells GitHub why.
                answer_github(svc, deployment_id).await?;
            }
            Ok(PreDeployOutcome::Failed { error })
        }
    }
}

fn job_notification(
    at: jiff::Timestamp,
    ok: bool,
    summary: String,
    record: &predeploy::PreDeployBackup,
) -> Notification {
    Notification::new(
        at,
        NotificationBody::Job {
            job: JOB.to_string(),
            ok,
            summary,
            details: serde_json::to_value(record).unwrap_or(serde_json::Value::Null),
            page: !ok,
        },
    )
}
