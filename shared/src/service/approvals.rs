//! Approve / Reject clicks from Slack: who may decide, what a click counts for, and answering
//! GitHub once the decision is made. Rollback clicks (Roll back, Approve rollback, Cancel
//! rollback) are answered here too; their rules live in [`rollback`].
//!
//! Every click re-reads the deployment and is applied with [`update_deployment`], so two
//! approvers clicking at the same instant both count and exactly one of them moves the
//! deployment to `approved` (and so exactly one answers GitHub). Refused clicks are outcomes,
//! not errors: they change nothing and tell the clicker why.
//!
//! Slack wants an answer to an interaction within 3 s. The store writes happen inline; the
//! GitHub answer gets at most [`GITHUB_ANSWER_BUDGET`]. When it does not finish in time it stays
//! `pending` on the record and the scheduled sweeper retries it, so a slow GitHub never turns a
//! recorded decision into a failed click.

use std::time::Duration;

use super::answer::answer_github;
use super::rollback::{self, RollbackOutcome};
use super::update_deployment;
use super::{ServiceError, Services};
use crate::domain::deployment::{
    Actor, ApprovalOutcome, ApprovalRefused, ApproverFacts, CallbackState, Deployment, State,
};
use crate::domain::ids::short_sha;
use crate::domain::policy::EnvironmentPolicy;
use crate::notify::Notification;

/// How long a click may wait for GitHub's answer before leaving it to the sweeper.
pub const GITHUB_ANSWER_BUDGET: Duration = Duration::from_millis(1500);

/// What happened to GitHub's protection-rule callback after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitHubAnswer {
    /// GitHub accepted the answer.
    Answered,
    /// GitHub did not answer in time or failed; the callback stays pending and the sweeper
    /// retries it.
    Pending,
    /// Nothing was sent: no GitHub App is configured, the deployment was not gated through a
    /// protection rule, or someone else already answered.
    NotSent,
}

impl GitHubAnswer {
    fn sentence(self) -> &'static str {
        match self {
            GitHubAnswer::Answered => " GitHub was told.",
            GitHubAnswer::Pending => " GitHub will be told shortly.",
            GitHubAnswer::NotSent => "",
        }
    }
}

/// What one click did, with the text the clicker should see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickOutcome {
    /// The button does not belong to a known deployment's current message (unknown id or a
    /// nonce that does not match): nothing changed.
    Stale,
    /// The click did not count; nothing changed.
    Refused(ApprovalRefused),
    /// The approval counted; more are needed.
    Progress {
        environment: String,
        have: u32,
        need: u32,
        break_glass: bool,
    },
    /// The approval counted and completed the quorum: the deployment is approved.
    Approved {
        environment: String,
        short_sha: String,
        approvers: Vec<String>,
        break_glass: bool,
        github: GitHubAnswer,
    },
    /// The approval counted and completed the quorum, but something that blocks deploys now
    /// (a freeze, the deploy window, a critical incident) holds it: the deployment waits.
    Held {
        environment: String,
        blocker: String,
        expires_at: Option<jiff::Timestamp>,
    },
    /// The deployment is rejected.
    Rejected {
        environment: String,
        short_sha: String,
        reason: Option<String>,
        github: GitHubAnswer,
    },
    /// The clicker may reject, but this environment needs a reason first; nothing changed.
    ReasonRequired { environment: String },
    /// A rollback was requested, approved or cancelled from the deployment's message; the
    /// text says what happened.
    Rollback {
        environment: String,
        message: String,
    },
}

/// Exact text of [`ClickOutcome::Stale`].
pub const STALE_BUTTON: &str =
    "This button is out of date: use the latest shipgate message for this deployment.";

