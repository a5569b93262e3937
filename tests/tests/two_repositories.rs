//! Two repositories sharing `staging` and `production`: state is per (repository,
//! environment). Deployments are driven through the GitHub webhook handler and alerts through
//! the alert route, on both stores (SQLite; DynamoDB on moto), with the GitHub REST calls
//! checked on a wiremock stand-in.
//!
//! Each of the first three tests failed while the lock, the heads and the open incidents were
//! keyed by the environment alone.

#[macro_use]
#[path = "common/alert_webhook.rs"]
mod common;

use common::{alertmanager, labels, Harness, INSTALLATION_ID};
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::service::{lifecycle, rollback};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const API: &str = "acme/api";
const WEB: &str = "acme/web";
const API_ROLLBACK_ID: u64 = 7001;
const WEB_ROLLBACK_ID: u64 = 7002;

const A1: &str = "a1a1a1a111111111111111111111111111111111";
const A2: &str = "a2a2a2a222222222222222222222222222222222";
const W1: &str = "b1b1b1b111111111111111111111111111111111";
const W2: &str = "b2b2b2b222222222222222222222222222222222";

const POLICY: &str = r#"
[services]
api = "acme/api"
web = "acme/web"

[environments.staging]
approvals_required = 0
verification_window = "10m"
rollback_on = ["critical"]
rollback = { method = "redeploy" }

[environments.production]
approvals_required = 0
promotion_from = ["staging"]
verification_window = "30m"
block_on_critical_incident = true
rollback_on = ["critical"]
rollback = { method = "redeploy" }
"#;

on_both_stores!(
    super::POLICY;
    a_first_deploy_that_drew_a_critical_incident_never_becomes_last_known_good,
    only_shipgates_own_rollback_deployment_finishes_a_rollback,
    two_repositories_deploy_to_one_environment_at_once_each_under_its_own_lock,
    each_promotion_check_looks_at_its_own_repository,
    a_critical_alert_with_one_repository_verifying_rolls_back_only_that_one_to_its_own_last_known_good,
    with_two_repositories_verifying_an_alert_for_api_rolls_back_only_api_and_blocks_only_api,
    an_alert_whose_service_maps_to_no_repository_rolls_nothing_back_and_pages_why,
    a_manual_rollback_names_its_repository_and_returns_to_that_repositorys_good_version,
);

async fn mount_rollbacks(h: &Harness) {
    for (repo, id, sha) in [(API, API_ROLLBACK_ID, A1), (WEB, WEB_ROLLBACK_ID, W1)] {
        Mock::given(method("POST"))
            .and(path(format!("/repos/{repo}/deployments")))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": id, "sha": sha })))
            .mount(&h.github)
            .await;
    }
}

fn protection_rule(repo: &str, environment: &str, sha: &str, run_id: u64) -> Value {
    json!({
        "action": "requested",
        "environment": environment,
        "event": "push",
        "ref": "main",
        "sha": sha,
        "deployment_callback_url": format!("https://api.github.com/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": INSTALLATION_ID },
        "sender": { "login": "octocat" },
        "repository": { "full_name": repo },
    })
}

fn deployment_status(
    repo: &str,
    github_id: u64,
    environment: &str,
    sha: &str,
    run_id: Option<u64>,
    state: &str,
) -> Value {
    json!({
        "action": "created",
        "deployment_status": { "state": state, "description": format!("deploy {state}"), "environment": environment },
        "deployment": { "id": github_id, "sha": sha, "ref": "main", "environment": environment, "payload": {} },
        "repository": { "full_name": repo },
        "workflow_run": run_id.map_or(Value::Null, |id| json!({ "id": id })),
    })
}

/// Asks for `sha` of `repo` in `environment`; returns the reply's decision and deployment id.
async fn request(h: &Harness, repo: &str, environment: &str, sha: &str, run: u64) -> common::Reply {
    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule(repo, environment, sha, run),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
}

/// Gates and deploys: the deployment ends verifying. Returns its id.
async fn deploy(h: &Harness, repo: &str, environment: &str, sha: &str, run: u64) -> String {
    let reply = request(h, repo, environment, sha, run).await;
    assert_eq!(reply.str("decision"), "approved", "{reply:?}");
    let id = reply.str("deployment_id").to_string();
    let status = deployment_status(repo, run + 100_000, environment, sha, Some(run), "success");
    let reply = h.deliver("deployment_status", &status).await;
    assert_eq!(
        (reply.status, reply.str("state")),
        (200, "verifying"),
        "{reply:?}"
    );
    id
}

