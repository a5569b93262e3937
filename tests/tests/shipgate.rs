//! Black-box tests of the `shipgate` binary: `serve` runs as a real process on a free
//! loopback port with a temporary data directory and the example policy; the operator
//! commands run as separate processes against the same directory. Slack's Web API is a
//! wiremock server where a test needs one.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use shipgate::signature::sign_github;

#[path = "common/serve.rs"]
mod serve;

use serve::{
    button_value, json_lines, run, shipgate, stderr, stdout, wait_with_timeout, Server, Workspace,
    SECRET,
};

async fn deliver(
    server: &Server,
    event: &str,
    delivery: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(server.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery);
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    let resp = req.body(body).send().await.expect("send delivery");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("response is not JSON: {text:?}"));
    (status, json)
}

/// GitHub's `deployment_status` `success` for run `run_id`'s deployment `github_id` of
/// `acme/api` in staging, delivered as `delivery`; returns the answer's body.
async fn deploy_succeeded(server: &Server, delivery: &str, github_id: u64, run_id: u64) -> Value {
    let status = serde_json::json!({
        "action": "created",
        "deployment_status": { "state": "success", "environment": "staging" },
        "deployment": { "id": github_id, "sha": "0123456789abcdef0123456789abcdef01234567", "ref": "refs/heads/main", "environment": "staging", "payload": {} },
        "repository": { "full_name": "acme/api" },
        "workflow_run": { "id": run_id },
    })
    .to_string();
    let (_, body) = deliver(
        server,
        "deployment_status",
        delivery,
        status.clone().into(),
        signed(status.as_bytes()),
    )
    .await;
    body
}

fn signed(body: &[u8]) -> Option<String> {
    Some(sign_github(&SecretString::from(SECRET), body))
}

const PING: &str = r#"{"zen":"Keep it logically awesome.","hook_id":123,"hook":{"app_id":42}}"#;

fn protection_rule(environment: &str, run_id: u64) -> String {
    protection_rule_for("acme/api", environment, run_id)
}

fn protection_rule_for(repo: &str, environment: &str, run_id: u64) -> String {
    serde_json::json!({
        "action": "requested",
        "environment": environment,
        "event": "push",
        "ref": "refs/heads/main",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "deployment_callback_url": format!("https://api.github.com/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": 7 },
        "sender": { "login": "octocat" },
        "repository": { "full_name": repo }
    })
    .to_string()
}

#[tokio::test]
async fn github_route_answers_the_documented_status_codes() {
    let server = Server::start().await;

    let (status, body) = deliver(
        &server,
        "ping",
        "d-bad-sig",
        PING.into(),
        Some(format!("sha256={}", "0".repeat(64))),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("unauthorized"))
    );

    let (status, _) = deliver(&server, "ping", "d-unsigned", PING.into(), None).await;
    assert_eq!(status, 401);

    let garbage = b"this is not json".to_vec();
    let (status, _) = deliver(
        &server,
        "ping",
        "d-malformed",
        garbage.clone(),
        signed(&garbage),
    )
    .await;
    assert_eq!(status, 400);

    // The server answers 413 as soon as it sees the length and may close the connection
    // while the client is still writing the body; the client then reports a broken pipe
    // instead of the answer. Ask again until the answer is read (bounded).
    let huge = vec![b' '; shipgate::web::MAX_BODY_BYTES + 1];
    let mut answer = None;
    for _ in 0..5 {
        let sent = reqwest::Client::new()
            .post(server.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", "d-huge")
            .header("x-hub-signature-256", signed(&huge).unwrap_or_default())
            .body(huge.clone())
            .send()
            .await;
        if let Ok(resp) = sent {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("a JSON answer");
            answer = Some((status, body));
            break;
        }
    }
    let (status, body) = answer.expect("an answer to the oversized delivery");
    assert_eq!(status, 413);
    assert_eq!(body["message"], "request body is larger than 1048576 bytes");

    let suite = br#"{"action":"completed","check_suite":{"id":1}}"#.to_vec();
    let (status, body) = deliver(
        &server,
        "check_suite",
        "d-suite",
        suite.clone(),
        signed(&suite),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let (status, body) = deliver(
        &server,
        "ping",
        "d-ping",
        PING.into(),
        signed(PING.as_bytes()),
    )
    .await;
    assert_eq!((status, body["message"].as_str()), (200, Some("pong")));
    let (status, body) = deliver(
        &server,
        "ping",
        "d-ping",
        PING.into(),
        signed(PING.as_bytes()),
    )
    .await;
    assert_eq!(
        (status, body["duplicate"].as_bool()),
        (200, Some(true)),
        "a redelivery changes nothing"
    );

    let logs = server.logs();
    assert!(
        logs.contains("/webhooks/github"),
        "requests are logged: {logs}"
    );
    assert!(
        !logs.contains(SECRET),
        "the webhook secret leaked into the logs"
    );
    assert!(
        !logs.contains("logically awesome"),
        "a request body leaked into the logs"
    );
    let sig = signed(PING.as_bytes()).unwrap_or_default();
    assert!(
        !logs.contains(sig.trim_start_matches("sha256=")),
        "a signature leaked into the logs"
    );
}

#[tokio::test]
async fn unconfigured_routes_answer_503_naming_the_variable_and_unknown_ones_404() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    for (path, message) in [
        (
            "/webhooks/slack",
            "Slack is not configured: set SHIPGATE_SLACK_SIGNING_SECRET",
        ),
        (
            "/webhooks/alertmanager",
            "Alerting is not configured: set SHIPGATE_ALERT_TOKEN",
        ),
        (
            "/webhooks/grafana",
            "Alerting is not configured: set SHIPGATE_ALERT_TOKEN",
        ),
    ] {
        let resp = client
            .post(server.url(path))
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 503, "{path}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["message"], message, "{path}");
    }
    let logs = server.logs();
    assert!(
        logs.contains("SHIPGATE_SLACK_SIGNING_SECRET") && logs.contains("SHIPGATE_ALERT_TOKEN"),
        "serve warns at start about what is not configured: {logs}"
    );
    let resp = client.get(server.url("/nope")).send().await.expect("send");
    assert_eq!(resp.status(), 404);
    let resp = client
        .get(server.url("/webhooks/github"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["message"], "method not allowed");
}

#[tokio::test]
async fn healthz_reports_ok_and_the_version() {
    let server = Server::start().await;
    let resp = reqwest::get(server.url("/healthz")).await.expect("healthz");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        server.ws.data().join("shipgate.db").is_file(),
        "the state lives in DIR/shipgate.db"
    );
}

