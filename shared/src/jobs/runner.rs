//! Runs one job the same way whatever started it: record the result, announce it, emit its
//! success as a metric. A schedule tick is claimed first so a repeated tick does nothing.

use std::time::Duration;

use tracing::Instrument;

use super::emf::{self, Unit};
use super::{
    dora, probes, rollback_drill, sweeper, JobContext, JobError, JobName, JobOutcome, JobReport,
};
use crate::notify::{Notification, NotificationBody};
use crate::store::repo::Claim;

/// How long a handled tick is remembered. Lambda retries a failed asynchronous invocation for
/// up to six hours, and EventBridge never repeats a tick days later.
pub const JOB_CLAIM_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

/// How long a tick being run keeps other invocations out: longer than a Lambda can run
/// (15 minutes), so a live run is never taken over, while a crashed one is retried.
const JOB_LEASE: Duration = Duration::from_secs(20 * 60);

/// Runs `job` now, on demand (`shipgate job NAME`): never deduplicated.
pub async fn run(ctx: &JobContext, job: JobName) -> Result<JobReport, JobError> {
    execute(ctx, job, None).await
}

/// Runs `job` for the schedule tick `tick` (the EventBridge event's `time`, or another id that
/// is the same for every delivery of one tick). A tick seen before returns a report marked
/// `duplicate` and changes nothing, as does a tick another invocation is running now. The
/// claim is pending while the job runs and confirmed when it succeeded; when the job fails,
/// the claim is given back so a retry of the same tick runs it (and if even that fails, the
/// retry runs it once the claim's lease is over).
pub async fn run_scheduled(
    ctx: &JobContext,
    job: JobName,
    tick: &str,
) -> Result<JobReport, JobError> {
    let svc = &ctx.services;
    let now = svc.now();
    let key = format!("{job}:{tick}");
    let report = |summary: String| JobReport {
        job,
        ok: true,
        summary,
        details: serde_json::Value::Null,
        started_at: now,
        finished_at: now,
        scheduled_for: Some(tick.to_string()),
        duplicate: true,
    };
    match svc.repo.begin_event("job", &key, now, JOB_LEASE).await? {
        Claim::Acquired => {}
        Claim::Done => {
            tracing::info!(job = %job, tick, "schedule tick already handled; nothing to do");
            return Ok(report(format!("tick {tick} was already handled")));
        }
        Claim::InProgress => {
            // Another invocation runs this tick now; if it fails it gives the claim back (or
            // its lease runs out) and the scheduler's own retry runs the tick.
            tracing::info!(job = %job, tick, "schedule tick is being handled by another invocation");
            return Ok(report(format!("tick {tick} is being handled")));
        }
    }
    let result = execute(ctx, job, Some(tick)).await;
    if result.is_err() {
        if let Err(e) = svc.repo.release_event("job", &key).await {
            tracing::error!(job = %job, error = %e, "could not release the tick claim; a retry of the tick waits for its lease to run out");
        }
    } else if let Err(e) = svc
        .repo
        .confirm_event("job", &key, svc.now(), JOB_CLAIM_TTL)
        .await
    {
        tracing::error!(job = %job, error = %e, "could not confirm the tick claim; a retry after its lease runs the job again");
    }
    result
}

async fn outcome_of(ctx: &JobContext, job: JobName) -> Result<JobOutcome, JobError> {
    let svc = &ctx.services;
    let backups = || {
        ctx.backups.as_ref().ok_or(JobError::NotConfigured {
            what: "backup storage (SHIPGATE_BACKUP_BUCKET and SHIPGATE_KMS_KEY_ID, or a local backup directory)",
        })
    };
    match job {
        JobName::Backup => backups()?.backup(svc).await,
        JobName::RestoreDrill => backups()?.restore_drill(svc).await,
        JobName::RollbackDrill => rollback_drill::start(ctx).await,
        JobName::DoraReport => dora::run(ctx).await,
        JobName::Sweeper => sweeper::run(ctx).await,
        JobName::HealthProbes => probes::run(ctx).await,
        JobName::Migrate => migrate(svc).await,
    }
}

/// The `migrate` job: the store to the current schema, or nothing when it is there.
async fn migrate(svc: &crate::service::Services) -> Result<JobOutcome, JobError> {
    use crate::store::migrate;
    let report = migrate::migrate(&svc.repo)
        .await
        .map_err(|e| JobError::Failed {
            job: JobName::Migrate,
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
    let details = serde_json::to_value(&report).unwrap_or_default();
    Ok(JobOutcome::ok(migrate::summary(&report), details))
}

async fn execute(
    ctx: &JobContext,
    job: JobName,
    tick: Option<&str>,
) -> Result<JobReport, JobError> {
    // The policy in force when the job starts, for the whole run.
    let ctx = &ctx.current().await;
    let svc = &ctx.services;
    let started_at = svc.now();
    let span = tracing::info_span!("job", job = %job, tick = tick.unwrap_or(""));
    let result = outcome_of(ctx, job).instrument(span).await;
    let finished_at = svc.now();
    let (outcome, error) = match result {
        Ok(o) => (o, None),
        Err(e) => (
            JobOutcome::failed(format!("{job} could not run: {e}"), serde_json::Value::Null),
            Some(e),
        ),
    };
    let report = JobReport {
        job,
        ok: outcome.ok,
        summary: outcome.summary.clone(),
        details: outcome.details.clone(),
        started_at,
        finished_at,
        scheduled_for: tick.map(str::to_string),
        duplicate: false,
    };
    if let Err(e) = svc.repo.put_meta("job", job.as_str(), &report).await {
        tracing::error!(job = %job, error = %e, "could not record the job result");
    }
    if outcome.announce || !outcome.ok {
        svc.publish(Notification::new(
            finished_at,
            NotificationBody::Job {
                job: job.as_str().to_string(),
                ok: outcome.ok,
                summary: outcome.summary.clone(),
                details: outcome.details.clone(),
                page: !outcome.ok && job.pages_on_failure(),
            },
        ))
        .await;
    }
    let dims = [("Job", job.as_str())];
    ctx.metrics.emit(emf::line(
        finished_at,
        &dims,
        "JobSucceeded",
        Unit::Count,
        if outcome.ok { 1.0 } else { 0.0 },
    ));
    ctx.metrics.emit(emf::line(
        finished_at,
        &dims,
        "JobDuration",
        Unit::Seconds,
        finished_at.duration_since(started_at).as_secs_f64(),
    ));
    if outcome.ok {
        tracing::info!(job = %job, summary = %outcome.summary, "job finished");
    } else {
        tracing::warn!(job = %job, summary = %outcome.summary, "job reported a problem");
    }
    match error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
