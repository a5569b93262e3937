//! Store round trips per inbound event kind: each event goes through its function's public
//! handler on SQLite behind a counting store, and the calls each one made are printed
//! (`cargo test -p tests --test round_trips -- --nocapture`) and held to what was measured.
//! A change that adds round trips fails here and must update the figures (and BENCHMARKS.md)
//! on purpose.

use std::sync::Arc;

use alert_webhook::AlertWebhook;
use bytes::Bytes;
use github_webhook::GitHubWebhook;
use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::{json, Value};
use shipgate::outbound::{http_client, SlackApi, SlackConfig};
use shipgate::service::Clock;
use shipgate::store::repo::ShaFact;
use slack_approval::SlackApproval;
use testkit::{Counts, TestServices};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

const WEBHOOK_SECRET: &str = "round-trip test webhook secret";
const SIGNING_SECRET: &str = "round-trip test slack signing secret";
const ALERT_TOKEN: &str = "round-trip test alert token";
const REPO: &str = "octo-org/hello-world";
const SHA: &str = "d6fde92930d4715a2b49857d24b940956b26d2d3";
const INSTALLATION_ID: u64 = 777;
const RUN_ID: u64 = 4242;
const GITHUB_ID: u64 = 9100;

/// Production: staging first, one approval from the list, a verification window.
const POLICY: &str = r#"
[identities]
U0ALICE01 = "alice"

[services]
api = "octo-org/hello-world"

[environments.staging]
approvals_required = 0

[environments.production]
allowed_refs = ["main"]
promotion_from = ["staging"]
approvals_required = 1
approvers = ["U0ALICE01"]
verification_window = "30m"
"#;

fn github_fixture(name: &str) -> Value {
    testkit::fixture_json("functions/github-webhook", name)
}

fn protection_rule() -> Value {
    let mut p = github_fixture("deployment_protection_rule.requested.payload.json");
    p["environment"] = json!("production");
    p["event"] = json!("push");
    p["sha"] = json!(SHA);
    p["ref"] = json!("main");
    p["deployment_callback_url"] = json!(format!(
        "https://api.github.com/repos/{REPO}/actions/runs/{RUN_ID}/deployment_protection_rule"
    ));
    p["installation"] = json!({ "id": INSTALLATION_ID });
    p["repository"]["full_name"] = json!(REPO);
    p["sender"]["login"] = json!("octocat");
    p
}

fn deployment(name: &str) -> Value {
    let mut p = github_fixture(name);
    p["deployment"]["id"] = json!(GITHUB_ID);
    p["deployment"]["environment"] = json!("production");
    p["deployment"]["sha"] = json!(SHA);
    p["deployment"]["ref"] = json!("main");
    p["repository"]["full_name"] = json!(REPO);
    p["workflow_run"] = json!({ "id": RUN_ID });
    p
}

fn deployment_status(state: &str) -> Value {
    let mut p = deployment("deployment_status.payload.json");
    p["deployment_status"]["state"] = json!(state);
    p["deployment_status"]["environment"] = json!("production");
    p["deployment_status"]["description"] = json!(format!("deploy {state}"));
    p
}

fn approve_click(deployment: &str, nonce: &str, at: Timestamp, response_url: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": { "id": "U0ALICE01", "username": "alice", "name": "alice", "team_id": "T0TEAM" },
        "api_app_id": "A0SHIPGATE",
        "container": { "type": "message", "message_ts": "1748858400.000100", "channel_id": "C0PRODUCTION" },
        "trigger_id": "1.4242.trigger",
        "team": { "id": "T0TEAM", "domain": "octo-org" },
        "channel": { "id": "C0PRODUCTION", "name": "deploys" },
        "message": { "type": "message", "ts": "1748858400.000100", "text": "Deploy to production?" },
        "response_url": response_url,
        "actions": [{
            "action_id": "shipgate_approve",
            "block_id": "shipgate_decision",
            "value": format!("{deployment}:{nonce}"),
            "type": "button",
            "action_ts": format!("{}.000001", at.as_second()),
        }]
    })
}