#[tokio::test]
async fn serve_exits_zero_promptly_on_sigterm() {
    let mut server = Server::start().await;
    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(10))
        .expect("exited within 10 s");
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        server.logs()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(server.logs().contains("shutdown requested"));
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_before_exiting() {
    use std::io::Write;
    let mut server = Server::start().await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let sig = signed(PING.as_bytes()).unwrap_or_default();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (first, rest) = PING.as_bytes().split_at(10);
    write!(
        conn,
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: ping\r\nX-GitHub-Delivery: d-slow\r\nX-Hub-Signature-256: {sig}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        PING.len()
    )
    .expect("send headers");
    conn.write_all(first)
        .expect("send the first part of the body");
    conn.flush().expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    assert!(kill.expect("run kill").success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "exited with a request in flight"
    );

    conn.write_all(rest).expect("send the rest of the body");
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .expect("read the response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("pong"), "{response}");
    let status = wait_with_timeout(&mut server.child, Duration::from_secs(10))
        .expect("exits after the request");
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_refuses_to_start_without_the_webhook_secret() {
    let err = refused_start(&Workspace::new(), &[]);
    assert!(err.contains("SHIPGATE_GITHUB_WEBHOOK_SECRET"), "{err}");
    assert!(err.contains("/webhooks/github"), "{err}");
}

const BROKEN_POLICY: &str = r#"[identities]
U0APPROV1 = "alice-ops"

[environments.production]
approvals_required = 1
approvers = ["U0APPROV1"]
verification_window = "15 minutes"

[[environments.production.windows]]
days = ["mon", "funday"]
start = "08:00"
end = "18:00"
timezone = "Europe/Berlin"
"#;

fn broken_policy(dir: &Path) -> PathBuf {
    let path = dir.join("broken.toml");
    std::fs::write(&path, BROKEN_POLICY).expect("write policy");
    path
}

#[test]
fn policy_check_reports_every_problem_with_its_line_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = broken_policy(dir.path());
    let out = run(shipgate().arg("policy").arg("check").arg(&path));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let p = path.display();
    assert!(
        text.contains(&format!(
            "{p}:7:23: environments.production.verification_window: invalid duration"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{p}:10:16: environments.production.windows[0].days[1]: unknown weekday \"funday\""
        )),
        "{text}"
    );
}

#[test]
fn serve_refuses_an_invalid_policy_and_prints_its_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = broken_policy(dir.path());
    let out = run(shipgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--policy")
        .arg(&path)
        .env("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:10:16:", path.display())), "{err}");
}

#[test]
fn example_policy_round_trips_through_policy_check() {
    let mut example = shipgate()
        .args(["policy", "example"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn policy example");
    let pipe = example.stdout.take().expect("stdout");
    let check = run(shipgate()
        .args(["policy", "check", "-"])
        .stdin(Stdio::from(pipe)));
    assert!(example.wait().expect("wait").success());
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    let text = stdout(&check);
    assert!(text.starts_with("<stdin>: ok, 2 environments\n"), "{text}");
    assert!(
        text.contains("  production: ") && text.contains("  staging: "),
        "{text}"
    );
}

#[tokio::test]
async fn status_and_history_show_a_gated_deployment() {
    let server = Server::start().await;
    let (status, _) = deliver(&server, "ping", "d-1", PING.into(), signed(PING.as_bytes())).await;
    assert_eq!(status, 200);
    let rule = protection_rule("staging", 4242);
    let (status, body) = deliver(
        &server,
        "deployment_protection_rule",
        "d-2",
        rule.clone().into(),
        signed(rule.as_bytes()),
    )
    .await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let id = body["deployment_id"]
        .as_str()
        .expect("deployment id")
        .to_string();

    // Read beside the running server, as an operator would.
    let data = server.ws.data();
    let policy = server.ws.policy();
    let out = run(shipgate()
        .arg("status")
        .arg("--data")
        .arg(&data)
        .arg("--policy")
        .arg(&policy)
        .arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let envs: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["environment"].as_str())
        .collect();
    assert_eq!(envs, ["production", "staging"]);
    let staging = &lines[1];
    assert_eq!(staging["lock"]["deployment_id"], id.as_str());
    assert_eq!(staging["lock"]["state"], "approved");
    assert_eq!(staging["latest_deployment"]["id"], id.as_str());
    assert_eq!(
        staging["latest_deployment"]["sha"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(staging["current"], Value::Null);
    assert_eq!(staging["open_incidents"], serde_json::json!([]));
    assert_eq!(lines[0]["lock"], Value::Null);

    // The variables work as well as the flags.
    let out = run(shipgate()
        .arg("status")
        .env("SHIPGATE_DATA_DIR", &data)
        .env("SHIPGATE_POLICY_FILE", &policy));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("SCOPE"), "{table}");
    assert!(table.contains(&format!("{id} (approved)")), "{table}");

    let out = run(shipgate()
        .arg("history")
        .arg("--data")
        .arg(&data)
        .arg("--policy")
        .arg(&policy)
        .arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&stdout(&out));
    let whats: Vec<&str> = events.iter().filter_map(|e| e["what"].as_str()).collect();
    assert_eq!(whats, ["requested", "auto_approve"], "{events:?}");
    assert!(events.iter().all(|e| e["deployment_id"] == id.as_str()));
    assert_eq!(events[1]["to"], "approved");

    let out = run(shipgate()
        .arg("history")
        .arg("--data")
        .arg(&data)
        .args(["--env", "staging", "--limit", "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert_eq!(
        table.lines().count(),
        2,
        "header and the newest event: {table}"
    );
    assert!(
        table.contains("auto_approve") && table.contains("requested -> approved"),
        "{table}"
    );

    let out = run(shipgate().arg("history").arg("--data").arg(&data).args([
        "--env",
        "production",
        "--json",
    ]));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
}

#[test]
fn operator_commands_refuse_a_data_directory_without_state() {
    let ws = Workspace::new();
    let out = run(shipgate()
        .arg("status")
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no shipgate database"),
        "{}",
        stderr(&out)
    );
    assert!(!ws.data().exists(), "status must not create state");
}

#[test]
fn help_lists_the_whole_command_surface() {
    let out = run(shipgate().arg("--help"));
    assert!(out.status.success());
    let help = stdout(&out);
    for cmd in [
        "serve",
        "policy",
        "status",
        "history",
        "incidents",
        "demo",
        "job",
        "backup",
        "rollback",
        "unlock",
        "migrate",
        "setup",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from:\n{help}"
        );
    }
}

// ─── Slack and alert routes ──────────────────────────────────────────────────────────────────

const SLACK_SECRET: &str = "test-slack-signing-secret";
const ALERT_TOKEN: &str = "test-alert-token";

/// One approver for staging, so a single click decides.
const ONE_APPROVER_POLICY: &str = r#"
[identities]
U0REQUEST = "octocat"
U0APPROV1 = "alice-ops"

[environments.staging]
allowed_refs = ["main"]
approvals_required = 1
approvers = ["U0APPROV1"]
prevent_self_approval = true
slack_channel = "C0STAGING"
"#;

/// Slack's Web API and the clicks' `response_url`, answering like Slack.
async fn fake_slack() -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let slack = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({ "ok": true, "channel": "C0STAGING", "ts": "1748858400.000100" }),
        ))
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({ "ok": true, "channel": "C0STAGING", "ts": "1748858400.000100" }),
        ))
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .and(path("/respond"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&slack)
        .await;
    slack
}