impl ClickOutcome {
    /// What the clicker is told (ephemerally, only they see it).
    pub fn text(&self) -> String {
        match self {
            ClickOutcome::Stale => STALE_BUTTON.to_string(),
            ClickOutcome::Refused(refusal) => format!("Not counted: {refusal}."),
            ClickOutcome::Progress {
                environment,
                have,
                need,
                break_glass,
            } => {
                let kind = if *break_glass {
                    "Break-glass approval"
                } else {
                    "Approval"
                };
                format!("{kind} recorded for {environment}: {have} of {need}.")
            }
            ClickOutcome::Approved {
                environment,
                short_sha,
                approvers,
                break_glass,
                github,
            } => {
                let kind = if *break_glass {
                    "break-glass deployment"
                } else {
                    "deployment"
                };
                format!(
                    "Approved: the {environment} {kind} of {short_sha} is approved by {}.{}",
                    approvers.join(", "),
                    github.sentence()
                )
            }
            ClickOutcome::Held {
                environment,
                blocker,
                expires_at,
            } => {
                let until = expires_at
                    .map(|t| format!(" (it expires at {t})"))
                    .unwrap_or_default();
                format!(
                    "Approval recorded for {environment}: the approvals are complete, but {blocker}. shipgate approves it once that no longer holds, unless the request expires first{until}."
                )
            }
            ClickOutcome::Rejected {
                environment,
                short_sha,
                reason,
                github,
            } => {
                let why = reason
                    .as_deref()
                    .map(|r| format!(" (reason: {r})"))
                    .unwrap_or_default();
                format!(
                    "Rejected: the {environment} deployment of {short_sha} will not go out{why}.{}",
                    github.sentence()
                )
            }
            ClickOutcome::ReasonRequired { environment } => {
                format!("Rejections in {environment} need a reason.")
            }
            ClickOutcome::Rollback { message, .. } => message.clone(),
        }
    }
}

/// The identity facts of the clicker under the deployment's (repository, environment) rules.
fn facts<'a>(
    svc: &'a Services,
    env: Option<&'a EnvironmentPolicy>,
    slack_user: &str,
) -> ApproverFacts<'a> {
    ApproverFacts {
        approvers: env.map(|e| e.approvers.as_slice()).unwrap_or(&[]),
        clicker_login: svc.policy.slack_user_login(slack_user),
        // An environment missing from the policy keeps the safe default.
        prevent_self_approval: env.map(|e| e.prevent_self_approval).unwrap_or(true),
    }
}

fn nonce_matches(dep: &Deployment, nonce: &str) -> bool {
    !nonce.is_empty() && dep.button_nonce.as_deref() == Some(nonce)
}

/// Runs the GitHub answer within [`GITHUB_ANSWER_BUDGET`].
async fn answer_within_budget(svc: &Services, deployment_id: &str) -> GitHubAnswer {
    match tokio::time::timeout(GITHUB_ANSWER_BUDGET, answer_github(svc, deployment_id)).await {
        Ok(Ok(true)) => GitHubAnswer::Answered,
        Ok(Ok(false)) => GitHubAnswer::NotSent,
        Ok(Err(e)) => {
            tracing::warn!(deployment_id, error = %e, "GitHub answer failed; the sweeper will retry");
            GitHubAnswer::Pending
        }
        Err(_) => {
            tracing::warn!(
                deployment_id,
                budget_ms = GITHUB_ANSWER_BUDGET.as_millis(),
                "GitHub answer did not finish in time; the sweeper will retry"
            );
            GitHubAnswer::Pending
        }
    }
}

