//! Test harness for the alert webhook: the real use cases on an in-memory SQLite store, a
//! manual clock, a recording publisher, and the real GitHub App client pointed at a wiremock
//! stand-in for api.github.com. Deployments are driven through the GitHub webhook handler,
//! exactly as GitHub would drive them.

// Every test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alert_webhook::AlertWebhook;
use bytes::Bytes;
use github_webhook::GitHubWebhook;
use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::{json, Value};
use shipgate::domain::deployment::Deployment;
use shipgate::domain::incident::Incident;
use shipgate::notify::{Notification, NotificationBody};
use shipgate::service::{lifecycle, Services};
use shipgate::store::{Item, ItemStore, Repo};
use testkit::RecordingPublisher;
use testkit::{ManualClock, TestServices};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub use testkit::Reply;

pub const ALERT_TOKEN: &str = "alert token used only by these tests";
pub const WEBHOOK_SECRET: &str = "github webhook secret used only by these tests";
pub const APP_ID: u64 = 4242;
pub const INSTALLATION_ID: u64 = 777;
pub const INSTALLATION_TOKEN: &str = "ghs_alert_test_installation_token";
pub const REPO: &str = "octo-org/shop";
/// The id GitHub gives the rollback deployment shipgate creates.
pub const ROLLBACK_GITHUB_ID: u64 = 9001;

pub const SHA_A: &str = "aaaaaaa111111111111111111111111111111111";
pub const SHA_B: &str = "bbbbbbb222222222222222222222222222222222";

/// Monday 2 June 2025, 10:00 UTC.
pub fn start_time() -> Timestamp {
    "2025-06-02T10:00:00Z".parse().unwrap()
}

/// production re-deploys the last known good sha; staging dispatches a rollback workflow.
pub const POLICY: &str = r#"
[identities]
U0APPROV1 = "alice-ops"

[services]
api = "octo-org/shop"

[environments.staging]
verification_window = "10m"
rollback_on = ["critical"]
rollback = { method = "workflow", workflow = "rollback.yml" }

[environments.production]
approvals_required = 0
approvers = ["U0APPROV1"]
verification_window = "30m"
block_on_critical_incident = true
rollback_on = ["critical"]
rollback = { method = "redeploy" }

[environments.production.break_glass]
allowed = true
extra_approvals = 1
require_reason = true
"#;

pub fn data_path(name: &str) -> PathBuf {
    testkit::test_data("functions/alert-webhook", name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    testkit::fixture("functions/alert-webhook", name)
}

pub fn event_path(name: &str) -> PathBuf {
    testkit::event_path("alert-webhook", name)
}

pub struct Harness {
    pub alerts: AlertWebhook,
    pub github_hook: GitHubWebhook,
    /// The store under test: in-memory SQLite, or a DynamoDB table ([`Harness::build_on`]).
    pub store: Arc<dyn ItemStore>,
    pub repo: Repo,
    pub clock: ManualClock,
    pub publisher: RecordingPublisher,
    pub github: MockServer,
    deliveries: AtomicU64,
    /// The alert routes' bearer token, kept for [`Harness::restart`].
    token: String,
}

/// Mounts the GitHub endpoints shipgate calls; `deployments_status` is what creating a
/// deployment answers (201 with [`ROLLBACK_GITHUB_ID`], or an error status).
pub async fn mount_github(github: &MockServer, deployments_status: u16) {
    testkit::mount_installation_token(github, INSTALLATION_ID, INSTALLATION_TOKEN).await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/repos/[^/]+/[^/]+/actions/runs/[0-9]+/deployment_protection_rule$",
        ))
        .respond_with(ResponseTemplate::new(204))
        .mount(github)
        .await;
    let created = if deployments_status == 201 {
        ResponseTemplate::new(201).set_body_json(json!({ "id": ROLLBACK_GITHUB_ID, "sha": SHA_A }))
    } else {
        ResponseTemplate::new(deployments_status)
            .set_body_json(json!({ "message": "Validation Failed" }))
    };
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/deployments")))
        .respond_with(created)
        .mount(github)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/repos/[^/]+/[^/]+/actions/workflows/[^/]+/dispatches$",
        ))
        .respond_with(ResponseTemplate::new(204))
        .mount(github)
        .await;
}