/// Deploys and lets the window pass: the sha becomes the scope's last known good.
async fn deploy_good(h: &Harness, repo: &str, environment: &str, sha: &str, run: u64) -> String {
    let id = deploy(h, repo, environment, sha, run).await;
    h.advance_mins(31);
    let outcome = lifecycle::finish_verification(h.services(), &id)
        .await
        .unwrap();
    assert!(
        matches!(outcome, lifecycle::LifecycleOutcome::Moved { .. }),
        "{outcome:?}"
    );
    id
}

/// `sha` of `repo` good in staging, then good in production.
async fn ship_good(h: &Harness, repo: &str, sha: &str, run: u64) -> String {
    deploy_good(h, repo, "staging", sha, run).await;
    deploy_good(h, repo, "production", sha, run + 1).await
}

async fn deployments_posted(h: &Harness, repo: &str) -> Vec<Value> {
    h.github_calls(&format!("/repos/{repo}/deployments"))
        .await
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn two_repositories_deploy_to_one_environment_at_once_each_under_its_own_lock(h: Harness) {
    mount_rollbacks(&h).await;
    let api = request(&h, API, "staging", A1, 11).await;
    assert_eq!(api.str("decision"), "approved", "{api:?}");
    // Used to be refused: "staging is locked by deployment <api's>".
    let web = request(&h, WEB, "staging", W1, 21).await;
    assert_eq!(web.str("decision"), "approved", "{web:?}");

    let api_lock = h
        .repo
        .lock_holder(&testkit::scope(API, "staging"))
        .await
        .unwrap();
    let web_lock = h
        .repo
        .lock_holder(&testkit::scope(WEB, "staging"))
        .await
        .unwrap();
    assert_eq!(api_lock.as_deref(), Some(api.str("deployment_id")));
    assert_eq!(web_lock.as_deref(), Some(web.str("deployment_id")));

    // Within one repository the lock still holds: the next request waits behind api's.
    let again = request(&h, API, "staging", A2, 12).await;
    assert_eq!(again.str("decision"), "queued", "{again:?}");
    assert_eq!(again.str("behind"), api.str("deployment_id"), "{again:?}");
    let mut repos: Vec<String> = h
        .repo
        .repositories_in("staging")
        .await
        .unwrap()
        .into_iter()
        .map(String::from)
        .collect();
    repos.sort();
    assert_eq!(repos, [API, WEB]);
}

async fn each_promotion_check_looks_at_its_own_repository(h: Harness) {
    mount_rollbacks(&h).await;
    deploy_good(&h, API, "staging", A1, 11).await;
    // web's sha never went through staging: production refuses it, whatever api did.
    let web = request(&h, WEB, "production", W1, 21).await;
    assert_eq!(web.str("decision"), "rejected", "{web:?}");
    let api = request(&h, API, "production", A1, 12).await;
    assert_eq!(api.str("decision"), "approved", "{api:?}");
}

async fn a_critical_alert_with_one_repository_verifying_rolls_back_only_that_one_to_its_own_last_known_good(
    h: Harness,
) {
    mount_rollbacks(&h).await;
    ship_good(&h, API, A1, 11).await;
    // web shipped last: with environment-wide heads its sha was "production's" last known good.
    ship_good(&h, WEB, W1, 21).await;
    deploy_good(&h, API, "staging", A2, 13).await;
    let a2 = deploy(&h, API, "production", A2, 14).await;

    h.advance_mins(2);
    let reply = h
        .post_alert(
            "/webhooks/alertmanager",
            &alertmanager(
                "firing",
                "fp-errors",
                labels("production", "critical", "HighErrorRate"),
                h.now(),
                None,
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.count("rollbacks_started"), 1, "{reply:?}");

    // Exactly one GitHub deployment, in api, of api's own last known good.
    let api_calls = deployments_posted(&h, API).await;
    assert_eq!(api_calls.len(), 1, "{api_calls:?}");
    assert_eq!(api_calls[0]["ref"], A1);
    assert!(deployments_posted(&h, WEB).await.is_empty());
    let dep = h.deployment(&a2).await;
    assert_eq!(dep.state, State::RollingBack);
    assert_eq!(dep.rollback.unwrap().target_sha, A1);
    let web_heads = h
        .repo
        .heads(&testkit::scope(WEB, "production"))
        .await
        .unwrap();
    assert_eq!(web_heads.current.unwrap().sha, W1);

    // The incident is api's: it blocks api's production, not web's.
    let incident = h.incident("alertmanager:fp-errors").await;
    assert_eq!(incident.repository.as_ref().map(|r| r.as_str()), Some(API));
    deploy_good(&h, WEB, "staging", W2, 23).await;
    let web = request(&h, WEB, "production", W2, 24).await;
    assert_eq!(web.str("decision"), "approved", "{web:?}");
}

/// A `deployment_status` whose deployment payload names `shipgate_rollback_of`.
fn rollback_status(repo: &str, github_id: u64, sha: &str, of: &str, state: &str) -> Value {
    json!({
        "action": "created",
        "deployment_status": { "state": state, "description": format!("rollback {state}"), "environment": "production" },
        "deployment": { "id": github_id, "sha": sha, "ref": sha, "environment": "production", "payload": { "shipgate_rollback_of": of } },
        "repository": { "full_name": repo },
    })
}

async fn only_shipgates_own_rollback_deployment_finishes_a_rollback(h: Harness) {
    mount_rollbacks(&h).await;
    ship_good(&h, API, A1, 11).await;
    deploy_good(&h, API, "staging", A2, 13).await;
    let a2 = deploy(&h, API, "production", A2, 14).await;
    let alert = alertmanager(
        "firing",
        "fp-errors",
        labels("production", "critical", "HighErrorRate"),
        h.now(),
        None,
    );
    let reply = h.post_alert("/webhooks/alertmanager", &alert).await;
    assert_eq!(reply.count("rollbacks_started"), 1, "{reply:?}");

    // web's workflows can put anything in a deployment's payload: naming api's deployment
    // neither fails nor finishes api's rollback. Nor does a deployment of api's own that is
    // not the one shipgate created for the rollback (GitHub sets a deployment's id,
    // repository and environment; only the payload is the creator's).
    for (repo, github_id, state) in [
        (WEB, 9901, "failure"),
        (WEB, 9902, "success"),
        (API, 9903, "failure"),
        (API, 9904, "success"),
    ] {
        let reply = h
            .deliver(
                "deployment_status",
                &rollback_status(repo, github_id, A1, &a2, state),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            h.deployment(&a2).await.state,
            State::RollingBack,
            "{repo} {github_id} {state}: {reply:?}"
        );
    }
    // The one shipgate created finishes it.
    let reply = h
        .deliver(
            "deployment_status",
            &rollback_status(API, API_ROLLBACK_ID, A1, &a2, "success"),
        )
        .await;
    assert_eq!(reply.str("state"), "rolled_back", "{reply:?}");
    assert_eq!(h.deployment(&a2).await.state, State::RolledBack);
}

async fn a_first_deploy_that_drew_a_critical_incident_never_becomes_last_known_good(h: Harness) {
    mount_rollbacks(&h).await;
    deploy_good(&h, API, "staging", A1, 11).await;
    // api's first production deploy: nothing earlier to roll back to.
    let a1 = deploy(&h, API, "production", A1, 12).await;
    h.advance_mins(2);
    let firing = alertmanager(
        "firing",
        "fp-first",
        labels("production", "critical", "HighErrorRate"),
        h.now(),
        None,
    );
    let reply = h.post_alert("/webhooks/alertmanager", &firing).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.count("rollbacks_started"), 0, "{reply:?}");
    assert!(deployments_posted(&h, API).await.is_empty());
    // The alert even resolves before the window ends: the window still saw it.
    h.advance_mins(5);
    let resolved = alertmanager(
        "resolved",
        "fp-first",
        labels("production", "critical", "HighErrorRate"),
        h.now(),
        Some(h.now()),
    );
    h.post_alert("/webhooks/alertmanager", &resolved).await;

    h.advance_mins(30);
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert!(report.errors.is_empty(), "{report:?}");
    let dep = h.deployment(&a1).await;
    assert_eq!(dep.state, State::Failed, "{dep:?}");
    assert!(
        dep.reason
            .as_deref()
            .is_some_and(|r| r.contains("critical incident alertmanager:fp-first")),
        "{dep:?}"
    );
    let heads = h
        .repo
        .heads(&testkit::scope(API, "production"))
        .await
        .unwrap();
    assert_eq!(heads.last_known_good, None, "never the rollback target");
    assert!(h
        .repo
        .succeeded_in(API, A1)
        .await
        .unwrap()
        .iter()
        .all(|env| env != "production"));
    // Its lock is free: the next deploy may go.
    assert_eq!(
        h.repo
            .lock_holder(&testkit::scope(API, "production"))
            .await
            .unwrap(),
        None
    );
}

/// The alert's labels with its service set to `service`.
fn labels_for(service: &str) -> Value {
    let mut l = labels("production", "critical", "HighErrorRate");
    l["service"] = json!(service);
    l
}

/// api and web both verifying in production, each over its own last known good.
async fn both_verifying(h: &Harness) -> (String, String) {
    ship_good(h, API, A1, 11).await;
    ship_good(h, WEB, W1, 21).await;
    deploy_good(h, API, "staging", A2, 13).await;
    deploy_good(h, WEB, "staging", W2, 23).await;
    let a2 = deploy(h, API, "production", A2, 14).await;
    let w2 = deploy(h, WEB, "production", W2, 24).await;
    (a2, w2)
}

async fn with_two_repositories_verifying_an_alert_for_api_rolls_back_only_api_and_blocks_only_api(
    h: Harness,
) {
    mount_rollbacks(&h).await;
    let (a2, w2) = both_verifying(&h).await;

    h.advance_mins(2);
    let reply = h
        .post_alert(
            "/webhooks/alertmanager",
            &alertmanager("firing", "fp-api", labels_for("api"), h.now(), None),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.count("rollbacks_started"), 1, "{reply:?}");

    // Exactly one GitHub call, naming acme/api, to api's own last known good.
    let api_calls = deployments_posted(&h, API).await;
    assert_eq!(api_calls.len(), 1, "{api_calls:?}");
    assert_eq!(api_calls[0]["ref"], A1);
    assert!(deployments_posted(&h, WEB).await.is_empty());
    let all_posts = h
        .github_requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/deployments"))
        .count();
    assert_eq!(all_posts, 1);
    let dep = h.deployment(&a2).await;
    assert_eq!(dep.state, State::RollingBack);
    assert_eq!(dep.rollback.unwrap().target_sha, A1);
    // web is untouched.
    assert_eq!(h.deployment(&w2).await.state, State::Verifying);

    let incident = h.incident("alertmanager:fp-api").await;
    assert_eq!(incident.repository.as_ref().map(|r| r.as_str()), Some(API));
    assert_eq!(incident.caused_by_deployment.as_deref(), Some(a2.as_str()));

    // api's rollback lands; the incident still blocks api's next deploy.
    let done = deployment_status(API, API_ROLLBACK_ID, "production", A1, None, "success");
    let reply = h.deliver("deployment_status", &done).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(h.deployment(&a2).await.state, State::RolledBack);
    let api = request(&h, API, "production", A2, 15).await;
    assert_eq!(api.str("decision"), "rejected", "{api:?}");
    assert!(
        api.str("reason")
            .contains("critical incident alertmanager:fp-api"),
        "{api:?}"
    );

    // web's window ends; its next deploy is not blocked by api's incident.
    h.advance_mins(31);
    let web = request(&h, WEB, "production", W2, 25).await;
    assert_eq!(web.str("decision"), "approved", "{web:?}");
}

async fn an_alert_whose_service_maps_to_no_repository_rolls_nothing_back_and_pages_why(h: Harness) {
    mount_rollbacks(&h).await;
    let (a2, w2) = both_verifying(&h).await;

    let reply = h
        .post_alert(
            "/webhooks/alertmanager",
            &alertmanager("firing", "fp-billing", labels_for("billing"), h.now(), None),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.count("rollbacks_started"), 0, "{reply:?}");
    assert!(deployments_posted(&h, API).await.is_empty());
    assert!(deployments_posted(&h, WEB).await.is_empty());
    assert_eq!(h.deployment(&a2).await.state, State::Verifying);
    assert_eq!(h.deployment(&w2).await.state, State::Verifying);

    let incident = h.incident("alertmanager:fp-billing").await;
    assert_eq!(incident.repository, None);
    assert_eq!(incident.caused_by_deployment, None);
    assert_eq!(
        h.repo.open_incidents("production").await.unwrap().len(),
        1,
        "an environment-level incident"
    );
    let pages: Vec<String> = h
        .jobs()
        .into_iter()
        .filter(|(_, page)| *page)
        .map(|(summary, _)| summary)
        .collect();
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert!(
        pages[0].contains("no repository for service billing"),
        "{pages:?}"
    );
}

async fn a_manual_rollback_names_its_repository_and_returns_to_that_repositorys_good_version(
    h: Harness,
) {
    mount_rollbacks(&h).await;
    ship_good(&h, API, A1, 11).await;
    deploy_good(&h, API, "staging", A2, 13).await;
    let a2 = deploy_good(&h, API, "production", A2, 14).await;
    ship_good(&h, WEB, W1, 21).await;

    let outcome =
        rollback::start_manual(h.services(), &testkit::scope(API, "production"), "cli:ops")
            .await
            .unwrap();
    assert!(
        matches!(&outcome, rollback::RollbackOutcome::Started { deployment_id, target_sha, .. }
            if *deployment_id == a2 && target_sha == A1),
        "{outcome:?}"
    );
    let api_calls = deployments_posted(&h, API).await;
    assert_eq!(api_calls.len(), 1, "{api_calls:?}");
    assert_eq!(api_calls[0]["ref"], A1);
    assert!(deployments_posted(&h, WEB).await.is_empty());
    let web_heads = h
        .repo
        .heads(&testkit::scope(WEB, "production"))
        .await
        .unwrap();
    assert_eq!(web_heads.current.unwrap().sha, W1);
}