/// Records an Approve click by Slack user `slack_user` on the button `{deployment_id}:{nonce}`.
pub async fn approve(
    svc: &Services,
    deployment_id: &str,
    nonce: &str,
    slack_user: &str,
) -> Result<ClickOutcome, ServiceError> {
    let now = svc.now();
    let mut result: Option<Result<ApprovalOutcome, ApprovalRefused>> = None;
    let mut stale = false;
    // What blocks deploys at this moment, read only once a click may complete the quorum:
    // `None` until read.
    let mut blockers: Option<Option<String>> = None;
    let mut saved;
    loop {
        let mut needs_facts = false;
        saved = update_deployment(svc, deployment_id, |dep| {
            // Reset on every attempt: only the attempt that was saved (or refused) counts.
            result = None;
            needs_facts = false;
            stale = !nonce_matches(dep, nonce);
            if stale {
                return None;
            }
            let scoped = svc.policy.for_scope(&dep.repo, &dep.environment).ok();
            let facts = facts(svc, scoped.as_deref(), slack_user);
            // A break-glass request was asked for despite its blockers; any other completes
            // its quorum only if nothing blocks deploys now.
            let completes = dep.state == State::AwaitingApproval
                && dep.break_glass.is_none()
                && facts.approvers.iter().any(|a| a == slack_user)
                && dep.approval_count() + 1 >= dep.approvals_required.max(1);
            if completes && blockers.is_none() {
                needs_facts = true;
                return None;
            }
            let blocker = blockers.clone().flatten();
            match dep.record_approval_unless(slack_user, &facts, now, blocker.as_deref()) {
                Ok((outcome, mut events)) => {
                    if let (ApprovalOutcome::QuorumReached { .. }, Some(bg)) =
                        (&outcome, dep.break_glass.as_ref())
                    {
                        events.push(dep.note(
                            now,
                            &Actor::slack(slack_user),
                            "break_glass_approved",
                            bg.reason.clone(),
                        ));
                    }
                    result = Some(Ok(outcome));
                    Some(events)
                }
                Err(refusal) => {
                    result = Some(Err(refusal));
                    None
                }
            }
        })
        .await?;
        match (&saved, needs_facts) {
            (Some(dep), true) => blockers = Some(blocker_now(svc, dep, now).await?),
            _ => break,
        }
    }
    let (Some(dep), false) = (saved, stale) else {
        tracing::info!(deployment_id, slack_user, "stale approval button");
        return Ok(ClickOutcome::Stale);
    };
    let break_glass = dep.break_glass.is_some();
    match result {
        None => Ok(ClickOutcome::Stale),
        Some(Err(ApprovalRefused::AlreadyDecided {
            state: State::Approved,
        })) if dep.callback == CallbackState::Pending
            && dep
                .approvals
                .last()
                .is_some_and(|a| a.approver == slack_user) =>
        {
            // This clicker's approval completed the quorum, but the answer to that save was
            // lost and the click came back: finish it as the original click would have, or
            // no `approved` notification is ever published for it.
            tracing::info!(
                deployment_id,
                slack_user,
                "approval quorum was reached by this click before; finishing it"
            );
            svc.publish(Notification::deployment(now, &dep, "approved"))
                .await;
            let github = answer_within_budget(svc, &dep.id).await;
            Ok(ClickOutcome::Approved {
                environment: dep.environment.to_string(),
                short_sha: dep.short_sha().to_string(),
                approvers: dep.approvals.iter().map(|a| a.approver.clone()).collect(),
                break_glass,
                github,
            })
        }
        Some(Err(refusal)) => {
            tracing::info!(deployment_id, slack_user, refusal = %refusal, "approval not counted");
            Ok(ClickOutcome::Refused(refusal))
        }
        Some(Ok(ApprovalOutcome::Progress { have, need })) => {
            tracing::info!(deployment_id, slack_user, have, need, "approval recorded");
            svc.publish(Notification::deployment(now, &dep, "approval_progress"))
                .await;
            Ok(ClickOutcome::Progress {
                environment: dep.environment.to_string(),
                have,
                need,
                break_glass,
            })
        }
        Some(Ok(ApprovalOutcome::QuorumHeld { blocker, .. })) => {
            tracing::info!(
                deployment_id,
                slack_user,
                blocker,
                "approval quorum reached but held"
            );
            svc.publish(Notification::deployment(now, &dep, "approval_held"))
                .await;
            Ok(ClickOutcome::Held {
                environment: dep.environment.to_string(),
                blocker,
                expires_at: dep.approval_expires_at,
            })
        }
        Some(Ok(ApprovalOutcome::QuorumReached { approvers })) => {
            tracing::info!(
                deployment_id,
                slack_user,
                break_glass,
                "approval quorum reached"
            );
            svc.publish(Notification::deployment(now, &dep, "approved"))
                .await;
            let github = answer_within_budget(svc, &dep.id).await;
            Ok(ClickOutcome::Approved {
                environment: dep.environment.to_string(),
                short_sha: dep.short_sha().to_string(),
                approvers,
                break_glass,
                github,
            })
        }
    }
}

