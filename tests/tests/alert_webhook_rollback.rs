//! Incidents and automatic rollback, end to end: deployments driven through the GitHub
//! webhook handler, alerts through the alert routes, the exact GitHub REST calls checked on a
//! wiremock stand-in.

#[path = "common/alert_webhook.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::domain::incident::IncidentStatus;
use shipgate::domain::policy::Severity;
use shipgate::domain::short_sha as short;
use shipgate::service::gate::{self, GateOutcome, ProtectionRuleRequest};
use shipgate::service::rollback::{self, RollbackOutcome};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const ROUTE: &str = "/webhooks/alertmanager";

#[tokio::test]
async fn a_critical_alert_during_verification_rolls_back_to_the_last_known_good_sha_and_resolves() {
    let h = Harness::new().await;
    let a = h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy("production", SHA_B, 102, 5002).await;
    h.advance_mins(2);
    let fired_at = h.now();

    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "firing",
                "fp-api-errors",
                labels("production", "critical", "ApiHighErrorRate"),
                fired_at,
                None,
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        (reply.count("opened"), reply.count("rollbacks_started")),
        (1, 1),
        "{reply:?}"
    );
    let incident_id = "alertmanager:fp-api-errors";

    // Exactly one rollback deployment, of the last known good sha, carrying the rollback payload.
    let calls = h.github_calls("/deployments").await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.method.as_str(), "POST");
    assert_eq!(call.url.path(), format!("/repos/{REPO}/deployments"));
    assert_eq!(
        call.headers["authorization"].to_str().unwrap(),
        format!("Bearer {INSTALLATION_TOKEN}")
    );
    let reason = format!("critical alert \"API 5xx ratio above 5%\" ({incident_id}) during the verification window of {}", short(SHA_B));
    let body: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(
        body,
        json!({
            "ref": SHA_A,
            "environment": "production",
            "description": format!("shipgate rollback of {} to {}", short(SHA_B), short(SHA_A)),
            "payload": { "shipgate_rollback_of": b, "reason": reason },
            "auto_merge": false,
            "required_contexts": [],
            "task": "deploy",
        })
    );

    let dep = h.deployment(&b).await;
    assert_eq!(dep.state, State::RollingBack);
    let rb = dep.rollback.clone().unwrap();
    assert_eq!(
        (rb.target_sha.as_str(), rb.started_by.as_str()),
        (SHA_A, "alert:alertmanager:fp-api-errors")
    );
    assert_eq!(
        (rb.github_deployment_id, rb.started_at),
        (Some(ROLLBACK_GITHUB_ID), fired_at)
    );
    let incident = h.incident(incident_id).await;
    assert_eq!(incident.caused_by_deployment.as_deref(), Some(b.as_str()));
    assert_eq!(incident.severity, Severity::Critical);
    assert!(h
        .deployment_events()
        .contains(&(b.clone(), "rollback_started".to_string())));

    // The rollback's own deployment succeeds: GitHub tells shipgate through its webhook.
    h.advance_mins(4);
    let status = deployment_status(
        ROLLBACK_GITHUB_ID,
        "production",
        SHA_A,
        None,
        "success",
        json!({ "shipgate_rollback_of": b }),
    );
    let reply = h.deliver("deployment_status", &status).await;
    assert_eq!(
        (reply.status, reply.str("state")),
        (200, "rolled_back"),
        "{reply:?}"
    );
    let dep = h.deployment(&b).await;
    assert_eq!(dep.state, State::RolledBack);
    let rb = dep.rollback.unwrap();
    assert_eq!(
        rb.finished_at.unwrap().duration_since(rb.started_at),
        jiff::SignedDuration::from_mins(4)
    );
    let heads = h
        .repo
        .heads(&testkit::scope(REPO, "production"))
        .await
        .unwrap();
    assert_eq!(heads.current.unwrap().sha, SHA_A);
    assert_eq!(heads.last_known_good.unwrap().deployment_id, a);
    assert!(h
        .deployment_events()
        .contains(&(b.clone(), "rolled_back".to_string())));

    // The alert resolves: the incident closes with its time to restore, under the same id.
    h.advance_mins(3);
    let ended_at = h.now() - jiff::SignedDuration::from_mins(1);
    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "resolved",
                "fp-api-errors",
                labels("production", "critical", "ApiHighErrorRate"),
                fired_at,
                Some(ended_at),
            ),
        )
        .await;
    assert_eq!(
        (reply.status, reply.count("resolved")),
        (200, 1),
        "{reply:?}"
    );
    assert_eq!(
        reply.body["items"][0]["time_to_restore_secs"],
        json!(6 * 60)
    );
    let incident = h.incident(incident_id).await;
    assert_eq!(
        (incident.status, incident.resolved_at),
        (IncidentStatus::Resolved, Some(ended_at))
    );
    assert_eq!(
        h.incident_notifications(),
        vec![
            (
                incident_id.to_string(),
                "open".to_string(),
                "critical".to_string(),
                Some(b.clone())
            ),
            (
                incident_id.to_string(),
                "resolved".to_string(),
                "critical".to_string(),
                Some(b.clone())
            ),
        ]
    );
    assert!(h
        .repo
        .open_incidents("production")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(h.github_calls("/deployments").await.len(), 1);
}

