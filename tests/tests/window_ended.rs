//! A window that has ended is over: a verification window whose end has passed is closed by
//! the next reader of its deployment, not only by the periodic sweeper. Driven through the
//! GitHub webhook route on SQLite with a manual clock, and no sweep in between.
//!
//! The first two tests failed while only the sweeper closed windows: the request was refused
//! as locked, and production's promotion check did not see the sha as succeeded in staging.

#[path = "common/alert_webhook.rs"]
mod common;

use std::time::Duration;

use common::{alertmanager, labels, Harness, INSTALLATION_ID};
use serde_json::{json, Value};
use shipgate::domain::deployment::State;

const API: &str = "acme/api";
const A1: &str = "a1a1a1a111111111111111111111111111111111";
const A2: &str = "a2a2a2a222222222222222222222222222222222";

const POLICY: &str = r#"
[services]
api = "acme/api"

[environments.staging]
approvals_required = 0
verification_window = "10m"
rollback_on = ["critical"]
rollback = { method = "redeploy" }

[environments.production]
approvals_required = 0
promotion_from = ["staging"]
verification_window = "30m"
rollback_on = ["critical"]
rollback = { method = "redeploy" }
"#;

fn protection_rule(environment: &str, sha: &str, run_id: u64) -> Value {
    json!({
        "action": "requested",
        "environment": environment,
        "event": "push",
        "ref": "main",
        "sha": sha,
        "deployment_callback_url": format!("https://api.github.com/repos/{API}/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": INSTALLATION_ID },
        "sender": { "login": "octocat" },
        "repository": { "full_name": API },
    })
}

fn deployment_status(github_id: u64, environment: &str, sha: &str, run_id: u64) -> Value {
    json!({
        "action": "created",
        "deployment_status": { "state": "success", "description": "deploy success", "environment": environment },
        "deployment": { "id": github_id, "sha": sha, "ref": "main", "environment": environment, "payload": {} },
        "repository": { "full_name": API },
        "workflow_run": { "id": run_id },
    })
}

async fn request(h: &Harness, environment: &str, sha: &str, run: u64) -> common::Reply {
    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule(environment, sha, run),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
}

/// Gates and deploys: the deployment ends verifying. Returns its id.
async fn deploy(h: &Harness, environment: &str, sha: &str, run: u64) -> String {
    let reply = request(h, environment, sha, run).await;
    assert_eq!(reply.str("decision"), "approved", "{reply:?}");
    let id = reply.str("deployment_id").to_string();
    let status = deployment_status(run + 100_000, environment, sha, run);
    let reply = h.deliver("deployment_status", &status).await;
    assert_eq!(
        (reply.status, reply.str("state")),
        (200, "verifying"),
        "{reply:?}"
    );
    id
}

/// Moves the clock to 100 ms past the end of `id`'s verification window.
async fn just_after_window(h: &Harness, id: &str) {
    let until = h.deployment(id).await.verify_until.unwrap();
    let wait = h.now().duration_until(until).as_millis().max(0) as u64 + 100;
    h.clock.advance(Duration::from_millis(wait));
}

async fn a_request_100ms_after_the_previous_window_ended_is_not_refused(h: Harness) {
    let first = deploy(&h, "staging", A1, 11).await;

    // While the window is open the scope stays locked.
    h.advance_mins(5);
    let scope = testkit::scope(API, "staging");
    assert_eq!(
        h.repo.lock_holder(&scope).await.unwrap().as_deref(),
        Some(first.as_str())
    );

    just_after_window(&h, &first).await;
    let next = request(&h, "staging", A2, 13).await;
    assert_eq!(next.str("decision"), "approved", "{next:?}");

    // Closed exactly as the sweeper closes it: succeeded, last known good, lock passed on.
    assert_eq!(h.deployment(&first).await.state, State::Succeeded);
    let heads = h.repo.heads(&scope).await.unwrap();
    assert_eq!(
        heads.last_known_good.map(|g| g.deployment_id),
        Some(first.clone())
    );
    assert_eq!(
        h.repo.lock_holder(&scope).await.unwrap().as_deref(),
        Some(next.str("deployment_id"))
    );
    let succeeded: Vec<_> = h
        .deployment_events()
        .into_iter()
        .filter(|(id, event)| *id == first && event == "succeeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "{:?}", h.deployment_events());
}

async fn a_promotion_check_right_after_stagings_window_ended_sees_the_sha_as_succeeded(h: Harness) {
    let staging = deploy(&h, "staging", A1, 11).await;

    // Still verifying in staging: not yet promotable.
    let early = request(&h, "production", A1, 12).await;
    assert_eq!(early.str("decision"), "rejected", "{early:?}");

    just_after_window(&h, &staging).await;
    let promoted = request(&h, "production", A1, 13).await;
    assert_eq!(promoted.str("decision"), "approved", "{promoted:?}");
    assert_eq!(h.deployment(&staging).await.state, State::Succeeded);
    assert!(h
        .repo
        .succeeded_in(API, A1)
        .await
        .unwrap()
        .contains("staging"));
}

async fn an_alert_after_the_window_ended_closes_it_and_rolls_nothing_back(h: Harness) {
    let first = deploy(&h, "staging", A1, 11).await;
    just_after_window(&h, &first).await;

    let body = alertmanager(
        "firing",
        "fp-errors",
        labels("staging", "critical", "HighErrorRate"),
        h.now(),
        None,
    );
    let reply = h.post_alert("/webhooks/alertmanager", &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.count("rollbacks_started"), 0, "{reply:?}");

    assert_eq!(h.deployment(&first).await.state, State::Succeeded);
    let posted: Vec<_> = h
        .github_calls(&format!("/repos/{API}/deployments"))
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect();
    assert!(posted.is_empty(), "nothing to roll back: {posted:?}");
}

async fn readers_and_a_sweep_racing_on_an_ended_window_close_it_once(h: Harness) {
    let first = deploy(&h, "staging", A1, 11).await;
    just_after_window(&h, &first).await;

    let sources = shipgate::service::analysis::Sources::default();
    let (a, b, report) = tokio::join!(
        request(&h, "staging", A2, 12),
        request(&h, "staging", A2, 13),
        shipgate::jobs::sweeper::sweep(h.services(), &sources),
    );
    // One of the two requests takes the freed lock; the other waits behind that one.
    let mut decisions = [a.str("decision"), b.str("decision")];
    decisions.sort();
    assert_eq!(decisions, ["approved", "queued"], "{a:?} {b:?}");
    assert!(report.errors.is_empty(), "{report:?}");

    assert_eq!(h.deployment(&first).await.state, State::Succeeded);
    let succeeded = h
        .deployment_events()
        .into_iter()
        .filter(|(id, event)| *id == first && event == "succeeded")
        .count();
    assert_eq!(succeeded, 1, "{:?}", h.deployment_events());
    let passed = h
        .repo
        .audit_for_deployment(&first)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.to == Some(State::Succeeded))
        .count();
    assert_eq!(passed, 1);
}

