//! The world the fault scenarios run in: real use cases over [`FaultyStore`] (SQLite
//! underneath), a manual clock, a recording publisher, and the real GitHub App client pointed
//! at a wiremock GitHub. Plus the inbound edge every webhook handler shares, and the
//! invariants every scenario ends by checking.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::{json, Value};
use shipgate::domain::deployment::{next_state, Action, Deployment, State};
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::notify::NotificationBody;
use shipgate::outbound::{http_client, GitHubApi, GitHubApp, GitHubAppConfig, RetryPolicy};
use shipgate::service::gate::ProtectionRuleRequest;
use shipgate::service::{ServiceError, Services};
use shipgate::store::repo::{Claim, CLAIM_LEASE};
use shipgate::store::Repo;
use testkit::ManualClock;
use testkit::RecordingPublisher;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::store::FaultyStore;

pub const REPO: &str = "octo-org/hello-world";
pub const INSTALLATION: u64 = 77;
pub const ENVIRONMENTS: [&str; 2] = ["staging", "production"];
pub const APPROVERS: [&str; 3] = ["U0APPROV1", "U0APPROV2", "U0APPROV3"];

/// staging deploys at once; production needs two of three approvers and rolls back on
/// critical alerts during its 15-minute verification window.
pub const POLICY: &str = r#"
[services]
api = "octo-org/hello-world"

[identities]
U0APPROV1 = "alice-ops"
U0APPROV2 = "bob-sre"
U0APPROV3 = "carol-lead"

[environments.staging]
allowed_refs = ["main", "refs/heads/main"]
approvals_required = 0
verification_window = "10m"

[environments.production]
allowed_refs = ["main", "refs/heads/main"]
approvals_required = 2
approvers = ["U0APPROV1", "U0APPROV2", "U0APPROV3"]
prevent_self_approval = true
approval_ttl = "4h"
verification_window = "15m"
rollback_on = ["critical"]
"#;

/// Monday 2 June 2025, 10:00 UTC: inside any sensible window.
pub fn start_time() -> Timestamp {
    "2025-06-02T10:00:00Z".parse().expect("timestamp")
}

/// One attempt per call and a short timeout: the retries under test are the edge's and the
/// sweeper's.
pub fn one_attempt() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_millis(500),
    }
}

pub struct World {
    pub svc: Services,
    pub store: FaultyStore,
    /// The same data, read around the faults: what is really stored.
    pub clean: Repo,
    pub clock: ManualClock,
    pub published: RecordingPublisher,
    pub github: MockServer,
}

fn key_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/github-app-test-key.pem")
}

impl World {
    /// A world whose GitHub answers nothing yet but installation tokens: each test mounts the
    /// API answers it means to.
    pub async fn new(retries: RetryPolicy) -> World {
        let github = MockServer::start().await;
        let expires_at = Timestamp::now() + jiff::SignedDuration::from_hours(1);
        Mock::given(method("POST"))
            .and(path(format!(
                "/app/installations/{INSTALLATION}/access_tokens"
            )))
            .respond_with(ResponseTemplate::new(201).set_body_json(
                json!({ "token": "ghs_faults", "expires_at": expires_at.to_string() }),
            ))
            .mount(&github)
            .await;
        let config = GitHubAppConfig {
            api_url: github.uri(),
            app_id: 4242,
            private_key: SecretString::from(std::fs::read_to_string(key_path()).expect("test key")),
        };
        let client: Arc<dyn GitHubApi> = Arc::new(
            GitHubApp::new(config, http_client().expect("http"))
                .expect("app")
                .with_policy(retries),
        );
        let sqlite = Arc::new(SqliteStore::in_memory().expect("sqlite"));
        let clean = Repo::new(sqlite.clone());
        let store = FaultyStore::new(sqlite);
        let clock = ManualClock::new(start_time());
        let published = RecordingPublisher::default();
        let svc = Services {
            repo: Repo::new(Arc::new(store.clone())),
            policy: Arc::new(Policy::parse("faults-policy.toml", POLICY).expect("policy")),
            github: Some(client),
            publisher: Arc::new(published.clone()),
            clock: Arc::new(clock.clone()),
            policy_source: None,
        };
        World {
            svc,
            store,
            clean,
            clock,
            published,
            github,
        }
    }

