//! The requests the demo's GitHub, Slack and Alertmanager send, built from the sample events
//! in the repository (embedded, so the binary works anywhere) with the story's facts patched
//! in: environment, sha, run id, who clicked, when. Nothing is hand-written from scratch, so
//! the demo speaks the same wire formats the handlers' tests and the real services use.
//!
//! Templates may be bare payloads or API Gateway events wrapping one (`"body": "…"`); both
//! are accepted.

use jiff::Timestamp;
use serde_json::{json, Map, Value};

/// GitHub `deployment_protection_rule` / `requested` (production).
const PROTECTION_RULE: &str =
    include_str!("../../../events/github-webhook/apigw-deployment-protection-rule-production.json");
/// GitHub `deployment` / `created`.
const DEPLOYMENT: &str =
    include_str!("../../../events/github-webhook/apigw-deployment-created.json");
/// GitHub `deployment_status` / `created` (`success`).
const DEPLOYMENT_STATUS: &str =
    include_str!("../../../events/github-webhook/apigw-deployment-status-success.json");
/// GitHub `push`.
const PUSH: &str = include_str!("../../../events/github-webhook/apigw-push.json");
/// GitHub `ping` from the App's webhook.
const PING: &str = include_str!("../../../events/github-webhook/apigw-ping.json");
/// Slack `block_actions` (an Approve click), as API Gateway delivers it.
const SLACK_CLICK: &str =
    include_str!("../../../events/slack-approval/apigw-block-actions-approve.json");
/// Alertmanager webhook v4 (a critical alert firing in production), as API Gateway delivers it.
const ALERTMANAGER: &str =
    include_str!("../../../events/alert-webhook/apigw-alertmanager-firing.json");

/// A template that does not parse: a broken sample event in the repository.
#[derive(Debug, thiserror::Error)]
#[error("sample event {name} is not usable: {reason}")]
pub struct TemplateError {
    pub name: &'static str,
    pub reason: String,
}

fn template(name: &'static str, text: &str) -> Result<Value, TemplateError> {
    let bad = |reason: String| TemplateError { name, reason };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    // An API Gateway event: the payload is its body.
    match v.get("body") {
        Some(Value::String(body)) if v.get("headers").is_some() => {
            if body.starts_with("payload=") {
                let raw = body.trim_start_matches("payload=");
                let decoded = form_decode(raw);
                serde_json::from_str(&decoded).map_err(|e| bad(e.to_string()))
            } else {
                serde_json::from_str(body).map_err(|e| bad(e.to_string()))
            }
        }
        _ => Ok(v),
    }
}

/// Sets `value` at `path`, creating objects on the way (and replacing non-objects there).
fn put(v: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *v = value;
        return;
    };
    let mut cur = v;
    for key in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        cur = obj
            .entry((*key).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert((*last).to_string(), value);
    }
}

/// The repository the story deploys.
#[derive(Debug, Clone)]
pub struct Repository {
    pub owner: String,
    pub name: String,
}

impl Repository {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    fn stamp(&self, v: &mut Value) {
        put(v, &["repository", "full_name"], json!(self.full_name()));
        put(v, &["repository", "name"], json!(self.name));
        put(v, &["repository", "owner", "login"], json!(self.owner));
    }
}

/// What GitHub knows about one deployment of the story.
#[derive(Debug, Clone)]
pub struct GhDeployment<'a> {
    pub repo: &'a Repository,
    pub environment: &'a str,
    pub git_ref: &'a str,
    pub sha: &'a str,
    /// The Actions run deploying it (absent for deployments shipgate created itself).
    pub run_id: Option<u64>,
    /// GitHub's deployment id.
    pub id: u64,
    /// The deployment's `payload` (shipgate's rollbacks carry `shipgate_rollback_of`).
    pub payload: Value,
    pub creator: &'a str,
}

impl GhDeployment<'_> {
    fn stamp(&self, v: &mut Value) {
        self.repo.stamp(v);
        put(v, &["deployment", "id"], json!(self.id));
        put(v, &["deployment", "sha"], json!(self.sha));
        put(v, &["deployment", "ref"], json!(self.git_ref));
        put(v, &["deployment", "environment"], json!(self.environment));
        put(
            v,
            &["deployment", "original_environment"],
            json!(self.environment),
        );
        put(v, &["deployment", "payload"], self.payload.clone());
        put(v, &["deployment", "creator", "login"], json!(self.creator));
        put(v, &["sender", "login"], json!(self.creator));
        match self.run_id {
            Some(run) => put(v, &["workflow_run", "id"], json!(run)),
            None => {
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("workflow_run".into(), Value::Null);
                }
            }
        }
    }
}

