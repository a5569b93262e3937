//! Reconciliation with GitHub, through the webhook route and the sweeper, on both stores
//! (SQLite; DynamoDB on moto), with the GitHub REST calls on a wiremock stand-in.
//!
//! A deployment approved or deploying holds its scope's lock until its final
//! `deployment_status` arrives. Each test loses that delivery: before reconciliation the lock
//! was held forever (the sweeper ignored these states); now the sweeper asks GitHub and
//! applies what it says, or fails the deployment after `deploy_timeout`.

#[macro_use]
#[path = "common/alert_webhook.rs"]
mod common;

use common::{Harness, INSTALLATION_ID};
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::notify::NotificationBody;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const API: &str = "acme/api";
const A1: &str = "a1a1a1a111111111111111111111111111111111";
const A2: &str = "a2a2a2a222222222222222222222222222222222";

const POLICY: &str = r#"
[services]
api = "acme/api"

[environments.staging]
approvals_required = 0
verification_window = "10m"
deploy_timeout = "30m"
rollback_on = ["critical"]
rollback = { method = "redeploy" }
"#;

fn protection_rule(sha: &str, run_id: u64) -> Value {
    json!({
        "action": "requested",
        "environment": "staging",
        "event": "push",
        "ref": "main",
        "sha": sha,
        "deployment_callback_url": format!("https://api.github.com/repos/{API}/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": INSTALLATION_ID },
        "sender": { "login": "octocat" },
        "repository": { "full_name": API },
    })
}

fn deployment_status(sha: &str, run_id: u64, state: &str) -> Value {
    json!({
        "action": "created",
        "deployment_status": { "state": state, "environment": "staging" },
        "deployment": { "id": run_id + 100_000, "sha": sha, "ref": "main", "environment": "staging", "payload": {} },
        "repository": { "full_name": API },
        "workflow_run": { "id": run_id },
    })
}

/// Gated and approved; with `started`, GitHub's `in_progress` arrived too. The final status
/// is never delivered.
async fn in_flight(h: &Harness, sha: &str, run_id: u64, started: bool) -> String {
    let reply = h
        .deliver("deployment_protection_rule", &protection_rule(sha, run_id))
        .await;
    assert_eq!(reply.str("decision"), "approved", "{reply:?}");
    if started {
        let moved = h
            .deliver(
                "deployment_status",
                &deployment_status(sha, run_id, "in_progress"),
            )
            .await;
        assert_eq!(moved.str("state"), "deploying", "{moved:?}");
    }
    reply.str("deployment_id").to_string()
}

async fn github_says_status(h: &Harness, github_id: u64, state: &str) {
    Mock::given(method("GET"))
        .and(path(format!(
            "/repos/{API}/deployments/{github_id}/statuses"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{ "state": state }])))
        .mount(&h.github)
        .await;
}

async fn lock_holder(h: &Harness) -> Option<String> {
    h.repo
        .lock_holder(&testkit::scope(API, "staging"))
        .await
        .unwrap()
}

async fn a_lost_success_is_asked_for_and_opens_the_window(h: Harness) {
    let id = in_flight(&h, A1, 11, true).await;
    github_says_status(&h, 100_011, "success").await;

    // Not yet due: nothing is asked.
    h.advance_mins(5);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert!(report.reconciled.is_empty(), "{report:?}");
    assert!(h.github_calls("/statuses").await.is_empty());

    h.advance_mins(6);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(report.reconciled, std::slice::from_ref(&id), "{report:?}");
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Verifying);
    let heads = h.repo.heads(&testkit::scope(API, "staging")).await.unwrap();
    assert_eq!(heads.current.map(|c| c.deployment_id), Some(id.clone()));
    let asked = h.github_calls("/statuses").await;
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].url.query(), Some("per_page=1"));
    assert_eq!(
        asked[0].headers["authorization"].to_str().unwrap(),
        format!("Bearer {}", common::INSTALLATION_TOKEN)
    );
}

async fn a_run_that_failed_without_a_status_frees_the_lock(h: Harness) {
    // Approved, but even the `deployment` and `in_progress` deliveries were lost.
    let id = in_flight(&h, A1, 12, false).await;
    h.github_says_run(API, 12, "Deploy", "completed", Some("failure"))
        .await;
    h.advance_mins(11);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(report.reconciled, std::slice::from_ref(&id), "{report:?}");
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Failed);
    assert_eq!(
        dep.reason.as_deref(),
        Some("workflow run 12 ended failure (the deployment's own status was lost)")
    );
    assert_eq!(lock_holder(&h).await, None);
    // The next deploy goes.
    let next = h
        .deliver("deployment_protection_rule", &protection_rule(A2, 13))
        .await;
    assert_eq!(next.str("decision"), "approved", "{next:?}");
}

