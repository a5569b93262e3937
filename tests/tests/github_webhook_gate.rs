//! The gate, end to end: a signed `deployment_protection_rule` delivery in, the exact GitHub
//! REST calls out (App JWT → installation token → protection-rule review), one deployment at a
//! time per environment, and promotion from staging to production.

#[path = "common/github_webhook.rs"]
mod common;

use std::time::Duration;

use common::{
    deployment_created, deployment_status, protection_rule, Harness, APP_ID, INSTALLATION_ID,
    INSTALLATION_TOKEN, REPO,
};
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::service::lifecycle;
use shipgate::store::repo::ShaFact;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// The common policy with staging's queue off (`queue_wait = "0s"`): a locked scope rejects.
fn queue_off() -> String {
    common::POLICY.replacen(
        "verification_window = \"10m\"\n",
        "verification_window = \"10m\"\nqueue_wait = \"0s\"\n",
        1,
    )
}

fn review_path(run_id: u64) -> String {
    format!("/repos/{REPO}/actions/runs/{run_id}/deployment_protection_rule")
}

#[tokio::test]
async fn an_approval_exchanges_a_valid_app_jwt_for_a_token_then_approves_the_run() {
    let h = Harness::new().await;

    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 4242, SHA, "main"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.str("decision"), "approved");

    let requests = h.github_requests().await;
    assert_eq!(
        requests.len(),
        2,
        "one token exchange and one review: {requests:?}"
    );

    let exchange = &requests[0];
    assert_eq!(exchange.method.as_str(), "POST");
    assert_eq!(
        exchange.url.path(),
        format!("/app/installations/{INSTALLATION_ID}/access_tokens")
    );
    assert!(exchange.body.is_empty());
    let jwt = exchange.headers["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    let (header, claims) = common::verify_rs256(&jwt).unwrap();
    assert_eq!(header["alg"], json!("RS256"));
    assert_eq!(claims["iss"], json!(APP_ID.to_string()));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    let now = jiff::Timestamp::now().as_second();
    assert!(
        iat <= now && now < exp && exp - iat <= 600,
        "iat {iat} exp {exp} now {now}"
    );
    // The check is real: the same signature over other claims does not verify.
    let mut parts: Vec<&str> = jwt.split('.').collect();
    parts[1] = "eyJpc3MiOiIxIn0";
    assert!(common::verify_rs256(&parts.join(".")).is_err());

    let review = &requests[1];
    assert_eq!(review.method.as_str(), "POST");
    assert_eq!(review.url.path(), review_path(4242));
    assert_eq!(
        review.headers["authorization"].to_str().unwrap(),
        format!("Bearer {INSTALLATION_TOKEN}")
    );
    assert_eq!(
        review.headers["accept"].to_str().unwrap(),
        "application/vnd.github+json"
    );
    assert_eq!(
        review.headers["x-github-api-version"].to_str().unwrap(),
        "2022-11-28"
    );
    let body: Value = serde_json::from_slice(&review.body).unwrap();
    let comment = body["comment"].as_str().unwrap();
    assert!(
        comment.starts_with("shipgate approved this deployment to staging: policy checks passed ("),
        "{comment}"
    );
    assert!(comment.contains("ref main matches \"main\""), "{comment}");
    assert_eq!(
        body,
        json!({ "environment_name": "staging", "state": "approved", "comment": comment })
    );

    // The answer is remembered, so the sweeper does not send it again.
    let dep = h.deployment(reply.str("deployment_id")).await;
    assert_eq!(
        dep.callback,
        shipgate::domain::deployment::CallbackState::Answered
    );
}

