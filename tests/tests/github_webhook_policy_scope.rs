//! The gate with a policy for many repositories, through the public route: a section limited by
//! `repos` rejects a repository it does not govern with the reason, and an override for one
//! repository (3 approvers for `acme/payments`) applies while the others keep the section's value.

#[path = "common/github_webhook.rs"]
mod common;

use common::{protection_rule, Harness};
use serde_json::{json, Value};
use shipgate::domain::deployment::State;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

const POLICY: &str = r#"
[identities]
U0APPROV1 = "alice-ops"
U0APPROV2 = "bob-sre"
U0APPROV3 = "carol-lead"

[environments.production]
repos = ["acme/*"]
approvals_required = 2
approvers = ["U0APPROV1", "U0APPROV2", "U0APPROV3"]

[[environments.production.overrides]]
repos = ["acme/payments"]
approvals_required = 3
"#;

/// A protection-rule delivery for `repo` (the fixture's repository replaced).
fn protection_rule_for(repo: &str, run_id: u64) -> Value {
    let mut p = protection_rule("production", run_id, SHA, "main");
    p["repository"]["full_name"] = json!(repo);
    if let Some((owner, name)) = repo.split_once('/') {
        p["repository"]["name"] = json!(name);
        p["repository"]["owner"]["login"] = json!(owner);
    }
    p["deployment_callback_url"] = json!(format!(
        "https://api.github.com/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule"
    ));
    p
}

#[tokio::test]
async fn a_request_from_a_repository_no_section_governs_is_rejected_with_the_reason() {
    let h = Harness::with_policy(POLICY).await;

    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule_for("other/api", 801),
        )
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.str("decision"), "rejected", "{reply:?}");
    let dep = h.deployment(reply.str("deployment_id")).await;
    assert_eq!(dep.state, State::Rejected);
    let calls = h.protection_rule_calls().await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].0,
        "/repos/other/api/actions/runs/801/deployment_protection_rule"
    );
    assert_eq!(calls[0].1["state"], json!("rejected"));
    let comment = calls[0].1["comment"].as_str().unwrap_or_default();
    assert!(
        comment.contains(
            "no policy section governs other/api in \"production\": [environments.production] at"
        ) && comment.contains("governs only repos = [\"acme/*\"]"),
        "{comment}"
    );
}

#[tokio::test]
async fn an_override_makes_payments_wait_for_three_approvals() {
    let h = Harness::with_policy(POLICY).await;

    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule_for("acme/payments", 802),
        )
        .await;

    assert_eq!(reply.str("decision"), "awaiting_approval", "{reply:?}");
    assert_eq!(reply.body["approvals_required"], json!(3));
    let dep = h.deployment(reply.str("deployment_id")).await;
    assert_eq!(dep.repo.as_str(), "acme/payments");
    assert_eq!(dep.approvals_required, 3);
}

#[tokio::test]
async fn a_repository_without_an_override_keeps_the_sections_two_approvals() {
    let h = Harness::with_policy(POLICY).await;

    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule_for("acme/web", 803),
        )
        .await;

    assert_eq!(reply.str("decision"), "awaiting_approval", "{reply:?}");
    assert_eq!(reply.body["approvals_required"], json!(2));
    let dep = h.deployment(reply.str("deployment_id")).await;
    assert_eq!(dep.approvals_required, 2);
}
