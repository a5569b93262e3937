//! The deployment gate: GitHub's `deployment_protection_rule` request in, a decision out.
//!
//! A request becomes a deployment record in one of four states — approved (policy needs no
//! humans), awaiting_approval (the notifier posts the Slack request), rejected (the comment
//! names the rule), or queued (its scope is locked; see [`super::queue`]). Approved and
//! awaiting records take the scope's lock in the same transaction that creates them, so of
//! many concurrent requests for one scope exactly one proceeds; the others join the queue.

use std::time::Duration;

use jiff::Timestamp;

use super::answer::answer_github;
use super::{queue, ServiceError, Services};
use crate::domain::deployment::{
    Action, Actor, AuditEvent, BreakGlass, CallbackState, Deployment, DeploymentKind, QueueTicket,
    State,
};
use crate::domain::ids::{DeploymentId, EnvName, Sha};
use crate::domain::policy::{evaluate_in_scope, Decision, GateFacts, GateKind, GateRequest};
use crate::domain::scope::Scope;
use crate::domain::time::add;
use crate::notify::{Notification, QueueSpot};
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
    /// The scope is locked: the request waits in its queue, `position` 1 being next.
    Queued {
        deployment_id: String,
        position: u32,
        behind: String,
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
        queued: None,
        left_queue: false,
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
    events.extend(apply_decision(
        svc,
        &mut dep,
        decision,
        req.break_glass_reason.as_deref(),
        now,
    ));
    (dep, events)
}

/// Moves a requested or queued deployment by a policy decision; returns the audit event.
fn apply_decision(
    svc: &Services,
    dep: &mut Deployment,
    decision: Decision,
    break_glass_reason: Option<&str>,
    now: Timestamp,
) -> Option<AuditEvent> {
    let system = Actor::system();
    let passed = |checks: &[crate::domain::policy::Check]| {
        checks
            .iter()
            .filter(|c| c.passed)
            .map(|c| c.detail.clone())
            .collect::<Vec<_>>()
    };
    let applied = match decision {
        Decision::Approve { checks } => {
            dep.checks = passed(&checks);
            dep.break_glass = None;
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
            dep.checks = passed(&checks);
            dep.approvals_required = required;
            let ttl = svc
                .policy
                .for_scope(&dep.repo, &dep.environment)
                .map(|e| e.approval_ttl)
                .ok()
                .unwrap_or(Duration::from_secs(4 * 3600));
            dep.approval_expires_at = Some(add(now, ttl));
            dep.break_glass = break_glass.then(|| BreakGlass {
                reason: break_glass_reason.unwrap_or_default().to_string(),
                requested_by: dep.requester.clone(),
            });
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
            dep.checks = passed(&checks);
            dep.reason = Some(message.clone());
            dep.apply(Action::Reject, now, &system, message)
        }
    };
    // Requested or queued → approved/awaiting/rejected are always legal moves.
    applied.ok()
}

