//! The PagerDuty Events API v2 client: trigger, acknowledge and resolve alerts by `dedup_key`.
//!
//! Events are serialised as PagerDuty's OpenAPI description of `POST /v2/enqueue` documents them
//! (see `fixtures/pagerduty/events-v2.openapiv3.json`). Its retry table is the policy here: 202
//! done, 400 never retried, 429 / 5xx / network errors retried.

use std::fmt;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::retry::{
    classify_http, execute, json_bytes, truncate_chars, OutboundError, RetryPolicy,
};

const SERVICE: &str = "pagerduty";

/// PagerDuty's Events API v2 endpoint.
pub const DEFAULT_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty truncates summaries at this many characters; cutting them here keeps the cut on a
/// character boundary.
pub const MAX_SUMMARY_CHARS: usize = 1024;

/// What the event does to the alert named by its `dedup_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PagerDutyAction {
    Trigger,
    Acknowledge,
    Resolve,
}

/// PagerDuty's severities, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PagerDutySeverity {
    Critical,
    Error,
    Warning,
    Info,
}

/// The alert's content; required on `trigger`, ignored by PagerDuty otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct PagerDutyPayload {
    pub summary: String,
    /// The affected system, preferably a hostname.
    pub source: String,
    pub severity: PagerDutySeverity,
    pub component: Option<String>,
    pub group: Option<String>,
    pub class: Option<String>,
    pub custom_details: Option<serde_json::Value>,
}

impl PagerDutyPayload {
    /// A payload with only the required fields.
    pub fn new(
        summary: impl Into<String>,
        source: impl Into<String>,
        severity: PagerDutySeverity,
    ) -> Self {
        Self {
            summary: summary.into(),
            source: source.into(),
            severity,
            component: None,
            group: None,
            class: None,
            custom_details: None,
        }
    }
}

/// A link shown on the alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PagerDutyLink {
    pub href: String,
    pub text: String,
}

/// One Events API v2 event. The routing key is the integration's secret: it never appears in
/// `Debug` output, errors or logs.
#[derive(Debug, Clone)]
pub struct PagerDutyEvent {
    pub routing_key: SecretString,
    pub event_action: PagerDutyAction,
    /// Correlates trigger, acknowledge and resolve; required for the last two. A trigger
    /// without one gets a key chosen by PagerDuty (returned by [`PagerDutyPort::send`]).
    pub dedup_key: Option<String>,
    pub payload: Option<PagerDutyPayload>,
    pub links: Vec<PagerDutyLink>,
}

/// Sends events to PagerDuty, so handlers can be tested against a fake.
#[async_trait]
pub trait PagerDutyPort: Send + Sync {
    /// Sends one event and returns the `dedup_key` PagerDuty filed it under.
    async fn send(&self, event: PagerDutyEvent) -> Result<String, OutboundError>;
}

/// The Events API v2 client.
pub struct PagerDuty {
    http: reqwest::Client,
    url: String,
    policy: RetryPolicy,
}

impl fmt::Debug for PagerDuty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDuty")
            .field("url", &self.url)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WireEvent<'a> {
    routing_key: &'a str,
    event_action: PagerDutyAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    dedup_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<WirePayload<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    links: &'a [PagerDutyLink],
}

#[derive(Serialize)]
struct WirePayload<'a> {
    summary: &'a str,
    source: &'a str,
    severity: PagerDutySeverity,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_details: Option<&'a serde_json::Value>,
}

#[derive(Deserialize)]
struct Accepted {
    #[serde(default)]
    dedup_key: Option<String>,
}

impl PagerDuty {
    /// A client for `url` (usually [`DEFAULT_EVENTS_URL`]) using the default [`RetryPolicy`].
    pub fn new(url: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            http,
            url: url.into().trim().to_owned(),
            policy: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }
}

/// The JSON body PagerDuty documents for `event`, after checking what it requires.
fn wire_body(event: &PagerDutyEvent) -> Result<bytes::Bytes, OutboundError> {
    let invalid = |message: &str| OutboundError::InvalidRequest {
        service: SERVICE,
        message: message.to_owned(),
    };
    match event.event_action {
        PagerDutyAction::Trigger if event.payload.is_none() => {
            return Err(invalid("a trigger needs a payload"))
        }
        PagerDutyAction::Acknowledge | PagerDutyAction::Resolve if event.dedup_key.is_none() => {
            return Err(invalid("acknowledge and resolve need a dedup_key"))
        }
        _ => {}
    }
    let payload = event.payload.as_ref().map(|payload| WirePayload {
        summary: truncate_chars(&payload.summary, MAX_SUMMARY_CHARS),
        source: &payload.source,
        severity: payload.severity,
        component: payload.component.as_deref(),
        group: payload.group.as_deref(),
        class: payload.class.as_deref(),
        custom_details: payload.custom_details.as_ref(),
    });
    json_bytes(
        SERVICE,
        &WireEvent {
            routing_key: event.routing_key.expose_secret(),
            event_action: event.event_action,
            dedup_key: event.dedup_key.as_deref(),
            payload,
            links: &event.links,
        },
    )
}