/// The JSON bodies Slack received on `path`, waiting up to 10 s for at least `at_least`.
async fn slack_calls(slack: &wiremock::MockServer, path: &str, at_least: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls: Vec<Value> = slack
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == path)
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect();
        if calls.len() >= at_least || Instant::now() > deadline {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `value` of the first button whose `action_id` is `action_id`, anywhere in `v`.
fn block_actions(user: &str, value: &str, response_url: &str) -> Value {
    serde_json::json!({
        "type": "block_actions",
        "user": { "id": user, "username": "alice", "name": "alice", "team_id": "T0TEAM" },
        "api_app_id": "A0SHIPGATE",
        "token": "legacy-verification-token",
        "container": { "type": "message", "message_ts": "1748858400.000100", "channel_id": "C0STAGING", "is_ephemeral": false },
        "trigger_id": "1234.5678.trigger",
        "team": { "id": "T0TEAM", "domain": "acme" },
        "channel": { "id": "C0STAGING", "name": "deploys" },
        "message": { "type": "message", "ts": "1748858400.000100", "text": "Deploy to staging?", "blocks": [] },
        "state": { "values": {} },
        "response_url": response_url,
        "actions": [{
            "action_id": "shipgate_approve",
            "block_id": "shipgate_decision",
            "text": { "type": "plain_text", "text": "Approve", "emoji": true },
            "value": value,
            "type": "button",
            "action_ts": "1748858401.123456"
        }]
    })
}

async fn post_slack(server: &Server, body: &str, signature: Option<String>) -> reqwest::Response {
    let now = jiff::Timestamp::now().as_second();
    let mut req = reqwest::Client::new()
        .post(server.url("/webhooks/slack"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", now.to_string());
    let signature = signature.unwrap_or_else(|| {
        shipgate::signature::sign_slack(&SecretString::from(SLACK_SECRET), now, body.as_bytes())
    });
    req = req.header("x-slack-signature", signature);
    req.body(body.to_string()).send().await.expect("send click")
}

#[tokio::test]
async fn a_signed_slack_click_approves_a_deployment_gated_through_the_github_route() {
    let slack = fake_slack().await;
    let api_url = format!("{}/api", slack.uri());
    let server = Server::launch(
        Workspace::with_policy(ONE_APPROVER_POLICY),
        &[
            ("SHIPGATE_SLACK_SIGNING_SECRET", SLACK_SECRET),
            ("SHIPGATE_SLACK_TEAM_ID", "T0TEAM"),
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-test-token"),
            ("SHIPGATE_SLACK_API_URL", api_url.as_str()),
        ],
        &["--no-schedule"],
    )
    .await;

    let rule = protection_rule("staging", 5151);
    let (status, body) = deliver(
        &server,
        "deployment_protection_rule",
        "d-slack-1",
        rule.clone().into(),
        signed(rule.as_bytes()),
    )
    .await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (200, Some("awaiting_approval")),
        "{body}"
    );
    let id = body["deployment_id"]
        .as_str()
        .expect("deployment id")
        .to_string();

    // The notifier posted the approval request with its buttons.
    let posts = slack_calls(&slack, "/api/chat.postMessage", 1).await;
    assert_eq!(posts.len(), 1, "one approval request: {posts:?}");
    assert_eq!(posts[0]["channel"], "C0STAGING");
    let value = button_value(&posts[0], "shipgate_approve").expect("an Approve button");
    assert!(value.starts_with(&format!("{id}:")), "{value}");

    let click = block_actions("U0APPROV1", &value, &format!("{}/respond", slack.uri()));
    let form = serde_urlencoded::to_string([("payload", click.to_string())]).expect("form");

    // A forged click is refused before anything is read.
    let forged = post_slack(&server, &form, Some(format!("v0={}", "0".repeat(64)))).await;
    assert_eq!(forged.status(), 401);

    let resp = post_slack(&server, &form, None).await;
    assert_eq!(resp.status(), 200);

    let out = run(shipgate()
        .arg("status")
        .arg("--data")
        .arg(server.ws.data())
        .arg("--policy")
        .arg(server.ws.policy())
        .arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let staging = &json_lines(&stdout(&out))[0];
    assert_eq!(staging["latest_deployment"]["id"], id.as_str());
    assert_eq!(
        staging["latest_deployment"]["state"], "approved",
        "{staging}"
    );

    // The clicker heard back on the response_url, and the shared message was updated.
    let answers = slack_calls(&slack, "/respond", 1).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["response_type"], "ephemeral", "{}", answers[0]);
    let updates = slack_calls(&slack, "/api/chat.update", 1).await;
    assert!(
        !updates.is_empty(),
        "the approval request is updated in place"
    );
    assert!(
        !server.logs().contains(SLACK_SECRET) && !server.logs().contains("xoxb-test-token"),
        "Slack secrets leaked into the logs"
    );
}

fn event_body(file: &str) -> String {
    let path = testkit::event_path("alert-webhook", file);
    let text = std::fs::read_to_string(&path).expect("event file");
    let event: Value = serde_json::from_str(&text).expect("event JSON");
    event["body"].as_str().expect("body").to_string()
}

#[tokio::test]
async fn alert_routes_need_the_bearer_token_and_open_incidents_with_it() {
    let server = Server::launch(
        Workspace::new(),
        &[("SHIPGATE_ALERT_TOKEN", ALERT_TOKEN)],
        &["--no-schedule"],
    )
    .await;
    let client = reqwest::Client::new();
    for (route, file) in [
        ("/webhooks/alertmanager", "apigw-alertmanager-firing.json"),
        ("/webhooks/grafana", "apigw-grafana-firing.json"),
    ] {
        let body = event_body(file);
        let resp = client
            .post(server.url(route))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401, "{route} without a token");
        let resp = client
            .post(server.url(route))
            .header("content-type", "application/json")
            .bearer_auth("wrong-token")
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401, "{route} with a wrong token");
        let resp = client
            .post(server.url(route))
            .header("content-type", "application/json")
            .bearer_auth(ALERT_TOKEN)
            .body(body)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "{route}: {text}");
    }
    let out = run(shipgate()
        .arg("status")
        .arg("--data")
        .arg(server.ws.data())
        .arg("--policy")
        .arg(server.ws.policy())
        .arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let production = &json_lines(&stdout(&out))[0];
    assert_eq!(production["environment"], "production");
    assert!(
        production["open_incidents"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "the alerts opened an incident: {production}"
    );
    assert!(
        !server.logs().contains(ALERT_TOKEN),
        "the alert token leaked"
    );
}

// ─── Operator commands: job, backup, rollback ────────────────────────────────────────────────

fn with_data(cmd: &mut Command, ws: &Workspace) -> Output {
    run(cmd.arg("--data").arg(ws.data()))
}

fn with_data_and_policy(cmd: &mut Command, ws: &Workspace) -> Output {
    run(cmd
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy()))
}