#[tokio::test]
async fn twenty_concurrent_alerts_in_the_window_start_exactly_one_rollback() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy("production", SHA_B, 102, 5002).await;
    h.advance_mins(1);
    let now = h.now();

    let bodies: Vec<Value> = (0..20)
        .map(|i| {
            alertmanager(
                "firing",
                &format!("fp-{i}"),
                labels("production", "critical", &format!("Alert{i}")),
                now,
                None,
            )
        })
        .collect();
    let sends = bodies.iter().map(|body| h.post_alert(ROUTE, body));
    let replies = futures::future::join_all(sends).await;

    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let outcomes: Vec<String> = replies
        .iter()
        .map(|r| {
            r.body["items"][0]["rollback"]["outcome"]
                .as_str()
                .unwrap_or("none")
                .to_string()
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "started").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(h.github_calls("/deployments").await.len(), 1);
    assert_eq!(h.deployment(&b).await.state, State::RollingBack);
    let starts = h
        .repo
        .audit_for_deployment(&b)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.what == "start_rollback")
        .count();
    assert_eq!(starts, 1);
    assert_eq!(
        h.deployment_events()
            .iter()
            .filter(|(_, e)| e == "rollback_started")
            .count(),
        1
    );
    // Each incident names the one repository that was verifying: it is indexed in its scope.
    assert!(h
        .repo
        .open_incidents("production")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        h.repo
            .scope_state(&testkit::scope(REPO, "production"))
            .await
            .unwrap()
            .open_incidents
            .len(),
        20
    );
    assert_eq!(
        h.repo
            .open_critical_incident_ids(&testkit::scope(REPO, "production"))
            .await
            .unwrap()
            .len(),
        20
    );
}

#[tokio::test]
async fn a_redelivered_notification_changes_nothing() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    h.deploy("production", SHA_B, 102, 5002).await;
    let body = alertmanager(
        "firing",
        "fp-1",
        labels("production", "critical", "ApiDown"),
        h.now(),
        None,
    );
    assert_eq!(h.post_alert(ROUTE, &body).await.count("opened"), 1);
    let before = h.incident("alertmanager:fp-1").await;
    let published = h.notifications().len();
    let calls = h.github_requests().await.len();

    let again = h.post_alert(ROUTE, &body).await;

    assert_eq!(
        (
            again.status,
            again.count("duplicates"),
            again.count("opened")
        ),
        (200, 1, 0),
        "{again:?}"
    );
    assert_eq!(h.incident("alertmanager:fp-1").await, before);
    assert_eq!(h.notifications().len(), published);
    assert_eq!(h.github_requests().await.len(), calls);
}

#[tokio::test]
async fn a_warning_alert_in_the_window_opens_an_incident_but_never_rolls_back() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy("production", SHA_B, 102, 5002).await;

    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "firing",
                "fp-w",
                labels("production", "warning", "SlowApi"),
                h.now(),
                None,
            ),
        )
        .await;

    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body["items"][0]["rollback"],
        json!({ "outcome": "skipped", "reason": "severity_not_rolling_back", "severity": "warning" })
    );
    assert!(h.github_calls("/deployments").await.is_empty());
    assert_eq!(h.deployment(&b).await.state, State::Verifying);
    assert_eq!(
        h.incident_notifications(),
        vec![(
            "alertmanager:fp-w".to_string(),
            "open".to_string(),
            "warning".to_string(),
            Some(b)
        )]
    );
}

#[tokio::test]
async fn a_critical_alert_after_the_window_closes_pages_but_does_not_roll_back() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy("production", SHA_B, 102, 5002).await;
    h.advance_mins(31);

    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "firing",
                "fp-late",
                labels("production", "critical", "ApiDown"),
                h.now(),
                None,
            ),
        )
        .await;

    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body["items"][0]["rollback"]["reason"],
        json!("no_deployment_verifying")
    );
    assert!(h.github_calls("/deployments").await.is_empty());
    // A window that has ended is over: the alert closes it as the sweeper would have.
    assert_eq!(h.deployment(&b).await.state, State::Succeeded);
    assert_eq!(
        h.incident("alertmanager:fp-late")
            .await
            .caused_by_deployment,
        None
    );
    // A critical incident notification is what pages (PagerDuty routing is per severity).
    assert_eq!(
        h.incident_notifications(),
        vec![(
            "alertmanager:fp-late".to_string(),
            "open".to_string(),
            "critical".to_string(),
            None
        )]
    );
}