#[tokio::test]
async fn a_rejection_comment_names_the_failed_rule_exactly() {
    let h = Harness::new().await;

    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 99, SHA, "refs/heads/feature/x"),
        )
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.str("decision"), "rejected");
    let calls = h.protection_rule_calls().await;
    assert_eq!(
        calls,
        vec![(
            review_path(99),
            json!({
                "environment_name": "staging",
                "state": "rejected",
                "comment": "shipgate rejected this deployment to staging: ref refs/heads/feature/x is not allowed in staging (allowed_refs: main, refs/heads/main, refs/tags/v*)"
            })
        )]
    );
    let dep = h.deployment(reply.str("deployment_id")).await;
    assert_eq!(dep.state, State::Rejected);
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "staging"))
            .await
            .unwrap(),
        None,
        "a rejected deployment never holds the lock"
    );
}

#[tokio::test]
async fn awaiting_approval_reports_a_status_without_deciding() {
    let h = Harness::new().await;
    let fact = ShaFact {
        repo: REPO.parse().unwrap(),
        sha: SHA.parse().unwrap(),
        at: common::start_time(),
        detail: None,
    };
    h.repo.record_sha_fact("OK#staging", &fact).await.unwrap();

    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("production", 7, SHA, "main"),
        )
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.str("decision"), "awaiting_approval");
    assert_eq!(reply.body["approvals_required"], json!(2));
    let calls = h.protection_rule_calls().await;
    assert_eq!(
        calls,
        vec![(
            review_path(7),
            json!({ "environment_name": "production", "comment": "shipgate: waiting for 2 approval(s) in Slack (0 so far)" })
        )]
    );
    let dep = h.deployment(reply.str("deployment_id")).await;
    assert_eq!(dep.state, State::AwaitingApproval);
    // Still pending: the real answer comes after the Slack approvals.
    assert_eq!(
        dep.callback,
        shipgate::domain::deployment::CallbackState::Pending
    );
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(REPO, "production"))
            .await
            .unwrap(),
        Some(dep.id.clone())
    );
    let events: Vec<String> = h
        .publisher
        .taken()
        .into_iter()
        .filter_map(|n| match n.body {
            shipgate::notify::NotificationBody::Deployment { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(events, vec!["approval_requested".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_with_the_queue_off_let_exactly_one_through() {
    let h = std::sync::Arc::new(Harness::with_policy(&queue_off()).await);
    let mut tasks = Vec::new();
    for run_id in 1000..1050u64 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let sha = format!("{run_id:040x}");
            h.deliver_json(
                "deployment_protection_rule",
                &protection_rule("staging", run_id, &sha, "main"),
            )
            .await
        }));
    }
    let replies: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let approved: Vec<_> = replies
        .iter()
        .filter(|r| r.str("decision") == "approved")
        .collect();
    let rejected: Vec<_> = replies
        .iter()
        .filter(|r| r.str("decision") == "rejected")
        .collect();
    assert_eq!(approved.len(), 1, "{replies:?}");
    assert_eq!(rejected.len(), 49, "{replies:?}");

    let holder = h
        .repo
        .lock_holder(&testkit::scope(REPO, "staging"))
        .await
        .unwrap()
        .expect("the environment is locked");
    assert_eq!(holder, approved[0].str("deployment_id"));
    for r in &rejected {
        assert!(
            r.str("reason")
                .contains(&format!("locked by deployment {holder}")),
            "{r:?}"
        );
    }

    let deps = h.deployments().await;
    assert_eq!(deps.len(), 50);
    assert_eq!(deps.iter().filter(|d| d.state.holds_lock()).count(), 1);
    assert_eq!(
        deps.iter().filter(|d| d.state == State::Rejected).count(),
        49
    );

    let calls = h.protection_rule_calls().await;
    assert_eq!(calls.len(), 50);
    let approvals: Vec<_> = calls
        .iter()
        .filter(|(_, b)| b["state"] == json!("approved"))
        .collect();
    assert_eq!(approvals.len(), 1);
    let holder_run = h.deployment(&holder).await.run_id.unwrap();
    assert_eq!(approvals[0].0, review_path(holder_run));
    for (path, body) in calls
        .iter()
        .filter(|(_, b)| b["state"] == json!("rejected"))
    {
        let comment = body["comment"].as_str().unwrap();
        assert!(
            comment.contains(&format!("locked by deployment {holder}")),
            "{path}: {comment}"
        );
    }
    // Concurrent callers share one installation token.
    let exchanges = h
        .github_requests()
        .await
        .into_iter()
        .filter(|r| r.url.path().ends_with("/access_tokens"))
        .count();
    assert_eq!(exchanges, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_queue_behind_one_and_the_next_goes_when_it_ends() {
    let h = std::sync::Arc::new(Harness::new().await);
    let mut tasks = Vec::new();
    for run_id in 2000..2050u64 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let sha = format!("{run_id:040x}");
            // Fifty tags: no request supersedes another.
            let tag = format!("refs/tags/v1.{run_id}");
            h.deliver_json(
                "deployment_protection_rule",
                &protection_rule("staging", run_id, &sha, &tag),
            )
            .await
        }));
    }
    let replies: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let approved: Vec<_> = replies
        .iter()
        .filter(|r| r.str("decision") == "approved")
        .collect();
    let queued = replies
        .iter()
        .filter(|r| r.str("decision") == "queued")
        .count();
    assert_eq!((approved.len(), queued), (1, 49), "{replies:?}");

    let scope = testkit::scope(REPO, "staging");
    let holder = h.repo.lock_holder(&scope).await.unwrap().expect("locked");
    assert_eq!(holder, approved[0].str("deployment_id"));
    let queue = h.repo.queue(&scope).await.unwrap();
    assert_eq!(queue.len(), 49);
    let deps = h.deployments().await;
    assert_eq!(deps.iter().filter(|d| d.state == State::Queued).count(), 49);
    // GitHub got one approval and a status comment for each waiting run: nothing rejected.
    let calls = h.protection_rule_calls().await;
    assert_eq!(calls.len(), 50, "{calls:?}");
    assert_eq!(
        calls
            .iter()
            .filter(|(_, b)| b["state"] == json!("approved"))
            .count(),
        1
    );
    for (path, body) in calls.iter().filter(|(_, b)| b.get("state").is_none()) {
        let comment = body["comment"].as_str().unwrap();
        assert!(
            comment.starts_with(&format!(
                "shipgate: queued behind deployment {holder} in staging"
            )),
            "{path}: {comment}"
        );
    }

    // The holder fails: the first in line is approved at once, and only it.
    let holder_run = h.deployment(&holder).await.run_id.unwrap();
    let holder_sha = format!("{holder_run:040x}");
    let failed = h
        .deliver_json(
            "deployment_status",
            &deployment_status(900, "staging", &holder_sha, Some(holder_run), "failure"),
        )
        .await;
    assert_eq!(failed.str("state"), "failed", "{failed:?}");
    let next = h.repo.lock_holder(&scope).await.unwrap().expect("locked");
    assert_eq!(next, queue[0].deployment_id, "the first in line goes next");
    assert_eq!(h.deployment(&next).await.state, State::Approved);
    assert_eq!(h.repo.queue(&scope).await.unwrap().len(), 48);
    let approvals: Vec<_> = h
        .protection_rule_calls()
        .await
        .into_iter()
        .filter(|(_, b)| b["state"] == json!("approved"))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        approvals,
        vec![
            review_path(holder_run),
            review_path(queue[0].run_id.unwrap())
        ]
    );
}