/// The backup objects in the data directory, oldest first by name.
fn backup_objects(ws: &Workspace) -> Vec<PathBuf> {
    let dir = ws.data().join("backups").join("shipgate");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sgbk"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn backup_id_of(object: &Path) -> String {
    object
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".sgbk"))
        .expect("backup object name")
        .to_string()
}

#[tokio::test]
async fn jobs_run_on_demand_and_backups_list_verify_and_restore_beside_the_server() {
    let server = Server::start().await;
    let ws = server.ws.clone();
    // Something worth backing up: a gated deployment.
    let rule = protection_rule("staging", 6161);
    let (status, _) = deliver(
        &server,
        "deployment_protection_rule",
        "d-backup-1",
        rule.clone().into(),
        signed(rule.as_bytes()),
    )
    .await;
    assert_eq!(status, 200);

    let out = with_data_and_policy(shipgate().args(["job", "sweeper"]), &ws);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("sweeper: ok: "),
        "{}",
        stdout(&out)
    );

    let out = with_data_and_policy(shipgate().args(["job", "backup", "--json"]), &ws);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_str(stdout(&out).trim()).expect("report JSON");
    assert_eq!(report["job"], "backup");
    assert_eq!(report["ok"], true, "{report}");

    let out = with_data(shipgate().args(["backup", "list", "--json"]), &ws);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = json_lines(&stdout(&out));
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["backup_id"].as_str().expect("id").to_string();
    assert_eq!(listed[0]["source"], "shipgate");
    assert!(listed[0]["items"].as_u64().is_some_and(|n| n > 0));

    let out = with_data(shipgate().args(["backup", "list"]), &ws);
    assert!(stdout(&out).starts_with("BACKUP"), "{}", stdout(&out));
    assert!(stdout(&out).contains(&id));

    let out = with_data(shipgate().args(["backup", "verify", "latest"]), &ws);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("{id}: ok (")),
        "{}",
        stdout(&out)
    );

    // Restore into a new store, then again: refused without --force, done with it.
    let out = with_data(
        shipgate().args(["backup", "restore", &id, "--into", "t1"]),
        &ws,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let restored = ws.data().join("restores").join("t1.db");
    assert!(restored.is_file(), "restored into {}", restored.display());
    assert!(
        stdout(&out).contains(&restored.display().to_string()),
        "{}",
        stdout(&out)
    );
    let out = with_data(
        shipgate().args(["backup", "restore", &id, "--into", "t1"]),
        &ws,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    let out = with_data(
        shipgate().args(["backup", "restore", "latest", "--into", "t1", "--force"]),
        &ws,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("overwriting"), "{}", stdout(&out));

    // The restored store is a working shipgate database: `status` reads it.
    let copy = ws.dir.path().join("copy");
    std::fs::create_dir_all(&copy).expect("mkdir");
    std::fs::copy(&restored, copy.join("shipgate.db")).expect("copy");
    let out = run(shipgate()
        .arg("status")
        .arg("--json")
        .arg("--data")
        .arg(&copy)
        .arg("--policy")
        .arg(ws.policy()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\"state\":\"approved\""),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn verify_names_a_tampered_chunk_and_a_truncated_backup() {
    let server = Server::start().await;
    let ws = server.ws.clone();
    for _ in 0..2 {
        let out = with_data_and_policy(shipgate().args(["job", "backup"]), &ws);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let objects = backup_objects(&ws);
    assert_eq!(objects.len(), 2, "{objects:?}");

    // Flip one byte near the end of the first object: a chunk fails authentication.
    let mut bytes = std::fs::read(&objects[0]).expect("read");
    let at = bytes.len() - 20;
    bytes[at] ^= 0x55;
    std::fs::write(&objects[0], &bytes).expect("tamper");
    let out = with_data(
        shipgate().args(["backup", "verify", &backup_id_of(&objects[0])]),
        &ws,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("failed verification"), "{err}");
    assert!(err.contains("chunk 0 failed authentication"), "{err}");

    // Cut the second one short: truncated.
    let bytes = std::fs::read(&objects[1]).expect("read");
    std::fs::write(&objects[1], &bytes[..bytes.len() - 8]).expect("truncate");
    let out = with_data(
        shipgate().args(["backup", "verify", &backup_id_of(&objects[1])]),
        &ws,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));

    // A tampered backup is never restored.
    let out = with_data(
        shipgate().args([
            "backup",
            "restore",
            &backup_id_of(&objects[0]),
            "--into",
            "t2",
        ]),
        &ws,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused before writing anything"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn with_two_repositories_in_an_environment_rollback_needs_repo_and_status_lists_each_scope() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for (n, repo) in ["acme/api", "acme/web"].into_iter().enumerate() {
        let rule = protection_rule_for(repo, "staging", 4300 + n as u64);
        let (status, body) = deliver(
            &server,
            "deployment_protection_rule",
            &format!("d-two-{n}"),
            rule.clone().into(),
            signed(rule.as_bytes()),
        )
        .await;
        // Each repository holds its own lock: the second is not refused as locked.
        assert_eq!(
            (status, body["decision"].as_str()),
            (200, Some("approved")),
            "{body}"
        );
        ids.push(body["deployment_id"].as_str().expect("id").to_string());
    }

    let out = with_data_and_policy(
        shipgate().args(["rollback", "staging"]).env("USER", "ada"),
        &server.ws,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).trim(),
        "staging: refused: more than one repository has deployed to staging (acme/api, acme/web); say which with --repo OWNER/NAME"
    );
    let out = with_data_and_policy(
        shipgate()
            .args(["rollback", "staging", "--repo", "acme/web"])
            .env("USER", "ada"),
        &server.ws,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).trim(),
        "acme/web · staging: refused: nothing of acme/web has been deployed to staging yet"
    );
    let out = with_data_and_policy(
        shipgate().args(["rollback", "staging", "--repo", "not a repo"]),
        &server.ws,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("--repo"), "{}", stderr(&out));

    let out = with_data_and_policy(shipgate().args(["status", "--json"]), &server.ws);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let staging: Vec<&Value> = lines
        .iter()
        .filter(|l| l["environment"] == "staging")
        .collect();
    let scopes: Vec<&str> = staging.iter().filter_map(|l| l["scope"].as_str()).collect();
    assert_eq!(scopes, ["acme/api · staging", "acme/web · staging"]);
    assert_eq!(staging[0]["lock"]["deployment_id"], ids[0].as_str());
    assert_eq!(staging[1]["lock"]["deployment_id"], ids[1].as_str());

    let out = with_data_and_policy(
        shipgate().args(["status", "--json", "--repo", "acme/web"]),
        &server.ws,
    );
    let lines = json_lines(&stdout(&out));
    assert!(lines.iter().all(|l| l["repo"] == "acme/web"), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");

    let out = with_data_and_policy(
        shipgate().args([
            "history", "--json", "--env", "staging", "--repo", "acme/web",
        ]),
        &server.ws,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&stdout(&out));
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e["deployment_id"] == ids[1].as_str()),
        "{events:?}"
    );
}

