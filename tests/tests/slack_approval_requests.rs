//! The edge of the route: authentication before parsing, body limits, malformed and foreign
//! payloads, and Slack's retries of the same click.

#[path = "common/slack_approval.rs"]
mod common;

use bytes::Bytes;
use common::{fixture, fixture_json, form_body, request, signed_request, Harness, SIGNING_SECRET};
use secrecy::SecretString;
use serde_json::{json, Value};
use shipgate::service::Clock;
use slack_approval::interaction::{parse_form, parse_payload, Interaction};
use slack_approval::SlackApproval;

/// The harness's app, but verifying with Slack's documented signing secret.
fn with_vector_secret(h: &Harness) -> SlackApproval {
    let vector = fixture_json("slack-signing-vector.json");
    SlackApproval {
        signing_secret: SecretString::from(vector["secret"].as_str().unwrap().to_string()),
        ..h.app.clone()
    }
}

fn vector_request() -> http::Request<Bytes> {
    let vector = fixture_json("slack-signing-vector.json");
    request(
        vector["headers"]["X-Slack-Request-Timestamp"]
            .as_str()
            .unwrap(),
        vector["headers"]["X-Slack-Signature"].as_str().unwrap(),
        vector["body"].as_str().unwrap().as_bytes(),
    )
}

#[tokio::test]
async fn slacks_documented_signing_vector_verifies_at_its_own_timestamp() {
    let h = Harness::new().await;
    let vector = fixture_json("slack-signing-vector.json");
    let ts: i64 = vector["timestamp"].as_str().unwrap().parse().unwrap();
    h.clock.set(jiff::Timestamp::from_second(ts).unwrap());
    let app = with_vector_secret(&h);

    let resp = slack_approval::handle(&app, vector_request()).await;
    // Authentic; a slash command is nothing shipgate acts on, and Slack wants its 200.
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body(), "");
    assert!(h.all_items().await.is_empty());

    // One byte changed in the body, same headers: refused.
    let vector_body = vector["body"]
        .as_str()
        .unwrap()
        .replace("roadrunner", "roadrunneR");
    let tampered = request(
        vector["timestamp"].as_str().unwrap(),
        vector["signature"].as_str().unwrap(),
        vector_body.as_bytes(),
    );
    assert_eq!(slack_approval::handle(&app, tampered).await.status(), 401);
}

#[tokio::test]
async fn slacks_documented_signing_vector_is_refused_as_stale_with_the_real_clock() {
    let h = Harness::new().await;
    h.clock.set(jiff::Timestamp::now());
    let app = with_vector_secret(&h);

    let resp = slack_approval::handle(&app, vector_request()).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.body(), r#"{"message":"unauthorized"}"#);
    assert!(h.all_items().await.is_empty());
}

#[tokio::test]
async fn forged_stale_and_unsigned_clicks_are_refused_and_change_nothing() {
    let h = Harness::new().await;
    let dep = h.gate_production(2020).await;
    let items_before = h.all_items().await.len();
    let body = form_body(&h.click_payload("U0ALICE01", "shipgate_approve", &dep));
    let now = h.clock.now().as_second();

    let forged = signed_request(&body, now, "someone else's secret");
    let stale = signed_request(&body, now - 301, SIGNING_SECRET);
    let from_the_future = signed_request(&body, now + 301, SIGNING_SECRET);
    let unsigned = http::Request::builder()
        .method("POST")
        .uri("/webhooks/slack")
        .body(Bytes::from(body.clone()))
        .unwrap();
    let legacy_scheme = request(&now.to_string(), "v1=00", &body);
    for (name, req) in [
        ("forged", forged),
        ("stale", stale),
        ("future", from_the_future),
        ("unsigned", unsigned),
        ("legacy", legacy_scheme),
    ] {
        let reply = h.send(req).await;
        assert_eq!(reply.status, 401, "{name}");
        assert_eq!(reply.body, json!({ "message": "unauthorized" }), "{name}");
    }
    assert_eq!(h.deployment(&dep.id).await, dep);
    assert_eq!(
        h.all_items().await.len(),
        items_before,
        "nothing recorded, not even a claim"
    );
    assert!(h.ephemerals().await.is_empty());

    // Inside the window, the same body counts.
    let fresh = signed_request(&body, now - 299, SIGNING_SECRET);
    assert_eq!(h.send(fresh).await.status, 200);
    assert_eq!(h.deployment(&dep.id).await.approvals.len(), 1);
}

#[tokio::test]
async fn a_replayed_identical_click_counts_once() {
    let h = Harness::new().await;
    let dep = h.gate_production(2121).await;
    let payload = h.click_payload("U0ALICE01", "shipgate_approve", &dep);

    let first = h.send_payload(&payload).await;
    let after_first = h.deployment(&dep.id).await;
    // Slack retries the same click (same user, action_ts and value), signed afresh.
    h.clock.advance(std::time::Duration::from_secs(2));
    let second = h.send_payload(&payload).await;

    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(second.body, Value::Null);
    assert_eq!(h.deployment(&dep.id).await, after_first);
    assert_eq!(after_first.approvals.len(), 1);
    assert_eq!(
        h.ephemeral_texts().await,
        vec!["Approval recorded for production: 1 of 2."]
    );
    let events: Vec<String> = h.deployment_events().into_iter().map(|e| e.0).collect();
    assert_eq!(events, ["approval_requested", "approval_progress"]);
}

