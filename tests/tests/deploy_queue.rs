//! The deploy queue, through the GitHub webhook route, on both stores (SQLite; DynamoDB on
//! moto), with every protection-rule call GitHub receives checked on a wiremock stand-in.
//!
//! A request whose scope (repository + environment) is locked waits instead of being
//! rejected; it is decided when the lock frees, a newer run of the same ref supersedes it,
//! `queue_wait` bounds its wait, and a cancelled run leaves nothing behind. Each of these
//! failed before the queue existed: the second request was answered `rejected` at once.

#[macro_use]
#[path = "common/alert_webhook.rs"]
mod common;

use common::{Harness, INSTALLATION_ID};
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::notify::NotificationBody;
use shipgate::service::queue;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const API: &str = "acme/api";
const WEB: &str = "acme/web";

const A1: &str = "a1a1a1a111111111111111111111111111111111";
const A2: &str = "a2a2a2a222222222222222222222222222222222";
const A3: &str = "a3a3a3a333333333333333333333333333333333";
const W1: &str = "b1b1b1b111111111111111111111111111111111";

const POLICY: &str = r#"
[environments.staging]
approvals_required = 0
verification_window = "10m"
queue_wait = "30m"
"#;

fn protection_rule(repo: &str, sha: &str, git_ref: &str, run_id: u64) -> Value {
    json!({
        "action": "requested",
        "environment": "staging",
        "event": "push",
        "ref": git_ref,
        "sha": sha,
        "deployment_callback_url": format!("https://api.github.com/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": INSTALLATION_ID },
        "sender": { "login": "octocat" },
        "repository": { "full_name": repo },
    })
}

fn deployment_status(repo: &str, sha: &str, run_id: u64, state: &str) -> Value {
    json!({
        "action": "created",
        "deployment_status": { "state": state, "description": format!("deploy {state}"), "environment": "staging" },
        "deployment": { "id": run_id + 100_000, "sha": sha, "ref": "main", "environment": "staging", "payload": {} },
        "repository": { "full_name": repo },
        "workflow_run": { "id": run_id },
    })
}

fn workflow_run_completed(repo: &str, sha: &str, run_id: u64, conclusion: &str) -> Value {
    json!({
        "action": "completed",
        "workflow_run": {
            "id": run_id,
            "head_sha": sha,
            "conclusion": conclusion,
            "name": "Deploy",
            "path": ".github/workflows/deploy.yml",
            "updated_at": "2025-06-02T10:07:00Z",
        },
        "repository": { "full_name": repo },
    })
}

async fn request(h: &Harness, repo: &str, sha: &str, git_ref: &str, run: u64) -> common::Reply {
    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule(repo, sha, git_ref, run),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
}

/// Gates and deploys `sha`: the deployment ends verifying. Returns its id.
async fn deploy(h: &Harness, repo: &str, sha: &str, run: u64) -> String {
    let reply = request(h, repo, sha, "main", run).await;
    assert_eq!(reply.str("decision"), "approved", "{reply:?}");
    let status = deployment_status(repo, sha, run, "success");
    let moved = h.deliver("deployment_status", &status).await;
    assert_eq!(moved.str("state"), "verifying", "{moved:?}");
    reply.str("deployment_id").to_string()
}

/// `(run id, body)` of every protection-rule call for `repo`, in order.
async fn protection_calls(h: &Harness, repo: &str) -> Vec<(u64, Value)> {
    let prefix = format!("/repos/{repo}/actions/runs/");
    h.github_calls("/deployment_protection_rule")
        .await
        .into_iter()
        .filter_map(|r| {
            let run = r
                .url
                .path()
                .strip_prefix(&prefix)?
                .split('/')
                .next()?
                .parse()
                .ok()?;
            Some((run, serde_json::from_slice(&r.body).unwrap()))
        })
        .collect()
}

