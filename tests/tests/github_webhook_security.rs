//! Authentication and input limits: nothing unauthenticated, oversized or malformed is acted
//! on or stored, and a replayed delivery changes nothing.

#[path = "common/github_webhook.rs"]
mod common;

use common::{deployment_status, protection_rule, request, signed, Harness};
use secrecy::SecretString;
use serde_json::json;
use shipgate::signature::sign_github;

const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

async fn assert_nothing_happened(h: &Harness, ctx: &str) {
    assert!(
        h.all_items().await.is_empty(),
        "the store is not empty: {ctx}"
    );
    assert!(
        h.github_requests().await.is_empty(),
        "GitHub was called: {ctx}"
    );
    assert!(
        h.publisher.taken().is_empty(),
        "something was published: {ctx}"
    );
}

#[tokio::test]
async fn deliveries_without_a_valid_sha256_signature_are_refused_and_nothing_is_recorded() {
    let body = serde_json::to_vec(&protection_rule("staging", 11, SHA, "main")).unwrap();
    let other_body = serde_json::to_vec(&protection_rule("staging", 12, SHA, "main")).unwrap();
    let forged = sign_github(
        &SecretString::from("not the webhook secret".to_string()),
        &body,
    );
    let sha1 = format!("sha1={}", "ab".repeat(20));
    let for_other_body = signed(&other_body);
    let cases: [(&str, Option<&str>); 6] = [
        ("forged with another secret", Some(&forged)),
        ("missing", None),
        ("legacy sha1 header", Some(&sha1)),
        ("signature of a different body", Some(&for_other_body)),
        ("not hex", Some("sha256=zzzz")),
        ("no scheme", Some("0123")),
    ];
    for (name, signature) in cases {
        let h = Harness::new().await;
        let mut headers = vec![
            ("x-github-event", "deployment_protection_rule"),
            ("x-github-delivery", "d-1"),
        ];
        if let Some(sig) = signature {
            headers.push(("x-hub-signature-256", sig));
        }
        let reply = h.send(request(&headers, &body)).await;
        assert_eq!(reply.status, 401, "{name}: {reply:?}");
        // The answer says nothing about why (no hint for an attacker, no signature echoed).
        assert_eq!(reply.body, json!({ "message": "unauthorized" }), "{name}");
        assert_nothing_happened(&h, name).await;
    }
}

