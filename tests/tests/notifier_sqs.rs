//! The Lambda handler: SQS events (as Lambda delivers them, from `events/notifier/`) in,
//! partial batch failures out.

#[path = "common/notifier.rs"]
mod common;

use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use common::*;
use notifier::{handle_sqs, handle_sqs_until, parse_record_body};
use serde_json::json;
use shipgate::domain::deployment::{Deployment, State};
use shipgate::notify::{Notification, NotificationBody};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const TS: &str = "1741089600.000100";

fn event_file(name: &str) -> SqsEvent {
    let path = testkit::event_path("notifier", name);
    let text = std::fs::read_to_string(&path).expect("event file");
    serde_json::from_str(&text).expect("an SQS event as Lambda delivers it")
}

fn failures(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// An SQS record carrying `n` in an SNS envelope, as the subscription without raw message
/// delivery sends it.
fn sns_record(message_id: &str, n: &Notification) -> SqsMessage {
    let envelope = json!({
        "Type": "Notification",
        "MessageId": format!("sns-{message_id}"),
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:shipgate-NotificationsTopic",
        "Message": serde_json::to_string(n).expect("notification JSON"),
        "Timestamp": "2025-03-04T12:00:00.431Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    });
    raw_record(message_id, &envelope.to_string())
}

fn raw_record(message_id: &str, body: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(message_id.to_owned());
    record.body = Some(body.to_owned());
    record
        .attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    record.event_source = Some("aws:sqs".into());
    record
}

fn batch(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// The deployment a notification's summary describes, so it can be stored first.
fn deployment_of(n: &Notification) -> Deployment {
    let NotificationBody::Deployment { deployment: s, .. } = &n.body else {
        panic!("not a deployment notification");
    };
    let mut dep = awaiting_deployment(&s.id);
    dep.repo = s.repo.parse().unwrap();
    dep.environment = s.environment.parse().unwrap();
    dep.git_ref = s.git_ref.clone();
    dep.sha = s.sha.parse().unwrap();
    dep.requester = s.requester.clone();
    dep.state = s.state;
    dep.approvals_required = s.approvals_required;
    dep.checks = s.checks.clone();
    dep.button_nonce = s.button_nonce.clone();
    dep.approval_expires_at = s.approval_expires_at;
    dep
}

fn notification_in(event: &SqsEvent) -> Notification {
    parse_record_body(event.records[0].body.as_deref().unwrap_or("")).expect("a notification")
}

#[test]
fn every_sample_event_parses_and_carries_a_notification() {
    let approval = event_file("sqs-approval-requested.json");
    assert_eq!(approval.records.len(), 1);
    let record = &approval.records[0];
    assert_eq!(
        record.message_id.as_deref(),
        Some("2e1424d4-f796-459a-8184-9c92662be6da")
    );
    assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
    assert!(record.attributes.contains_key("ApproximateReceiveCount"));
    match notification_in(&approval).body {
        NotificationBody::Deployment { deployment, event } => {
            assert_eq!(event, "approval_requested");
            assert_eq!(deployment.state, State::AwaitingApproval);
            assert_eq!(deployment.approvals_required, 2);
        }
        other => panic!("expected a deployment notification, got {other:?}"),
    }

    let incident = event_file("sqs-incident-opened.json");
    match notification_in(&incident).body {
        NotificationBody::Incident {
            incident_id,
            status,
            severity,
            ..
        } => {
            assert_eq!(incident_id, "alertmanager:3f5b2c9e1d7a4086");
            assert_eq!(status, "open");
            assert_eq!(severity, "critical");
        }
        other => panic!("expected an incident notification, got {other:?}"),
    }
}

#[tokio::test]
async fn sample_approval_event_posts_the_approval_request_and_reports_no_failures() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let event = event_file("sqs-approval-requested.json");
    let n = notification_in(&event);
    store_deployment(&services, deployment_of(&n)).await;

    let response = handle_sqs(&app, event).await;
    assert!(failures(&response).is_empty());
    let requests = fakes.slack_requests().await;
    assert_eq!(requests.len(), 1);
    assert_slack_call(&requests[0], "chat.postMessage");
    let sent = body(&requests[0]);
    assert_eq!(sent["channel"], "C0PRODUCTION");
    assert!(sent["blocks"].to_string().contains(
        "shipgate_approve\",\"style\":\"primary\",\"text\":{\"emoji\":true,\"text\":\"Approve\",\"type\":\"plain_text\"},\"type\":\"button\",\"value\":\"dep-0195605a3b8f7c11a2d4e6f809b1c3d5:8c1e4f2a9b7d43e6a0f5c2d1b8e7a694\""
    ), "{sent}");
    assert!(sent["text"]
        .as_str()
        .unwrap_or("")
        .ends_with("0 of 2 approvals"));
}

#[tokio::test]
async fn sample_incident_event_pages_with_the_incident_id_as_dedup_key() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(pagerduty_accepted("alertmanager:3f5b2c9e1d7a4086"))
        .mount(&fakes.pagerduty)
        .await;
    let app = fakes.notifier(services());

    let response = handle_sqs(&app, event_file("sqs-incident-opened.json")).await;
    assert!(failures(&response).is_empty());
    let pd = fakes.pagerduty_requests().await;
    assert_eq!(pd.len(), 1);
    assert_eq!(body(&pd[0])["dedup_key"], "alertmanager:3f5b2c9e1d7a4086");
    assert_eq!(body(&pd[0])["event_action"], "trigger");
}

#[tokio::test]
async fn a_rejected_request_is_a_permanent_failure_reported_for_the_dead_letter_queue() {
    let (logs, _guard) = LogCapture::start();
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": ["Invalid routing key"]
        })))
        .mount(&fakes.pagerduty)
        .await;
    let app = fakes.notifier(services());
    let job = |name: &str, page: bool| {
        Notification::new(
            now(),
            NotificationBody::Job {
                job: name.into(),
                ok: false,
                summary: format!("{name} failed"),
                details: serde_json::Value::Null,
                page,
            },
        )
    };
    let paged = job("restore-drill", true);
    let event = batch(vec![
        sns_record("msg-paged", &paged),
        sns_record("msg-quiet", &job("dora-report", false)),
    ]);

    let response = handle_sqs(&app, event).await;
    assert_eq!(failures(&response), vec!["msg-paged"]);
    // A 400 is not retried within the invocation.
    assert_eq!(fakes.pagerduty_requests().await.len(), 1);
    let text = logs.text();
    assert!(text.contains("ERROR"), "{text}");
    assert!(
        text.contains("permanent failure, will reach the dead-letter queue after 5 receives"),
        "{text}"
    );
    assert!(text.contains("msg-paged"), "{text}");
    assert!(text.contains("Event object is invalid"), "{text}");
    assert!(!text.contains(CRITICAL_ROUTING_KEY) && !text.contains(BOT_TOKEN));

    // SQS redelivers it until it reaches the dead-letter queue: each receive fails again
    // rather than being swallowed as a duplicate, and Slack is not posted twice.
    let response = handle_sqs(&app, batch(vec![sns_record("msg-paged", &paged)])).await;
    assert_eq!(failures(&response), vec!["msg-paged"]);
    assert_eq!(fakes.pagerduty_requests().await.len(), 2);
    let slack_posts_for_the_paged_job = fakes
        .slack_requests()
        .await
        .iter()
        .filter(|r| {
            body(r)["text"]
                .as_str()
                .unwrap_or("")
                .starts_with("restore-drill")
        })
        .count();
    assert_eq!(
        slack_posts_for_the_paged_job, 2,
        "one per environment channel, once"
    );
}

