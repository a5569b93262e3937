//! A job context over in-memory SQLite, a settable clock and a recording publisher.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::jobs::{JobContext, MetricSink};
use shipgate::notify::{Notification, NotificationBody};
use shipgate::outbound::{http_client, GitHubApi, RetryPolicy};
use shipgate::service::Services;
use shipgate::store::Repo;
use testkit::ManualClock;
use testkit::RecordingPublisher;
use wiremock::MockServer;

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
            policy_source: None,
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

/// The real GitHub App client on `server`, one attempt per call.
pub fn github_at(server: &MockServer) -> Arc<dyn GitHubApi> {
    let policy = RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
    };
    Arc::new(testkit::github_app(server, 4242, policy))
}

pub async fn mount_token(server: &MockServer) {
    testkit::mount_installation_token(server, INSTALLATION, "ghs_test").await;
}
