//! The approval story end to end: GitHub asks through the webhook handler, people click in
//! Slack, and GitHub gets exactly one answer. The fakes check the exact requests made.

#[path = "common/slack_approval.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{reason_submission, Harness, REPO, SHA};
use serde_json::{json, Value};
use shipgate::domain::deployment::{CallbackState, State};
use shipgate::service::gate::{self, ProtectionRuleRequest};

fn rule_path(run_id: u64) -> String {
    format!("/repos/{REPO}/actions/runs/{run_id}/deployment_protection_rule")
}

fn waiting_report(run_id: u64) -> (String, Value) {
    (
        rule_path(run_id),
        json!({
            "environment_name": "production",
            "comment": "shipgate: waiting for 2 approval(s) in Slack (0 so far)"
        }),
    )
}

fn whats(audit: &[shipgate::domain::deployment::AuditEvent]) -> Vec<&str> {
    audit.iter().map(|e| e.what.as_str()).collect()
}

#[tokio::test]
async fn two_approvers_approve_a_production_deploy_and_github_is_answered_once() {
    let h = Harness::new().await;
    let run_id = 4242;
    let dep = h.gate_production(run_id).await;
    assert_eq!(dep.state, State::AwaitingApproval);
    assert_eq!(dep.approvals_required, 2);
    assert_eq!(
        h.deployment_events(),
        vec![("approval_requested".to_string(), vec![])]
    );
    assert_eq!(
        h.protection_rule_calls().await,
        vec![waiting_report(run_id)]
    );

    // Someone who is not on the approver list.
    let reply = h.click("U0MALLORY", "shipgate_approve", &dep).await;
    assert_eq!((reply.status, &reply.body), (200, &Value::Null));
    // The requester (octocat, mapped from U0OCTOCAT) may not approve their own deploy.
    h.click("U0OCTOCAT", "shipgate_approve", &dep).await;
    assert_eq!(
        h.deployment(&dep.id).await.version,
        dep.version,
        "refusals change nothing"
    );

    // First real approval.
    h.click("U0ALICE01", "shipgate_approve", &dep).await;
    let after_one = h.deployment(&dep.id).await;
    assert_eq!(after_one.state, State::AwaitingApproval);
    assert_eq!(after_one.approvals.len(), 1);
    // The same person again, in a new click.
    h.click("U0ALICE01", "shipgate_approve", &dep).await;
    assert_eq!(h.deployment(&dep.id).await.version, after_one.version);
    // Second approver: quorum.
    h.click("U0BOB0002", "shipgate_approve", &dep).await;

    assert_eq!(
        h.ephemeral_texts().await,
        vec![
            "Not counted: you are not an approver for production.",
            "Not counted: you triggered this deployment, so you cannot approve it.",
            "Approval recorded for production: 1 of 2.",
            "Not counted: you already approved this deployment (1 of 2).",
            "Approved: the production deployment of d6fde92 is approved by U0ALICE01, U0BOB0002. GitHub was told.",
        ]
    );
    for body in h.ephemerals().await {
        assert_eq!(body["response_type"], json!("ephemeral"));
        assert_eq!(body["replace_original"], json!(false));
    }

    let done = h.deployment(&dep.id).await;
    assert_eq!(done.state, State::Approved);
    assert_eq!(done.callback, CallbackState::Answered);
    let approvers: Vec<&str> = done.approvals.iter().map(|a| a.approver.as_str()).collect();
    assert_eq!(approvers, ["U0ALICE01", "U0BOB0002"]);
    assert_eq!(
        h.protection_rule_calls().await,
        vec![
            waiting_report(run_id),
            (
                rule_path(run_id),
                json!({
                    "environment_name": "production",
                    "state": "approved",
                    "comment": "shipgate approved this deployment to production: approved by U0ALICE01, U0BOB0002"
                })
            ),
        ]
    );
    assert_eq!(
        h.deployment_events(),
        vec![
            ("approval_requested".to_string(), vec![]),
            (
                "approval_progress".to_string(),
                vec!["U0ALICE01".to_string()]
            ),
            (
                "approved".to_string(),
                vec!["U0ALICE01".to_string(), "U0BOB0002".to_string()]
            ),
        ]
    );
    let audit = h.audit(&dep.id).await;
    let approvals_audit: Vec<(&str, &str, &str)> = audit
        .iter()
        .filter(|e| e.what == "approval_recorded" || e.what == "approve")
        .map(|e| (e.what.as_str(), e.actor.as_str(), e.why.as_str()))
        .collect();
    assert_eq!(
        approvals_audit,
        vec![
            ("approval_recorded", "slack:U0ALICE01", "1 of 2"),
            ("approval_recorded", "slack:U0BOB0002", "2 of 2"),
            (
                "approve",
                "slack:U0BOB0002",
                "approved by U0ALICE01, U0BOB0002"
            ),
        ]
    );
    assert!(whats(&audit).contains(&"github_answered"));

    // A late click after the decision changes nothing and says why.
    h.click("U0CAROL03", "shipgate_approve", &dep).await;
    assert_eq!(
        h.ephemeral_texts().await.last().map(String::as_str),
        Some("Not counted: this deployment was already decided: it is approved.")
    );
    assert_eq!(h.protection_rule_calls().await.len(), 2);
}

