//! A job context over in-memory SQLite, a settable clock and a recording publisher.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::jobs::{JobContext, MetricSink};
use shipgate::notify::{Notification, NotificationBody};
use shipgate::outbound::{http_client, GitHubApi, GitHubApp, GitHubAppConfig, RetryPolicy};
use shipgate::service::Services;
use shipgate::store::Repo;
use testkit::ManualClock;
use testkit::RecordingPublisher;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const REPO: &str = "octo-org/hello-world";
pub const INSTALLATION: u64 = 77;

pub fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

pub struct Harness {
    pub ctx: JobContext,
    pub clock: ManualClock,
    pub published: RecordingPublisher,
}

impl Harness {
    pub fn new(policy_toml: &str, now: Timestamp, github: Option<Arc<dyn GitHubApi>>) -> Self {
        let clock = ManualClock::new(now);
        let published = RecordingPublisher::default();
        let services = Services {
            repo: Repo::new(Arc::new(SqliteStore::in_memory().expect("sqlite"))),
            policy: Arc::new(Policy::parse("policy.toml", policy_toml).expect("policy")),
            github,
            publisher: Arc::new(published.clone()),
            clock: Arc::new(clock.clone()),
        };
        let ctx = JobContext::new(services, http_client().expect("http"))
            .with_metrics(MetricSink::memory());
        Harness {
            ctx,
            clock,
            published,
        }
    }

    pub fn svc(&self) -> &Services {
        &self.ctx.services
    }

    /// `(job, ok, page, summary)` of every `Job` notification so far.
    pub fn job_notices(&self) -> Vec<(String, bool, bool, String)> {
        self.published
            .taken()
            .into_iter()
            .filter_map(|n: Notification| match n.body {
                NotificationBody::Job {
                    job,
                    ok,
                    page,
                    summary,
                    ..
                } => Some((job, ok, page, summary)),
                _ => None,
            })
            .collect()
    }
}

pub fn github_at(server: &MockServer) -> Arc<dyn GitHubApi> {
    let config = GitHubAppConfig {
        api_url: server.uri(),
        app_id: 4242,
        private_key: SecretString::from(
            include_str!("../../../shared/tests/data/github-app-test-key.pem").to_owned(),
        ),
    };
    let policy = RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
    };
    Arc::new(
        GitHubApp::new(config, http_client().expect("http"))
            .expect("app")
            .with_policy(policy),
    )
}

pub async fn mount_token(server: &MockServer) {
    let expires_at = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{INSTALLATION}/access_tokens"
        )))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "token": "ghs_test",
            "expires_at": expires_at.to_string(),
        })))
        .mount(server)
        .await;
}
