//! Manual rollbacks from Slack follow the same approval rules as a deploy: the "Roll back"
//! button opens a request, N distinct approvers approve it, and the click that completes the
//! quorum starts exactly one rollback. The GitHub fake checks the exact request made.

#[path = "common/slack_approval.rs"]
mod common;

use common::{Harness, PREV_SHA, REPO, ROLLBACK_GITHUB_ID, SHA};
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::service::rollback::{self, RollbackOutcome};
use slack_approval::interaction::{
    ACTION_APPROVE_ROLLBACK, ACTION_CANCEL_ROLLBACK, ACTION_ROLLBACK,
};

const STALE: &str =
    "This button is out of date: use the latest shipgate message for this deployment.";

fn events(h: &Harness) -> Vec<String> {
    h.deployment_events().into_iter().map(|e| e.0).collect()
}

#[tokio::test]
async fn a_rollback_starts_only_when_two_other_approvers_approve_and_github_gets_one_request() {
    let h = Harness::new().await;
    let dep = h.seed_running_production().await;

    // Alice asks. She is an approver, but she is the request's author, so it needs two others.
    let reply = h.click("U0ALICE01", ACTION_ROLLBACK, &dep).await;
    assert_eq!((reply.status, &reply.body), (200, &Value::Null));
    let requested = h.deployment(&dep.id).await;
    assert_eq!(requested.state, State::Succeeded);
    let request = requested.rollback_request.clone().expect("request opened");
    assert_eq!(
        (
            request.target_sha.as_str(),
            request.requested_by.as_str(),
            request.approvals_required,
            request.expires_at.to_string(),
        ),
        (
            PREV_SHA,
            "slack:U0ALICE01",
            2,
            "2025-06-02T11:00:00Z".to_string()
        )
    );
    assert!(request.approvals.is_empty());
    assert_ne!(Some(&request.nonce), dep.button_nonce.as_ref());

    for user in ["U0MALLORY", "U0ALICE01", "U0BOB0002", "U0BOB0002"] {
        let click = h.rollback_request_click(user, ACTION_APPROVE_ROLLBACK, &requested);
        h.send_payload(&click).await;
    }
    let forged = h.click_payload_with_value(
        "U0CAROL03",
        ACTION_APPROVE_ROLLBACK,
        &format!("{}:not-the-request-nonce", dep.id),
    );
    h.send_payload(&forged).await;
    assert!(h.github_deployment_calls().await.is_empty());
    assert_eq!(h.deployment(&dep.id).await.state, State::Succeeded);

    let completing = h.rollback_request_click("U0CAROL03", ACTION_APPROVE_ROLLBACK, &requested);
    h.send_payload(&completing).await;

    assert_eq!(
        h.ephemeral_texts().await,
        vec![
            "Rollback of production to aaaaaaa requested: 0 of 2 approvals so far; the request expires at 2025-06-02T11:00:00Z.",
            "Not counted: you are not an approver for production.",
            "Not counted: you requested this rollback, so you cannot approve it.",
            "Rollback approval recorded for production: 1 of 2.",
            "Not counted: you already approved this rollback (1 of 2).",
            STALE,
            "Rolling back production to aaaaaaa.",
        ]
    );
    assert_eq!(
        h.github_deployment_calls().await,
        vec![json!({
            "ref": PREV_SHA,
            "environment": "production",
            "description": "shipgate rollback of d6fde92 to aaaaaaa",
            "payload": {
                "shipgate_rollback_of": dep.id,
                "reason": "manual rollback requested by slack:U0ALICE01 and approved by U0BOB0002, U0CAROL03",
            },
            "auto_merge": false,
            "required_contexts": [],
            "task": "deploy",
        })]
    );
    let done = h.deployment(&dep.id).await;
    assert_eq!(done.state, State::RollingBack);
    assert_eq!(done.rollback_request, None);
    let rb = done.rollback.clone().expect("rollback info");
    assert_eq!(
        (
            rb.target_sha.as_str(),
            rb.started_by.as_str(),
            rb.github_deployment_id
        ),
        (PREV_SHA, "slack:U0ALICE01", Some(ROLLBACK_GITHUB_ID))
    );
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .unwrap()
            .as_deref(),
        Some(dep.id.as_str())
    );
    assert_eq!(
        events(&h),
        [
            "rollback_requested",
            "rollback_approval",
            "rollback_started"
        ]
    );
    let audit = h.audit(&dep.id).await;
    let trail: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.what.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        trail,
        vec![
            ("rollback_request_opened", "slack:U0ALICE01"),
            ("rollback_approval_recorded", "slack:U0BOB0002"),
            ("rollback_approval_recorded", "slack:U0CAROL03"),
            ("start_rollback", "slack:U0CAROL03"),
            ("rollback_requested", "shipgate"),
        ]
    );

    // Buttons of the request that started are stale now; the Roll back button says why.
    let late = h.rollback_request_click("U0OCTOCAT", ACTION_APPROVE_ROLLBACK, &requested);
    h.send_payload(&late).await;
    h.click("U0OCTOCAT", ACTION_ROLLBACK, &dep).await;
    let texts = h.ephemeral_texts().await;
    assert_eq!(
        &texts[texts.len() - 2..],
        [STALE, "production is already rolling back."]
    );
    assert_eq!(h.github_deployment_calls().await.len(), 1);
}

