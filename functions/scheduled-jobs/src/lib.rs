//! The scheduled-jobs function: an EventBridge schedule names a job, [`handle`] runs it through
//! [`shipgate::jobs`].
//!
//! Three event shapes are accepted, because schedules can be wired three ways:
//!
//! - `{"job": "sweeper"}`: a SAM `Schedule` event with a constant `Input` (what `template.yaml`
//!   sends). It carries no time, so the Lambda request id — the same for every retry of one
//!   asynchronous invocation — identifies the tick.
//! - `{"job": "sweeper", "time": "2026-03-02T10:00:00Z"}`: an EventBridge Scheduler target input
//!   using `<aws.scheduler.scheduled-time>`, or a hand-made invocation.
//! - a full EventBridge `Scheduled Event` (`detail-type`, `time`, ...) whose `detail` is
//!   `{"job": "..."}`.
//!
//! When a tick is known, it is claimed (`job:{name}:{tick}`): the same tick delivered twice
//! runs the job once.
//!
//! The function is also subscribed to shipgate's notification topic, filtered to
//! `kind = pre_deploy_backup`: an SNS event whose messages ask for a deployment's pre-deploy
//! backup ([`shipgate::jobs::predeploy`]). [`handle_invocation`] takes both shapes.

use serde::Serialize;
use serde_json::Value;
use shipgate::jobs::predeploy::{self, PreDeployOutcome};
use shipgate::jobs::{self, JobContext, JobError, JobName, JobReport, UnknownJob};
use shipgate::notify::{Notification, NotificationBody};

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub job: JobName,
    /// The scheduled time (or another per-tick id) to deduplicate on.
    pub tick: Option<String>,
}

/// Why an event could not be turned into a job.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event names no job: expected {{\"job\": NAME}} or a Scheduled Event whose detail is {{\"job\": NAME}}")]
    NoJob,
    #[error("\"job\" must be a string")]
    JobNotAString,
    #[error(transparent)]
    UnknownJob(#[from] UnknownJob),
    #[error("SNS record {index} does not carry a shipgate notification")]
    BadSnsMessage {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("bad event: {0}")]
    Event(#[from] EventError),
    #[error(transparent)]
    Job(#[from] JobError),
}

fn job_in(v: &Value) -> Result<Option<JobName>, EventError> {
    match v.get("job") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.parse()?)),
        Some(_) => Err(EventError::JobNotAString),
    }
}

fn string_at(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Reads the job (and the tick, when the event has one) out of any accepted shape.
pub fn parse_event(event: &Value) -> Result<JobRequest, EventError> {
    if let Some(job) = job_in(event)? {
        return Ok(JobRequest {
            job,
            tick: string_at(event, "time"),
        });
    }
    if let Some(detail) = event.get("detail") {
        if let Some(job) = job_in(detail)? {
            return Ok(JobRequest {
                job,
                tick: string_at(event, "time").or_else(|| string_at(event, "id")),
            });
        }
    }
    Err(EventError::NoJob)
}

/// Runs the job an event names. `request_id` (the Lambda invocation's) stands in for the tick
/// when the event has no time.
pub async fn handle(
    ctx: &JobContext,
    event: &Value,
    request_id: Option<&str>,
) -> Result<JobReport, HandlerError> {
    let request = parse_event(event)?;
    let tick = request
        .tick
        .or_else(|| request_id.map(|id| format!("request:{id}")));
    let report = match tick {
        Some(tick) => jobs::run_scheduled(ctx, request.job, &tick).await?,
        None => jobs::run(ctx, request.job).await?,
    };
    Ok(report)
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Handled {
    /// A schedule tick (or a hand-made invocation) ran a job.
    Job(JobReport),
    /// An SNS delivery asked for pre-deploy backups: one outcome per request, in order.
    PreDeployBackups(Vec<PreDeployOutcome>),
}

/// The deployments an SNS event asks pre-deploy backups for, or `None` when the event is not
/// an SNS event. Notifications of other kinds are skipped: the subscription filter should
/// keep them away, and they are the notifier's.
pub fn pre_deploy_requests(event: &Value) -> Result<Option<Vec<String>>, EventError> {
    let Some(records) = event.get("Records").and_then(Value::as_array) else {
        return Ok(None);
    };
    let is_sns = |r: &Value| {
        r.get("EventSource").and_then(Value::as_str) == Some("aws:sns")
            || r.get("eventSource").and_then(Value::as_str) == Some("aws:sns")
    };
    if records.is_empty() || !records.iter().all(is_sns) {
        return Ok(None);
    }
    let mut wanted = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let message = record
            .get("Sns")
            .and_then(|sns| sns.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let notification: Notification = serde_json::from_str(message)
            .map_err(|source| EventError::BadSnsMessage { index, source })?;
        match notification.body {
            NotificationBody::PreDeployBackup { deployment_id, .. } => wanted.push(deployment_id),
            _ => tracing::info!(
                notification_id = %notification.id,
                "notification is not a pre-deploy backup request; ignored"
            ),
        }
    }
    Ok(Some(wanted))
}

/// The Lambda handler: a schedule tick runs its job ([`handle`]); an SNS delivery runs the
/// pre-deploy backups it asks for. A backup that could not run fails the invocation, so
/// Lambda retries it (and the sweeper re-requests it in any case).
pub async fn handle_invocation(
    ctx: &JobContext,
    event: &Value,
    request_id: Option<&str>,
) -> Result<Handled, HandlerError> {
    let Some(deployments) = pre_deploy_requests(event)? else {
        return handle(ctx, event, request_id).await.map(Handled::Job);
    };
    let mut outcomes = Vec::with_capacity(deployments.len());
    for deployment_id in deployments {
        outcomes.push(predeploy::run(ctx, &deployment_id).await?);
    }
    Ok(Handled::PreDeployBackups(outcomes))
}