#[tokio::test]
async fn migrate_moves_a_v0_store_and_status_and_history_read_it() {
    use shipgate::store::{Condition, Item, ItemStore, Write};
    let root = testkit::workspace_root().join("shared/tests/data/store-v0");
    let policy = std::fs::read_to_string(root.join("demo.policy.toml")).expect("policy");
    let ws = Workspace::with_policy(&policy);
    std::fs::create_dir_all(ws.data()).expect("data dir");
    {
        let store = shipgate::embedded::sqlite::SqliteStore::open(
            ws.data().join("shipgate.db"),
            shipgate::embedded::sqlite::Durability::Full,
        )
        .expect("open");
        let items = std::fs::read_to_string(root.join("demo.items.ndjson")).expect("items");
        for line in items.lines().filter(|l| !l.trim().is_empty()) {
            let item: Item = serde_json::from_str(line).expect("item");
            store
                .write(Write::Put {
                    item,
                    condition: Condition::None,
                })
                .await
                .expect("load");
        }
    }
    let out = with_data(shipgate().arg("migrate"), &ws);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("schema version 0 -> 1: 2 records moved"),
        "{}",
        stdout(&out)
    );
    let out = with_data(shipgate().arg("migrate"), &ws);
    assert_eq!(stdout(&out).trim(), "schema version 1: nothing to do");

    let out = with_data_and_policy(shipgate().args(["status", "--json"]), &ws);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let scopes: Vec<&str> = lines.iter().filter_map(|l| l["scope"].as_str()).collect();
    assert_eq!(scopes, ["acme/api · production", "acme/api · staging"]);
    assert!(lines
        .iter()
        .all(|l| !l["current"].is_null() && !l["last_known_good"].is_null()));
    let out = with_data_and_policy(
        shipgate().args(["history", "--json", "--repo", "acme/api"]),
        &ws,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!json_lines(&stdout(&out)).is_empty());
}

