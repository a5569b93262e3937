//! The deploy queue: a request whose scope is locked waits instead of being rejected.
//!
//! GitHub keeps a custom protection rule pending until it is answered, so a job can wait for
//! the deployment ahead of it. A request that finds its scope (repository + environment)
//! locked, or others already waiting, is stored as a `queued` deployment with a queue entry
//! in the scope's partition (see [`crate::store::repo::QueueEntry`]), and GitHub is told
//! where it stands. When the lock frees — in the same save that releases it, see
//! [`crate::service::update_deployment`] — [`advance`] takes the first in line out of the
//! queue and decides it on the facts of that moment (a critical incident the deployment
//! ahead caused, a freeze that began meanwhile, its promotion), exactly as a fresh request.
//!
//! - **Arrival order**: entries are served by arrival time, and a new request joins behind
//!   any that wait, even when the lock happens to be free.
//! - **Superseding**: a newer request for the same repository, environment and ref answers
//!   the older waiting ones `rejected` ("superseded by run N"): only the newest build of a
//!   branch is worth deploying.
//! - **Wait limit**: the policy's `queue_wait` (default 1 hour); an entry past it is rejected
//!   with the reason by whoever reads the queue next (a request, the lock's release, the
//!   sweeper). `queue_wait = "0s"` turns the queue off.
//! - **No ghosts**: a workflow run that ends while its request waits (cancelled) withdraws
//!   the request ([`withdraw_run`]); a re-run asks afresh.

use std::future::Future;
use std::pin::Pin;

use jiff::Timestamp;

use super::answer::answer_github;
use super::gate::{decide_queued, gate_facts};
use super::lifecycle::close_if_ended;
use super::{update_deployment, ServiceError, Services};
use crate::domain::deployment::{Action, Actor, CallbackState, Deployment, State};
use crate::domain::ids::Sha;
use crate::domain::incident::OpenIncident;
use crate::domain::scope::Scope;
use crate::notify::{Notification, QueueSpot};
use crate::store::repo::QueueEntry;

/// Most deployments one advance decides before it stops (each rejected one lets the next
/// in line try); the sweeper continues where it stopped.
const MAX_DECISIONS: usize = 50;

/// What one [`advance`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Advanced {
    /// Deployments taken out of the queue and decided (approved, awaiting or rejected).
    pub decided: Vec<String>,
    /// Deployments rejected because they waited past `queue_wait`.
    pub timed_out: Vec<String>,
}

/// [`advance`], boxed: it is called from [`update_deployment`], which it calls in turn.
pub fn advance_boxed<'a>(
    svc: &'a Services,
    scope: &'a Scope,
) -> Pin<Box<dyn Future<Output = Result<Advanced, ServiceError>> + Send + 'a>> {
    Box::pin(advance(svc, scope))
}