#[tokio::test]
async fn a_correct_legacy_sha1_signature_alone_is_refused() {
    // GitHub sends both headers; only X-Hub-Signature-256 counts, so a correct legacy
    // X-Hub-Signature alone must not authenticate.
    let h = Harness::new().await;
    let body = serde_json::to_vec(&protection_rule("staging", 13, SHA, "main")).unwrap();
    let reply = h
        .send(request(
            &[
                ("x-github-event", "deployment_protection_rule"),
                ("x-github-delivery", "d-2"),
                ("x-hub-signature", &signed(&body)),
            ],
            &body,
        ))
        .await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_nothing_happened(&h, "sha1 only").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_before_anything_else() {
    let h = Harness::new().await;
    let mut body = serde_json::to_vec(&protection_rule("staging", 14, SHA, "main")).unwrap();
    // Valid JSON padded with whitespace, correctly signed: only its size is wrong.
    body.resize(shipgate::web::MAX_BODY_BYTES + 1, b' ');
    let reply = h.deliver("deployment_protection_rule", &body).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_nothing_happened(&h, "too large").await;

    // One byte less is fine.
    body.truncate(shipgate::web::MAX_BODY_BYTES);
    let reply = h.deliver("deployment_protection_rule", &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn a_smaller_configured_limit_is_enforced_even_without_a_signature() {
    let mut h = Harness::new().await;
    h.app.max_body_bytes = 64;
    let reply = h
        .send(request(
            &[("x-github-event", "ping"), ("x-github-delivery", "d-3")],
            &[b'{'; 65],
        ))
        .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(
        reply.body,
        json!({ "message": "request body is larger than 64 bytes" })
    );
    assert_nothing_happened(&h, "small limit").await;
}

#[tokio::test]
async fn a_signed_but_malformed_body_is_a_bad_request() {
    let h = Harness::new().await;
    for (event, body) in [
        (
            "deployment_protection_rule",
            &b"{\"action\": \"requested\", "[..],
        ),
        ("ping", &b"not json"[..]),
        ("push", &b"[1, 2]"[..]),
        (
            "deployment_status",
            &br#"{"action": "created", "deployment": {}}"#[..],
        ),
    ] {
        let reply = h.deliver(event, body).await;
        assert_eq!(reply.status, 400, "{event}: {reply:?}");
        assert!(
            reply
                .str("message")
                .starts_with(&format!("malformed {event} payload")),
            "{reply:?}"
        );
    }
    assert_nothing_happened(&h, "malformed").await;
}

#[tokio::test]
async fn a_signed_delivery_without_an_event_name_is_a_bad_request() {
    let h = Harness::new().await;
    let body = serde_json::to_vec(&protection_rule("staging", 15, SHA, "main")).unwrap();
    let reply = h
        .send(request(
            &[
                ("x-github-delivery", "d-4"),
                ("x-hub-signature-256", &signed(&body)),
            ],
            &body,
        ))
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(
        reply.body,
        json!({ "message": "missing X-GitHub-Event header" })
    );
    assert_nothing_happened(&h, "no event").await;
}

#[tokio::test]
async fn a_signed_delivery_without_a_delivery_id_is_a_bad_request() {
    let h = Harness::new().await;
    let body = serde_json::to_vec(&protection_rule("staging", 16, SHA, "main")).unwrap();
    let reply = h
        .send(request(
            &[
                ("x-github-event", "deployment_protection_rule"),
                ("x-hub-signature-256", &signed(&body)),
            ],
            &body,
        ))
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_nothing_happened(&h, "no delivery id").await;
}

#[tokio::test]
async fn anything_but_post_is_refused() {
    let h = Harness::new().await;
    let body = b"{}";
    let req = http::Request::builder()
        .method("GET")
        .uri("/webhooks/github")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "d-5")
        .header("x-hub-signature-256", signed(body))
        .body(bytes::Bytes::from_static(body))
        .unwrap();
    let reply = h.send(req).await;
    assert_eq!(reply.status, 405, "{reply:?}");
    assert_nothing_happened(&h, "GET").await;
}

#[tokio::test]
async fn a_replayed_delivery_is_answered_as_a_duplicate_and_changes_nothing() {
    let h = Harness::new().await;
    let body = serde_json::to_vec(&protection_rule("staging", 17, SHA, "main")).unwrap();

    let first = h
        .deliver_as("deployment_protection_rule", "the-same-delivery", &body)
        .await;
    let items_after_first = h.all_items().await;
    let replay = h
        .deliver_as("deployment_protection_rule", "the-same-delivery", &body)
        .await;

    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.str("decision"), "approved");
    assert_eq!(replay.status, 200, "{replay:?}");
    assert_eq!(replay.body["duplicate"], json!(true));
    assert_eq!(h.deployments().await.len(), 1);
    let reviews = h.protection_rule_calls().await;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(
        h.all_items().await,
        items_after_first,
        "the replay wrote nothing"
    );
    assert_eq!(
        h.publisher.taken().len(),
        1,
        "one notification, for the first delivery only"
    );
}

#[tokio::test]
async fn a_malformed_repository_environment_or_sha_is_a_bad_request_naming_the_field() {
    let h = Harness::new().await;
    let mut bad_repo = protection_rule("staging", 17, SHA, "main");
    bad_repo["repository"]["full_name"] = json!("not a repository");
    let mut long_repo = protection_rule("staging", 18, SHA, "main");
    long_repo["repository"]["full_name"] = json!(format!("octo/{}", "x".repeat(5000)));
    let cases = [
        (
            "deployment_protection_rule",
            bad_repo,
            "repository.full_name",
        ),
        (
            "deployment_protection_rule",
            long_repo,
            "repository.full_name",
        ),
        (
            "deployment_protection_rule",
            protection_rule("staging", 19, "main", "main"),
            "`sha`",
        ),
        (
            "deployment_protection_rule",
            protection_rule("stag\u{0}ing", 20, SHA, "main"),
            "`environment`",
        ),
        (
            "deployment_status",
            deployment_status(21, "staging", "not-a-sha", None, "success"),
            "deployment.sha",
        ),
    ];
    for (event, body, field) in cases {
        let reply = h.deliver_json(event, &body).await;
        assert_eq!(reply.status, 400, "{event} {field}: {reply:?}");
        let message = reply.str("message");
        assert!(
            message.starts_with(&format!("malformed {event} payload")) && message.contains(field),
            "{reply:?}"
        );
        assert!(message.len() < 300, "the input is not echoed: {message}");
    }
    assert_nothing_happened(&h, "malformed ids").await;
}