/// What blocks a deploy of `dep`'s scope at `now` among the rules that may change while a
/// request waits for its approvals — a freeze, the deploy window, a critical incident — as
/// the rule's own message; `None` when nothing does. Reads the open incidents (the scope's,
/// then the environment's) only when the policy blocks on them.
pub async fn blocker_now(
    svc: &Services,
    dep: &Deployment,
    now: jiff::Timestamp,
) -> Result<Option<String>, ServiceError> {
    use crate::domain::policy::{evaluate, GateFacts, GateKind, GateRequest, Rule};
    let Ok(effective) = svc.policy.for_scope(&dep.repo, &dep.environment) else {
        return Ok(None);
    };
    let open_critical_incidents = if effective.block_on_critical_incident {
        let scoped = svc.repo.scope_state(&dep.scope()).await?;
        let shared = svc.repo.open_incidents(dep.environment.as_str()).await?;
        crate::store::repo::critical_ids(scoped.open_incidents.into_iter().chain(shared))
    } else {
        Vec::new()
    };
    let facts = GateFacts {
        succeeded_in: Default::default(),
        open_critical_incidents,
        lock_holder: None,
    };
    let request = GateRequest {
        environment: dep.environment.to_string(),
        git_ref: dep.git_ref.clone(),
        sha: dep.sha.to_string(),
        requester_login: dep.requester.clone(),
        kind: GateKind::Deploy,
        break_glass_reason: None,
    };
    let decision = evaluate(&effective, &request, &facts, now);
    Ok(decision
        .checks()
        .iter()
        .find(|c| !c.passed && matches!(c.rule, Rule::Freeze | Rule::DeployWindow | Rule::Incident))
        .map(|c| c.detail.clone()))
}

/// A held approval whose blocker no longer holds goes out (the sweeper's step): approved,
/// announced, GitHub answered. `None` when it is still held, expired or was decided.
pub async fn release_held(
    svc: &Services,
    deployment_id: &str,
) -> Result<Option<Deployment>, ServiceError> {
    let now = svc.now();
    let Some(dep) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(None);
    };
    if !dep.approval_held() || dep.approval_expires_at.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    if blocker_now(svc, &dep, now).await?.is_some() {
        return Ok(None);
    }
    let mut moved = false;
    let saved = update_deployment(svc, deployment_id, |d| {
        moved = false;
        if !d.approval_held() {
            return None;
        }
        let approvers: Vec<String> = d.approvals.iter().map(|a| a.approver.clone()).collect();
        let why = format!(
            "approved by {}; the hold ({}) no longer applies",
            approvers.join(", "),
            d.reason.clone().unwrap_or_default()
        );
        let event = d
            .apply(
                crate::domain::deployment::Action::Approve,
                now,
                &Actor::system(),
                why,
            )
            .ok()?;
        d.reason = None;
        moved = true;
        Some(vec![event])
    })
    .await?;
    let Some(dep) = saved.filter(|_| moved) else {
        return Ok(None);
    };
    tracing::info!(
        deployment_id,
        "a held approval went out: nothing blocks it any more"
    );
    svc.publish(Notification::deployment(now, &dep, "approved"))
        .await;
    if let Err(e) = answer_github(svc, &dep.id).await {
        tracing::warn!(deployment_id, error = %e, "GitHub answer failed; the sweeper will retry");
    }
    Ok(Some(dep))
}

