//! Slack approval clicks per second on one core: signature check, parse and decision, in memory.
//!
//! One iteration is what the handler does around its store round trips: `verify_slack` (replay
//! window and v0 signature) over the form body, `interaction::parse_form` (form decoding, then
//! the `payload` JSON), then the approval rule itself — the clicker's identity facts from the
//! policy, the button nonce, and `Deployment::record_approval` on a copy of an
//! `awaiting_approval` production deployment (the copy stands in for the record the handler
//! reads). The body is `events/slack-approval/apigw-block-actions-approve.json`, a realistic
//! single Approve click (about 1.6 KB form-encoded).
//!
//! Run: `cargo bench -p slack-approval --bench inbound`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jiff::{SignedDuration, Timestamp};
use secrecy::SecretString;
use shipgate::domain::deployment::{ApprovalOutcome, ApproverFacts, Deployment};
use shipgate::domain::policy::Policy;
use shipgate::signature::{sign_slack, verify_slack};
use slack_approval::interaction::{self, ButtonAction, Interaction};

const SECRET: &str = "shipgate-bench-slack-signing-secret";

fn click_body() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/slack-approval/apigw-block-actions-approve.json");
    let raw =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let event: serde_json::Value = serde_json::from_slice(&raw).expect("event sample is JSON");
    event["body"]
        .as_str()
        .expect("event sample has a string body")
        .as_bytes()
        .to_vec()
}

/// The production deployment the click's button belongs to, waiting for 2 approvals. Built from
/// JSON so fields added to the record later (all defaulted) do not break the bench.
fn awaiting(id: &str, nonce: &str, now: Timestamp) -> Deployment {
    let mut dep: Deployment = serde_json::from_value(serde_json::json!({
        "id": id,
        "repo": "octo-org/hello-world",
        "environment": "production",
        "git_ref": "refs/heads/main",
        "sha": "d6fde92930d4715a2b49857d24b940956b26d2d3",
        "requester": "octocat",
        "kind": "deploy",
        "state": "awaiting_approval",
        "version": 3,
        "created_at": now - SignedDuration::from_mins(5),
        "updated_at": now - SignedDuration::from_mins(5),
    }))
    .expect("deployment record deserialises");
    dep.approvals_required = 2;
    dep.approval_expires_at = Some(now + SignedDuration::from_hours(4));
    dep.button_nonce = Some(nonce.to_string());
    dep
}

fn inbound(c: &mut Criterion) {
    let secret = SecretString::from(SECRET.to_string());
    let policy = Policy::example().expect("example policy parses");
    let now: Timestamp = "2025-06-02T10:00:00Z".parse().expect("timestamp");
    let ts = now.as_second();
    let ts_header = ts.to_string();
    let body = click_body();
    let signature = sign_slack(&secret, ts, &body);

    let Interaction::Click(click) = interaction::parse_form(&body).expect("click parses") else {
        panic!("event sample is not a button click");
    };
    assert_eq!(click.action, ButtonAction::Approve);
    let record = awaiting(&click.deployment_id, &click.nonce, now);

    let handle = |body: &[u8]| -> u32 {
        verify_slack(&secret, body, Some(&ts_header), Some(&signature), ts)
            .expect("signature verifies");
        let Ok(Interaction::Click(click)) = interaction::parse_form(body) else {
            panic!("click parses");
        };
        let mut dep = record.clone();
        assert_eq!(dep.button_nonce.as_deref(), Some(click.nonce.as_str()));
        let env = policy
            .environment(dep.environment.as_str())
            .expect("production exists");
        let facts = ApproverFacts {
            approvers: &env.approvers,
            clicker_login: policy.slack_user_login(&click.user),
            prevent_self_approval: env.prevent_self_approval,
        };
        match dep.record_approval(&click.user, &facts, now) {
            Ok((ApprovalOutcome::Progress { have, .. }, _)) => have,
            other => panic!("first approval of two should count, got {other:?}"),
        }
    };
    assert_eq!(handle(&body), 1);

    let mut group = c.benchmark_group("slack_inbound");
    group.throughput(Throughput::Elements(1));
    group.bench_function("block_actions_approve/1.6KB", |b| {
        b.iter(|| handle(black_box(body.as_slice())))
    });
    group.finish();
}

criterion_group!(benches, inbound);
criterion_main!(benches);
