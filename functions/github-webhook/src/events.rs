//! The GitHub webhook payloads shipgate uses, parsed into typed events.
//!
//! Only the fields shipgate needs are read, so payloads may carry anything else; a missing
//! required field is a [`ParseError`] naming it. Repository names, environment names and
//! shas are parsed into their domain types here, so a delivery with a malformed one is a
//! [`ParseError::Malformed`] (a 400) and never reaches the use cases.

use jiff::Timestamp;
use serde::Deserialize;
use shipgate::domain::events::{
    CommitsPushed, DeploymentCreated, DeploymentStatus, ProtectionRuleRequest, WorkflowRunCompleted,
};
use shipgate::domain::{EnvName, GitHubDeploymentState, IdError, RepoName, Sha};
use shipgate::outbound::github::parse_run_id;

/// The webhook events shipgate acts on, each an arm of [`parse`]'s match below: exactly the
/// events its GitHub App subscribes to (`default_events` in `manifests/github-app.json`; a test
/// in `tests/tests/manifests.rs` keeps the manifest, this list and the match equal).
///
/// - `deployment_protection_rule` (action `requested`): the gate itself;
/// - `deployment` (`created`): a deployment GitHub created, rollbacks included;
/// - `deployment_status` (`created`): where a deployment is (in progress, success, failure);
/// - `workflow_run` (`completed`): a sha's CI outcome; a run that did not succeed withdraws its
///   requests still waiting on shipgate;
/// - `push`: the pushed commits' times, where lead time starts.
///
/// `ping` is parsed too, but GitHub sends it to a new webhook unasked: it is no subscription.
pub const HANDLED_EVENTS: &[&str] = &[
    "deployment_protection_rule",
    "deployment",
    "deployment_status",
    "workflow_run",
    "push",
];

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
    WorkflowRunCompleted(WorkflowRunCompleted),
    /// Commits pushed, with their timestamps (lead time starts there).
    Push(CommitsPushed),
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

/// Parses one checked field, naming it in the error: `repository.full_name: repository must
/// be `owner/name``.
fn field<T>(
    event: &str,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
    value: &str,
) -> Result<T, ParseError> {
    parse(value).map_err(|e| malformed(event, format!("`{name}`: {e}")))
}