async fn an_inactive_deployment_is_cancelled_and_a_cancelled_run_too(h: Harness) {
    let id = in_flight(&h, A1, 14, true).await;
    github_says_status(&h, 100_014, "inactive").await;
    h.advance_mins(11);
    shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Cancelled);
    assert!(
        dep.reason
            .as_deref()
            .is_some_and(|r| r.contains("inactive")),
        "{dep:?}"
    );
    assert_eq!(lock_holder(&h).await, None);

    let id = in_flight(&h, A2, 15, false).await;
    h.github_says_run(API, 15, "Deploy", "completed", Some("cancelled"))
        .await;
    h.advance_mins(11);
    shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(h.deployment(&id).await.state, State::Cancelled);
    assert_eq!(lock_holder(&h).await, None);
}

async fn github_saying_nothing_for_deploy_timeout_fails_it_and_tells_slack(h: Harness) {
    let id = in_flight(&h, A1, 16, true).await;
    github_says_status(&h, 100_016, "in_progress").await;
    h.github_says_run(API, 16, "Deploy", "in_progress", None)
        .await;

    h.advance_mins(20);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert!(report.deploys_timed_out.is_empty(), "{report:?}");
    assert_eq!(h.deployment(&id).await.state, State::Deploying);

    h.advance_mins(11);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(
        report.deploys_timed_out,
        std::slice::from_ref(&id),
        "{report:?}"
    );
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Failed);
    assert_eq!(
        dep.reason.as_deref(),
        Some("GitHub reported no end of this deployment within 30m (deploy_timeout): failed, lock released")
    );
    assert_eq!(lock_holder(&h).await, None);
    let told: Vec<_> = h
        .notifications()
        .into_iter()
        .filter_map(|n| match n.body {
            NotificationBody::Deployment { deployment, event } if deployment.id == id => {
                Some(event)
            }
            _ => None,
        })
        .collect();
    assert_eq!(told, ["approved", "deploying", "failed"]);
}

async fn a_rollback_whose_end_was_lost_is_asked_for_and_finishes(h: Harness) {
    // A1 is good; A2 verifies and draws a critical alert: shipgate rolls back through
    // GitHub deployment 7777, whose `success` is never delivered.
    Mock::given(method("POST"))
        .and(path(format!("/repos/{API}/deployments")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": 7777 })))
        .mount(&h.github)
        .await;
    in_flight(&h, A1, 21, true).await;
    h.deliver("deployment_status", &deployment_status(A1, 21, "success"))
        .await;
    h.advance_mins(11);
    sweep_ok(&h).await;
    let a2 = in_flight(&h, A2, 22, true).await;
    h.deliver("deployment_status", &deployment_status(A2, 22, "success"))
        .await;
    h.advance_mins(1);
    let labels = json!({ "alertname": "HighErrorRate", "env": "staging", "service": "api", "severity": "critical" });
    let firing = common::alertmanager("firing", "fp-rb", labels, h.now(), None);
    let reply = h.post_alert("/webhooks/alertmanager", &firing).await;
    assert_eq!(reply.count("rollbacks_started"), 1, "{reply:?}");
    assert_eq!(h.deployment(&a2).await.state, State::RollingBack);

    github_says_status(&h, 7777, "success").await;
    h.advance_mins(11);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(report.reconciled, std::slice::from_ref(&a2), "{report:?}");
    assert_eq!(h.deployment(&a2).await.state, State::RolledBack);
    assert_eq!(lock_holder(&h).await, None);
    let heads = h.repo.heads(&testkit::scope(API, "staging")).await.unwrap();
    assert_eq!(heads.current.map(|c| c.sha), Some(A1.to_string()));
}

async fn sweep_ok(h: &Harness) {
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert!(report.errors.is_empty(), "{report:?}");
}

on_both_stores!(
    super::POLICY;
    a_rollback_whose_end_was_lost_is_asked_for_and_finishes,
    a_lost_success_is_asked_for_and_opens_the_window,
    a_run_that_failed_without_a_status_frees_the_lock,
    an_inactive_deployment_is_cancelled_and_a_cancelled_run_too,
    github_saying_nothing_for_deploy_timeout_fails_it_and_tells_slack,
);
