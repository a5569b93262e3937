//! Use cases: what shipgate does when something happens, shared by every entry point.
//!
//! A function crate (or the self-hosted server) authenticates and parses an inbound event,
//! then calls one of these. They read facts from the [`Repo`], ask the pure domain to decide,
//! persist the result with optimistic concurrency, answer GitHub and publish notifications.

pub mod answer;
pub mod approvals;
pub mod drill;
pub mod gate;
pub mod incidents;
pub mod lifecycle;
pub mod predeploy;
pub mod queue;
pub mod reconcile;
pub mod rollback;
pub mod unlock;

use std::sync::Arc;

use jiff::Timestamp;

use crate::domain::deployment::{AuditEvent, Deployment};
use crate::domain::policy::Policy;
use crate::notify::{Notification, Publisher};
use crate::outbound::github::GitHubApi;
use crate::outbound::OutboundError;
use crate::store::{Repo, RepoError};

/// A source of `now`, so tests and drills control time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Everything a use case needs, built once at cold start.
#[derive(Clone)]
pub struct Services {
    pub repo: Repo,
    pub policy: Arc<Policy>,
    /// `None` when no GitHub App is configured: shipgate records, but cannot answer GitHub.
    pub github: Option<Arc<dyn GitHubApi>>,
    pub publisher: Arc<dyn Publisher>,
    pub clock: Arc<dyn Clock>,
    /// Where a policy that changes while running comes from (`shipgate serve` reloads its
    /// file); `None` keeps `policy` for good. Entry points take [`Services::refreshed`].
    pub policy_source: Option<Arc<PolicySource>>,
}

/// The policy in force, replaced as a whole when a new valid one is loaded: every event is
/// handled under one policy, the one current when it arrived ([`Services::refreshed`]).
#[derive(Debug)]
pub struct PolicySource {
    current: std::sync::RwLock<Arc<Policy>>,
}

impl PolicySource {
    pub fn new(policy: Arc<Policy>) -> Arc<Self> {
        Arc::new(PolicySource {
            current: std::sync::RwLock::new(policy),
        })
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(p) => Arc::clone(&p),
            // A writer panicked mid-swap; the value is a whole Arc either way.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts `policy` in force for every event that arrives from now on.
    pub fn replace(&self, policy: Arc<Policy>) {
        match self.current.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("github", &self.github.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a use case could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("GitHub call failed: {0}")]
    GitHub(#[from] OutboundError),
    /// Someone else kept changing the record; the event should be retried.
    #[error("gave up after repeated concurrent updates of {0}")]
    Contended(String),
}

impl ServiceError {
    /// True when a redelivery of the same event may succeed (the claim should be released).
    pub fn is_retryable(&self) -> bool {
        match self {
            ServiceError::Repo(RepoError::Store(e)) => e.is_retryable(),
            ServiceError::Repo(RepoError::Stale { .. }) | ServiceError::Contended(_) => true,
            ServiceError::Repo(RepoError::Corrupt { .. }) => false,
            ServiceError::GitHub(e) => !e.is_permanent(),
        }
    }
}

impl Services {
    /// These services under the policy in force now (itself when the policy is fixed).
    /// Entry points call this once per event.
    pub fn refreshed(&self) -> Services {
        match &self.policy_source {
            Some(source) => Services {
                policy: source.current(),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Publishes, logging instead of failing: the state change already happened and the
    /// notifier is downstream of it.
    pub async fn publish(&self, notification: Notification) {
        if let Err(e) = self.publisher.publish(&notification).await {
            tracing::error!(error = %e, notification_id = %notification.id, "could not publish notification");
        }
    }
}

const UPDATE_ATTEMPTS: usize = 8;

/// Re-reads, changes and saves a deployment until the save is not stale. `change` returns the
/// audit events of its change, or `None` when there is nothing to change. When the save
/// releases a lock that queued requests wait for, the queue advances before this returns
/// (see [`queue::advance`]).
pub async fn update_deployment<F>(
    svc: &Services,
    id: &str,
    mut change: F,
) -> Result<Option<Deployment>, ServiceError>
where
    F: FnMut(&mut Deployment) -> Option<Vec<AuditEvent>>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(mut dep) = svc.repo.get_deployment(id).await? else {
            return Ok(None);
        };
        let Some(events) = change(&mut dep) else {
            return Ok(Some(dep));
        };
        match svc.repo.save_deployment(&mut dep, &events).await {
            Ok(saved) => {
                if saved.queue_waiting {
                    // The save released the lock others wait for: serve them now. A failure
                    // leaves them queued for the next release, request or sweep.
                    if let Err(e) = queue::advance_boxed(svc, &dep.scope()).await {
                        tracing::warn!(scope = %dep.scope(), error = %e, "could not advance the queue; the sweeper will");
                    }
                }
                return Ok(Some(dep));
            }
            Err(RepoError::Stale { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Contended(format!("deployment {id}")))
}
