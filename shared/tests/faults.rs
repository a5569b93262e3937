//! Fault injection: the state store failing, timing out or losing its answers mid-transition,
//! and GitHub answering 500, 429 and hanging. Every scenario ends by checking where things
//! really are: the stored deployments, their audit logs replayed through `next_state`, the
//! environment locks, and the exact requests the GitHub fake received.
//!
//! The inbound edge ([`harness::inbound`]) is the claim → use case → release-on-retryable
//! sequence every webhook handler runs; an `Err` from it is the 500 that makes GitHub, Slack or
//! Alertmanager deliver the same event again, which the tests then do.

#[path = "faults/harness.rs"]
mod harness;
#[path = "faults/store.rs"]
mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::{
    assert_history_from, assert_history_is_legal, assert_locks_are_consistent,
    github_accepts_reviews, github_creates_deployments, inbound, one_attempt, protection_rule,
    Delivery, World, INSTALLATION, REPO,
};
use serde_json::json;
use shipgate::domain::deployment::{Deployment, Head, State};
use shipgate::jobs::sweeper;
use shipgate::outbound::RetryPolicy;
use shipgate::service::analysis::Sources;
use shipgate::service::approvals::{self, ClickOutcome, GitHubAnswer};
use shipgate::service::gate::{self, GateOutcome, ProtectionRuleRequest};
use shipgate::service::incidents::{self, AlertSignal, AlertStatus};
use shipgate::service::lifecycle::{self, DeploymentStatus, LifecycleOutcome};
use shipgate::service::ServiceError;
use store::{Fault, Op, Rule};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const GOOD_SHA: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";

async fn gate_delivery(
    w: &World,
    delivery: &str,
    req: &ProtectionRuleRequest,
) -> Result<Delivery<GateOutcome>, ServiceError> {
    inbound(&w.svc, "github", delivery, || gate::request(&w.svc, req)).await
}

/// An Approve click; `action_ts` is what makes one click distinct from another in Slack.
async fn approve_click(
    w: &World,
    dep: &Deployment,
    user: &str,
    action_ts: &str,
) -> Result<Delivery<ClickOutcome>, ServiceError> {
    let nonce = dep.button_nonce.clone().unwrap_or_default();
    let key = format!("{user}:{action_ts}:{}:{nonce}", dep.id);
    inbound(&w.svc, "slack-click", &key, || {
        approvals::approve(&w.svc, &dep.id, &nonce, user)
    })
    .await
}

/// A production deployment awaiting two approvals, gated without faults.
async fn awaiting(w: &World, run_id: u64) -> Deployment {
    let req = protection_rule("production", run_id, SHA);
    let outcome = gate_delivery(w, &format!("gate-{run_id}"), &req)
        .await
        .expect("gate")
        .processed()
        .expect("fresh delivery");
    let GateOutcome::AwaitingApproval { deployment_id, .. } = outcome else {
        panic!("expected an approval request, got {outcome:?}");
    };
    w.deployment(&deployment_id).await
}

/// Delivers like a sender that redelivers on 500 and stops at the first 2xx.
async fn until_acknowledged<T, F, Fut>(mut send: F) -> Vec<Result<Delivery<T>, String>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Delivery<T>, ServiceError>>,
{
    let mut seen = Vec::new();
    for _ in 0..4 {
        match send().await {
            Ok(d) => {
                seen.push(Ok(d));
                break;
            }
            Err(e) => seen.push(Err(e.to_string())),
        }
    }
    seen
}

fn approved_comment(approvers: &str) -> String {
    format!("shipgate approved this deployment to production: approved by {approvers}")
}

// ---------------------------------------------------------------------------------------
// 1. Gate request → approvals → GitHub answer, with the store failing mid-transition.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_gate_decision_that_landed_but_reported_failure_is_gated_once_on_redelivery() {
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    w.store
        .add(Rule::nth(Op::Transact, 1, Fault::LandThenFail).on_keys("DEP#"));
    let req = protection_rule("production", 501, SHA);

    let first = gate_delivery(&w, "delivery-501", &req).await;
    assert!(first.is_err(), "the lost answer is a 500: {first:?}");
    assert!(w.protection_rule_calls().await.is_empty());

    let again = gate_delivery(&w, "delivery-501", &req)
        .await
        .expect("redelivery")
        .processed()
        .expect("the failed delivery's claim was given back");
    let GateOutcome::AlreadyGated {
        deployment_id,
        state: State::AwaitingApproval,
    } = again
    else {
        panic!("the stored decision stands: {again:?}");
    };
    let third = gate_delivery(&w, "delivery-501", &req)
        .await
        .expect("third");
    assert_eq!(third, Delivery::Duplicate);

    let deployments = w.deployments("production").await;
    assert_eq!(deployments.len(), 1, "decided once: {deployments:?}");
    let dep = &deployments[0];
    assert_eq!(dep.id, deployment_id);
    assert_eq!(
        assert_history_is_legal(w.repo(), dep).await,
        [State::Requested, State::AwaitingApproval]
    );
    assert_eq!(
        w.repo()
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .expect("lock"),
        Some(deployment_id)
    );
    // GitHub heard exactly one status comment, from the redelivery.
    assert_eq!(
        w.protection_rule_calls().await,
        [json!({
            "environment_name": "production",
            "comment": "shipgate: waiting for 2 approval(s) in Slack (0 so far)"
        })]
    );
    assert_locks_are_consistent(&w).await;
}