#[tokio::test]
async fn rollback_is_refused_with_a_clear_message_when_nothing_was_deployed() {
    let server = Server::start().await;
    let out = with_data_and_policy(
        shipgate().args(["rollback", "staging"]).env("USER", "ada"),
        &server.ws,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out).trim(),
        "staging: refused: nothing has been deployed to staging yet"
    );
    let out = with_data_and_policy(shipgate().args(["rollback", "qa"]), &server.ws);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("environment qa is not in the policy"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unknown_job_exits_2_listing_the_jobs() {
    let ws = Workspace::new();
    let out = with_data_and_policy(shipgate().args(["job", "backups"]), &ws);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for job in [
        "backup",
        "restore-drill",
        "rollback-drill",
        "dora-report",
        "sweeper",
        "health-probes",
    ] {
        assert!(err.contains(job), "{job} missing from: {err}");
    }
}

#[tokio::test]
async fn serve_runs_a_scheduled_job_once_per_slot_even_across_a_restart() {
    let ws = Workspace::new();
    let only_backup = [
        "--schedule",
        "sweeper=off",
        "--schedule",
        "health-probes=off",
        "--schedule",
        "restore-drill=off",
        "--schedule",
        "dora-report=off",
        "--schedule",
        "rollback-drill=off",
        "--schedule",
        "backup=1d",
    ];
    let wait_for_log = |needle: &'static str, count: usize| {
        let ws = ws.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let logs = std::fs::read_to_string(ws.log()).unwrap_or_default();
                if logs.matches(needle).count() >= count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{needle:?} not logged {count} time(s)");
        }
    };

    let mut server = Server::launch(ws.clone(), &[], &only_backup).await;
    wait_for_log("job done", 1).await;
    assert_eq!(backup_objects(&ws).len(), 1);
    assert!(server
        .terminate(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    drop(server);

    let mut server = Server::launch(ws.clone(), &[], &only_backup).await;
    wait_for_log("schedule tick already handled", 1).await;
    assert_eq!(
        backup_objects(&ws).len(),
        1,
        "no second backup in the same day"
    );
    assert!(server
        .terminate(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
}

#[tokio::test]
async fn every_github_sample_event_is_accepted_by_serve() {
    let server = Server::launch(
        Workspace::new(),
        &[(
            "SHIPGATE_GITHUB_WEBHOOK_SECRET",
            "shipgate-demo-webhook-secret",
        )],
        &["--no-schedule"],
    )
    .await;
    let dir = testkit::workspace_root().join("events/github-webhook");
    // In story order: gate, deploy, statuses, the run, the push, and the App's ping.
    for file in [
        "apigw-ping.json",
        "apigw-push.json",
        "apigw-deployment-protection-rule-staging.json",
        "apigw-deployment-protection-rule-production.json",
        "apigw-deployment-created.json",
        "apigw-deployment-status-in-progress.json",
        "apigw-deployment-status-success.json",
        "apigw-deployment-status-failure.json",
        "apigw-workflow-run-completed.json",
    ] {
        let event: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).expect("read"))
                .expect("event JSON");
        let mut req = reqwest::Client::new().post(server.url("/webhooks/github"));
        for (name, value) in event["headers"].as_object().expect("headers") {
            if ["host", "content-length"].contains(&name.as_str()) {
                continue;
            }
            req = req.header(name.as_str(), value.as_str().expect("header value"));
        }
        let resp = req
            .body(event["body"].as_str().expect("body").to_string())
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert!((200..300).contains(&status), "{file}: {status} {text}");
    }
}

const MANY_REPOS_POLICY: &str = r#"[identities]
U0000000A = "alice"
U0000000B = "bob"
U0000000C = "carol"

[environments.production]
repos = ["acme/*"]
approvals_required = 2
approvers = ["U0000000A", "U0000000B", "U0000000C"]

[[environments.production.overrides]]
repos = ["acme/payments"]
approvals_required = 3
"#;

fn many_repos_policy(dir: &Path) -> PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(&path, MANY_REPOS_POLICY).expect("write policy");
    path
}

#[test]
fn policy_explain_prints_each_effective_rule_and_where_it_came_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = many_repos_policy(dir.path());
    let p = path.display();
    let explain = |repo: &str| {
        run(shipgate()
            .args(["policy", "explain", repo, "production", "--policy"])
            .arg(&path))
    };

    let out = explain("acme/payments");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "acme/payments in production: [environments.production] at {p}:6:1 (repos = [\"acme/*\"])\n"
        )),
        "{text}"
    );
    let line = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} = ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        line("approvals_required"),
        format!("approvals_required = 3 # {p}:13:22 (override for acme/payments)")
    );
    assert_eq!(
        line("approvers"),
        format!("approvers = [\"U0000000A\", \"U0000000B\", \"U0000000C\"] # {p}:9:13")
    );
    assert_eq!(
        line("verification_window"),
        "verification_window = \"15m\" # default"
    );

    let web = stdout(&explain("acme/web"));
    assert!(
        web.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")
                == format!("approvals_required = 2 # {p}:8:22")),
        "{web}"
    );

    let json_out = run(shipgate()
        .args([
            "policy",
            "explain",
            "acme/payments",
            "production",
            "--json",
            "--policy",
        ])
        .arg(&path));
    assert_eq!(json_out.status.code(), Some(0));
    let value: Value = serde_json::from_str(&stdout(&json_out)).expect("one JSON object");
    assert_eq!(value["governed"], Value::Bool(true));
    let rule = value["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["key"] == "approvals_required"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(rule["value"], "3");
    assert_eq!(rule["source"], "override");
    assert_eq!(rule["at"], format!("{p}:13:22"));
}

#[test]
fn policy_explain_says_when_no_section_governs_the_repository_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = many_repos_policy(dir.path());
    let out = run(shipgate()
        .args(["policy", "explain", "other/api", "production", "--policy"])
        .arg(&path));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "no policy section governs other/api in \"production\": [environments.production] at {}:6:1 governs only repos = [\"acme/*\"]\n",
            path.display()
        )
    );
    assert!(
        stderr(&out).contains("no policy section governs other/api in production"),
        "{}",
        stderr(&out)
    );

    let unknown = run(shipgate()
        .args(["policy", "explain", "acme/api", "qa", "--policy"])
        .arg(&path));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stdout(&unknown).contains("environment \"qa\" is not defined in the policy"));

    let malformed = run(shipgate()
        .args(["policy", "explain", "not-a-repo", "production", "--policy"])
        .arg(&path));
    assert_eq!(malformed.status.code(), Some(2));
}

