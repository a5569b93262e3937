//! Pre-deploy backups: an approved production deployment is let through to GitHub only after
//! the tables its policy names are backed up (embedded backend: real SQLite, real encrypted
//! backup files), with wiremock standing in for GitHub and checking the exact answers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use secrecy::SecretString;
use serde_json::{json, Value};
use shipgate::backup::Manifest;
use shipgate::domain::deployment::{CallbackState, Deployment, State};
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::jobs::backup::TableBackups;
use shipgate::jobs::predeploy::{self, PreDeployOutcome};
use shipgate::jobs::{self, BackupJobs, JobContext, JobError, JobName, JobOutcome, MetricSink};
use shipgate::notify::NotificationBody;
use shipgate::outbound::{http_client, GitHubApi, GitHubApp, GitHubAppConfig, RetryPolicy};
use shipgate::service::answer::answer_github;
use shipgate::service::predeploy::{PreDeployBackup, Status, MAX_ATTEMPTS, META_KIND};
use shipgate::service::Services;
use shipgate::store::{ItemStore, Repo};
use testkit::ManualClock;
use testkit::RecordingPublisher;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REPO: &str = "octo-org/hello-world";
const INSTALLATION: u64 = 77;
const RUN_ID: u64 = 9001;

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

struct Harness {
    ctx: JobContext,
    clock: ManualClock,
    published: RecordingPublisher,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn svc(&self) -> &Services {
        &self.ctx.services
    }

    async fn deployment(&self, id: &str) -> Deployment {
        self.svc()
            .repo
            .get_deployment(id)
            .await
            .expect("read")
            .expect("deployment exists")
    }

    async fn record(&self, id: &str) -> PreDeployBackup {
        self.svc()
            .repo
            .get_meta(META_KIND, id)
            .await
            .expect("read")
            .expect("a pre-deploy backup record")
    }

    /// Deployment ids of the pre-deploy backup requests published so far.
    fn requests(&self) -> Vec<String> {
        self.published
            .taken()
            .into_iter()
            .filter_map(|n| match n.body {
                NotificationBody::PreDeployBackup { deployment_id, .. } => Some(deployment_id),
                _ => None,
            })
            .collect()
    }

    /// `(ok, page)` of every pre-deploy backup job notice.
    fn job_notices(&self) -> Vec<(bool, bool)> {
        self.published
            .taken()
            .into_iter()
            .filter_map(|n| match n.body {
                NotificationBody::Job { job, ok, page, .. } if job == predeploy::JOB => {
                    Some((ok, page))
                }
                _ => None,
            })
            .collect()
    }
}

/// Fails every backup, as an unreachable bucket would.
struct FailingBackups;

#[async_trait]
impl BackupJobs for FailingBackups {
    async fn backup(&self, _svc: &Services) -> Result<JobOutcome, JobError> {
        Err(self.error())
    }
    async fn restore_drill(&self, _svc: &Services) -> Result<JobOutcome, JobError> {
        Err(self.error())
    }
    async fn backup_tables(
        &self,
        _svc: &Services,
        _tables: &[String],
    ) -> Result<Vec<Manifest>, JobError> {
        Err(self.error())
    }
}

impl FailingBackups {
    fn error(&self) -> JobError {
        JobError::Failed {
            job: JobName::Backup,
            message: "the backup bucket is unreachable".into(),
            source: None,
        }
    }
}

fn github_at(server: &MockServer) -> Arc<dyn GitHubApi> {
    let config = GitHubAppConfig {
        api_url: server.uri(),
        app_id: 4242,
        private_key: SecretString::from(include_str!("data/github-app-test-key.pem").to_owned()),
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

async fn github() -> MockServer {
    let server = MockServer::start().await;
    let expires_at = Timestamp::now() + SignedDuration::from_hours(1);
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{INSTALLATION}/access_tokens"
        )))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "token": "ghs_test",
            "expires_at": expires_at.to_string(),
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(review_path()))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

fn review_path() -> String {
    format!("/repos/{REPO}/actions/runs/{RUN_ID}/deployment_protection_rule")
}

/// The protection-rule answers GitHub received, in order.
async fn reviews(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == review_path())
        .map(|r| serde_json::from_slice(&r.body).expect("json body"))
        .collect()
}

/// The example policy (production: 2 approvals, `pre_deploy_backups = ["shipgate"]`), its
/// embedded backups over the same SQLite store, or `FailingBackups`.
fn harness(server: &MockServer, failing: bool) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ItemStore> = Arc::new(SqliteStore::in_memory().expect("sqlite"));
    let clock = ManualClock::new(t("2026-03-02T10:00:00Z"));
    let published = RecordingPublisher::default();
    let services = Services {
        repo: Repo::new(Arc::clone(&store)),
        policy: Arc::new(Policy::example().expect("example policy")),
        github: Some(github_at(server)),
        publisher: Arc::new(published.clone()),
        clock: Arc::new(clock.clone()),
        policy_source: None,
    };
    let backups: Arc<dyn BackupJobs> = if failing {
        Arc::new(FailingBackups)
    } else {
        Arc::new(
            TableBackups::embedded(dir.path(), store)
                .expect("embedded backups")
                .with_metrics(MetricSink::memory()),
        )
    };
    let ctx = JobContext::new(services, http_client().expect("http"))
        .with_metrics(MetricSink::memory())
        .with_backups(backups);
    Harness {
        ctx,
        clock,
        published,
        _dir: dir,
    }
}

