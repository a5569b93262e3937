//! Shared set-up of the notifier tests: services on the embedded store, Slack and PagerDuty
//! clients pointed at wiremock servers, and a log capture.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use notifier::Notifier;
use secrecy::SecretString;
use serde_json::Value;
use shipgate::domain::deployment::{CallbackState, Deployment, DeploymentKind, State};
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::outbound::{PagerDuty, RetryPolicy, SlackApi, SlackConfig};
use shipgate::service::Services;
use shipgate::store::Repo;
use testkit::ManualClock;
use testkit::RecordingPublisher;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const BOT_TOKEN: &str = "xoxb-test-bot-token";
pub const DEFAULT_ROUTING_KEY: &str = "R0UTINGKEYDEFAULT000000000000000";
pub const CRITICAL_ROUTING_KEY: &str = "R0UTINGKEYCRITICAL00000000000000";

pub const POLICY: &str = r#"
[identities]
U0APPROV1 = "alice-ops"
U0APPROV2 = "bob-sre"

[notifications]
pagerduty_routing_keys = { critical = "env:SHIPGATE_PAGERDUTY_ROUTING_KEY_CRITICAL" }

[environments.production]
approvals_required = 2
approvers = ["U0APPROV1", "U0APPROV2"]
slack_channel = "C0PRODUCTION"

[environments.staging]
slack_channel = "C0STAGING"

[environments.dev]
"#;

pub fn now() -> Timestamp {
    "2025-03-04T12:00:00Z".parse().expect("timestamp")
}

pub fn services() -> Services {
    let store = SqliteStore::in_memory().expect("in-memory store");
    Services {
        repo: Repo::new(Arc::new(store)),
        policy: Arc::new(Policy::parse("test-policy.toml", POLICY).expect("policy")),
        github: None,
        publisher: Arc::new(RecordingPublisher::default()),
        clock: Arc::new(ManualClock::new(now())),
        policy_source: None,
    }
}

/// Fast retries, but long enough a `Retry-After: 1` is honoured rather than given up on.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    }
}

pub struct Fakes {
    pub slack: MockServer,
    pub pagerduty: MockServer,
}

impl Fakes {
    pub async fn start() -> Self {
        Fakes {
            slack: MockServer::start().await,
            pagerduty: MockServer::start().await,
        }
    }

    pub fn pagerduty_url(&self) -> String {
        format!("{}/v2/enqueue", self.pagerduty.uri())
    }

    /// A notifier on `services` talking to these fakes, with the policy's critical key and a
    /// default key.
    pub fn notifier(&self, services: Services) -> Notifier {
        let http = reqwest::Client::new();
        let slack = SlackApi::new(
            SlackConfig {
                api_url: self.slack.uri(),
                bot_token: SecretString::from(BOT_TOKEN.to_owned()),
            },
            http.clone(),
        )
        .with_policy(fast_retries());
        let pagerduty = PagerDuty::new(self.pagerduty_url(), http).with_policy(fast_retries());
        Notifier::new(services)
            .with_slack(Arc::new(slack))
            .with_pagerduty(
                Arc::new(pagerduty),
                Some(SecretString::from(DEFAULT_ROUTING_KEY.to_owned())),
            )
            .with_routing_keys_from(&[(
                "SHIPGATE_PAGERDUTY_ROUTING_KEY_CRITICAL",
                CRITICAL_ROUTING_KEY,
            )])
            .expect("routing keys")
    }

    pub async fn slack_requests(&self) -> Vec<Request> {
        self.slack.received_requests().await.unwrap_or_default()
    }

    pub async fn pagerduty_requests(&self) -> Vec<Request> {
        self.pagerduty.received_requests().await.unwrap_or_default()
    }
}

/// Slack answers every `chat.postMessage` with the channel and `ts`, like slack.com does.
pub async fn slack_posts_ok(server: &MockServer, ts: &str) {
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "ok": true, "channel": "C0PRODUCTION", "ts": ts,
            "message": {"type": "message", "text": "…", "ts": ts}
        })))
        .mount(server)
        .await;
}

pub async fn slack_updates_ok(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/chat.update"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "ok": true, "channel": "C0PRODUCTION", "ts": "1741089600.000100", "text": "…"
        })))
        .mount(server)
        .await;
}

pub fn pagerduty_accepted(dedup_key: &str) -> ResponseTemplate {
    ResponseTemplate::new(202).set_body_json(serde_json::json!({
        "status": "success", "message": "Event processed", "dedup_key": dedup_key
    }))
}

pub fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("JSON body")
}

pub fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Asserts the Slack Web API call's method, path and headers (bot token as bearer, JSON).
pub fn assert_slack_call(request: &Request, api_method: &str) {
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), format!("/{api_method}"));
    assert_eq!(
        header(request, "authorization"),
        format!("Bearer {BOT_TOKEN}")
    );
    assert_eq!(
        header(request, "content-type"),
        "application/json; charset=utf-8"
    );
}

/// Asserts the PagerDuty call's method, path and headers (no auth header: the routing key is
/// in the body).
pub fn assert_pagerduty_call(request: &Request) {
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/v2/enqueue");
    assert_eq!(header(request, "content-type"), "application/json");
    assert!(request.headers.get("authorization").is_none());
}

/// A deployment awaiting 2 approvals in production.
pub fn awaiting_deployment(id: &str) -> Deployment {
    Deployment {
        id: id.into(),
        repo: "acme/shop".parse().unwrap(),
        environment: "production".parse().unwrap(),
        git_ref: "main".into(),
        sha: "6113728f27ae82c7b1a177c8d03f9e96e0adf246".parse().unwrap(),
        requester: "octocat".into(),
        kind: DeploymentKind::Deploy,
        state: State::AwaitingApproval,
        version: 0,
        created_at: now(),
        updated_at: now(),
        run_id: Some(4242),
        installation_id: Some(7),
        github_deployment_id: None,
        approvals_required: 2,
        approvals: Vec::new(),
        approval_expires_at: Some("2025-03-04T16:00:00Z".parse().expect("timestamp")),
        verify_until: None,
        deploy_started_at: None,
        finished_at: None,
        break_glass: None,
        rollback: None,
        reason: None,
        callback: CallbackState::Pending,
        slack: None,
        button_nonce: Some("8c1e4f2a9b7d43e6a0f5c2d1b8e7a694".into()),
        checks: vec!["ref main matches allowed_refs".into()],
        rollback_request: None,
        queued: None,
        left_queue: false,
    }
}

pub async fn store_deployment(services: &Services, mut dep: Deployment) -> Deployment {
    services
        .repo
        .create_deployment(&mut dep, &[], now())
        .await
        .expect("create deployment");
    dep
}

/// Everything logged while the guard lives, as plain text.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Captures the current thread's logs (tests run on tokio's current-thread runtime).
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = LogCapture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
