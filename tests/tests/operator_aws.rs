//! The operator commands against a deployed stack: the same story is told on a data directory
//! (SQLite) and on a DynamoDB table on moto, with the resources the stack would create (table,
//! bucket, KMS key, topic, policy parameter, GitHub App secret) and a CloudFormation stack whose
//! outputs name them. `shipgate status|history|incidents|rollback|job backup|backup
//! list|verify|restore` then run as processes, with `--data DIR` on one side and
//! `--stack NAME` (or `--table T`) on the other, and must give the same answers.

#[path = "common/alert_webhook.rs"]
mod common;
#[path = "common/serve.rs"]
mod serve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use common::{Harness, ALERT_TOKEN, APP_ID, REPO, SHA_A, SHA_B};
use serde_json::{json, Value};
use serve::{free_port, json_lines, page_text, run, shipgate, stderr, stdout};
use shipgate::aws::dynamodb::DynamoStore;
use shipgate::embedded::sqlite::{Durability, SqliteStore};
use shipgate::store::ItemStore;
use shipgate_cli::aws::outputs;
use wiremock::MockServer;

/// production redeploys; no approvals, so a CLI rollback starts at once.
const POLICY: &str = common::POLICY;

/// The stack's `GithubWebhookUrl` output.
const API_WEBHOOK_URL: &str =
    "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/webhooks/github";

/// A data directory with the story's SQLite store, and its policy file.
struct Local {
    dir: tempfile::TempDir,
    policy: PathBuf,
    github: MockServer,
}

/// The stack's resources on moto and the stack that names them.
struct Stack {
    name: String,
    table: String,
    parameter: String,
    github: MockServer,
}

/// Tells the story: `SHA_A` deployed and verified (the last known good), then `SHA_B`
/// deployed and still verifying, with a warning alert firing in production.
async fn story(h: &Harness) {
    h.deploy_good("production", SHA_A, 1001, 501).await;
    h.advance_mins(5);
    h.deploy("production", SHA_B, 1002, 502).await;
    h.advance_mins(2);
    let warning = common::alertmanager(
        "firing",
        "fp-latency",
        common::labels("production", "warning", "ApiLatencyHigh"),
        h.now(),
        None,
    );
    let reply = h.post_alert("/webhooks/alertmanager", &warning).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

async fn local() -> Local {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("shipgate.db"), Durability::Full)
        .expect("open the SQLite store");
    let h = Harness::build_on(POLICY, 201, ALERT_TOKEN, Some(Arc::new(store))).await;
    story(&h).await;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).expect("write the policy");
    let Harness { github, .. } = h;
    Local {
        dir,
        policy,
        github,
    }
}

async fn stack() -> Stack {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "needs the AWS emulator: run make test (it starts moto and exports AWS_ENDPOINT_URL)"
    );
    let sdk = shipgate::aws::sdk_config().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("shipgate-op-{id}");
    let store = DynamoStore::from_env(table.clone()).await;
    store
        .create_table_if_missing()
        .await
        .expect("create the state table");
    let store: Arc<dyn ItemStore> = Arc::new(store);
    let h = Harness::build_on(POLICY, 201, ALERT_TOKEN, Some(store)).await;
    story(&h).await;

    let bucket = format!("shipgate-op-{id}");
    shipgate::aws::s3::s3_client(&sdk)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the bucket");
    let key = aws_sdk_kms::Client::new(&sdk)
        .create_key()
        .send()
        .await
        .expect("create the key");
    let key_arn = key
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("the key's ARN")
        .to_owned();
    let topic = aws_sdk_sns::Client::new(&sdk)
        .create_topic()
        .name(format!("shipgate-op-{id}"))
        .send()
        .await
        .expect("create the topic")
        .topic_arn()
        .expect("the topic's ARN")
        .to_owned();
    let parameter = format!("/shipgate-op-{id}/policy");
    aws_sdk_ssm::Client::new(&sdk)
        .put_parameter()
        .name(&parameter)
        .value(POLICY)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect("put the policy parameter");
    let secret = format!("shipgate-op-{id}/github-app");
    let secret_value = json!({
        "SHIPGATE_GITHUB_APP_ID": APP_ID.to_string(),
        "SHIPGATE_GITHUB_PRIVATE_KEY": testkit::github_app_key(),
        "SHIPGATE_GITHUB_API_URL": h.github.uri(),
    });
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&secret)
        .secret_string(secret_value.to_string())
        .send()
        .await
        .expect("create the GitHub App secret");

    // A stack whose outputs name the resources, as template.yaml's do.
    let name = format!("shipgate-op-{id}");
    let outputs_yaml: String = [
        (outputs::TABLE, table.as_str()),
        (outputs::BUCKET, bucket.as_str()),
        (outputs::KMS_KEY, key_arn.as_str()),
        (outputs::TOPIC, topic.as_str()),
        (outputs::POLICY_PARAMETER, parameter.as_str()),
        (outputs::GITHUB_APP_SECRET, secret.as_str()),
        (outputs::GITHUB_WEBHOOK_URL, API_WEBHOOK_URL),
    ]
    .iter()
    .map(|(k, v)| format!("  {k}:\n    Value: \"{v}\"\n"))
    .collect();
    let template = format!(
        "Resources:\n  Marker:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: {name}-marker\nOutputs:\n{outputs_yaml}"
    );
    aws_sdk_cloudformation::Client::new(&sdk)
        .create_stack()
        .stack_name(&name)
        .template_body(template)
        .send()
        .await
        .expect("create the stack");
    let Harness { github, .. } = h;
    Stack {
        name,
        table,
        parameter,
        github,
    }
}

