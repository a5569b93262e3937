//! The in-process notifier: drains the [`ChannelPublisher`]'s channel, the self-hosted
//! counterpart of SNS → SQS → the notifier function.
//!
//! Each notification goes through [`shipgate::notifier::deliver`], the notifier function's own delivery
//! (Slack Block Kit messages posted then updated in place, PagerDuty trigger/resolve). What
//! SQS redelivery does on AWS is done here with a few retries and a backoff; a permanent
//! failure, or a retryable one that keeps failing, is logged and dropped, since there is no
//! dead-letter queue to park it in. Without a Slack bot token or a PagerDuty routing key the
//! notifier skips those sends (its own behaviour).
//!
//! The notifier's [`Services`](shipgate::service::Services) must not publish into the channel
//! it drains: that sender would keep the channel open forever. It gets a
//! [`DiscardPublisher`] instead (the notifier publishes nothing anyway).
//!
//! Pre-deploy backup requests are not for people: `RoutingPublisher` sends them to the
//! task `spawn_pre_deploy_backups` starts, which runs them with the scheduled jobs'
//! context — what the SNS subscription filter does on AWS.
//!
//! [`ChannelPublisher`]: shipgate::notify::ChannelPublisher

use std::time::Duration;

use crate::queue_timer::Deadlines;
use async_trait::async_trait;
use shipgate::embedded::ChannelPublisher;
use shipgate::jobs::{predeploy, JobContext};
use shipgate::notifier::{Delivered, Notifier};
use shipgate::notify::{Notification, NotificationBody, PublishError, Publisher};
use tokio::sync::mpsc::{self, Receiver};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Attempts per notification, like the queue's `maxReceiveCount` on AWS.
pub(crate) const ATTEMPTS: u32 = shipgate::notifier::MAX_RECEIVES;
/// Wait before the first retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Publishes nothing: for services that must not hold the notifier channel's sender.
pub struct DiscardPublisher;

#[async_trait]
impl Publisher for DiscardPublisher {
    async fn publish(&self, n: &Notification) -> Result<(), PublishError> {
        tracing::debug!(notification_id = %n.id, "notification discarded (nothing to publish to)");
        Ok(())
    }
}

/// How many pre-deploy backup requests may wait for the jobs task.
const PRE_DEPLOY_CAPACITY: usize = 64;

/// The self-hosted server's publisher: pre-deploy backup requests to the jobs task, every
/// other notification to the notifier's channel, and the deadlines deployment notifications
/// set to the queue timer ([`crate::queue_timer`]).
pub(crate) struct RoutingPublisher {
    notifications: ChannelPublisher,
    pre_deploy: mpsc::Sender<String>,
    deadlines: Deadlines,
}

impl RoutingPublisher {
    /// The publisher and the receiving end for [`spawn_pre_deploy_backups`].
    pub fn new(notifications: ChannelPublisher, deadlines: Deadlines) -> (Self, Receiver<String>) {
        let (pre_deploy, rx) = mpsc::channel(PRE_DEPLOY_CAPACITY);
        (
            RoutingPublisher {
                notifications,
                pre_deploy,
                deadlines,
            },
            rx,
        )
    }
}

#[async_trait]
impl Publisher for RoutingPublisher {
    async fn publish(&self, n: &Notification) -> Result<(), PublishError> {
        match &n.body {
            NotificationBody::PreDeployBackup { deployment_id, .. } => self
                .pre_deploy
                .send(deployment_id.clone())
                .await
                .map_err(|_| PublishError::Failed {
                    message: "the pre-deploy backup task has stopped".into(),
                    source: None,
                }),
            _ => {
                self.deadlines.note(n);
                self.notifications.publish(n).await
            }
        }
    }
}