#[tokio::test]
async fn production_takes_only_a_sha_that_succeeded_in_staging() {
    let h = Harness::new().await;

    // Production first: the sha never ran in staging.
    let early = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("production", 1, SHA, "main"),
        )
        .await;
    assert_eq!(early.str("decision"), "rejected", "{early:?}");
    let calls = h.protection_rule_calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1["state"], json!("rejected"));
    assert_eq!(
        calls[0].1["comment"],
        json!("shipgate rejected this deployment to production: sha 0123456 has not succeeded in staging (required by promotion_from)")
    );

    // Staging: gate, deployment, success, quiet window.
    let staged = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 2, SHA, "main"),
        )
        .await;
    assert_eq!(staged.str("decision"), "approved", "{staged:?}");
    let staging_id = staged.str("deployment_id").to_string();
    assert_eq!(
        h.deliver_json(
            "deployment",
            &deployment_created(501, "staging", SHA, Some(2))
        )
        .await
        .status,
        200
    );
    let verifying = h
        .deliver_json(
            "deployment_status",
            &deployment_status(501, "staging", SHA, Some(2), "success"),
        )
        .await;
    assert_eq!(verifying.str("state"), "verifying", "{verifying:?}");
    // Still verifying: production must keep waiting.
    let too_soon = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("production", 3, SHA, "main"),
        )
        .await;
    assert_eq!(too_soon.str("decision"), "rejected", "{too_soon:?}");
    assert!(too_soon
        .str("reason")
        .contains("has not succeeded in staging"));

    h.advance(Duration::from_secs(10 * 60));
    let done = lifecycle::finish_verification(h.services(), &staging_id)
        .await
        .unwrap();
    assert_eq!(
        done,
        lifecycle::LifecycleOutcome::Moved {
            deployment_id: staging_id.clone(),
            state: State::Succeeded
        }
    );

    // The same sha is now accepted for production, pending two approvals.
    let promoted = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("production", 4, SHA, "main"),
        )
        .await;
    assert_eq!(
        promoted.str("decision"),
        "awaiting_approval",
        "{promoted:?}"
    );
    assert_eq!(promoted.body["approvals_required"], json!(2));
    let dep = h.deployment(promoted.str("deployment_id")).await;
    assert!(
        dep.checks
            .iter()
            .any(|c| c == "sha 0123456 has succeeded in staging"),
        "{:?}",
        dep.checks
    );
    let last = h.protection_rule_calls().await.pop().unwrap();
    assert_eq!(last.0, review_path(4));
    assert_eq!(
        last.1,
        json!({ "environment_name": "production", "comment": "shipgate: waiting for 2 approval(s) in Slack (0 so far)" })
    );
}