#[tokio::test]
async fn a_roll_back_click_while_a_request_is_open_counts_as_the_clickers_approval() {
    let h = Harness::new().await;
    let dep = h.seed_running_production().await;
    h.click("U0ALICE01", ACTION_ROLLBACK, &dep).await;
    h.click("U0BOB0002", ACTION_ROLLBACK, &dep).await;
    let after = h.deployment(&dep.id).await;
    let request = after.rollback_request.expect("still open");
    assert_eq!(request.requested_by, "slack:U0ALICE01", "not replaced");
    assert_eq!(request.approvers(), ["U0BOB0002"]);
    assert_eq!(
        h.ephemeral_texts().await.last().map(String::as_str),
        Some("Rollback approval recorded for production: 1 of 2.")
    );
}

#[tokio::test]
async fn a_cancelled_rollback_request_changes_nothing_and_its_buttons_go_stale() {
    let h = Harness::new().await;
    let dep = h.seed_running_production().await;
    h.click("U0ALICE01", ACTION_ROLLBACK, &dep).await;
    let requested = h.deployment(&dep.id).await;

    for user in ["U0MALLORY", "U0BOB0002"] {
        let click = h.rollback_request_click(user, ACTION_CANCEL_ROLLBACK, &requested);
        h.send_payload(&click).await;
    }
    let late = h.rollback_request_click("U0CAROL03", ACTION_APPROVE_ROLLBACK, &requested);
    h.send_payload(&late).await;

    assert_eq!(
        &h.ephemeral_texts().await[1..],
        [
            "Not counted: only whoever requested this rollback or an approver for production may cancel it.",
            "Rollback request for production cancelled; nothing was rolled back.",
            STALE,
        ]
    );
    let after = h.deployment(&dep.id).await;
    assert_eq!(
        (after.state, after.rollback_request),
        (State::Succeeded, None)
    );
    assert_eq!(
        events(&h),
        ["rollback_requested", "rollback_request_cancelled"]
    );
    assert!(h.github_deployment_calls().await.is_empty());
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn an_approval_after_the_request_expired_is_refused() {
    let h = Harness::new().await;
    let dep = h.seed_running_production().await;
    h.click("U0ALICE01", ACTION_ROLLBACK, &dep).await;
    let requested = h.deployment(&dep.id).await;
    h.clock.advance(std::time::Duration::from_secs(3600));

    let click = h.rollback_request_click("U0BOB0002", ACTION_APPROVE_ROLLBACK, &requested);
    h.send_payload(&click).await;

    assert_eq!(
        h.ephemeral_texts().await.last().map(String::as_str),
        Some("Not counted: this rollback request expired at 2025-06-02T11:00:00Z.")
    );
    assert_eq!(h.deployment(&dep.id).await, requested);
}

/// Production with ten approvers instead of the usual ones, each with a GitHub login.
fn ten_approver_policy() -> String {
    let ten: Vec<String> = (0..10).map(|n| format!("\"U0APPR{n:03}\"")).collect();
    let logins: String = (0..10)
        .map(|n| format!("U0APPR{n:03} = \"approver-{n}\"\n"))
        .collect();
    common::POLICY
        .replace(
            r#"approvers = ["U0ALICE01", "U0BOB0002", "U0CAROL03", "U0OCTOCAT"]"#,
            &format!("approvers = [{}]", ten.join(", ")),
        )
        .replace("[identities]\n", &format!("[identities]\n{logins}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_approvers_clicking_approve_rollback_together_start_exactly_one_rollback() {
    for round in 0..3 {
        let h = Harness::with_policy(&ten_approver_policy()).await;
        let dep = h.seed_running_production().await;
        let opened =
            rollback::start_manual(h.services(), &testkit::scope(REPO, "production"), "cli:ops")
                .await
                .unwrap();
        assert!(
            matches!(
                opened,
                RollbackOutcome::AwaitingApprovals {
                    have: 0,
                    need: 2,
                    opened: true,
                    ..
                }
            ),
            "{opened:?}"
        );
        let requested = h.deployment(&dep.id).await;

        let clicks: Vec<Value> = (0..10)
            .map(|n| {
                h.rollback_request_click(
                    &format!("U0APPR{n:03}"),
                    ACTION_APPROVE_ROLLBACK,
                    &requested,
                )
            })
            .collect();
        let replies = futures::future::join_all(clicks.iter().map(|p| h.send_payload(p))).await;
        assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");

        let done = h.deployment(&dep.id).await;
        assert_eq!(done.state, State::RollingBack, "round {round}");
        assert_eq!(done.rollback_request, None);
        assert_eq!(h.github_deployment_calls().await.len(), 1, "round {round}");
        let started = events(&h)
            .iter()
            .filter(|e| *e == "rollback_started")
            .count();
        assert_eq!(started, 1, "round {round}");

        let texts = h.ephemeral_texts().await;
        assert_eq!(texts.len(), 10);
        let count = |t: &str| texts.iter().filter(|x| *x == t).count();
        assert_eq!(
            count("Rollback approval recorded for production: 1 of 2."),
            1
        );
        assert_eq!(count("Rolling back production to aaaaaaa."), 1, "{texts:?}");
        // The other eight came too late: the request had started (stale button) or was
        // starting (already rolling back).
        assert_eq!(
            count(STALE) + count("production is already rolling back."),
            8,
            "{texts:?}"
        );
        let recorded = h
            .audit(&dep.id)
            .await
            .iter()
            .filter(|e| e.what == "rollback_approval_recorded")
            .count();
        assert_eq!(recorded, 2, "exactly the quorum is recorded");
    }
}

#[tokio::test]
async fn a_rollback_click_in_an_environment_without_approvals_starts_at_once() {
    let policy = common::POLICY.replace("approvals_required = 2", "approvals_required = 0");
    let h = Harness::with_policy(&policy).await;
    let dep = h.seed_running_production().await;

    // Anyone in the channel sees the button; only an approver of production may press it.
    h.click("U0MALLORY", ACTION_ROLLBACK, &dep).await;
    assert_eq!(
        h.ephemeral_texts().await,
        ["Not rolled back: only the environment's approvers may roll back production from Slack, and you are not one of them."]
    );
    assert_eq!(h.deployment(&dep.id).await.state, dep.state);
    assert!(h.github_deployment_calls().await.is_empty());

    h.click("U0ALICE01", ACTION_ROLLBACK, &dep).await;
    assert_eq!(
        h.ephemeral_texts().await[1..],
        ["Rolling back production to aaaaaaa."]
    );
    let done = h.deployment(&dep.id).await;
    assert_eq!(done.state, State::RollingBack);
    assert_eq!(done.rollback_request, None);
    let calls = h.github_deployment_calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (&calls[0]["ref"], &calls[0]["payload"]["reason"]),
        (
            &json!(PREV_SHA),
            &json!("manual rollback requested by slack:U0ALICE01")
        )
    );
    assert_eq!(REPO, done.repo);
    assert_eq!(SHA, done.sha);
}

#[tokio::test]
async fn a_repository_override_sets_the_approvals_and_ttl_of_its_manual_rollback() {
    // The section asks 2 approvals within 1h; the override for this repository 3 within 30m.
    let policy = format!(
        "{}\n[[environments.production.overrides]]\nrepos = [\"{REPO}\"]\napprovals_required = 3\napproval_ttl = \"30m\"\n",
        common::POLICY
    );
    let h = Harness::with_policy(&policy).await;
    let dep = h.seed_running_production().await;

    let outcome =
        rollback::start_manual(h.services(), &testkit::scope(REPO, "production"), "cli:ada")
            .await
            .unwrap();
    assert!(
        matches!(outcome, RollbackOutcome::AwaitingApprovals { .. }),
        "{outcome:?}"
    );
    let request = h
        .deployment(&dep.id)
        .await
        .rollback_request
        .expect("request opened");
    assert_eq!(
        (request.approvals_required, request.expires_at.to_string()),
        (3, "2025-06-02T10:30:00Z".to_string())
    );
}

#[tokio::test]
async fn clicks_from_another_workspace_a_guest_or_another_app_are_refused_and_change_nothing() {
    let policy = common::POLICY.replace("approvals_required = 2", "approvals_required = 0");
    let h = Harness::with_policy(&policy).await;
    let dep = h.seed_running_production().await;
    let before = h.all_items().await;

    type Change = fn(&mut Value);
    let cases: [(&str, Change); 4] = [
        ("another workspace", |p| p["team"]["id"] = json!("T0OTHER")),
        // A Slack Connect guest: the channel is ours, the user's workspace is not.
        ("a guest", |p| p["user"]["team_id"] = json!("T0GUEST")),
        ("another app", |p| p["api_app_id"] = json!("A0SOMEONE")),
        ("no workspace named", |p| {
            if let Some(o) = p.as_object_mut() {
                o.remove("team");
            }
        }),
    ];
    for (what, change) in cases {
        // An approver's click, so only where it comes from is wrong.
        let mut payload = h.click_payload("U0ALICE01", ACTION_ROLLBACK, &dep);
        change(&mut payload);
        let reply = h.send_payload(&payload).await;
        assert_eq!(reply.status, 403, "{what}: {reply:?}");
        let message = reply.body["message"].as_str().unwrap_or_default();
        assert!(
            message.ends_with("shipgate acts only on its own workspace's clicks (user U0ALICE01)"),
            "{what}: {message}"
        );
    }
    assert!(h.ephemeral_texts().await.is_empty());
    assert!(h.github_deployment_calls().await.is_empty());
    assert_eq!(
        h.all_items().await,
        before,
        "nothing recorded, not even the click"
    );
}

#[tokio::test]
async fn a_rollback_click_on_a_message_that_is_no_longer_current_rolls_back_nothing() {
    let policy = common::POLICY.replace("approvals_required = 2", "approvals_required = 0");
    let h = Harness::with_policy(&policy).await;
    let dep = h.seed_running_production().await;
    // The click is on the message of the deployment before the current one.
    let older = h.deployment("dep-seed-1").await;
    h.click("U0ALICE01", ACTION_ROLLBACK, &older).await;
    assert_eq!(
        h.ephemeral_texts().await,
        [format!("Not rolled back: deployment dep-seed-1 is not what runs in production now ({} is); use the message of the current deployment.", dep.id)]
    );
    assert_eq!(h.deployment(&dep.id).await.state, dep.state);
    assert!(h.github_deployment_calls().await.is_empty());
}