#[test]
fn the_java_sdk_sample_parses_as_a_block_actions_payload_that_is_not_ours() {
    let parsed = parse_payload(&fixture("block_actions.java-slack-sdk-sample.json")).unwrap();
    assert_eq!(
        parsed,
        Interaction::Ignored {
            kind: "block_actions".into(),
            detail: "action_id \"\"".into()
        }
    );
}

#[tokio::test]
async fn the_java_sdk_sample_is_answered_200_without_effect() {
    let h = Harness::new().await;
    let payload: Value = fixture_json("block_actions.java-slack-sdk-sample.json");
    let reply = h.send_payload(&payload).await;
    assert_eq!((reply.status, &reply.body), (200, &Value::Null));
    assert!(h.all_items().await.is_empty());
    assert!(h.slack.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn other_interaction_types_and_foreign_buttons_get_200_and_nothing_happens() {
    let h = Harness::new().await;
    let dep = h.gate_production(2222).await;
    let items_before = h.all_items().await.len();
    let foreign_button = h.click_payload("U0ALICE01", "someone_elses_button", &dep);
    let closed_modal =
        json!({ "type": "view_closed", "user": { "id": "U0ALICE01" }, "view": { "id": "V1" } });
    let other_modal = json!({
        "type": "view_submission", "user": { "id": "U0ALICE01" },
        "view": { "id": "V2", "callback_id": "another_app", "private_metadata": "", "state": { "values": {} } }
    });
    for payload in [foreign_button, closed_modal, other_modal] {
        let reply = h.send_payload(&payload).await;
        assert_eq!(
            (reply.status, &reply.body),
            (200, &Value::Null),
            "{payload}"
        );
    }
    assert_eq!(h.all_items().await.len(), items_before);
    assert_eq!(h.deployment(&dep.id).await, dep);
}

#[tokio::test]
async fn malformed_payloads_are_refused_with_400() {
    let h = Harness::new().await;
    let ts = h.clock.now().as_second();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no payload field",
            b"text=hello".to_vec(),
            "form body has no `payload` field",
        ),
        (
            "payload not JSON",
            b"payload=%7Bnot-json".to_vec(),
            "`payload` is not a valid interaction",
        ),
        (
            "no type",
            form_body(&json!({ "actions": [] })),
            "`payload` is not a valid interaction",
        ),
        (
            "bad value",
            form_body(&common::block_actions(
                "U0ALICE01",
                "shipgate_approve",
                "no-nonce",
                "1.2",
                "https://hooks.slack.com/x",
                "t",
            )),
            "actions[0].value must be \"{deployment_id}:{nonce}\"",
        ),
        (
            "no user",
            {
                let mut p = common::block_actions(
                    "U0ALICE01",
                    "shipgate_approve",
                    "dep-1:n",
                    "1.2",
                    "https://hooks.slack.com/x",
                    "t",
                );
                p.as_object_mut().unwrap().remove("user");
                form_body(&p)
            },
            "block_actions payload has no user.id",
        ),
    ];
    for (name, body, message) in cases {
        let reply = h.send(signed_request(&body, ts, SIGNING_SECRET)).await;
        assert_eq!(reply.status, 400, "{name}: {reply:?}");
        let got = reply.body["message"].as_str().unwrap();
        assert!(got.contains(message), "{name}: {got}");
    }
    assert!(h.all_items().await.is_empty());
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_before_anything_else() {
    let h = Harness::new().await;
    let body = vec![b'a'; shipgate::web::MAX_BODY_BYTES + 1];
    // Unsigned on purpose: the size check comes first and never reads the body.
    let reply = h.send(request("0", "v0=00", &body)).await;
    assert_eq!(reply.status, 413);
    assert!(h.all_items().await.is_empty());
}

#[tokio::test]
async fn only_post_is_accepted() {
    let h = Harness::new().await;
    let req = http::Request::builder()
        .method("GET")
        .uri("/webhooks/slack")
        .body(Bytes::new())
        .unwrap();
    assert_eq!(h.send(req).await.status, 405);
}

#[test]
fn a_form_encoded_click_parses_into_a_typed_click() {
    let payload = common::block_actions(
        "U0ALICE01",
        "shipgate_approve",
        "dep-1:n0nce",
        "1748858400.000007",
        "https://hooks.slack.com/actions/T0/1/x",
        "1.2.3",
    );
    let Interaction::Click(click) = parse_form(&form_body(&payload)).unwrap() else {
        panic!("not a click");
    };
    assert_eq!(click.deployment_id, "dep-1");
    assert_eq!(click.nonce, "n0nce");
    assert_eq!(click.user, "U0ALICE01");
    assert_eq!(click.action_ts, "1748858400.000007");
    assert_eq!(click.trigger_id.as_deref(), Some("1.2.3"));
    assert_eq!(
        click.response_url.as_deref(),
        Some("https://hooks.slack.com/actions/T0/1/x")
    );
}
