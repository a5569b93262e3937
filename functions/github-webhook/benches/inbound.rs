//! GitHub deliveries per second on one core: signature check, parse and decision, in memory.
//!
//! Each iteration does what the handler does before it touches the store: `verify_github` over
//! the raw body, `events::parse` into a typed event, then the pure decision the event leads to.
//! Storage, deduplication and the GitHub callback are left out on purpose: they are network
//! round trips, measured elsewhere, and would drown the CPU cost this bench is about.
//!
//! - `deployment_protection_rule/30KiB`: `scripts/bench/data/deployment_protection_rule.30k.json`
//!   (see `scripts/bench/make-dpr-payload.py`; `scripts/bench/verify-parse-python.py` is the
//!   Python baseline on the same bytes), decided by `evaluate_for` against the example policy's
//!   `production` environment (promotion from staging, window, freeze, incidents, lock, two
//!   approvals).
//! - `deployment_protection_rule/2KiB`: the repository's own staging-to-production event sample.
//! - `deployment_status` and `workflow_run`: the octokit payloads in `tests/data`. A status is
//!   decided by the lifecycle's transition function (`next_state`) from `deploying`; a completed
//!   run has no decision beyond being recorded, so it is verify + parse only.
//!
//! Run: `cargo bench -p github-webhook --bench inbound`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use github_webhook::events::{self, GitHubEvent};
use jiff::Timestamp;
use secrecy::SecretString;
use shipgate::domain::deployment::{next_state, Action, State};
use shipgate::domain::policy::{evaluate_for, Decision, GateFacts, GateKind, GateRequest, Policy};
use shipgate::domain::GitHubDeploymentState;
use shipgate::signature::{sign_github, verify_github};

/// Same secret as the Python baseline, so both sign the same bytes the same way.
const SECRET: &str = "shipgate-bench-webhook-secret";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The `body` of an API Gateway event sample.
fn apigw_body(path: &Path) -> Vec<u8> {
    let event: serde_json::Value =
        serde_json::from_slice(&read(path)).expect("event sample is JSON");
    event["body"]
        .as_str()
        .expect("event sample has a string body")
        .as_bytes()
        .to_vec()
}

/// One signed delivery, as the handler receives it.
struct Delivery {
    event: &'static str,
    body: Vec<u8>,
    signature: String,
}

impl Delivery {
    fn new(secret: &SecretString, event: &'static str, body: Vec<u8>) -> Self {
        let signature = sign_github(secret, &body);
        Delivery {
            event,
            body,
            signature,
        }
    }
}

/// What the gate knows in the common case: the sha passed staging, nothing is open or locked.
fn facts() -> GateFacts {
    GateFacts {
        succeeded_in: BTreeSet::from(["staging".to_string()]),
        open_critical_incidents: Vec::new(),
        lock_holder: None,
    }
}

/// Verify, parse, decide: the CPU work of one delivery. Returns something derived from the
/// decision so the optimiser cannot drop any of it.
fn handle(
    secret: &SecretString,
    policy: &Policy,
    facts: &GateFacts,
    now: Timestamp,
    d: &Delivery,
) -> usize {
    verify_github(secret, &d.body, Some(&d.signature)).expect("signature verifies");
    match events::parse(d.event, &d.body).expect("delivery parses") {
        GitHubEvent::ProtectionRule(req) => {
            let request = GateRequest {
                environment: req.environment.into(),
                git_ref: req.git_ref,
                sha: req.sha.into(),
                requester_login: req.requester,
                kind: GateKind::Deploy,
                break_glass_reason: req.break_glass_reason,
            };
            let decision = evaluate_for(policy, &request, facts, now);
            decision.checks().len()
        }
        GitHubEvent::DeploymentStatus(status) => {
            // The lifecycle's mapping of a status on a deployment it tracks (not a rollback).
            let action = match status.state {
                s if s.is_started() => Some(Action::StartDeploy),
                GitHubDeploymentState::Success => Some(Action::BeginVerification),
                s if s.is_failed() => Some(Action::Fail),
                _ => None,
            };
            action
                .and_then(|a| next_state(State::Deploying, a).ok())
                .map_or(0, |s| s.as_str().len())
        }
        GitHubEvent::WorkflowRunCompleted(run) => run.conclusion.len(),
        other => panic!("unexpected event {other:?}"),
    }
}

fn inbound(c: &mut Criterion) {
    let secret = SecretString::from(SECRET.to_string());
    let policy = Policy::example().expect("example policy parses");
    let facts = facts();
    let now: Timestamp = "2026-06-02T10:00:00Z".parse().expect("timestamp");
    let repo = crate_dir().join("../..");
    let data = crate_dir().join("tests/data");

    let deliveries = [
        (
            "deployment_protection_rule/30KiB",
            Delivery::new(
                &secret,
                "deployment_protection_rule",
                read(&repo.join("scripts/bench/data/deployment_protection_rule.30k.json")),
            ),
        ),
        (
            "deployment_protection_rule/2KiB",
            Delivery::new(
                &secret,
                "deployment_protection_rule",
                apigw_body(&repo.join(
                    "events/github-webhook/apigw-deployment-protection-rule-production.json",
                )),
            ),
        ),
        (
            "deployment_status/10KiB",
            Delivery::new(
                &secret,
                "deployment_status",
                read(&data.join("deployment_status.payload.json")),
            ),
        ),
        (
            "workflow_run/21KiB",
            Delivery::new(
                &secret,
                "workflow_run",
                read(&data.join("workflow_run.completed.payload.json")),
            ),
        ),
    ];

    // The bench must measure the path that succeeds, not an early refusal.
    let GitHubEvent::ProtectionRule(req) =
        events::parse("deployment_protection_rule", &deliveries[0].1.body)
            .expect("30 KiB delivery parses")
    else {
        panic!("30 KiB delivery is not a protection rule request");
    };
    let decision = evaluate_for(
        &policy,
        &GateRequest {
            environment: req.environment.into(),
            git_ref: req.git_ref,
            sha: req.sha.into(),
            requester_login: req.requester,
            kind: GateKind::Deploy,
            break_glass_reason: None,
        },
        &facts,
        now,
    );
    assert!(
        matches!(decision, Decision::NeedsApproval { required: 2, .. }),
        "30 KiB delivery should wait for two approvals, got {decision:?}"
    );

    let mut group = c.benchmark_group("github_inbound");
    group.throughput(Throughput::Elements(1));
    for (name, delivery) in &deliveries {
        group.bench_function(*name, |b| {
            b.iter(|| handle(&secret, &policy, &facts, now, black_box(delivery)))
        });
    }
    group.finish();
}

criterion_group!(benches, inbound);
criterion_main!(benches);