#[tokio::test]
async fn a_reject_click_rejects_at_once_when_no_reason_is_required() {
    let h = Harness::new().await;
    let run_id = 5151;
    let dep = h.gate_production(run_id).await;

    let reply = h.click("U0CAROL03", "shipgate_reject", &dep).await;
    assert_eq!((reply.status, &reply.body), (200, &Value::Null));

    let done = h.deployment(&dep.id).await;
    assert_eq!(done.state, State::Rejected);
    assert_eq!(done.reason.as_deref(), Some("rejected by U0CAROL03"));
    assert_eq!(done.callback, CallbackState::Answered);
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        h.ephemeral_texts().await,
        vec!["Rejected: the production deployment of d6fde92 will not go out. GitHub was told."]
    );
    assert_eq!(
        h.protection_rule_calls().await,
        vec![
            waiting_report(run_id),
            (
                rule_path(run_id),
                json!({
                    "environment_name": "production",
                    "state": "rejected",
                    "comment": "shipgate rejected this deployment to production: rejected by U0CAROL03"
                })
            ),
        ]
    );
    assert_eq!(
        h.deployment_events().last().map(|e| e.0.as_str()),
        Some("rejected")
    );
    assert!(h.slack_requests("/api/views.open").await.is_empty());
}

#[tokio::test]
async fn a_required_reason_is_asked_for_in_a_modal_and_the_submission_rejects() {
    let h = Harness::with_policy(&common::policy_requiring_reasons()).await;
    let run_id = 6161;
    let dep = h.gate_production(run_id).await;
    let nonce = dep.button_nonce.clone().unwrap();

    // A non-approver gets no dialog, only the refusal.
    h.click("U0MALLORY", "shipgate_reject", &dep).await;
    assert!(h.slack_requests("/api/views.open").await.is_empty());
    assert_eq!(
        h.ephemeral_texts().await,
        vec!["Not counted: you are not an approver for production."]
    );

    // An approver's Reject opens the reason dialog and changes nothing yet.
    let payload = h.click_payload("U0CAROL03", "shipgate_reject", &dep);
    let reply = h.send_payload(&payload).await;
    assert_eq!((reply.status, &reply.body), (200, &Value::Null));
    assert_eq!(h.deployment(&dep.id).await.state, State::AwaitingApproval);
    let opened = h.slack_requests("/api/views.open").await;
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer xoxb-test-bot-token")
    );
    let metadata = format!("{}:{nonce}", dep.id);
    let body: Value = serde_json::from_slice(&opened[0].body).unwrap();
    assert_eq!(
        body,
        json!({
            "trigger_id": payload["trigger_id"],
            "view": {
                "type": "modal",
                "callback_id": "shipgate_reject_reason",
                "private_metadata": metadata,
                "title": { "type": "plain_text", "text": "Reject deployment" },
                "submit": { "type": "plain_text", "text": "Reject" },
                "close": { "type": "plain_text", "text": "Cancel" },
                "blocks": [{
                    "type": "input",
                    "block_id": "shipgate_reason",
                    "label": { "type": "plain_text", "text": "Why reject this production deployment?" },
                    "element": { "type": "plain_text_input", "action_id": "reason", "multiline": true, "max_length": 500 }
                }]
            }
        })
    );
    assert_eq!(
        h.ephemeral_texts().await.len(),
        1,
        "no ephemeral for the dialog"
    );

    // A blank reason keeps the dialog open with an error; nothing changes.
    let reply = h
        .send_payload(&reason_submission(
            "U0CAROL03",
            &metadata,
            "   ",
            "V0REASON",
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({ "response_action": "errors", "errors": { "shipgate_reason": "Give a reason for the rejection." } })
    );
    assert_eq!(h.deployment(&dep.id).await.state, State::AwaitingApproval);

    // The typed reason rejects, and the dialog shows what happened.
    let submission = reason_submission(
        "U0CAROL03",
        &metadata,
        "error rate too high in staging",
        "V0REASON",
    );
    let reply = h.send_payload(&submission).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({
            "response_action": "update",
            "view": {
                "type": "modal",
                "title": { "type": "plain_text", "text": "shipgate" },
                "close": { "type": "plain_text", "text": "Close" },
                "blocks": [{ "type": "section", "text": { "type": "plain_text", "text":
                    "Rejected: the production deployment of d6fde92 will not go out (reason: error rate too high in staging). GitHub was told." } }]
            }
        })
    );
    let done = h.deployment(&dep.id).await;
    assert_eq!(done.state, State::Rejected);
    assert_eq!(
        done.reason.as_deref(),
        Some("rejected by U0CAROL03: error rate too high in staging")
    );
    assert_eq!(
        h.protection_rule_calls().await,
        vec![
            waiting_report(run_id),
            (
                rule_path(run_id),
                json!({
                    "environment_name": "production",
                    "state": "rejected",
                    "comment": "shipgate rejected this deployment to production: rejected by U0CAROL03: error rate too high in staging"
                })
            ),
        ]
    );
    assert_eq!(
        h.deployment_events().last().map(|e| e.0.as_str()),
        Some("rejected")
    );

    // Slack sending the same submission again changes nothing.
    let again = h.send_payload(&submission).await;
    assert_eq!((again.status, &again.body), (200, &Value::Null));
    assert_eq!(h.deployment(&dep.id).await.version, done.version);
    assert_eq!(h.protection_rule_calls().await.len(), 2);
}

