//! The function's SNS side: a pre-deploy backup request from the notifications topic runs the
//! backup (embedded backend) and lets the approved deployment through to GitHub, once however
//! often SNS delivers it.

#[path = "common/scheduled_jobs.rs"]
mod common;

use std::sync::Arc;

use scheduled_jobs::{handle_invocation, pre_deploy_requests, Handled};
use serde_json::{json, Value};
use shipgate::domain::deployment::{CallbackState, Deployment};
use shipgate::domain::policy::EXAMPLE_POLICY;
use shipgate::jobs::backup::TableBackups;
use shipgate::jobs::predeploy::PreDeployOutcome;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::{github_at, mount_token, t, Harness, INSTALLATION, REPO};

fn sample() -> Value {
    let path = testkit::event_path("scheduled-jobs", "sns-pre-deploy-backup.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_sns_sample_asks_for_one_deployments_backup_and_schedule_inputs_are_not_sns() {
    assert_eq!(
        pre_deploy_requests(&sample()).expect("parses"),
        Some(vec!["dep-prod".to_string()])
    );
    assert_eq!(
        pre_deploy_requests(&json!({"job": "sweeper"})).expect("parses"),
        None
    );
    let garbled = json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "{not json"}}]});
    let err = pre_deploy_requests(&garbled).expect_err("garbled");
    assert_eq!(
        err.to_string(),
        "SNS record 0 does not carry a shipgate notification"
    );
}

#[tokio::test]
async fn an_sns_request_backs_up_and_approves_the_deployment_once() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let review = format!("/repos/{REPO}/actions/runs/31337/deployment_protection_rule");
    Mock::given(method("POST"))
        .and(path(review.clone()))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let now = t("2026-03-02T10:00:00Z");
    let mut h = Harness::new(EXAMPLE_POLICY, now, Some(github_at(&server)));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::clone(h.ctx.services.repo.store());
    let backups = TableBackups::embedded(dir.path(), store).expect("backups");
    h.ctx = h.ctx.clone().with_backups(Arc::new(backups));

    let mut dep: Deployment = serde_json::from_value(json!({
        "id": "dep-prod",
        "repo": REPO,
        "environment": "production",
        "git_ref": "refs/heads/main",
        "sha": "8f2c1d0e4b6a79358c1d2e3f4a5b6c7d8e9f0a1b",
        "requester": "octocat",
        "kind": "deploy",
        "state": "approved",
        "version": 0,
        "created_at": now,
        "updated_at": now,
        "run_id": 31337,
        "installation_id": INSTALLATION,
        "callback": "pending",
    }))
    .expect("deployment");
    let svc = &h.ctx.services;
    svc.repo
        .create_deployment(&mut dep, &[], now)
        .await
        .expect("create");
    // The approval path asked for the backup (what put the message on the topic).
    assert!(!shipgate::service::answer::answer_github(svc, "dep-prod")
        .await
        .expect("answer"));

    let first = handle_invocation(&h.ctx, &sample(), Some("req-1"))
        .await
        .expect("runs");
    let Handled::PreDeployBackups(outcomes) = first else {
        panic!("expected pre-deploy outcomes, got {first:?}");
    };
    assert!(
        matches!(&outcomes[..], [PreDeployOutcome::BackedUp { backups, github_answered: true }] if backups.len() == 1),
        "{outcomes:?}"
    );
    // SNS delivers again: nothing more happens (the mock expects exactly one answer).
    let second = handle_invocation(&h.ctx, &sample(), Some("req-2"))
        .await
        .expect("runs");
    assert!(
        matches!(&second, Handled::PreDeployBackups(o) if matches!(&o[..], [PreDeployOutcome::BackedUp { github_answered: false, .. }])),
        "{second:?}"
    );
    let dep = svc
        .repo
        .get_deployment("dep-prod")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(dep.callback, CallbackState::Answered);
    let bodies: Vec<Value> = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == review)
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["state"], "approved");
}
