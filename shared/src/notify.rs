//! Notifications: what shipgate tells people, and the port that carries it to the notifier.
//!
//! Handlers publish a typed [`Notification`]; on AWS it travels SNS → SQS → the notifier
//! function, in the self-hosted binary through an in-process channel to the same notifier
//! code. Each notification has an `id` the notifier dedupes on, so a redelivered message is
//! sent once.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::deployment::{Deployment, State};

/// One notification, serialised as JSON on the wire (SNS message body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification; the notifier's idempotency key.
    pub id: String,
    pub at: Timestamp,
    #[serde(flatten)]
    pub body: NotificationBody,
}

/// A snapshot of a deployment, enough to render a message without reading state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSummary {
    pub id: String,
    pub repo: String,
    pub environment: String,
    pub git_ref: String,
    pub sha: String,
    pub requester: String,
    pub state: State,
    pub approvals: Vec<String>,
    pub approvals_required: u32,
    #[serde(default)]
    pub checks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub break_glass: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_target: Option<String>,
    /// Carried by the Slack buttons with the id; not a secret, only a staleness check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button_nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<Timestamp>,
    /// Its place in its scope's queue while it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSpot>,
    /// One line per analysis check: where it stands and its last value (the notifier fills it
    /// in from the samples; the record does not carry them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<String>,
}

/// Where a queued deployment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpot {
    /// 1 for the next to go once the lock frees; 0 when not known (rendered from the record).
    pub position: u32,
    /// The deployment that holds the scope's lock.
    pub behind: String,
    /// Rejected if still waiting then.
    pub until: Timestamp,
}

impl From<&Deployment> for DeploymentSummary {
    fn from(d: &Deployment) -> Self {
        DeploymentSummary {
            id: d.id.clone(),
            repo: d.repo.to_string(),
            environment: d.environment.to_string(),
            git_ref: d.git_ref.clone(),
            sha: d.sha.to_string(),
            requester: d.requester.clone(),
            state: d.state,
            approvals: d.approvals.iter().map(|a| a.approver.clone()).collect(),
            approvals_required: d.approvals_required,
            checks: d.checks.clone(),
            reason: d.reason.clone(),
            break_glass: d.break_glass.is_some(),
            rollback_target: d.rollback.as_ref().map(|r| r.target_sha.clone()),
            button_nonce: d.button_nonce.clone(),
            approval_expires_at: d.approval_expires_at,
            verify_until: d.verify_until,
            // Its place in line is not stored (it changes as others leave); a queued record
            // still says whom it waits behind, at position 0 ("not known here").
            queue: d
                .queued
                .as_ref()
                .filter(|_| d.state == State::Queued)
                .map(|t| QueueSpot {
                    position: 0,
                    behind: t.behind.clone(),
                    until: t.until,
                }),
            analysis: Vec::new(),
        }
    }
}

/// What happened.
// A notification lives for one publish (it is serialised at once) and most are deployment
// ones: boxing the summary would allocate for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotificationBody {
    /// A deployment changed (approval requested, progress, decided, deploying, verifying,
    /// succeeded, failed, rolling back, rolled back, expired). The notifier posts the first
    /// message for a deployment and updates it in place afterwards.
    Deployment {
        deployment: DeploymentSummary,
        event: String,
    },
    /// An incident opened, fired again, or resolved.
    Incident {
        incident_id: String,
        environment: Option<String>,
        severity: String,
        title: String,
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment_id: Option<String>,
        /// The repository the incident belongs to (absent on an environment-level one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repository: Option<String>,
        /// Why the incident is, or is not, attributed to a deployment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribution: Option<String>,
    },
    /// A scheduled job's result (backup, drills, DORA report, sweeper), with a text summary.
    Job {
        job: String,
        ok: bool,
        summary: String,
        #[serde(default)]
        details: serde_json::Value,
        /// Page someone when this fails.
        #[serde(default)]
        page: bool,
    },
    /// A production deployment reached its approvals and the policy names tables to back up
    /// first (`pre_deploy_backups`). Not for people: the scheduled-jobs function takes these
    /// (an SNS subscription filtered on `kind`) and answers GitHub once the backups are done.
    PreDeployBackup {
        deployment_id: String,
        environment: String,
        tables: Vec<String>,
    },
}

impl Notification {
    pub fn new(at: Timestamp, body: NotificationBody) -> Self {
        Notification {
            id: uuid::Uuid::now_v7().to_string(),
            at,
            body,
        }
    }

    /// A queued deployment's notification, with its place in the queue.
    pub fn queued(at: Timestamp, dep: &Deployment, spot: QueueSpot) -> Self {
        let mut deployment = DeploymentSummary::from(dep);
        deployment.queue = Some(spot);
        Self::new(
            at,
            NotificationBody::Deployment {
                deployment,
                event: "queued".to_string(),
            },
        )
    }

    pub fn deployment(at: Timestamp, dep: &Deployment, event: &str) -> Self {
        Self::new(
            at,
            NotificationBody::Deployment {
                deployment: dep.into(),
                event: event.to_string(),
            },
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publishing failed: {message}")]
    Failed {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// The port handlers publish through.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, notification: &Notification) -> Result<(), PublishError>;
}
