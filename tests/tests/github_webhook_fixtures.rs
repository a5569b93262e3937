//! Every copied GitHub payload goes through the handler, signed as GitHub signs it, and lands
//! where it should: acted on, recorded, refused with a clear message, or accepted and ignored.

#[path = "common/github_webhook.rs"]
mod common;

use common::{fixture, fixture_json, protection_rule, Harness, REPO};
use serde_json::{json, Value};

/// What a fixture must lead to.
enum Expect {
    Pong { app_id: Option<u64> },
    BadRequest { mentions: &'static str },
    Untracked,
    CiRecorded,
    CommitsRecorded { commits: u64 },
    Ignored,
}

const TABLE: &[(&str, &str, Expect)] = &[
    ("ping", "ping.payload.json", Expect::Pong { app_id: None }),
    (
        "ping",
        "ping.with-app_id.payload.json",
        Expect::Pong {
            app_id: Some(29310),
        },
    ),
    (
        "deployment_protection_rule",
        "deployment_protection_rule.requested.payload.json",
        Expect::BadRequest {
            mentions: "`deployment_callback_url` does not name a workflow run",
        },
    ),
    ("deployment", "deployment.payload.json", Expect::Untracked),
    (
        "deployment_status",
        "deployment_status.payload.json",
        Expect::Untracked,
    ),
    (
        "workflow_run",
        "workflow_run.completed.payload.json",
        Expect::CiRecorded,
    ),
    (
        "workflow_run",
        "workflow_run.completed.with-pull-requests.payload.json",
        Expect::CiRecorded,
    ),
    (
        "push",
        "push.with-new-branch.payload.json",
        Expect::CommitsRecorded { commits: 1 },
    ),
    ("push", "push.payload.json", Expect::Ignored),
    (
        "check_suite",
        "check_suite.completed.payload.json",
        Expect::Ignored,
    ),
    ("create", "create.payload.json", Expect::Ignored),
    (
        "installation",
        "installation.created.payload.json",
        Expect::Ignored,
    ),
    (
        "pull_request",
        "pull_request.closed.payload.json",
        Expect::Ignored,
    ),
    (
        "pull_request",
        "pull_request.opened.payload.json",
        Expect::Ignored,
    ),
    ("release", "release.published.payload.json", Expect::Ignored),
    (
        "workflow_job",
        "workflow_job.completed.failure.with-organization.payload.json",
        Expect::Ignored,
    ),
    (
        "workflow_job",
        "workflow_job.completed.success.with-organization.payload.json",
        Expect::Ignored,
    ),
    (
        "workflow_job",
        "workflow_job.queued.with-deployment.payload.json",
        Expect::Ignored,
    ),
];

#[test]
fn the_table_covers_every_copied_payload() {
    let mut copied: Vec<String> = std::fs::read_dir(common::data_path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    copied.sort();
    let mut listed: Vec<String> = TABLE.iter().map(|(_, f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(copied, listed);
}

#[tokio::test]
async fn every_payload_parses_and_routes_to_the_right_outcome() {
    for (event, file, expect) in TABLE {
        // A fresh world per payload, so what one payload recorded cannot satisfy another's check.
        let h = Harness::new().await;
        let body = fixture(file);
        let reply = h.deliver(event, &body).await;
        let doc = fixture_json(file);
        let ctx = format!("{event} {file}: {reply:?}");
        match expect {
            Expect::Pong { app_id } => {
                assert_eq!(reply.status, 200, "{ctx}");
                assert_eq!(reply.str("message"), "pong", "{ctx}");
                let hook_id = doc["hook_id"].as_u64().unwrap();
                let hook: Value = h
                    .repo
                    .get_meta("github-hook", &hook_id.to_string())
                    .await
                    .unwrap()
                    .expect(&ctx);
                assert_eq!(hook["hook_id"], json!(hook_id), "{ctx}");
                assert_eq!(hook["app_id"], json!(app_id), "{ctx}");
                assert_eq!(hook["zen"], doc["zen"], "{ctx}");
            }
            Expect::BadRequest { mentions } => {
                assert_eq!(reply.status, 400, "{ctx}");
                assert!(reply.str("message").contains(mentions), "{ctx}");
                assert!(h.deployments().await.is_empty(), "{ctx}");
                assert!(h.github_requests().await.is_empty(), "{ctx}");
            }
            Expect::Untracked => {
                assert_eq!(reply.status, 200, "{ctx}");
                assert_eq!(reply.body["tracked"], json!(false), "{ctx}");
                let kind = if *event == "deployment" {
                    "untracked-deployment"
                } else {
                    "untracked-status"
                };
                let recorded = h.partition(&format!("META#{kind}")).await;
                assert_eq!(recorded.len(), 1, "{ctx}");
                let gh_id = doc["deployment"]["id"].as_u64().unwrap();
                assert!(recorded[0].sk.starts_with(&format!("{gh_id}#")), "{ctx}");
                assert!(h.deployments().await.is_empty(), "{ctx}");
            }
            Expect::CiRecorded => {
                assert_eq!(reply.status, 200, "{ctx}");
                let run = &doc["workflow_run"];
                let (repo, sha) = (
                    doc["repository"]["full_name"].as_str().unwrap(),
                    run["head_sha"].as_str().unwrap(),
                );
                let facts = h.repo.sha_facts(repo, sha, "CI#").await.unwrap();
                assert_eq!(facts.len(), 1, "{ctx}");
                assert_eq!(
                    facts[0].0,
                    format!("CI#{}", run["path"].as_str().unwrap()),
                    "{ctx}"
                );
                assert_eq!(
                    facts[0].1.detail.as_deref(),
                    run["conclusion"].as_str(),
                    "{ctx}"
                );
                assert_eq!(
                    facts[0].1.at.to_string(),
                    run["updated_at"].as_str().unwrap(),
                    "{ctx}"
                );
            }
            Expect::CommitsRecorded { commits } => {
                assert_eq!(reply.status, 200, "{ctx}");
                assert_eq!(reply.body["commits"], json!(commits), "{ctx}");
                let repo = doc["repository"]["full_name"].as_str().unwrap();
                for c in doc["commits"].as_array().unwrap() {
                    let facts = h
                        .repo
                        .sha_facts(repo, c["id"].as_str().unwrap(), "COMMIT")
                        .await
                        .unwrap();
                    assert_eq!(facts.len(), 1, "{ctx}");
                    let at: jiff::Timestamp = c["timestamp"].as_str().unwrap().parse().unwrap();
                    assert_eq!(facts[0].1.at, at, "{ctx}");
                }
            }
            Expect::Ignored => {
                assert_eq!(reply.status, 202, "{ctx}");
                // Ignored events are not even claimed: nothing at all is written.
                assert!(h.all_items().await.is_empty(), "{ctx}");
            }
        }
        assert!(
            reply.status != 200 || !h.all_items().await.is_empty(),
            "a 200 records something: {ctx}"
        );
    }
}

#[tokio::test]
async fn the_protection_rule_fixture_with_a_real_callback_url_is_gated() {
    let h = Harness::new().await;
    let fixture_sha = fixture_json("deployment_protection_rule.requested.payload.json")
        ["deployment"]["sha"]
        .clone();
    let body = protection_rule(
        "staging",
        4242,
        fixture_sha.as_str().unwrap(),
        "refs/heads/main",
    );

    let reply = h.deliver_json("deployment_protection_rule", &body).await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.str("message"), "gated");
    assert_eq!(reply.str("decision"), "approved");
    let dep = h.deployment(reply.str("deployment_id")).await;
    assert_eq!(dep.run_id, Some(4242));
    assert_eq!(dep.installation_id, Some(common::INSTALLATION_ID));
    assert_eq!(dep.sha, fixture_sha.as_str().unwrap());
    assert_eq!(dep.git_ref, "refs/heads/main");
    assert_eq!(dep.repo, REPO);
    assert_eq!(dep.requester, "octocat");
    let calls = h.protection_rule_calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].0,
        format!("/repos/{REPO}/actions/runs/4242/deployment_protection_rule")
    );
}

#[tokio::test]
async fn the_protection_rule_fixture_for_an_environment_outside_the_policy_is_rejected() {
    let h = Harness::new().await;
    let mut body = protection_rule(
        "staging",
        5,
        "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
        "main",
    );
    // The fixture's own environment name, which the policy does not define.
    body["environment"] = json!("my-environment");

    let reply = h.deliver_json("deployment_protection_rule", &body).await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.str("decision"), "rejected");
    assert!(
        reply
            .str("reason")
            .contains("\"my-environment\" is not defined in the policy"),
        "{reply:?}"
    );
    let calls = h.protection_rule_calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1["state"], json!("rejected"));
}
