//! The route table of `docs/operations.md` ("Routes") against a running `shipgate serve`: every
//! row is provoked and its status (and the part of its body the table quotes) checked, and
//! every answer provoked here has its row. A row that cannot be provoked from outside the
//! process names the test that provokes it in-process, and that test must exist.

#[path = "common/serve.rs"]
mod serve;

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};
use serve::{button_value, Server, Workspace, SECRET};
use shipgate::signature::{sign_github, sign_slack};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OPERATIONS: &str = include_str!("../../docs/operations.md");
const SLACK_SECRET: &str = "routes-doc-slack-signing-secret";
const ALERT_TOKEN: &str = "routes-doc-alert-token";
const POLICY: &str = r#"
[environments.staging]
approvals_required = 0

[environments.production]
approvals_required = 1
approvers = ["U0ALICE01"]
prevent_self_approval = false
require_reject_reason = true
slack_channel = "C0PRODUCTION"
"#;

/// Rows no request from outside can provoke on demand: (route, status, text of the body cell,
/// the test that provokes it in-process).
const IN_PROCESS: &[(&str, u16, &str, &str)] = &[
    (
        "POST /webhooks/alertmanager",
        503,
        "Retry-After",
        "alert_webhook_http.rs: an_alert_being_processed_is_answered_503_with_retry_after_and_its_resend_is_ingested",
    ),
    (
        "every POST route",
        500,
        "internal error",
        "routes_doc.rs: a_store_that_fails_is_a_500_on_every_post_route",
    ),
];

/// One row of the table: route, status, body, when.
#[derive(Debug, Clone)]
struct Row {
    route: String,
    status: u16,
    body: String,
}

fn rows() -> Vec<Row> {
    let section = OPERATIONS
        .split("### Routes\n")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("docs/operations.md has a Routes section");
    let cell = |c: &str| c.trim().trim_matches('`').to_string();
    section
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(2) // header and separator
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 4, "a row has route, status, body, when: {l}");
            Row {
                route: cell(cells[0]),
                status: cell(cells[1])
                    .parse()
                    .unwrap_or_else(|_| panic!("status of {l}")),
                body: cells[2].trim().to_string(),
            }
        })
        .collect()
}

/// The fixed text a row's body cell quotes: the first `{"message":"…"}` text up to an
/// ellipsis, if any.
fn quoted_message(body: &str) -> Option<String> {
    let start = body.find("{\"message\":\"")? + "{\"message\":\"".len();
    let rest = &body[start..];
    let end = rest.find(['"', '…']).unwrap_or(rest.len());
    Some(rest[..end].to_string()).filter(|m| !m.is_empty())
}

struct Answer {
    status: u16,
    body: String,
    retry_after: Option<String>,
}

