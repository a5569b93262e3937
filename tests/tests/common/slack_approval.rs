//! Test harness for the Slack approval handler: real use cases on an in-memory SQLite store, a
//! manual clock, a recording publisher, the real GitHub App and Slack clients pointed at
//! wiremock stand-ins, and the GitHub webhook handler on the same services so a deployment is
//! gated exactly as in production. Clicks are signed exactly as Slack signs them.

// Every test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use github_webhook::GitHubWebhook;
use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::{json, Value};
use shipgate::domain::deployment::{AuditEvent, Deployment};
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::notify::{Notification, NotificationBody};
use shipgate::outbound::{http_client, SlackApi, SlackConfig};
use shipgate::service::{Clock, Services};
use shipgate::store::repo::ShaFact;
use shipgate::store::{Item, ItemStore, Repo};
use slack_approval::SlackApproval;
use testkit::RecordingPublisher;
use testkit::{fast_retries, ManualClock, TestServices};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const SIGNING_SECRET: &str = "test slack signing secret, not used anywhere else";
pub const WEBHOOK_SECRET: &str = "test webhook secret, not used anywhere else";
pub const APP_ID: u64 = 31337;
pub const INSTALLATION_ID: u64 = 777;
pub const REPO: &str = "octo-org/hello-world";
pub const SHA: &str = "d6fde92930d4715a2b49857d24b940956b26d2d3";
pub const BOT_TOKEN: &str = "xoxb-test-bot-token";
/// The version that ran in production before [`SHA`]: what a rollback returns to.
pub const PREV_SHA: &str = "aaaaaaa111111111111111111111111111111111";
/// The id GitHub gives the rollback deployment shipgate creates.
pub const ROLLBACK_GITHUB_ID: u64 = 9001;

/// Monday 2 June 2025, 10:00 UTC.
pub fn start_time() -> Timestamp {
    "2025-06-02T10:00:00Z".parse().unwrap()
}

/// Production needs staging first and two approvals. U0OCTOCAT is octocat, who triggers the deploys
/// in these tests; U0OCTOCAT is an approver too (a lead), so the self-approval rule is what stops
/// their click, not the allow-list. U0MALLORY is mapped but may not approve.
pub const POLICY: &str = r#"
[identities]
U0ALICE01 = "alice"
U0BOB0002 = "bob"
U0CAROL03 = "carol"
U0OCTOCAT = "octocat"
U0MALLORY = "mallory"

[environments.staging]
approvals_required = 0

[environments.production]
allowed_refs = ["main"]
promotion_from = ["staging"]
approvals_required = 2
approvers = ["U0ALICE01", "U0BOB0002", "U0CAROL03", "U0OCTOCAT"]
prevent_self_approval = true
require_reject_reason = false
approval_ttl = "1h"
"#;

/// The same policy, but rejections need a reason.
pub fn policy_requiring_reasons() -> String {
    POLICY.replace(
        "require_reject_reason = false",
        "require_reject_reason = true",
    )
}

