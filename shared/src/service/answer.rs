//! The answer to GitHub: once a deployment is decided, its protection-rule callback is
//! answered (`approved` or `rejected`, with a comment naming the rule or the approvers) and the
//! deployment marked answered. An approval whose pre-deploy backup could not be made is
//! cancelled and answered `rejected` with the reason instead.

use super::{predeploy, update_deployment, ServiceError, Services};
use crate::domain::deployment::{Action, Actor, CallbackState, Deployment, State};
use crate::notify::Notification;
use crate::outbound::github::ReviewState;

/// The claim scope of the answer lease (`IDEM#answer#{deployment id}`).
const ANSWER_SCOPE: &str = "answer";
/// How long a caller sending GitHub's answer holds it: longer than the GitHub client's
/// retries take, short enough that a crash mid-send is retried by the next sweeps.
const ANSWER_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// The comment GitHub shows for a decided deployment.
pub fn decision_comment(dep: &Deployment) -> String {
    match dep.state {
        State::Rejected | State::Expired | State::Cancelled => format!(
            "shipgate rejected this deployment to {}: {}",
            dep.environment,
            dep.reason.as_deref().unwrap_or("no reason recorded")
        ),
        _ if dep.approvals.is_empty() => format!(
            "shipgate approved this deployment to {}: policy checks passed ({})",
            dep.environment,
            if dep.checks.is_empty() {
                "no checks configured".to_string()
            } else {
                dep.checks.join("; ")
            }
        ),
        _ => format!(
            "shipgate approved this deployment to {}: approved by {}",
            dep.environment,
            dep.approvals
                .iter()
                .map(|a| a.approver.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Answers GitHub's protection-rule callback for a decided deployment whose answer is still
/// pending, then marks it answered. Returns true when an answer was sent now. A deployment
/// still awaiting approval, or queued, gets a status comment instead (and stays pending).
pub async fn answer_github(svc: &Services, deployment_id: &str) -> Result<bool, ServiceError> {
    answer(svc, deployment_id, Resend::Send).await
}

/// [`answer_github`] for an answer found still pending later (the sweeper's retry): its
/// first attempt may have reached GitHub before the process died, so GitHub is asked first
/// whether the run still waits on the environment. One that no longer does (answered, or the
/// run ended) is marked answered without a second answer. When GitHub cannot say, the answer
/// is sent: a run left waiting is worse than a repeat GitHub ignores.
pub async fn answer_github_again(
    svc: &Services,
    deployment_id: &str,
) -> Result<bool, ServiceError> {
    answer(svc, deployment_id, Resend::AskFirst).await
}

/// Whether GitHub is asked if the run still waits before the decision is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    Send,
    AskFirst,
}

async fn answer(svc: &Services, deployment_id: &str, resend: Resend) -> Result<bool, ServiceError> {
    let Some(dep) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(false);
    };
    if dep.callback != CallbackState::Pending {
        return Ok(false);
    }
    let (Some(github), Some(run_id), Some(installation_id)) =
        (svc.github.as_ref(), dep.run_id, dep.installation_id)
    else {
        tracing::warn!(
            deployment_id,
            "cannot answer GitHub: no GitHub App configured or no installation id"
        );
        return Ok(false);
    };
    let state = match dep.state {
        State::AwaitingApproval => {
            let comment = format!(
                "shipgate: waiting for {} approval(s) in Slack ({} so far)",
                dep.approvals_required,
                dep.approvals.len()
            );
            github
                .report_protection_rule_status(
                    installation_id,
                    dep.repo.as_str(),
                    run_id,
                    dep.environment.as_str(),
                    &comment,
                )
                .await?;
            return Ok(false);
        }
        State::Queued => {
            let comment = match &dep.queued {
                Some(ticket) => format!(
                    "shipgate: queued behind deployment {} in {}; waits until {}",
                    ticket.behind, dep.environment, ticket.until
                ),
                None => format!("shipgate: queued for {}", dep.environment),
            };
            github
                .report_protection_rule_status(
                    installation_id,
                    dep.repo.as_str(),
                    run_id,
                    dep.environment.as_str(),
                    &comment,
                )
                .await?;
            return Ok(false);
        }
        State::Requested => return Ok(false),
        State::Rejected | State::Expired | State::Cancelled => ReviewState::Rejected,
        _ => ReviewState::Approved,
    };
    let mut dep = dep;
    let mut backed_up = Vec::new();
    if dep.state == State::Approved {
        match predeploy::before_approving(svc, &dep).await? {
            predeploy::Gate::NotNeeded => {}
            predeploy::Gate::Waiting => return Ok(false),
            predeploy::Gate::Done(ids) => backed_up = ids,
            predeploy::Gate::GaveUp(reason) => {
                dep = cancel_for_backup(svc, deployment_id, &reason).await?;
            }
        }
    }
    let state = if dep.state == State::Cancelled {
        ReviewState::Rejected
    } else {
        state
    };
    let mut comment = decision_comment(&dep);
    if state == ReviewState::Approved && !backed_up.is_empty() {
        comment.push_str(&format!("; backed up first: {}", backed_up.join(", ")));
    }
    // GitHub takes one answer per run and environment: whoever sends it holds a lease on it
    // first, so a sweep (or a second request) that finds the answer still pending while it is
    // in flight leaves it alone. The lease outlives the call's retries; a failed call gives
    // it back so the next attempt need not wait for it to expire.
    if !svc
        .repo
        .claim_event(ANSWER_SCOPE, &dep.id, svc.now(), ANSWER_LEASE)
        .await?
    {
        tracing::info!(
            deployment_id,
            "GitHub's answer is being sent by another caller"
        );
        return Ok(false);
    }
    if resend == Resend::AskFirst {
        match github
            .pending_environments(installation_id, dep.repo.as_str(), run_id)
            .await
        {
            Ok(waiting) if !waiting.iter().any(|e| e == dep.environment.as_str()) => {
                let detail = format!(
                    "run {run_id} no longer waits on {}: not sent again",
                    dep.environment
                );
                mark_answered(svc, deployment_id, detail).await?;
                tracing::info!(
                    deployment_id,
                    run_id,
                    "GitHub no longer waits for this answer; marked answered without sending it again"
                );
                return Ok(false);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                deployment_id,
                error = %e,
                "could not ask GitHub whether the run still waits; sending the answer"
            ),
        }
    }
    if let Err(e) = github
        .review_protection_rule(
            installation_id,
            dep.repo.as_str(),
            run_id,
            dep.environment.as_str(),
            state,
            &comment,
        )
        .await
    {
        if let Err(release) = svc.repo.release_event(ANSWER_SCOPE, &dep.id).await {
            tracing::warn!(deployment_id, error = %release, "could not give back the answer lease; the next attempt waits for it to expire");
        }
        return Err(e.into());
    }
    mark_answered(svc, deployment_id, format!("{state:?}").to_lowercase()).await?;
    Ok(true)
}

/// Marks a deployment's answer as given (once), noting `detail` in its audit log.
async fn mark_answered(
    svc: &Services,
    deployment_id: &str,
    detail: String,
) -> Result<(), ServiceError> {
    let now = svc.now();
    update_deployment(svc, deployment_id, |d| {
        if d.callback != CallbackState::Pending {
            return None;
        }
        d.callback = CallbackState::Answered;
        let note = d.note(now, &Actor::system(), "github_answered", detail.clone());
        Some(vec![note])
    })
    .await?;
    Ok(())
}

/// Cancels an approved deployment whose pre-deploy backup could not be made, so GitHub is
/// told "rejected" with the reason instead of deploying without it.
async fn cancel_for_backup(
    svc: &Services,
    deployment_id: &str,
    reason: &str,
) -> Result<Deployment, ServiceError> {
    let now = svc.now();
    let saved = update_deployment(svc, deployment_id, |d| {
        if d.state != State::Approved {
            return None;
        }
        let event = d
            .apply(Action::Cancel, now, &Actor::system(), reason)
            .ok()?;
        d.reason = Some(reason.to_string());
        Some(vec![event])
    })
    .await?
    .ok_or_else(|| ServiceError::Contended(format!("deployment {deployment_id} disappeared")))?;
    if saved.state == State::Cancelled {
        tracing::error!(
            deployment_id,
            reason,
            "deployment cancelled: its pre-deploy backup failed"
        );
        svc.publish(Notification::deployment(now, &saved, "cancelled"))
            .await;
    }
    Ok(saved)
}
