//! The deployment gate: GitHub's `deployment_protection_rule` request in, a decision out.
//!
//! A request becomes a deployment record in one of three states — approved (policy needs no
//! humans), awaiting_approval (the notifier posts the Slack request), or rejected (the comment
//! names the rule). Approved and awaiting records take the environment lock in the same
//! transaction that creates them, so of many concurrent requests for one environment exactly
//! one proceeds; the others are rejected with the holder's id.

use std::time::Duration;

use jiff::Timestamp;

use super::answer::answer_github;
use super::{ServiceError, Services};
use crate::domain::deployment::{
    Action, Actor, AuditEvent, BreakGlass, CallbackState, Deployment, DeploymentKind, State,
};
use crate::domain::ids::{DeploymentId, EnvName};
use crate::domain::policy::{evaluate_in_scope, Decision, GateFacts, GateKind, GateRequest};
use crate::domain::scope::Scope;
use crate::domain::time::add;
use crate::notify::Notification;
use crate::outbound::github::ReviewState;
use crate::service::lifecycle::close_if_ended;
use crate::store::repo::{critical_ids, ScopeState};
use crate::store::Created;

pub use crate::domain::events::ProtectionRuleRequest;

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    Approved {
        deployment_id: String,
    },
    AwaitingApproval {
        deployment_id: String,
        required: u32,
    },
    Rejected {
        deployment_id: String,
        message: String,
    },
    /// This run was already gated (a redelivery); the earlier decision stands.
    AlreadyGated {
        deployment_id: String,
        state: State,
    },
}

fn new_deployment(req: &ProtectionRuleRequest, now: Timestamp) -> Deployment {
    Deployment {
        id: DeploymentId::new().into(),
        repo: req.repo.clone(),
        environment: req.environment.clone(),
        git_ref: req.git_ref.clone(),
        sha: req.sha.clone(),
        requester: req.requester.clone(),
        kind: DeploymentKind::Deploy,
        state: State::Requested,
        version: 0,
        created_at: now,
        updated_at: now,
        run_id: Some(req.run_id),
        installation_id: req.installation_id,
        github_deployment_id: None,
        approvals_required: 0,
        approvals: Vec::new(),
        approval_expires_at: None,
        verify_until: None,
        deploy_started_at: None,
        finished_at: None,
        break_glass: None,
        rollback: None,
        reason: None,
        callback: CallbackState::Pending,
        slack: None,
        button_nonce: Some(uuid::Uuid::new_v4().simple().to_string()),
        checks: Vec::new(),
        rollback_request: None,
    }
}

/// Turns a decision into a deployment record (not yet stored) and its audit events.
fn decide(
    svc: &Services,
    req: &ProtectionRuleRequest,
    decision: Decision,
    now: Timestamp,
) -> (Deployment, Vec<AuditEvent>) {
    let mut dep = new_deployment(req, now);
    let actor = Actor::github(&req.requester);
    let mut events = vec![dep.note(
        now,
        &actor,
        "requested",
        format!(
            "{} {} ({}) via {}",
            req.repo,
            req.git_ref,
            dep.short_sha(),
            req.event
        ),
    )];
    let system = Actor::system();
    let applied = match decision {
        Decision::Approve { checks } => {
            dep.checks = checks
                .iter()
                .filter(|c| c.passed)
                .map(|c| c.detail.clone())
                .collect();
            dep.apply(
                Action::AutoApprove,
                now,
                &system,
                "policy needs no approvals",
            )
        }
        Decision::NeedsApproval {
            required,
            break_glass,
            checks,
        } => {
            dep.checks = checks
                .iter()
                .filter(|c| c.passed)
                .map(|c| c.detail.clone())
                .collect();
            dep.approvals_required = required;
            let ttl = svc
                .policy
                .for_scope(&req.repo, &req.environment)
                .map(|e| e.approval_ttl)
                .ok()
                .unwrap_or(Duration::from_secs(4 * 3600));
            dep.approval_expires_at = Some(add(now, ttl));
            if break_glass {
                dep.break_glass = Some(BreakGlass {
                    reason: req.break_glass_reason.clone().unwrap_or_default(),
                    requested_by: req.requester.clone(),
                });
            }
            let why = if break_glass {
                format!("break-glass: needs {required} approvals")
            } else {
                format!("needs {required} approvals")
            };
            dep.apply(Action::RequestApproval, now, &system, why)
        }
        Decision::Reject {
            message, checks, ..
        } => {
            dep.checks = checks
                .iter()
                .filter(|c| c.passed)
                .map(|c| c.detail.clone())
                .collect();
            dep.reason = Some(message.clone());
            dep.apply(Action::Reject, now, &system, message)
        }
    };
    // Requested → approved/awaiting/rejected are always legal moves.
    if let Ok(event) = applied {
        events.push(event);
    }
    (dep, events)
}

