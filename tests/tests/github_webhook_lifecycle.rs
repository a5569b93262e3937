//! The deployment lifecycle after the gate, driven by GitHub's `deployment` and
//! `deployment_status` deliveries: linking, deploying, verifying, succeeding or failing, and
//! statuses that arrive late, twice, or for deployments shipgate never gated.

#[path = "common/github_webhook.rs"]
mod common;

use std::time::Duration;

use common::{deployment_created, deployment_status, protection_rule, Harness, REPO};
use jiff::SignedDuration;
use serde_json::json;
use shipgate::domain::deployment::State;
use shipgate::notify::NotificationBody;
use shipgate::service::lifecycle::{self, LifecycleOutcome};

const SHA: &str = "fedcba9876543210fedcba9876543210fedcba98";
const RUN: u64 = 4242;
const GH_DEPLOYMENT: u64 = 9001;

/// Gates one staging run and returns the approved deployment's id.
async fn approved(h: &Harness, run_id: u64, sha: &str) -> String {
    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", run_id, sha, "main"),
        )
        .await;
    assert_eq!(reply.str("decision"), "approved", "{reply:?}");
    reply.str("deployment_id").to_string()
}

async fn status(h: &Harness, state: &str) -> common::Reply {
    let reply = h
        .deliver_json(
            "deployment_status",
            &deployment_status(GH_DEPLOYMENT, "staging", SHA, Some(RUN), state),
        )
        .await;
    assert_eq!(reply.status, 200, "{state}: {reply:?}");
    reply
}

async fn audit_whats(h: &Harness, id: &str) -> Vec<String> {
    h.repo
        .audit_for_deployment(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.what)
        .collect()
}

fn published_events(h: &Harness) -> Vec<String> {
    h.publisher
        .taken()
        .into_iter()
        .filter_map(|n| match n.body {
            NotificationBody::Deployment { event, .. } => Some(event),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_deployment_goes_from_approved_to_succeeded_and_becomes_last_known_good() {
    let h = Harness::new().await;
    let id = approved(&h, RUN, SHA).await;

    // The GitHub deployment the run creates is linked to the gated record.
    let linked = h
        .deliver_json(
            "deployment",
            &deployment_created(GH_DEPLOYMENT, "staging", SHA, Some(RUN)),
        )
        .await;
    assert_eq!(linked.status, 200, "{linked:?}");
    assert_eq!(
        linked.body,
        json!({ "deployment_id": id, "state": "approved", "changed": false })
    );
    assert_eq!(
        h.deployment(&id).await.github_deployment_id,
        Some(GH_DEPLOYMENT)
    );
    assert_eq!(
        h.repo
            .deployment_for_github(GH_DEPLOYMENT)
            .await
            .unwrap()
            .map(|d| d.id),
        Some(id.clone())
    );

    h.advance(Duration::from_secs(30));
    let deploying = status(&h, "in_progress").await;
    assert_eq!(
        deploying.body,
        json!({ "deployment_id": id, "state": "deploying", "changed": true })
    );
    let dep = h.deployment(&id).await;
    assert_eq!(dep.deploy_started_at, Some(h.services().now()));

    h.advance(Duration::from_secs(90));
    let verifying = status(&h, "success").await;
    assert_eq!(
        verifying.body,
        json!({ "deployment_id": id, "state": "verifying", "changed": true })
    );
    let success_at = h.services().now();
    let dep = h.deployment(&id).await;
    assert_eq!(
        dep.verify_until,
        Some(success_at + SignedDuration::from_mins(10))
    );
    let heads = h
        .repo
        .heads(&testkit::scope(REPO, "staging"))
        .await
        .unwrap();
    assert_eq!(heads.current.as_ref().map(|c| c.sha.as_str()), Some(SHA));
    assert_eq!(
        heads.last_known_good, None,
        "not good until the window passes"
    );
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .unwrap(),
        Some(id.clone()),
        "verifying still holds the lock"
    );

    // Inside the window nothing happens.
    h.advance(Duration::from_secs(9 * 60 + 59));
    let early = lifecycle::finish_verification(h.services(), &id)
        .await
        .unwrap();
    assert_eq!(
        early,
        LifecycleOutcome::Unchanged {
            deployment_id: id.clone(),
            state: State::Verifying
        }
    );

    h.advance(Duration::from_secs(1));
    let done = lifecycle::finish_verification(h.services(), &id)
        .await
        .unwrap();
    assert_eq!(
        done,
        LifecycleOutcome::Moved {
            deployment_id: id.clone(),
            state: State::Succeeded
        }
    );

    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Succeeded);
    assert_eq!(dep.finished_at, Some(h.services().now()));
    let heads = h
        .repo
        .heads(&testkit::scope(REPO, "staging"))
        .await
        .unwrap();
    assert_eq!(
        heads
            .current
            .as_ref()
            .map(|c| (c.sha.as_str(), c.deployment_id.as_str())),
        Some((SHA, id.as_str()))
    );
    assert_eq!(
        heads.last_known_good.as_ref().map(|c| c.sha.as_str()),
        Some(SHA)
    );
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .unwrap(),
        None
    );
    assert!(h
        .repo
        .succeeded_in(common::REPO, SHA)
        .await
        .unwrap()
        .contains("staging"));

    let whats = audit_whats(&h, &id).await;
    for expected in [
        "requested",
        "auto_approve",
        "github_answered",
        "github_deployment_linked",
        "start_deploy",
        "begin_verification",
        "pass_verification",
    ] {
        assert!(
            whats.iter().any(|w| w == expected),
            "{expected} missing from {whats:?}"
        );
    }
    assert_eq!(
        published_events(&h),
        ["approved", "deploying", "verifying", "succeeded"]
    );
}

