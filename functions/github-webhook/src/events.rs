//! The GitHub webhook payloads shipgate uses, parsed into typed events.
//!
//! Only the fields shipgate needs are read, so payloads may carry anything else; a missing
//! required field is a [`ParseError`] naming it.

use jiff::Timestamp;
use serde::Deserialize;
use shipgate::outbound::github::parse_run_id;
use shipgate::service::gate::ProtectionRuleRequest;
use shipgate::service::lifecycle::{DeploymentCreated, DeploymentStatus};

/// A delivery shipgate acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum GitHubEvent {
    Ping {
        hook_id: Option<u64>,
        app_id: Option<u64>,
        zen: Option<String>,
    },
    ProtectionRule(ProtectionRuleRequest),
    DeploymentCreated(DeploymentCreated),
    DeploymentStatus(DeploymentStatus),
    WorkflowRunCompleted {
        repo: String,
        sha: String,
        workflow: String,
        conclusion: String,
        at: Timestamp,
    },
    /// Commits pushed, with their timestamps (lead time starts there).
    Push {
        repo: String,
        commits: Vec<(String, Timestamp)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// An event (or action) shipgate does not act on.
    #[error("event {event} is not used")]
    Unused {
        event: String,
        action: Option<String>,
    },
    #[error("malformed {event} payload: {message}")]
    Malformed { event: String, message: String },
}

fn malformed(event: &str, message: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        event: event.to_string(),
        message: message.into(),
    }
}

fn from_json<'a, T: Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, ParseError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = json_error(event, T::deserialize(&mut *de))?;
    // One JSON document per delivery: anything after it is a malformed body, not ignored.
    json_error(event, de.end())?;
    Ok(value)
}

