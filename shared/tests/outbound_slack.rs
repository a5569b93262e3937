//! Black-box tests of the Slack Web API client against a wiremock stand-in: exact requests,
//! Slack's `ok:false` errors, and `Retry-After` on 429.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;
use shipgate::outbound::{
    http_client, OutboundError, RetryPolicy, SlackApi, SlackApiPort, SlackConfig, SlackMessageRef,
};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const JSON_UTF8: &str = "application/json; charset=utf-8";

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    }
}

fn slack(server: &MockServer) -> SlackApi {
    let config = SlackConfig {
        api_url: format!("{}/api", server.uri()),
        bot_token: SecretString::from("xoxb-test-token".to_owned()),
    };
    SlackApi::new(config, http_client().unwrap()).with_policy(fast_policy())
}

fn blocks() -> serde_json::Value {
    json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* `abc123` to production?"}}])
}

fn posted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "channel": "C0123456789",
        "ts": "1503435956.000247",
        "message": {"text": "Deploy abc123 to production?", "type": "message"}
    }))
}

#[tokio::test]
async fn post_message_sends_bearer_json_and_returns_where_the_message_lives() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", "Bearer xoxb-test-token"))
        .and(header("content-type", JSON_UTF8))
        .and(body_json(json!({
            "channel": "C0123456789",
            "text": "Deploy abc123 to production?",
            "blocks": blocks()
        })))
        .respond_with(posted())
        .expect(1)
        .mount(&server)
        .await;

    let message = slack(&server)
        .post_message("C0123456789", "Deploy abc123 to production?", &blocks())
        .await
        .unwrap();

    assert_eq!(
        message,
        SlackMessageRef {
            channel: "C0123456789".into(),
            ts: "1503435956.000247".into()
        }
    );
}

#[tokio::test]
async fn update_message_targets_the_posted_ts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .and(header("authorization", "Bearer xoxb-test-token"))
        .and(header("content-type", JSON_UTF8))
        .and(body_json(json!({
            "channel": "C0123456789",
            "ts": "1503435956.000247",
            "text": "Approved by @alice",
            "blocks": blocks()
        })))
        .respond_with(posted())
        .expect(1)
        .mount(&server)
        .await;

    slack(&server)
        .update_message(
            "C0123456789",
            "1503435956.000247",
            "Approved by @alice",
            &blocks(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn message_without_blocks_sends_text_only() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(body_json(json!({"channel": "C1", "text": "plain"})))
        .respond_with(posted())
        .expect(1)
        .mount(&server)
        .await;

    slack(&server)
        .post_message("C1", "plain", &serde_json::Value::Null)
        .await
        .unwrap();
}

#[tokio::test]
async fn ephemeral_message_names_the_user_who_sees_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postEphemeral"))
        .and(header("authorization", "Bearer xoxb-test-token"))
        .and(header("content-type", JSON_UTF8))
        .and(body_json(json!({
            "channel": "C0123456789",
            "user": "U0ALICE",
            "text": "You cannot approve your own deployment."
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "message_ts": "1502210682.580145"
        })))
        .expect(1)
        .mount(&server)
        .await;

    slack(&server)
        .post_ephemeral(
            "C0123456789",
            "U0ALICE",
            "You cannot approve your own deployment.",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn response_url_gets_the_json_as_is_and_never_the_bot_token() {
    let server = MockServer::start().await;
    let body = json!({"replace_original": true, "text": "Approved by @alice"});
    Mock::given(method("POST"))
        .and(path("/actions/T0001/1234/abcdef"))
        .and(header("content-type", JSON_UTF8))
        .and(body_json(body.clone()))
        .and(|request: &Request| !request.headers.contains_key("authorization"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&server)
        .await;

    slack(&server)
        .respond(
            &format!("{}/actions/T0001/1234/abcdef", server.uri()),
            &body,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn rate_limited_post_waits_the_retry_after_then_is_sent_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(posted())
        .expect(1)
        .mount(&server)
        .await;

    let started = Instant::now();
    slack(&server)
        .post_message("C0123456789", "Deploy abc123 to production?", &blocks())
        .await
        .unwrap();

    // The policy's own backoff is at most 5 ms, so only Retry-After explains a 1 s wait.
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn retry_after_beyond_the_cap_gives_up_at_once_as_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .expect(1)
        .mount(&server)
        .await;

    let err = slack(&server)
        .post_message("C1", "text", &blocks())
        .await
        .unwrap_err();

    assert!(matches!(
        err,
        OutboundError::Exhausted {
            service: "slack",
            attempts: 1,
            ..
        }
    ));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(!err.is_permanent());
}

#[tokio::test]
async fn ok_false_is_permanent_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "channel_not_found"})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = slack(&server)
        .post_message("C404", "text", &blocks())
        .await
        .unwrap_err();

    assert!(matches!(
        err,
        OutboundError::Permanent { service: "slack", status: 200, ref message } if message == "channel_not_found"
    ));
    assert!(err.is_permanent());
    assert!(!format!("{err} {err:?}").contains("xoxb-test-token"));
}

#[tokio::test]
async fn ok_false_ratelimited_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .respond_with(posted())
        .expect(1)
        .mount(&server)
        .await;

    slack(&server)
        .update_message("C1", "1.2", "text", &blocks())
        .await
        .unwrap();
}

#[tokio::test]
async fn success_without_channel_and_ts_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&server)
        .await;

    let err = slack(&server)
        .post_message("C1", "text", &blocks())
        .await
        .unwrap_err();

    assert!(matches!(
        err,
        OutboundError::Decode {
            service: "slack",
            ..
        }
    ));
}

#[tokio::test]
async fn open_view_sends_the_trigger_id_and_view_with_the_bot_token() {
    let server = MockServer::start().await;
    let view = json!({
        "type": "modal",
        "callback_id": "shipgate_reject_reason",
        "private_metadata": "dep-1:nonce",
        "title": {"type": "plain_text", "text": "Reject deployment"},
        "blocks": []
    });
    Mock::given(method("POST"))
        .and(path("/api/views.open"))
        .and(header("authorization", "Bearer xoxb-test-token"))
        .and(header("content-type", JSON_UTF8))
        .and(body_json(json!({
            "trigger_id": "12345.98765.abcd2358fdea",
            "view": view
        })))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "view": {"id": "VMHU10V25"}})),
        )
        .expect(1)
        .mount(&server)
        .await;

    slack(&server)
        .open_view("12345.98765.abcd2358fdea", &view)
        .await
        .unwrap();
}

#[tokio::test]
async fn open_view_with_an_expired_trigger_is_a_permanent_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/views.open"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "expired_trigger_id"})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = slack(&server)
        .open_view("12345.98765.abcd2358fdea", &json!({"type": "modal"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OutboundError::Permanent { message, .. } if message == "expired_trigger_id"),
        "{err:?}"
    );
}