#[tokio::test]
async fn serve_approves_a_queued_request_when_the_window_ahead_ends_without_a_sweep() {
    // No scheduled jobs: only the server's queue timer can move the queue.
    let ws = Workspace::with_policy(
        "[environments.staging]\napprovals_required = 0\nverification_window = \"2s\"\n",
    );
    let server = Server::launch(ws, &[], &["--no-schedule"]).await;
    let rule = protection_rule("staging", 5001);
    let (_, first) = deliver(
        &server,
        "deployment_protection_rule",
        "d-q-1",
        rule.clone().into(),
        signed(rule.as_bytes()),
    )
    .await;
    assert_eq!(first["decision"], "approved", "{first}");
    let verifying = deploy_succeeded(&server, "d-q-2", 95001, 5001).await;
    assert_eq!(verifying["state"], "verifying", "{verifying}");
    let window_ends = Instant::now() + Duration::from_secs(2);

    let rule = protection_rule("staging", 5002);
    let (_, queued) = deliver(
        &server,
        "deployment_protection_rule",
        "d-q-3",
        rule.clone().into(),
        signed(rule.as_bytes()),
    )
    .await;
    assert_eq!(queued["decision"], "queued", "{queued}");
    let waiting = queued["deployment_id"].as_str().expect("id").to_string();

    // `status` lists the queue.
    let out = with_data_and_policy(shipgate().args(["status", "--json"]), &server.ws);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let staging = lines
        .iter()
        .find(|l| l["environment"] == "staging")
        .expect("staging");
    assert_eq!(staging["queue"][0]["deployment_id"], waiting.as_str());
    assert_eq!(staging["queue"][0]["position"], 1);
    assert_eq!(staging["queue"][0]["run_id"], 5002);
    let out = with_data_and_policy(shipgate().arg("status"), &server.ws);
    let table = stdout(&out);
    assert!(
        table.contains(&format!(
            "queued in acme/api · staging: 1. {waiting} refs/heads/main (0123456) run 5002"
        )),
        "{table}"
    );

    // The window ends: the waiting request takes the lock (bounded poll, not a timing
    // assertion; the latency is printed).
    let deadline = window_ends + Duration::from_secs(10);
    let holder = loop {
        let out = with_data_and_policy(shipgate().args(["status", "--json"]), &server.ws);
        let lines = json_lines(&stdout(&out));
        let holder = lines
            .iter()
            .find(|l| l["environment"] == "staging")
            .and_then(|l| l["lock"]["deployment_id"].as_str().map(str::to_string));
        if holder.as_deref() == Some(waiting.as_str()) || Instant::now() > deadline {
            break holder;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        holder.as_deref(),
        Some(waiting.as_str()),
        "{}",
        server.logs()
    );
    println!(
        "queued request approved {} ms after the window ahead ended",
        Instant::now()
            .saturating_duration_since(window_ends)
            .as_millis()
    );
    // The timer logs once its advance has finished (after the lock was taken): wait for it.
    while !server.logs().contains("queue advanced at its deadline") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.logs().contains("queue advanced at its deadline"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn unlock_frees_a_scope_with_an_audited_reason_and_the_queue_moves_on() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for (n, run_id) in [6001u64, 6002].into_iter().enumerate() {
        let rule = protection_rule("staging", run_id);
        let (_, body) = deliver(
            &server,
            "deployment_protection_rule",
            &format!("d-unlock-{n}"),
            rule.clone().into(),
            signed(rule.as_bytes()),
        )
        .await;
        ids.push(body["deployment_id"].as_str().expect("id").to_string());
        let want = if n == 0 { "approved" } else { "queued" };
        assert_eq!(body["decision"], want, "{body}");
    }

    // No reason: refused before anything is touched.
    let out = with_data_and_policy(shipgate().args(["unlock", "staging"]), &server.ws);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--reason"), "{}", stderr(&out));
    let out = with_data_and_policy(
        shipgate().args(["unlock", "staging", "--reason", "  "]),
        &server.ws,
    );
    assert_ne!(out.status.code(), Some(0));

    let out = with_data_and_policy(
        shipgate()
            .args(["unlock", "staging", "--reason", "the deploy runner died"])
            .env("USER", "ada"),
        &server.ws,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "acme/api · staging: unlocked; deployment {} is cancelled",
            ids[0]
        )
    );

    // The queued request took the lock; the audit log says who unlocked and why.
    let out = with_data_and_policy(shipgate().args(["status", "--json"]), &server.ws);
    let lines = json_lines(&stdout(&out));
    let staging = lines
        .iter()
        .find(|l| l["environment"] == "staging")
        .expect("staging");
    assert_eq!(
        staging["lock"]["deployment_id"],
        ids[1].as_str(),
        "{staging}"
    );
    assert_eq!(staging["queue"], serde_json::json!([]));
    let out = with_data_and_policy(
        shipgate().args(["history", "--json", "--env", "staging"]),
        &server.ws,
    );
    let events = json_lines(&stdout(&out));
    let unlocked = events
        .iter()
        .find(|e| e["deployment_id"] == ids[0].as_str() && e["what"] == "cancel")
        .expect("the unlock in the audit log");
    assert_eq!(unlocked["actor"], "cli:ada");
    assert_eq!(
        unlocked["why"],
        "unlocked by cli:ada: the deploy runner died"
    );

    // Unlocking again ends the request that has taken the lock since (JSON this time).
    let out = with_data_and_policy(
        shipgate().args(["unlock", "staging", "--reason", "again", "--json"]),
        &server.ws,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let outcome: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(outcome["outcome"], "unlocked", "{outcome}");
    assert_eq!(outcome["deployment_id"], ids[1].as_str());
}

#[tokio::test]
async fn a_changed_policy_applies_after_sighup_and_an_invalid_one_is_refused_and_announced() {
    let slack = fake_slack().await;
    let api_url = format!("{}/api", slack.uri());
    let ws = Workspace::with_policy("[environments.staging]\napprovals_required = 0\n");
    let server = Server::launch(
        ws.clone(),
        &[
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-test-token"),
            ("SHIPGATE_SLACK_API_URL", api_url.as_str()),
            ("SHIPGATE_SLACK_OPS_CHANNEL", "C0OPS"),
        ],
        &["--no-schedule"],
    )
    .await;
    let gate = |repo: &'static str, run: u64, delivery: &'static str| {
        let rule = protection_rule_for(repo, "staging", run);
        let server = &server;
        async move {
            deliver(
                server,
                "deployment_protection_rule",
                delivery,
                rule.clone().into(),
                signed(rule.as_bytes()),
            )
            .await
            .1
        }
    };
    assert_eq!(
        gate("acme/one", 8001, "d-p-1").await["decision"],
        "approved"
    );

    // Staging now needs an approval: SIGHUP puts it in force for the next request.
    std::fs::write(
        ws.policy(),
        "[identities]\nU0APPROV1 = \"alice\"\n\n[environments.staging]\napprovals_required = 1\napprovers = [\"U0APPROV1\"]\n",
    )
    .expect("write policy");
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logs().contains("policy reloaded") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = gate("acme/two", 8002, "d-p-2").await;
    assert_eq!(body["decision"], "awaiting_approval", "{body}");

    // A broken policy is not loaded: the one in force stays, and the ops channel is told.
    std::fs::write(
        ws.policy(),
        "[environments.staging]\napprovals_required = \"two\"\n",
    )
    .expect("write policy");
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let posts = slack_calls(&slack, "/api/chat.postMessage", 1).await;
    let notice = posts
        .iter()
        .find(|p| p["channel"] == "C0OPS")
        .unwrap_or_else(|| panic!("no ops notice in {posts:?}"));
    let text = notice["text"].as_str().unwrap_or_default();
    assert!(text.contains("policy-reload"), "{text}");
    assert!(
        server.logs().contains("policy not reloaded"),
        "{}",
        server.logs()
    );
    let body = gate("acme/three", 8003, "d-p-3").await;
    assert_eq!(body["decision"], "awaiting_approval", "{body}");
}

#[tokio::test]
async fn a_queue_waiting_when_serve_is_killed_moves_on_after_a_restart() {
    // Only the sweeper (every second) runs: the restarted server has lost the timer's
    // deadlines, and the queue must not depend on them.
    let ws = Workspace::with_policy(
        "[environments.staging]\napprovals_required = 0\nverification_window = \"1s\"\n",
    );
    let schedule = [
        "--schedule",
        "sweeper=1s",
        "--schedule",
        "health-probes=off",
        "--schedule",
        "backup=off",
        "--schedule",
        "restore-drill=off",
        "--schedule",
        "dora-report=off",
        "--schedule",
        "rollback-drill=off",
    ];
    let mut server = Server::launch(ws.clone(), &[], &schedule).await;
    let mut ids = Vec::new();
    for (n, run_id) in [9101u64, 9102].into_iter().enumerate() {
        let rule = protection_rule("staging", run_id);
        let (_, body) = deliver(
            &server,
            "deployment_protection_rule",
            &format!("d-restart-{n}"),
            rule.clone().into(),
            signed(rule.as_bytes()),
        )
        .await;
        ids.push(body["deployment_id"].as_str().expect("id").to_string());
    }
    let verifying = deploy_succeeded(&server, "d-restart-s", 99101, 9101).await;
    assert_eq!(verifying["state"], "verifying", "{verifying}");

    // Killed hard, at once: no graceful shutdown, no timers.
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reap");
    let restarted = Server::launch(ws, &[], &schedule).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        let out = with_data_and_policy(shipgate().args(["status", "--json"]), &restarted.ws);
        let lines = json_lines(&stdout(&out));
        let holder = lines
            .iter()
            .find(|l| l["environment"] == "staging")
            .and_then(|l| l["lock"]["deployment_id"].as_str().map(str::to_string));
        if holder.as_deref() == Some(ids[1].as_str()) || Instant::now() > deadline {
            break holder;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        holder.as_deref(),
        Some(ids[1].as_str()),
        "{}",
        restarted.logs()
    );
}

/// Runs `serve` until it exits by itself (it must refuse to start); returns its stderr.
fn refused_start(ws: &Workspace, envs: &[(&str, &str)]) -> String {
    let mut child = shipgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-schedule"])
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy())
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_with_timeout(&mut child, Duration::from_secs(10)).expect("exits by itself");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert!(!status.success(), "{err}");
    err
}

#[test]
fn weak_secrets_a_missing_workspace_and_a_shared_data_directory_stop_serve() {
    let ws = Workspace::new();
    let weak = "   \t  ";
    let err = refused_start(&ws, &[("SHIPGATE_GITHUB_WEBHOOK_SECRET", weak)]);
    assert!(
        err.contains("SHIPGATE_GITHUB_WEBHOOK_SECRET is not valid: it is blank"),
        "{err}"
    );
    let err = refused_start(&ws, &[("SHIPGATE_GITHUB_WEBHOOK_SECRET", "short-secret")]);
    assert!(
        err.contains(
            "SHIPGATE_GITHUB_WEBHOOK_SECRET is not valid: it is shorter than 16 characters"
        ) && !err.contains("short-secret"),
        "{err}"
    );
    let err = refused_start(
        &ws,
        &[
            ("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET),
            ("SHIPGATE_ALERT_TOKEN", "tok3n"),
        ],
    );
    assert!(
        err.contains("SHIPGATE_ALERT_TOKEN is not valid: it is shorter than 16 characters")
            && !err.contains("tok3n"),
        "{err}"
    );
    let err = refused_start(
        &ws,
        &[
            ("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET),
            ("SHIPGATE_SLACK_SIGNING_SECRET", SLACK_SECRET),
        ],
    );
    assert!(err.contains("SHIPGATE_SLACK_TEAM_ID"), "{err}");
    let err = refused_start(
        &ws,
        &[
            ("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET),
            ("SHIPGATE_GITHUB_APP_ID", "4242"),
            ("SHIPGATE_GITHUB_PRIVATE_KEY", "not a PEM key at all"),
        ],
    );
    assert!(err.to_lowercase().contains("github"), "{err}");
    assert!(!err.contains("not a PEM key"), "{err}");
    // Refused before anything was written.
    assert!(!ws.data().exists(), "nothing created");

    // A data directory others may write.
    std::fs::create_dir(ws.data()).expect("mkdir");
    std::fs::set_permissions(ws.data(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = refused_start(&ws, &[("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET)]);
    assert!(
        err.contains(&format!(
            "data directory {} is writable by others (mode 777)",
            ws.data().display()
        )) && err.contains("chmod go-w"),
        "{err}"
    );
    assert!(
        !ws.data().join("shipgate.db").exists(),
        "no database created"
    );
}

#[test]
fn a_policy_naming_a_routing_key_outside_the_prefix_is_refused() {
    let ws = Workspace::with_policy(
        "[notifications]\npagerduty_routing_keys = { critical = \"env:SHIPGATE_SLACK_BOT_TOKEN\" }\n[environments.staging]\n",
    );
    let out = run(shipgate().args(["policy", "check"]).arg(ws.policy()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("notifications.pagerduty_routing_keys.critical")
            && text.contains(
                "a routing key variable must be named SHIPGATE_PAGERDUTY_ROUTING_KEY_<SUFFIX>"
            ),
        "{text}"
    );
}

#[tokio::test]
async fn serve_creates_its_files_private_whatever_the_umask() {
    let ws = Workspace::new();
    // `umask 000` would leave new files world-writable; serve sets their modes itself.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" serve --listen 127.0.0.1:0 --no-schedule --data \"$1\" --policy \"$2\"")
        .arg(testkit::shipgate_binary())
        .arg(ws.data())
        .arg(ws.policy())
        .env("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let db = ws.data().join("shipgate.db");
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    while !(db.exists() && Path::new(&wal).exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let modes = (mode(&ws.data()), mode(&db), mode(Path::new(&wal)));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(modes, (0o700, 0o600, 0o600));
}