#[tokio::test]
async fn a_critical_alert_after_the_first_deploy_pages_because_there_is_nothing_to_roll_back_to() {
    let h = Harness::new().await;
    let b = h.deploy("production", SHA_B, 102, 5002).await;

    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "firing",
                "fp-1",
                labels("production", "critical", "ApiDown"),
                h.now(),
                None,
            ),
        )
        .await;
    h.post_alert(
        ROUTE,
        &alertmanager(
            "firing",
            "fp-2",
            labels("production", "critical", "ApiSlow"),
            h.now(),
            None,
        ),
    )
    .await;

    assert_eq!(
        reply.body["items"][0]["rollback"],
        json!({ "outcome": "no_last_known_good", "deployment_id": b })
    );
    assert!(h.github_calls("/deployments").await.is_empty());
    assert_eq!(h.deployment(&b).await.state, State::Verifying);
    let jobs = h.jobs();
    assert_eq!(
        jobs.len(),
        1,
        "one page per deployment, however many alerts: {jobs:?}"
    );
    assert!(jobs[0].1, "the job notification pages");
    assert!(
        jobs[0]
            .0
            .contains("no last known good version to roll back to"),
        "{}",
        jobs[0].0
    );
}

#[tokio::test]
async fn a_failed_github_call_leaves_the_deployment_rolling_back_until_it_is_resumed() {
    let h = Harness::build(POLICY, 422, ALERT_TOKEN).await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy("production", SHA_B, 102, 5002).await;

    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "firing",
                "fp-1",
                labels("production", "critical", "ApiDown"),
                h.now(),
                None,
            ),
        )
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body["items"][0]["rollback"]["outcome"],
        json!("failed")
    );
    let dep = h.deployment(&b).await;
    // What Slack shows (the record) says it is still rolling back, why not yet, and that it
    // is retried.
    let reason = dep.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("rollback not started yet: ")
            && reason.ends_with("; retrying every 2 minutes"),
        "{reason}"
    );
    assert_eq!(
        (dep.state, dep.rollback.unwrap().github_deployment_id),
        (State::RollingBack, None)
    );
    assert!(h
        .deployment_events()
        .contains(&(b.clone(), "rollback_failed".to_string())));

    // GitHub recovers; the sweeper resumes the rollback.
    h.github.reset().await;
    mount_github(&h.github, 201).await;
    let outcome = rollback::resume(h.services(), &b).await.unwrap();
    assert_eq!(
        outcome,
        RollbackOutcome::Started {
            deployment_id: b.clone(),
            target_sha: SHA_A.into(),
            github_deployment_id: Some(ROLLBACK_GITHUB_ID)
        }
    );
    assert_eq!(
        h.deployment(&b)
            .await
            .rollback
            .unwrap()
            .github_deployment_id,
        Some(ROLLBACK_GITHUB_ID)
    );
    assert_eq!(
        h.deployment(&b).await.reason,
        None,
        "no longer waiting on a retry"
    );
    assert_eq!(
        rollback::resume(h.services(), &b).await.unwrap(),
        RollbackOutcome::AlreadyRollingBack { deployment_id: b }
    );
    assert_eq!(h.github_calls("/deployments").await.len(), 1);
}