/// Runs each `async fn name(h: Harness)` of the including test file twice, on a harness under
/// `$policy`: on in-memory SQLite (`mod sqlite`) and on a fresh DynamoDB table on moto
/// (`mod dynamodb`). Pass the policy as a path from the test file's root (`super::POLICY`).
#[allow(unused_macros)]
macro_rules! on_both_stores {
    ($policy:path; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                let h = super::common::Harness::build(
                    $policy,
                    201,
                    super::common::ALERT_TOKEN,
                )
                .await;
                super::$name(h).await;
            })*
        }
        mod dynamodb {
            $(#[tokio::test]
            async fn $name() {
                let h = super::common::Harness::build_on(
                    $policy,
                    201,
                    super::common::ALERT_TOKEN,
                    Some(super::common::dynamodb_store().await),
                )
                .await;
                super::$name(h).await;
            })*
        }
    };
}

/// Polls `fut` up to `polls` times, 200 µs apart; drops it unfinished after that.
pub async fn run_cut<F: std::future::Future>(fut: F, polls: u32) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..polls {
        if let std::task::Poll::Ready(out) = futures::poll!(fut.as_mut()) {
            return Some(out);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    None
}

/// A fresh DynamoDB table on the emulator `make test` starts (moto), for tests that run on
/// both stores. Fails loudly without it: a skipped DynamoDB run would hide a broken adapter.
#[allow(dead_code)]
pub async fn dynamodb_store() -> Arc<dyn ItemStore> {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "needs the DynamoDB emulator: run make test (it starts moto and exports AWS_ENDPOINT_URL)"
    );
    let table = format!("shipgate-test-{}", uuid::Uuid::new_v4());
    let store = shipgate::aws::dynamodb::DynamoStore::from_env(table).await;
    store
        .create_table_if_missing()
        .await
        .expect("create the test table");
    Arc::new(store)
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::build(POLICY, 201, ALERT_TOKEN).await
    }

    pub async fn build(policy_toml: &str, deployments_status: u16, token: &str) -> Harness {
        Harness::build_on(policy_toml, deployments_status, token, None).await
    }

    /// [`Harness::build`] on the given store (`None`: in-memory SQLite).
    pub async fn build_on(
        policy_toml: &str,
        deployments_status: u16,
        token: &str,
        store: Option<Arc<dyn ItemStore>>,
    ) -> Harness {
        // The token endpoint is mounted with the rest of GitHub below.
        let mut builder = TestServices::builder()
            .policy(policy_toml)
            .start(start_time())
            .without_github_app();
        if let Some(store) = store {
            builder = builder.item_store(store);
        }
        let fakes = builder.build().await;
        let github = fakes.github;
        mount_github(&github, deployments_status).await;
        let client = testkit::github_app(&github, APP_ID, testkit::fast_retries());

        let (store, repo, clock, publisher) =
            (fakes.items, fakes.repo, fakes.clock, fakes.publisher);
        let services = Services {
            github: Some(Arc::new(client)),
            ..fakes.services
        };
        let alerts = AlertWebhook::new(services.clone(), SecretString::from(token.to_string()));
        let github_hook =
            GitHubWebhook::new(services, SecretString::from(WEBHOOK_SECRET.to_string()));
        Harness {
            alerts,
            github_hook,
            store,
            repo,
            clock,
            publisher,
            github,
            deliveries: AtomicU64::new(0),
            token: token.to_string(),
        }
    }

    /// What a restart of the process leaves: the handlers are built again, with a new GitHub
    /// client (no cached installation token), on the same store, clock and fakes. Anything
    /// not in the store is gone. Cut a delivery in flight first with [`Harness::deliver_cut`].
    pub fn restart(&mut self) {
        let client = testkit::github_app(&self.github, APP_ID, testkit::fast_retries());
        let services = Services {
            github: Some(Arc::new(client)),
            ..self.services().clone()
        };
        self.alerts = AlertWebhook::new(services.clone(), SecretString::from(self.token.clone()));
        self.github_hook =
            GitHubWebhook::new(services, SecretString::from(WEBHOOK_SECRET.to_string()));
    }

    /// A delivery the process dies in the middle of, as a `kill -9` would: the handler is
    /// polled `polls` times, a moment apart, then dropped where it stands (whatever it wrote
    /// or sent by then stays). `Some` when it finished first. The sender sees a failure and,
    /// like GitHub, does not deliver it again.
    pub async fn deliver_cut(&self, event: &str, body: &Value, polls: u32) -> Option<Reply> {
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes = serde_json::to_vec(body).unwrap();
        let req = testkit::github_delivery(event, &format!("delivery-{n}"), WEBHOOK_SECRET, &bytes);
        let handler = github_webhook::handle(&self.github_hook, req);
        run_cut(handler, polls).await.map(Reply::from)
    }

    pub fn services(&self) -> &Services {
        &self.alerts.services
    }

    pub fn now(&self) -> Timestamp {
        use shipgate::service::Clock;
        self.clock.now()
    }

    pub fn advance_mins(&self, mins: u64) {
        self.clock.advance(Duration::from_secs(mins * 60));
    }

    /// What GitHub answers for `GET /repos/{repo}/actions/runs/{run_id}`: the run's title,
    /// status and conclusion.
    pub async fn github_says_run(
        &self,
        repo: &str,
        run_id: u64,
        title: &str,
        status: &str,
        conclusion: Option<&str>,
    ) {
        Mock::given(method("GET"))
            .and(path(format!("/repos/{repo}/actions/runs/{run_id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": run_id,
                "display_title": title,
                "status": status,
                "conclusion": conclusion,
            })))
            .mount(&self.github)
            .await;
    }

    /// POSTs a body to an alert route with the test token.
    pub async fn post_alert(&self, route: &str, body: &Value) -> Reply {
        let req = alert_request(
            route,
            Some(&format!("Bearer {ALERT_TOKEN}")),
            serde_json::to_vec(body).unwrap(),
        );
        Reply::from(alert_webhook::handle(&self.alerts, req).await)
    }

    /// Sends one signed GitHub delivery through the GitHub webhook handler.
    pub async fn deliver(&self, event: &str, body: &Value) -> Reply {
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes = serde_json::to_vec(body).unwrap();
        let req = testkit::github_delivery(event, &format!("delivery-{n}"), WEBHOOK_SECRET, &bytes);
        Reply::from(github_webhook::handle(&self.github_hook, req).await)
    }

    /// Gates and deploys `sha` to `environment` through GitHub's webhooks; the deployment ends
    /// verifying. Returns its id.
    pub async fn deploy(
        &self,
        environment: &str,
        sha: &str,
        run_id: u64,
        github_id: u64,
    ) -> String {
        let reply = self
            .deliver(
                "deployment_protection_rule",
                &protection_rule(environment, sha, run_id),
            )
            .await;
        assert_eq!(
            (reply.status, reply.str("decision")),
            (200, "approved"),
            "{reply:?}"
        );
        let id = reply.str("deployment_id").to_string();
        let reply = self
            .deliver(
                "deployment_status",
                &deployment_status(
                    github_id,
                    environment,
                    sha,
                    Some(run_id),
                    "success",
                    json!({}),
                ),
            )
            .await;
        assert_eq!(
            (reply.status, reply.str("state")),
            (200, "verifying"),
            "{reply:?}"
        );
        id
    }

    /// Deploys `sha` and lets its verification window pass: it becomes the last known good.
    pub async fn deploy_good(
        &self,
        environment: &str,
        sha: &str,
        run_id: u64,
        github_id: u64,
    ) -> String {
        let id = self.deploy(environment, sha, run_id, github_id).await;
        self.advance_mins(31);
        let outcome = lifecycle::finish_verification(self.services(), &id)
            .await
            .unwrap();
        assert!(
            matches!(outcome, lifecycle::LifecycleOutcome::Moved { .. }),
            "{outcome:?}"
        );
        id
    }

    pub async fn deployment(&self, id: &str) -> Deployment {
        self.repo
            .get_deployment(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no deployment {id}"))
    }

    pub async fn incident(&self, id: &str) -> Incident {
        self.repo
            .get_incident(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no incident {id}"))
    }

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

    pub async fn github_requests(&self) -> Vec<Request> {
        self.github.received_requests().await.unwrap_or_default()
    }

    /// Requests GitHub received whose path ends with `suffix`.
    pub async fn github_calls(&self, suffix: &str) -> Vec<Request> {
        self.github_requests()
            .await
            .into_iter()
            .filter(|r| r.url.path().ends_with(suffix))
            .collect()
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.publisher.taken()
    }

    /// `(incident id, status, severity, deployment id)` of every Incident notification.
    pub fn incident_notifications(&self) -> Vec<(String, String, String, Option<String>)> {
        self.notifications()
            .into_iter()
            .filter_map(|n| match n.body {
                NotificationBody::Incident {
                    incident_id,
                    status,
                    severity,
                    deployment_id,
                    ..
                } => Some((incident_id, status, severity, deployment_id)),
                _ => None,
            })
            .collect()
    }

    /// `(deployment id, event)` of every Deployment notification.
    pub fn deployment_events(&self) -> Vec<(String, String)> {
        self.notifications()
            .into_iter()
            .filter_map(|n| match n.body {
                NotificationBody::Deployment { deployment, event } => Some((deployment.id, event)),
                _ => None,
            })
            .collect()
    }

    /// `(summary, page)` of every Job notification.
    pub fn jobs(&self) -> Vec<(String, bool)> {
        self.notifications()
            .into_iter()
            .filter_map(|n| match n.body {
                NotificationBody::Job { summary, page, .. } => Some((summary, page)),
                _ => None,
            })
            .collect()
    }
}

/// A POST to an alert route, with an optional Authorization header.
pub fn alert_request(
    route: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> http::Request<Bytes> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(route)
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    builder.body(Bytes::from(body)).unwrap()
}

/// A `deployment_protection_rule` / `requested` delivery for a GitHub App installation.
pub fn protection_rule(environment: &str, sha: &str, run_id: u64) -> Value {
    json!({
        "action": "requested",
        "environment": environment,
        "event": "push",
        "ref": "main",
        "sha": sha,
        "deployment_callback_url": format!("https://api.github.com/repos/{REPO}/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": INSTALLATION_ID },
        "sender": { "login": "octocat" },
        "repository": { "full_name": REPO },
    })
}

/// A `deployment_status` / `created` delivery.
pub fn deployment_status(
    github_id: u64,
    environment: &str,
    sha: &str,
    run_id: Option<u64>,
    state: &str,
    payload: Value,
) -> Value {
    json!({
        "action": "created",
        "deployment_status": { "state": state, "description": format!("deploy {state}"), "environment": environment },
        "deployment": { "id": github_id, "sha": sha, "ref": "main", "environment": environment, "payload": payload },
        "repository": { "full_name": REPO },
        "workflow_run": run_id.map_or(Value::Null, |id| json!({ "id": id })),
    })
}

/// An Alertmanager v4 notification with one alert.
pub fn alertmanager(
    status: &str,
    fingerprint: &str,
    labels: Value,
    starts_at: Timestamp,
    ends_at: Option<Timestamp>,
) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"ApiHighErrorRate\"}",
        "status": status,
        "receiver": "shipgate",
        "groupLabels": {},
        "commonLabels": labels.clone(),
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": { "summary": "API 5xx ratio above 5%" },
            "startsAt": starts_at.to_string(),
            "endsAt": ends_at.map_or("0001-01-01T00:00:00Z".to_string(), |t| t.to_string()),
            "generatorURL": "http://prometheus.example.com/graph?g0.expr=errors",
            "fingerprint": fingerprint,
        }],
    })
}

pub fn labels(environment: &str, severity: &str, alertname: &str) -> Value {
    json!({ "alertname": alertname, "env": environment, "service": "api", "severity": severity })
}