/// `deployment_protection_rule` / `requested`: a workflow job reached `environment` and GitHub
/// asks shipgate whether it may go on.
#[allow(clippy::too_many_arguments)]
pub fn protection_rule(
    repo: &Repository,
    environment: &str,
    git_ref: &str,
    sha: &str,
    run_id: u64,
    github_deployment: u64,
    installation_id: u64,
    sender: &str,
) -> Result<Value, TemplateError> {
    let mut v = template("deployment_protection_rule", PROTECTION_RULE)?;
    repo.stamp(&mut v);
    put(&mut v, &["action"], json!("requested"));
    put(&mut v, &["environment"], json!(environment));
    put(&mut v, &["event"], json!("push"));
    put(&mut v, &["ref"], json!(git_ref));
    put(&mut v, &["sha"], json!(sha));
    put(
        &mut v,
        &["deployment_callback_url"],
        json!(format!(
            "https://api.github.com/repos/{}/actions/runs/{run_id}/deployment_protection_rule",
            repo.full_name()
        )),
    );
    put(&mut v, &["installation", "id"], json!(installation_id));
    put(&mut v, &["sender", "login"], json!(sender));
    // The deployment GitHub created for the waiting job.
    put(&mut v, &["deployment", "id"], json!(github_deployment));
    put(&mut v, &["deployment", "sha"], json!(sha));
    put(
        &mut v,
        &["deployment", "ref"],
        json!(git_ref.trim_start_matches("refs/heads/")),
    );
    put(&mut v, &["deployment", "environment"], json!(environment));
    put(
        &mut v,
        &["deployment", "original_environment"],
        json!(environment),
    );
    put(&mut v, &["deployment", "creator", "login"], json!(sender));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("pull_requests".into(), json!([]));
    }
    Ok(v)
}

/// `deployment` / `created`.
pub fn deployment_created(dep: &GhDeployment<'_>) -> Result<Value, TemplateError> {
    let mut v = template("deployment", DEPLOYMENT)?;
    put(&mut v, &["action"], json!("created"));
    dep.stamp(&mut v);
    Ok(v)
}

/// `deployment_status` / `created` with `state` (`in_progress`, `success`, `failure`…).
pub fn deployment_status(
    dep: &GhDeployment<'_>,
    state: &str,
    description: &str,
) -> Result<Value, TemplateError> {
    let mut v = template("deployment_status", DEPLOYMENT_STATUS)?;
    put(&mut v, &["action"], json!("created"));
    dep.stamp(&mut v);
    put(&mut v, &["deployment_status", "state"], json!(state));
    put(
        &mut v,
        &["deployment_status", "description"],
        json!(description),
    );
    put(
        &mut v,
        &["deployment_status", "environment"],
        json!(dep.environment),
    );
    put(
        &mut v,
        &["deployment_status", "creator", "login"],
        json!(dep.creator),
    );
    Ok(v)
}

/// One commit of a push.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    pub sha: &'a str,
    pub message: &'a str,
    pub at: Timestamp,
    pub author: &'a str,
}

/// `push` of `commits` (oldest first) to `branch`.
pub fn push(
    repo: &Repository,
    branch: &str,
    before: &str,
    commits: &[Commit<'_>],
) -> Result<Value, TemplateError> {
    let mut v = template("push", PUSH)?;
    repo.stamp(&mut v);
    let list: Vec<Value> = commits
        .iter()
        .map(|c| {
            json!({
                "id": c.sha,
                "tree_id": c.sha,
                "distinct": true,
                "message": c.message,
                "timestamp": c.at.to_string(),
                "url": format!("https://github.com/{}/commit/{}", repo.full_name(), c.sha),
                "author": { "name": c.author, "username": c.author },
                "committer": { "name": c.author, "username": c.author },
                "added": [], "removed": [], "modified": []
            })
        })
        .collect();
    let after = commits.last().map(|c| c.sha).unwrap_or(before);
    put(&mut v, &["ref"], json!(format!("refs/heads/{branch}")));
    put(&mut v, &["before"], json!(before));
    put(&mut v, &["after"], json!(after));
    put(&mut v, &["created"], json!(false));
    put(&mut v, &["deleted"], json!(false));
    put(
        &mut v,
        &["head_commit"],
        list.last().cloned().unwrap_or(Value::Null),
    );
    put(&mut v, &["commits"], Value::Array(list));
    if let Some(author) = commits.last().map(|c| c.author) {
        put(&mut v, &["pusher", "name"], json!(author));
        put(&mut v, &["sender", "login"], json!(author));
    }
    Ok(v)
}

/// `ping`: sent once when the App's webhook is set up.
pub fn ping(app_id: u64) -> Result<Value, TemplateError> {
    let mut v = template("ping", PING)?;
    put(&mut v, &["hook", "app_id"], json!(app_id));
    Ok(v)
}

/// One click on one of shipgate's Slack buttons.
#[derive(Debug, Clone)]
pub struct SlackClick<'a> {
    pub action_id: &'a str,
    pub value: &'a str,
    pub user_id: &'a str,
    pub user_name: &'a str,
    pub channel: &'a str,
    pub message_ts: &'a str,
    pub message_text: &'a str,
    pub response_url: &'a str,
    /// Slack's `action_ts` (seconds.micros).
    pub action_ts: &'a str,
}