/// Gates one protection-rule request.
pub async fn request(
    svc: &Services,
    req: &ProtectionRuleRequest,
) -> Result<GateOutcome, ServiceError> {
    let now = svc.now();
    let existing = svc
        .repo
        .deployment_for_run(req.run_id, req.environment.as_str())
        .await?;
    // GitHub asks once per run attempt, and a re-run keeps the run id. A request for a run
    // whose answered deployment has finished (rejected, expired, failed...) is therefore a
    // re-run: gate it afresh, or the re-run waits for an answer that never comes.
    let rerun = existing
        .as_ref()
        .is_some_and(|d| d.callback == CallbackState::Answered && !d.state.holds_lock());
    if let Some(existing) = existing.filter(|_| !rerun) {
        // A second request for the same run and environment: answer again if GitHub never
        // got our answer, never decide twice.
        let state = existing.state;
        if state == State::AwaitingApproval && existing.slack.is_none() {
            // The request that stored this decision may have failed before announcing it
            // (its answer from the store was lost): without this no Slack message with the
            // buttons is ever posted. A repeat is harmless, since the notifier posts one
            // message per deployment and updates it in place.
            svc.publish(Notification::deployment(
                now,
                &existing,
                "approval_requested",
            ))
            .await;
        }
        if existing.callback == CallbackState::Pending {
            answer_github(svc, &existing.id).await?;
        }
        return Ok(GateOutcome::AlreadyGated {
            deployment_id: existing.id,
            state,
        });
    }

    if let Some(outcome) = admit_rollback_run(svc, req, now).await? {
        return Ok(outcome);
    }

    let gate_request = GateRequest {
        environment: req.environment.to_string(),
        git_ref: req.git_ref.clone(),
        sha: req.sha.to_string(),
        requester_login: req.requester.clone(),
        kind: GateKind::Deploy,
        break_glass_reason: req.break_glass_reason.clone(),
    };
    // The scope's partition holds its lock and its repository's own open incidents; the
    // environment's partition the environment-level incidents, which block every repository.
    let scope = Scope::new(req.repo.clone(), req.environment.clone());
    let mut scoped = svc.repo.scope_state(&scope).await?;
    close_ended_holder(svc, &mut scoped, now).await?;
    let shared = svc.repo.open_incidents(req.environment.as_str()).await?;
    let mut succeeded_in = svc
        .repo
        .succeeded_in(req.repo.as_str(), req.sha.as_str())
        .await?;
    close_ended_promotions(svc, req, &mut succeeded_in, now).await?;
    let facts = GateFacts {
        succeeded_in,
        open_critical_incidents: critical_ids(scoped.open_incidents.into_iter().chain(shared)),
        lock_holder: scoped.lock_holder,
    };
    let mut decision = evaluate_in_scope(&svc.policy, &req.repo, &gate_request, &facts, now);
    let mut req = req.clone();
    if let Some(reason) = break_glass_request(svc, &req, &decision).await {
        req.break_glass_reason = Some(reason.clone());
        let gate_request = GateRequest {
            break_glass_reason: Some(reason),
            ..gate_request
        };
        decision = evaluate_in_scope(&svc.policy, &req.repo, &gate_request, &facts, now);
    }
    let req = &req;
    let (mut dep, events) = decide(svc, req, decision, now);

    let created = svc.repo.create_deployment(&mut dep, &events, now).await?;
    if let Created::Locked { holder } = created {
        // Lost the race for the lock after the facts were read: same answer as if the lock
        // had been seen held.
        // Same wording as the policy's lock rule; the holder may already have finished
        // between the failed write and this read.
        let holder = if holder.is_empty() {
            "another deployment".to_string()
        } else {
            format!("deployment {holder}")
        };
        let message = format!(
            "{} is locked by {holder}; wait for it to finish",
            req.environment
        );
        let decision = Decision::Reject {
            rule: crate::domain::policy::Rule::Lock,
            message,
            checks: Vec::new(),
        };
        let (rejected, events) = decide(svc, req, decision, now);
        dep = rejected;
        svc.repo.create_deployment(&mut dep, &events, now).await?;
    }

    tracing::info!(deployment_id = %dep.id, environment = %dep.environment, state = %dep.state, "gated deployment request");
    let outcome = match dep.state {
        State::Approved => GateOutcome::Approved {
            deployment_id: dep.id.clone(),
        },
        State::AwaitingApproval => GateOutcome::AwaitingApproval {
            deployment_id: dep.id.clone(),
            required: dep.approvals_required,
        },
        _ => GateOutcome::Rejected {
            deployment_id: dep.id.clone(),
            message: dep.reason.clone().unwrap_or_default(),
        },
    };
    let event = match dep.state {
        State::AwaitingApproval => "approval_requested",
        State::Approved => "approved",
        _ => "rejected",
    };
    svc.publish(Notification::deployment(now, &dep, event))
        .await;

    // The decision is stored; a failed answer is left pending for the sweeper to retry, and
    // must not make GitHub redeliver (which would only find the stored decision).
    if let Err(e) = answer_github(svc, &dep.id).await {
        tracing::warn!(deployment_id = %dep.id, error = %e, "GitHub answer failed; the sweeper will retry");
    }
    Ok(outcome)
}