#[tokio::test]
async fn an_approval_request_whose_first_answer_was_lost_is_still_announced_to_slack() {
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    w.store
        .add(Rule::nth(Op::Transact, 1, Fault::LandThenFail).on_keys("DEP#"));
    let req = protection_rule("production", 502, SHA);
    let deliveries = until_acknowledged(|| gate_delivery(&w, "delivery-502", &req)).await;
    let deployments = w.deployments("production").await;
    assert_eq!(deployments.len(), 1, "{deliveries:?}");
    let dep = &deployments[0];
    assert_eq!(dep.state, State::AwaitingApproval);
    // Without this notification no Slack message with Approve / Reject buttons is ever
    // posted, and the request can only expire.
    assert!(
        w.announced(&dep.id, "approval_requested") >= 1,
        "the approval request {} is stored, but no approval_requested notification was published (deliveries: {deliveries:?})",
        dep.id
    );
}

#[tokio::test]
async fn a_quorum_click_whose_save_failed_counts_once_when_slack_retries_it() {
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    let dep = awaiting(&w, 503).await;
    let first = approve_click(&w, &dep, "U0APPROV1", "1717322400.000100")
        .await
        .expect("first click");
    assert!(matches!(
        first,
        Delivery::Processed(ClickOutcome::Progress {
            have: 1,
            need: 2,
            ..
        })
    ));

    w.store
        .add(Rule::nth(Op::Transact, 1, Fault::Fail).on_keys(&format!("DEP#{}", dep.id)));
    let failed = approve_click(&w, &dep, "U0APPROV2", "1717322460.000200").await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(w.reviews().await.is_empty());

    let retried = approve_click(&w, &dep, "U0APPROV2", "1717322460.000200")
        .await
        .expect("Slack's retry");
    let Delivery::Processed(ClickOutcome::Approved {
        approvers, github, ..
    }) = retried
    else {
        panic!("the retried click completes the quorum: {retried:?}");
    };
    assert_eq!(approvers, ["U0APPROV1", "U0APPROV2"]);
    assert_eq!(github, GitHubAnswer::Answered);
    let repeat = approve_click(&w, &dep, "U0APPROV2", "1717322460.000200")
        .await
        .expect("repeat");
    assert_eq!(repeat, Delivery::Duplicate);

    let stored = w.deployment(&dep.id).await;
    let who: Vec<&str> = stored
        .approvals
        .iter()
        .map(|a| a.approver.as_str())
        .collect();
    assert_eq!(who, ["U0APPROV1", "U0APPROV2"]);
    assert_eq!(
        stored.callback,
        shipgate::domain::deployment::CallbackState::Answered
    );
    assert_eq!(
        assert_history_is_legal(w.repo(), &stored).await,
        [State::Requested, State::AwaitingApproval, State::Approved]
    );
    assert_eq!(
        w.reviews().await,
        [json!({
            "environment_name": "production",
            "state": "approved",
            "comment": approved_comment("U0APPROV1, U0APPROV2")
        })]
    );
    assert_eq!(w.announced(&dep.id, "approved"), 1);
    // A sweep finds nothing left to answer.
    let report = sweeper::sweep(&w.svc, &Sources::default()).await;
    assert!(report.answered.is_empty(), "{report:?}");
    assert_eq!(w.reviews().await.len(), 1);
    assert_locks_are_consistent(&w).await;
}

