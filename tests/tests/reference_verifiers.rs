//! The signatures the reference verifiers accept, and only those, are accepted by `serve`:
//! octokit's `@octokit/webhooks-methods` (`sign`, `verify`) for GitHub and slack_sdk's
//! `SignatureVerifier` (`generate_signature`, `is_valid`) for Slack, both installed by
//! `make test` (`infra/test.sh` exports where). A signature each library makes is accepted; the
//! same HMAC in uppercase hex, which each library's verifier refuses, is refused with `401`
//! and records nothing.

#[path = "common/serve.rs"]
mod serve;

use std::path::PathBuf;
use std::process::Command;

use serve::{Server, Workspace, SECRET};

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// Where a reference client lives, from the variable `make test` sets; fails loudly without
/// it (a skipped comparison would hide a drift).
fn installed(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => panic!("{var} is not set: run make test (it installs the reference clients)"),
    }
}

/// Runs `script` with node in the directory octokit is installed in; returns its stdout lines.
fn octokit(script: &str) -> Vec<String> {
    let out = Command::new("node")
        .current_dir(installed("SHIPGATE_TEST_OCTOKIT_DIR"))
        .args(["--input-type=module", "-e", script])
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs `script` with the Python slack_sdk is installed for; returns its stdout lines.
fn slack_sdk(script: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(installed("SHIPGATE_TEST_PYTHON"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn upper_hex(signature: &str, prefix: &str) -> String {
    format!("{prefix}{}", signature[prefix.len()..].to_ascii_uppercase())
}

#[tokio::test]
async fn github_signatures_are_read_as_octokit_reads_them() {
    let body =
        serde_json::json!({ "zen": "Design for failure.", "hook_id": 7, "hook": { "app_id": 42 } })
            .to_string();
    let script = format!(
        r#"import {{ sign, verify }} from "@octokit/webhooks-methods";
const secret = {secret:?}, body = {body:?};
const signature = await sign(secret, body);
const upper = "sha256=" + signature.slice(7).toUpperCase();
console.log(signature);
console.log(await verify(secret, body, signature));
console.log(await verify(secret, body, upper));"#,
        secret = SECRET,
        body = body,
    );
    let lines = octokit(&script);
    let signature = lines[0].clone();
    assert_eq!(lines[1..], ["true", "false"], "octokit's own verdicts");
    let upper = upper_hex(&signature, "sha256=");

    let server = Server::launch(Workspace::new(), &[], &["--no-schedule"]).await;
    let client = reqwest::Client::new();
    let send = |delivery: &'static str, sig: String| {
        client
            .post(server.url("/webhooks/github"))
            .header("x-github-event", "ping")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sig)
            .body(body.clone())
            .send()
    };
    let refused = send("d-upper", upper).await.expect("send");
    assert_eq!(refused.status(), 401);
    let accepted = send("d-octokit", signature).await.expect("send");
    assert_eq!(accepted.status(), 200);
    let text = accepted.text().await.expect("body");
    assert!(text.contains("\"pong\""), "{text}");
    // The refused delivery recorded nothing: sent again, correctly signed, it is new.
    let after = send("d-upper", sign_lower(&body)).await.expect("send");
    let text = after.text().await.expect("body");
    assert!(
        text.contains("\"pong\"") && !text.contains("duplicate"),
        "{text}"
    );
}

fn sign_lower(body: &str) -> String {
    shipgate::signature::sign_github(&secrecy::SecretString::from(SECRET), body.as_bytes())
}

#[tokio::test]
async fn slack_signatures_are_read_as_slack_sdk_reads_them() {
    let body =
        "payload=%7B%22type%22%3A%22shortcut%22%2C%22user%22%3A%7B%22id%22%3A%22U0ALICE01%22%7D%7D";
    let ts = jiff::Timestamp::now().as_second().to_string();
    let script = r#"import sys
from slack_sdk.signature import SignatureVerifier
secret, ts, body = sys.argv[1], sys.argv[2], sys.argv[3]
verifier = SignatureVerifier(secret)
signature = verifier.generate_signature(timestamp=ts, body=body)
upper = "v0=" + signature[3:].upper()
print(signature)
print(verifier.is_valid(body=body, timestamp=ts, signature=signature))
print(verifier.is_valid(body=body, timestamp=ts, signature=upper))
"#;
    let lines = slack_sdk(script, &[SLACK_SECRET, &ts, body]);
    let signature = lines[0].clone();
    assert_eq!(lines[1..], ["True", "False"], "slack_sdk's own verdicts");

    let server = Server::launch(
        Workspace::new(),
        &[
            ("SHIPGATE_SLACK_SIGNING_SECRET", SLACK_SECRET),
            ("SHIPGATE_SLACK_TEAM_ID", "T0TEAM"),
        ],
        &["--no-schedule"],
    )
    .await;
    let client = reqwest::Client::new();
    let send = |sig: String| {
        client
            .post(server.url("/webhooks/slack"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.clone())
            .header("x-slack-signature", sig)
            .body(body)
            .send()
    };
    let refused = send(upper_hex(&signature, "v0=")).await.expect("send");
    assert_eq!(refused.status(), 401);
    // The shortcut is authentic but not something shipgate acts on: an empty 200.
    let accepted = send(signature).await.expect("send");
    assert_eq!(accepted.status(), 200);
    assert_eq!(accepted.text().await.expect("body"), "");
}