    /// The store without faults, for reading what really is there.
    pub fn repo(&self) -> &Repo {
        &self.clean
    }

    pub async fn deployment(&self, id: &str) -> Deployment {
        self.repo()
            .get_deployment(id)
            .await
            .expect("read deployment")
            .expect("deployment exists")
    }

    pub async fn deployments(&self, environment: &str) -> Vec<Deployment> {
        self.repo()
            .deployments_in(
                environment,
                Timestamp::UNIX_EPOCH,
                Timestamp::MAX,
                false,
                None,
            )
            .await
            .expect("list deployments")
    }

    /// Every request GitHub received on a protection-rule callback, in order.
    pub async fn protection_rule_calls(&self) -> Vec<Value> {
        self.github_calls("/deployment_protection_rule").await
    }

    /// Decisions (approve / reject) GitHub received, without status comments.
    pub async fn reviews(&self) -> Vec<Value> {
        self.protection_rule_calls()
            .await
            .into_iter()
            .filter(|b| b.get("state").is_some())
            .collect()
    }

    /// Bodies of POSTs to paths ending in `suffix`.
    pub async fn github_calls(&self, suffix: &str) -> Vec<Value> {
        self.github_requests(suffix)
            .await
            .iter()
            .map(|r| serde_json::from_slice(&r.body).expect("JSON body"))
            .collect()
    }

    pub async fn github_requests(&self, suffix: &str) -> Vec<Request> {
        self.github
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with(suffix))
            .collect()
    }

    /// Deployment notifications published for `deployment_id` with this event.
    pub fn announced(&self, deployment_id: &str, event: &str) -> usize {
        self.published
            .taken()
            .iter()
            .filter(|n| {
                matches!(&n.body, NotificationBody::Deployment { deployment, event: e }
                    if deployment.id == deployment_id && e == event)
            })
            .count()
    }
}

/// GitHub accepts every protection-rule answer and status comment.
pub async fn github_accepts_reviews(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/repos/[^/]+/[^/]+/actions/runs/[0-9]+/deployment_protection_rule$",
        ))
        .respond_with(ResponseTemplate::new(204))
        .mount(server)
        .await;
}

/// GitHub creates every deployment asked for, with id `id`.
pub async fn github_creates_deployments(server: &MockServer, id: u64) {
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/deployments")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": id })))
        .mount(server)
        .await;
}

/// A `deployment_protection_rule` request for run `run_id`.
pub fn protection_rule(environment: &str, run_id: u64, sha: &str) -> ProtectionRuleRequest {
    ProtectionRuleRequest {
        repo: REPO.parse().unwrap(),
        environment: environment.parse().unwrap(),
        event: "push".into(),
        git_ref: "refs/heads/main".into(),
        sha: sha.parse().unwrap(),
        run_id,
        installation_id: Some(INSTALLATION),
        requester: "octocat".into(),
        break_glass_reason: None,
    }
}

/// What the sender of an inbound event saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery<T> {
    /// 2xx: processed now.
    Processed(T),
    /// 2xx: the event id was claimed before; nothing ran.
    Duplicate,
}

impl<T> Delivery<T> {
    pub fn processed(self) -> Option<T> {
        match self {
            Delivery::Processed(t) => Some(t),
            Delivery::Duplicate => None,
        }
    }
}

