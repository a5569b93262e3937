//! The in-process notifier: drains the [`ChannelPublisher`]'s channel, the self-hosted
//! counterpart of SNS → SQS → the notifier function.
//!
//! For now each notification is only logged (kind, event, environment and the Slack channel
//! the policy routes it to). The notifier engineer replaces the body of [`spawn_notifier`]
//! with the real Slack / PagerDuty sender; the server only relies on its contract: the task
//! ends once every sender is dropped and the channel is empty, so shutdown drains it.
//!
//! [`ChannelPublisher`]: shipgate::notify::ChannelPublisher

use std::sync::Arc;

use shipgate::config::{PagerDutySettings, SlackSettings};
use shipgate::domain::policy::Policy;
use shipgate::notify::{Notification, NotificationBody};
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

/// What the notifier needs besides its channel. Must not hold [`shipgate::service::Services`]:
/// that owns a sender, and the channel would then never close.
pub struct NotifierDeps {
    pub policy: Arc<Policy>,
    pub slack: SlackSettings,
    pub pagerduty: PagerDutySettings,
}

/// Starts the notifier; the handle yields how many notifications it handled.
pub fn spawn_notifier(mut rx: Receiver<Notification>, deps: NotifierDeps) -> JoinHandle<u64> {
    tokio::spawn(async move {
        tracing::info!(
            slack = deps.slack.bot_token.is_some(),
            pagerduty = deps.pagerduty.routing_key.is_some(),
            "notifier started (logging only; Slack and PagerDuty sending is not built yet)"
        );
        let mut handled = 0u64;
        while let Some(n) = rx.recv().await {
            log_notification(&deps, &n);
            handled += 1;
        }
        tracing::info!(handled, "notifier drained");
        handled
    })
}

fn log_notification(deps: &NotifierDeps, n: &Notification) {
    match &n.body {
        NotificationBody::Deployment { deployment, event } => {
            let channel = deps
                .policy
                .environment(&deployment.environment)
                .and_then(|e| e.slack_channel.as_deref())
                .unwrap_or("");
            tracing::info!(
                notification_id = %n.id,
                kind = "deployment",
                event = %event,
                deployment_id = %deployment.id,
                environment = %deployment.environment,
                state = %deployment.state,
                slack_channel = channel,
                "notification"
            );
        }
        NotificationBody::Incident {
            incident_id,
            environment,
            severity,
            status,
            ..
        } => {
            tracing::info!(
                notification_id = %n.id,
                kind = "incident",
                incident_id = %incident_id,
                environment = environment.as_deref().unwrap_or(""),
                severity = %severity,
                status = %status,
                "notification"
            );
        }
        NotificationBody::Job { job, ok, page, .. } => {
            tracing::info!(notification_id = %n.id, kind = "job", job = %job, ok, page, "notification");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipgate::notify::{ChannelPublisher, Publisher};

    #[tokio::test]
    async fn notifier_drains_everything_published_before_the_channel_closes() {
        let (publisher, rx) = ChannelPublisher::new(8);
        let deps = NotifierDeps {
            policy: Arc::new(Policy::example().expect("example policy")),
            slack: SlackSettings::from_vars(&[("X", "")]).expect("slack defaults"),
            pagerduty: PagerDutySettings::from_vars(&[("X", "")]).expect("pagerduty defaults"),
        };
        for job in ["backup", "sweeper", "dora"] {
            let n = Notification::new(
                jiff::Timestamp::UNIX_EPOCH,
                NotificationBody::Job {
                    job: job.into(),
                    ok: true,
                    summary: String::new(),
                    details: serde_json::Value::Null,
                    page: false,
                },
            );
            publisher.publish(&n).await.expect("publish");
        }
        let handle = spawn_notifier(rx, deps);
        drop(publisher);
        let handled = tokio::time::timeout(std::time::Duration::from_secs(5), handle)
            .await
            .expect("notifier ends once the channel closes")
            .expect("notifier task");
        assert_eq!(handled, 3);
    }
}