#[tokio::test]
async fn a_click_after_the_approval_ttl_is_refused_as_expired_and_changes_nothing() {
    let h = Harness::new().await;
    let dep = h.gate_production(7171).await;
    h.clock.advance(Duration::from_secs(3600));

    h.click("U0ALICE01", "shipgate_approve", &dep).await;
    h.click("U0BOB0002", "shipgate_reject", &dep).await;

    assert_eq!(
        h.ephemeral_texts().await,
        vec![
            "Not counted: this approval request expired at 2025-06-02T11:00:00Z.",
            "Not counted: this approval request expired at 2025-06-02T11:00:00Z.",
        ]
    );
    let after = h.deployment(&dep.id).await;
    assert_eq!(after, dep);
    assert_eq!(h.deployment_events().len(), 1);
    assert_eq!(h.protection_rule_calls().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvers_clicking_at_the_same_instant_lead_to_one_github_answer() {
    // Several rounds, because an interleaving is not guaranteed to happen in any one of them.
    for round in 0..4u64 {
        let h = Harness::new().await;
        let run_id = 8000 + round;
        let dep = h.gate_production(run_id).await;

        let clicks = ["U0ALICE01", "U0BOB0002", "U0CAROL03"]
            .map(|u| h.click_payload(u, "shipgate_approve", &dep));
        let replies = futures::future::join_all(clicks.iter().map(|p| h.send_payload(p))).await;
        assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");

        let done = h.deployment(&dep.id).await;
        assert_eq!(done.state, State::Approved);
        assert_eq!(done.approvals.len(), 2, "exactly the quorum is recorded");
        let approved_calls: Vec<_> = h
            .protection_rule_calls()
            .await
            .into_iter()
            .filter(|(_, body)| body["state"] == json!("approved"))
            .collect();
        assert_eq!(approved_calls.len(), 1, "round {round}");
        // Concurrent clicks publish in whatever order their saves finish; the notifier
        // renders from stored state, so only the set of notifications matters.
        let mut events: Vec<String> = h.deployment_events().into_iter().map(|e| e.0).collect();
        events.sort();
        assert_eq!(
            events,
            ["approval_progress", "approval_requested", "approved"]
        );

        let mut texts = h.ephemeral_texts().await;
        texts.sort();
        assert_eq!(texts.len(), 3);
        assert_eq!(texts[0], "Approval recorded for production: 1 of 2.");
        assert!(
            texts[1].starts_with("Approved: the production deployment of d6fde92 is approved by "),
            "{texts:?}"
        );
        assert_eq!(
            texts[2],
            "Not counted: this deployment was already decided: it is approved."
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_approvers_clicking_together_both_count() {
    for round in 0..4u64 {
        let h = Harness::new().await;
        let dep = h.gate_production(8100 + round).await;
        let clicks =
            ["U0ALICE01", "U0BOB0002"].map(|u| h.click_payload(u, "shipgate_approve", &dep));
        futures::future::join_all(clicks.iter().map(|p| h.send_payload(p))).await;
        let done = h.deployment(&dep.id).await;
        assert_eq!(done.state, State::Approved, "round {round}");
        let mut who: Vec<&str> = done.approvals.iter().map(|a| a.approver.as_str()).collect();
        who.sort();
        assert_eq!(who, ["U0ALICE01", "U0BOB0002"]);
        let approved = h
            .protection_rule_calls()
            .await
            .into_iter()
            .filter(|(_, body)| body["state"] == json!("approved"))
            .count();
        assert_eq!(approved, 1, "round {round}");
    }
}

#[tokio::test]
async fn a_slow_github_does_not_hold_up_the_click_and_the_answer_stays_pending() {
    let h = Harness::with_slow_github(Duration::from_secs(3)).await;
    let run_id = 9191;
    let dep = h.gate_production(run_id).await;
    h.click("U0ALICE01", "shipgate_approve", &dep).await;

    let started = Instant::now();
    let reply = h.click("U0BOB0002", "shipgate_approve", &dep).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200);
    assert!(
        took < Duration::from_millis(2900),
        "the click took {took:?}"
    );

    let done = h.deployment(&dep.id).await;
    assert_eq!(done.state, State::Approved);
    assert_eq!(
        done.callback,
        CallbackState::Pending,
        "left for the sweeper"
    );
    assert_eq!(
        h.ephemeral_texts().await.last().map(String::as_str),
        Some("Approved: the production deployment of d6fde92 is approved by U0ALICE01, U0BOB0002. GitHub will be told shortly.")
    );

    // The click's own attempt was cut short while GitHub was still busy with it, so its lease
    // on the answer stands: nobody sends a second answer until it has expired.
    assert!(
        !shipgate::service::answer::answer_github(h.services(), &dep.id)
            .await
            .unwrap()
    );
    // What the sweeper does once the lease has run out: the answer goes out and is recorded.
    h.clock.advance(Duration::from_secs(121));
    assert!(
        shipgate::service::answer::answer_github(h.services(), &dep.id)
            .await
            .unwrap()
    );
    assert_eq!(
        h.deployment(&dep.id).await.callback,
        CallbackState::Answered
    );
    let last = h.protection_rule_calls().await.pop().unwrap();
    assert_eq!(last.1["state"], json!("approved"));
}

#[tokio::test]
async fn a_button_from_another_message_is_stale_and_changes_nothing() {
    let h = Harness::new().await;
    let dep = h.gate_production(1111).await;

    let forged_nonce = h.click_payload_with_value(
        "U0ALICE01",
        "shipgate_approve",
        &format!("{}:not-the-nonce", dep.id),
    );
    h.send_payload(&forged_nonce).await;
    let unknown = h.click_payload_with_value("U0ALICE01", "shipgate_approve", "dep-unknown:abc");
    h.send_payload(&unknown).await;

    let stale = "This button is out of date: use the latest shipgate message for this deployment.";
    assert_eq!(h.ephemeral_texts().await, vec![stale, stale]);
    assert_eq!(h.deployment(&dep.id).await, dep);
    assert_eq!(h.deployment_events().len(), 1);
}

#[tokio::test]
async fn a_rollback_click_on_a_deployment_that_is_not_running_changes_nothing() {
    let h = Harness::new().await;
    let dep = h.gate_production(1212).await;

    let reply = h.click("U0ALICE01", "shipgate_rollback", &dep).await;
    assert_eq!((reply.status, &reply.body), (200, &Value::Null));

    assert_eq!(
        h.ephemeral_texts().await,
        vec![format!(
            "Not rolled back: nothing of {} has been deployed to production yet.",
            dep.repo
        )]
    );
    assert_eq!(h.deployment(&dep.id).await, dep);
}

const FREEZE_POLICY_TAIL: &str = r#"
[[environments.production.freezes]]
from = "2025-06-01"
to = "2025-06-08"
timezone = "UTC"
reason = "quarter close"

[environments.production.break_glass]
allowed = true
extra_approvals = 1
require_reason = true
"#;

#[tokio::test]
async fn a_break_glass_deploy_needs_the_extra_approval_and_is_announced_and_audited() {
    let policy = format!("{}{FREEZE_POLICY_TAIL}", common::POLICY);
    let h = Harness::with_policy(&policy).await;
    h.repo
        .record_sha_fact(
            "OK#staging",
            &shipgate::store::repo::ShaFact {
                repo: REPO.parse().unwrap(),
                sha: SHA.parse().unwrap(),
                at: common::start_time(),
                detail: None,
            },
        )
        .await
        .unwrap();
    let request = ProtectionRuleRequest {
        repo: REPO.parse().unwrap(),
        environment: "production".parse().unwrap(),
        event: "workflow_dispatch".into(),
        git_ref: "main".into(),
        sha: SHA.parse().unwrap(),
        run_id: 1313,
        installation_id: Some(common::INSTALLATION_ID),
        requester: "octocat".into(),
        break_glass_reason: Some("hotfix for the payments outage".into()),
    };
    let outcome = gate::request(h.services(), &request).await.unwrap();
    let gate::GateOutcome::AwaitingApproval {
        deployment_id,
        required,
    } = outcome
    else {
        panic!("expected awaiting approval, got {outcome:?}");
    };
    assert_eq!(required, 3);
    let dep = h.deployment(&deployment_id).await;

    for user in ["U0ALICE01", "U0BOB0002", "U0CAROL03"] {
        h.click(user, "shipgate_approve", &dep).await;
    }
    assert_eq!(
        h.ephemeral_texts().await,
        vec![
            "Break-glass approval recorded for production: 1 of 3.",
            "Break-glass approval recorded for production: 2 of 3.",
            "Approved: the production break-glass deployment of d6fde92 is approved by U0ALICE01, U0BOB0002, U0CAROL03. GitHub was told.",
        ]
    );
    let done = h.deployment(&deployment_id).await;
    assert_eq!(done.state, State::Approved);
    let audit = h.audit(&deployment_id).await;
    let note = audit
        .iter()
        .find(|e| e.what == "break_glass_approved")
        .expect("audited");
    assert_eq!(
        (note.actor.as_str(), note.why.as_str()),
        ("slack:U0CAROL03", "hotfix for the payments outage")
    );
}

/// A store that holds the first `gated` reads of deployment records until that many are
/// waiting, so concurrent clicks are guaranteed to read the same version before either saves.
struct Lockstep {
    inner: std::sync::Arc<dyn shipgate::store::ItemStore>,
    gated: std::sync::atomic::AtomicUsize,
    barrier: tokio::sync::Barrier,
}

#[async_trait::async_trait]
impl shipgate::store::ItemStore for Lockstep {
    async fn get(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<shipgate::store::Item>, shipgate::store::StoreError> {
        use std::sync::atomic::Ordering;
        let item = self.inner.get(pk, sk).await;
        let gate = pk.starts_with("DEP#")
            && self
                .gated
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if gate {
            self.barrier.wait().await;
        }
        item
    }
    async fn write(
        &self,
        write: shipgate::store::Write,
    ) -> Result<(), shipgate::store::StoreError> {
        self.inner.write(write).await
    }
    async fn transact(
        &self,
        writes: Vec<shipgate::store::Write>,
    ) -> Result<(), shipgate::store::StoreError> {
        self.inner.transact(writes).await
    }
    async fn query(
        &self,
        query: shipgate::store::Query,
    ) -> Result<Vec<shipgate::store::Item>, shipgate::store::StoreError> {
        self.inner.query(query).await
    }
    async fn scan(
        &self,
        segment: u32,
        total_segments: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<shipgate::store::Item>, Option<String>), shipgate::store::StoreError> {
        self.inner.scan(segment, total_segments, cursor).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_approvals_read_from_the_same_version_both_count_and_github_hears_once() {
    let h = Harness::new().await;
    let run_id = 8200;
    let dep = h.gate_production(run_id).await;
    let store = std::sync::Arc::new(Lockstep {
        inner: h.store.clone(),
        gated: std::sync::atomic::AtomicUsize::new(2),
        barrier: tokio::sync::Barrier::new(2),
    });
    let mut app = h.app.clone();
    app.services.repo = shipgate::store::Repo::new(store);

    let clicks = ["U0ALICE01", "U0BOB0002"].map(|u| h.click_payload(u, "shipgate_approve", &dep));
    let replies = futures::future::join_all(clicks.iter().map(|p| {
        let body = common::form_body(p);
        let now = shipgate::service::Clock::now(&h.clock).as_second();
        slack_approval::handle(
            &app,
            common::signed_request(&body, now, common::SIGNING_SECRET),
        )
    }))
    .await;
    assert!(replies.iter().all(|r| r.status() == 200));

    let done = h.deployment(&dep.id).await;
    assert_eq!(done.state, State::Approved);
    assert_eq!(
        done.approvals.len(),
        2,
        "the click that lost the race was re-applied"
    );
    let approved = h
        .protection_rule_calls()
        .await
        .into_iter()
        .filter(|(_, body)| body["state"] == json!("approved"))
        .count();
    assert_eq!(approved, 1);
}

#[tokio::test]
async fn an_approval_completed_after_the_deploy_window_closed_is_held_until_it_opens() {
    // Production deploys Monday to Friday, 09:00 to 17:00 UTC; requests keep for a day.
    let policy = format!(
        "{}\n[[environments.production.windows]]\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\nstart = \"09:00\"\nend = \"17:00\"\n",
        common::POLICY.replace("approval_ttl = \"1h\"", "approval_ttl = \"1d\"")
    );
    let h = Harness::with_policy(&policy).await;
    // Monday 10:00: inside the window, so the request waits for its two approvals.
    let dep = h.gate_production(9301).await;
    assert_eq!(dep.state, State::AwaitingApproval);
    h.click("U0ALICE01", "shipgate_approve", &dep).await;

    // Monday 17:30: the second approval arrives after the window closed.
    h.clock.advance(Duration::from_secs(7 * 3600 + 30 * 60));
    let reply = h.click("U0BOB0002", "shipgate_approve", &dep).await;
    assert_eq!(reply.status, 200);
    let held = h.deployment(&dep.id).await;
    assert_eq!(
        held.state,
        State::AwaitingApproval,
        "not approved outside the window"
    );
    assert_eq!(held.approvals.len(), 2);
    let told = h
        .ephemeral_texts()
        .await
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(
        told.starts_with("Approval recorded for production: the approvals are complete, but outside deploy window"),
        "{told}"
    );
    let decisions = |calls: Vec<(String, Value)>| {
        calls
            .into_iter()
            .filter(|(_, b)| b.get("state").is_some())
            .count()
    };
    assert_eq!(
        decisions(h.protection_rule_calls().await),
        0,
        "GitHub not told yet"
    );
    // A sweep while the window is still closed changes nothing.
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert!(report.held_released.is_empty(), "{report:?}");

    // Tuesday 09:30: the window is open again; the sweep lets it go.
    h.clock.advance(Duration::from_secs(16 * 3600));
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(
        report.held_released,
        std::slice::from_ref(&dep.id),
        "{report:?}"
    );
    let approved = h.deployment(&dep.id).await;
    assert_eq!(approved.state, State::Approved);
    assert_eq!(approved.reason, None);
    let calls = h.protection_rule_calls().await;
    let last = calls.last().cloned().expect("an answer");
    assert_eq!(last.1["state"], json!("approved"));
    assert_eq!(decisions(calls), 1);
}