#[tokio::test]
async fn a_second_request_for_a_gated_run_repeats_nothing() {
    let h = Harness::new().await;
    let body = protection_rule("staging", 31, SHA, "main");
    let first = h.deliver_json("deployment_protection_rule", &body).await;
    // A different delivery id for the same run and environment (not a replay).
    let second = h.deliver_json("deployment_protection_rule", &body).await;

    assert_eq!(first.str("decision"), "approved");
    assert_eq!(second.status, 200);
    assert_eq!(second.str("decision"), "approved");
    assert_eq!(second.body["duplicate"], json!(true));
    assert_eq!(second.str("deployment_id"), first.str("deployment_id"));
    assert_eq!(h.deployments().await.len(), 1);
    assert_eq!(
        h.protection_rule_calls().await.len(),
        1,
        "the answer was already given"
    );
}

#[tokio::test]
async fn a_rerun_of_a_rejected_run_is_gated_again_and_answered() {
    let h = Harness::with_policy(&queue_off()).await;
    let holder = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 40, SHA, "main"),
        )
        .await;
    let other_sha = "2222222222222222222222222222222222222222";
    let blocked = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 41, other_sha, "main"),
        )
        .await;
    assert_eq!(blocked.str("decision"), "rejected", "{blocked:?}");

    // The holder fails, the developer re-runs run 41: same run id, a new request.
    let holder_id = holder.str("deployment_id").to_string();
    let failed = h
        .deliver_json(
            "deployment_status",
            &deployment_status(600, "staging", SHA, Some(40), "failure"),
        )
        .await;
    assert_eq!(failed.str("state"), "failed", "{failed:?}");
    let rerun = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 41, other_sha, "main"),
        )
        .await;

    assert_eq!(rerun.status, 200, "{rerun:?}");
    assert_eq!(rerun.str("decision"), "approved", "{rerun:?}");
    assert_ne!(rerun.str("deployment_id"), blocked.str("deployment_id"));
    assert_ne!(rerun.str("deployment_id"), holder_id);
    let calls: Vec<_> = h
        .protection_rule_calls()
        .await
        .into_iter()
        .filter(|(p, _)| *p == review_path(41))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].1["state"], json!("rejected"));
    assert_eq!(calls[1].1["state"], json!("approved"));
    // The old decision stays on record.
    assert_eq!(
        h.deployment(blocked.str("deployment_id")).await.state,
        State::Rejected
    );
    assert_eq!(
        h.repo
            .deployment_for_run(41, "staging")
            .await
            .unwrap()
            .map(|d| d.id),
        Some(rerun.str("deployment_id").to_string())
    );
}