#[tokio::test]
async fn a_workflow_rollback_dispatches_the_policy_workflow_on_the_last_known_good_ref() {
    let h = Harness::new().await;
    h.deploy_good("staging", SHA_A, 201, 6001).await;
    let b = h.deploy("staging", SHA_B, 202, 6002).await;

    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "firing",
                "fp-s",
                labels("staging", "critical", "ApiDown"),
                h.now(),
                None,
            ),
        )
        .await;

    assert_eq!(
        reply.body["items"][0]["rollback"]["outcome"],
        json!("started"),
        "{reply:?}"
    );
    let calls = h.github_calls("/dispatches").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].url.path(),
        format!("/repos/{REPO}/actions/workflows/rollback.yml/dispatches")
    );
    let body: Value = serde_json::from_slice(&calls[0].body).unwrap();
    let reason = format!("critical alert \"API 5xx ratio above 5%\" (alertmanager:fp-s) during the verification window of {}", short(SHA_B));
    let reason = format!("{reason} [shipgate-rollback: {b}]");
    assert_eq!(
        body,
        json!({ "ref": "main", "inputs": { "environment": "staging", "sha": SHA_A, "reason": reason }, "return_run_details": true })
    );
    assert!(h.github_calls("/deployments").await.is_empty());
    assert_eq!(h.deployment(&b).await.state, State::RollingBack);
    // Dispatched once: a resume finds the marker and does not dispatch again.
    assert_eq!(
        rollback::resume(h.services(), &b).await.unwrap(),
        RollbackOutcome::AlreadyRollingBack {
            deployment_id: b.clone()
        }
    );
    assert_eq!(h.github_calls("/dispatches").await.len(), 1);

    // The dispatched run's job reaches staging's protection rule while B holds the lock: it is
    // admitted as B's rollback and approved at once.
    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule("staging", SHA_A, 6003),
        )
        .await;
    assert_eq!(
        (
            reply.status,
            reply.str("decision"),
            reply.str("deployment_id")
        ),
        (200, "approved", b.as_str()),
        "{reply:?}"
    );
    let reviews = h
        .github_calls("/actions/runs/6003/deployment_protection_rule")
        .await;
    assert_eq!(reviews.len(), 1);
    let review: Value = serde_json::from_slice(&reviews[0].body).unwrap();
    assert_eq!(review["state"], json!("approved"));
    assert_eq!(review["environment_name"], json!("staging"));

    // The run's own GitHub deployment succeeds: B is rolled back and A runs again.
    let reply = h
        .deliver(
            "deployment_status",
            &deployment_status(6103, "staging", SHA_A, Some(6003), "success", json!({})),
        )
        .await;
    assert_eq!(
        (reply.status, reply.str("state")),
        (200, "rolled_back"),
        "{reply:?}"
    );
    let done = h.deployment(&b).await;
    assert_eq!(done.state, State::RolledBack);
    assert_eq!(
        done.github_deployment_id,
        Some(6002),
        "its own GitHub deployment keeps its id"
    );
    let heads = h
        .services()
        .repo
        .heads(&testkit::scope(REPO, "staging"))
        .await
        .unwrap();
    assert_eq!(heads.current.unwrap().sha, SHA_A);
    assert_eq!(
        h.services()
            .repo
            .lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn an_alert_for_an_unknown_environment_is_recorded_without_one() {
    let h = Harness::new().await;

    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "firing",
                "fp-qa",
                labels("qa-9", "critical", "ApiDown"),
                h.now(),
                None,
            ),
        )
        .await;

    assert_eq!(
        (reply.status, reply.count("unknown_environment")),
        (200, 1),
        "{reply:?}"
    );
    let incident = h.incident("alertmanager:fp-qa").await;
    assert_eq!(
        (incident.environment, incident.raw_environment.as_deref()),
        (None, Some("qa-9"))
    );
    assert_eq!(h.repo.open_incidents("_unknown").await.unwrap().len(), 1);
    assert_eq!(
        h.incident_notifications(),
        vec![(
            "alertmanager:fp-qa".to_string(),
            "open".to_string(),
            "critical".to_string(),
            None
        )]
    );
}

fn production_request(run_id: u64, break_glass: Option<&str>) -> ProtectionRuleRequest {
    ProtectionRuleRequest {
        repo: REPO.parse().unwrap(),
        environment: "production".parse().unwrap(),
        event: "push".into(),
        git_ref: "main".into(),
        sha: SHA_B.parse().unwrap(),
        run_id,
        installation_id: Some(INSTALLATION_ID),
        requester: "octocat".into(),
        break_glass_reason: break_glass.map(str::to_string),
    }
}

#[tokio::test]
async fn an_open_critical_incident_blocks_a_production_deploy_unless_break_glass() {
    let h = Harness::new().await;
    let started = h.now();
    h.post_alert(
        ROUTE,
        &alertmanager(
            "firing",
            "fp-x",
            labels("production", "critical", "ApiDown"),
            started,
            None,
        ),
    )
    .await;

    let blocked = gate::request(h.services(), &production_request(301, None))
        .await
        .unwrap();
    let GateOutcome::Rejected { message, .. } = blocked else {
        panic!("expected a rejection, got {blocked:?}")
    };
    assert!(message.contains("alertmanager:fp-x"), "{message}");

    let glass = gate::request(
        h.services(),
        &production_request(302, Some("hotfix for the outage")),
    )
    .await
    .unwrap();
    assert!(
        matches!(glass, GateOutcome::AwaitingApproval { required: 1, .. }),
        "{glass:?}"
    );
}

