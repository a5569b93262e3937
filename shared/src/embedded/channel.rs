//! Notifications in-process ([`ChannelPublisher`]): `shipgate serve` hands them to its notifier
//! task through a bounded channel.

use async_trait::async_trait;

use crate::notify::{Notification, PublishError, Publisher};

/// In-process delivery for the self-hosted binary: a bounded channel to the notifier task.
#[derive(Clone)]
pub struct ChannelPublisher {
    tx: tokio::sync::mpsc::Sender<Notification>,
}

impl ChannelPublisher {
    pub fn new(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<Notification>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (ChannelPublisher { tx }, rx)
    }
}

#[async_trait]
impl Publisher for ChannelPublisher {
    async fn publish(&self, n: &Notification) -> Result<(), PublishError> {
        self.tx
            .send(n.clone())
            .await
            .map_err(|_| PublishError::Failed {
                message: "notifier task has stopped".into(),
                source: None,
            })
    }
}
