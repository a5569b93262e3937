//! [`TestServices`]: the library's use cases wired as in production, on fakes — an in-memory
//! SQLite store, a manual clock, a recording publisher, and wiremock stand-ins for GitHub
//! (with the App installation-token endpoint mounted), Slack and PagerDuty.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::json;
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::outbound::{http_client, GitHubApp, GitHubAppConfig, RetryPolicy};
use shipgate::service::Services;
use shipgate::store::{ItemStore, Repo};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::counting::CountingStore;
use crate::{github_app_key, ManualClock, RecordingPublisher};

/// Two quick attempts: enough to see a retry, fast enough for a test.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    }
}

/// Answers `POST /app/installations/{installation_id}/access_tokens` with `token`, valid
/// for an hour, as GitHub does for an App.
pub async fn mount_installation_token(github: &MockServer, installation_id: u64, token: &str) {
    let expires_at = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{installation_id}/access_tokens"
        )))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({ "token": token, "expires_at": expires_at.to_string() })),
        )
        .mount(github)
        .await;
}

/// The real GitHub App client, signing its JWTs with the test key, pointed at `github`.
pub fn github_app(github: &MockServer, app_id: u64, retries: RetryPolicy) -> GitHubApp {
    let config = GitHubAppConfig {
        api_url: github.uri(),
        app_id,
        private_key: SecretString::from(github_app_key()),
    };
    GitHubApp::new(config, http_client().expect("http client"))
        .expect("GitHub App client")
        .with_policy(retries)
}

/// Services over fakes, and the fakes themselves for the test to drive and inspect.
pub struct TestServices {
    pub services: Services,
    /// The SQLite store under the repo (unused when built with [`Builder::item_store`]).
    pub store: Arc<SqliteStore>,
    /// The store the repo uses: the SQLite one, or the one given to [`Builder::item_store`].
    pub items: Arc<dyn ItemStore>,
    /// The counting wrapper the repo goes through, when built with [`Builder::counting`].
    pub counter: Option<Arc<CountingStore>>,
    pub repo: Repo,
    pub clock: ManualClock,
    pub publisher: RecordingPublisher,
    pub github: MockServer,
    pub slack: MockServer,
    pub pagerduty: MockServer,
}

impl TestServices {
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// How to build [`TestServices`]; every setting has a default.
pub struct Builder {
    policy: String,
    start: Timestamp,
    app_id: u64,
    installation_id: u64,
    installation_token: String,
    retries: RetryPolicy,
    github_app: bool,
    counting: bool,
    items: Option<Arc<dyn ItemStore>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            policy: String::new(),
            // Monday 2 June 2025, 10:00 UTC.
            start: "2025-06-02T10:00:00Z".parse().expect("timestamp"),
            app_id: 31337,
            installation_id: 777,
            installation_token: "ghs_test_installation_token".into(),
            retries: fast_retries(),
            github_app: true,
            counting: false,
            items: None,
        }
    }
}

impl Builder {
    /// The policy (TOML); empty by default.
    pub fn policy(mut self, toml: &str) -> Self {
        self.policy = toml.to_string();
        self
    }
    /// Where the manual clock starts.
    pub fn start(mut self, at: Timestamp) -> Self {
        self.start = at;
        self
    }
    /// The GitHub App's id, the installation whose token the fake GitHub hands out, and the
    /// token.
    pub fn app(mut self, app_id: u64, installation_id: u64, token: &str) -> Self {
        self.app_id = app_id;
        self.installation_id = installation_id;
        self.installation_token = token.to_string();
        self
    }
    /// The outbound clients' retry policy.
    pub fn retries(mut self, retries: RetryPolicy) -> Self {
        self.retries = retries;
        self
    }
    /// No GitHub App configured: shipgate records, but cannot answer GitHub.
    pub fn without_github_app(mut self) -> Self {
        self.github_app = false;
        self
    }
    /// The repo uses this store instead of a fresh in-memory SQLite one (a DynamoDB table,
    /// to run a test on both stores).
    pub fn item_store(mut self, items: Arc<dyn ItemStore>) -> Self {
        self.items = Some(items);
        self
    }
    /// The repo goes through a [`CountingStore`].
    pub fn counting(mut self) -> Self {
        self.counting = true;
        self
    }

    pub async fn build(self) -> TestServices {
        let github = MockServer::start().await;
        let slack = MockServer::start().await;
        let pagerduty = MockServer::start().await;
        let app = if self.github_app {
            mount_installation_token(&github, self.installation_id, &self.installation_token).await;
            Some(github_app(&github, self.app_id, self.retries.clone()))
        } else {
            None
        };

        let store = Arc::new(SqliteStore::in_memory().expect("in-memory SQLite"));
        let items: Arc<dyn ItemStore> = match self.items {
            Some(items) => items,
            None => store.clone(),
        };
        let (repo, counter) = if self.counting {
            let counter = Arc::new(CountingStore::new(items.clone()));
            (Repo::new(counter.clone()), Some(counter))
        } else {
            (Repo::new(items.clone()), None)
        };
        let clock = ManualClock::new(self.start);
        let publisher = RecordingPublisher::default();
        let policy = Policy::parse("test-policy.toml", &self.policy)
            .unwrap_or_else(|e| panic!("test policy: {e}"));
        let services = Services {
            repo: repo.clone(),
            policy: Arc::new(policy),
            github: app.map(|a| Arc::new(a) as _),
            publisher: Arc::new(publisher.clone()),
            clock: Arc::new(clock.clone()),
            policy_source: None,
        };
        TestServices {
            services,
            store,
            items,
            counter,
            repo,
            clock,
            publisher,
            github,
            slack,
            pagerduty,
        }
    }
}