/// Serves a scope's queue: rejects entries past their wait, then, while the lock is free,
/// takes the first in line out and decides it. Stops when a deployment holds the lock.
pub async fn advance(svc: &Services, scope: &Scope) -> Result<Advanced, ServiceError> {
    let mut done = Advanced::default();
    for _ in 0..MAX_DECISIONS {
        let now = svc.now();
        let mut state = svc.repo.scope_state(scope).await?;
        if state.queue.is_empty() {
            break;
        }
        // The holder's window may have ended without anyone closing it.
        if let (Some(holder), Some(current)) = (&state.lock_holder, &state.current) {
            if current.deployment_id == *holder {
                if let Some(closed) = close_if_ended(svc, current, now).await? {
                    if !closed.holds_lock() {
                        // Closing released the lock, and that release advanced the queue:
                        // count what left it, then look again.
                        let still: Vec<String> = svc
                            .repo
                            .queue(scope)
                            .await?
                            .into_iter()
                            .map(|e| e.deployment_id)
                            .collect();
                        done.decided.extend(
                            state
                                .queue
                                .iter()
                                .filter(|e| !still.contains(&e.deployment_id))
                                .map(|e| e.deployment_id.clone()),
                        );
                        continue;
                    }
                }
            }
        }
        let (late, waiting): (Vec<QueueEntry>, Vec<QueueEntry>) =
            state.queue.drain(..).partition(|e| e.until <= now);
        for entry in &late {
            if time_out(svc, entry, now).await?.is_some() {
                done.timed_out.push(entry.deployment_id.clone());
            }
        }
        if state.lock_holder.is_some() {
            if !late.is_empty() {
                announce_positions(svc, &waiting, state.lock_holder.as_deref()).await;
            }
            break;
        }
        let Some(next) = waiting.first() else {
            break;
        };
        // Requests that arrived together may each have missed the other when they queued:
        // the newest request for a ref is the one worth deploying.
        if let Some(newer) = waiting[1..]
            .iter()
            .rev()
            .find(|e| e.git_ref == next.git_ref)
        {
            let why = superseded_by(newer.run_id, &newer.git_ref, &newer.sha);
            if leave(svc, &next.deployment_id, now, Action::Reject, |_| {
                why.clone()
            })
            .await?
            .is_some()
            {
                done.decided.push(next.deployment_id.clone());
            }
            continue;
        }
        let Some(dep) = svc.repo.get_deployment(&next.deployment_id).await? else {
            svc.repo
                .remove_queue_entry(scope, &next.deployment_id)
                .await?;
            continue;
        };
        if dep.state != State::Queued {
            // An entry whose deployment left the queue by a path that could not delete it.
            svc.repo.remove_queue_entry(scope, &dep.id).await?;
            continue;
        }
        let incidents = std::mem::take(&mut state.open_incidents);
        let Some(decided) = take_out(svc, dep, incidents, now).await? else {
            // The record or the lock changed meanwhile (a Slack reference saved, another
            // advance, a new holder): look again; a held lock ends the loop.
            continue;
        };
        done.decided.push(decided.id.clone());
        if decided.state.holds_lock() {
            announce_positions(svc, &waiting[1..], Some(&decided.id)).await;
            break;
        }
    }
    Ok(done)
}