#[tokio::test]
async fn malformed_records_fail_permanently_while_the_rest_of_the_batch_is_delivered() {
    let (logs, _guard) = LogCapture::start();
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-raw")).await;
    let raw = Notification::deployment(now(), &dep, "approval_requested");

    let event = batch(vec![
        raw_record("msg-garbage", "not json at all"),
        raw_record("msg-other-json", r#"{"hello":"world"}"#),
        // Raw message delivery: the body is the notification itself.
        raw_record("msg-raw", &serde_json::to_string(&raw).expect("json")),
    ]);
    let mut response = failures(&handle_sqs(&app, event).await);
    response.sort();
    assert_eq!(response, vec!["msg-garbage", "msg-other-json"]);
    assert_eq!(fakes.slack_requests().await.len(), 1);
    assert!(logs.text().contains("not a shipgate notification"));
    assert!(
        !logs.text().contains("hello"),
        "record bodies are not logged"
    );
}

#[tokio::test]
async fn records_are_not_started_when_the_invocation_is_about_to_time_out() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-late")).await;
    let n = Notification::deployment(now(), &dep, "approval_requested");

    let deadline = SystemTime::now() + Duration::from_secs(5);
    let response =
        handle_sqs_until(&app, batch(vec![sns_record("msg-1", &n)]), Some(deadline)).await;
    assert_eq!(failures(&response), vec!["msg-1"]);
    assert!(fakes.slack_requests().await.is_empty());

    // Not claimed: the redelivery with time to spare sends it.
    let response = handle_sqs(&app, batch(vec![sns_record("msg-1", &n)])).await;
    assert!(failures(&response).is_empty());
    assert_eq!(fakes.slack_requests().await.len(), 1);
}

#[tokio::test]
async fn a_failed_record_holds_back_later_records_about_the_same_incident() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fakes.pagerduty)
        .await;
    let app = fakes.notifier(services());
    let incident = |status: &str| {
        Notification::new(
            now(),
            NotificationBody::Incident {
                incident_id: "alertmanager:abc".into(),
                environment: Some("staging".into()),
                severity: "critical".into(),
                title: "Down".into(),
                status: status.into(),
                link: None,
                deployment_id: None,
                repository: None,
                attribution: None,
            },
        )
    };
    let event = batch(vec![
        sns_record("msg-open", &incident("open")),
        sns_record("msg-resolved", &incident("resolved")),
    ]);
    let response = handle_sqs(&app, event).await;
    assert_eq!(failures(&response), vec!["msg-open", "msg-resolved"]);
    let pd = fakes.pagerduty_requests().await;
    assert_eq!(pd.len(), 3, "only the trigger was attempted (3 tries)");
    assert!(pd.iter().all(|r| body(r)["event_action"] == "trigger"));
}