/// The decisions (`approved` / `rejected`) GitHub received for `run`, with their comments.
async fn reviews(h: &Harness, repo: &str, run: u64) -> Vec<(String, String)> {
    protection_calls(h, repo)
        .await
        .into_iter()
        .filter(|(r, b)| *r == run && b.get("state").is_some())
        .map(|(_, b)| {
            (
                b["state"].as_str().unwrap().to_string(),
                b["comment"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn queue_ids(h: &Harness, repo: &str) -> Vec<String> {
    h.repo
        .queue(&testkit::scope(repo, "staging"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.deployment_id)
        .collect()
}

async fn a_request_behind_a_deploy_is_approved_when_the_deploy_succeeds_and_its_window_ends(
    h: Harness,
) {
    let first = deploy(&h, API, A1, 11).await;
    // Another repository's scope is not in the way.
    let web = request(&h, WEB, W1, "main", 21).await;
    assert_eq!(web.str("decision"), "approved", "{web:?}");

    h.advance_mins(2);
    let waiting = request(&h, API, A2, "main", 12).await;
    assert_eq!(waiting.str("decision"), "queued", "{waiting:?}");
    assert_eq!(waiting.body["position"], json!(1), "{waiting:?}");
    assert_eq!(waiting.str("behind"), first, "{waiting:?}");
    let id = waiting.str("deployment_id").to_string();
    assert_eq!(queue_ids(&h, API).await, std::slice::from_ref(&id));

    // GitHub keeps the rule pending and is told why: a status, no decision.
    let calls = protection_calls(&h, API).await;
    let for_run: Vec<_> = calls.iter().filter(|(r, _)| *r == 12).collect();
    assert_eq!(for_run.len(), 1, "{calls:?}");
    assert_eq!(for_run[0].1["environment_name"], json!("staging"));
    assert!(for_run[0].1.get("state").is_none(), "{for_run:?}");
    let comment = for_run[0].1["comment"].as_str().unwrap();
    assert!(
        comment.starts_with(&format!(
            "shipgate: queued behind deployment {first} in staging; waits until "
        )),
        "{comment}"
    );
    // Slack is told where it stands.
    let queued: Vec<_> = h
        .notifications()
        .into_iter()
        .filter_map(|n| match n.body {
            NotificationBody::Deployment { deployment, event } if event == "queued" => {
                Some(deployment)
            }
            _ => None,
        })
        .collect();
    assert_eq!(queued.len(), 1);
    let spot = queued[0].queue.clone().expect("queue spot");
    assert_eq!((spot.position, spot.behind.as_str()), (1, first.as_str()));

    // The window of the deployment ahead ends; its deadline advances the queue (what the
    // server's queue timer does at that instant; the sweeper does the same later on AWS).
    let until = h.deployment(&first).await.verify_until.unwrap();
    let wait = h.now().duration_until(until).as_millis() as u64 + 100;
    h.clock.advance(std::time::Duration::from_millis(wait));
    let done = queue::advance(h.services(), &testkit::scope(API, "staging"))
        .await
        .unwrap();
    assert_eq!(done.decided, std::slice::from_ref(&id));

    assert_eq!(h.deployment(&first).await.state, State::Succeeded);
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Approved);
    assert!(queue_ids(&h, API).await.is_empty());
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(API, "staging"))
            .await
            .unwrap()
            .as_deref(),
        Some(id.as_str())
    );
    let got = reviews(&h, API, 12).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "approved");
    assert!(
        got[0]
            .1
            .starts_with("shipgate approved this deployment to staging"),
        "{got:?}"
    );
}

async fn a_deploy_that_fails_lets_the_next_in_line_go_in_the_same_delivery(h: Harness) {
    let first = deploy(&h, API, A1, 11).await;
    let second = request(&h, API, A2, "main", 12).await;
    let third = request(&h, API, A3, "release", 13).await;
    assert_eq!(
        (second.str("decision"), third.str("decision")),
        ("queued", "queued")
    );
    assert_eq!(third.body["position"], json!(2), "2nd in line: {third:?}");

    let failed = h
        .deliver(
            "deployment_status",
            &deployment_status(API, A1, 11, "failure"),
        )
        .await;
    assert_eq!(failed.str("state"), "failed", "{failed:?}");
    assert_eq!(h.deployment(&first).await.state, State::Failed);
    assert_eq!(
        h.deployment(second.str("deployment_id")).await.state,
        State::Approved
    );
    assert_eq!(
        h.deployment(third.str("deployment_id")).await.state,
        State::Queued
    );
    assert_eq!(
        queue_ids(&h, API).await,
        [third.str("deployment_id").to_string()]
    );
    assert_eq!(reviews(&h, API, 12).await.len(), 1);
    assert!(reviews(&h, API, 13).await.is_empty());
    // The one still waiting is told it moved up.
    let moved: Vec<_> = h
        .notifications()
        .into_iter()
        .filter_map(|n| match n.body {
            NotificationBody::Deployment { deployment, event }
                if event == "queued" && deployment.id == third.str("deployment_id") =>
            {
                deployment.queue
            }
            _ => None,
        })
        .collect();
    let last = moved.last().expect("a queue notification for the third");
    assert_eq!(
        (last.position, last.behind.as_str()),
        (1, second.str("deployment_id"))
    );
}

async fn a_newer_request_for_the_same_ref_supersedes_a_waiting_one(h: Harness) {
    deploy(&h, API, A1, 11).await;
    let older = request(&h, API, A2, "main", 12).await;
    assert_eq!(older.str("decision"), "queued", "{older:?}");
    let other_ref = request(&h, API, A2, "release", 13).await;
    assert_eq!(other_ref.str("decision"), "queued", "{other_ref:?}");

    let newer = request(&h, API, A3, "main", 14).await;
    assert_eq!(newer.str("decision"), "queued", "{newer:?}");
    // The release request is still ahead of it; the older main one is gone.
    assert_eq!(newer.body["position"], json!(2), "{newer:?}");

    let superseded = h.deployment(older.str("deployment_id")).await;
    assert_eq!(superseded.state, State::Rejected);
    assert_eq!(
        superseded.reason.as_deref(),
        Some("superseded by run 14 (main at a3a3a3a)")
    );
    assert_eq!(
        reviews(&h, API, 12).await,
        [(
            "rejected".to_string(),
            "shipgate rejected this deployment to staging: superseded by run 14 (main at a3a3a3a)"
                .to_string()
        )]
    );
    assert_eq!(
        queue_ids(&h, API).await,
        [
            other_ref.str("deployment_id").to_string(),
            newer.str("deployment_id").to_string()
        ]
    );
}

async fn a_request_waiting_past_queue_wait_is_rejected_with_the_reason(h: Harness) {
    // The deployment ahead stays in progress (no final status), so the lock stays held.
    let ahead = request(&h, API, A1, "main", 11).await;
    assert_eq!(ahead.str("decision"), "approved", "{ahead:?}");
    let started = h
        .deliver(
            "deployment_status",
            &deployment_status(API, A1, 11, "in_progress"),
        )
        .await;
    assert_eq!(started.str("state"), "deploying", "{started:?}");
    let waiting = request(&h, API, A2, "main", 12).await;
    assert_eq!(waiting.str("decision"), "queued", "{waiting:?}");

    // Within its 30 minutes nothing happens; past them the next reader rejects it.
    h.advance_mins(29);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert!(report.queue_timed_out.is_empty(), "{report:?}");
    h.advance_mins(2);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(
        report.queue_timed_out,
        [waiting.str("deployment_id").to_string()],
        "{report:?}"
    );

    let dep = h.deployment(waiting.str("deployment_id")).await;
    assert_eq!(dep.state, State::Rejected);
    let reason = dep.reason.clone().unwrap();
    assert!(
        reason.starts_with("waited 30m (queue_wait) for staging to be free; deployment "),
        "{reason}"
    );
    assert_eq!(
        reviews(&h, API, 12).await,
        [(
            "rejected".to_string(),
            format!("shipgate rejected this deployment to staging: {reason}")
        )]
    );
    assert!(queue_ids(&h, API).await.is_empty());
}

async fn a_cancelled_run_leaves_no_ghost_and_its_rerun_queues_afresh(h: Harness) {
    deploy(&h, API, A1, 11).await;
    let waiting = request(&h, API, A2, "main", 12).await;
    assert_eq!(waiting.str("decision"), "queued", "{waiting:?}");
    let before = protection_calls(&h, API).await.len();

    let reply = h
        .deliver(
            "workflow_run",
            &workflow_run_completed(API, A2, 12, "cancelled"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let dep = h.deployment(waiting.str("deployment_id")).await;
    assert_eq!(dep.state, State::Cancelled);
    assert_eq!(
        dep.reason.as_deref(),
        Some("workflow run 12 ended (cancelled) while it waited")
    );
    assert!(queue_ids(&h, API).await.is_empty(), "no ghost entry");
    assert_eq!(
        protection_calls(&h, API).await.len(),
        before,
        "GitHub no longer waits: nothing is sent"
    );

    // Re-run: same run id, a new request, queued again.
    let rerun = request(&h, API, A2, "main", 12).await;
    assert_eq!(rerun.str("decision"), "queued", "{rerun:?}");
    assert_ne!(rerun.str("deployment_id"), waiting.str("deployment_id"));
    assert_eq!(
        queue_ids(&h, API).await,
        [rerun.str("deployment_id").to_string()]
    );
}

async fn a_critical_incident_raised_meanwhile_rejects_the_waiting_request_when_its_turn_comes(
    h: Harness,
) {
    // The policy blocks on critical incidents by default; the incident opens while the
    // request waits, and the request is decided on that fact, not on the facts it came with.
    deploy(&h, API, A1, 11).await;
    let waiting = request(&h, API, A2, "main", 12).await;
    assert_eq!(waiting.str("decision"), "queued", "{waiting:?}");
    let body = common::alertmanager(
        "firing",
        "fp-env",
        common::labels("staging", "critical", "HighErrorRate"),
        h.now(),
        None,
    );
    let alert = h.post_alert("/webhooks/alertmanager", &body).await;
    assert_eq!(alert.status, 200, "{alert:?}");

    let failed = h
        .deliver(
            "deployment_status",
            &deployment_status(API, A1, 11, "failure"),
        )
        .await;
    assert_eq!(failed.status, 200, "{failed:?}");
    let dep = h.deployment(waiting.str("deployment_id")).await;
    assert_eq!(dep.state, State::Rejected, "{dep:?}");
    let got = reviews(&h, API, 12).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "rejected");
    assert!(got[0].1.contains("critical incident"), "{got:?}");
}

#[tokio::test]
async fn with_the_queue_off_a_locked_scope_rejects_at_once() {
    let h = Harness::build(
        &POLICY.replace("queue_wait = \"30m\"", "queue_wait = \"0s\""),
        201,
        common::ALERT_TOKEN,
    )
    .await;
    let first = deploy(&h, API, A1, 11).await;
    let second = request(&h, API, A2, "main", 12).await;
    assert_eq!(second.str("decision"), "rejected", "{second:?}");
    assert_eq!(
        second.str("reason"),
        format!("staging is locked by deployment {first}; wait for it to finish")
    );
    assert!(queue_ids(&h, API).await.is_empty());
}

async fn a_cancelled_run_whose_approval_github_never_received_frees_the_lock(h: Harness) {
    // GitHub is down when the approval goes out: the deployment is approved, the answer
    // pending, the lock held.
    Mock::given(method("POST"))
        .and(path(format!(
            "/repos/{API}/actions/runs/31/deployment_protection_rule"
        )))
        .respond_with(ResponseTemplate::new(502))
        .with_priority(1)
        .mount(&h.github)
        .await;
    let first = request(&h, API, A1, "main", 31).await;
    assert_eq!(first.str("decision"), "approved", "{first:?}");
    let id = first.str("deployment_id").to_string();
    assert_eq!(
        h.deployment(&id).await.callback,
        shipgate::domain::deployment::CallbackState::Pending
    );
    // The user cancels the run: nothing will deploy it, and GitHub waits for no answer.
    h.advance_mins(1);
    let mut ended = workflow_run_completed(API, A1, 31, "cancelled");
    ended["workflow_run"]["updated_at"] = json!(h.now().to_string());
    h.deliver("workflow_run", &ended).await;
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Cancelled);
    assert_eq!(
        dep.callback,
        shipgate::domain::deployment::CallbackState::None
    );
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(API, "staging"))
            .await
            .unwrap(),
        None
    );
}

