//! Test doubles for the library's ports: a clock tests set and advance, and a publisher that
//! keeps what was published.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use shipgate::notify::{Notification, PublishError, Publisher};
use shipgate::service::Clock;

/// A clock tests can set and advance.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        ManualClock(Arc::new(Mutex::new(at)))
    }
    pub fn set(&self, at: Timestamp) {
        if let Ok(mut t) = self.0.lock() {
            *t = at;
        }
    }
    pub fn advance(&self, by: std::time::Duration) {
        if let Ok(mut t) = self.0.lock() {
            let d = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
            *t = t.checked_add(d).unwrap_or(*t);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|p| *p.into_inner())
    }
}

/// Keeps what was published, in order.
#[derive(Default, Clone)]
pub struct RecordingPublisher {
    seen: Arc<Mutex<Vec<Notification>>>,
}

impl RecordingPublisher {
    pub fn taken(&self) -> Vec<Notification> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Publisher for RecordingPublisher {
    async fn publish(&self, n: &Notification) -> Result<(), PublishError> {
        if let Ok(mut v) = self.seen.lock() {
            v.push(n.clone());
        }
        Ok(())
    }
}