// serde_json's own error already names line/column and the missing field.
fn json_error<T>(event: &str, r: Result<T, serde_json::Error>) -> Result<T, ParseError> {
    r.map_err(|e| malformed(event, e.to_string()))
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct RunRef {
    id: u64,
}

#[derive(Deserialize)]
struct ActionOnly {
    action: Option<String>,
}

#[derive(Deserialize)]
struct PingPayload {
    zen: Option<String>,
    hook_id: Option<u64>,
    hook: Option<PingHook>,
}

#[derive(Deserialize)]
struct PingHook {
    app_id: Option<u64>,
}

#[derive(Deserialize)]
struct ProtectionRulePayload {
    action: String,
    environment: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    sha: Option<String>,
    deployment_callback_url: String,
    #[serde(default)]
    deployment: Option<GhDeployment>,
    #[serde(default)]
    installation: Option<Installation>,
    sender: Login,
    repository: Repository,
}

#[derive(Deserialize)]
struct GhDeployment {
    id: u64,
    sha: String,
    #[serde(rename = "ref")]
    git_ref: String,
    environment: String,
    #[serde(default)]
    payload: serde_json::Value,
}

#[derive(Deserialize)]
struct DeploymentPayload {
    action: String,
    deployment: GhDeployment,
    repository: Repository,
    #[serde(default)]
    workflow_run: Option<RunRef>,
}

#[derive(Deserialize)]
struct GhStatus {
    state: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    environment: Option<String>,
}

#[derive(Deserialize)]
struct DeploymentStatusPayload {
    action: String,
    deployment_status: GhStatus,
    deployment: GhDeployment,
    repository: Repository,
    #[serde(default)]
    workflow_run: Option<RunRef>,
}

#[derive(Deserialize)]
struct WorkflowRun {
    head_sha: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    path: Option<String>,
    updated_at: Timestamp,
}

#[derive(Deserialize)]
struct WorkflowRunPayload {
    action: String,
    workflow_run: WorkflowRun,
    repository: Repository,
}

#[derive(Deserialize)]
struct Commit {
    id: String,
    timestamp: Timestamp,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    commits: Vec<Commit>,
    #[serde(default)]
    head_commit: Option<Commit>,
    repository: Repository,
}

/// The shipgate deployment a GitHub deployment's payload says it rolls back, if any.
fn rollback_of(payload: &serde_json::Value) -> Option<String> {
    let obj = match payload {
        serde_json::Value::Object(_) => payload.clone(),
        // Older integrations send the payload as a JSON string.
        serde_json::Value::String(s) => serde_json::from_str(s).ok()?,
        _ => return None,
    };
    obj.get("shipgate_rollback_of")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Parses a delivery by its `X-GitHub-Event` name.
pub fn parse(event: &str, body: &[u8]) -> Result<GitHubEvent, ParseError> {
    // Every payload must at least be a JSON object, whatever the event.
    let head: ActionOnly = from_json(event, body)?;
    let unused = |action: Option<String>| {
        Err(ParseError::Unused {
            event: event.to_string(),
            action,
        })
    };
    match event {
        "ping" => {
            let p: PingPayload = from_json(event, body)?;
            Ok(GitHubEvent::Ping {
                hook_id: p.hook_id,
                app_id: p.hook.and_then(|h| h.app_id),
                zen: p.zen,
            })
        }
        "deployment_protection_rule" => {
            if head.action.as_deref() != Some("requested") {
                return unused(head.action);
            }
            let p: ProtectionRulePayload = from_json(event, body)?;
            debug_assert_eq!(p.action, "requested");
            let sha = p
                .sha
                .or_else(|| p.deployment.as_ref().map(|d| d.sha.clone()))
                .ok_or_else(|| malformed(event, "neither `sha` nor `deployment.sha` is present"))?;
            let git_ref = p
                .git_ref
                .or_else(|| p.deployment.as_ref().map(|d| d.git_ref.clone()))
                .ok_or_else(|| malformed(event, "neither `ref` nor `deployment.ref` is present"))?;
            let run_id = parse_run_id(&p.deployment_callback_url).ok_or_else(|| {
                malformed(event, "`deployment_callback_url` does not name a workflow run (…/actions/runs/{id}/…)")
            })?;
            if p.environment.trim().is_empty() {
                return Err(malformed(event, "`environment` is empty"));
            }
            Ok(GitHubEvent::ProtectionRule(ProtectionRuleRequest {
                repo: p.repository.full_name,
                environment: p.environment,
                event: p.event.unwrap_or_default(),
                git_ref,
                sha,
                run_id,
                installation_id: p.installation.map(|i| i.id),
                requester: p.sender.login,
                break_glass_reason: None,
            }))
        }
        "deployment" => {
            if head.action.as_deref() != Some("created") {
                return unused(head.action);
            }
            let p: DeploymentPayload = from_json(event, body)?;
            debug_assert_eq!(p.action, "created");
            Ok(GitHubEvent::DeploymentCreated(DeploymentCreated {
                github_deployment_id: p.deployment.id,
                repo: p.repository.full_name,
                environment: p.deployment.environment,
                sha: p.deployment.sha,
                git_ref: p.deployment.git_ref,
                run_id: p.workflow_run.map(|r| r.id),
                rollback_of: rollback_of(&p.deployment.payload),
            }))
        }
        "deployment_status" => {
            if head.action.as_deref() != Some("created") {
                return unused(head.action);
            }
            let p: DeploymentStatusPayload = from_json(event, body)?;
            debug_assert_eq!(p.action, "created");
            let environment = p
                .deployment_status
                .environment
                .unwrap_or(p.deployment.environment);
            Ok(GitHubEvent::DeploymentStatus(DeploymentStatus {
                github_deployment_id: p.deployment.id,
                repo: p.repository.full_name,
                environment,
                sha: p.deployment.sha,
                git_ref: p.deployment.git_ref,
                state: p.deployment_status.state,
                description: p.deployment_status.description,
                run_id: p.workflow_run.map(|r| r.id),
                rollback_of: rollback_of(&p.deployment.payload),
            }))
        }
        "workflow_run" => {
            if head.action.as_deref() != Some("completed") {
                return unused(head.action);
            }
            let p: WorkflowRunPayload = from_json(event, body)?;
            debug_assert_eq!(p.action, "completed");
            let run = p.workflow_run;
            Ok(GitHubEvent::WorkflowRunCompleted {
                repo: p.repository.full_name,
                sha: run.head_sha,
                workflow: run.path.or(run.name).unwrap_or_else(|| "workflow".into()),
                conclusion: run.conclusion.unwrap_or_else(|| "unknown".into()),
                at: run.updated_at,
            })
        }
        "push" => {
            let p: PushPayload = from_json(event, body)?;
            if p.deleted {
                return unused(Some("deleted".into()));
            }
            let mut commits: Vec<(String, Timestamp)> =
                p.commits.into_iter().map(|c| (c.id, c.timestamp)).collect();
            if let Some(head) = p.head_commit {
                if !commits.iter().any(|(id, _)| *id == head.id) {
                    commits.push((head.id, head.timestamp));
                }
            }
            Ok(GitHubEvent::Push {
                repo: p.repository.full_name,
                commits,
            })
        }
        _ => unused(head.action),
    }
}