/// Runs `shipgate ARGS` against the data directory (with the policy file, which every
/// command but `backup` takes).
fn on_local(local: &Local, args: &[&str]) -> Output {
    let mut cmd = shipgate();
    cmd.args(args).arg("--data").arg(local.dir.path());
    if args.first() != Some(&"backup") {
        cmd.arg("--policy").arg(&local.policy);
    }
    run(cmd
        .env("SHIPGATE_GITHUB_APP_ID", APP_ID.to_string())
        .env("SHIPGATE_GITHUB_PRIVATE_KEY", testkit::github_app_key())
        .env("SHIPGATE_GITHUB_API_URL", local.github.uri()))
}

/// Runs `shipgate ARGS --stack NAME`: everything else comes from the stack's outputs. The
/// AWS_* variables `make test` exports (moto's endpoint, dummy credentials, region) pass
/// through; `shipgate()` removes every SHIPGATE_ variable.
fn on_stack(stack: &Stack, args: &[&str]) -> Output {
    run(shipgate().args(args).arg("--stack").arg(&stack.name))
}

/// `shipgate dashboard` on a free loopback port (no sign-in needed there): the page at `path`.
async fn dashboard_page(mut cmd: std::process::Command, path: &str) -> String {
    let port = free_port();
    let mut child = cmd
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn shipgate dashboard");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        if let Ok(resp) = http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
        {
            assert_eq!(resp.status(), 200);
            break resp.text().await.expect("body");
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("shipgate dashboard never answered: {}", stderr(&out));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    body
}

/// The production line of `status --json`.
fn production(text: &str) -> Value {
    json_lines(text)
        .into_iter()
        .find(|l| l["environment"] == "production")
        .unwrap_or_else(|| panic!("no production line in {text}"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The output with every deployment id replaced by `dep-N` in order of first appearance, and
/// backup ids' time and random parts by `TIME-ID`: the stores mint their own.
fn normalised(text: &str) -> String {
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("dep-") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 4..];
        let len = tail.bytes().take_while(|b| b.is_ascii_hexdigit()).count();
        if len == 32 {
            let n = ids.len() + 1;
            let id = ids
                .entry(tail[..len].to_owned())
                .or_insert_with(|| format!("dep-{n}"));
            out.push_str(id);
            rest = &tail[len..];
        } else {
            out.push_str("dep-");
            rest = tail;
        }
    }
    out.push_str(rest);
    backup_ids_normalised(&out)
}

/// `shipgate.20261205T050102Z-1a2b3c4d` → `shipgate.TIME-ID`.
fn backup_ids_normalised(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("shipgate.") {
        out.push_str(&rest[..at + "shipgate.".len()]);
        let tail = &rest[at + "shipgate.".len()..];
        let stamp = tail.as_bytes();
        let is_id = tail.len() >= 25
            && stamp[..8].iter().all(u8::is_ascii_digit)
            && stamp[8] == b'T'
            && stamp[9..15].iter().all(u8::is_ascii_digit)
            && stamp[15] == b'Z'
            && stamp[16] == b'-'
            && stamp[17..25].iter().all(u8::is_ascii_hexdigit);
        if is_id {
            out.push_str("TIME-ID");
            rest = &tail[25..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// One JSON value per line, with the fields that differ by nature between two stores'
/// backups (sizes of differently encoded records, times, digests) left out.
fn manifests_compared(text: &str) -> Vec<Value> {
    json_lines(text)
        .into_iter()
        .map(|m| json!({ "source": m["source"], "items": m["items"], "format": m["format"] }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_commands_answer_the_same_on_a_stack_as_on_a_data_directory() {
    let local = local().await;
    let stack = stack().await;

    // status, history and incidents: the same rows, in JSON and as tables.
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["history", "--json"],
        &["history"],
        &["incidents", "--json"],
    ] {
        let here = normalised(&ok(on_local(&local, args), "local"));
        let there = normalised(&ok(on_stack(&stack, args), "stack"));
        assert!(!here.trim().is_empty(), "{args:?} printed nothing");
        assert_eq!(here, there, "{args:?}");
    }
    let status = production(&ok(on_stack(&stack, &["status", "--json"]), "status"));
    assert_eq!(status["repo"], REPO, "{status}");
    assert_eq!(status["last_known_good"]["sha"], SHA_A, "{status}");
    assert_eq!(status["current"]["sha"], SHA_B, "{status}");

    // The dashboard: on AWS, `shipgate dashboard --stack` serves it on loopback from the
    // stack's table, with the operator's own credentials; nothing public. Its overview
    // shows what the data directory's does.
    let mut here = shipgate();
    here.arg("dashboard")
        .arg("--data")
        .arg(local.dir.path())
        .arg("--policy")
        .arg(&local.policy);
    let mut there = shipgate();
    there.args(["dashboard", "--stack", &stack.name]);
    let here = page_text(&dashboard_page(here, "/").await);
    let there = page_text(&dashboard_page(there, "/").await);
    assert!(here.contains(REPO), "{here}");
    assert!(
        here.contains(&SHA_B[..7]) && here.contains(&SHA_A[..7]),
        "{here}"
    );
    assert_eq!(normalised(&here), normalised(&there));

    // The policy the stack runs with, from its parameter: the same summary as the file's.
    let file = local.policy.display().to_string();
    let here = ok(
        run(shipgate().args(["policy", "check"]).arg(&local.policy)),
        "policy check FILE",
    );
    let there = ok(
        run(shipgate().args(["policy", "check", "--stack", &stack.name])),
        "policy check --stack",
    );
    assert!(there.contains(&stack.parameter), "{there}");
    assert_eq!(
        here.replace(&file, "POLICY"),
        there.replace(&stack.parameter, "POLICY")
    );

    // The app manifests, filled in with the stack's API.
    let manifest = ok(
        run(shipgate().args(["setup", "github-app", "--stack", &stack.name])),
        "setup github-app --stack",
    );
    let manifest: Value = serde_json::from_str(&manifest).expect("manifest JSON");
    assert_eq!(
        manifest["hook_attributes"]["url"], API_WEBHOOK_URL,
        "{manifest}"
    );

    // A backup, listed and verified: the same table and item count.
    let here = ok(
        on_local(&local, &["job", "backup", "--json"]),
        "local backup",
    );
    let there = ok(
        on_stack(&stack, &["job", "backup", "--json"]),
        "stack backup",
    );
    for report in [&here, &there] {
        let report: Value = serde_json::from_str(report.trim()).expect("job JSON");
        assert_eq!(report["ok"], true, "{report}");
    }
    let here = ok(
        on_local(&local, &["backup", "list", "--json"]),
        "local list",
    );
    let there = ok(
        on_stack(&stack, &["backup", "list", "--json"]),
        "stack list",
    );
    assert_eq!(manifests_compared(&here), manifests_compared(&there));
    assert_eq!(manifests_compared(&there).len(), 1, "{there}");
    let verify_fields = |text: &str| {
        let v: Value = serde_json::from_str(text.trim()).expect("verify JSON");
        json!({ "ok": v["ok"], "items": v["items"] })
    };
    let here = ok(
        on_local(&local, &["backup", "verify", "shipgate/latest", "--json"]),
        "local verify",
    );
    let there = ok(
        on_stack(&stack, &["backup", "verify", "shipgate/latest", "--json"]),
        "stack verify",
    );
    assert_eq!(verify_fields(&here), verify_fields(&there));

    // A restore into a new table, whose status is the stack's; a second restore into it is
    // refused without --force and taken with it.
    let restored = format!("{}-restored", stack.table);
    let out = ok(
        on_stack(
            &stack,
            &["backup", "restore", "latest", "--into", &restored, "--json"],
        ),
        "restore",
    );
    let report: Value = serde_json::from_str(out.trim()).expect("restore JSON");
    assert_eq!(
        report["target"],
        format!("DynamoDB table {restored}"),
        "{report}"
    );
    assert_eq!(report["forced"], false, "{report}");
    let restored_status = ok(
        run(shipgate()
            .args([
                "status",
                "--json",
                "--table",
                &restored,
                "--policy-parameter",
            ])
            .arg(&stack.parameter)),
        "status of the restored table",
    );
    let stack_status = ok(on_stack(&stack, &["status", "--json"]), "status");
    assert_eq!(normalised(&restored_status), normalised(&stack_status));
    let again = on_stack(
        &stack,
        &["backup", "restore", "latest", "--into", &restored],
    );
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(
        stderr(&again).contains(&format!(
            "DynamoDB table {restored} exists; --force restores into it"
        )),
        "{}",
        stderr(&again)
    );
    let forced = ok(
        on_stack(
            &stack,
            &[
                "backup", "restore", "latest", "--into", &restored, "--force", "--json",
            ],
        ),
        "forced restore",
    );
    let forced: Value = serde_json::from_str(forced.trim()).expect("restore JSON");
    assert_eq!(forced["forced"], true, "{forced}");

    // A rollback: the same outcome, and the same request to GitHub, the stack's through the
    // GitHub App secret.
    let here = ok(
        on_local(&local, &["rollback", "production", "--json"]),
        "local rollback",
    );
    let there = ok(
        on_stack(&stack, &["rollback", "production", "--json"]),
        "stack rollback",
    );
    assert_eq!(normalised(&here), normalised(&there));
    let outcome: Value = serde_json::from_str(there.trim()).expect("rollback JSON");
    assert_eq!(outcome["target_sha"], SHA_A, "{outcome}");
    for github in [&local.github, &stack.github] {
        let created: Vec<Value> = github
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| {
                r.method.as_str() == "POST" && r.url.path() == format!("/repos/{REPO}/deployments")
            })
            .map(|r| serde_json::from_slice(&r.body).expect("JSON body"))
            .collect();
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(created[0]["ref"], SHA_A, "{created:?}");
        assert_eq!(created[0]["environment"], "production", "{created:?}");
    }
    let status = production(&ok(on_stack(&stack, &["status", "--json"]), "status"));
    assert_eq!(
        status["latest_deployment"]["state"], "rolling_back",
        "{status}"
    );
}

#[tokio::test]
async fn a_stack_without_a_table_output_and_a_missing_stack_are_clear_errors() {
    let out = run(shipgate().args(["status", "--stack", "shipgate-no-such-stack"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("describing stack shipgate-no-such-stack"),
        "{}",
        stderr(&out)
    );
    let both = run(shipgate().args(["status", "--stack", "s", "--data", "/tmp"]));
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert!(
        stderr(&both).contains("'--stack <NAME>' cannot be used with '--data <DIR>'"),
        "{}",
        stderr(&both)
    );
}

#[test]
fn every_output_the_cli_reads_is_an_output_of_the_template() {
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"))
            .expect("read template.yaml");
    let outputs_section = template
        .split_once("\nOutputs:")
        .expect("template.yaml has Outputs")
        .1;
    for name in outputs::ALL {
        assert!(
            outputs_section.contains(&format!("\n  {name}:\n")),
            "template.yaml has no output {name}"
        );
    }
}
