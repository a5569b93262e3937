//! The sweeper job over SQLite state, with wiremock standing in for GitHub's REST API and
//! checking the exact protection-rule answers it receives.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::json;
use shipgate::domain::deployment::{
    Approval, CallbackState, Deployment, Head, RollbackRequest, State,
};
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::jobs::{self, JobContext, JobName, MetricSink};
use shipgate::notify::NotificationBody;
use shipgate::outbound::{http_client, GitHubApi, GitHubApp, GitHubAppConfig, RetryPolicy};
use shipgate::service::Services;
use shipgate::store::{Condition, Repo, Write};
use testkit::ManualClock;
use testkit::RecordingPublisher;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REPO: &str = "octo-org/hello-world";
const INSTALLATION: u64 = 77;

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

struct Harness {
    ctx: JobContext,
    clock: ManualClock,
    published: RecordingPublisher,
}

fn github_at(server: &MockServer) -> Arc<dyn GitHubApi> {
    let config = GitHubAppConfig {
        api_url: server.uri(),
        app_id: 4242,
        private_key: SecretString::from(include_str!("data/github-app-test-key.pem").to_owned()),
    };
    // One attempt per call: the retry under test is the sweeper's, not the client's.
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

fn harness(now: Timestamp, github: Option<Arc<dyn GitHubApi>>) -> Harness {
    let clock = ManualClock::new(now);
    let published = RecordingPublisher::default();
    let services = Services {
        repo: Repo::new(Arc::new(SqliteStore::in_memory().expect("sqlite"))),
        policy: Arc::new(Policy::example().expect("example policy")),
        github,
        publisher: Arc::new(published.clone()),
        clock: Arc::new(clock.clone()),
        policy_source: None,
    };
    let ctx =
        JobContext::new(services, http_client().expect("http")).with_metrics(MetricSink::memory());
    Harness {
        ctx,
        clock,
        published,
    }
}

async fn mount_token(server: &MockServer) {
    let expires_at = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{INSTALLATION}/access_tokens"
        )))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "token": "ghs_test",
            "expires_at": expires_at.to_string(),
        })))
        .mount(server)
        .await;
}

fn review_path(run_id: u64) -> String {
    format!("/repos/{REPO}/actions/runs/{run_id}/deployment_protection_rule")
}

/// Built from JSON so fields other engineers add with defaults do not break these tests.
fn deployment(id: &str, env: &str, state: State, run_id: u64, at: Timestamp) -> Deployment {
    serde_json::from_value(json!({
        "id": id,
        "repo": REPO,
        "environment": env,
        "git_ref": "refs/heads/main",
        "sha": format!("{}0123456789abcdef", hex::encode(id)),
        "requester": "octocat",
        "kind": "deploy",
        "state": state,
        "version": 0,
        "created_at": at,
        "updated_at": at,
        "run_id": run_id,
        "installation_id": INSTALLATION,
    }))
    .expect("deployment")
}

async fn get(h: &Harness, id: &str) -> Deployment {
    h.ctx
        .services
        .repo
        .get_deployment(id)
        .await
        .expect("read")
        .expect("deployment exists")
}