/// Records a Reject click. `reason` is the typed reason (from the reason dialog), if any; when
/// the environment requires one and none was given, the click changes nothing and the outcome
/// is [`ClickOutcome::ReasonRequired`] — but only for someone who may reject at all.
pub async fn reject(
    svc: &Services,
    deployment_id: &str,
    nonce: &str,
    slack_user: &str,
    reason: Option<&str>,
) -> Result<ClickOutcome, ServiceError> {
    let now = svc.now();
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let mut result: Option<Result<(), ApprovalRefused>> = None;
    let mut stale = false;
    let mut needs_reason = false;
    let saved = update_deployment(svc, deployment_id, |dep| {
        result = None;
        needs_reason = false;
        stale = !nonce_matches(dep, nonce);
        if stale {
            return None;
        }
        let scoped = svc.policy.for_scope(&dep.repo, &dep.environment).ok();
        let facts = facts(svc, scoped.as_deref(), slack_user);
        let required = scoped.as_ref().is_some_and(|e| e.require_reject_reason);
        if required && reason.is_none() {
            // Check on a copy that this person could reject, so the dialog only opens for
            // someone whose rejection would count.
            let mut probe = dep.clone();
            result = Some(
                probe
                    .record_rejection(slack_user, "", &facts, now)
                    .map(drop),
            );
            needs_reason = true;
            return None;
        }
        match dep.record_rejection(slack_user, reason.unwrap_or(""), &facts, now) {
            Ok(event) => {
                result = Some(Ok(()));
                Some(vec![event])
            }
            Err(refusal) => {
                result = Some(Err(refusal));
                None
            }
        }
    })
    .await?;
    let (Some(dep), false) = (saved, stale) else {
        tracing::info!(deployment_id, slack_user, "stale reject button");
        return Ok(ClickOutcome::Stale);
    };
    match result {
        None => Ok(ClickOutcome::Stale),
        Some(Err(refusal)) => {
            tracing::info!(deployment_id, slack_user, refusal = %refusal, "rejection not counted");
            Ok(ClickOutcome::Refused(refusal))
        }
        Some(Ok(())) if needs_reason => Ok(ClickOutcome::ReasonRequired {
            environment: dep.environment.to_string(),
        }),
        Some(Ok(())) => {
            tracing::info!(deployment_id, slack_user, "deployment rejected from Slack");
            svc.publish(Notification::deployment(now, &dep, "rejected"))
                .await;
            let github = answer_within_budget(svc, &dep.id).await;
            Ok(ClickOutcome::Rejected {
                environment: dep.environment.to_string(),
                short_sha: dep.short_sha().to_string(),
                reason: reason.map(str::to_string),
                github,
            })
        }
    }
}

/// A "Roll back" click on a deployment's message: the same path as `shipgate rollback ENV`
/// ([`rollback::start_manual`]), with the same rules. Only the environment's current
/// deployment can be rolled back; where the environment requires approvals the click opens a
/// rollback request, or counts the clicker's approval when one is open already.
pub async fn request_rollback(
    svc: &Services,
    deployment_id: &str,
    nonce: &str,
    slack_user: &str,
) -> Result<ClickOutcome, ServiceError> {
    let Some(dep) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(ClickOutcome::Stale);
    };
    if !nonce_matches(&dep, nonce) {
        return Ok(ClickOutcome::Stale);
    }
    let environment = dep.environment.to_string();
    // Who may ask, and whether the clicked deployment is still what runs, are judged by the
    // rollback itself on the read it acts on.
    let outcome = rollback::start_from_slack(svc, &dep.scope(), slack_user, &dep.id).await?;
    tracing::info!(
        deployment_id,
        slack_user,
        outcome = outcome.as_str(),
        "rollback requested from Slack"
    );
    Ok(rollback_click(environment, outcome))
}