async fn a_status_arriving_after_the_window_ended_finds_the_deployment_succeeded(h: Harness) {
    let first = deploy(&h, "staging", A1, 11).await;
    just_after_window(&h, &first).await;

    // GitHub repeats the final status: the window is closed first, the repeat changes nothing.
    let reply = h
        .deliver(
            "deployment_status",
            &deployment_status(100_011, "staging", A1, 11),
        )
        .await;
    assert_eq!(
        (reply.status, reply.str("state")),
        (200, "succeeded"),
        "{reply:?}"
    );
    assert_eq!(h.deployment(&first).await.state, State::Succeeded);
    let scope = testkit::scope(API, "staging");
    assert_eq!(h.repo.lock_holder(&scope).await.unwrap(), None);
}

// Each test runs on SQLite and on DynamoDB (moto).
mod sqlite {
    use super::*;

    #[tokio::test]
    async fn a_request_100ms_after_the_previous_window_ended_is_not_refused() {
        super::a_request_100ms_after_the_previous_window_ended_is_not_refused(
            Harness::build(POLICY, 201, common::ALERT_TOKEN).await,
        )
        .await;
    }
    #[tokio::test]
    async fn a_promotion_check_right_after_stagings_window_ended_sees_the_sha_as_succeeded() {
        super::a_promotion_check_right_after_stagings_window_ended_sees_the_sha_as_succeeded(
            Harness::build(POLICY, 201, common::ALERT_TOKEN).await,
        )
        .await;
    }
    #[tokio::test]
    async fn an_alert_after_the_window_ended_closes_it_and_rolls_nothing_back() {
        super::an_alert_after_the_window_ended_closes_it_and_rolls_nothing_back(
            Harness::build(POLICY, 201, common::ALERT_TOKEN).await,
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_and_a_sweep_racing_on_an_ended_window_close_it_once() {
        super::readers_and_a_sweep_racing_on_an_ended_window_close_it_once(
            Harness::build(POLICY, 201, common::ALERT_TOKEN).await,
        )
        .await;
    }
    #[tokio::test]
    async fn a_status_arriving_after_the_window_ended_finds_the_deployment_succeeded() {
        super::a_status_arriving_after_the_window_ended_finds_the_deployment_succeeded(
            Harness::build(POLICY, 201, common::ALERT_TOKEN).await,
        )
        .await;
    }
}

mod dynamodb {
    use super::*;

    #[tokio::test]
    async fn a_request_100ms_after_the_previous_window_ended_is_not_refused() {
        super::a_request_100ms_after_the_previous_window_ended_is_not_refused(
            Harness::build_on(
                POLICY,
                201,
                common::ALERT_TOKEN,
                Some(common::dynamodb_store().await),
            )
            .await,
        )
        .await;
    }
    #[tokio::test]
    async fn a_promotion_check_right_after_stagings_window_ended_sees_the_sha_as_succeeded() {
        super::a_promotion_check_right_after_stagings_window_ended_sees_the_sha_as_succeeded(
            Harness::build_on(
                POLICY,
                201,
                common::ALERT_TOKEN,
                Some(common::dynamodb_store().await),
            )
            .await,
        )
        .await;
    }
    #[tokio::test]
    async fn an_alert_after_the_window_ended_closes_it_and_rolls_nothing_back() {
        super::an_alert_after_the_window_ended_closes_it_and_rolls_nothing_back(
            Harness::build_on(
                POLICY,
                201,
                common::ALERT_TOKEN,
                Some(common::dynamodb_store().await),
            )
            .await,
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_and_a_sweep_racing_on_an_ended_window_close_it_once() {
        super::readers_and_a_sweep_racing_on_an_ended_window_close_it_once(
            Harness::build_on(
                POLICY,
                201,
                common::ALERT_TOKEN,
                Some(common::dynamodb_store().await),
            )
            .await,
        )
        .await;
    }
    #[tokio::test]
    async fn a_status_arriving_after_the_window_ended_finds_the_deployment_succeeded() {
        super::a_status_arriving_after_the_window_ended_finds_the_deployment_succeeded(
            Harness::build_on(
                POLICY,
                201,
                common::ALERT_TOKEN,
                Some(common::dynamodb_store().await),
            )
            .await,
        )
        .await;
    }
}