/// With `rollback.method = "workflow"`, shipgate dispatches the rollback workflow, whose job
/// then reaches the environment's protection rule while the deployment it rolls back still
/// holds the lock. The run is recognised by that lock holder rolling back to exactly this
/// sha in this repository, and admitted as the rollback: it is linked to the rolling-back
/// deployment (so its deployment statuses finish the rollback) and approved at once.
async fn admit_rollback_run(
    svc: &Services,
    req: &ProtectionRuleRequest,
    now: Timestamp,
) -> Result<Option<GateOutcome>, ServiceError> {
    let scope = Scope::new(req.repo.clone(), req.environment.clone());
    let Some(holder) = svc.repo.lock_holder(&scope).await? else {
        return Ok(None);
    };
    let Some(dep) = svc.repo.get_deployment(&holder).await? else {
        return Ok(None);
    };
    let rolls_back_to_this = dep.state == State::RollingBack
        && dep.repo == req.repo
        && dep
            .rollback
            .as_ref()
            .is_some_and(|r| r.target_sha == req.sha);
    if !rolls_back_to_this {
        return Ok(None);
    }
    svc.repo
        .link_run(req.run_id, req.environment.as_str(), &dep.id)
        .await?;
    let why = format!(
        "workflow run {} deploys the rollback target {}",
        req.run_id,
        req.sha.short()
    );
    svc.repo
        .append_audit(&[dep.note(
            now,
            &Actor::github(&req.requester),
            "rollback_run_admitted",
            why,
        )])
        .await?;
    if let (Some(github), Some(installation_id)) = (svc.github.as_ref(), req.installation_id) {
        let comment = format!(
            "shipgate approved this run: it rolls {} back to {} (deployment {})",
            req.environment,
            req.sha.short(),
            dep.id
        );
        github
            .review_protection_rule(
                installation_id,
                req.repo.as_str(),
                req.run_id,
                req.environment.as_str(),
                ReviewState::Approved,
                &comment,
            )
            .await?;
    }
    Ok(Some(GateOutcome::Approved {
        deployment_id: dep.id,
    }))
}

/// The break-glass reason a run asks for in its title (`run-name`), e.g.
/// `Deploy api [break-glass: INC-42 payment outage hotfix]`. `None` when there is none.
pub fn break_glass_reason_in(title: &str) -> Option<String> {
    let lower = title.to_ascii_lowercase();
    let at = ["break-glass:", "break glass:", "breakglass:"]
        .iter()
        .find_map(|marker| lower.find(marker).map(|i| i + marker.len()))?;
    let rest = title.get(at..)?;
    let reason = rest.split(']').next().unwrap_or(rest).trim();
    (!reason.is_empty()).then(|| reason.to_string())
}

