//! The inbound events shipgate acts on, as the edge parsed them: what GitHub said in a
//! `deployment_protection_rule`, `deployment`, `deployment_status`, `workflow_run` or `push`
//! delivery, and an alert from any alert source. Entry points (the Lambda functions,
//! `shipgate serve`) build these; the use cases in `crate::service` take them.
//!
//! Repository names, environment names, shas and deployment states are the parsed types of
//! [`super::ids`]: an event that exists was already checked, and a delivery that fails the
//! check is refused at the edge.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ids::{EnvName, GitHubDeploymentState, RepoName, Sha};

/// Longest alert title kept (Slack and PagerDuty summaries are short).
pub const MAX_TITLE_CHARS: usize = 200;

/// What GitHub told us in a `deployment_protection_rule` / `requested` delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionRuleRequest {
    pub repo: RepoName,
    pub environment: EnvName,
    /// The event that triggered the run (`push`, `workflow_dispatch`...).
    pub event: String,
    pub git_ref: String,
    pub sha: Sha,
    pub run_id: u64,
    pub installation_id: Option<u64>,
    /// GitHub login of the sender.
    pub requester: String,
    /// A break-glass reason, when the run asked for one.
    pub break_glass_reason: Option<String>,
}

/// A GitHub deployment was created (`deployment` / `created`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentCreated {
    pub github_deployment_id: u64,
    pub repo: RepoName,
    pub environment: EnvName,
    pub sha: Sha,
    pub git_ref: String,
    /// The workflow run that created it, when GitHub Actions did.
    pub run_id: Option<u64>,
    /// A shipgate deployment id found in the deployment's payload (`shipgate_rollback_of`).
    pub rollback_of: Option<String>,
}

/// A GitHub deployment status (`deployment_status` / `created`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub github_deployment_id: u64,
    pub repo: RepoName,
    pub environment: EnvName,
    pub sha: Sha,
    pub git_ref: String,
    pub state: GitHubDeploymentState,
    pub description: Option<String>,
    pub run_id: Option<u64>,
    pub rollback_of: Option<String>,
}

/// A CI outcome for a sha (`workflow_run` / `completed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowRunCompleted {
    pub run_id: u64,
    pub repo: RepoName,
    pub sha: Sha,
    /// The workflow's path, else its name.
    pub workflow: String,
    /// `success`, `failure`, ... or `unknown` when GitHub sent none.
    pub conclusion: String,
    pub at: Timestamp,
}

/// Commits pushed (`push`), with their timestamps: lead time starts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitsPushed {
    pub repo: RepoName,
    /// The branch's head before the push; `None` for a new branch.
    pub before: Option<Sha>,
    /// The branch's head after it; `None` when the payload carries no head commit.
    pub after: Option<Sha>,
    pub commits: Vec<(Sha, Timestamp)>,
}

/// Whether an alert is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert from any source, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSignal {
    /// `alertmanager`, `grafana`, `cloudwatch` or `probe`.
    pub source: String,
    /// Stable identity of the alert within its source (see [`fingerprint_of_labels`]).
    pub fingerprint: String,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    /// Where a person can look at the alert (generator URL, dashboard, console).
    pub link: Option<String>,
    /// The transport's own idempotency key (an SNS message id), used instead of the hash of
    /// the alert's fields when present.
    pub delivery_key: Option<String>,
}

impl AlertSignal {
    /// The idempotency key of this notification item.
    pub fn claim_key(&self) -> String {
        if let Some(key) = &self.delivery_key {
            return format!("{}#{key}", self.source);
        }
        let stamp = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
        let mut hash = Sha256::new();
        for part in [
            self.source.as_str(),
            self.fingerprint.as_str(),
            self.status.as_str(),
            &stamp(self.starts_at),
            &stamp(self.ends_at),
        ] {
            // Length-prefixed, so no two field lists hash the same bytes.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hex::encode(hash.finalize())
    }

    /// A one-line title: the `summary` or `title` annotation, else the `alertname` label.
    pub fn title(&self) -> String {
        let text = ["summary", "title"]
            .iter()
            .find_map(|k| self.annotations.get(*k).filter(|v| !v.trim().is_empty()))
            .or_else(|| {
                self.labels
                    .get("alertname")
                    .filter(|v| !v.trim().is_empty())
            })
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| format!("alert {}", self.fingerprint));
        let line = text.lines().next().unwrap_or_default();
        match line.char_indices().nth(MAX_TITLE_CHARS) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        }
    }
}

/// A stable fingerprint for an alert that carries none: SHA-256 over its labels in sorted
/// order (each key and value length-prefixed), the first 16 hex digits — the same length as
/// Alertmanager's own fingerprints.
pub fn fingerprint_of_labels(labels: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    for (k, v) in labels {
        hash.update((k.len() as u64).to_be_bytes());
        hash.update(k.as_bytes());
        hash.update((v.len() as u64).to_be_bytes());
        hash.update(v.as_bytes());
    }
    let digest = hex::encode(hash.finalize());
    digest[..16].to_string()
}