/// Decides a queued deployment on current facts and saves it out of the queue, taking the
/// lock when it goes ahead. `None` when the lock was taken or the record changed first.
async fn take_out(
    svc: &Services,
    dep: Deployment,
    scope_incidents: Vec<OpenIncident>,
    now: Timestamp,
) -> Result<Option<Deployment>, ServiceError> {
    let facts = gate_facts(svc, &dep.scope(), &dep.sha, scope_incidents, now).await?;
    let (mut decided, events) = decide_queued(svc, dep, facts, now).await;
    match svc.repo.save_deployment(&mut decided, &events).await {
        Ok(_) => {}
        Err(crate::store::RepoError::Stale { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(deployment_id = %decided.id, scope = %decided.scope(), state = %decided.state, "took a deployment out of the queue");
    let event = match decided.state {
        State::AwaitingApproval => "approval_requested",
        State::Approved => "approved",
        _ => "rejected",
    };
    svc.publish(Notification::deployment(now, &decided, event))
        .await;
    if let Err(e) = answer_github(svc, &decided.id).await {
        tracing::warn!(deployment_id = %decided.id, error = %e, "GitHub answer failed; the sweeper will retry");
    }
    Ok(Some(decided))
}

/// Why an older request for a ref gave way to a newer one.
pub(crate) fn superseded_by(run_id: Option<u64>, git_ref: &str, sha: &Sha) -> String {
    match run_id {
        Some(run) => format!("superseded by run {run} ({git_ref} at {})", sha.short()),
        None => format!(
            "superseded by a newer request ({git_ref} at {})",
            sha.short()
        ),
    }
}

/// Rejects a queued deployment that waited past its limit.
async fn time_out(
    svc: &Services,
    entry: &QueueEntry,
    now: Timestamp,
) -> Result<Option<Deployment>, ServiceError> {
    let why = |d: &Deployment| {
        let waited = d
            .queued
            .as_ref()
            .map(|t| {
                crate::domain::policy::format_duration(
                    t.until.duration_since(t.since).unsigned_abs(),
                )
            })
            .unwrap_or_default();
        let behind = d
            .queued
            .as_ref()
            .map(|t| t.behind.clone())
            .unwrap_or_default();
        format!(
            "waited {waited} (queue_wait) for {} to be free; deployment {behind} was still ahead",
            d.environment
        )
    };
    leave(svc, &entry.deployment_id, now, Action::Reject, why).await
}

/// Takes a queued deployment out of the queue by `action` (reject or cancel) with the reason
/// `why` gives. `None` when it had left the queue already.
pub(crate) async fn leave<F>(
    svc: &Services,
    deployment_id: &str,
    now: Timestamp,
    action: Action,
    why: F,
) -> Result<Option<Deployment>, ServiceError>
where
    F: Fn(&Deployment) -> String,
{
    let mut moved = false;
    let saved = update_deployment(svc, deployment_id, |d| {
        moved = false;
        if d.state != State::Queued {
            return None;
        }
        let reason = why(d);
        let event = d
            .apply(action, now, &Actor::system(), reason.clone())
            .ok()?;
        d.reason = Some(reason);
        moved = true;
        Some(vec![event])
    })
    .await?;
    let Some(dep) = saved.filter(|_| moved) else {
        return Ok(None);
    };
    tracing::info!(deployment_id = %dep.id, state = %dep.state, reason = dep.reason.as_deref().unwrap_or(""), "a queued deployment left the queue");
    let event = if dep.state == State::Cancelled {
        "cancelled"
    } else {
        "rejected"
    };
    svc.publish(Notification::deployment(now, &dep, event))
        .await;
    if let Err(e) = answer_github(svc, &dep.id).await {
        tracing::warn!(deployment_id = %dep.id, error = %e, "GitHub answer failed; the sweeper will retry");
    }
    Ok(Some(dep))
}

/// Tells the deployments still waiting where they now stand (their Slack messages update in
/// place). One read per waiting deployment, only when the queue moved.
pub(crate) async fn announce_positions(
    svc: &Services,
    waiting: &[QueueEntry],
    holder: Option<&str>,
) {
    let now = svc.now();
    for (i, entry) in waiting.iter().enumerate() {
        let dep = match svc.repo.get_deployment(&entry.deployment_id).await {
            Ok(Some(dep)) if dep.state == State::Queued => dep,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(deployment_id = %entry.deployment_id, error = %e, "could not read a queued deployment to announce its place");
                continue;
            }
        };
        let spot = QueueSpot {
            position: u32::try_from(i + 1).unwrap_or(u32::MAX),
            behind: holder
                .map(str::to_string)
                .or_else(|| dep.queued.as_ref().map(|t| t.behind.clone()))
                .unwrap_or_default(),
            until: entry.until,
        };
        svc.publish(Notification::queued(now, &dep, spot)).await;
    }
}

/// A workflow run ended: its requests still waiting for a decision (queued, or awaiting
/// approval) are withdrawn, since no job is left to deploy them. GitHub no longer waits for
/// an answer, so none is sent; a re-run of the run asks afresh.
pub async fn withdraw_run(
    svc: &Services,
    run_id: u64,
    conclusion: &str,
    ended_at: Timestamp,
) -> Result<Vec<String>, ServiceError> {
    let now = svc.now();
    let mut withdrawn = Vec::new();
    for dep in svc.repo.deployments_for_run(run_id).await? {
        // A re-run keeps the run id: an end reported for an earlier attempt (late, or
        // redelivered) leaves the newer attempt's request alone. An approval GitHub has not
        // received yet is withdrawn too: nothing will deploy it.
        let waiting = matches!(
            dep.state,
            State::Queued | State::Requested | State::AwaitingApproval
        ) || (dep.state == State::Approved && dep.callback == CallbackState::Pending);
        if !waiting || dep.created_at > ended_at {
            continue;
        }
        let why = format!("workflow run {run_id} ended ({conclusion}) while it waited");
        let mut moved = false;
        let saved = update_deployment(svc, &dep.id, |d| {
            moved = false;
            let waiting = matches!(
                d.state,
                State::Queued | State::Requested | State::AwaitingApproval
            ) || (d.state == State::Approved && d.callback == CallbackState::Pending);
            if !waiting || d.run_id != Some(run_id) {
                return None;
            }
            let event = d
                .apply(Action::Cancel, now, &Actor::system(), why.clone())
                .ok()?;
            d.reason = Some(why.clone());
            d.callback = CallbackState::None;
            moved = true;
            Some(vec![event])
        })
        .await?;
        if let Some(dep) = saved.filter(|_| moved) {
            tracing::info!(deployment_id = %dep.id, run_id, "withdrew the request of a workflow run that ended");
            svc.publish(Notification::deployment(now, &dep, "cancelled"))
                .await;
            withdrawn.push(dep.id);
        }
    }
    Ok(withdrawn)
}