/// An approved deployment whose GitHub answer is still to be sent, holding the lock.
async fn approved(h: &Harness, id: &str, environment: &str, kind: &str) {
    let now = h.svc().now();
    let mut dep: Deployment = serde_json::from_value(json!({
        "id": id,
        "repo": REPO,
        "environment": environment,
        "git_ref": "refs/heads/main",
        "sha": "8f2c1d0e4b6a79358c1d2e3f4a5b6c7d8e9f0a1b",
        "requester": "octocat",
        "kind": kind,
        "state": "approved",
        "version": 0,
        "created_at": now,
        "updated_at": now,
        "run_id": RUN_ID,
        "installation_id": INSTALLATION,
        "approvals_required": 2,
        "approvals": [
            {"approver": "U0APPROV1", "at": now},
            {"approver": "U0APPROV2", "at": now},
        ],
        "callback": "pending",
    }))
    .expect("deployment");
    h.svc()
        .repo
        .create_deployment(&mut dep, &[], now)
        .await
        .expect("create");
}

#[tokio::test]
async fn production_is_let_through_only_after_its_pre_deploy_backup() {
    let server = github().await;
    let h = harness(&server, false);
    approved(&h, "dep-prod", "production", "deploy").await;

    // The approval is recorded, but GitHub is not answered: the backup is requested instead.
    assert!(!answer_github(h.svc(), "dep-prod").await.expect("answer"));
    assert_eq!(h.requests(), vec!["dep-prod".to_string()]);
    let record = h.record("dep-prod").await;
    assert_eq!(record.status, Status::Requested);
    assert_eq!(record.tables, vec!["shipgate".to_string()]);
    assert_eq!(record.attempts, 1);
    assert!(reviews(&server).await.is_empty());

    // Asking again while the request is fresh neither answers nor requests again.
    assert!(!answer_github(h.svc(), "dep-prod").await.expect("answer"));
    assert_eq!(h.requests().len(), 1);

    let outcome = predeploy::run(&h.ctx, "dep-prod").await.expect("run");
    let PreDeployOutcome::BackedUp {
        backups,
        github_answered,
    } = outcome
    else {
        panic!("expected a backup, got {outcome:?}");
    };
    assert!(github_answered);
    assert_eq!(backups.len(), 1);
    assert!(
        backups[0].starts_with("shipgate.20260302T100000Z-"),
        "{backups:?}"
    );

    let record = h.record("dep-prod").await;
    assert_eq!(record.status, Status::Done);
    assert_eq!(record.backups, backups);

    let answers = reviews(&server).await;
    assert_eq!(
        answers,
        vec![json!({
            "environment_name": "production",
            "state": "approved",
            "comment": format!(
                "shipgate approved this deployment to production: approved by U0APPROV1, U0APPROV2; backed up first: {}",
                backups[0]
            ),
        })]
    );
    assert_eq!(
        h.deployment("dep-prod").await.callback,
        CallbackState::Answered
    );
    assert_eq!(h.job_notices(), vec![(true, false)]);

    // A redelivered request does not back up or answer again.
    let again = predeploy::run(&h.ctx, "dep-prod").await.expect("run");
    assert_eq!(
        again,
        PreDeployOutcome::BackedUp {
            backups: backups.clone(),
            github_answered: false
        }
    );
    assert_eq!(reviews(&server).await.len(), 1);
    assert_eq!(h.job_notices().len(), 1);
}

#[tokio::test]
async fn the_backup_written_before_a_deploy_verifies_and_is_listed() {
    let server = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ItemStore> = Arc::new(SqliteStore::in_memory().expect("sqlite"));
    let backups = TableBackups::embedded(dir.path(), Arc::clone(&store)).expect("backups");
    let svc = Services {
        repo: Repo::new(Arc::clone(&store)),
        policy: Arc::new(Policy::example().expect("example policy")),
        github: Some(github_at(&server)),
        publisher: Arc::new(RecordingPublisher::default()),
        clock: Arc::new(ManualClock::new(t("2026-03-02T10:00:00Z"))),
        policy_source: None,
    };
    let manifests = backups
        .backup_tables(&svc, &["shipgate".to_string()])
        .await
        .expect("backup");
    assert_eq!(manifests.len(), 1);
    let listed = shipgate::backup::operations::list(backups.deps(), Some("shipgate"))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].backup_id, manifests[0].backup_id);
    shipgate::backup::operations::verify(backups.deps(), &manifests[0].backup_id, None)
        .await
        .expect("verifies");

    let unknown = backups
        .backup_tables(&svc, &["orders".to_string()])
        .await
        .expect_err("not a backed-up table");
    assert!(
        unknown
            .to_string()
            .contains("orders is not one of the backed-up tables (shipgate)"),
        "{unknown}"
    );
}