#[tokio::test]
async fn a_resolved_incident_no_longer_blocks_deploys() {
    let h = Harness::new().await;
    let started = h.now();
    let fired = alertmanager(
        "firing",
        "fp-x",
        labels("production", "critical", "ApiDown"),
        started,
        None,
    );
    h.post_alert(ROUTE, &fired).await;
    h.advance_mins(5);
    h.post_alert(
        ROUTE,
        &alertmanager(
            "resolved",
            "fp-x",
            labels("production", "critical", "ApiDown"),
            started,
            Some(h.now()),
        ),
    )
    .await;

    let outcome = gate::request(h.services(), &production_request(303, None))
        .await
        .unwrap();

    assert!(
        matches!(outcome, GateOutcome::Approved { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_manual_rollback_from_the_cli_returns_to_the_previous_good_version() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy_good("production", SHA_B, 102, 5002).await;

    // B is both current and last known good, so the previous succeeded deployment is the target.
    let outcome = rollback::start_manual(
        h.services(),
        &testkit::scope(REPO, "production"),
        "cli:alice",
    )
    .await
    .unwrap();

    assert_eq!(
        outcome,
        RollbackOutcome::Started {
            deployment_id: b.clone(),
            target_sha: SHA_A.into(),
            github_deployment_id: Some(ROLLBACK_GITHUB_ID)
        }
    );
    let dep = h.deployment(&b).await;
    assert_eq!(
        (dep.state, dep.rollback.unwrap().started_by.as_str()),
        (State::RollingBack, "cli:alice")
    );
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .unwrap()
            .as_deref(),
        Some(b.as_str())
    );
    let calls = h.github_calls("/deployments").await;
    assert_eq!(calls.len(), 1);
    let body: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(
        (
            body["ref"].as_str(),
            &body["payload"]["shipgate_rollback_of"]
        ),
        (Some(SHA_A), &json!(b))
    );

    // A second request finds it rolling back already.
    let again = rollback::start_manual(
        h.services(),
        &testkit::scope(REPO, "production"),
        "cli:alice",
    )
    .await
    .unwrap();
    assert_eq!(
        again,
        RollbackOutcome::AlreadyRollingBack { deployment_id: b }
    );
}

/// The harness's policy, but production rollbacks (like its deploys) need two approvals
/// from its approvers, within an hour, and not from whoever asked. U0ALICE00 is the Slack
/// identity of `alice`, the shell user in these tests.
const GATED_POLICY: &str = r#"
[identities]
U0APPROV1 = "alice-ops"
U0APPROV2 = "bob-ops"
U0ALICE00 = "alice"

[services]
api = "octo-org/shop"

[environments.staging]
verification_window = "10m"
rollback_on = ["critical"]
rollback = { method = "workflow", workflow = "rollback.yml" }

[environments.production]
approvals_required = 2
approvers = ["U0APPROV1", "U0APPROV2", "U0ALICE00"]
prevent_self_approval = true
approval_ttl = "1h"
verification_window = "30m"
rollback_on = ["critical"]
rollback = { method = "redeploy" }
"#;

/// The harness's services (same store, clock and GitHub) under [`GATED_POLICY`]: the policy
/// changed after the deploys went out ungated.
fn gated(h: &Harness) -> shipgate::service::Services {
    let mut svc = h.services().clone();
    svc.policy = std::sync::Arc::new(
        shipgate::domain::policy::Policy::parse("gated.toml", GATED_POLICY).unwrap(),
    );
    svc
}

fn nonce_of(dep: &shipgate::domain::deployment::Deployment) -> String {
    dep.rollback_request
        .as_ref()
        .expect("an open request")
        .nonce
        .clone()
}

#[tokio::test]
async fn a_cli_rollback_of_a_gated_environment_waits_for_two_approvals_then_starts_once() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy_good("production", SHA_B, 102, 5002).await;
    let svc = gated(&h);
    let expires_at = h.now() + jiff::SignedDuration::from_hours(1);

    let outcome = rollback::start_manual(&svc, &testkit::scope(REPO, "production"), "cli:alice")
        .await
        .unwrap();
    let awaiting = |opened: bool, have: u32| RollbackOutcome::AwaitingApprovals {
        deployment_id: b.clone(),
        target_sha: SHA_A.into(),
        requested_by: "cli:alice".into(),
        have,
        need: 2,
        expires_at,
        opened,
    };
    assert_eq!(outcome, awaiting(true, 0));
    assert_eq!(
        serde_json::to_value(&outcome).unwrap()["outcome"],
        json!("awaiting_approvals")
    );
    // Asking again reports the open request and changes nothing.
    let dep = h.deployment(&b).await;
    assert_eq!(
        rollback::start_manual(&svc, &testkit::scope(REPO, "production"), "cli:alice")
            .await
            .unwrap(),
        awaiting(false, 0)
    );
    assert_eq!(h.deployment(&b).await, dep);
    assert_eq!(dep.state, State::Succeeded);
    assert!(h.github_calls("/deployments").await.is_empty());
    assert_eq!(
        h.deployment_events().last(),
        Some(&(b.clone(), "rollback_requested".to_string()))
    );

    let nonce = nonce_of(&dep);
    let click = |user: &'static str| {
        let (svc, b, nonce) = (svc.clone(), b.clone(), nonce.clone());
        async move {
            rollback::approve_request(&svc, &b, &nonce, user)
                .await
                .unwrap()
        }
    };
    let refused = |refusal| RollbackOutcome::NotCounted {
        deployment_id: b.clone(),
        refusal,
    };
    use shipgate::domain::deployment::RollbackRefused as R;
    // alice asked from the CLI; her Slack identity may not approve her own request.
    assert_eq!(click("U0ALICE00").await, refused(R::SelfApproval));
    assert_eq!(
        click("U0NOBODY").await,
        refused(R::NotAnApprover {
            environment: "production".into()
        })
    );
    assert_eq!(
        click("U0APPROV1").await,
        RollbackOutcome::ApprovalRecorded {
            deployment_id: b.clone(),
            target_sha: SHA_A.into(),
            approver: "U0APPROV1".into(),
            have: 1,
            need: 2,
            expires_at,
        }
    );
    assert_eq!(
        click("U0APPROV1").await,
        refused(R::AlreadyApproved { have: 1, need: 2 })
    );
    assert!(h.github_calls("/deployments").await.is_empty());
    assert_eq!(
        rollback::approve_request(&svc, &b, "not-the-nonce", "U0APPROV2")
            .await
            .unwrap(),
        RollbackOutcome::StaleButton
    );

    assert_eq!(
        click("U0APPROV2").await,
        RollbackOutcome::Started {
            deployment_id: b.clone(),
            target_sha: SHA_A.into(),
            github_deployment_id: Some(ROLLBACK_GITHUB_ID),
        }
    );
    let calls = h.github_calls("/deployments").await;
    assert_eq!(calls.len(), 1);
    let body: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(
        body,
        json!({
            "ref": SHA_A,
            "environment": "production",
            "description": format!("shipgate rollback of {} to {}", short(SHA_B), short(SHA_A)),
            "payload": {
                "shipgate_rollback_of": b,
                "reason": "manual rollback requested by cli:alice and approved by U0APPROV1, U0APPROV2",
            },
            "auto_merge": false,
            "required_contexts": [],
            "task": "deploy",
        })
    );
    let done = h.deployment(&b).await;
    assert_eq!(
        (done.state, done.rollback_request.is_none()),
        (State::RollingBack, true)
    );
    assert_eq!(done.rollback.unwrap().started_by, "cli:alice");
    // The request's buttons are stale now, and the CLI finds the rollback under way.
    assert_eq!(click("U0APPROV1").await, RollbackOutcome::StaleButton);
    assert_eq!(
        rollback::start_manual(&svc, &testkit::scope(REPO, "production"), "cli:alice")
            .await
            .unwrap(),
        RollbackOutcome::AlreadyRollingBack { deployment_id: b }
    );
}