#[tokio::test]
async fn a_failed_github_answer_stays_pending_and_the_next_request_for_the_run_sends_it() {
    let h = Harness::new().await;
    // A short outage: both attempts of the first answer get a 502. (A scoped mock would be
    // simpler, but wiremock 0.6 re-sorts its mocks by priority and then unmounts the wrong one.)
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(review_path(50)))
        .respond_with(wiremock::ResponseTemplate::new(502))
        .with_priority(1)
        .up_to_n_times(2)
        .expect(2)
        .mount(&h.github)
        .await;

    let first = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 50, SHA, "main"),
        )
        .await;
    // The decision is stored and GitHub is not asked to redeliver.
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.str("decision"), "approved");
    let id = first.str("deployment_id").to_string();
    assert_eq!(
        h.deployment(&id).await.callback,
        shipgate::domain::deployment::CallbackState::Pending
    );
    assert_eq!(
        h.protection_rule_calls().await.len(),
        2,
        "the 502 was retried once"
    );

    let again = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 50, SHA, "main"),
        )
        .await;
    assert_eq!(again.str("deployment_id"), id);
    assert_eq!(again.body["duplicate"], json!(true));
    assert_eq!(
        h.deployment(&id).await.callback,
        shipgate::domain::deployment::CallbackState::Answered
    );
    let calls = h.protection_rule_calls().await;
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2].1["state"], json!("approved"));
    assert_eq!(h.deployments().await.len(), 1);
}

/// Production under a freeze that covers the harness's clock, with break-glass allowed.
fn frozen_policy() -> String {
    format!(
        "{}\n[[environments.production.freezes]]\nfrom = \"2025-06-01\"\nto = \"2025-06-08\"\ntimezone = \"UTC\"\nreason = \"quarter close\"\n\n[environments.production.break_glass]\nallowed = true\nextra_approvals = 1\nrequire_reason = true\n",
        common::POLICY
    )
}

async fn seed_staging_success(h: &Harness) {
    let fact = ShaFact {
        repo: REPO.parse().unwrap(),
        sha: SHA.parse().unwrap(),
        at: common::start_time(),
        detail: None,
    };
    h.repo.record_sha_fact("OK#staging", &fact).await.unwrap();
}

async fn mount_run_title(h: &Harness, run_id: u64, title: &str) {
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path(format!(
            "/repos/{REPO}/actions/runs/{run_id}"
        )))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({ "id": run_id, "display_title": title })),
        )
        .mount(&h.github)
        .await;
}

#[tokio::test]
async fn a_frozen_environment_rejects_a_run_that_does_not_ask_for_break_glass() {
    let h = Harness::with_policy(&frozen_policy()).await;
    seed_staging_success(&h).await;
    mount_run_title(&h, 501, "Deploy hello-world").await;

    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("production", 501, SHA, "main"),
        )
        .await;

    assert_eq!(reply.str("decision"), "rejected", "{reply:?}");
    let calls = h.protection_rule_calls().await;
    assert_eq!(calls.len(), 1);
    let comment = calls[0].1["comment"].as_str().unwrap();
    assert!(comment.contains("quarter close"), "{comment}");
    assert!(comment.contains("break-glass is allowed"), "{comment}");
}