/// How long inbound event ids are remembered (as the handlers do).
pub const CLAIM_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The edge every inbound handler shares (github-webhook `handle_inner`, slack-approval
/// `on_click`, alert ingestion): claim the event id (pending, for a lease), run the use case,
/// then confirm the claim when the use case succeeded or failed for good, or give it back when
/// a redelivery could fix the failure. A claim another attempt holds is not a duplicate: it is
/// answered like a failure, so the sender tries again. `Err` is the non-2xx that makes the
/// sender redeliver.
pub async fn inbound<T, F, Fut>(
    svc: &Services,
    scope: &str,
    event_id: &str,
    use_case: F,
) -> Result<Delivery<T>, ServiceError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, ServiceError>>,
{
    match svc
        .repo
        .begin_event(scope, event_id, svc.now(), CLAIM_LEASE)
        .await?
    {
        Claim::Acquired => {}
        Claim::Done => return Ok(Delivery::Duplicate),
        Claim::InProgress => {
            return Err(ServiceError::Contended(format!(
                "{scope} event {event_id} (claimed by another attempt)"
            )))
        }
    }
    let result = use_case().await;
    match &result {
        // The handlers log a failed release or confirm and answer all the same.
        Err(e) if e.is_retryable() => {
            let _ = svc.repo.release_event(scope, event_id).await;
        }
        _ => {
            let _ = svc
                .repo
                .confirm_event(scope, event_id, svc.now(), CLAIM_TTL)
                .await;
        }
    }
    result.map(Delivery::Processed)
}

fn action_named(name: &str) -> Option<Action> {
    Action::ALL.into_iter().find(|a| a.as_str() == name)
}

/// Replays a deployment's audit log: every transition starts where the previous one ended,
/// is a move [`next_state`] allows, and the last one ends in the stored state. Returns the
/// states visited.
pub async fn assert_history_is_legal(repo: &Repo, dep: &Deployment) -> Vec<State> {
    assert_history_from(repo, dep, State::Requested).await
}

/// [`assert_history_is_legal`] for a record created directly in state `start` (set-up
/// shortcuts that write no audit events of their own).
pub async fn assert_history_from(repo: &Repo, dep: &Deployment, start: State) -> Vec<State> {
    let audit = repo
        .audit_for_deployment(&dep.id)
        .await
        .expect("read audit");
    let mut state = start;
    let mut visited = vec![state];
    for event in audit.iter().filter(|e| e.from.is_some() || e.to.is_some()) {
        let (Some(from), Some(to)) = (event.from, event.to) else {
            panic!("{}: half a transition in the audit log: {event:?}", dep.id);
        };
        assert_eq!(
            from, state,
            "{}: transition {event:?} does not start where the history is ({state})",
            dep.id
        );
        let action = action_named(&event.what)
            .unwrap_or_else(|| panic!("{}: unknown action in {event:?}", dep.id));
        assert_eq!(
            next_state(from, action),
            Ok(to),
            "{}: illegal transition in the audit log: {event:?}",
            dep.id
        );
        state = to;
        visited.push(state);
    }
    assert_eq!(
        state, dep.state,
        "{}: the audit log ends in {state} but the record is {}",
        dep.id, dep.state
    );
    visited
}

/// Every environment: the lock, if held, is held by a stored deployment in a lock-holding
/// (non-terminal) state, and no other deployment of the environment is in such a state.
pub async fn assert_locks_are_consistent(world: &World) {
    for env in ENVIRONMENTS {
        let holder = world
            .repo()
            .lock_holder(&testkit::scope(REPO, env))
            .await
            .expect("lock");
        let holding: Vec<Deployment> = world
            .deployments(env)
            .await
            .into_iter()
            .filter(|d| d.state.holds_lock())
            .collect();
        if let Some(holder) = &holder {
            let dep = world.deployment(holder).await;
            assert!(
                dep.state.holds_lock() && !dep.state.is_terminal(),
                "{env}: the lock is held by {holder}, which is {}",
                dep.state
            );
        }
        let others: Vec<(String, State)> = holding
            .iter()
            .filter(|d| Some(&d.id) != holder.as_ref())
            .map(|d| (d.id.clone(), d.state))
            .collect();
        assert!(
            others.is_empty(),
            "{env}: lock held by {holder:?}, yet these deployments are in lock-holding states: {others:?}"
        );
    }
}
