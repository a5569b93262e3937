//! Test harness for the GitHub webhook handler: real use cases on an in-memory SQLite store, a
//! manual clock, a recording publisher, and the real GitHub App client pointed at a wiremock
//! stand-in for api.github.com. Deliveries are signed exactly as GitHub signs them.

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
use shipgate::domain::deployment::Deployment;
use shipgate::service::Services;
use shipgate::store::{Item, ItemStore, Query, Repo};
use testkit::{ManualClock, RecordingPublisher, TestServices};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub use testkit::Reply;

pub const WEBHOOK_SECRET: &str = "test webhook secret, not used anywhere else";
pub const APP_ID: u64 = 31337;
pub const INSTALLATION_ID: u64 = 777;
pub const INSTALLATION_TOKEN: &str = "ghs_test_installation_token";
pub const REPO: &str = "octo-org/hello-world";

/// Monday 2 June 2025, 10:00 UTC: inside any sensible window, outside the example freeze.
pub fn start_time() -> Timestamp {
    "2025-06-02T10:00:00Z".parse().unwrap()
}

/// staging deploys at once; production needs staging first and two of three approvers.
pub const POLICY: &str = r#"
[identities]
U0APPROV1 = "alice-ops"
U0APPROV2 = "bob-sre"
U0APPROV3 = "carol-lead"

[environments.staging]
allowed_refs = ["main", "refs/heads/main", "refs/tags/v*"]
approvals_required = 0
verification_window = "10m"

[environments.production]
allowed_refs = ["main", "refs/heads/main", "refs/tags/v*"]
promotion_from = ["staging"]
approvals_required = 2
approvers = ["U0APPROV1", "U0APPROV2", "U0APPROV3"]
prevent_self_approval = true
approval_ttl = "4h"
verification_window = "15m"
"#;

pub fn data_path(name: &str) -> PathBuf {
    testkit::test_data("functions/github-webhook", name)
}

/// A copied fixture, as raw bytes (signatures are over the exact bytes).
pub fn fixture(name: &str) -> Vec<u8> {
    testkit::fixture("functions/github-webhook", name)
}

pub fn fixture_json(name: &str) -> Value {
    testkit::fixture_json("functions/github-webhook", name)
}

/// The GitHub App test key in `shared/tests/data`.
pub fn app_key_path(public: bool) -> PathBuf {
    testkit::github_app_key_path(public)
}