/// Runs pre-deploy backups one at a time as they are requested, until `stop`. A backup cut
/// short by a shutdown is requested again by the sweeper after the next start.
pub(crate) fn spawn_pre_deploy_backups(
    mut rx: Receiver<String>,
    jobs: JobContext,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(deployment_id) => match predeploy::run(&jobs.refreshed(), &deployment_id).await {
                        Ok(outcome) => tracing::info!(deployment_id, ?outcome, "pre-deploy backup handled"),
                        Err(e) => tracing::error!(deployment_id, error = %e, "pre-deploy backup could not run; the sweeper retries"),
                    },
                    None => break,
                },
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    })
}

/// Starts the notifier; the handle yields how many notifications it handled (delivered,
/// duplicate or given up on). It ends when every sender is gone, or when `stop` becomes true:
/// then the channel is closed to new notifications and what is queued is still delivered.
pub fn spawn_notifier(
    mut rx: Receiver<Notification>,
    notifier: Notifier,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<u64> {
    tokio::spawn(async move {
        tracing::info!(?notifier, "notifier started");
        let mut handled = 0u64;
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(n) => {
                        deliver_with_retries(&notifier, &n, FIRST_BACKOFF).await;
                        handled += 1;
                    }
                    None => break,
                },
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        rx.close();
                        while let Some(n) = rx.recv().await {
                            deliver_with_retries(&notifier, &n, FIRST_BACKOFF).await;
                            handled += 1;
                        }
                        break;
                    }
                }
            }
        }
        tracing::info!(handled, "notifier drained");
        handled
    })
}

/// What became of one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Delivered,
    /// Permanently failed, or still failing after [`ATTEMPTS`] attempts.
    GivenUp,
}