pub fn data_path(name: &str) -> PathBuf {
    testkit::test_data("functions/slack-approval", name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    testkit::fixture("functions/slack-approval", name)
}

pub fn fixture_json(name: &str) -> Value {
    testkit::fixture_json("functions/slack-approval", name)
}

pub struct Harness {
    pub app: SlackApproval,
    pub webhook: GitHubWebhook,
    pub store: Arc<SqliteStore>,
    pub repo: Repo,
    pub clock: ManualClock,
    pub publisher: RecordingPublisher,
    pub github: MockServer,
    pub slack: MockServer,
    counter: AtomicU64,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_policy(POLICY).await
    }

    pub async fn with_policy(policy_toml: &str) -> Harness {
        Harness::build(policy_toml, Duration::ZERO).await
    }

    /// A harness whose GitHub takes `delay` to answer protection-rule calls.
    pub async fn with_slow_github(delay: Duration) -> Harness {
        Harness::build(POLICY, delay).await
    }

    async fn build(policy_toml: &str, github_delay: Duration) -> Harness {
        let fakes = TestServices::builder()
            .policy(policy_toml)
            .start(start_time())
            .app(APP_ID, INSTALLATION_ID, "ghs_test_installation_token")
            .build()
            .await;
        let github = fakes.github;
        Mock::given(method("POST"))
            .and(path_regex(
                r"^/repos/[^/]+/[^/]+/actions/runs/[0-9]+/deployment_protection_rule$",
            ))
            .respond_with(ResponseTemplate::new(204).set_delay(github_delay))
            .mount(&github)
            .await;

        Mock::given(method("POST"))
            .and(path(format!("/repos/{REPO}/deployments")))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({ "id": ROLLBACK_GITHUB_ID, "sha": PREV_SHA })),
            )
            .mount(&github)
            .await;

        let slack = fakes.slack;
        // Slack answers a response_url POST with a plain "ok".
        Mock::given(method("POST"))
            .and(path_regex(r"^/actions/"))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .mount(&slack)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/views.open"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "ok": true, "view": { "id": "V0REASON" } })),
            )
            .mount(&slack)
            .await;

        let slack_client = SlackApi::new(
            SlackConfig {
                api_url: format!("{}/api", slack.uri()),
                bot_token: SecretString::from(BOT_TOKEN.to_string()),
            },
            http_client().unwrap(),
        )
        .with_policy(fast_retries());

        let (store, repo, clock, publisher) =
            (fakes.store, fakes.repo, fakes.clock, fakes.publisher);
        let services = fakes.services;
        let webhook = GitHubWebhook::new(
            services.clone(),
            SecretString::from(WEBHOOK_SECRET.to_string()),
        );
        let app = SlackApproval::new(
            services,
            SecretString::from(SIGNING_SECRET.to_string()),
            workspace(),
            Arc::new(slack_client),
        );
        Harness {
            app,
            webhook,
            store,
            repo,
            clock,
            publisher,
            github,
            slack,
            counter: AtomicU64::new(0),
        }
    }

    pub fn services(&self) -> &Services {
        &self.app.services
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Gates a production deploy of [`SHA`] for `run_id` through the GitHub webhook handler,
    /// after recording that the sha succeeded in staging. Returns the deployment.
    pub async fn gate_production(&self, run_id: u64) -> Deployment {
        self.repo
            .record_sha_fact(
                "OK#staging",
                &ShaFact {
                    repo: REPO.parse().unwrap(),
                    sha: SHA.parse().unwrap(),
                    at: self.clock.now(),
                    detail: None,
                },
            )
            .await
            .unwrap();
        let body = serde_json::to_vec(&protection_rule("production", run_id)).unwrap();
        let delivery = format!("delivery-{}", self.next());
        let req = testkit::github_delivery(
            "deployment_protection_rule",
            &delivery,
            WEBHOOK_SECRET,
            &body,
        );
        let resp = github_webhook::handle(&self.webhook, req).await;
        assert_eq!(resp.status(), 200, "gate answered {}", resp.body());
        let answer: Value = serde_json::from_str(resp.body()).unwrap();
        let id = answer["deployment_id"].as_str().unwrap().to_string();
        self.deployment(&id).await
    }

    /// Records that [`PREV_SHA`] and then [`SHA`] went out to production and succeeded: `SHA`
    /// runs there now and `PREV_SHA` is the last known good. Returns the current deployment.
    pub async fn seed_running_production(&self) -> Deployment {
        let now = self.clock.now();
        let mut ids = Vec::new();
        for (n, sha) in [(1, PREV_SHA), (2, SHA)] {
            let at = now - jiff::SignedDuration::from_hours(3 - n);
            let id = format!("dep-seed-{n}");
            let mut dep: Deployment = serde_json::from_value(json!({
                "id": id,
                "repo": REPO,
                "environment": "production",
                "git_ref": "main",
                "sha": sha,
                "requester": "octocat",
                "kind": "deploy",
                "state": "succeeded",
                "version": 0,
                "created_at": at,
                "updated_at": at,
                "run_id": 600 + n,
                "installation_id": INSTALLATION_ID,
                "button_nonce": format!("seed-nonce-{n}"),
            }))
            .unwrap();
            self.repo
                .create_deployment(&mut dep, &[], at)
                .await
                .unwrap();
            self.repo
                .set_head(
                    &testkit::scope(REPO, "production"),
                    shipgate::domain::deployment::Head {
                        sha: sha.into(),
                        git_ref: "main".into(),
                        deployment_id: id.clone(),
                        at,
                        verify_until: None,
                    },
                    n == 1,
                )
                .await
                .unwrap();
            ids.push(id);
        }
        self.deployment(&ids[1]).await
    }

    /// A click on one of the open rollback request's buttons of `dep`.
    pub fn rollback_request_click(&self, user: &str, action_id: &str, dep: &Deployment) -> Value {
        let nonce = dep
            .rollback_request
            .as_ref()
            .map(|r| r.nonce.clone())
            .unwrap_or_default();
        self.click_payload_with_value(user, action_id, &format!("{}:{nonce}", dep.id))
    }

    /// Requests GitHub received at `/repos/{REPO}/deployments`.
    pub async fn github_deployment_calls(&self) -> Vec<Value> {
        self.github
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == format!("/repos/{REPO}/deployments"))
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    pub async fn deployment(&self, id: &str) -> Deployment {
        self.repo
            .get_deployment(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no deployment {id}"))
    }

    pub async fn audit(&self, id: &str) -> Vec<AuditEvent> {
        self.repo.audit_for_deployment(id).await.unwrap()
    }

    /// A click on one of `dep`'s buttons by `user`, as Slack would send it.
    pub fn click_payload(&self, user: &str, action_id: &str, dep: &Deployment) -> Value {
        let value = format!(
            "{}:{}",
            dep.id,
            dep.button_nonce.clone().unwrap_or_default()
        );
        self.click_payload_with_value(user, action_id, &value)
    }

    pub fn click_payload_with_value(&self, user: &str, action_id: &str, value: &str) -> Value {
        let n = self.next();
        block_actions(
            user,
            action_id,
            value,
            &format!("{}.{:06}", self.clock.now().as_second(), n),
            &format!("{}/actions/T0TEAM/{n}/response", self.slack.uri()),
            &format!("{n}.4242.trigger"),
        )
    }

    /// Sends a click and returns the handler's answer.
    pub async fn click(&self, user: &str, action_id: &str, dep: &Deployment) -> Reply {
        let payload = self.click_payload(user, action_id, dep);
        self.send_payload(&payload).await
    }

    /// Sends `payload` as Slack does: form-encoded, signed now.
    pub async fn send_payload(&self, payload: &Value) -> Reply {
        let body = form_body(payload);
        let ts = self.clock.now().as_second();
        self.send(signed_request(&body, ts, SIGNING_SECRET)).await
    }

    pub async fn send(&self, req: http::Request<Bytes>) -> Reply {
        Reply::from(slack_approval::handle(&self.app, req).await)
    }

    /// Bodies posted to interaction `response_url`s, in order.
    pub async fn ephemerals(&self) -> Vec<Value> {
        self.slack
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path().starts_with("/actions/"))
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    /// The texts of those ephemeral answers, in order.
    pub async fn ephemeral_texts(&self) -> Vec<String> {
        self.ephemerals()
            .await
            .iter()
            .map(|b| b["text"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn slack_requests(&self, path: &str) -> Vec<Request> {
        self.slack
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == path)
            .collect()
    }

    /// Bodies of the protection-rule calls GitHub received (reviews and status reports).
    pub async fn protection_rule_calls(&self) -> Vec<(String, Value)> {
        self.github
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path().ends_with("/deployment_protection_rule"))
            .map(|r| {
                (
                    r.url.path().to_string(),
                    serde_json::from_slice(&r.body).unwrap(),
                )
            })
            .collect()
    }

    /// `(event, approvals)` of every deployment notification published, in order.
    pub fn deployment_events(&self) -> Vec<(String, Vec<String>)> {
        self.publisher
            .taken()
            .into_iter()
            .filter_map(|n: Notification| match n.body {
                NotificationBody::Deployment { deployment, event } => {
                    Some((event, deployment.approvals))
                }
                _ => None,
            })
            .collect()
    }

    /// Every item in the store.
    pub async fn all_items(&self) -> Vec<Item> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (items, next) = self.store.scan(0, 1, cursor).await.unwrap();
            out.extend(items);
            match next {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }
}

/// A `block_actions` payload as Slack sends it for a button click on a bot message.
pub fn block_actions(
    user: &str,
    action_id: &str,
    value: &str,
    action_ts: &str,
    response_url: &str,
    trigger_id: &str,
) -> Value {
    let label = match action_id {
        "shipgate_approve" => "Approve",
        "shipgate_reject" => "Reject",
        _ => "Roll back",
    };
    json!({
        "type": "block_actions",
        "user": { "id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": "T0TEAM" },
        "api_app_id": "A0SHIPGATE",
        "token": "legacy-verification-token",
        "container": { "type": "message", "message_ts": "1748858400.000100", "channel_id": "C0PRODUCTION", "is_ephemeral": false },
        "trigger_id": trigger_id,
        "team": { "id": "T0TEAM", "domain": "octo-org" },
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": { "id": "C0PRODUCTION", "name": "deploys" },
        "message": { "type": "message", "ts": "1748858400.000100", "text": "Deploy to production?", "blocks": [] },
        "state": { "values": {} },
        "response_url": response_url,
        "actions": [{
            "action_id": action_id,
            "block_id": "shipgate_decision",
            "text": { "type": "plain_text", "text": label, "emoji": true },
            "value": value,
            "type": "button",
            "action_ts": action_ts
        }]
    })
}

/// The workspace and app the payloads here come from (`T0TEAM`, `A0SHIPGATE`).
pub fn workspace() -> slack_approval::Workspace {
    slack_approval::Workspace {
        team_id: "T0TEAM".into(),
        app_id: Some("A0SHIPGATE".into()),
    }
}

/// A `view_submission` of the reject-reason modal.
pub fn reason_submission(user: &str, metadata: &str, reason: &str, view_id: &str) -> Value {
    json!({
        "type": "view_submission",
        "team": { "id": "T0TEAM", "domain": "octo-org" },
        "user": { "id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": "T0TEAM" },
        "api_app_id": "A0SHIPGATE",
        "token": "legacy-verification-token",
        "trigger_id": "5555.4242.trigger",
        "view": {
            "id": view_id,
            "team_id": "T0TEAM",
            "type": "modal",
            "callback_id": "shipgate_reject_reason",
            "private_metadata": metadata,
            "hash": "1748858400.abcdEFGH",
            "title": { "type": "plain_text", "text": "Reject deployment" },
            "state": { "values": { "shipgate_reason": { "reason": { "type": "plain_text_input", "value": reason } } } }
        },
        "response_urls": []
    })
}

/// `payload=<url-encoded JSON>`, exactly as Slack posts it.
pub fn form_body(payload: &Value) -> Vec<u8> {
    testkit::slack_form_body(payload)
}

/// A POST to the Slack route, signed with `secret` at `timestamp`.
pub fn signed_request(body: &[u8], timestamp: i64, secret: &str) -> http::Request<Bytes> {
    testkit::signed_slack_request(body, timestamp, secret)
}

pub fn request(timestamp: &str, signature: &str, body: &[u8]) -> http::Request<Bytes> {
    testkit::slack_request(timestamp, signature, body)
}

/// A `deployment_protection_rule` delivery for [`SHA`] on `main`, triggered by octocat.
pub fn protection_rule(environment: &str, run_id: u64) -> Value {
    let mut p = fixture_json("deployment_protection_rule.requested.payload.json");
    p["environment"] = json!(environment);
    p["event"] = json!("push");
    p["sha"] = json!(SHA);
    p["ref"] = json!("main");
    p["deployment_callback_url"] = json!(format!(
        "https://api.github.com/repos/{REPO}/actions/runs/{run_id}/deployment_protection_rule"
    ));
    p["installation"] = json!({ "id": INSTALLATION_ID });
    p["repository"]["full_name"] = json!(REPO);
    p["sender"]["login"] = json!("octocat");
    p
}

/// A handler answer; `body` is JSON when there is one, `Null` for Slack's empty 200.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl From<http::Response<String>> for Reply {
    fn from(resp: http::Response<String>) -> Self {
        let status = resp.status().as_u16();
        let body = if resp.body().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(resp.body())
                .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", resp.body()))
        };
        Reply { status, body }
    }
}