fn repo(event: &str, r: &Repository) -> Result<RepoName, ParseError> {
    field(event, "repository.full_name", RepoName::parse, &r.full_name)
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
    id: u64,
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
    before: Option<String>,
    #[serde(default)]
    after: Option<String>,
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
            let (sha_field, sha) = match (p.sha, p.deployment.as_ref()) {
                (Some(sha), _) => ("sha", sha),
                (None, Some(d)) => ("deployment.sha", d.sha.clone()),
                (None, None) => {
                    return Err(malformed(
                        event,
                        "neither `sha` nor `deployment.sha` is present",
                    ))
                }
            };
            let sha = field(event, sha_field, Sha::parse, &sha)?;
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
            let environment = field(event, "environment", EnvName::parse, &p.environment)?;
            Ok(GitHubEvent::ProtectionRule(ProtectionRuleRequest {
                repo: repo(event, &p.repository)?,
                environment,
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
                repo: repo(event, &p.repository)?,
                environment: field(
                    event,
                    "deployment.environment",
                    EnvName::parse,
                    &p.deployment.environment,
                )?,
                sha: field(event, "deployment.sha", Sha::parse, &p.deployment.sha)?,
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
            let environment = match &p.deployment_status.environment {
                Some(env) => field(event, "deployment_status.environment", EnvName::parse, env)?,
                None => field(
                    event,
                    "deployment.environment",
                    EnvName::parse,
                    &p.deployment.environment,
                )?,
            };
            Ok(GitHubEvent::DeploymentStatus(DeploymentStatus {
                github_deployment_id: p.deployment.id,
                repo: repo(event, &p.repository)?,
                environment,
                sha: field(event, "deployment.sha", Sha::parse, &p.deployment.sha)?,
                git_ref: p.deployment.git_ref,
                state: GitHubDeploymentState::parse(&p.deployment_status.state),
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
            Ok(GitHubEvent::WorkflowRunCompleted(WorkflowRunCompleted {
                run_id: run.id,
                repo: repo(event, &p.repository)?,
                sha: field(event, "workflow_run.head_sha", Sha::parse, &run.head_sha)?,
                workflow: run.path.or(run.name).unwrap_or_else(|| "workflow".into()),
                conclusion: run.conclusion.unwrap_or_else(|| "unknown".into()),
                at: run.updated_at,
            }))
        }
        "push" => {
            let p: PushPayload = from_json(event, body)?;
            if p.deleted {
                return unused(Some("deleted".into()));
            }
            let sha = |c: &Commit, name: &str| field(event, name, Sha::parse, &c.id);
            let mut commits: Vec<(Sha, Timestamp)> = p
                .commits
                .iter()
                .map(|c| Ok((sha(c, "commits[].id")?, c.timestamp)))
                .collect::<Result<_, ParseError>>()?;
            if let Some(head) = &p.head_commit {
                let id = sha(head, "head_commit.id")?;
                if !commits.iter().any(|(seen, _)| *seen == id) {
                    commits.push((id, head.timestamp));
                }
            }
            // A new branch's `before` is forty zeros: no previous head.
            let head = |name: &str, value: &Option<String>| match value.as_deref() {
                Some(v) if !v.bytes().all(|b| b == b'0') => {
                    field(event, name, Sha::parse, v).map(Some)
                }
                _ => Ok(None),
            };
            Ok(GitHubEvent::Push(CommitsPushed {
                repo: repo(event, &p.repository)?,
                before: head("before", &p.before)?,
                after: head("after", &p.after)?,
                commits,
            }))
        }
        _ => unused(head.action),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

    fn status(full_name: &str, environment: &str, sha: &str, state: &str) -> Vec<u8> {
        serde_json::json!({
            "action": "created",
            "deployment_status": {"state": state, "environment": environment},
            "deployment": {"id": 7, "sha": sha, "ref": "main", "environment": environment},
            "repository": {"full_name": full_name},
        })
        .to_string()
        .into_bytes()
    }

    fn message(r: Result<GitHubEvent, ParseError>) -> String {
        match r {
            Err(e @ ParseError::Malformed { .. }) => e.to_string(),
            other => panic!("expected a malformed payload, got {other:?}"),
        }
    }

    #[test]
    fn a_status_arrives_with_parsed_names_a_sha_and_a_state() {
        let body = status("octo-org/hello-world", "production", SHA, "in_progress");
        let Ok(GitHubEvent::DeploymentStatus(st)) = parse("deployment_status", &body) else {
            panic!("not a status");
        };
        assert_eq!(st.repo.owner(), "octo-org");
        assert_eq!(st.environment, "production");
        assert_eq!(st.sha, SHA);
        assert_eq!(st.state, GitHubDeploymentState::InProgress);
        let body = status("octo-org/hello-world", "production", SHA, "destroyed");
        let Ok(GitHubEvent::DeploymentStatus(st)) = parse("deployment_status", &body) else {
            panic!("not a status");
        };
        assert_eq!(st.state, GitHubDeploymentState::Other("destroyed".into()));
    }

    #[test]
    fn a_bad_repository_environment_or_sha_is_malformed_and_names_the_field() {
        let cases = [
            (
                status("octo-org", "production", SHA, "success"),
                "`repository.full_name`",
            ),
            (
                status("octo-org/hello-world", "prod\nuction", SHA, "success"),
                "`deployment_status.environment`",
            ),
            (
                status("octo-org/hello-world", "production", "HEAD", "success"),
                "`deployment.sha`",
            ),
        ];
        for (body, field) in cases {
            let text = message(parse("deployment_status", &body));
            assert!(text.contains(field), "{text}");
        }
    }

    #[test]
    fn a_long_bad_value_is_not_repeated_in_the_error() {
        let long = "z".repeat(10_000);
        let text = message(parse(
            "deployment_status",
            &status("octo-org/hello-world", "production", &long, "success"),
        ));
        assert!(!text.contains("zzzzzzzz"), "{text}");
    }

    #[test]
    fn every_pushed_commit_id_must_be_a_sha() {
        let at = "2026-03-02T10:00:00Z";
        let body = serde_json::json!({
            "repository": {"full_name": "acme/api"},
            "commits": [{"id": SHA, "timestamp": at}, {"id": "nope", "timestamp": at}],
        })
        .to_string();
        let text = message(parse("push", body.as_bytes()));
        assert!(text.contains("`commits[].id`"), "{text}");
    }
}
