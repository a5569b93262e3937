//! Deadlines the self-hosted server keeps to the second: the end of a verification window a
//! queue may be waiting on, and the end of a queued request's wait.
//!
//! Every deployment notification passes the server's publisher; one that opens a window
//! (`verifying`, with its end) or queues a request (with its wait's end) leaves a deadline
//! here for its scope. At the deadline the scope's queue advances
//! ([`shipgate::service::queue::advance`]): the window that has ended is closed and the
//! next request decided, or the request past its wait rejected — within a second, instead of
//! at the next sweep. A scope whose queue is empty costs one read of its partition. On AWS
//! the sweeper (every minute) does this; any request, status or alert for the scope does it
//! at once on both.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use shipgate::domain::deployment::State;
use shipgate::domain::ids::{EnvName, RepoName};
use shipgate::domain::scope::Scope;
use shipgate::notify::{Notification, NotificationBody};
use shipgate::service::{queue, Services};
use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Deadlines waiting to be handed to the timer task; past this the sweeper covers.
const CAPACITY: usize = 1024;
/// Past the deadline by this much before acting, so the store's clock agrees it has passed.
const GRACE: Duration = Duration::from_millis(20);

/// The deadline a notification sets, if any.
pub(crate) fn deadline_of(n: &Notification) -> Option<(Scope, Timestamp)> {
    let NotificationBody::Deployment { deployment, .. } = &n.body else {
        return None;
    };
    let at = match deployment.state {
        State::Verifying => deployment.verify_until?,
        State::Queued => deployment.queue.as_ref()?.until,
        _ => return None,
    };
    let repo = RepoName::parse(&deployment.repo).ok()?;
    let env = EnvName::parse(&deployment.environment).ok()?;
    Some((Scope::new(repo, env), at))
}

/// The sending side, held by the server's publisher.
#[derive(Debug, Clone)]
pub(crate) struct Deadlines(Sender<(Scope, Timestamp)>);

impl Deadlines {
    pub fn new() -> (Self, Receiver<(Scope, Timestamp)>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Deadlines(tx), rx)
    }

    /// Notes the deadline a notification sets; never waits (a full timer is covered by the
    /// sweeper).
    pub fn note(&self, n: &Notification) {
        if let Some(deadline) = deadline_of(n) {
            if self.0.try_send(deadline).is_err() {
                tracing::warn!("queue timer is full; the sweeper will serve this deadline");
            }
        }
    }
}

/// Runs until `stop`: sleeps to the earliest deadline, then advances that scope's queue.
pub(crate) fn spawn_queue_timer(
    mut rx: Receiver<(Scope, Timestamp)>,
    services: Services,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut due: BTreeSet<(Timestamp, Scope)> = BTreeSet::new();
        loop {
            let sleep = match due.first() {
                Some((at, _)) => {
                    let left = at.duration_since(Timestamp::now());
                    Duration::try_from(left).unwrap_or(Duration::ZERO) + GRACE
                }
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                next = rx.recv() => match next {
                    Some((scope, at)) => {
                        due.insert((at, scope));
                    }
                    None => break,
                },
                () = tokio::time::sleep(sleep) => {
                    let now = Timestamp::now();
                    while let Some((at, scope)) = due.first().cloned() {
                        if at > now {
                            break;
                        }
                        due.pop_first();
                        match queue::advance(&services.refreshed(), &scope).await {
                            Ok(done) if !done.decided.is_empty() || !done.timed_out.is_empty() => {
                                tracing::info!(scope = %scope, decided = ?done.decided, timed_out = ?done.timed_out, "queue advanced at its deadline");
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(scope = %scope, error = %e, "could not advance the queue; the sweeper will"),
                        }
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    })
}