fn alertmanager_firing(at: Timestamp) -> Value {
    let labels = json!({ "alertname": "ApiHighErrorRate", "env": "production", "service": "api", "severity": "critical" });
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"ApiHighErrorRate\"}",
        "status": "firing",
        "receiver": "shipgate",
        "groupLabels": {},
        "commonLabels": labels.clone(),
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": { "summary": "API 5xx ratio above 5%" },
            "startsAt": at.to_string(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.com/graph?g0.expr=errors",
            "fingerprint": "f00dfeedcafe0001",
        }],
    })
}

fn status_of(resp: &http::Response<String>) -> u16 {
    resp.status().as_u16()
}

fn json_of(resp: &http::Response<String>) -> Value {
    serde_json::from_str(resp.body()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn store_round_trips_per_inbound_event_kind() {
    let fakes = TestServices::builder()
        .policy(POLICY)
        .app(31337, INSTALLATION_ID, "ghs_test_installation_token")
        .counting()
        .build()
        .await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/repos/[^/]+/[^/]+/actions/runs/[0-9]+/deployment_protection_rule$",
        ))
        .respond_with(ResponseTemplate::new(204))
        .mount(&fakes.github)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/actions/"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&fakes.slack)
        .await;
    let slack = SlackApi::new(
        SlackConfig {
            api_url: format!("{}/api", fakes.slack.uri()),
            bot_token: SecretString::from("xoxb-test-bot-token".to_string()),
        },
        http_client().expect("http client"),
    )
    .with_policy(testkit::fast_retries());
    let services = fakes.services.clone();
    let webhook = GitHubWebhook::new(
        services.clone(),
        SecretString::from(WEBHOOK_SECRET.to_string()),
    );
    let approvals = SlackApproval::new(
        services.clone(),
        SecretString::from(SIGNING_SECRET.to_string()),
        slack_approval::Workspace {
            team_id: "T0TEAM".into(),
            app_id: Some("A0SHIPGATE".into()),
        },
        Arc::new(slack),
    );
    let alerts = AlertWebhook::new(services, SecretString::from(ALERT_TOKEN.to_string()));
    let counter = fakes.counter.clone().expect("a counting store");

    // The sha succeeded in staging, so production may have it.
    fakes
        .repo
        .record_sha_fact(
            "OK#staging",
            &ShaFact {
                repo: REPO.parse().expect("repository name"),
                sha: SHA.parse().expect("sha"),
                at: fakes.clock.now(),
                detail: None,
            },
        )
        .await
        .expect("staging fact");
    counter.take();
    counter.take_calls();

    let mut lines: Vec<(&str, Counts)> = Vec::new();
    let deliver = |event: &str, delivery: &str, body: &Value| {
        testkit::github_delivery(
            event,
            delivery,
            WEBHOOK_SECRET,
            &serde_json::to_vec(body).expect("JSON"),
        )
    };

    // A fresh protection rule: the gate opens a deployment awaiting one approval.
    let rule = protection_rule();
    let resp = github_webhook::handle(
        &webhook,
        deliver("deployment_protection_rule", "d-1", &rule),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{}", resp.body());
    let id = json_of(&resp)["deployment_id"]
        .as_str()
        .expect("deployment id")
        .to_string();
    lines.push(("protection rule (fresh)", counter.take()));
    let fresh_calls = counter.take_calls();

    // GitHub redelivers the same delivery.
    let resp = github_webhook::handle(
        &webhook,
        deliver("deployment_protection_rule", "d-1", &rule),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{}", resp.body());
    lines.push(("protection rule (redelivery)", counter.take()));

    // The approver clicks Approve in Slack: the gate answers GitHub.
    let dep = fakes
        .repo
        .get_deployment(&id)
        .await
        .expect("read")
        .expect("the deployment");
    counter.take();
    let now = fakes.clock.now();
    let click = approve_click(
        &id,
        dep.button_nonce.as_deref().unwrap_or_default(),
        now,
        &format!("{}/actions/T0TEAM/1/response", fakes.slack.uri()),
    );
    let req: http::Request<Bytes> = testkit::signed_slack_request(
        &testkit::slack_form_body(&click),
        now.as_second(),
        SIGNING_SECRET,
    );
    let resp = slack_approval::handle(&approvals, req).await;
    assert_eq!(status_of(&resp), 200, "{}", resp.body());
    lines.push(("Slack approve click", counter.take()));

    // The Actions run creates its deployment, then reports it succeeded.
    let resp = github_webhook::handle(
        &webhook,
        deliver("deployment", "d-2", &deployment("deployment.payload.json")),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{}", resp.body());
    lines.push(("deployment (created)", counter.take()));
    let resp = github_webhook::handle(
        &webhook,
        deliver("deployment_status", "d-3", &deployment_status("success")),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{}", resp.body());
    assert_eq!(json_of(&resp)["state"], "verifying", "{}", resp.body());
    lines.push(("deployment status (success)", counter.take()));

    // Another run asks for production while it is locked: it waits in the queue.
    let mut queued = protection_rule();
    queued["deployment_callback_url"] = json!(format!(
        "https://api.github.com/repos/{REPO}/actions/runs/{}/deployment_protection_rule",
        RUN_ID + 1
    ));
    let resp = github_webhook::handle(
        &webhook,
        deliver("deployment_protection_rule", "d-4", &queued),
    )
    .await;
    assert_eq!(json_of(&resp)["decision"], "queued", "{}", resp.body());
    lines.push(("protection rule (queued)", counter.take()));

    // An alert fires in production while the deployment is verified.
    let body = serde_json::to_vec(&alertmanager_firing(fakes.clock.now())).expect("JSON");
    let req = http::Request::builder()
        .method("POST")
        .uri("/webhooks/alertmanager")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ALERT_TOKEN}"))
        .body(Bytes::from(body))
        .expect("request");
    let resp = alert_webhook::handle(&alerts, req).await;
    assert!(status_of(&resp) < 300, "{}", resp.body());
    lines.push(("alert (firing)", counter.take()));

    // A push of two commits onto main: each commit's time, and the push itself.
    let push = json!({
        "ref": "refs/heads/main",
        "before": "1".repeat(40),
        "after": "3".repeat(40),
        "deleted": false,
        "commits": [
            { "id": "2".repeat(40), "timestamp": "2026-03-02T08:00:00Z" },
            { "id": "3".repeat(40), "timestamp": "2026-03-02T09:00:00Z" },
        ],
        "head_commit": { "id": "3".repeat(40), "timestamp": "2026-03-02T09:00:00Z" },
        "repository": { "full_name": REPO },
    });
    let resp = github_webhook::handle(&webhook, deliver("push", "d-push", &push)).await;
    assert_eq!(status_of(&resp), 200, "{}", resp.body());
    lines.push(("push (two commits)", counter.take()));

    println!("store round trips per inbound event kind (SQLite, public handlers):");
    for (kind, counts) in &lines {
        println!("  {kind}: {counts}");
    }
    println!("the fresh protection rule's calls, in order:");
    for call in &fresh_calls {
        println!("  {call}");
    }

    let measured: Vec<(&str, String)> = lines
        .iter()
        .map(|(kind, counts)| (*kind, counts.to_string()))
        .collect();
    assert_eq!(
        measured,
        vec![
            (
                "protection rule (fresh)",
                "9 round trips: 3 get, 3 query, 1 create, 1 put, 1 transact".to_string(),
            ),
            (
                "protection rule (redelivery)",
                "2 round trips: 1 get, 1 create".to_string(),
            ),
            (
                "Slack approve click",
                "11 round trips: 4 get, 2 query, 2 create, 1 put, 2 transact".to_string(),
            ),
            (
                "deployment (created)",
                "7 round trips: 4 get, 1 create, 1 put, 1 transact".to_string(),
            ),
            (
                "deployment status (success)",
                "9 round trips: 5 get, 2 create, 1 put, 1 transact".to_string(),
            ),
            (
                "protection rule (queued)",
                "11 round trips: 5 get, 3 query, 1 create, 1 put, 1 transact".to_string(),
            ),
            (
                "alert (firing)",
                "11 round trips: 4 get, 1 query, 2 create, 2 put, 2 transact".to_string(),
            ),
            (
                "push (two commits)",
                "7 round trips: 2 query, 1 create, 4 put".to_string(),
            ),
        ],
        "store round trips changed: if on purpose, update these figures and BENCHMARKS.md"
    );
}