async fn a_late_end_of_an_earlier_attempt_leaves_the_rerun_waiting(h: Harness) {
    deploy(&h, API, A1, 11).await;
    // Attempt 1 of run 12 ended before attempt 2 asked; its `completed` arrives late.
    let ended_at = h.now();
    h.advance_mins(2);
    let waiting = request(&h, API, A2, "main", 12).await;
    assert_eq!(waiting.str("decision"), "queued", "{waiting:?}");
    let mut late = workflow_run_completed(API, A2, 12, "failure");
    late["workflow_run"]["updated_at"] = json!(ended_at.to_string());
    h.deliver("workflow_run", &late).await;
    assert_eq!(
        h.deployment(waiting.str("deployment_id")).await.state,
        State::Queued
    );
    assert_eq!(queue_ids(&h, API).await.len(), 1);
}

on_both_stores!(
    super::POLICY;
    a_cancelled_run_whose_approval_github_never_received_frees_the_lock,
    a_late_end_of_an_earlier_attempt_leaves_the_rerun_waiting,
    a_request_behind_a_deploy_is_approved_when_the_deploy_succeeds_and_its_window_ends,
    a_deploy_that_fails_lets_the_next_in_line_go_in_the_same_delivery,
    a_newer_request_for_the_same_ref_supersedes_a_waiting_one,
    a_request_waiting_past_queue_wait_is_rejected_with_the_reason,
    a_cancelled_run_leaves_no_ghost_and_its_rerun_queues_afresh,
    a_critical_incident_raised_meanwhile_rejects_the_waiting_request_when_its_turn_comes,
);