#[tokio::test]
async fn a_run_titled_with_a_break_glass_reason_waits_for_one_extra_approval() {
    let h = Harness::with_policy(&frozen_policy()).await;
    seed_staging_success(&h).await;
    mount_run_title(
        &h,
        502,
        "Deploy hello-world [break-glass: INC-42 checkout is down]",
    )
    .await;

    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("production", 502, SHA, "main"),
        )
        .await;

    assert_eq!(reply.str("decision"), "awaiting_approval", "{reply:?}");
    assert_eq!(reply.body["approvals_required"], json!(3));
    let dep = h.deployment(reply.str("deployment_id")).await;
    assert_eq!(dep.state, State::AwaitingApproval);
    let bg = dep.break_glass.expect("recorded as break-glass");
    assert_eq!(bg.reason, "INC-42 checkout is down");
    let title_reads = h
        .github_requests()
        .await
        .into_iter()
        .filter(|r| {
            r.method.as_str() == "GET" && r.url.path() == format!("/repos/{REPO}/actions/runs/502")
        })
        .count();
    assert_eq!(title_reads, 1);
    let audit = h.repo.audit_for_deployment(&dep.id).await.unwrap();
    assert!(
        audit.iter().any(|e| e.why.contains("break-glass")),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_during_a_slow_answer_does_not_send_a_second_one() {
    let h = std::sync::Arc::new(Harness::new().await);
    // GitHub takes its time to accept the answer for run 60.
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(review_path(60)))
        .respond_with(wiremock::ResponseTemplate::new(204).set_delay(Duration::from_millis(600)))
        .with_priority(1)
        .mount(&h.github)
        .await;

    let request = {
        let h = h.clone();
        tokio::spawn(async move {
            h.deliver_json(
                "deployment_protection_rule",
                &protection_rule("staging", 60, SHA, "main"),
            )
            .await
        })
    };
    // While that answer is in flight, the sweeper finds the decision still pending.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    let reply = request.await.unwrap();
    assert_eq!(reply.str("decision"), "approved", "{reply:?}");
    assert!(report.answered.is_empty(), "{report:?}");

    let decisions: Vec<_> = h
        .protection_rule_calls()
        .await
        .into_iter()
        .filter(|(p, b)| *p == review_path(60) && b.get("state").is_some())
        .collect();
    assert_eq!(decisions.len(), 1, "one decision per run: {decisions:?}");
    let id = reply.str("deployment_id").to_string();
    assert_eq!(
        h.deployment(&id).await.callback,
        shipgate::domain::deployment::CallbackState::Answered
    );
}