/// The `block_actions` interaction JSON Slack sends for `click`.
pub fn slack_click(click: &SlackClick<'_>) -> Result<Value, TemplateError> {
    let mut v = template("slack block_actions", SLACK_CLICK)?;
    put(&mut v, &["user", "id"], json!(click.user_id));
    put(&mut v, &["user", "username"], json!(click.user_name));
    put(&mut v, &["user", "name"], json!(click.user_name));
    put(
        &mut v,
        &["container", "message_ts"],
        json!(click.message_ts),
    );
    put(&mut v, &["container", "channel_id"], json!(click.channel));
    put(&mut v, &["channel", "id"], json!(click.channel));
    put(&mut v, &["message", "ts"], json!(click.message_ts));
    put(&mut v, &["message", "text"], json!(click.message_text));
    put(&mut v, &["response_url"], json!(click.response_url));
    put(
        &mut v,
        &["trigger_id"],
        json!(format!(
            "8171234567890.1234567890123.{}",
            click.action_ts.replace('.', "")
        )),
    );
    let mut action = v
        .pointer("/actions/0")
        .cloned()
        .unwrap_or_else(|| json!({ "type": "button", "block_id": "shipgate_decision" }));
    put(&mut action, &["action_id"], json!(click.action_id));
    put(&mut action, &["value"], json!(click.value));
    put(&mut action, &["action_ts"], json!(click.action_ts));
    let label = match click.action_id {
        shipgate::render::APPROVE_ACTION_ID => "Approve",
        shipgate::render::REJECT_ACTION_ID => "Reject",
        _ => "Roll back",
    };
    put(&mut action, &["text", "text"], json!(label));
    put(&mut v, &["actions"], json!([action]));
    Ok(v)
}

/// Slack's form body: `payload=<url-encoded JSON>`.
pub fn slack_form(interaction: &Value) -> String {
    format!("payload={}", form_encode(&interaction.to_string()))
}

/// An Alertmanager notification for the story's one alert, `firing` or `resolved`.
pub fn alertmanager(
    status: &str,
    starts_at: Timestamp,
    ends_at: Option<Timestamp>,
) -> Result<Value, TemplateError> {
    let mut v = template("alertmanager", ALERTMANAGER)?;
    put(&mut v, &["status"], json!(status));
    let mut alerts = v
        .get("alerts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    alerts.truncate(1);
    for alert in &mut alerts {
        put(alert, &["status"], json!(status));
        put(alert, &["startsAt"], json!(starts_at.to_string()));
        let ends = ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| t.to_string());
        put(alert, &["endsAt"], json!(ends));
    }
    put(&mut v, &["alerts"], Value::Array(alerts));
    Ok(v)
}