pub struct Harness {
    pub app: GitHubWebhook,
    /// The store under test: in-memory SQLite, or a DynamoDB table ([`Harness::on_dynamodb`]).
    pub store: Arc<dyn ItemStore>,
    pub repo: Repo,
    pub clock: ManualClock,
    pub publisher: RecordingPublisher,
    pub github: MockServer,
    deliveries: AtomicU64,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_policy(POLICY).await
    }

    pub async fn with_policy(policy_toml: &str) -> Harness {
        Harness::with_policy_on(policy_toml, None).await
    }

    /// The common policy on a fresh DynamoDB table (moto, started by `make test`).
    #[allow(dead_code)]
    pub async fn on_dynamodb() -> Harness {
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
        Harness::with_policy_on(POLICY, Some(Arc::new(store))).await
    }

    pub async fn with_policy_on(policy_toml: &str, store: Option<Arc<dyn ItemStore>>) -> Harness {
        let mut builder = TestServices::builder()
            .policy(policy_toml)
            .start(start_time())
            .app(APP_ID, INSTALLATION_ID, INSTALLATION_TOKEN);
        if let Some(store) = store {
            builder = builder.item_store(store);
        }
        let fakes = builder.build().await;
        let github = fakes.github;
        Mock::given(method("POST"))
            .and(path_regex(
                r"^/repos/[^/]+/[^/]+/actions/runs/[0-9]+/deployment_protection_rule$",
            ))
            .respond_with(ResponseTemplate::new(204))
            .mount(&github)
            .await;
        let app = GitHubWebhook::new(
            fakes.services,
            SecretString::from(WEBHOOK_SECRET.to_string()),
        );
        Harness {
            app,
            store: fakes.items,
            repo: fakes.repo,
            clock: fakes.clock,
            publisher: fakes.publisher,
            github,
            deliveries: AtomicU64::new(0),
        }
    }

    pub fn services(&self) -> &Services {
        &self.app.services
    }

    pub fn next_delivery(&self) -> String {
        format!(
            "delivery-{}",
            self.deliveries.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    /// Sends one delivery of `event`, correctly signed, with a fresh delivery id.
    pub async fn deliver(&self, event: &str, body: &[u8]) -> Reply {
        let delivery = self.next_delivery();
        self.deliver_as(event, &delivery, body).await
    }

    pub async fn deliver_json(&self, event: &str, body: &Value) -> Reply {
        self.deliver(event, &serde_json::to_vec(body).unwrap())
            .await
    }

    pub async fn deliver_as(&self, event: &str, delivery: &str, body: &[u8]) -> Reply {
        let req = testkit::github_delivery(event, delivery, WEBHOOK_SECRET, body);
        self.send(req).await
    }

    pub async fn send(&self, req: http::Request<Bytes>) -> Reply {
        Reply::from(github_webhook::handle(&self.app, req).await)
    }

    /// Every item in the store (a full scan).
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

    /// Every deployment record, whatever its environment.
    pub async fn deployments(&self) -> Vec<Deployment> {
        let mut deps = Vec::new();
        for item in self
            .all_items()
            .await
            .into_iter()
            .filter(|i| i.pk.starts_with("DEP#"))
        {
            let mut dep: Deployment = serde_json::from_str(&item.data).unwrap();
            dep.version = item.version;
            deps.push(dep);
        }
        deps
    }

    pub async fn deployment(&self, id: &str) -> Deployment {
        self.repo
            .get_deployment(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no deployment {id}"))
    }

    pub async fn partition(&self, pk: &str) -> Vec<Item> {
        self.store
            .query(Query::Partition {
                pk: pk.to_string(),
                sk_prefix: String::new(),
                descending: false,
                limit: None,
            })
            .await
            .unwrap()
    }

    /// The requests GitHub received, in order.
    pub async fn github_requests(&self) -> Vec<Request> {
        self.github.received_requests().await.unwrap_or_default()
    }

    /// Bodies of the protection-rule calls (reviews and status reports), in order.
    pub async fn protection_rule_calls(&self) -> Vec<(String, Value)> {
        self.github_requests()
            .await
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

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

pub fn signed(body: &[u8]) -> String {
    testkit::github_signature(WEBHOOK_SECRET, body)
}

/// A POST to the webhook route with the given headers.
pub fn request(headers: &[(&str, &str)], body: &[u8]) -> http::Request<Bytes> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri("/webhooks/github")
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Bytes::copy_from_slice(body)).unwrap()
}

/// A `deployment_protection_rule` delivery: the octokit fixture with a real callback URL,
/// top-level `sha`/`ref` and an installation, as github.com sends it to an App.
pub fn protection_rule(environment: &str, run_id: u64, sha: &str, git_ref: &str) -> Value {
    let mut p = fixture_json("deployment_protection_rule.requested.payload.json");
    p["environment"] = json!(environment);
    p["event"] = json!("push");
    p["sha"] = json!(sha);
    p["ref"] = json!(git_ref);
    p["deployment_callback_url"] = json!(format!(
        "https://api.github.com/repos/{REPO}/actions/runs/{run_id}/deployment_protection_rule"
    ));
    p["installation"] = json!({ "id": INSTALLATION_ID });
    p["repository"]["full_name"] = json!(REPO);
    p["sender"]["login"] = json!("octocat");
    p
}

/// A `deployment` / `created` delivery for a deployment an Actions run made.
pub fn deployment_created(
    github_id: u64,
    environment: &str,
    sha: &str,
    run_id: Option<u64>,
) -> Value {
    let mut p = fixture_json("deployment.payload.json");
    p["deployment"]["id"] = json!(github_id);
    p["deployment"]["environment"] = json!(environment);
    p["deployment"]["sha"] = json!(sha);
    p["deployment"]["ref"] = json!("main");
    p["repository"]["full_name"] = json!(REPO);
    p["workflow_run"] = run_id.map_or(Value::Null, |id| json!({ "id": id }));
    p
}

/// A `deployment_status` / `created` delivery.
pub fn deployment_status(
    github_id: u64,
    environment: &str,
    sha: &str,
    run_id: Option<u64>,
    state: &str,
) -> Value {
    let mut p = fixture_json("deployment_status.payload.json");
    p["deployment"]["id"] = json!(github_id);
    p["deployment"]["environment"] = json!(environment);
    p["deployment"]["sha"] = json!(sha);
    p["deployment"]["ref"] = json!("main");
    p["deployment_status"]["state"] = json!(state);
    p["deployment_status"]["environment"] = json!(environment);
    p["deployment_status"]["description"] = json!(format!("deploy {state}"));
    p["repository"]["full_name"] = json!(REPO);
    p["workflow_run"] = run_id.map_or(Value::Null, |id| json!({ "id": id }));
    p
}

/// Verifies an App JWT with the test key's public half and returns its header and claims.
pub fn verify_rs256(jwt: &str) -> Result<(Value, Value), String> {
    let pem =
        std::fs::read(app_key_path(true)).map_err(|e| format!("reading the public key: {e}"))?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| e.to_string())?;
    let header = serde_json::to_value(header).map_err(|e| e.to_string())?;
    Ok((header, data.claims))
}