/// What GitHub answers for `GET …/runs/{run_id}/pending_deployments`: the environments named.
async fn github_says_pending(h: &Harness, run_id: u64, environments: &[&str]) {
    let body: Vec<Value> = environments
        .iter()
        .map(|e| json!({ "environment": { "id": 1, "name": e }, "wait_timer": 0, "current_user_can_approve": false, "reviewers": [] }))
        .collect();
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path(format!(
            "/repos/{REPO}/actions/runs/{run_id}/pending_deployments"
        )))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(body))
        .mount(&h.github)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_reached_github_before_a_crash_is_not_sent_again_by_the_sweep() {
    let h = Harness::new().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(review_path(61)))
        .respond_with(wiremock::ResponseTemplate::new(204).set_delay(Duration::from_millis(500)))
        .with_priority(1)
        .mount(&h.github)
        .await;
    // The process dies while GitHub's reply is on its way: the answer was taken, but never
    // marked answered (a kill -9 drops the handler where it stands).
    let cut = tokio::time::timeout(
        Duration::from_millis(250),
        h.deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 61, SHA, "main"),
        ),
    )
    .await;
    assert!(
        cut.is_err(),
        "the delivery was meant to be cut off: {cut:?}"
    );
    let sent = |calls: Vec<(String, Value)>| {
        calls
            .into_iter()
            .filter(|(p, b)| *p == review_path(61) && b.get("state").is_some())
            .count()
    };
    assert_eq!(sent(h.protection_rule_calls().await), 1);
    let dep = h
        .deployments()
        .await
        .into_iter()
        .next()
        .expect("the request was stored");
    assert_eq!(
        dep.callback,
        shipgate::domain::deployment::CallbackState::Pending
    );

    // After the lease, a sweep finds it pending; GitHub no longer waits on staging for run 61.
    github_says_pending(&h, 61, &[]).await;
    h.advance(Duration::from_secs(180));
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(report.answered.is_empty(), "{report:?}");
    assert_eq!(
        sent(h.protection_rule_calls().await),
        1,
        "one answer per run"
    );
    let dep = h.deployment(&dep.id).await;
    assert_eq!(
        dep.callback,
        shipgate::domain::deployment::CallbackState::Answered
    );
    let audit = h.repo.audit_for_deployment(&dep.id).await.unwrap();
    assert!(
        audit.iter().any(|e| e
            .why
            .contains("run 61 no longer waits on staging: not sent again")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn a_sweep_sends_a_pending_answer_when_github_says_the_run_still_waits() {
    let h = Harness::new().await;
    // GitHub fails the first answer for run 62 (both attempts); the request stays pending.
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(review_path(62)))
        .respond_with(wiremock::ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&h.github)
        .await;
    let reply = h
        .deliver_json(
            "deployment_protection_rule",
            &protection_rule("staging", 62, SHA, "main"),
        )
        .await;
    let id = reply.str("deployment_id").to_string();
    assert_eq!(
        h.deployment(&id).await.callback,
        shipgate::domain::deployment::CallbackState::Pending
    );
    github_says_pending(&h, 62, &["production", "staging"]).await;
    h.advance(Duration::from_secs(60));
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(report.answered, vec![id.clone()], "{report:?}");
    let asked = h
        .github_requests()
        .await
        .iter()
        .filter(|r| r.url.path() == format!("/repos/{REPO}/actions/runs/62/pending_deployments"))
        .count();
    assert_eq!(asked, 1);
    let decisions: Vec<Value> = h
        .protection_rule_calls()
        .await
        .into_iter()
        .filter(|(p, b)| *p == review_path(62) && b.get("state").is_some())
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        decisions.last().map(|b| b["state"].clone()),
        Some(json!("approved"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_requests_for_one_run_arriving_together_are_gated_once_on_sqlite() {
    two_requests_for_one_run_arriving_together_are_gated_once(Harness::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_requests_for_one_run_arriving_together_are_gated_once_on_dynamodb() {
    two_requests_for_one_run_arriving_together_are_gated_once(Harness::on_dynamodb().await).await;
}

async fn two_requests_for_one_run_arriving_together_are_gated_once(h: Harness) {
    let h = std::sync::Arc::new(h);
    // Twenty runs, each asking twice at once (two jobs of the run, or a redelivery racing
    // the original), each in its own repository so no run waits for another.
    let mut tasks = Vec::new();
    for run_id in 3000..3020u64 {
        for _ in 0..2 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let mut body = protection_rule("staging", run_id, SHA, "main");
                let repo = format!("octo-org/svc-{run_id}");
                body["repository"]["full_name"] = json!(repo);
                body["deployment_callback_url"] = json!(format!(
                    "https://api.github.com/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule"
                ));
                (run_id, h.deliver_json("deployment_protection_rule", &body).await)
            }));
        }
    }
    let replies: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let deps = h.deployments().await;
    let calls = h.protection_rule_calls().await;
    for run_id in 3000..3020u64 {
        let mine: Vec<_> = replies.iter().filter(|(r, _)| *r == run_id).collect();
        assert!(
            mine.iter()
                .all(|(_, reply)| reply.status == 200 && reply.str("decision") == "approved"),
            "run {run_id}: {mine:?}"
        );
        assert_eq!(
            deps.iter().filter(|d| d.run_id == Some(run_id)).count(),
            1,
            "run {run_id} gated once: {mine:?}"
        );
        let decisions = calls
            .iter()
            .filter(|(p, b)| {
                p.ends_with(&format!(
                    "/actions/runs/{run_id}/deployment_protection_rule"
                )) && b.get("state").is_some()
            })
            .count();
        assert_eq!(decisions, 1, "run {run_id} answered once");
    }
}