#[async_trait]
impl PagerDutyPort for PagerDuty {
    async fn send(&self, event: PagerDutyEvent) -> Result<String, OutboundError> {
        let body = wire_body(&event)?;
        let response = execute(
            &self.policy,
            SERVICE,
            "enqueue",
            || {
                self.http
                    .post(&self.url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            },
            classify_http,
        )
        .await?;
        let accepted: Option<String> = serde_json::from_slice::<Accepted>(&response.body)
            .ok()
            .and_then(|accepted| accepted.dedup_key);
        accepted
            .or(event.dedup_key)
            .ok_or_else(|| OutboundError::Decode {
                service: SERVICE,
                message: "event accepted without a dedup_key".to_owned(),
                source: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/tests/data/pagerduty/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn body(event: &PagerDutyEvent) -> serde_json::Value {
        serde_json::from_slice(&wire_body(event).unwrap()).unwrap()
    }

    #[test]
    fn trigger_serialises_like_the_documented_example() {
        let mut expected = fixture("trigger.openapi-example.json");
        // Fields shipgate does not send: its timestamp is PagerDuty's receive time, and it has no
        // images or client link.
        let object = expected.as_object_mut().unwrap();
        for field in ["client", "client_url", "images"] {
            object.remove(field);
        }
        object["payload"]
            .as_object_mut()
            .unwrap()
            .remove("timestamp");

        let event = PagerDutyEvent {
            routing_key: SecretString::from("e93facc04764012d7bfb002500d5d1a6".to_owned()),
            event_action: PagerDutyAction::Trigger,
            dedup_key: Some("srv01/mysql".into()),
            payload: Some(PagerDutyPayload {
                component: Some("mysql".into()),
                group: Some("prod-datapipe".into()),
                class: Some("disk".into()),
                custom_details: Some(serde_json::json!({
                    "free space": "1%", "ping time": "1500ms", "load avg": 0.75
                })),
                ..PagerDutyPayload::new(
                    "DISK at 99% on machine prod-datapipe03.example.com",
                    "prod-datapipe03.example.com",
                    PagerDutySeverity::Critical,
                )
            }),
            links: vec![PagerDutyLink {
                href: "http://pagerduty.example.com".into(),
                text: "An example link.".into(),
            }],
        };
        assert_eq!(body(&event), expected);
    }

    #[test]
    fn resolve_serialises_like_the_documented_example() {
        let event = PagerDutyEvent {
            routing_key: SecretString::from("routingkeyhere".to_owned()),
            event_action: PagerDutyAction::Resolve,
            dedup_key: Some("dedupkeyhere".into()),
            payload: None,
            links: vec![],
        };
        assert_eq!(body(&event), fixture("resolve.docs-example.json"));
    }

    #[test]
    fn acknowledge_serialises_like_the_documented_example() {
        let event = PagerDutyEvent {
            routing_key: SecretString::from("routingkeyhere".to_owned()),
            event_action: PagerDutyAction::Acknowledge,
            dedup_key: Some("dedupkeyhere".into()),
            payload: None,
            links: vec![],
        };
        assert_eq!(body(&event), fixture("acknowledge.docs-example.json"));
    }

    #[test]
    fn resolve_without_dedup_key_and_trigger_without_payload_are_refused() {
        let mut event = PagerDutyEvent {
            routing_key: SecretString::from("k".to_owned()),
            event_action: PagerDutyAction::Resolve,
            dedup_key: None,
            payload: None,
            links: vec![],
        };
        assert!(matches!(
            wire_body(&event),
            Err(OutboundError::InvalidRequest { .. })
        ));
        event.event_action = PagerDutyAction::Trigger;
        assert!(matches!(
            wire_body(&event),
            Err(OutboundError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn long_summaries_are_cut_to_pagerdutys_limit() {
        let event = PagerDutyEvent {
            routing_key: SecretString::from("k".to_owned()),
            event_action: PagerDutyAction::Trigger,
            dedup_key: None,
            payload: Some(PagerDutyPayload::new(
                "ü".repeat(2000),
                "host",
                PagerDutySeverity::Info,
            )),
            links: vec![],
        };
        let summary = body(&event)["payload"]["summary"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(summary.chars().count(), MAX_SUMMARY_CHARS);
    }

    #[test]
    fn debug_output_hides_the_routing_key() {
        let event = PagerDutyEvent {
            routing_key: SecretString::from("super-secret-routing-key".to_owned()),
            event_action: PagerDutyAction::Resolve,
            dedup_key: Some("d".into()),
            payload: None,
            links: vec![],
        };
        assert!(!format!("{event:?}").contains("super-secret-routing-key"));
    }
}
