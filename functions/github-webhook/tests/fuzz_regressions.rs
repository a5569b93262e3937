//! Hostile deliveries for the webhook parser, kept as plain tests beside the `github_event`
//! fuzz target (fuzz/README.md): each must be refused with an `Err`, never a panic.

use github_webhook::events::{parse, GitHubEvent};

/// A protection-rule request with one field replaced.
fn protection_rule(callback_url: &str, environment: &str) -> String {
    serde_json::json!({
        "action": "requested",
        "environment": environment,
        "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        "ref": "refs/heads/main",
        "deployment_callback_url": callback_url,
        "sender": {"login": "octocat"},
        "repository": {"full_name": "acme/api"},
    })
    .to_string()
}

#[test]
fn hostile_bodies_are_refused_for_every_event() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: [&[u8]; 9] = [
        b"",
        b"null",
        b"[]",
        b"\"requested\"",
        b"{\"action\":7}",
        b"{\"action\":\"created\",\"action\":\"created\"}",
        b"\xff\xfe{}",
        b"{\"action\":\"completed\"",
        deep.as_bytes(),
    ];
    for event in [
        "ping",
        "push",
        "deployment",
        "deployment_status",
        "deployment_protection_rule",
        "workflow_run",
        "",
        "\u{0}",
    ] {
        for body in bodies {
            assert!(
                parse(event, body).is_err(),
                "{event:?} accepted {:?}",
                String::from_utf8_lossy(&body[..body.len().min(60)])
            );
        }
    }
}

#[test]
fn bytes_after_the_json_document_make_the_body_malformed() {
    assert!(parse("ping", b"{}").is_ok());
    for body in [&b"{} {}"[..], b"{}x", b"{}\n{\"zen\":1}"] {
        assert!(
            parse("ping", body).is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(body)
        );
    }
    // Whitespace after the document is still fine (a trailing newline is common).
    assert!(parse("ping", b"{}\n").is_ok());
}

#[test]
fn protection_rule_callbacks_without_a_usable_run_id_are_malformed() {
    for url in [
        "",
        "/",
        "https://api.github.com/repos/acme/api/actions/runs/",
        "https://api.github.com/repos/acme/api/actions/runs/-1/deployment_protection_rule",
        "https://api.github.com/repos/acme/api/actions/runs/18446744073709551616/x",
        "https://api.github.com/repos/acme/api/actions/runs/１２/x",
        "https://api.github.com/repos/acme/api/actions/runs/+/x",
        "?runs/12",
    ] {
        let body = protection_rule(url, "production");
        assert!(
            parse("deployment_protection_rule", body.as_bytes()).is_err(),
            "{url:?} was accepted"
        );
    }
}

#[test]
fn protection_rule_with_a_blank_environment_is_malformed() {
    for env in ["", " ", "\t\n"] {
        let body = protection_rule("https://x/actions/runs/42/deployment_protection_rule", env);
        assert!(parse("deployment_protection_rule", body.as_bytes()).is_err());
    }
}

#[test]
fn run_ids_at_the_edge_of_u64_are_read_exactly() {
    let body = protection_rule(
        "https://x/actions/runs/18446744073709551615/deployment_protection_rule",
        "production",
    );
    match parse("deployment_protection_rule", body.as_bytes()) {
        Ok(GitHubEvent::ProtectionRule(req)) => assert_eq!(req.run_id, u64::MAX),
        other => panic!("expected a protection rule, got {other:?}"),
    }
}

#[test]
fn timestamps_outside_the_supported_range_are_malformed() {
    for at in [
        "",
        "9999-99-99T00:00:00Z",
        "-009999-01-01T00:00:00Z",
        "+010000-01-01T00:00:00Z",
    ] {
        let push = serde_json::json!({
            "repository": {"full_name": "acme/api"},
            "commits": [{"id": "abc", "timestamp": at}],
        })
        .to_string();
        assert!(parse("push", push.as_bytes()).is_err(), "push at {at:?}");
        let run = serde_json::json!({
            "action": "completed",
            "repository": {"full_name": "acme/api"},
            "workflow_run": {"head_sha": "abc", "updated_at": at},
        })
        .to_string();
        assert!(
            parse("workflow_run", run.as_bytes()).is_err(),
            "run at {at:?}"
        );
    }
}

#[test]
fn a_deployment_payload_of_any_json_shape_is_not_a_rollback() {
    for payload in [
        serde_json::json!(null),
        serde_json::json!(7),
        serde_json::json!([]),
        serde_json::json!("{\"shipgate_rollback_of\": 7}"),
        serde_json::json!("{not json"),
        serde_json::json!({"shipgate_rollback_of": {"id": "dep-1"}}),
    ] {
        let body = serde_json::json!({
            "action": "created",
            "deployment": {
                "id": 1,
                "sha": "abc1234",
                "ref": "main",
                "environment": "staging",
                "payload": payload,
            },
            "repository": {"full_name": "acme/api"},
        })
        .to_string();
        match parse("deployment", body.as_bytes()) {
            Ok(GitHubEvent::DeploymentCreated(d)) => assert_eq!(d.rollback_of, None),
            other => panic!("expected a deployment, got {other:?}"),
        }
    }
}
