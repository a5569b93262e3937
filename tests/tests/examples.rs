//! The workflows in `examples/workflows/`, checked against shipgate's own code: rollbacks are
//! driven through the alert route against a wiremock GitHub, and what shipgate really sent
//! (the dispatch's inputs, the rollback and drill deployments' payloads) is compared with what
//! the workflows declare and read; the run titles the workflows produce are given to the gate.
//!
//! The YAML is read line by line (block style, as the examples are written): enough to find
//! the declared inputs, the expressions and `run-name`, without a YAML parser.

#[path = "common/alert_webhook.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::domain::policy::{Policy, RollbackMethod};
use shipgate::service::drill::{self, StartResult};
use shipgate::service::gate::break_glass_reason_in;
use shipgate::service::rollback::rollback_marker;

const DEPLOY_YML: &str = include_str!("../../examples/workflows/deploy.yml");
const ON_DEPLOYMENT_YML: &str = include_str!("../../examples/workflows/on-deployment.yml");
const ROLLBACK_YML: &str = include_str!("../../examples/workflows/rollback.yml");
const EXAMPLE_POLICY: &str = include_str!("../../shared/policy.example.toml");

/// staging rolls back by redeploy (on-deployment.yml) and runs drills; production by
/// dispatching rollback.yml, as in the example policy.
const POLICY: &str = r#"
[services]
api = "octo-org/shop"

[environments.staging]
verification_window = "10m"
rollback_on = ["critical"]
rollback = { method = "redeploy" }
rollback_drill = true

[environments.production]
verification_window = "30m"
rollback_on = ["critical"]
rollback = { method = "workflow", workflow = "rollback.yml", ref = "main" }
"#;

/// The head of the branch a dispatched rollback run starts at: neither A nor B.
const HEAD: &str = "cccccccccccccccccccccccccccccccccccccccc";

// ---- reading the workflows ----

/// One YAML line that is neither blank nor a comment.
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

fn lines(doc: &str) -> Vec<Line<'_>> {
    doc.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| Line {
            indent: l.len() - l.trim_start().len(),
            text: l.trim(),
        })
        .collect()
}

/// One entry of a block mapping: its key, what follows the colon on its line, and the lines
/// of its value below.
struct Entry<'a, 'b> {
    key: &'a str,
    inline: &'a str,
    block: &'b [Line<'a>],
}

/// The entries of the block mapping whose lines are `block` (its first line sets the indent).
fn entries<'a, 'b>(block: &'b [Line<'a>]) -> Vec<Entry<'a, 'b>> {
    let Some(indent) = block.first().map(|l| l.indent) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < block.len() {
        let line = &block[i];
        assert_eq!(
            line.indent, indent,
            "unexpected indentation at `{}`",
            line.text
        );
        let (key, inline) = line
            .text
            .split_once(':')
            .unwrap_or_else(|| panic!("`{}` is not a `key: value` line", line.text));
        let mut end = i + 1;
        while end < block.len() && block[end].indent > indent {
            end += 1;
        }
        out.push(Entry {
            key,
            inline: inline.trim(),
            block: &block[i + 1..end],
        });
        i = end;
    }
    out
}

/// The entry at `path` (e.g. `["on", "workflow_dispatch"]`) of a workflow; fails the test
/// when there is none.
fn entry<'a, 'b>(all: &'b [Line<'a>], path: &[&str]) -> Entry<'a, 'b> {
    let mut block = all;
    let mut found = None;
    for key in path {
        let e = entries(block)
            .into_iter()
            .find(|e| e.key == *key)
            .unwrap_or_else(|| panic!("the workflow has no `{}`", path.join(".")));
        block = e.block;
        found = Some(e);
    }
    found.expect("a non-empty path")
}

/// The keys directly under `path`.
fn keys_under(doc: &str, path: &[&str]) -> BTreeSet<String> {
    let all = lines(doc);
    entries(entry(&all, path).block)
        .into_iter()
        .map(|e| e.key.to_string())
        .collect()
}

/// The inputs a workflow declares under `on.workflow_dispatch.inputs`.
fn declared_inputs(doc: &str) -> BTreeSet<String> {
    keys_under(doc, &["on", "workflow_dispatch", "inputs"])
}