/// The first alert's name, summary and labels as the story tells them.
pub fn alert_title(v: &Value) -> String {
    let name = v
        .pointer("/alerts/0/labels/alertname")
        .and_then(Value::as_str)
        .unwrap_or("alert");
    let severity = v
        .pointer("/alerts/0/labels/severity")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let env = v
        .pointer("/alerts/0/labels/env")
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{name} severity={severity} env={env}")
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The inverse of [`form_encode`]; malformed escapes are kept as they are.
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repository {
        Repository {
            owner: "octo-org".into(),
            name: "hello-world".into(),
        }
    }

    #[test]
    fn protection_rule_parses_as_the_github_handler_reads_it() {
        let v = protection_rule(
            &repo(),
            "production",
            "refs/heads/main",
            "abc123",
            77,
            5001,
            42,
            "alice-ops",
        )
        .expect("template");
        let body = serde_json::to_vec(&v).expect("json");
        let parsed =
            github_webhook::events::parse("deployment_protection_rule", &body).expect("parse");
        let github_webhook::events::GitHubEvent::ProtectionRule(req) = parsed else {
            panic!("not a protection rule: {parsed:?}");
        };
        assert_eq!(req.repo, "octo-org/hello-world");
        assert_eq!(req.environment, "production");
        assert_eq!(req.run_id, 77);
        assert_eq!(req.installation_id, Some(42));
        assert_eq!(req.requester, "alice-ops");
        assert_eq!(req.sha, "abc123");
        assert_eq!(req.git_ref, "refs/heads/main");
    }

    #[test]
    fn rollback_statuses_carry_the_rollback_marker_and_no_run() {
        let r = repo();
        let dep = GhDeployment {
            repo: &r,
            environment: "production",
            git_ref: "abc123",
            sha: "abc123",
            run_id: None,
            id: 9001,
            payload: json!({ "shipgate_rollback_of": "dep-1" }),
            creator: "shipgate-demo[bot]",
        };
        let body = serde_json::to_vec(&deployment_status(&dep, "success", "done").expect("t"))
            .expect("json");
        let parsed = github_webhook::events::parse("deployment_status", &body).expect("parse");
        let github_webhook::events::GitHubEvent::DeploymentStatus(st) = parsed else {
            panic!("not a status: {parsed:?}");
        };
        assert_eq!(st.github_deployment_id, 9001);
        assert_eq!(st.state, "success");
        assert_eq!(st.rollback_of.as_deref(), Some("dep-1"));
        assert_eq!(st.run_id, None);
    }

    #[test]
    fn push_lists_every_commit_with_its_time() {
        let at: Timestamp = "2026-03-02T10:00:00Z".parse().expect("ts");
        let commits = [Commit {
            sha: "abc123",
            message: "Add /healthz",
            at,
            author: "octocat",
        }];
        let body =
            serde_json::to_vec(&push(&repo(), "main", "000", &commits).expect("t")).expect("json");
        let parsed = github_webhook::events::parse("push", &body).expect("parse");
        let github_webhook::events::GitHubEvent::Push(push) = parsed else {
            panic!("not a push: {parsed:?}");
        };
        assert_eq!(push.repo, "octo-org/hello-world");
        assert_eq!(push.commits, vec![("abc123".parse().expect("sha"), at)]);
    }

    #[test]
    fn slack_clicks_round_trip_through_the_form_encoding() {
        let click = SlackClick {
            action_id: "shipgate_approve",
            value: "dep-1:nonce",
            user_id: "U0APPROV2",
            user_name: "bob-sre",
            channel: "C0PRODUCTION",
            message_ts: "1750000000.000100",
            message_text: "Deploy? 0 of 2 approvals & more",
            response_url: "http://127.0.0.1:1/actions/T/U0APPROV2/1",
            action_ts: "1750000001.000001",
        };
        let form = slack_form(&slack_click(&click).expect("template"));
        let raw = form.strip_prefix("payload=").expect("prefix");
        let v: Value = serde_json::from_str(&form_decode(raw)).expect("json");
        assert_eq!(v["user"]["id"], "U0APPROV2");
        assert_eq!(v["actions"][0]["value"], "dep-1:nonce");
        assert_eq!(v["actions"][0]["action_id"], "shipgate_approve");
        assert_eq!(v["message"]["text"], "Deploy? 0 of 2 approvals & more");
    }

    #[test]
    fn alerts_fire_and_resolve_with_the_story_times() {
        let start: Timestamp = "2026-03-02T10:00:00Z".parse().expect("ts");
        let end: Timestamp = "2026-03-02T10:05:00Z".parse().expect("ts");
        let v = alertmanager("resolved", start, Some(end)).expect("template");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["alerts"][0]["status"], "resolved");
        assert_eq!(v["alerts"][0]["endsAt"], "2026-03-02T10:05:00Z");
        assert_eq!(
            alert_title(&v),
            "ApiHighErrorRate severity=critical env=production"
        );
    }

    #[test]
    fn form_decoding_keeps_malformed_escapes() {
        assert_eq!(form_decode("a%2Bb+c%zz%4"), "a+b c%zz%4");
    }
}