#[tokio::test]
async fn a_quorum_click_whose_save_landed_but_reported_failure_is_answered_once_by_the_sweeper() {
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    let dep = awaiting(&w, 504).await;
    approve_click(&w, &dep, "U0APPROV1", "1717322400.000100")
        .await
        .expect("first click");

    w.store
        .add(Rule::nth(Op::Transact, 1, Fault::LandThenFail).on_keys(&format!("DEP#{}", dep.id)));
    let deliveries =
        until_acknowledged(|| approve_click(&w, &dep, "U0APPROV2", "1717322460.000200")).await;
    assert!(deliveries[0].is_err(), "{deliveries:?}");

    let stored = w.deployment(&dep.id).await;
    assert_eq!(stored.state, State::Approved);
    assert_eq!(stored.approvals.len(), 2, "no approval counted twice");
    let answered_by_click = w.reviews().await.len();
    assert!(answered_by_click <= 1);

    w.clock.advance(Duration::from_secs(60));
    let report = sweeper::sweep(&w.svc, &Sources::default()).await;
    assert!(report.errors.is_empty(), "{report:?}");
    let again = sweeper::sweep(&w.svc, &Sources::default()).await;
    assert!(again.answered.is_empty(), "{again:?}");

    assert_eq!(
        w.reviews().await,
        [json!({
            "environment_name": "production",
            "state": "approved",
            "comment": approved_comment("U0APPROV1, U0APPROV2")
        })],
        "GitHub is answered exactly once"
    );
    let stored = w.deployment(&dep.id).await;
    assert_eq!(
        stored.callback,
        shipgate::domain::deployment::CallbackState::Answered
    );
    assert_eq!(
        assert_history_is_legal(w.repo(), &stored).await,
        [State::Requested, State::AwaitingApproval, State::Approved]
    );
    assert_locks_are_consistent(&w).await;
}

#[tokio::test]
async fn an_approval_whose_save_lost_its_answer_is_still_announced() {
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    let dep = awaiting(&w, 505).await;
    approve_click(&w, &dep, "U0APPROV1", "1717322400.000100")
        .await
        .expect("first click");
    w.store
        .add(Rule::nth(Op::Transact, 1, Fault::LandThenFail).on_keys(&format!("DEP#{}", dep.id)));
    let deliveries =
        until_acknowledged(|| approve_click(&w, &dep, "U0APPROV2", "1717322460.000200")).await;
    sweeper::sweep(&w.svc, &Sources::default()).await;
    assert_eq!(w.deployment(&dep.id).await.state, State::Approved);
    // Otherwise the Slack message keeps showing Approve / Reject buttons for a decided
    // deployment until some later event re-renders it.
    assert!(
        w.announced(&dep.id, "approved") >= 1,
        "{} is approved but no `approved` notification was published (deliveries: {deliveries:?})",
        dep.id
    );
}

#[tokio::test]
async fn a_lost_callback_save_repeats_the_same_answer_never_a_different_one() {
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    let dep = awaiting(&w, 506).await;
    approve_click(&w, &dep, "U0APPROV1", "1717322400.000100")
        .await
        .expect("first click");
    // The quorum save goes through; the save marking GitHub answered (the next one) fails.
    w.store
        .add(Rule::nth(Op::Transact, 2, Fault::Fail).on_keys(&format!("DEP#{}", dep.id)));
    let click = approve_click(&w, &dep, "U0APPROV2", "1717322460.000200")
        .await
        .expect("the decision is recorded");
    assert!(
        matches!(
            click,
            Delivery::Processed(ClickOutcome::Approved {
                github: GitHubAnswer::Pending,
                ..
            })
        ),
        "{click:?}"
    );
    assert_eq!(
        w.deployment(&dep.id).await.callback,
        shipgate::domain::deployment::CallbackState::Pending
    );

    // GitHub has the answer; whoever sent it still holds the answer's lease, so a sweep now
    // sends nothing. Once the lease has run out, the sweep repeats it.
    assert!(sweeper::sweep(&w.svc, &Sources::default())
        .await
        .answered
        .is_empty());
    assert_eq!(w.reviews().await.len(), 1);
    w.clock.advance(std::time::Duration::from_secs(121));
    let report = sweeper::sweep(&w.svc, &Sources::default()).await;
    assert_eq!(report.answered, std::slice::from_ref(&dep.id));
    // At-least-once towards GitHub: the answer may repeat, and every copy says the same.
    let want = json!({
        "environment_name": "production",
        "state": "approved",
        "comment": approved_comment("U0APPROV1, U0APPROV2")
    });
    assert_eq!(w.reviews().await, [want.clone(), want]);
    assert!(sweeper::sweep(&w.svc, &Sources::default())
        .await
        .answered
        .is_empty());
    assert_eq!(w.reviews().await.len(), 2);
}

#[tokio::test]
async fn a_delivery_claim_that_landed_but_reported_failure_does_not_swallow_the_event() {
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    w.store
        .add(Rule::nth(Op::Write, 1, Fault::LandThenFail).on_keys("IDEM#github#"));
    let req = protection_rule("production", 507, SHA);
    let deliveries = until_acknowledged(|| gate_delivery(&w, "delivery-507", &req)).await;
    assert!(
        matches!(deliveries.last(), Some(Ok(_))),
        "GitHub got a 2xx in the end: {deliveries:?}"
    );
    let deployments = w.deployments("production").await;
    assert_eq!(
        deployments.len(),
        1,
        "the delivery was acknowledged but never gated: {deliveries:?}"
    );
}

