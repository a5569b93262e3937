//! Inbound requests signed exactly as GitHub and Slack sign them.

use bytes::Bytes;
use secrecy::SecretString;
use shipgate::signature::{sign_github, sign_slack};

/// The `x-hub-signature-256` value GitHub sends for `body`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    sign_github(&SecretString::from(secret.to_string()), body)
}

/// A POST to the GitHub webhook route: one delivery of `event`, signed with `secret`.
pub fn github_delivery(
    event: &str,
    delivery: &str,
    secret: &str,
    body: &[u8],
) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", github_signature(secret, body))
        .body(Bytes::copy_from_slice(body))
        .expect("a GitHub delivery request")
}

/// `payload=<url-encoded JSON>`, exactly as Slack posts an interaction.
pub fn slack_form_body(payload: &serde_json::Value) -> Vec<u8> {
    serde_urlencoded::to_string([("payload", payload.to_string())])
        .expect("form-encoding a payload")
        .into_bytes()
}

/// A POST to the Slack route with the given timestamp and signature headers.
pub fn slack_request(timestamp: &str, signature: &str, body: &[u8]) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri("/webhooks/slack")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(Bytes::copy_from_slice(body))
        .expect("a Slack request")
}

/// A POST to the Slack route, signed with `secret` at `timestamp`.
pub fn signed_slack_request(body: &[u8], timestamp: i64, secret: &str) -> http::Request<Bytes> {
    let signature = sign_slack(&SecretString::from(secret.to_string()), timestamp, body);
    slack_request(&timestamp.to_string(), &signature, body)
}
