//! Rollback drills against a wiremock GitHub: back to the previous good sha, forward to the
//! current one, each leg timed from its deployment statuses; a leg that never finishes times
//! the drill out with a page.

#[path = "common/scheduled_jobs.rs"]
mod common;

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use shipgate::domain::deployment::{Deployment, Head, State};
use shipgate::jobs::{self, JobName};
use shipgate::service::drill as rollback_drill;
use shipgate::service::lifecycle::{self, DeploymentStatus, LifecycleOutcome};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::{github_at, mount_token, t, Harness, INSTALLATION, REPO};

const POLICY: &str = r#"
[environments.staging]
verification_window = "10m"
rollback_drill = true

[environments.production]
promotion_from = ["staging"]
"#;

const OLD: &str = "aaaaaaa1111111111111111111111111111111111";
const CURRENT: &str = "bbbbbbb2222222222222222222222222222222222";

fn succeeded(id: &str, sha: &str, at: Timestamp) -> Deployment {
    serde_json::from_value(json!({
        "id": id,
        "repo": REPO,
        "environment": "staging",
        "git_ref": "refs/heads/main",
        "sha": sha,
        "requester": "octocat",
        "kind": "deploy",
        "state": State::Succeeded,
        "version": 0,
        "created_at": at,
        "updated_at": at,
        "installation_id": INSTALLATION,
    }))
    .expect("deployment")
}

async fn seed(h: &Harness) {
    let repo = &h.svc().repo;
    for (id, sha, at) in [
        ("dep-old", OLD, t("2026-03-01T10:00:00Z")),
        ("dep-current", CURRENT, t("2026-03-02T10:00:00Z")),
    ] {
        let mut d = succeeded(id, sha, at);
        repo.create_deployment(&mut d, &[], at)
            .await
            .expect("create");
        let head = Head {
            sha: sha.into(),
            git_ref: "refs/heads/main".into(),
            deployment_id: id.into(),
            at,
            verify_until: None,
        };
        repo.set_head(&testkit::scope(REPO, "staging"), head, true)
            .await
            .expect("head");
    }
}