#[tokio::test]
async fn a_delivery_whose_processing_and_claim_release_both_failed_is_processed_on_redelivery() {
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    // A short store outage: the decision's write fails, and so does giving the claim back.
    w.store
        .add(Rule::nth(Op::Transact, 1, Fault::Fail).on_keys("DEP#"));
    w.store
        .add(Rule::nth(Op::Write, 2, Fault::Fail).on_keys("IDEM#github#"));
    let req = protection_rule("production", 508, SHA);
    let deliveries = until_acknowledged(|| gate_delivery(&w, "delivery-508", &req)).await;
    assert!(matches!(deliveries.last(), Some(Ok(_))), "{deliveries:?}");
    let deployments = w.deployments("production").await;
    assert_eq!(
        deployments.len(),
        1,
        "the delivery was acknowledged but never gated: {deliveries:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. GitHub answering 500, then 429, then hanging past the budget.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn github_failing_then_hanging_leaves_the_decision_recorded_and_the_sweeper_answers_once() {
    let retries = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_millis(300),
    };
    let w = World::new(retries).await;
    // The healthy answer, behind the faults mounted below (lower priority wins in wiremock).
    Mock::given(method("POST"))
        .and(path_regex(r"/deployment_protection_rule$"))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(10)
        .mount(&w.github)
        .await;
    let dep = awaiting(&w, 601).await;
    approve_click(&w, &dep, "U0APPROV1", "1717322400.000100")
        .await
        .expect("first click");
    let before = w.protection_rule_calls().await.len();

    for (priority, answer) in [
        (
            1,
            ResponseTemplate::new(500).set_body_json(json!({"message": "Server Error"})),
        ),
        (
            2,
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"message": "slow down"})),
        ),
        // Longer than both the client's timeout and the click's answer budget.
        (
            3,
            ResponseTemplate::new(204).set_delay(Duration::from_secs(3)),
        ),
    ] {
        Mock::given(method("POST"))
            .and(path_regex(r"/deployment_protection_rule$"))
            .respond_with(answer)
            .with_priority(priority)
            .up_to_n_times(1)
            .mount(&w.github)
            .await;
    }

    let started = std::time::Instant::now();
    let click = approve_click(&w, &dep, "U0APPROV2", "1717322460.000200")
        .await
        .expect("a slow GitHub never fails the click");
    assert!(
        started.elapsed() <= approvals::GITHUB_ANSWER_BUDGET + Duration::from_millis(500),
        "the click waited {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            click,
            Delivery::Processed(ClickOutcome::Approved {
                github: GitHubAnswer::Pending,
                ..
            })
        ),
        "{click:?}"
    );
    let stored = w.deployment(&dep.id).await;
    assert_eq!(stored.state, State::Approved);
    assert_eq!(stored.approvals.len(), 2);
    assert_eq!(
        stored.callback,
        shipgate::domain::deployment::CallbackState::Pending
    );
    let want = json!({
        "environment_name": "production",
        "state": "approved",
        "comment": approved_comment("U0APPROV1, U0APPROV2")
    });
    let tried = w.protection_rule_calls().await.split_off(before);
    assert_eq!(
        tried,
        [want.clone(), want.clone(), want.clone()],
        "500, 429, hang"
    );

    // GitHub has recovered; the sweeper answers, once.
    w.clock.advance(Duration::from_secs(60));
    let report = sweeper::sweep(&w.svc, &Sources::default()).await;
    assert_eq!(report.answered, std::slice::from_ref(&dep.id), "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(sweeper::sweep(&w.svc, &Sources::default())
        .await
        .answered
        .is_empty());
    let all = w.protection_rule_calls().await.split_off(before);
    assert_eq!(all.len(), 4, "three failed tries and one answer: {all:?}");
    assert!(all.iter().all(|b| *b == want));
    let stored = w.deployment(&dep.id).await;
    assert_eq!(
        stored.callback,
        shipgate::domain::deployment::CallbackState::Answered
    );
    assert_history_is_legal(w.repo(), &stored).await;
}

// ---------------------------------------------------------------------------------------
// 4. An alert storm during a rollback, with the store failing on the rolling_back save.
// ---------------------------------------------------------------------------------------

/// A production deployment of `SHA` inside its verification window, holding the lock, with
/// `GOOD_SHA` as the environment's last known good.
async fn verifying(w: &World, id: &str) -> Deployment {
    let now = w.svc.now();
    w.repo()
        .set_head(
            &testkit::scope(REPO, "production"),
            Head {
                sha: GOOD_SHA.into(),
                git_ref: "refs/heads/main".into(),
                deployment_id: "dep-earlier".into(),
                at: now,
                verify_until: None,
            },
            true,
        )
        .await
        .expect("heads");
    let mut dep: Deployment = serde_json::from_value(json!({
        "id": id,
        "repo": REPO,
        "environment": "production",
        "git_ref": "refs/heads/main",
        "sha": SHA,
        "requester": "octocat",
        "kind": "deploy",
        "state": "verifying",
        "version": 0,
        "created_at": now,
        "updated_at": now,
        "run_id": 701,
        "installation_id": INSTALLATION,
        "github_deployment_id": 7001,
        "verify_until": now + jiff::SignedDuration::from_mins(15),
        "callback": "answered",
    }))
    .expect("deployment");
    w.repo()
        .create_deployment(&mut dep, &[], now)
        .await
        .expect("create");
    // It went out now: the scope runs it, inside its window (as `begin_verification` leaves it).
    w.repo()
        .set_head(
            &testkit::scope(REPO, "production"),
            Head {
                sha: SHA.into(),
                git_ref: "refs/heads/main".into(),
                deployment_id: id.into(),
                at: now,
                verify_until: dep.verify_until,
            },
            false,
        )
        .await
        .expect("heads");
    dep
}