#[tokio::test]
async fn a_slack_user_who_is_not_an_approver_may_ask_for_a_rollback_but_not_approve_it() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy_good("production", SHA_B, 102, 5002).await;
    let svc = gated(&h);

    let outcome =
        rollback::start_manual(&svc, &testkit::scope(REPO, "production"), "slack:U0NOBODY")
            .await
            .unwrap();

    assert!(
        matches!(
            &outcome,
            RollbackOutcome::AwaitingApprovals { have: 0, need: 2, opened: true, requested_by, .. }
                if requested_by == "slack:U0NOBODY"
        ),
        "{outcome:?}"
    );
    let again = rollback::start_manual(&svc, &testkit::scope(REPO, "production"), "slack:U0NOBODY")
        .await
        .unwrap();
    assert_eq!(
        again,
        RollbackOutcome::NotCounted {
            deployment_id: b.clone(),
            refusal: shipgate::domain::deployment::RollbackRefused::NotAnApprover {
                environment: "production".into()
            },
        }
    );
    assert_eq!(h.deployment(&b).await.state, State::Succeeded);
    assert!(h.github_calls("/deployments").await.is_empty());
}

#[tokio::test]
async fn a_requester_may_approve_their_own_rollback_where_self_approval_is_allowed() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy_good("production", SHA_B, 102, 5002).await;
    let mut svc = h.services().clone();
    svc.policy = std::sync::Arc::new(
        shipgate::domain::policy::Policy::parse(
            "gated.toml",
            &GATED_POLICY.replace(
                "prevent_self_approval = true",
                "prevent_self_approval = false",
            ),
        )
        .unwrap(),
    );

    // The requester is an approver: asking counts as the first approval.
    let outcome =
        rollback::start_manual(&svc, &testkit::scope(REPO, "production"), "slack:U0APPROV1")
            .await
            .unwrap();
    assert!(
        matches!(
            outcome,
            RollbackOutcome::AwaitingApprovals {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{outcome:?}"
    );
    let nonce = nonce_of(&h.deployment(&b).await);
    let done = rollback::approve_request(&svc, &b, &nonce, "U0APPROV2")
        .await
        .unwrap();
    assert!(matches!(done, RollbackOutcome::Started { .. }), "{done:?}");
    assert_eq!(h.github_calls("/deployments").await.len(), 1);
}

#[tokio::test]
async fn an_alert_rolls_back_a_gated_environment_at_once_and_settles_an_open_request() {
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy("production", SHA_B, 102, 5002).await;
    let svc = gated(&h);
    let requested = rollback::start_manual(&svc, &testkit::scope(REPO, "production"), "cli:alice")
        .await
        .unwrap();
    assert!(
        matches!(requested, RollbackOutcome::AwaitingApprovals { .. }),
        "{requested:?}"
    );
    let nonce = nonce_of(&h.deployment(&b).await);

    let alerts = alert_webhook::AlertWebhook::new(
        svc.clone(),
        secrecy::SecretString::from(ALERT_TOKEN.to_string()),
    );
    let body = alertmanager(
        "firing",
        "fp-gated",
        labels("production", "critical", "ApiHighErrorRate"),
        h.now(),
        None,
    );
    let req = alert_request(
        ROUTE,
        Some(&format!("Bearer {ALERT_TOKEN}")),
        serde_json::to_vec(&body).unwrap(),
    );
    let reply = Reply::from(alert_webhook::handle(&alerts, req).await);
    assert_eq!(reply.count("rollbacks_started"), 1, "{reply:?}");

    let dep = h.deployment(&b).await;
    assert_eq!(dep.state, State::RollingBack);
    assert_eq!(
        dep.rollback_request, None,
        "the rollback settled the request"
    );
    assert_eq!(
        dep.rollback.unwrap().started_by,
        "alert:alertmanager:fp-gated"
    );
    assert_eq!(h.github_calls("/deployments").await.len(), 1);
    assert_eq!(
        rollback::approve_request(&svc, &b, &nonce, "U0APPROV1")
            .await
            .unwrap(),
        RollbackOutcome::StaleButton
    );
}

#[tokio::test]
async fn without_a_github_app_a_rollback_that_cannot_start_fails_the_deployment_and_frees_the_lock()
{
    let h = Harness::new().await;
    h.deploy_good("production", SHA_A, 101, 5001).await;
    let b = h.deploy("production", SHA_B, 102, 5002).await;
    // The same shipgate, but without a GitHub App (SHIPGATE_GITHUB_APP_ID unset).
    let services = shipgate::service::Services {
        github: None,
        ..h.services().clone()
    };
    let alerts = alert_webhook::AlertWebhook::new(
        services.clone(),
        secrecy::SecretString::from(ALERT_TOKEN.to_string()),
    );
    let body = alertmanager(
        "firing",
        "fp-noapp",
        labels("production", "critical", "ApiDown"),
        h.now(),
        None,
    );
    let req = alert_request(
        ROUTE,
        Some(&format!("Bearer {ALERT_TOKEN}")),
        serde_json::to_vec(&body).unwrap(),
    );
    let reply = Reply::from(alert_webhook::handle(&alerts, req).await);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body["items"][0]["rollback"]["outcome"],
        json!("failed")
    );

    // Nothing could ever retry it: the deployment failed, the lock is free, Slack says why.
    let dep = h.deployment(&b).await;
    assert_eq!(dep.state, State::Failed, "{dep:?}");
    let reason = dep.reason.clone().unwrap_or_default();
    assert_eq!(
        reason,
        "rollback could not be started: no GitHub App is configured; roll production back by hand"
    );
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .unwrap(),
        None
    );
    let notices: Vec<_> = h
        .notifications()
        .into_iter()
        .filter_map(|n| match n.body {
            shipgate::notify::NotificationBody::Deployment { deployment, event }
                if deployment.id == b =>
            {
                Some((event, deployment.state, deployment.reason))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        notices.last(),
        Some(&(
            "rollback_failed".to_string(),
            State::Failed,
            Some(reason.clone())
        )),
        "{notices:?}"
    );
    // The sweeper has nothing to resume.
    h.advance_mins(5);
    let report =
        shipgate::jobs::sweeper::sweep(&services, &shipgate::service::analysis::Sources::default())
            .await;
    assert!(report.rollbacks_resumed.is_empty(), "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(h.github_calls("/deployments").await.is_empty());
}

/// A workflow rollback started by a critical alert in staging while B (`SHA_B`) verifies over
/// A (`SHA_A`); GitHub's dispatch endpoint answers with `dispatch` (mounted first).
async fn workflow_rollback_with(dispatch: ResponseTemplate, first_only: bool) -> (Harness, String) {
    let h = Harness::new().await;
    let mut mock = Mock::given(method("POST"))
        .and(path(format!(
            "/repos/{REPO}/actions/workflows/rollback.yml/dispatches"
        )))
        .respond_with(dispatch)
        .with_priority(1);
    if first_only {
        mock = mock.up_to_n_times(1);
    }
    mock.mount(&h.github).await;
    h.deploy_good("staging", SHA_A, 301, 7101).await;
    let b = h.deploy("staging", SHA_B, 302, 7102).await;
    let reply = h
        .post_alert(
            ROUTE,
            &alertmanager(
                "firing",
                "fp-w",
                labels("staging", "critical", "ApiDown"),
                h.now(),
                None,
            ),
        )
        .await;
    assert_eq!(
        reply.body["items"][0]["rollback"]["outcome"],
        json!("started"),
        "{reply:?}"
    );
    (h, b)
}

/// The branch head a dispatched run runs at: neither A nor B.
const HEAD: &str = "cccccccccccccccccccccccccccccccccccccccc";

#[tokio::test]
async fn a_dispatched_rollback_run_at_the_branch_head_is_admitted_by_the_run_id_github_returned() {
    let (h, b) = workflow_rollback_with(
        ResponseTemplate::new(200).set_body_json(json!({
            "workflow_run_id": 7103,
            "run_url": format!("https://api.github.com/repos/{REPO}/actions/runs/7103"),
            "html_url": format!("https://github.com/{REPO}/actions/runs/7103"),
        })),
        false,
    )
    .await;
    // Another run at the same head is not the rollback: it is gated as any request, and the
    // open incident refuses it.
    let other = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule("staging", HEAD, 7200),
        )
        .await;
    assert_eq!(other.str("decision"), "rejected", "{other:?}");
    assert_ne!(other.str("deployment_id"), b.as_str());

    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule("staging", HEAD, 7103),
        )
        .await;
    assert_eq!(
        (reply.str("decision"), reply.str("deployment_id")),
        ("approved", b.as_str()),
        "{reply:?}"
    );
    let reviews = h
        .github_calls("/actions/runs/7103/deployment_protection_rule")
        .await;
    assert_eq!(reviews.len(), 1);
    let review: Value = serde_json::from_slice(&reviews[0].body).unwrap();
    assert_eq!(review["state"], json!("approved"));
    // Known by id: GitHub was not asked for the run's name.
    assert!(h.github_calls("/actions/runs/7103").await.is_empty());
}

#[tokio::test]
async fn where_github_refuses_return_run_details_the_run_is_known_by_its_name() {
    let (h, b) = workflow_rollback_with(
        ResponseTemplate::new(422).set_body_json(json!({
            "message": "Invalid request.\n\n\"return_run_details\" is not a permitted key.",
        })),
        true,
    )
    .await;
    let dispatches = h.github_calls("/dispatches").await;
    assert_eq!(dispatches.len(), 2, "asked again without the parameter");
    let second: Value = serde_json::from_slice(&dispatches[1].body).unwrap();
    assert!(second.get("return_run_details").is_none(), "{second}");

    // The documented rollback.yml names its run after the reason input, marker included.
    let reason = second["inputs"]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.ends_with(&format!("[shipgate-rollback: {b}]")),
        "{reason}"
    );
    let title = format!("Roll staging back to {SHA_A}: {reason}");
    h.github_says_run(REPO, 7104, &title, "waiting", None).await;
    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule("staging", HEAD, 7104),
        )
        .await;
    assert_eq!(
        (reply.str("decision"), reply.str("deployment_id")),
        ("approved", b.as_str()),
        "{reply:?}"
    );
}