#[tokio::test]
async fn expires_an_approval_request_past_its_ttl_and_rejects_it_on_github() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(review_path(4242)))
        .and(body_json(json!({
            "environment_name": "production",
            "state": "rejected",
            "comment": "shipgate rejected this deployment to production: approval expired after 4h"
        })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let start = t("2026-03-02T09:00:00Z");
    let h = harness(start, Some(github_at(&server)));
    let mut waiting = deployment(
        "dep-waiting",
        "production",
        State::AwaitingApproval,
        4242,
        start,
    );
    waiting.approvals_required = 2;
    waiting.approval_expires_at = Some(t("2026-03-02T13:00:00Z"));
    waiting.callback = CallbackState::Pending;
    h.ctx
        .services
        .repo
        .create_deployment(&mut waiting, &[], start)
        .await
        .expect("create");

    // One minute before the TTL runs out nothing happens.
    h.clock.set(t("2026-03-02T12:59:00Z"));
    let report = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert!(report.ok);
    assert_eq!(get(&h, "dep-waiting").await.state, State::AwaitingApproval);

    h.clock.set(t("2026-03-02T13:00:30Z"));
    let tick = "2026-03-02T13:00:00Z";
    let report = jobs::run_scheduled(&h.ctx, JobName::Sweeper, tick)
        .await
        .expect("sweep");
    assert!(report.ok, "{}", report.summary);
    assert_eq!(report.details["expired"], json!(["dep-waiting"]));
    assert_eq!(report.details["answered"], json!(["dep-waiting"]));

    let dep = get(&h, "dep-waiting").await;
    assert_eq!(dep.state, State::Expired);
    assert_eq!(dep.reason.as_deref(), Some("approval expired after 4h"));
    assert_eq!(dep.callback, CallbackState::Answered);
    assert_eq!(
        h.ctx
            .services
            .repo
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .expect("lock"),
        None
    );
    let expired_notices = h
        .published
        .taken()
        .into_iter()
        .filter(
            |n| matches!(&n.body, NotificationBody::Deployment { event, .. } if event == "expired"),
        )
        .count();
    assert_eq!(expired_notices, 1);

    // The same tick again changes nothing; a later tick finds nothing to do.
    let again = jobs::run_scheduled(&h.ctx, JobName::Sweeper, tick)
        .await
        .expect("sweep");
    assert!(again.duplicate);
    let later = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(later.summary, "nothing to sweep");
    let recorded: jobs::JobReport = h
        .ctx
        .services
        .repo
        .get_meta("job", "sweeper")
        .await
        .expect("meta")
        .expect("job result recorded");
    assert_eq!(recorded.summary, "nothing to sweep");
}

#[tokio::test]
async fn closes_a_quiet_verification_window_and_makes_the_deployment_last_known_good() {
    let start = t("2026-03-02T10:00:00Z");
    let h = harness(start, None);
    let mut verifying = deployment("dep-verify", "staging", State::Verifying, 1, start);
    verifying.verify_until = Some(t("2026-03-02T10:10:00Z"));
    h.ctx
        .services
        .repo
        .create_deployment(&mut verifying, &[], start)
        .await
        .expect("create");

    h.clock.set(t("2026-03-02T10:09:59Z"));
    jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(get(&h, "dep-verify").await.state, State::Verifying);

    h.clock.set(t("2026-03-02T10:10:00Z"));
    let report = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(report.details["verified"], json!(["dep-verify"]));
    assert_eq!(get(&h, "dep-verify").await.state, State::Succeeded);
    let repo = &h.ctx.services.repo;
    let heads = repo
        .heads(&testkit::scope(REPO, "staging"))
        .await
        .expect("heads");
    assert_eq!(
        heads.last_known_good.map(|h| h.deployment_id).as_deref(),
        Some("dep-verify")
    );
    assert_eq!(
        repo.lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .expect("lock"),
        None
    );
    let ok_in = repo
        .succeeded_in(
            REPO,
            &format!("{}0123456789abcdef", hex::encode("dep-verify")),
        )
        .await
        .expect("facts");
    assert!(ok_in.contains("staging"));
}

#[tokio::test]
async fn releases_a_lock_held_by_a_deployment_that_ended() {
    let now = t("2026-03-02T10:00:00Z");
    let h = harness(now, None);
    let repo = &h.ctx.services.repo;
    let mut dep = deployment("dep-crashed", "staging", State::Approved, 9, now);
    repo.create_deployment(&mut dep, &[], now)
        .await
        .expect("create");
    assert_eq!(
        repo.lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .expect("lock")
            .as_deref(),
        Some("dep-crashed")
    );
    // A crash between the decision and the lock release: the record says failed, the lock
    // is still held.
    let mut item = repo
        .store()
        .get("DEP#dep-crashed", "DEP")
        .await
        .expect("get")
        .expect("item");
    let mut data: serde_json::Value = serde_json::from_str(&item.data).expect("json");
    data["state"] = json!("failed");
    item.data = data.to_string();
    repo.store()
        .write(Write::Put {
            item,
            condition: Condition::None,
        })
        .await
        .expect("write");

    let report = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(report.details["locks_released"], json!(["staging"]));
    assert_eq!(
        repo.lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .expect("lock"),
        None
    );
}

#[tokio::test]
async fn retries_a_github_answer_that_failed_with_a_500_until_it_lands() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let expected = json!({
        "environment_name": "staging",
        "state": "approved",
        "comment": "shipgate approved this deployment to staging: policy checks passed (no checks configured)"
    });
    Mock::given(method("POST"))
        .and(path(review_path(31)))
        .and(body_json(expected.clone()))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;

    let now = t("2026-03-02T10:00:00Z");
    let h = harness(now, Some(github_at(&server)));
    let mut approved = deployment("dep-approved", "staging", State::Approved, 31, now);
    approved.callback = CallbackState::Pending;
    h.ctx
        .services
        .repo
        .create_deployment(&mut approved, &[], now)
        .await
        .expect("create");

    let first = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert!(!first.ok);
    assert_eq!(first.details["answered"], json!([]));
    assert_eq!(
        get(&h, "dep-approved").await.callback,
        CallbackState::Pending
    );
    // A failed sweep is announced, without paging.
    let job_notice = h.published.taken().into_iter().find_map(|n| match n.body {
        NotificationBody::Job { job, ok, page, .. } => Some((job, ok, page)),
        _ => None,
    });
    assert_eq!(job_notice, Some(("sweeper".to_string(), false, false)));

    Mock::given(method("POST"))
        .and(path(review_path(31)))
        .and(body_json(expected))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    h.clock.advance(Duration::from_secs(60));
    let second = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert!(second.ok, "{}", second.summary);
    assert_eq!(second.details["answered"], json!(["dep-approved"]));
    assert_eq!(
        get(&h, "dep-approved").await.callback,
        CallbackState::Answered
    );
}