fn critical_alert(n: usize) -> AlertSignal {
    let labels: BTreeMap<String, String> = [
        ("alertname", format!("HighErrorRate{n}")),
        ("env", "production".to_string()),
        ("service", "api".to_string()),
        ("severity", "critical".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    AlertSignal {
        source: "alertmanager".into(),
        fingerprint: format!("fp{n:04}"),
        status: AlertStatus::Firing,
        labels,
        annotations: BTreeMap::new(),
        starts_at: None,
        ends_at: None,
        link: None,
        delivery_key: None,
    }
}

/// Delivers every alert at once, then redelivers the failed ones (as Alertmanager does after a
/// 500) until all are accepted.
async fn storm(w: &World, alerts: Vec<AlertSignal>) -> usize {
    let mut pending = alerts;
    let mut failures = 0;
    for _ in 0..5 {
        let results = futures::future::join_all(
            pending
                .iter()
                .map(|a| incidents::ingest(&w.svc, vec![a.clone()])),
        )
        .await;
        let failed: Vec<AlertSignal> = pending
            .into_iter()
            .zip(results)
            .filter(|(_, r)| r.is_err())
            .map(|(a, _)| a)
            .collect();
        failures += failed.len();
        if failed.is_empty() {
            return failures;
        }
        pending = failed;
    }
    panic!("alerts still failing after five deliveries: {pending:?}");
}

async fn finish_rollback(w: &World, dep: &Deployment, github_id: u64) {
    let outcome = lifecycle::deployment_status(
        &w.svc,
        &DeploymentStatus {
            github_deployment_id: github_id,
            repo: REPO.parse().unwrap(),
            environment: "production".parse().unwrap(),
            sha: GOOD_SHA.parse().unwrap(),
            git_ref: GOOD_SHA.into(),
            state: "success".into(),
            description: None,
            run_id: None,
            rollback_of: Some(dep.id.clone()),
        },
    )
    .await
    .expect("rollback status");
    assert_eq!(
        outcome,
        LifecycleOutcome::Moved {
            deployment_id: dep.id.clone(),
            state: State::RolledBack
        }
    );
}

async fn assert_one_rollback_request(w: &World, dep: &Deployment) {
    let created = w.github_calls(&format!("/repos/{REPO}/deployments")).await;
    assert_eq!(
        created.len(),
        1,
        "exactly one rollback reached GitHub: {created:?}"
    );
    assert_eq!(created[0]["ref"], GOOD_SHA);
    assert_eq!(created[0]["environment"], "production");
    assert_eq!(
        created[0]["payload"]["shipgate_rollback_of"],
        dep.id.as_str()
    );
}

async fn assert_rolled_back(w: &World, dep: &Deployment) {
    let stored = w.deployment(&dep.id).await;
    assert_eq!(
        assert_history_from(w.repo(), &stored, State::Verifying).await,
        [State::Verifying, State::RollingBack, State::RolledBack]
    );
    assert_eq!(
        w.repo()
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .expect("lock"),
        None
    );
    let heads = w
        .repo()
        .heads(&testkit::scope(REPO, "production"))
        .await
        .expect("heads");
    assert_eq!(heads.current.map(|h| h.sha).as_deref(), Some(GOOD_SHA));
    assert_locks_are_consistent(w).await;
}

#[tokio::test]
async fn an_alert_storm_whose_rollback_save_failed_rolls_back_exactly_once() {
    let w = World::new(one_attempt()).await;
    github_creates_deployments(&w.github, 9001).await;
    let dep = verifying(&w, "dep-storm-a").await;
    w.store
        .add(Rule::nth(Op::Transact, 1, Fault::Fail).on_keys("DEP#dep-storm-a"));

    let failures = storm(&w, (0..20).map(critical_alert).collect()).await;
    assert!(failures >= 1, "the injected failure surfaced as a 500");
    assert_one_rollback_request(&w, &dep).await;
    let stored = w.deployment(&dep.id).await;
    assert_eq!(stored.state, State::RollingBack);
    assert_eq!(
        stored
            .rollback
            .as_ref()
            .and_then(|r| r.github_deployment_id),
        Some(9001)
    );

    w.clock.advance(Duration::from_secs(180));
    let report = sweeper::sweep(&w.svc, &Sources::default()).await;
    assert!(report.rollbacks_resumed.is_empty(), "{report:?}");
    assert_one_rollback_request(&w, &dep).await;
    finish_rollback(&w, &dep, 9001).await;
    assert_rolled_back(&w, &dep).await;
}

#[tokio::test]
async fn an_alert_storm_whose_rollback_save_landed_but_reported_failure_is_finished_by_the_sweeper()
{
    let w = World::new(one_attempt()).await;
    github_creates_deployments(&w.github, 9002).await;
    let dep = verifying(&w, "dep-storm-b").await;
    w.store
        .add(Rule::nth(Op::Transact, 1, Fault::LandThenFail).on_keys("DEP#dep-storm-b"));

    // The first alert's rolling_back save lands, but its caller sees a failure.
    let first = incidents::ingest(&w.svc, vec![critical_alert(0)]).await;
    assert!(first.is_err(), "{first:?}");
    assert_eq!(w.deployment(&dep.id).await.state, State::RollingBack);
    // The storm, with Alertmanager's redelivery of the first alert in it.
    storm(&w, (0..20).map(critical_alert).collect()).await;
    let created = w.github_calls(&format!("/repos/{REPO}/deployments")).await;
    assert!(created.len() <= 1, "{created:?}");

    w.clock.advance(Duration::from_secs(180));
    let report = sweeper::sweep(&w.svc, &Sources::default()).await;
    assert!(report.errors.is_empty(), "{report:?}");
    let again = sweeper::sweep(&w.svc, &Sources::default()).await;
    assert!(again.rollbacks_resumed.is_empty(), "{again:?}");
    assert_one_rollback_request(&w, &dep).await;
    let stored = w.deployment(&dep.id).await;
    assert_eq!(
        stored
            .rollback
            .as_ref()
            .and_then(|r| r.github_deployment_id),
        Some(9002)
    );
    finish_rollback(&w, &dep, 9002).await;
    assert_rolled_back(&w, &dep).await;
}

// ---------------------------------------------------------------------------------------
// 5. A seeded random run: events, redeliveries and store faults mixed, then drained.
// ---------------------------------------------------------------------------------------

const SEED: u64 = 0x005e_ed0f_fa17;
const STEPS: usize = 200;

/// GitHub gives every created deployment a fresh id.
struct CountingDeployments(std::sync::atomic::AtomicU64);

impl wiremock::Respond for CountingDeployments {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let id = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ResponseTemplate::new(201).set_body_json(json!({ "id": id }))
    }
}

/// One inbound event, kept so it can be delivered again exactly as it was.
#[derive(Debug, Clone)]
enum Event {
    Gate {
        delivery: String,
        req: ProtectionRuleRequest,
    },
    Click {
        key: String,
        deployment_id: String,
        nonce: String,
        user: String,
        approve: bool,
    },
    Status {
        delivery: String,
        status: DeploymentStatus,
    },
    Alert(AlertSignal),
}

impl Event {
    fn id(&self) -> String {
        match self {
            Event::Gate { delivery, .. } | Event::Status { delivery, .. } => delivery.clone(),
            Event::Click { key, .. } => key.clone(),
            Event::Alert(signal) => signal.claim_key(),
        }
    }

    /// The key of the event's idempotency claim in the store.
    fn claim(&self) -> String {
        let scope = match self {
            Event::Gate { .. } | Event::Status { .. } => "github",
            Event::Click { .. } => "slack-click",
            Event::Alert(_) => "alert",
        };
        format!("IDEM#{scope}#{}/IDEM", self.id())
    }
}

/// What the sender of an event was told, the first time it got a 2xx.
#[derive(Debug, Clone)]
enum Ack {
    Gated,
    Clicked(ClickOutcome),
    Status(LifecycleOutcome),
    Alert,
    /// 2xx "already processed".
    Duplicate,
}

async fn send(w: &World, event: &Event) -> Result<Ack, ServiceError> {
    let ack = |d: Delivery<Ack>| match d {
        Delivery::Processed(a) => a,
        Delivery::Duplicate => Ack::Duplicate,
    };
    match event {
        Event::Gate { delivery, req } => inbound(&w.svc, "github", delivery, || async {
            gate::request(&w.svc, req).await.map(|_| Ack::Gated)
        })
        .await
        .map(ack),
        Event::Click {
            key,
            deployment_id,
            nonce,
            user,
            approve,
        } => inbound(&w.svc, "slack-click", key, || async {
            let outcome = if *approve {
                approvals::approve(&w.svc, deployment_id, nonce, user).await
            } else {
                approvals::reject(&w.svc, deployment_id, nonce, user, Some("not today")).await
            };
            outcome.map(Ack::Clicked)
        })
        .await
        .map(ack),
        Event::Status { delivery, status } => inbound(&w.svc, "github", delivery, || async {
            lifecycle::deployment_status(&w.svc, status)
                .await
                .map(Ack::Status)
        })
        .await
        .map(ack),
        Event::Alert(signal) => {
            let report = incidents::ingest(&w.svc, vec![signal.clone()]).await?;
            if report.count(incidents::Effect::Duplicate) == 1 {
                Ok(Ack::Duplicate)
            } else {
                Ok(Ack::Alert)
            }
        }
    }
}

fn status_for(dep: &Deployment, state: &str, github_id: u64, rollback: bool) -> DeploymentStatus {
    DeploymentStatus {
        github_deployment_id: github_id,
        repo: REPO.parse().unwrap(),
        environment: dep.environment.clone(),
        sha: dep.sha.clone(),
        git_ref: dep.git_ref.clone(),
        state: state.into(),
        description: None,
        run_id: if rollback { None } else { dep.run_id },
        rollback_of: rollback.then(|| dep.id.clone()),
    }
}

/// The next event of the run, chosen from what is stored now.
async fn next_event(w: &World, rng: &mut rand::rngs::StdRng, step: usize) -> Option<Event> {
    use rand::seq::SliceRandom;
    use rand::Rng;
    let mut all = Vec::new();
    for env in harness::ENVIRONMENTS {
        all.extend(w.deployments(env).await);
    }
    let roll = rng.gen_range(0..100);
    if roll < 22 || all.is_empty() {
        let environment = *harness::ENVIRONMENTS.choose(rng)?;
        let run_id = 10_000 + step as u64;
        return Some(Event::Gate {
            delivery: format!("gate-{step}"),
            req: protection_rule(environment, run_id, &format!("{:040x}", run_id * 7919)),
        });
    }
    if roll < 50 {
        let waiting: Vec<&Deployment> = all
            .iter()
            .filter(|d| d.state == State::AwaitingApproval)
            .collect();
        let dep = if waiting.is_empty() || rng.gen_bool(0.15) {
            all.choose(rng)?
        } else {
            *waiting.choose(rng)?
        };
        let user = *["U0APPROV1", "U0APPROV2", "U0APPROV3", "U0STRANGER"].choose(rng)?;
        let nonce = dep.button_nonce.clone().unwrap_or_default();
        return Some(Event::Click {
            key: format!("{user}:{step}.000100:{}:{nonce}", dep.id),
            deployment_id: dep.id.clone(),
            nonce,
            user: user.into(),
            approve: rng.gen_bool(0.85),
        });
    }
    if roll < 80 {
        let moving: Vec<&Deployment> = all
            .iter()
            .filter(|d| {
                matches!(
                    d.state,
                    State::Approved | State::Deploying | State::RollingBack
                )
            })
            .collect();
        let dep = if moving.is_empty() || rng.gen_bool(0.1) {
            all.choose(rng)?
        } else {
            *moving.choose(rng)?
        };
        let rollback_id = dep.rollback.as_ref().and_then(|r| r.github_deployment_id);
        let status = match (dep.state, rollback_id) {
            (State::RollingBack, Some(id)) => {
                let state = if rng.gen_bool(0.8) {
                    "success"
                } else {
                    "failure"
                };
                status_for(dep, state, id, true)
            }
            _ => {
                let state = *["in_progress", "success", "success", "failure"].choose(rng)?;
                status_for(dep, state, 5_000 + dep.run_id.unwrap_or(0), false)
            }
        };
        return Some(Event::Status {
            delivery: format!("status-{step}"),
            status,
        });
    }
    if roll < 90 {
        return Some(Event::Alert(critical_alert(rng.gen_range(0..6))));
    }
    None
}

#[tokio::test]
async fn a_seeded_random_run_with_store_faults_ends_every_deployment_in_a_legal_state() {
    use rand::{Rng, SeedableRng};
    let started = std::time::Instant::now();
    let w = World::new(one_attempt()).await;
    github_accepts_reviews(&w.github).await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path(format!(
            "/repos/{REPO}/deployments"
        )))
        .respond_with(CountingDeployments(std::sync::atomic::AtomicU64::new(
            90_000,
        )))
        .mount(&w.github)
        .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    w.store.chaos(SEED, 60);

    // (event, what its sender was told the first time it got a 2xx)
    let mut acked: Vec<(Event, Ack)> = Vec::new();
    let mut failing: Vec<Event> = Vec::new();
    let mut deliveries = 0usize;
    for step in 0..STEPS {
        if !failing.is_empty() && rng.gen_bool(0.3) {
            let event = failing.remove(0);
            deliveries += 1;
            match send(&w, &event).await {
                Ok(ack) => acked.push((event, ack)),
                Err(_) => failing.push(event),
            }
            continue;
        }
        match next_event(&w, &mut rng, step).await {
            Some(event) => {
                deliveries += 1;
                match send(&w, &event).await {
                    Ok(ack) => acked.push((event, ack)),
                    Err(_) => failing.push(event),
                }
            }
            None => {
                w.clock
                    .advance(Duration::from_secs(rng.gen_range(60..1800)));
                sweeper::sweep(&w.svc, &Sources::default()).await;
            }
        }
    }
    let injected = w.store.faults().len();
    assert!(injected >= 20, "the run injected only {injected} faults");

    // Drain: the store recovers, senders redeliver what failed, the clock moves past every
    // TTL and window, and the sweeper runs.
    w.store.heal();
    for event in std::mem::take(&mut failing) {
        deliveries += 1;
        let ack = send(&w, &event)
            .await
            .expect("a redelivery to a healthy store");
        acked.push((event, ack));
    }
    for _ in 0..3 {
        w.clock.advance(Duration::from_secs(5 * 3600));
        let report = sweeper::sweep(&w.svc, &Sources::default()).await;
        assert!(report.errors.is_empty(), "{report:?}");
    }

    // Every deployment's history is a chain of legal moves ending where the record is.
    let mut histories = BTreeMap::new();
    for env in harness::ENVIRONMENTS {
        for dep in w.deployments(env).await {
            let visited = assert_history_is_legal(w.repo(), &dep).await;
            // Decided deployments gated through a protection rule got their answer.
            if !matches!(dep.state, State::Requested | State::AwaitingApproval) {
                assert_ne!(
                    dep.callback,
                    shipgate::domain::deployment::CallbackState::Pending,
                    "{} is {} but GitHub was never answered",
                    dep.id,
                    dep.state
                );
            }
            histories.insert(dep.id.clone(), (dep, visited));
        }
    }
    assert!(
        histories.len() >= 10,
        "only {} deployments",
        histories.len()
    );
    assert_locks_are_consistent(&w).await;

    // GitHub may hear an answer twice, never two different answers for one run.
    let mut answers: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for r in w.github_requests("/deployment_protection_rule").await {
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        if let Some(state) = body.get("state") {
            let prior = answers.insert(r.url.path().to_string(), state.clone());
            assert!(
                prior.is_none() || prior.as_ref() == Some(state),
                "{}: GitHub was told {prior:?} and then {state}",
                r.url.path()
            );
        }
    }

    // Nothing acknowledged was lost.
    let processed: std::collections::BTreeSet<String> = acked
        .iter()
        .filter(|(_, a)| !matches!(a, Ack::Duplicate))
        .map(|(e, _)| e.id())
        .collect();
    let mut lost = Vec::new();
    for (event, ack) in &acked {
        match (event, ack) {
            (Event::Gate { req, .. }, Ack::Gated) => {
                let dep = w
                    .repo()
                    .deployment_for_run(req.run_id, req.environment.as_str())
                    .await
                    .expect("read");
                assert!(dep.is_some(), "gated run {} has no deployment", req.run_id);
            }
            (
                Event::Click {
                    deployment_id,
                    user,
                    ..
                },
                Ack::Clicked(ClickOutcome::Progress { .. } | ClickOutcome::Approved { .. }),
            ) => {
                let (dep, _) = &histories[deployment_id];
                assert!(
                    dep.approvals.iter().any(|a| a.approver == *user),
                    "{user}'s counted approval of {deployment_id} is missing"
                );
            }
            (
                Event::Status { .. },
                Ack::Status(LifecycleOutcome::Moved {
                    deployment_id,
                    state,
                }),
            ) => {
                let (_, visited) = &histories[deployment_id];
                assert!(
                    visited.contains(state),
                    "{deployment_id} was moved to {state}, which its history lacks: {visited:?}"
                );
            }
            (Event::Alert(signal), Ack::Alert) => {
                let id = shipgate::domain::incident::Incident::id_for(
                    &signal.source,
                    &signal.fingerprint,
                );
                assert!(
                    w.repo().get_incident(&id).await.expect("read").is_some(),
                    "accepted alert {id} has no incident"
                );
            }
            (e, Ack::Duplicate) if !processed.contains(&e.id()) => {
                // What the store did to this event's claim explains the loss.
                let claim = e.claim();
                let faults: Vec<String> = w
                    .store
                    .faults()
                    .into_iter()
                    .filter(|c| c.keys.contains(&claim))
                    .map(|c| format!("{:?} {:?}", c.op, c.fault))
                    .collect();
                lost.push(format!("{}: claim faults {faults:?}", e.id()));
            }
            _ => {}
        }
    }
    eprintln!(
        "random run: {STEPS} steps, {deliveries} deliveries, {injected} store faults, {} deployments, {:?}",
        histories.len(),
        started.elapsed()
    );
    assert!(
        lost.is_empty(),
        "acknowledged as duplicates but never processed (the sender will not try again):\n{}",
        lost.join("\n")
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}