/// Gates one protection-rule request.
pub async fn request(
    svc: &Services,
    req: &ProtectionRuleRequest,
) -> Result<GateOutcome, ServiceError> {
    let now = svc.now();
    let (existing, pointer_version) = match svc
        .repo
        .run_pointer(req.run_id, req.environment.as_str())
        .await?
    {
        Some((dep, version)) => (Some(dep), Some(version)),
        None => (None, None),
    };
    // GitHub asks once per run attempt, and a re-run keeps the run id. A request for a run
    // whose deployment has finished and needs no answer (answered, or withdrawn when the run
    // was cancelled) is therefore a re-run: gate it afresh, or the re-run waits for an
    // answer that never comes.
    let rerun = existing
        .as_ref()
        .is_some_and(|d| d.callback != CallbackState::Pending && !d.state.is_open());
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

    // The scope's partition holds its lock, its queue and its repository's own open
    // incidents; the environment's partition the environment-level incidents, which block
    // every repository.
    let scope = Scope::new(req.repo.clone(), req.environment.clone());
    let mut scoped = svc.repo.scope_state(&scope).await?;
    close_ended_holder(svc, &scope, &mut scoped, now).await?;
    let incidents = std::mem::take(&mut scoped.open_incidents);
    let mut facts = gate_facts(svc, &scope, &req.sha, incidents, now).await?;
    let mut req = req.clone();
    let mut decision = evaluate_request(svc, &req, &facts, now);
    if let Some(reason) = break_glass_request(
        svc,
        &scope,
        Some(req.run_id),
        req.installation_id,
        req.break_glass_reason.as_deref(),
        &decision,
    )
    .await
    {
        req.break_glass_reason = Some(reason);
        decision = evaluate_request(svc, &req, &facts, now);
    }
    let req = &req;
    let queue_wait = svc
        .policy
        .for_scope(&req.repo, &req.environment)
        .map(|e| e.queue_wait)
        .unwrap_or_default();
    // The lock is left out of the facts: a request that passes every other rule waits for
    // it behind those already waiting, unless the queue is off.
    let ahead = scoped
        .lock_holder
        .clone()
        .or_else(|| scoped.queue.first().map(|e| e.deployment_id.clone()));
    if let Some(ahead) = ahead.filter(|_| !matches!(decision, Decision::Reject { .. })) {
        if !queue_wait.is_zero() {
            return enqueue(svc, req, &scoped, ahead, queue_wait, pointer_version, now).await;
        }
        facts.lock_holder = Some(ahead);
        decision = evaluate_request(svc, req, &facts, now);
    }
    let goes_ahead = !matches!(decision, Decision::Reject { .. });
    let (mut dep, events) = decide(svc, req, decision, now);

    let created = svc
        .repo
        .create_gated(&mut dep, &events, now, pointer_version)
        .await?;
    if created == Created::RunTaken {
        return gated_meanwhile(svc, req).await;
    }
    if let Created::Locked { holder } = created {
        // Lost the race for the lock after the facts were read: wait behind the winner, or,
        // with the queue off, the same answer as if the lock had been seen held.
        if goes_ahead && !queue_wait.is_zero() {
            let scoped = svc.repo.scope_state(&scope).await?;
            let ahead = scoped.lock_holder.clone().unwrap_or(holder);
            return enqueue(svc, req, &scoped, ahead, queue_wait, pointer_version, now).await;
        }
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
        if svc
            .repo
            .create_gated(&mut dep, &events, now, pointer_version)
            .await?
            == Created::RunTaken
        {
            return gated_meanwhile(svc, req).await;
        }
    }

    tracing::info!(deployment_id = %dep.id, environment = %dep.environment, state = %dep.state, "gated deployment request");
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
    Ok(outcome_of(&dep, 0))
}

/// Another request for the same run and environment created its deployment between our read
/// of the run and our write: that one is the run's, and it answers GitHub.
async fn gated_meanwhile(
    svc: &Services,
    req: &ProtectionRuleRequest,
) -> Result<GateOutcome, ServiceError> {
    match svc
        .repo
        .deployment_for_run(req.run_id, req.environment.as_str())
        .await?
    {
        Some(dep) => {
            tracing::info!(deployment_id = %dep.id, run_id = req.run_id, "a concurrent request gated this run first");
            Ok(GateOutcome::AlreadyGated {
                deployment_id: dep.id,
                state: dep.state,
            })
        }
        None => Err(ServiceError::Contended(format!(
            "the pointer of run {} in {}",
            req.run_id, req.environment
        ))),
    }
}

fn evaluate_request(
    svc: &Services,
    req: &ProtectionRuleRequest,
    facts: &GateFacts,
    now: Timestamp,
) -> Decision {
    let gate_request = GateRequest {
        environment: req.environment.to_string(),
        git_ref: req.git_ref.clone(),
        sha: req.sha.to_string(),
        requester_login: req.requester.clone(),
        kind: GateKind::Deploy,
        break_glass_reason: req.break_glass_reason.clone(),
    };
    evaluate_in_scope(&svc.policy, &req.repo, &gate_request, facts, now)
}

fn outcome_of(dep: &Deployment, position: u32) -> GateOutcome {
    match dep.state {
        State::Approved => GateOutcome::Approved {
            deployment_id: dep.id.clone(),
        },
        State::AwaitingApproval => GateOutcome::AwaitingApproval {
            deployment_id: dep.id.clone(),
            required: dep.approvals_required,
        },
        State::Queued => GateOutcome::Queued {
            deployment_id: dep.id.clone(),
            position,
            behind: dep
                .queued
                .as_ref()
                .map(|t| t.behind.clone())
                .unwrap_or_default(),
        },
        _ => GateOutcome::Rejected {
            deployment_id: dep.id.clone(),
            message: dep.reason.clone().unwrap_or_default(),
        },
    }
}