#[tokio::test]
async fn every_run_emits_its_success_as_an_emf_metric() {
    let h = harness(t("2026-03-02T10:00:00Z"), None);
    jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    let lines = h.ctx.metrics.lines();
    let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
    assert_eq!(first["Job"], "sweeper");
    assert_eq!(first["JobSucceeded"], 1.0);
    assert_eq!(
        first["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Job"]])
    );
}

#[tokio::test]
async fn backup_jobs_without_backup_storage_fail_and_give_the_tick_back() {
    let h = harness(t("2026-03-02T10:00:00Z"), None);
    let err = jobs::run_scheduled(&h.ctx, JobName::Backup, "2026-03-02T10:00:00Z")
        .await
        .expect_err("not configured");
    assert!(err.to_string().contains("SHIPGATE_BACKUP_BUCKET"), "{err}");
    // The claim was released: a retry of the same tick runs (and fails) again.
    let again = jobs::run_scheduled(&h.ctx, JobName::Backup, "2026-03-02T10:00:00Z").await;
    assert!(again.is_err());
    let paged = h
        .published
        .taken()
        .into_iter()
        .filter(|n| matches!(&n.body, NotificationBody::Job { job, ok: false, page: true, .. } if job == "backup"))
        .count();
    assert_eq!(paged, 2);
}

/// A succeeded production deployment that runs now, with a manual rollback request that
/// expires at `expires_at` (1 of 2 approvals so far).
async fn running_with_rollback_request(
    h: &Harness,
    id: &str,
    at: Timestamp,
    expires_at: Timestamp,
) {
    let repo = &h.ctx.services.repo;
    let mut dep = deployment(id, "production", State::Succeeded, 31, at);
    dep.rollback_request = Some(RollbackRequest {
        target_sha: "aaaaaaa111".into(),
        target_ref: "main".into(),
        requested_by: "cli:ada".into(),
        requested_at: at,
        expires_at,
        approvals_required: 2,
        approvals: vec![Approval {
            approver: "U0APPROV1".into(),
            at,
        }],
        nonce: "rb-nonce".into(),
    });
    repo.create_deployment(&mut dep, &[], at)
        .await
        .expect("create");
    repo.set_head(
        &testkit::scope(REPO, "production"),
        Head {
            sha: dep.sha.to_string(),
            git_ref: dep.git_ref.clone(),
            deployment_id: id.into(),
            at,
            verify_until: None,
        },
        true,
    )
    .await
    .expect("head");
}

#[tokio::test]
async fn expires_a_rollback_request_past_its_ttl_and_says_so_in_slack() {
    let at = t("2026-03-02T10:00:00Z");
    let expires_at = t("2026-03-02T11:00:00Z");
    let h = harness(at, None);
    running_with_rollback_request(&h, "dep-running", at, expires_at).await;

    // Before the deadline the request stays.
    h.clock.advance(Duration::from_secs(3599));
    let early = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(early.details["rollback_requests_expired"], json!([]));
    assert!(get(&h, "dep-running").await.rollback_request.is_some());

    h.clock.advance(Duration::from_secs(1));
    let report = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(
        report.details["rollback_requests_expired"],
        json!(["dep-running"])
    );
    assert!(
        report.summary.contains("1 rollback requests expired"),
        "{}",
        report.summary
    );
    let after = get(&h, "dep-running").await;
    assert_eq!(
        (after.state, after.rollback_request),
        (State::Succeeded, None)
    );
    let expired_notices: Vec<String> = h
        .published
        .taken()
        .into_iter()
        .filter_map(|n| match n.body {
            NotificationBody::Deployment { deployment, event } => {
                Some(format!("{}:{event}", deployment.id))
            }
            _ => None,
        })
        .collect();
    assert_eq!(expired_notices, ["dep-running:rollback_request_expired"]);
    let audit = h
        .ctx
        .services
        .repo
        .audit_for_deployment("dep-running")
        .await
        .expect("audit");
    let last = audit.last().expect("an audit line");
    assert_eq!(
        (last.what.as_str(), last.actor.as_str(), last.why.as_str()),
        (
            "rollback_request_expired",
            "shipgate",
            "rollback to aaaaaaa requested by cli:ada expired with 1 of 2 approvals"
        )
    );

    // A second sweep finds nothing left to expire.
    let again = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(again.details["rollback_requests_expired"], json!([]));
}