/// A window that has ended is over: when the scope's lock holder is the deployment its
/// heads say is verifying and that window has ended, close it now (the sweeper's own step)
/// instead of refusing the request as locked until the next sweep. The head comes with the
/// scope's partition, which the gate reads anyway, so a lock whose window is still open, or
/// a free scope, costs no extra read.
async fn close_ended_holder(
    svc: &Services,
    scoped: &mut ScopeState,
    now: Timestamp,
) -> Result<(), ServiceError> {
    let (Some(holder), Some(current)) = (&scoped.lock_holder, &scoped.current) else {
        return Ok(());
    };
    if current.deployment_id != *holder {
        return Ok(());
    }
    if let Some(state) = close_if_ended(svc, current, now).await? {
        if !state.holds_lock() {
            tracing::info!(deployment_id = %holder, "closed a verification window that had ended");
            scoped.lock_holder = None;
        }
    }
    Ok(())
}

/// Promotion sees a window that has ended as passed: for each environment the policy wants
/// this sha to have succeeded in and where it has not yet, read that scope's heads (only
/// then: a request whose promotion is satisfied pays nothing); when the sha is the one
/// verifying there and its window has ended, close it now and count it as succeeded.
async fn close_ended_promotions(
    svc: &Services,
    req: &ProtectionRuleRequest,
    succeeded_in: &mut std::collections::BTreeSet<String>,
    now: Timestamp,
) -> Result<(), ServiceError> {
    let Ok(effective) = svc.policy.for_scope(&req.repo, &req.environment) else {
        return Ok(());
    };
    for from in &effective.promotion_from {
        if succeeded_in.contains(from) {
            continue;
        }
        let Ok(env) = EnvName::parse(from) else {
            continue;
        };
        let heads = svc.repo.heads(&Scope::new(req.repo.clone(), env)).await?;
        let Some(current) = heads.current.filter(|h| h.sha == req.sha.as_str()) else {
            continue;
        };
        if close_if_ended(svc, &current, now).await? == Some(State::Succeeded) {
            tracing::info!(deployment_id = %current.deployment_id, environment = %from, "closed a verification window that had ended");
            succeeded_in.insert(from.clone());
        }
    }
    Ok(())
}

/// When a request was blocked by a rule break-glass can override (freeze, deploy window,
/// open incident) in an environment that allows it, asks GitHub for the run's title and
/// returns the break-glass reason found there. Only blocked requests pay for the call, and
/// a failure to ask leaves the rejection standing.
async fn break_glass_request(
    svc: &Services,
    req: &ProtectionRuleRequest,
    decision: &Decision,
) -> Option<String> {
    use crate::domain::policy::Rule;
    if req.break_glass_reason.is_some() {
        return None;
    }
    let Decision::Reject { rule, .. } = decision else {
        return None;
    };
    if !matches!(rule, Rule::Freeze | Rule::DeployWindow | Rule::Incident) {
        return None;
    }
    if !svc
        .policy
        .for_scope(&req.repo, &req.environment)
        .ok()?
        .break_glass
        .allowed
    {
        return None;
    }
    let (github, installation_id) = (svc.github.as_ref()?, req.installation_id?);
    match github
        .run_title(installation_id, req.repo.as_str(), req.run_id)
        .await
    {
        Ok(title) => break_glass_reason_in(&title),
        Err(e) => {
            tracing::warn!(run_id = req.run_id, error = %e, "could not read the run title for break-glass");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::break_glass_reason_in;

    #[test]
    fn break_glass_reasons_are_read_from_run_titles() {
        let cases = [
            (
                "Deploy api [break-glass: INC-42 payment outage]",
                Some("INC-42 payment outage"),
            ),
            (
                "Deploy api Break-Glass:  hotfix for login ",
                Some("hotfix for login"),
            ),
            ("deploy [break glass: db failover]", Some("db failover")),
            ("Deploy api [break-glass: ]", None),
            ("Deploy api", None),
            ("break-glass without colon", None),
        ];
        for (title, want) in cases {
            assert_eq!(break_glass_reason_in(title).as_deref(), want, "{title}");
        }
    }
}