/// Puts a request that passed every rule but the lock in its scope's queue, behind `ahead`
/// (the lock holder, or the first in line). Older waiting requests for the same ref are
/// superseded first.
#[allow(clippy::too_many_arguments)]
async fn enqueue(
    svc: &Services,
    req: &ProtectionRuleRequest,
    scoped: &ScopeState,
    ahead: String,
    wait: Duration,
    pointer_version: Option<u64>,
    now: Timestamp,
) -> Result<GateOutcome, ServiceError> {
    let mut waiting = 0u32;
    for entry in &scoped.queue {
        if entry.git_ref == req.git_ref && entry.run_id != Some(req.run_id) {
            let why = queue::superseded_by(Some(req.run_id), &req.git_ref, &req.sha);
            let superseded = queue::leave(svc, &entry.deployment_id, now, Action::Reject, |_| {
                why.clone()
            })
            .await?;
            if superseded.is_some() {
                continue;
            }
        }
        waiting += 1;
    }
    let mut dep = new_deployment(req, now);
    dep.queued = Some(QueueTicket {
        since: now,
        until: add(now, wait),
        behind: ahead.clone(),
    });
    // Kept so the decision taken when it leaves the queue can use it.
    dep.break_glass = req.break_glass_reason.as_ref().map(|reason| BreakGlass {
        reason: reason.clone(),
        requested_by: req.requester.clone(),
    });
    let mut events = vec![dep.note(
        now,
        &Actor::github(&req.requester),
        "requested",
        format!(
            "{} {} ({}) via {}",
            req.repo,
            req.git_ref,
            dep.short_sha(),
            req.event
        ),
    )];
    let why = format!(
        "{} is locked: waits behind deployment {ahead} for up to {}",
        req.environment,
        crate::domain::policy::format_duration(wait)
    );
    events.extend(dep.apply(Action::Queue, now, &Actor::system(), why).ok());
    if svc
        .repo
        .create_gated(&mut dep, &events, now, pointer_version)
        .await?
        == Created::RunTaken
    {
        return gated_meanwhile(svc, req).await;
    }
    let position = waiting + 1;
    tracing::info!(deployment_id = %dep.id, scope = %dep.scope(), position, behind = %ahead, "queued deployment request");
    svc.publish(Notification::queued(
        now,
        &dep,
        QueueSpot {
            position,
            behind: ahead,
            until: add(now, wait),
        },
    ))
    .await;
    if let Err(e) = answer_github(svc, &dep.id).await {
        tracing::warn!(deployment_id = %dep.id, error = %e, "could not tell GitHub the request is queued");
    }
    // The deployment ahead may have finished while this request was queueing: its release
    // read the scope before this entry existed and so did not serve it. One read of the lock
    // tells; a free lock is served now (this request last among those waiting).
    let free = scoped.lock_holder.is_none() || svc.repo.lock_holder(&dep.scope()).await?.is_none();
    if free {
        if let Err(e) = queue::advance(svc, &dep.scope()).await {
            tracing::warn!(scope = %dep.scope(), error = %e, "could not advance the queue; the sweeper will");
        }
        if let Some(now_dep) = svc.repo.get_deployment(&dep.id).await? {
            return Ok(outcome_of(&now_dep, position));
        }
    }
    Ok(outcome_of(&dep, position))
}

/// The facts a decision on a request of `scope` for `sha` reads, except the lock (see
/// [`request`]): `scope_incidents` come from the scope's partition, read by the caller.
pub(crate) async fn gate_facts(
    svc: &Services,
    scope: &Scope,
    sha: &Sha,
    scope_incidents: Vec<crate::domain::incident::OpenIncident>,
    now: Timestamp,
) -> Result<GateFacts, ServiceError> {
    let shared = svc.repo.open_incidents(scope.environment.as_str()).await?;
    let mut succeeded_in = svc
        .repo
        .succeeded_in(scope.repo.as_str(), sha.as_str())
        .await?;
    close_ended_promotions(svc, scope, sha, &mut succeeded_in, now).await?;
    Ok(GateFacts {
        succeeded_in,
        open_critical_incidents: critical_ids(scope_incidents.into_iter().chain(shared)),
        lock_holder: None,
    })
}

/// Decides a queued deployment whose turn has come, as the gate decides a fresh request
/// (the lock is free: the caller takes it with the save).
pub(crate) async fn decide_queued(
    svc: &Services,
    mut dep: Deployment,
    facts: GateFacts,
    now: Timestamp,
) -> (Deployment, Vec<AuditEvent>) {
    let mut reason = dep.break_glass.as_ref().map(|b| b.reason.clone());
    let gate_request = |reason: Option<String>| GateRequest {
        environment: dep.environment.to_string(),
        git_ref: dep.git_ref.clone(),
        sha: dep.sha.to_string(),
        requester_login: dep.requester.clone(),
        kind: GateKind::Deploy,
        break_glass_reason: reason,
    };
    let mut decision = evaluate_in_scope(
        &svc.policy,
        &dep.repo,
        &gate_request(reason.clone()),
        &facts,
        now,
    );
    if let Some(found) = break_glass_request(
        svc,
        &dep.scope(),
        dep.run_id,
        dep.installation_id,
        reason.as_deref(),
        &decision,
    )
    .await
    {
        reason = Some(found);
        decision = evaluate_in_scope(
            &svc.policy,
            &dep.repo,
            &gate_request(reason.clone()),
            &facts,
            now,
        );
    }
    let event = apply_decision(svc, &mut dep, decision, reason.as_deref(), now);
    (dep, event.into_iter().collect())
}