/// An "Approve rollback" click on the open rollback request whose buttons carry `nonce`.
pub async fn approve_rollback(
    svc: &Services,
    deployment_id: &str,
    nonce: &str,
    slack_user: &str,
) -> Result<ClickOutcome, ServiceError> {
    let outcome = rollback::approve_request(svc, deployment_id, nonce, slack_user).await?;
    request_click(
        svc,
        deployment_id,
        slack_user,
        outcome,
        "rollback approval from Slack",
    )
    .await
}

/// A "Cancel rollback" click on the open rollback request whose buttons carry `nonce`.
pub async fn cancel_rollback(
    svc: &Services,
    deployment_id: &str,
    nonce: &str,
    slack_user: &str,
) -> Result<ClickOutcome, ServiceError> {
    let outcome = rollback::cancel_request(svc, deployment_id, nonce, slack_user).await?;
    request_click(
        svc,
        deployment_id,
        slack_user,
        outcome,
        "rollback cancellation from Slack",
    )
    .await
}

/// Logs what a click on a rollback request's buttons did and words it for the clicker.
async fn request_click(
    svc: &Services,
    deployment_id: &str,
    slack_user: &str,
    outcome: RollbackOutcome,
    what: &'static str,
) -> Result<ClickOutcome, ServiceError> {
    tracing::info!(
        deployment_id,
        slack_user,
        outcome = outcome.as_str(),
        "{what}"
    );
    Ok(rollback_click(
        environment_of(svc, deployment_id).await?,
        outcome,
    ))
}

async fn environment_of(svc: &Services, deployment_id: &str) -> Result<String, ServiceError> {
    Ok(svc
        .repo
        .get_deployment(deployment_id)
        .await?
        .map(|d| d.environment.into())
        .unwrap_or_default())
}

/// What the clicker is told about a rollback outcome.
fn rollback_click(environment: String, outcome: RollbackOutcome) -> ClickOutcome {
    let message = match outcome {
        RollbackOutcome::StaleButton => return ClickOutcome::Stale,
        RollbackOutcome::Started { target_sha, .. } => {
            format!("Rolling back {environment} to {}.", short_sha(&target_sha))
        }
        RollbackOutcome::Failed { target_sha, error, .. } => format!(
            "Rolling back {environment} to {}, but GitHub did not accept it yet ({error}); shipgate retries.",
            short_sha(&target_sha)
        ),
        RollbackOutcome::AlreadyRollingBack { .. } => {
            format!("{environment} is already rolling back.")
        }
        RollbackOutcome::NoLastKnownGood { .. } => {
            format!("Not rolled back: {environment} has no earlier good version.")
        }
        RollbackOutcome::Refused { reason } => format!("Not rolled back: {reason}."),
        RollbackOutcome::Skipped(_) => format!("Not rolled back: nothing to do in {environment}."),
        RollbackOutcome::AwaitingApprovals {
            target_sha,
            have,
            need,
            expires_at,
            opened: true,
            ..
        } => format!(
            "Rollback of {environment} to {} requested: {have} of {need} approvals so far; the request expires at {expires_at}.",
            short_sha(&target_sha)
        ),
        RollbackOutcome::AwaitingApprovals {
            target_sha,
            have,
            need,
            expires_at,
            ..
        } => format!(
            "A rollback of {environment} to {} is already requested: {have} of {need} approvals; the request expires at {expires_at}.",
            short_sha(&target_sha)
        ),
        RollbackOutcome::ApprovalRecorded { have, need, .. } => {
            format!("Rollback approval recorded for {environment}: {have} of {need}.")
        }
        RollbackOutcome::NotCounted { refusal, .. } => format!("Not counted: {refusal}."),
        RollbackOutcome::RequestCancelled { .. } => {
            format!("Rollback request for {environment} cancelled; nothing was rolled back.")
        }
    };
    ClickOutcome::Rollback {
        environment,
        message,
    }
}
