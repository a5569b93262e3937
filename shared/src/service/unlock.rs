//! `unlock`: an operator frees a scope whose lock is held by a deployment that will not end on
//! its own (its runner died, its webhooks were lost and GitHub cannot be asked). The holder is
//! ended with the operator's reason — cancelled when it never started deploying, failed when
//! it did or may have — which releases the lock in the same save and so moves the scope's
//! queue; the audit log records who and why, and the deployment's Slack message says so. A
//! lock whose holder no longer holds it by state (a crash between two writes) is released.
//! A request GitHub still waits on is answered `rejected` with the reason.

use serde::Serialize;

use super::answer::answer_github;
use super::{update_deployment, ServiceError, Services};
use crate::domain::deployment::{Action, Actor, State};
use crate::domain::scope::Scope;
use crate::notify::Notification;

/// What an unlock did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum UnlockOutcome {
    /// The holder was ended (`state`: cancelled or failed); the lock is free.
    Unlocked { deployment_id: String, state: State },
    /// The lock's holder had already ended; the leftover lock was released.
    ReleasedStale { deployment_id: String },
    /// Nothing holds the scope's lock.
    NotLocked,
    /// Refused, and why (no reason given).
    Refused { reason: String },
}

/// Frees `scope` as `who` (e.g. `cli:ada`) for `reason`.
pub async fn unlock(
    svc: &Services,
    scope: &Scope,
    who: &str,
    reason: &str,
) -> Result<UnlockOutcome, ServiceError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Ok(UnlockOutcome::Refused {
            reason: "an unlock needs a reason (it is audited and announced)".into(),
        });
    }
    let Some(holder) = svc.repo.lock_holder(scope).await? else {
        return Ok(UnlockOutcome::NotLocked);
    };
    let now = svc.now();
    let why = format!("unlocked by {who}: {reason}");
    let mut moved = false;
    let saved = update_deployment(svc, &holder, |d| {
        moved = false;
        if !d.state.holds_lock() {
            return None;
        }
        // Never started deploying: cancelled. Deploying, verifying or rolling back: what
        // runs there is not known, so it failed.
        let action = match d.state {
            State::Requested | State::AwaitingApproval | State::Approved => Action::Cancel,
            _ => Action::Fail,
        };
        let event = d
            .apply(action, now, &Actor(who.to_string()), why.clone())
            .ok()?;
        d.reason = Some(why.clone());
        moved = true;
        Some(vec![event])
    })
    .await?;
    match saved {
        Some(dep) if moved => {
            tracing::warn!(deployment_id = %dep.id, scope = %scope, who, reason, "scope unlocked by an operator");
            svc.publish(Notification::deployment(now, &dep, "unlocked"))
                .await;
            if let Err(e) = answer_github(svc, &dep.id).await {
                tracing::warn!(deployment_id = %dep.id, error = %e, "could not answer GitHub for the unlocked deployment; the sweeper retries");
            }
            Ok(UnlockOutcome::Unlocked {
                deployment_id: dep.id,
                state: dep.state,
            })
        }
        _ => {
            if !svc.repo.release_stale_lock(scope).await? {
                // The lock changed hands meanwhile (the holder ended and the queue moved on).
                return Ok(match svc.repo.lock_holder(scope).await? {
                    None => UnlockOutcome::NotLocked,
                    Some(now_held) => UnlockOutcome::Refused {
                        reason: format!(
                            "the lock changed hands meanwhile: deployment {now_held} holds it now; run the command again to end that one"
                        ),
                    },
                });
            }
            super::queue::advance(svc, scope).await?;
            tracing::warn!(deployment_id = %holder, scope = %scope, who, reason, "released a lock whose holder had ended");
            Ok(UnlockOutcome::ReleasedStale {
                deployment_id: holder,
            })
        }
    }
}