/// With `rollback.method = "workflow"`, shipgate dispatches the rollback workflow, whose job
/// then reaches the environment's protection rule while the deployment it rolls back still
/// holds the lock. The run is recognised as that lock holder's rollback (see
/// [`is_rollback_run`]), and admitted as the rollback: it is linked to the rolling-back
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
    if dep.state != State::RollingBack || dep.repo != req.repo {
        return Ok(None);
    }
    if !is_rollback_run(svc, &dep, req).await? {
        return Ok(None);
    }
    // One answer per run: of two requests for the rollback run arriving together, the one
    // that links it answers; the other finds it gated.
    if !svc
        .repo
        .link_run_once(req.run_id, req.environment.as_str(), &dep.id)
        .await?
    {
        return Ok(Some(GateOutcome::AlreadyGated {
            deployment_id: dep.id,
            state: dep.state,
        }));
    }
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

/// Is `req` the run of the rollback workflow dispatched for `dep` (rolling back, holding the
/// lock)? A dispatched workflow runs at the head of the branch it was dispatched on, so its
/// sha is the rollback target only when that head is; the run is known by the id GitHub
/// returned for the dispatch, or, where GitHub returns none (older GitHub Enterprise Server),
/// by the marker its `run-name` carries from the `reason` input. Only a request arriving
/// while its scope is rolling back pays the read of the dispatch record (and, in the marker
/// case, one GitHub call).
async fn is_rollback_run(
    svc: &Services,
    dep: &Deployment,
    req: &ProtectionRuleRequest,
) -> Result<bool, ServiceError> {
    use crate::service::rollback::{rollback_marker, Dispatch, DISPATCH_META};
    if dep
        .rollback
        .as_ref()
        .is_some_and(|r| r.target_sha == req.sha)
    {
        return Ok(true);
    }
    let Some(dispatch) = svc
        .repo
        .get_meta::<Dispatch>(DISPATCH_META, &dep.id)
        .await?
    else {
        return Ok(false);
    };
    if let Some(run_id) = dispatch.run_id {
        return Ok(run_id == req.run_id);
    }
    let (Some(github), Some(installation_id)) = (svc.github.as_ref(), req.installation_id) else {
        return Ok(false);
    };
    match github
        .workflow_run(installation_id, req.repo.as_str(), req.run_id)
        .await
    {
        Ok(run) => Ok(run.display_title.contains(&rollback_marker(&dep.id))),
        Err(e) => {
            tracing::warn!(run_id = req.run_id, error = %e, "could not read the run's name to recognise a rollback run");
            Ok(false)
        }
    }
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
    scope: &Scope,
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
            if !scoped.queue.is_empty() {
                // Closing released the lock to the queue, which moved: read where it stands
                // now (only on this path, a window that ended with requests waiting).
                let incidents = std::mem::take(&mut scoped.open_incidents);
                *scoped = svc.repo.scope_state(scope).await?;
                scoped.open_incidents = incidents;
            }
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
    scope: &Scope,
    sha: &Sha,
    succeeded_in: &mut std::collections::BTreeSet<String>,
    now: Timestamp,
) -> Result<(), ServiceError> {
    let Ok(effective) = svc.policy.for_scope(&scope.repo, &scope.environment) else {
        return Ok(());
    };
    for from in &effective.promotion_from {
        if succeeded_in.contains(from) {
            continue;
        }
        let Ok(env) = EnvName::parse(from) else {
            continue;
        };
        let heads = svc.repo.heads(&Scope::new(scope.repo.clone(), env)).await?;
        let Some(current) = heads.current.filter(|h| h.sha == sha.as_str()) else {
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
    scope: &Scope,
    run_id: Option<u64>,
    installation_id: Option<u64>,
    reason: Option<&str>,
    decision: &Decision,
) -> Option<String> {
    use crate::domain::policy::Rule;
    if reason.is_some() {
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
        .for_scope(&scope.repo, &scope.environment)
        .ok()?
        .break_glass
        .allowed
    {
        return None;
    }
    let (github, installation_id, run_id) = (svc.github.as_ref()?, installation_id?, run_id?);
    match github
        .workflow_run(installation_id, scope.repo.as_str(), run_id)
        .await
    {
        Ok(run) => break_glass_reason_in(&run.display_title),
        Err(e) => {
            tracing::warn!(run_id, error = %e, "could not read the run title for break-glass");
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