#[tokio::test]
async fn a_success_before_in_progress_ends_verifying_and_the_late_status_is_only_audited() {
    let h = Harness::new().await;
    let id = approved(&h, RUN, SHA).await;

    let verifying = status(&h, "success").await;
    assert_eq!(
        verifying.body,
        json!({ "deployment_id": id, "state": "verifying", "changed": true })
    );
    let before = h.deployment(&id).await;

    let late = status(&h, "in_progress").await;
    assert_eq!(
        late.body,
        json!({ "deployment_id": id, "state": "verifying", "changed": false })
    );
    let after = h.deployment(&id).await;
    assert_eq!(after, before, "the late status changed the record");

    let audit = h.repo.audit_for_deployment(&id).await.unwrap();
    let ignored: Vec<_> = audit
        .iter()
        .filter(|e| e.what == "status_ignored")
        .collect();
    assert_eq!(ignored.len(), 1, "{audit:?}");
    assert_eq!(ignored[0].why, "in_progress arrived while verifying");
    assert_eq!(ignored[0].from, None);
    // A status that skipped `in_progress` still links the GitHub deployment.
    assert_eq!(after.github_deployment_id, Some(GH_DEPLOYMENT));
}

#[tokio::test]
async fn a_repeated_success_status_changes_nothing() {
    let h = Harness::new().await;
    let id = approved(&h, RUN, SHA).await;
    status(&h, "in_progress").await;
    status(&h, "success").await;
    let before = h.deployment(&id).await;

    h.advance(Duration::from_secs(60));
    let again = status(&h, "success").await;

    assert_eq!(again.body["changed"], json!(false));
    let after = h.deployment(&id).await;
    assert_eq!(after, before, "the window must not restart");
}

#[tokio::test]
async fn a_failure_fails_the_deployment_and_releases_the_lock() {
    let h = Harness::new().await;
    let id = approved(&h, RUN, SHA).await;
    status(&h, "in_progress").await;

    let failed = status(&h, "failure").await;

    assert_eq!(
        failed.body,
        json!({ "deployment_id": id, "state": "failed", "changed": true })
    );
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Failed);
    assert_eq!(
        dep.reason.as_deref(),
        Some("deployment failed: deploy failure")
    );
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .unwrap(),
        None
    );
    let heads = h
        .repo
        .heads(&testkit::scope(REPO, "staging"))
        .await
        .unwrap();
    assert_eq!(heads.last_known_good, None);
    assert!(published_events(&h).contains(&"failed".to_string()));

    // The environment is free again: the next run is approved.
    approved(&h, RUN + 1, "1111111111111111111111111111111111111111").await;
}

#[tokio::test]
async fn an_error_status_also_fails_the_deployment() {
    let h = Harness::new().await;
    let id = approved(&h, RUN, SHA).await;
    let failed = status(&h, "error").await;
    assert_eq!(failed.str("state"), "failed");
    assert_eq!(h.deployment(&id).await.state, State::Failed);
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_status_for_an_unknown_deployment_is_recorded_not_an_error() {
    let h = Harness::new().await;
    // Another sha holds the lock, so the lock-holder fallback must not claim this status.
    let holder = approved(&h, 1, "2222222222222222222222222222222222222222").await;

    let reply = h
        .deliver_json(
            "deployment_status",
            &deployment_status(123_456, "staging", SHA, None, "success"),
        )
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, json!({ "tracked": false }));
    let recorded = h.partition("META#untracked-status").await;
    assert_eq!(recorded.len(), 1);
    let detail: serde_json::Value = serde_json::from_str(&recorded[0].data).unwrap();
    assert_eq!(
        detail,
        json!({ "repo": common::REPO, "environment": "staging", "sha": SHA, "state": "success" })
    );
    assert_eq!(h.deployments().await.len(), 1);
    assert_eq!(h.deployment(&holder).await.state, State::Approved);
}

#[tokio::test]
async fn a_deployment_not_made_by_the_gated_run_is_linked_through_the_lock_holder() {
    let h = Harness::new().await;
    let id = approved(&h, RUN, SHA).await;

    // Created by some other tool: no workflow run, same sha as the lock holder.
    let linked = h
        .deliver_json(
            "deployment",
            &deployment_created(GH_DEPLOYMENT, "staging", SHA, None),
        )
        .await;

    assert_eq!(linked.str("deployment_id"), id);
    assert_eq!(
        h.deployment(&id).await.github_deployment_id,
        Some(GH_DEPLOYMENT)
    );
    let moved = h
        .deliver_json(
            "deployment_status",
            &deployment_status(GH_DEPLOYMENT, "staging", SHA, None, "in_progress"),
        )
        .await;
    assert_eq!(moved.str("state"), "deploying");
}

#[tokio::test]
async fn a_deployment_event_for_an_ungated_sha_is_recorded_as_untracked() {
    let h = Harness::new().await;
    let reply = h
        .deliver_json(
            "deployment",
            &deployment_created(55, "staging", SHA, Some(77)),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, json!({ "tracked": false }));
    assert_eq!(h.partition("META#untracked-deployment").await.len(), 1);
    assert!(h.deployments().await.is_empty());
}