/// Delivers `n`, retrying retryable failures with exponential backoff from `backoff`.
pub(crate) async fn deliver_with_retries(
    app: &Notifier,
    n: &Notification,
    backoff: Duration,
) -> Fate {
    let mut wait = backoff;
    for attempt in 1..=ATTEMPTS {
        match shipgate::notifier::deliver(app, n).await {
            Ok(Delivered::Duplicate) => {
                tracing::debug!(notification_id = %n.id, "notification was delivered before");
                return Fate::Delivered;
            }
            Ok(delivered) => {
                tracing::debug!(notification_id = %n.id, ?delivered, "notification delivered");
                return Fate::Delivered;
            }
            Err(e) if e.is_permanent() => {
                tracing::error!(notification_id = %n.id, error = %e, "notification cannot be delivered; dropped");
                return Fate::GivenUp;
            }
            Err(e) if attempt == ATTEMPTS => {
                tracing::error!(notification_id = %n.id, attempts = attempt, error = %e, "notification still failing; dropped");
                return Fate::GivenUp;
            }
            Err(e) => {
                tracing::warn!(notification_id = %n.id, attempt, retry_in_ms = wait.as_millis() as u64, error = %e, "notification delivery failed; retrying");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
    Fate::GivenUp
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use shipgate::domain::policy::Policy;
    use shipgate::embedded::sqlite::SqliteStore;
    use shipgate::embedded::ChannelPublisher;
    use shipgate::notify::NotificationBody;
    use shipgate::outbound::{SlackApiPort, SlackMessageRef};
    use shipgate::service::{Services, SystemClock};
    use shipgate::store::Repo;

    use super::*;
    use shipgate::outbound::{AttemptFailure, OutboundError};

    /// Fails `post_message` with a retryable error `fail_first` times, then records it.
    struct FlakySlack {
        calls: AtomicU32,
        fail_first: u32,
        permanent: bool,
        posted: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl SlackApiPort for FlakySlack {
        async fn post_message(
            &self,
            channel: &str,
            _text: &str,
            _blocks: &serde_json::Value,
        ) -> Result<SlackMessageRef, OutboundError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.permanent {
                return Err(OutboundError::Permanent {
                    service: "slack",
                    status: 200,
                    message: "channel_not_found".into(),
                });
            }
            if n < self.fail_first {
                return Err(OutboundError::Exhausted {
                    service: "slack",
                    attempts: 1,
                    last: AttemptFailure::Status {
                        status: 503,
                        message: "unavailable".into(),
                        retry_after: None,
                    },
                });
            }
            self.posted
                .lock()
                .expect("posted")
                .push(channel.to_string());
            Ok(SlackMessageRef {
                channel: channel.to_string(),
                ts: "1.1".into(),
            })
        }
        async fn update_message(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &serde_json::Value,
        ) -> Result<(), OutboundError> {
            Ok(())
        }
        async fn post_ephemeral(&self, _: &str, _: &str, _: &str) -> Result<(), OutboundError> {
            Ok(())
        }
        async fn respond(&self, _: &str, _: &serde_json::Value) -> Result<(), OutboundError> {
            Ok(())
        }
    }

    fn notifier_with(slack: Arc<FlakySlack>) -> Notifier {
        let services = Services {
            repo: Repo::new(Arc::new(SqliteStore::in_memory().expect("sqlite"))),
            policy: Arc::new(Policy::example().expect("example policy")),
            github: None,
            publisher: Arc::new(DiscardPublisher),
            clock: Arc::new(SystemClock),
            policy_source: None,
        };
        Notifier::new(services)
            .with_slack(slack)
            .with_ops_channel(Some("#ops".into()))
    }

    fn job_notification(job: &str) -> Notification {
        Notification::new(
            jiff::Timestamp::now(),
            NotificationBody::Job {
                job: job.into(),
                ok: false,
                summary: format!("{job} failed"),
                details: serde_json::Value::Null,
                page: false,
            },
        )
    }

    fn slack(fail_first: u32, permanent: bool) -> Arc<FlakySlack> {
        Arc::new(FlakySlack {
            calls: AtomicU32::new(0),
            fail_first,
            permanent,
            posted: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_until_the_message_is_posted() {
        let fake = slack(2, false);
        let app = notifier_with(Arc::clone(&fake));
        let fate =
            deliver_with_retries(&app, &job_notification("backup"), Duration::from_millis(1)).await;
        assert_eq!(fate, Fate::Delivered);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            *fake.posted.lock().expect("posted"),
            vec!["#ops".to_string()]
        );
    }

    #[tokio::test]
    async fn permanent_failures_are_given_up_after_one_attempt() {
        let fake = slack(0, true);
        let app = notifier_with(Arc::clone(&fake));
        let fate =
            deliver_with_retries(&app, &job_notification("backup"), Duration::from_millis(1)).await;
        assert_eq!(fate, Fate::GivenUp);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retryable_failures_are_given_up_after_the_last_attempt() {
        let fake = slack(u32::MAX, false);
        let app = notifier_with(Arc::clone(&fake));
        let fate =
            deliver_with_retries(&app, &job_notification("sweeper"), Duration::from_millis(1))
                .await;
        assert_eq!(fate, Fate::GivenUp);
        assert_eq!(fake.calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn stopping_delivers_what_is_queued_even_while_senders_remain() {
        let fake = slack(0, false);
        let (publisher, rx) = ChannelPublisher::new(8);
        for job in ["backup", "sweeper", "dora-report"] {
            publisher
                .publish(&job_notification(job))
                .await
                .expect("publish");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let handle = spawn_notifier(rx, notifier_with(Arc::clone(&fake)), stop_rx);
        stop_tx.send_replace(true);
        let handled = tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("notifier ends once stopped")
            .expect("notifier task");
        assert_eq!(handled, 3);
        assert_eq!(fake.posted.lock().expect("posted").len(), 3);
        // The publisher still exists, but the channel is closed: late notifications fail
        // instead of waiting forever.
        assert!(publisher.publish(&job_notification("late")).await.is_err());
    }

    #[tokio::test]
    async fn notifier_ends_once_every_sender_is_gone() {
        let (publisher, rx) = ChannelPublisher::new(8);
        publisher
            .publish(&job_notification("backup"))
            .await
            .expect("publish");
        drop(publisher);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let handle = spawn_notifier(rx, notifier_with(slack(0, false)), stop_rx);
        let handled = tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("notifier ends once the channel closes")
            .expect("notifier task");
        assert_eq!(handled, 1);
    }
}