/// Sends `req`, again (at most five times) when the connection broke before an answer was read:
/// a server refusing an oversized body may close before the client has written all of it.
async fn send(req: reqwest::RequestBuilder) -> Answer {
    for _ in 0..4 {
        let attempt = req.try_clone().expect("a body that can be sent again");
        if let Ok(resp) = attempt.send().await {
            return answer(resp).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answer(req.send().await.expect("send")).await
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Answer {
        status,
        body: resp.text().await.expect("body"),
        retry_after,
    }
}

struct Env {
    server: Server,
    bare: Server,
    slack: MockServer,
    client: reqwest::Client,
}

impl Env {
    async fn github(&self, event: &str, delivery: &str, body: &str) -> Answer {
        let sig = sign_github(&SecretString::from(SECRET), body.as_bytes());
        self.github_signed(event, delivery, body.as_bytes().to_vec(), &sig)
            .await
    }

    async fn github_signed(&self, event: &str, delivery: &str, body: Vec<u8>, sig: &str) -> Answer {
        send(
            self.client
                .post(self.server.url("/webhooks/github"))
                .header("x-github-event", event)
                .header("x-github-delivery", delivery)
                .header("x-hub-signature-256", sig)
                .body(body),
        )
        .await
    }

    async fn slack_on(&self, server: &Server, body: &str, secret: &str) -> Answer {
        let now = jiff::Timestamp::now().as_second();
        let sig = sign_slack(&SecretString::from(secret), now, body.as_bytes());
        send(
            self.client
                .post(server.url("/webhooks/slack"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", now.to_string())
                .header("x-slack-signature", sig)
                .body(body.to_string()),
        )
        .await
    }

    async fn slack(&self, body: &str) -> Answer {
        self.slack_on(&self.server, body, SLACK_SECRET).await
    }

    async fn alert_on(&self, server: &Server, route: &str, token: &str, body: Vec<u8>) -> Answer {
        send(
            self.client
                .post(server.url(route))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn alert(&self, route: &str, body: Vec<u8>) -> Answer {
        self.alert_on(&self.server, route, ALERT_TOKEN, body).await
    }

    /// The value of the `action_id` button of the newest approval message posted to Slack.
    async fn button(&self, action_id: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .slack
                .received_requests()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.url.path() == "/api/chat.postMessage")
                .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
                .find_map(|v| button_value(&v, action_id));
            if let Some(value) = found {
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {action_id} button posted: {}",
                self.server.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn protection_rule(environment: &str, run_id: u64) -> String {
    json!({
        "action": "requested",
        "environment": environment,
        "event": "push",
        "ref": "refs/heads/main",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "deployment_callback_url": format!("https://api.github.com/repos/acme/api/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": 7 },
        "sender": { "login": "octocat" },
        "repository": { "full_name": "acme/api" }
    })
    .to_string()
}

fn click(team: &str, user: &str, action_id: &str, value: &str, action_ts: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": "alice", "team_id": team },
        "api_app_id": "A0SHIPGATE",
        "team": { "id": team, "domain": "acme" },
        "trigger_id": "1234.5678.trigger",
        "channel": { "id": "C0PRODUCTION", "name": "deploys" },
        "actions": [{ "action_id": action_id, "block_id": "shipgate_decision", "value": value, "type": "button", "action_ts": action_ts }]
    });
    form(&payload)
}

fn form(payload: &Value) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form")
}

fn alertmanager(alerts: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "4", "groupKey": "{}:{alertname=\"X\"}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "shipgate", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": alerts
    }))
    .expect("json")
}

fn grafana(alerts: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "receiver": "shipgate", "status": "firing", "orgId": 1, "alerts": alerts,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://grafana:3000/",
        "version": "1", "groupKey": "{}:{}", "truncatedAlerts": 0, "title": "x", "state": "alerting", "message": "x"
    }))
    .expect("json")
}

fn one_alert() -> Value {
    json!([{
        "status": "firing",
        "labels": { "alertname": "HighErrorRate", "env": "qa-9", "severity": "warning" },
        "annotations": {},
        "startsAt": jiff::Timestamp::now().to_string(),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "a1b2c3d4e5f60718"
    }])
}

async fn fake_github() -> MockServer {
    let github = MockServer::start().await;
    testkit::mount_installation_token(&github, 7, "ghs_routes_doc_token").await;
    // Run 801's answer takes its time: a second copy of its delivery arrives meanwhile.
    Mock::given(method("POST"))
        .and(path(
            "/repos/acme/api/actions/runs/801/deployment_protection_rule",
        ))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_millis(1200)))
        .with_priority(1)
        .mount(&github)
        .await;
    // So does run 802's, which an approval click sends.
    Mock::given(method("POST"))
        .and(path(
            "/repos/acme/api/actions/runs/802/deployment_protection_rule",
        ))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_millis(1000)))
        .with_priority(1)
        .mount(&github)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/repos/acme/api/actions/runs/[0-9]+/deployment_protection_rule$",
        ))
        .respond_with(ResponseTemplate::new(204))
        .mount(&github)
        .await;
    github
}

async fn fake_slack() -> MockServer {
    let slack = MockServer::start().await;
    for api in ["/api/chat.postMessage", "/api/chat.update"] {
        Mock::given(method("POST"))
            .and(path(api))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({ "ok": true, "channel": "C0PRODUCTION", "ts": "1748858400.000100" }),
            ))
            .mount(&slack)
            .await;
    }
    slack
}

