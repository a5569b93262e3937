//! Black-box tests of the PagerDuty Events API v2 client against a wiremock stand-in: the exact
//! event body, PagerDuty's documented retry table, and the per-request timeout.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;
use shipgate::outbound::{
    http_client, OutboundError, PagerDuty, PagerDutyAction, PagerDutyEvent, PagerDutyLink,
    PagerDutyPayload, PagerDutyPort, PagerDutySeverity, RetryPolicy,
};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ROUTING_KEY: &str = "e93facc04764012d7bfb002500d5d1a6";

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    }
}

fn pagerduty(server: &MockServer, policy: RetryPolicy) -> PagerDuty {
    PagerDuty::new(
        format!("{}/v2/enqueue", server.uri()),
        http_client().unwrap(),
    )
    .with_policy(policy)
}

fn trigger() -> PagerDutyEvent {
    PagerDutyEvent {
        routing_key: SecretString::from(ROUTING_KEY.to_owned()),
        event_action: PagerDutyAction::Trigger,
        dedup_key: Some("shipgate/production/rollback".into()),
        payload: Some(PagerDutyPayload {
            component: Some("checkout".into()),
            group: Some("production".into()),
            class: Some("rollback".into()),
            custom_details: Some(json!({"deployment": "d-123", "sha": "9f0c1e2"})),
            ..PagerDutyPayload::new(
                "Automatic rollback of checkout in production",
                "shipgate",
                PagerDutySeverity::Critical,
            )
        }),
        links: vec![PagerDutyLink {
            href: "https://github.com/octo-org/checkout/actions/runs/4242".into(),
            text: "Workflow run".into(),
        }],
    }
}

fn accepted(dedup_key: &str) -> ResponseTemplate {
    ResponseTemplate::new(202).set_body_json(json!({
        "status": "success",
        "message": "Event processed",
        "dedup_key": dedup_key
    }))
}

#[tokio::test]
async fn trigger_posts_the_documented_event_body_and_returns_the_dedup_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": "shipgate/production/rollback",
            "payload": {
                "summary": "Automatic rollback of checkout in production",
                "source": "shipgate",
                "severity": "critical",
                "component": "checkout",
                "group": "production",
                "class": "rollback",
                "custom_details": {"deployment": "d-123", "sha": "9f0c1e2"}
            },
            "links": [{
                "href": "https://github.com/octo-org/checkout/actions/runs/4242",
                "text": "Workflow run"
            }]
        })))
        .respond_with(accepted("shipgate/production/rollback"))
        .expect(1)
        .mount(&server)
        .await;

    let key = pagerduty(&server, fast_policy())
        .send(trigger())
        .await
        .unwrap();

    assert_eq!(key, "shipgate/production/rollback");
}

#[tokio::test]
async fn trigger_without_dedup_key_returns_the_key_pagerduty_chose() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .and(|request: &wiremock::Request| {
            request
                .body_json::<serde_json::Value>()
                .is_ok_and(|body| body.get("dedup_key").is_none())
        })
        .respond_with(accepted("pd-assigned-key"))
        .expect(1)
        .mount(&server)
        .await;

    let event = PagerDutyEvent {
        dedup_key: None,
        ..trigger()
    };
    let key = pagerduty(&server, fast_policy()).send(event).await.unwrap();

    assert_eq!(key, "pd-assigned-key");
}

#[tokio::test]
async fn resolve_sends_only_key_action_and_dedup_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .and(body_json(json!({
            "routing_key": ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": "shipgate/production/rollback"
        })))
        .respond_with(accepted("shipgate/production/rollback"))
        .expect(1)
        .mount(&server)
        .await;

    let event = PagerDutyEvent {
        event_action: PagerDutyAction::Resolve,
        payload: None,
        links: vec![],
        ..trigger()
    };
    pagerduty(&server, fast_policy()).send(event).await.unwrap();
}

#[tokio::test]
async fn server_errors_are_retried_and_the_third_attempt_lands() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "status": "Unrecognized object",
            "message": "Event object format is unrecognized",
            "errors": ["JSON parse error"]
        })))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(accepted("shipgate/production/rollback"))
        .mount(&server)
        .await;

    pagerduty(&server, fast_policy())
        .send(trigger())
        .await
        .unwrap();

    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(accepted("shipgate/production/rollback"))
        .mount(&server)
        .await;

    pagerduty(&server, fast_policy())
        .send(trigger())
        .await
        .unwrap();

    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn bad_request_is_permanent_after_one_request_and_hides_the_routing_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": ["Length of 'routing_key' is incorrect (should be 32 characters)"]
        })))
        .mount(&server)
        .await;

    let err = pagerduty(&server, fast_policy())
        .send(trigger())
        .await
        .unwrap_err();

    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert!(matches!(
        err,
        OutboundError::Permanent { service: "pagerduty", status: 400, ref message }
            if message.starts_with("Event object is invalid")
    ));
    assert!(err.is_permanent());
    assert!(!format!("{err} {err:?}").contains(ROUTING_KEY));
}

#[tokio::test]
async fn hanging_server_times_out_within_the_configured_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(accepted("late").set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;
    let policy = RetryPolicy {
        max_attempts: 2,
        timeout: Duration::from_millis(200),
        ..fast_policy()
    };

    let started = Instant::now();
    let err = pagerduty(&server, policy)
        .send(trigger())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    assert!(err.is_timeout(), "{err:?}");
    assert!(matches!(
        err,
        OutboundError::Exhausted {
            service: "pagerduty",
            attempts: 2,
            ..
        }
    ));
    assert!(!err.is_permanent());
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(2),
        "two 200 ms attempts took {elapsed:?}"
    );
}

#[tokio::test]
async fn unreachable_service_is_a_retryable_transport_failure() {
    // Bind then drop a listener so the port is very likely closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = PagerDuty::new(
        format!("http://127.0.0.1:{port}/v2/enqueue"),
        http_client().unwrap(),
    )
    .with_policy(fast_policy());

    let err = client.send(trigger()).await.unwrap_err();

    assert!(matches!(
        err,
        OutboundError::Exhausted {
            attempts: 3,
            last: shipgate::outbound::AttemptFailure::Transport(_),
            ..
        }
    ));
    assert!(!err.is_permanent());
}
