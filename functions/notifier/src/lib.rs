//! The notifier function: the SQS side of notification delivery.
//!
//! On AWS, notifications travel SNS → SQS → this function. [`handle_sqs`] parses each record
//! (an SNS envelope or a raw notification), delivers the records of one deployment or incident
//! in queue order and everything else in parallel through [`shipgate::notifier::deliver`], and
//! reports the records that failed in `batchItemFailures`, so SQS redelivers them and, after
//! [`MAX_RECEIVES`] receives, dead-letters them. What delivery does (Slack, PagerDuty,
//! idempotency per notification and per send) is documented in [`shipgate::notifier`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::Deserialize;
use shipgate::notify::{Notification, NotificationBody};
use tracing::Instrument;

pub use shipgate::notifier::*;

/// The envelope SNS wraps a message in when it delivers to SQS without raw message delivery.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    message: String,
}

/// The notification in an SQS record's body: an SNS envelope whose `Message` is the
/// notification JSON, or the notification itself (raw message delivery, or a message sent to
/// the queue directly).
pub fn parse_record_body(body: &str) -> Result<Notification, Failure> {
    let malformed = |what| move |source| Failure::Malformed { what, source };
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(malformed("body is not JSON"))?;
    if value.get("Type").is_some() && value.get("Message").is_some() {
        let envelope: SnsEnvelope =
            serde_json::from_value(value).map_err(malformed("SNS envelope"))?;
        if envelope.kind != "Notification" {
            return Err(Failure::NotAnSnsNotification {
                kind: envelope.kind,
            });
        }
        return serde_json::from_str(&envelope.message).map_err(malformed("SNS Message"));
    }
    serde_json::from_value(value).map_err(malformed("body"))
}

/// What orders the records of one batch: notifications about the same deployment or incident
/// are delivered one after the other, in queue order; everything else in parallel.
fn ordering_key(n: &Notification) -> String {
    match &n.body {
        NotificationBody::Deployment { deployment, .. } => format!("dep#{}", deployment.id),
        NotificationBody::Incident { incident_id, .. } => format!("inc#{incident_id}"),
        NotificationBody::Job { .. } => format!("n#{}", n.id),
        NotificationBody::PreDeployBackup { deployment_id, .. } => format!("dep#{deployment_id}"),
    }
}

/// The Lambda handler: delivers every record and reports the ones that failed, so SQS
/// redelivers them (and dead-letters them after [`MAX_RECEIVES`] receives).
pub async fn handle_sqs(app: &Notifier, event: SqsEvent) -> SqsBatchResponse {
    handle_sqs_until(app, event, None).await
}

/// [`handle_sqs`] that starts no record once less than the notifier's delivery budget is left
/// before `deadline` (the invocation's): those are reported failed and come back later.
pub async fn handle_sqs_until(
    app: &Notifier,
    event: SqsEvent,
    deadline: Option<SystemTime>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut groups: BTreeMap<String, Vec<(SqsMessage, Notification)>> = BTreeMap::new();
    for record in event.records {
        match parse_record_body(record.body.as_deref().unwrap_or_default()) {
            Ok(n) => groups
                .entry(ordering_key(&n))
                .or_default()
                .push((record, n)),
            Err(failure) => report(&mut response, &record, None, &failure.into()),
        }
    }

    let deliveries = groups.into_values().map(|group| async move {
        let mut failed = Vec::new();
        for (record, n) in group {
            // Once a record of the group failed, the later ones wait for it: an incident's
            // resolve delivered before its failed trigger would leave PagerDuty paging for an
            // incident that is over.
            let result = if !failed.is_empty() {
                Err(DeliverError::Retryable(Failure::WaitingForEarlier))
            } else if !time_left(app, deadline) {
                Err(DeliverError::Retryable(Failure::OutOfTime))
            } else {
                let span = tracing::info_span!(
                    "record",
                    message_id = record.message_id.as_deref().unwrap_or(""),
                    notification_id = %n.id,
                );
                deliver(app, &n).instrument(span).await.map(drop)
            };
            if let Err(err) = result {
                failed.push((record, n.id, err));
            }
        }
        failed
    });
    for (record, id, err) in futures::future::join_all(deliveries)
        .await
        .into_iter()
        .flatten()
    {
        report(&mut response, &record, Some(&id), &err);
    }
    response
}

fn time_left(app: &Notifier, deadline: Option<SystemTime>) -> bool {
    deadline.is_none_or(|deadline| {
        deadline
            .duration_since(SystemTime::now())
            .is_ok_and(|left| left >= app.delivery_budget())
    })
}

fn report(
    response: &mut SqsBatchResponse,
    record: &SqsMessage,
    notification_id: Option<&str>,
    err: &DeliverError,
) {
    let message_id = record.message_id.as_deref().unwrap_or("");
    let receives = record
        .attributes
        .get("ApproximateReceiveCount")
        .map(String::as_str)
        .unwrap_or("?");
    let notification_id = notification_id.unwrap_or("");
    if err.is_permanent() {
        tracing::error!(
            message_id,
            notification_id,
            receives,
            max_receives = MAX_RECEIVES,
            error = %err,
            "permanent failure, will reach the dead-letter queue after {MAX_RECEIVES} receives"
        );
    } else {
        tracing::warn!(message_id, notification_id, receives, error = %err, "retryable failure; SQS will redeliver");
    }
    if message_id.is_empty() {
        tracing::error!("record without a messageId cannot be reported as failed; it is dropped");
        return;
    }
    response.add_failure(message_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sns_control_messages_are_not_notifications() {
        let body = serde_json::json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "m-1",
            "Message": "You have chosen to subscribe to the topic",
        })
        .to_string();
        let err = parse_record_body(&body).expect_err("not a notification");
        assert!(
            err.to_string().contains("SubscriptionConfirmation"),
            "{err}"
        );
        assert!(err.is_permanent());
    }
}
