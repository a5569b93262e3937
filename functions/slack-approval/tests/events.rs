//! The sample Lambda events under `events/slack-approval/` are what API Gateway really sends:
//! they parse as HTTP API v2 requests, carry a valid Slack signature, and hold a click the
//! handler understands.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use secrecy::SecretString;
use shipgate::signature::verify_slack;
use slack_approval::interaction::{parse_form, ButtonAction, Interaction};

/// Slack's documented example signing secret, named in `events/slack-approval/README.md`.
const EVENT_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn event(name: &str) -> ApiGatewayV2httpRequest {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/slack-approval")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name} is not an HTTP API v2 event: {e}"))
}

#[test]
fn the_approve_click_event_is_a_signed_http_api_v2_request_holding_an_approve_click() {
    let ev = event("apigw-block-actions-approve.json");
    assert_eq!(ev.version.as_deref(), Some("2.0"));
    assert_eq!(ev.route_key.as_deref(), Some("POST /webhooks/slack"));
    assert_eq!(ev.raw_path.as_deref(), Some("/webhooks/slack"));
    assert_eq!(ev.request_context.http.method, http::Method::POST);
    assert!(!ev.is_base64_encoded);
    let header = |name: &str| ev.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    let body = ev.body.as_deref().expect("a body");
    let timestamp = header("x-slack-request-timestamp").expect("timestamp header");
    let at: i64 = timestamp.parse().unwrap();
    assert_eq!(
        verify_slack(
            &SecretString::from(EVENT_SECRET.to_string()),
            body.as_bytes(),
            Some(timestamp),
            header("x-slack-signature"),
            at,
        ),
        Ok(())
    );
    assert_eq!(
        header("content-length"),
        Some(body.len().to_string().as_str())
    );

    let Interaction::Click(click) = parse_form(body.as_bytes()).unwrap() else {
        panic!("not a click");
    };
    assert_eq!(click.action, ButtonAction::Approve);
    assert_eq!(click.user, "U0APPROV1");
    assert_eq!(click.deployment_id, "dep-0197302a5c007e0b9a1f3c2d4e5f6a7b");
    assert_eq!(click.nonce, "3f1c9a7e5b2d4c6e8a0b1c3d5e7f9a2b");
    assert!(click.trigger_id.is_some() && click.response_url.is_some());
}