/// The workflow's `run-name`, a one-line (optionally double-quoted) or folded (`>-`) scalar.
fn run_name(doc: &str) -> String {
    let all = lines(doc);
    let e = entry(&all, &["run-name"]);
    let text = match e.inline {
        ">-" | ">" => e.block.iter().map(|l| l.text).collect::<Vec<_>>().join(" "),
        one_line => one_line.to_string(),
    };
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(unquoted) => {
            assert!(!unquoted.contains('\\'), "escapes in run-name: {text}");
            unquoted.to_string()
        }
        None => text,
    }
}

/// Every name that follows `prefix` in the workflow's expressions and values (comments left
/// out), e.g. the `X` of each `github.event.deployment.payload.X`.
fn references(doc: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in lines(doc) {
        let mut rest = line.text;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue; // a longer name that ends with the prefix
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// What one run of a workflow has: the inputs it declares, those it was given, its sha.
struct Run<'a> {
    declared: BTreeSet<String>,
    given: BTreeMap<String, String>,
    sha: &'a str,
}

impl Run<'_> {
    /// Renders a `run-name` as GitHub would for this run. Only the expression shapes the
    /// examples use are understood (`inputs.X`, `github.sha`, `'literal'`, `A || B`,
    /// `A && B`, `format('…{0}…', X)`); anything else fails the test, to be taught here.
    fn render(&self, template: &str) -> String {
        for name in self.given.keys() {
            assert!(
                self.declared.contains(name),
                "input `{name}` is given but the workflow does not declare it (declared: {:?})",
                self.declared
            );
        }
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find("}}")
                .unwrap_or_else(|| panic!("unclosed expression in {template}"))
                + start;
            out.push_str(&self.or(rest[start + 3..end].trim()));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// `A || B || …`: the first alternative that is not empty.
    fn or(&self, expr: &str) -> String {
        expr.split(" || ")
            .map(|alt| self.and(alt))
            .find(|v| !v.is_empty())
            .unwrap_or_default()
    }

    /// `A && B`: B when A is not empty.
    fn and(&self, expr: &str) -> String {
        match expr.split_once(" && ") {
            Some((a, _)) if self.term(a).is_empty() => String::new(),
            Some((_, b)) => self.term(b),
            None => self.term(expr),
        }
    }

    fn term(&self, term: &str) -> String {
        let term = term.trim();
        if let Some(literal) = term.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
            return literal.to_string();
        }
        if let Some(args) = term
            .strip_prefix("format(")
            .and_then(|t| t.strip_suffix(')'))
        {
            let (template, arg) = args
                .split_once("',")
                .unwrap_or_else(|| panic!("format with one argument expected: {term}"));
            let template = template
                .trim()
                .strip_prefix('\'')
                .unwrap_or_else(|| panic!("format template expected: {term}"));
            return template.replace("{0}", &self.term(arg));
        }
        if term == "github.sha" {
            return self.sha.to_string();
        }
        if let Some(name) = term.strip_prefix("inputs.") {
            assert!(
                self.declared.contains(name),
                "run-name reads `inputs.{name}`, which the workflow does not declare (declared: {:?})",
                self.declared
            );
            return self.given.get(name).cloned().unwrap_or_default();
        }
        panic!("this test cannot evaluate `{term}`; teach Run::term its shape")
    }
}

// ---- driving shipgate ----

/// A critical alert for the api service in `environment`, where B verifies over A.
async fn critical_alert(h: &Harness, environment: &str) {
    let reply = h
        .post_alert(
            "/webhooks/alertmanager",
            &alertmanager(
                "firing",
                &format!("fp-{environment}"),
                labels(environment, "critical", "ApiDown"),
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
}

/// Deploys A (good) and B to production and lets a critical alert roll B back: shipgate
/// dispatches rollback.yml. Returns B's id and the dispatch's body.
async fn workflow_rollback(h: &Harness) -> (String, Value) {
    h.deploy_good("production", SHA_A, 301, 7101).await;
    let b = h.deploy("production", SHA_B, 302, 7102).await;
    critical_alert(h, "production").await;
    let calls = h.github_calls("/dispatches").await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].url.path(),
        format!("/repos/{REPO}/actions/workflows/rollback.yml/dispatches")
    );
    (b, serde_json::from_slice(&calls[0].body).unwrap())
}

/// Deploys A (good) and B to staging and lets a critical alert roll B back: shipgate creates
/// a GitHub deployment of A. Returns B's id and that request's body.
async fn redeploy_rollback(h: &Harness) -> (String, Value) {
    h.deploy_good("staging", SHA_A, 201, 6001).await;
    let b = h.deploy("staging", SHA_B, 202, 6002).await;
    critical_alert(h, "staging").await;
    let calls = h.github_calls("/deployments").await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method.as_str(), "POST");
    (b, serde_json::from_slice(&calls[0].body).unwrap())
}