async fn mount_leg(server: &MockServer, sha: &str, leg: &str, id: u64) {
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/deployments")))
        .and(body_partial_json(json!({
            "ref": sha,
            "environment": "staging",
            "auto_merge": false,
            "required_contexts": [],
            "payload": {"shipgate_drill_leg": leg}
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": id})))
        .expect(1)
        .mount(server)
        .await;
}

fn status(id: u64, sha: &str, state: &str) -> DeploymentStatus {
    DeploymentStatus {
        github_deployment_id: id,
        repo: REPO.parse().unwrap(),
        environment: "staging".parse().unwrap(),
        sha: sha.parse().unwrap(),
        git_ref: sha.into(),
        state: state.into(),
        description: None,
        run_id: None,
        rollback_of: None,
    }
}

#[tokio::test]
async fn a_drill_rolls_back_and_forward_and_reports_how_long_each_leg_took() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    mount_leg(&server, OLD, "rollback", 9001).await;
    mount_leg(&server, CURRENT, "restore", 9002).await;
    let h = Harness::new(POLICY, t("2026-03-03T09:00:00Z"), Some(github_at(&server)));
    seed(&h).await;

    let report = jobs::run(&h.ctx, JobName::RollbackDrill)
        .await
        .expect("runs");
    assert!(report.ok, "{}", report.summary);
    assert_eq!(report.details["environments"][0]["result"], "started");
    let drill_id = report.details["environments"][0]["drill"]["id"]
        .as_str()
        .expect("drill id")
        .to_string();

    // GitHub reports progress and then success of the rollback leg three minutes later.
    h.clock.advance(Duration::from_secs(60));
    let progress = lifecycle::deployment_status(h.svc(), &status(9001, OLD, "in_progress"))
        .await
        .expect("status");
    assert_eq!(progress, LifecycleOutcome::Untracked);
    h.clock.advance(Duration::from_secs(120));
    lifecycle::deployment_status(h.svc(), &status(9001, OLD, "success"))
        .await
        .expect("status");
    // A redelivered success starts nothing more (the restore mock expects one call).
    lifecycle::deployment_status(h.svc(), &status(9001, OLD, "success"))
        .await
        .expect("status");

    h.clock.advance(Duration::from_secs(120));
    lifecycle::deployment_status(h.svc(), &status(9002, CURRENT, "success"))
        .await
        .expect("status");

    let (drill, _) = rollback_drill::load(h.svc(), &testkit::scope(REPO, "staging"))
        .await
        .expect("load")
        .expect("drill");
    assert_eq!(drill.id, drill_id);
    assert_eq!(drill.status, rollback_drill::DrillStatus::Passed);
    let seconds: Vec<Option<f64>> = drill.legs.iter().map(|l| l.seconds).collect();
    assert_eq!(seconds, vec![Some(180.0), Some(120.0)]);
    assert_eq!(
        h.job_notices().last().cloned(),
        Some((
            "rollback-drill".to_string(),
            true,
            false,
            "rollback drill passed in staging: rolled back to aaaaaaa in 3m 0s, restored bbbbbbb in 2m 0s".to_string()
        ))
    );
    // The drill moved no gated deployment and no head.
    let repo = &h.svc().repo;
    let current = repo
        .get_deployment("dep-current")
        .await
        .expect("read")
        .expect("dep");
    assert_eq!(current.state, State::Succeeded);
    let heads = repo
        .heads(&testkit::scope(REPO, "staging"))
        .await
        .expect("heads");
    assert_eq!(heads.current.map(|h| h.sha).as_deref(), Some(CURRENT));
    let recorded: jobs::JobReport = repo
        .get_meta("job", "rollback-drill")
        .await
        .expect("meta")
        .expect("recorded");
    assert!(recorded.ok);
}

#[tokio::test]
async fn a_leg_without_a_final_status_times_the_drill_out_and_pages() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    mount_leg(&server, OLD, "rollback", 9001).await;
    let h = Harness::new(POLICY, t("2026-03-03T09:00:00Z"), Some(github_at(&server)));
    seed(&h).await;
    jobs::run(&h.ctx, JobName::RollbackDrill)
        .await
        .expect("runs");

    // A second drill tick while this one runs does nothing.
    let again = jobs::run(&h.ctx, JobName::RollbackDrill)
        .await
        .expect("runs");
    assert_eq!(again.details["environments"][0]["result"], "skipped");

    h.clock.advance(Duration::from_secs(29 * 60));
    let early = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(early.details["drills_timed_out"], json!([]));

    h.clock.advance(Duration::from_secs(60));
    let sweep = jobs::run(&h.ctx, JobName::Sweeper).await.expect("sweep");
    assert_eq!(
        sweep.details["drills_timed_out"].as_array().map(Vec::len),
        Some(1)
    );
    let (drill, _) = rollback_drill::load(h.svc(), &testkit::scope(REPO, "staging"))
        .await
        .expect("load")
        .expect("drill");
    assert_eq!(drill.status, rollback_drill::DrillStatus::TimedOut);
    let notice = h.job_notices().last().cloned().expect("announced");
    assert_eq!(
        notice,
        (
            "rollback-drill".to_string(),
            false,
            true,
            "rollback drill timed out in staging: the rollback deployment 9001 got no final status within 30m 0s".to_string()
        )
    );
    // A status arriving after the timeout changes nothing.
    lifecycle::deployment_status(h.svc(), &status(9001, OLD, "success"))
        .await
        .expect("status");
    let (after, _) = rollback_drill::load(h.svc(), &testkit::scope(REPO, "staging"))
        .await
        .expect("load")
        .expect("drill");
    assert_eq!(after.status, rollback_drill::DrillStatus::TimedOut);
}

#[tokio::test]
async fn an_environment_with_one_good_version_has_nothing_to_roll_back_to() {
    let h = Harness::new(POLICY, t("2026-03-03T09:00:00Z"), None);
    let repo = &h.svc().repo;
    let at = t("2026-03-02T10:00:00Z");
    let mut d = succeeded("dep-only", CURRENT, at);
    repo.create_deployment(&mut d, &[], at)
        .await
        .expect("create");
    let head = Head {
        sha: CURRENT.into(),
        git_ref: "refs/heads/main".into(),
        deployment_id: "dep-only".into(),
        at,
        verify_until: None,
    };
    repo.set_head(&testkit::scope(REPO, "staging"), head, true)
        .await
        .expect("head");
    let report = jobs::run(&h.ctx, JobName::RollbackDrill)
        .await
        .expect("runs");
    assert!(report.ok);
    assert_eq!(
        report.summary,
        "rollback drill skipped in staging: no earlier good version to roll back to"
    );
}
