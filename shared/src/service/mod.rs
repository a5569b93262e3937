//! Use cases: what shipgate does when something happens, shared by every entry point.
//!
//! A function crate (or the self-hosted server) authenticates and parses an inbound event,
//! then calls one of these. They read facts from the [`Repo`], ask the pure domain to decide,
//! persist the result with optimistic concurrency, answer GitHub and publish notifications.

pub mod analysis;
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
///
/// A source with a remote copy (the functions' SSM parameter) looks at it at most every
/// `every`, on the first event after that ([`Services::current`]), and loads a new version
/// when it is valid; an invalid one is refused, logged and announced once per version, and
/// the policy in force stays.
pub struct PolicySource {
    current: std::sync::RwLock<Arc<Policy>>,
    remote: Option<Remote>,
}

impl std::fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySource")
            .field("remote", &self.remote.is_some())
            .finish_non_exhaustive()
    }
}

/// Where a remote copy of the policy is read: its text and its version.
#[async_trait::async_trait]
pub trait PolicyFetch: Send + Sync {
    /// The copy's name (for messages), text and version.
    async fn fetch(&self) -> Result<(String, String, i64), String>;
}

struct Remote {
    fetch: Arc<dyn PolicyFetch>,
    every: std::time::Duration,
    /// When it was last looked at, and the version last seen (loaded or refused).
    state: tokio::sync::Mutex<(Option<Timestamp>, i64)>,
}

impl PolicySource {
    pub fn new(policy: Arc<Policy>) -> Arc<Self> {
        Arc::new(PolicySource {
            current: std::sync::RwLock::new(policy),
            remote: None,
        })
    }

    /// A source whose policy (`version` of the remote copy) is checked against the copy at
    /// most every `every`.
    pub fn with_remote(
        policy: Arc<Policy>,
        version: i64,
        fetch: Arc<dyn PolicyFetch>,
        every: std::time::Duration,
        now: Timestamp,
    ) -> Arc<Self> {
        Arc::new(PolicySource {
            current: std::sync::RwLock::new(policy),
            remote: Some(Remote {
                fetch,
                every,
                state: tokio::sync::Mutex::new((Some(now), version)),
            }),
        })
    }

    /// Looks at the remote copy when it is due, and loads a new valid version.
    pub async fn check(&self, now: Timestamp, publisher: &dyn Publisher) {
        let Some(remote) = &self.remote else {
            return;
        };
        // One caller checks; the others go on with the policy in force.
        let Ok(mut state) = remote.state.try_lock() else {
            return;
        };
        let due = state
            .0
            .is_none_or(|at| crate::domain::time::add(at, remote.every) <= now);
        if !due {
            return;
        }
        state.0 = Some(now);
        let (name, text, version) = match remote.fetch.fetch().await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the policy's remote copy; the policy in force stays");
                return;
            }
        };
        if version == state.1 {
            return;
        }
        state.1 = version;
        match Policy::parse(&name, &text) {
            Ok(policy) => {
                tracing::info!(policy = %name, version, environments = policy.environments().count(), "policy reloaded");
                self.replace(Arc::new(policy));
            }
            Err(errors) => {
                let summary = format!(
                    "version {version} of the policy {name} is not valid; the previous one stays in force:\n{errors}"
                );
                tracing::error!(policy = %name, version, error = %summary, "policy not reloaded");
                let notice = Notification::new(
                    now,
                    crate::notify::NotificationBody::Job {
                        job: "policy-reload".into(),
                        ok: false,
                        summary,
                        details: serde_json::Value::Null,
                        page: false,
                    },
                );
                if let Err(e) = publisher.publish(&notice).await {
                    tracing::error!(error = %e, "could not announce the refused policy");
                }
            }
        }
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
    /// The same event is being handled by another attempt right now; the sender should
    /// deliver it again later (if that attempt fails, the retry is what handles it).
    #[error("{0} is being handled by another attempt")]
    Busy(String),
}

impl ServiceError {
    /// True when a redelivery of the same event may succeed (the claim should be released).
    pub fn is_retryable(&self) -> bool {
        match self {
            ServiceError::Repo(RepoError::Store(e)) => e.is_retryable(),
            ServiceError::Repo(RepoError::Stale { .. })
            | ServiceError::Contended(_)
            | ServiceError::Busy(_) => true,
            ServiceError::Repo(RepoError::Corrupt { .. }) => false,
            ServiceError::GitHub(e) => !e.is_permanent(),
        }
    }
}

impl Services {
    /// [`Services::refreshed`], after looking at the policy's remote copy when that is due
    /// (the functions: at most once a minute, one SSM read). Entry points call this once per
    /// event.
    pub async fn current(&self) -> Services {
        if let Some(source) = &self.policy_source {
            source.check(self.now(), self.publisher.as_ref()).await;
        }
        self.refreshed()
    }

    /// These services under the policy in force now (itself when the policy is fixed).
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