fn object_keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object expected: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object expected: {value}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a string input").to_string()))
        .collect()
}

// ---- rollback.yml ----

#[tokio::test]
async fn rollback_yml_declares_exactly_the_inputs_shipgate_dispatches() {
    let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
    let (_, body) = workflow_rollback(&h).await;
    let sent = object_keys(&body["inputs"]);
    let declared = declared_inputs(ROLLBACK_YML);
    assert_eq!(
        declared, sent,
        "rollback.yml's workflow_dispatch inputs must be exactly the inputs shipgate sends \
         (GitHub refuses a dispatch with an undeclared input)"
    );
    let read = references(ROLLBACK_YML, "inputs.");
    assert!(
        read.is_subset(&declared),
        "rollback.yml reads inputs it does not declare: {:?}",
        read.difference(&declared).collect::<Vec<_>>()
    );
    // The job deploys to the environment, so it meets shipgate's protection rule.
    assert!(keys_under(ROLLBACK_YML, &["jobs", "rollback"]).contains("environment"));
}

#[tokio::test]
async fn rollback_yml_run_name_carries_the_marker_the_gate_recognises() {
    // The dispatch answers 204 without a run id (as GitHub Enterprise Server does), so the
    // gate can only know the run by its title.
    let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
    let (b, body) = workflow_rollback(&h).await;
    assert!(body["inputs"]["reason"]
        .as_str()
        .unwrap()
        .ends_with(&rollback_marker(&b)));

    let template = run_name(ROLLBACK_YML);
    let run = Run {
        declared: declared_inputs(ROLLBACK_YML),
        given: string_map(&body["inputs"]),
        sha: HEAD,
    };
    let title = run.render(&template);
    h.github_says_run(REPO, 7104, &title, "waiting", None).await;
    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule("production", HEAD, 7104),
        )
        .await;
    assert_eq!(
        (reply.str("decision"), reply.str("deployment_id")),
        ("approved", b.as_str()),
        "the gate did not recognise the rollback run titled {title:?}: {reply:?}"
    );

    // Without the reason in its title, the same run is gated like any other.
    let mut without_reason = run.given.clone();
    without_reason.insert("reason".into(), String::new());
    let untitled = Run {
        given: without_reason,
        ..run
    }
    .render(&template);
    h.github_says_run(REPO, 7105, &untitled, "waiting", None)
        .await;
    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule("production", HEAD, 7105),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_ne!(reply.body["decision"], json!("approved"), "{reply:?}");
    assert_ne!(reply.body["deployment_id"], json!(b), "{reply:?}");
}

// ---- on-deployment.yml ----

#[tokio::test]
async fn on_deployment_yml_reads_only_payload_keys_shipgate_sends() {
    let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
    let (b, created) = redeploy_rollback(&h).await;
    // The deployment the workflow deploys: the target sha, in B's environment.
    assert_eq!(
        (&created["ref"], &created["environment"]),
        (&json!(SHA_A), &json!("staging"))
    );
    let rollback_keys = object_keys(&created["payload"]);

    // A rollback drill's legs are deployments shipgate creates too.
    let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
    h.deploy_good("staging", SHA_A, 201, 6001).await;
    h.deploy_good("staging", SHA_B, 202, 6002).await;
    let started = drill::start_in(h.services(), &testkit::scope(REPO, "staging"))
        .await
        .unwrap();
    assert!(
        matches!(started, StartResult::Started { .. }),
        "{started:?}"
    );
    let calls = h.github_calls("/deployments").await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let leg: Value = serde_json::from_slice(&calls[0].body).unwrap();
    let drill_keys = object_keys(&leg["payload"]);

    let sent: BTreeSet<String> = rollback_keys.union(&drill_keys).cloned().collect();
    let read = references(ON_DEPLOYMENT_YML, "github.event.deployment.payload.");
    assert!(!read.is_empty(), "on-deployment.yml reads no payload key");
    assert!(
        read.is_subset(&sent),
        "on-deployment.yml reads payload keys shipgate does not send: {:?} (rollback payload \
         {rollback_keys:?}, drill payload {drill_keys:?})",
        read.difference(&sent).collect::<Vec<_>>()
    );

    assert_eq!(created["payload"]["shipgate_rollback_of"], json!(b));

    // The job runs for both kinds: its condition names a key of each payload.
    let all = lines(ON_DEPLOYMENT_YML);
    let condition = entry(&all, &["jobs", "deploy", "if"]).inline;
    let named = |keys: &BTreeSet<String>| {
        keys.iter()
            .any(|k| condition.contains(&format!("github.event.deployment.payload.{k}")))
    };
    assert!(
        named(&rollback_keys) && named(&drill_keys),
        "the job's condition must let rollbacks and drill legs through: {condition}"
    );
    // The deployment exists already: a job environment would create a second one.
    assert!(!keys_under(ON_DEPLOYMENT_YML, &["jobs", "deploy"]).contains("environment"));
}