#[tokio::test]
async fn a_backup_that_keeps_failing_cancels_the_deployment_and_tells_github_why() {
    let server = github().await;
    let h = harness(&server, true);
    approved(&h, "dep-prod", "production", "deploy").await;

    for attempt in 1..=MAX_ATTEMPTS {
        // The sweeper's retry of the pending answer (re)requests the backup...
        assert!(!answer_github(h.svc(), "dep-prod").await.expect("answer"));
        assert_eq!(h.record("dep-prod").await.attempts, attempt);
        assert_eq!(h.requests().len(), attempt as usize);
        // ...which fails.
        let outcome = predeploy::run(&h.ctx, "dep-prod").await.expect("run");
        assert!(
            matches!(&outcome, PreDeployOutcome::Failed { error } if error.contains("the backup bucket is unreachable")),
            "{outcome:?}"
        );
        if attempt < MAX_ATTEMPTS {
            // Straight away nothing is retried; a sweep later it is.
            assert!(!answer_github(h.svc(), "dep-prod").await.expect("answer"));
            assert_eq!(h.requests().len(), attempt as usize);
            assert_eq!(h.deployment("dep-prod").await.state, State::Approved);
            h.clock.advance(Duration::from_secs(60));
        }
    }

    let dep = h.deployment("dep-prod").await;
    assert_eq!(dep.state, State::Cancelled);
    assert_eq!(dep.callback, CallbackState::Answered);
    let reason = "the pre-deploy backup of shipgate did not succeed in 3 attempts (last error: backup failed: the backup bucket is unreachable)";
    assert_eq!(dep.reason.as_deref(), Some(reason));
    assert_eq!(
        reviews(&server).await,
        vec![json!({
            "environment_name": "production",
            "state": "rejected",
            "comment": format!("shipgate rejected this deployment to production: {reason}"),
        })]
    );
    assert_eq!(
        h.svc()
            .repo
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .expect("lock"),
        None
    );
    // Every failure paged; the cancellation was announced on the deployment's message.
    assert_eq!(h.job_notices(), vec![(false, true); 3]);
    assert!(h.published.taken().iter().any(|n| matches!(
        &n.body,
        NotificationBody::Deployment { event, .. } if event == "cancelled"
    )));
}

#[tokio::test]
async fn the_sweeper_requests_a_backup_again_when_nobody_picked_the_request_up() {
    let server = github().await;
    let h = harness(&server, false);
    approved(&h, "dep-prod", "production", "deploy").await;

    assert!(!answer_github(h.svc(), "dep-prod").await.expect("answer"));
    assert_eq!(h.requests().len(), 1);

    // The request was lost (say SNS delivery failed for good); a sweep three minutes later
    // finds the answer still pending and requests the backup again.
    h.clock.advance(Duration::from_secs(180));
    let report = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert!(report.ok, "{}", report.summary);
    assert_eq!(h.requests().len(), 2);
    assert_eq!(h.record("dep-prod").await.attempts, 2);
    assert!(reviews(&server).await.is_empty());

    // The second request is served: the deployment goes through.
    let outcome = predeploy::run(&h.ctx, "dep-prod").await.expect("run");
    assert!(
        matches!(
            outcome,
            PreDeployOutcome::BackedUp {
                github_answered: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(reviews(&server).await.len(), 1);
}

#[tokio::test]
async fn rollbacks_and_environments_without_pre_deploy_backups_are_not_held_up() {
    let server = github().await;
    let h = harness(&server, false);
    approved(&h, "dep-staging", "staging", "deploy").await;
    assert!(answer_github(h.svc(), "dep-staging").await.expect("answer"));
    approved(&h, "dep-rollback", "production", "rollback").await;
    assert!(answer_github(h.svc(), "dep-rollback")
        .await
        .expect("answer"));

    assert!(h.requests().is_empty());
    let states: Vec<String> = reviews(&server)
        .await
        .iter()
        .map(|r| format!("{} {}", r["environment_name"], r["state"]))
        .collect();
    assert_eq!(
        states,
        vec![
            "\"staging\" \"approved\"".to_string(),
            "\"production\" \"approved\"".to_string()
        ]
    );
    // Nothing was asked of the backup job.
    assert_eq!(
        predeploy::run(&h.ctx, "dep-staging").await.expect("run"),
        PreDeployOutcome::Nothing {
            why: "no pre-deploy backup was requested for this deployment".into()
        }
    );
}