/// Provokes the answer a row describes; returns what came back.
async fn provoke(env: &Env, row: &Row) -> Answer {
    let oversized = vec![b'x'; 1024 * 1024 + 1];
    match (row.route.as_str(), row.status, row.body.as_str()) {
        ("POST /webhooks/github", 200, b) if b.contains("duplicate") => {
            let body = protection_rule("staging", 811);
            let first = env
                .github("deployment_protection_rule", "d-dup", &body)
                .await;
            assert_eq!(first.status, 200, "{}", first.body);
            env.github("deployment_protection_rule", "d-dup", &body)
                .await
        }
        ("POST /webhooks/github", 200, _) => {
            env.github(
                "deployment_protection_rule",
                "d-200",
                &protection_rule("staging", 812),
            )
            .await
        }
        ("POST /webhooks/github", 202, _) => {
            env.github("star", "d-202", r#"{"action":"created","starred_at":null}"#)
                .await
        }
        ("POST /webhooks/github", 400, _) => {
            env.github(
                "deployment_protection_rule",
                "d-400",
                r#"{"action":"requested"}"#,
            )
            .await
        }
        ("POST /webhooks/github", 401, _) => {
            // The right HMAC in uppercase hex is refused, as octokit's verify refuses it.
            let body = protection_rule("staging", 813);
            let sig = sign_github(&SecretString::from(SECRET), body.as_bytes());
            let upper = format!("sha256={}", sig["sha256=".len()..].to_ascii_uppercase());
            env.github_signed(
                "deployment_protection_rule",
                "d-401",
                body.into_bytes(),
                &upper,
            )
            .await
        }
        ("POST /webhooks/github", 409, _) => {
            let body = protection_rule("staging", 801);
            let (first, second) = tokio::join!(
                env.github("deployment_protection_rule", "d-409", &body),
                async {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    env.github("deployment_protection_rule", "d-409", &body)
                        .await
                }
            );
            assert_eq!(first.status, 200, "{}", first.body);
            second
        }
        ("POST /webhooks/github", 413, _) => {
            let sig = sign_github(&SecretString::from(SECRET), &oversized);
            env.github_signed("deployment_protection_rule", "d-413", oversized, &sig)
                .await
        }
        ("POST /webhooks/slack", 200, b) if b.contains("response_action") => {
            let payload = json!({
                "type": "view_submission",
                "team": { "id": "T0TEAM", "domain": "acme" },
                "user": { "id": "U0ALICE01", "team_id": "T0TEAM" },
                "api_app_id": "A0SHIPGATE",
                "view": {
                    "id": "V0REASON", "callback_id": "shipgate_reject_reason",
                    "private_metadata": "dep-unknown:nonce",
                    "state": { "values": { "shipgate_reason": { "reason": { "type": "plain_text_input", "value": "  " } } } }
                }
            });
            env.slack(&form(&payload)).await
        }
        ("POST /webhooks/slack", 200, _) => {
            env.slack(&click(
                "T0TEAM",
                "U0ALICE01",
                "shipgate_approve",
                "dep-unknown:nonce",
                "1.000001",
            ))
            .await
        }
        ("POST /webhooks/slack", 400, _) => env.slack("payload=%7Bnot%20json").await,
        ("POST /webhooks/slack", 401, _) => {
            let body = click(
                "T0TEAM",
                "U0ALICE01",
                "shipgate_approve",
                "dep-x:n",
                "1.000002",
            );
            env.slack_on(&env.server, &body, "not-the-signing-secret-at-all")
                .await
        }
        ("POST /webhooks/slack", 403, _) => {
            env.slack(&click(
                "T0GUEST",
                "U0ALICE01",
                "shipgate_rollback",
                "dep-x:n",
                "1.000003",
            ))
            .await
        }
        ("POST /webhooks/slack", 409, _) => {
            let gated = env
                .github(
                    "deployment_protection_rule",
                    "d-802",
                    &protection_rule("production", 802),
                )
                .await;
            assert_eq!(gated.status, 200, "{}", gated.body);
            let value = env.button("shipgate_approve").await;
            // Slack's retry of a click still being handled (its answer to GitHub is slow).
            let body = click(
                "T0TEAM",
                "U0ALICE01",
                "shipgate_approve",
                &value,
                "2.000001",
            );
            let (first, second) = tokio::join!(env.slack(&body), async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                env.slack(&body).await
            });
            assert_eq!(first.status, 200, "{}", first.body);
            second
        }
        ("POST /webhooks/slack", 413, _) => {
            env.slack(&String::from_utf8(oversized).expect("ascii"))
                .await
        }
        ("POST /webhooks/slack", 503, _) => {
            env.slack_on(&env.bare, "payload=%7B%7D", SLACK_SECRET)
                .await
        }
        (route @ ("POST /webhooks/alertmanager" | "POST /webhooks/grafana"), status, _) => {
            let path = route.trim_start_matches("POST ");
            let is_am = path.ends_with("alertmanager");
            let wrap = |alerts| {
                if is_am {
                    alertmanager(alerts)
                } else {
                    grafana(alerts)
                }
            };
            match status {
                200 => env.alert(path, wrap(one_alert())).await,
                202 => env.alert(path, wrap(json!([]))).await,
                400 => env.alert(path, b"{\"not\":\"alerts\"".to_vec()).await,
                401 => {
                    env.alert_on(
                        &env.server,
                        path,
                        "another-token-entirely",
                        wrap(one_alert()),
                    )
                    .await
                }
                413 => env.alert(path, oversized).await,
                503 => {
                    env.alert_on(&env.bare, path, ALERT_TOKEN, wrap(one_alert()))
                        .await
                }
                other => panic!("no way to provoke {other} on {route}"),
            }
        }
        ("GET /healthz", 200, _) => {
            answer(
                env.client
                    .get(env.server.url("/healthz"))
                    .send()
                    .await
                    .expect("send"),
            )
            .await
        }
        ("any route", 405, _) => {
            answer(
                env.client
                    .get(env.server.url("/webhooks/github"))
                    .send()
                    .await
                    .expect("send"),
            )
            .await
        }
        ("any other path", 404, _) => {
            answer(
                env.client
                    .post(env.server.url("/webhooks/gitlab"))
                    .send()
                    .await
                    .expect("send"),
            )
            .await
        }
        (route, status, _) => {
            panic!("docs/operations.md documents {status} on {route}, and nothing here provokes it")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_answer_is_what_the_routes_give() {
    let github = fake_github().await;
    let slack = fake_slack().await;
    let key = testkit::github_app_key_path(false);
    let key = key.to_string_lossy();
    let github_url = github.uri();
    let slack_url = format!("{}/api", slack.uri());
    let server = Server::launch(
        Workspace::with_policy(POLICY),
        &[
            ("SHIPGATE_GITHUB_APP_ID", "4242"),
            ("SHIPGATE_GITHUB_PRIVATE_KEY_FILE", &key),
            ("SHIPGATE_GITHUB_API_URL", &github_url),
            ("SHIPGATE_SLACK_SIGNING_SECRET", SLACK_SECRET),
            ("SHIPGATE_SLACK_TEAM_ID", "T0TEAM"),
            ("SHIPGATE_SLACK_APP_ID", "A0SHIPGATE"),
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-routes-doc"),
            ("SHIPGATE_SLACK_API_URL", &slack_url),
            ("SHIPGATE_ALERT_TOKEN", ALERT_TOKEN),
        ],
        &["--no-schedule"],
    )
    .await;
    let bare = Server::launch(Workspace::with_policy(POLICY), &[], &["--no-schedule"]).await;
    let env = Env {
        server,
        bare,
        slack,
        client: reqwest::Client::new(),
    };

    let rows = rows();
    assert!(rows.len() >= 20, "the table is there: {rows:?}");
    let mut provoked: BTreeMap<(String, u16), usize> = BTreeMap::new();
    for row in &rows {
        if let Some((_, _, _, covered_by)) = IN_PROCESS.iter().find(|(r, st, text, _)| {
            *r == row.route && *st == row.status && row.body.contains(text)
        }) {
            let (file, test) = covered_by.split_once(": ").expect("file: test");
            let text =
                std::fs::read_to_string(format!("{}/tests/{file}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                text.contains(&format!("fn {test}(")),
                "{} {} is said to be covered by {covered_by}, which does not exist",
                row.route,
                row.status
            );
            continue;
        }
        let got = provoke(&env, row).await;
        assert_eq!(
            got.status,
            row.status,
            "{} documented {} ({}), got {}: {}\n{}",
            row.route,
            row.status,
            row.body,
            got.status,
            got.body,
            env.server.logs()
        );
        if row.body == "empty" {
            assert_eq!(got.body, "", "{} {}", row.route, row.status);
        } else {
            let body: Value = serde_json::from_str(&got.body).unwrap_or_else(|e| {
                panic!(
                    "{} {}: not JSON ({e}): {:?}",
                    row.route, row.status, got.body
                )
            });
            if let Some(message) = quoted_message(&row.body) {
                let said = body["message"].as_str().unwrap_or_default();
                assert!(
                    said.starts_with(&message)
                        || said.contains(message.trim_start_matches('…').trim()),
                    "{} {}: documented {message:?}, said {said:?}",
                    row.route,
                    row.status
                );
            }
            if row.body.contains("response_action") {
                assert!(body.get("response_action").is_some(), "{body}");
            }
        }
        if row.body.contains("Retry-After") {
            assert!(got.retry_after.is_some(), "{} {}", row.route, row.status);
        }
        *provoked.entry((row.route.clone(), row.status)).or_default() += 1;
    }
    // Every route the router serves is in the table.
    for route in [
        "POST /webhooks/github",
        "POST /webhooks/slack",
        "POST /webhooks/alertmanager",
        "POST /webhooks/grafana",
        "GET /healthz",
    ] {
        assert!(
            provoked.keys().any(|(r, _)| r == route),
            "{route} has no row in docs/operations.md"
        );
    }
    println!(
        "{} rows provoked against serve: {provoked:?}",
        provoked.values().sum::<usize>()
    );
}

#[tokio::test]
async fn a_store_that_fails_is_a_500_on_every_post_route() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "needs the DynamoDB emulator: run make test (it starts moto and exports AWS_ENDPOINT_URL)"
    );
    // A table that does not exist: every store call fails, as when DynamoDB is down.
    let store = shipgate::aws::dynamodb::DynamoStore::from_env(format!(
        "shipgate-missing-{}",
        uuid::Uuid::new_v4()
    ))
    .await;
    let fakes = testkit::TestServices::builder()
        .policy(POLICY)
        .item_store(std::sync::Arc::new(store))
        .without_github_app()
        .build()
        .await;
    let now = shipgate::service::Clock::now(&fakes.clock);
    let services = fakes.services;

    let github = github_webhook::GitHubWebhook::new(services.clone(), SecretString::from(SECRET));
    let body = protection_rule("staging", 901);
    let req = testkit::github_delivery(
        "deployment_protection_rule",
        "d-500",
        SECRET,
        body.as_bytes(),
    );
    let resp = github_webhook::handle(&github, req).await;
    assert_eq!(
        (resp.status().as_u16(), resp.body().as_str()),
        (500, r#"{"message":"internal error"}"#)
    );

    let slack = slack_approval::SlackApproval::new(
        services.clone(),
        SecretString::from(SLACK_SECRET),
        slack_approval::Workspace {
            team_id: "T0TEAM".into(),
            app_id: None,
        },
        std::sync::Arc::new(shipgate::outbound::SlackApi::new(
            shipgate::outbound::SlackConfig {
                api_url: "http://127.0.0.1:9/api".into(),
                bot_token: SecretString::from("xoxb-unused"),
            },
            reqwest::Client::new(),
        )),
    );
    let click = click(
        "T0TEAM",
        "U0ALICE01",
        "shipgate_approve",
        "dep-x:nonce",
        "3.000001",
    );
    let ts = now.as_second();
    let sig = sign_slack(&SecretString::from(SLACK_SECRET), ts, click.as_bytes());
    let req = http::Request::builder()
        .method("POST")
        .uri("/webhooks/slack")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sig)
        .body(bytes::Bytes::from(click))
        .expect("request");
    let resp = slack_approval::handle(&slack, req).await;
    assert_eq!(
        (resp.status().as_u16(), resp.body().as_str()),
        (500, r#"{"message":"internal error"}"#)
    );

    let alerts = alert_webhook::AlertWebhook::new(services, SecretString::from(ALERT_TOKEN));
    for route in ["/webhooks/alertmanager", "/webhooks/grafana"] {
        let body = if route.ends_with("alertmanager") {
            alertmanager(one_alert())
        } else {
            grafana(one_alert())
        };
        let req = http::Request::builder()
            .method("POST")
            .uri(route)
            .header("authorization", format!("Bearer {ALERT_TOKEN}"))
            .body(bytes::Bytes::from(body))
            .expect("request");
        let resp = alert_webhook::handle(&alerts, req).await;
        assert_eq!(
            (resp.status().as_u16(), resp.body().as_str()),
            (500, r#"{"message":"internal error"}"#),
            "{route}"
        );
    }
}