/// The states on-deployment.yml posts (`-f state=X`).
fn posted_states() -> BTreeSet<String> {
    references(ON_DEPLOYMENT_YML, "state=")
}

#[tokio::test]
async fn on_deployment_yml_reports_the_statuses_that_finish_a_rollback() {
    let states = posted_states();
    assert_eq!(
        states,
        BTreeSet::from(["failure", "in_progress", "success"].map(String::from)),
        "on-deployment.yml should post in_progress, then success or failure"
    );
    for (last, ends) in [("success", State::RolledBack), ("failure", State::Failed)] {
        let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
        let (b, created) = redeploy_rollback(&h).await;
        for state in ["in_progress", last] {
            // GitHub delivers each status the workflow posts on shipgate's deployment.
            let reply = h
                .deliver(
                    "deployment_status",
                    &deployment_status(
                        ROLLBACK_GITHUB_ID,
                        "staging",
                        SHA_A,
                        None,
                        state,
                        created["payload"].clone(),
                    ),
                )
                .await;
            assert_eq!(reply.status, 200, "{reply:?}");
        }
        assert_eq!(h.deployment(&b).await.state, ends, "after {last}");
    }
}

// ---- deploy.yml ----

#[tokio::test]
async fn deploy_yml_break_glass_run_name_is_what_the_gate_reads() {
    let template = run_name(DEPLOY_YML);
    let declared = declared_inputs(DEPLOY_YML);
    let reason = "INC-42 payment outage hotfix";
    let by_hand = Run {
        declared: declared.clone(),
        given: [
            ("environment".to_string(), "production".to_string()),
            ("break_glass_reason".to_string(), reason.to_string()),
        ]
        .into(),
        sha: SHA_B,
    }
    .render(&template);
    assert_eq!(
        break_glass_reason_in(&by_hand).as_deref(),
        Some(reason),
        "title {by_hand:?}"
    );

    // A push (no inputs) and a manual run without a reason ask for no break-glass.
    let push = Run {
        declared: declared.clone(),
        given: BTreeMap::new(),
        sha: SHA_B,
    }
    .render(&template);
    assert_eq!(break_glass_reason_in(&push), None, "title {push:?}");
    assert!(
        push.contains("staging"),
        "a push deploys to staging: {push:?}"
    );
    let plain = Run {
        declared,
        given: [("environment".to_string(), "production".to_string())].into(),
        sha: SHA_B,
    }
    .render(&template);
    assert_eq!(break_glass_reason_in(&plain), None, "title {plain:?}");
}

#[tokio::test]
async fn deploy_yml_job_meets_the_protection_rule_with_least_privilege() {
    assert!(keys_under(DEPLOY_YML, &["jobs", "deploy"]).contains("environment"));
    // GitHub creates the job's deployment and statuses itself: no `deployments` permission.
    assert_eq!(
        keys_under(DEPLOY_YML, &["permissions"]),
        BTreeSet::from(["contents".to_string()])
    );
    let all = lines(DEPLOY_YML);
    assert_eq!(entry(&all, &["permissions", "contents"]).inline, "read");
}

// ---- the example policy ----

#[test]
fn the_example_policy_rolls_back_through_the_example_workflows() {
    let policy = Policy::parse("policy.example.toml", EXAMPLE_POLICY).expect("example policy");
    let production = policy.environment("production").expect("production");
    match &production.rollback {
        RollbackMethod::Workflow { workflow, .. } => assert_eq!(workflow, "rollback.yml"),
        other => panic!("production rolls back with {other:?}"),
    }
    let staging = policy.environment("staging").expect("staging");
    assert_eq!(staging.rollback, RollbackMethod::Redeploy);
}
