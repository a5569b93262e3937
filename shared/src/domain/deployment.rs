//! The deployment record and its lifecycle state machine.
//!
//! ```text
//! requested ─policy─▶ rejected
//!     ├─(scope locked)─▶ queued ─(lock frees: policy again)─▶ approved / awaiting / rejected
//!     ├─auto-approve─▶ approved ─▶ deploying ─▶ verifying ─(window passes)─▶ succeeded
//!     └─▶ awaiting_approval ─(N approvals)─▶ approved          │
//!               └─(TTL)─▶ expired              failed ◀────────┤
//!                                              rolling_back ◀──┘ ─▶ rolled_back
//! ```
//! [`next_state`] is the single source of truth for which moves are legal; everything that
//! changes a [`Deployment`]'s state goes through [`Deployment::apply`], which also produces the
//! audit event describing the move.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::{short_sha, EnvName, RepoName, Sha};

/// Where a deployment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Requested,
    /// Waiting for its scope's lock: GitHub's protection rule stays pending until the
    /// deployment ahead finishes, then the request is decided on the facts of that moment.
    Queued,
    AwaitingApproval,
    Approved,
    Rejected,
    Expired,
    Deploying,
    Verifying,
    Succeeded,
    Failed,
    RollingBack,
    RolledBack,
    Cancelled,
}

impl State {
    pub const ALL: [State; 13] = [
        State::Requested,
        State::Queued,
        State::AwaitingApproval,
        State::Approved,
        State::Rejected,
        State::Expired,
        State::Deploying,
        State::Verifying,
        State::Succeeded,
        State::Failed,
        State::RollingBack,
        State::RolledBack,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Requested => "requested",
            State::Queued => "queued",
            State::AwaitingApproval => "awaiting_approval",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Expired => "expired",
            State::Deploying => "deploying",
            State::Verifying => "verifying",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::RollingBack => "rolling_back",
            State::RolledBack => "rolled_back",
            State::Cancelled => "cancelled",
        }
    }

    /// True while the deployment holds its environment's lock. A deployment stops holding it
    /// once no further automatic move is expected: decided against, finished, or rolled back.
    pub fn holds_lock(self) -> bool {
        matches!(
            self,
            State::Requested
                | State::AwaitingApproval
                | State::Approved
                | State::Deploying
                | State::Verifying
                | State::RollingBack
        )
    }

    /// True while the deployment is undecided or running: it holds its scope's lock, or
    /// waits in its scope's queue for it.
    pub fn is_open(self) -> bool {
        self.holds_lock() || self == State::Queued
    }

    /// True when no move at all leaves this state.
    pub fn is_terminal(self) -> bool {
        Action::ALL.iter().all(|a| next_state(self, *a).is_err())
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a deployment; the input of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Policy needs no humans.
    AutoApprove,
    /// Policy needs N approvals.
    RequestApproval,
    /// The approval quorum was reached.
    Approve,
    /// Policy or an authorised person said no.
    Reject,
    /// The approval TTL ran out.
    Expire,
    /// GitHub reported the deployment queued or in progress.
    StartDeploy,
    /// The deployment reported success; the verification window opens.
    BeginVerification,
    /// The verification window passed without a rollback-worthy alert.
    PassVerification,
    /// The deployment reported failure or error.
    Fail,
    /// A critical alert during verification, or an operator, started a rollback.
    StartRollback,
    /// The rollback's own deployment succeeded.
    FinishRollback,
    /// Withdrawn before it ran (superseded, or the workflow run was cancelled).
    Cancel,
    /// The scope's lock is held: wait in its queue.
    Queue,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Action::AutoApprove,
        Action::RequestApproval,
        Action::Approve,
        Action::Reject,
        Action::Expire,
        Action::StartDeploy,
        Action::BeginVerification,
        Action::PassVerification,
        Action::Fail,
        Action::StartRollback,
        Action::FinishRollback,
        Action::Cancel,
        Action::Queue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::AutoApprove => "auto_approve",
            Action::RequestApproval => "request_approval",
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Expire => "expire",
            Action::StartDeploy => "start_deploy",
            Action::BeginVerification => "begin_verification",
            Action::PassVerification => "pass_verification",
            Action::Fail => "fail",
            Action::StartRollback => "start_rollback",
            Action::FinishRollback => "finish_rollback",
            Action::Cancel => "cancel",
            Action::Queue => "queue",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A move the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a deployment that is {from}")]
pub struct TransitionError {
    pub from: State,
    pub action: Action,
}

/// The lifecycle: the state `action` leads to from `from`, or why it may not happen.
///
/// Two moves deserve a note. `Approved --BeginVerification--> Verifying` and
/// `Approved --Fail--> Failed` exist because GitHub may deliver a deployment's final status
/// before its `in_progress` status; the record must still end where the deployment really is.
/// `Succeeded`/`Failed --StartRollback--> RollingBack` is the manual rollback of the current
/// version after its window closed.
pub fn next_state(from: State, action: Action) -> Result<State, TransitionError> {
    use Action as A;
    use State as S;
    let to = match (from, action) {
        (S::Requested, A::AutoApprove) => S::Approved,
        (S::Requested, A::Queue) => S::Queued,
        // Leaving the queue: decided afresh once the lock frees, or withdrawn while waiting.
        (S::Queued, A::AutoApprove) => S::Approved,
        (S::Queued, A::RequestApproval) => S::AwaitingApproval,
        (S::Queued, A::Reject) => S::Rejected,
        (S::Queued, A::Cancel) => S::Cancelled,
        (S::Requested, A::RequestApproval) => S::AwaitingApproval,
        (S::Requested | S::AwaitingApproval, A::Reject) => S::Rejected,
        (S::AwaitingApproval, A::Approve) => S::Approved,
        (S::AwaitingApproval, A::Expire) => S::Expired,
        (S::Requested | S::AwaitingApproval | S::Approved, A::Cancel) => S::Cancelled,
        (S::Approved, A::StartDeploy) => S::Deploying,
        (S::Approved | S::Deploying, A::BeginVerification) => S::Verifying,
        (S::Approved | S::Deploying | S::Verifying, A::Fail) => S::Failed,
        (S::Deploying, A::Cancel) => S::Cancelled,
        (S::Verifying, A::PassVerification) => S::Succeeded,
        (S::Verifying | S::Succeeded | S::Failed, A::StartRollback) => S::RollingBack,
        (S::RollingBack, A::FinishRollback) => S::RolledBack,
        (S::RollingBack, A::Fail) => S::Failed,
        _ => return Err(TransitionError { from, action }),
    };
    Ok(to)
}

/// Whether this record is an ordinary deploy or shipgate's own rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    #[default]
    Deploy,
    Rollback,
}

/// One recorded approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Slack user id.
    pub approver: String,
    pub at: Timestamp,
}

/// How the rollback of this deployment is being carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackInfo {
    /// The sha being restored (the environment's last known good).
    pub target_sha: String,
    pub reason: String,
    /// Who started it: `alert:<fingerprint>`, `slack:<user>` or `cli:<user>`.
    pub started_by: String,
    pub started_at: Timestamp,
    /// GitHub deployment id of the rollback deploy, when made through a deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_deployment_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// A manual rollback that waits for approvals, recorded on the environment's current
/// deployment. It follows the same rules as a deploy: N distinct approvers from the
/// environment's list, within the approval TTL, and under `prevent_self_approval` the person
/// who asked for it is its author, so their own approval does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The sha the rollback returns to.
    pub target_sha: String,
    /// Its ref (a workflow rollback dispatches on a branch or tag, not a sha).
    pub target_ref: String,
    /// `slack:<user id>` or `cli:<user>`.
    pub requested_by: String,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    pub approvals_required: u32,
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// Carried by the request's Slack buttons, so a button of an earlier (cancelled or
    /// expired) request is recognised as stale.
    pub nonce: String,
}

impl RollbackRequest {
    pub fn approval_count(&self) -> u32 {
        u32::try_from(self.approvals.len()).unwrap_or(u32::MAX)
    }

    /// Approvals needed; a request exists only where approvals are required, so at least one.
    pub fn need(&self) -> u32 {
        self.approvals_required.max(1)
    }

    /// True once the quorum is reached.
    pub fn is_approved(&self) -> bool {
        self.approval_count() >= self.need()
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    pub fn short_target(&self) -> &str {
        short_sha(&self.target_sha)
    }

    pub fn approvers(&self) -> Vec<String> {
        self.approvals.iter().map(|a| a.approver.clone()).collect()
    }

    /// Whether Slack user `user` (mapped to GitHub login `login`) is the one who asked: the
    /// same Slack user, or, for a request from the CLI, the shell user name equal to the
    /// clicker's mapped login.
    pub fn is_requested_by(&self, user: &str, login: Option<&str>) -> bool {
        match self.requested_by.split_once(':') {
            Some(("slack", requester)) => requester == user,
            Some(("cli", requester)) => login.is_some_and(|l| l.eq_ignore_ascii_case(requester)),
            _ => false,
        }
    }
}

/// What recording one approval of a rollback request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackApproval {
    /// Counted; more approvals are needed.
    Progress { have: u32, need: u32 },
    /// Counted, and the quorum is reached: the rollback may start.
    QuorumReached { approvers: Vec<String> },
}

/// Why a click on a rollback request did not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "refusal")]
pub enum RollbackRefused {
    #[error("you are not an approver for {environment}")]
    NotAnApprover { environment: String },
    #[error("you requested this rollback, so you cannot approve it")]
    SelfApproval,
    #[error("you already approved this rollback ({have} of {need})")]
    AlreadyApproved { have: u32, need: u32 },
    #[error("this rollback request expired at {expired_at}")]
    Expired { expired_at: Timestamp },
    #[error("there is no open rollback request")]
    NoOpenRequest,
    #[error("only whoever requested this rollback or an approver for {environment} may cancel it")]
    MayNotCancel { environment: String },
}

/// A break-glass override of a freeze or an incident block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    pub reason: String,
    pub requested_by: String,
}

/// Whether GitHub still waits for shipgate's answer on the protection rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// Nothing to answer (not gated through a protection rule).
    #[default]
    None,
    /// A decision was made but GitHub has not acknowledged it; the sweeper retries.
    Pending,
    /// GitHub accepted the answer.
    Answered,
}

/// Where the Slack message about this deployment lives, so later changes update it in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackRef {
    pub channel: String,
    pub ts: String,
}

/// The deployment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub repo: RepoName,
    pub environment: EnvName,
    pub git_ref: String,
    pub sha: Sha,
    /// GitHub login of whoever triggered the run.
    pub requester: String,
    pub kind: DeploymentKind,
    pub state: State,
    /// Optimistic-concurrency version of the stored record.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_deployment_id: Option<u64>,
    #[serde(default)]
    pub approvals_required: u32,
    #[serde(default)]
    pub approvals: Vec<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackInfo>,
    /// Why the last decision went the way it did (rejection rule, failure description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub callback: CallbackState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackRef>,
    /// Random value carried by this deployment's Slack buttons (with the id), so a click on
    /// a button from another message, or a forged value, is recognised as stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button_nonce: Option<String>,
    /// Policy checks that passed at request time, for the approval message.
    #[serde(default)]
    pub checks: Vec<String>,
    /// A manual rollback of this deployment waiting for its approvals. Absent in records
    /// written before rollbacks needed approvals, which therefore still load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_request: Option<RollbackRequest>,
    /// When it waited in its scope's queue, and until when it was allowed to (kept after it
    /// left, for the history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<QueueTicket>,
    /// Set by [`Deployment::apply`] when this change takes the deployment out of the queue,
    /// so the save removes its queue entry (and takes the lock when the new state holds it)
    /// in the same transaction. Never stored.
    #[serde(skip)]
    pub left_queue: bool,
}

/// A deployment's place in its scope's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTicket {
    /// Arrival: the queue is served in this order.
    pub since: Timestamp,
    /// Past this the request is rejected (the policy's `queue_wait`).
    pub until: Timestamp,
    /// The deployment holding the lock when it arrived.
    pub behind: String,
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor(pub String);

impl Actor {
    pub fn system() -> Self {
        Actor("shipgate".into())
    }
    pub fn github(login: &str) -> Self {
        Actor(format!("github:{login}"))
    }
    pub fn slack(user: &str) -> Self {
        Actor(format!("slack:{user}"))
    }
}

/// One immutable line of the audit log: who did what, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub deployment_id: String,
    pub environment: String,
    pub actor: String,
    /// The action (`approve`, `reject`, ...) or a non-transition event (`approval_recorded`).
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<State>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

impl Deployment {
    /// The repository and environment this deployment belongs to.
    pub fn scope(&self) -> crate::domain::scope::Scope {
        crate::domain::scope::Scope::new(self.repo.clone(), self.environment.clone())
    }

    /// Moves the deployment by `action`, or refuses with the typed error and changes nothing.
    /// Returns the audit event for the move.
    pub fn apply(
        &mut self,
        action: Action,
        now: Timestamp,
        actor: &Actor,
        why: impl Into<String>,
    ) -> Result<AuditEvent, TransitionError> {
        let from = self.state;
        let to = next_state(from, action)?;
        self.state = to;
        self.updated_at = now;
        if to == State::Deploying && self.deploy_started_at.is_none() {
            self.deploy_started_at = Some(now);
        }
        if from == State::Queued && to != State::Queued {
            self.left_queue = true;
        }
        if !to.is_open() && self.finished_at.is_none() {
            self.finished_at = Some(now);
        }
        Ok(AuditEvent {
            at: now,
            deployment_id: self.id.clone(),
            environment: self.environment.to_string(),
            actor: actor.0.clone(),
            what: action.as_str().to_string(),
            from: Some(from),
            to: Some(to),
            why: why.into(),
        })
    }

    /// An audit event about this deployment that does not change its state.
    pub fn note(
        &self,
        now: Timestamp,
        actor: &Actor,
        what: &str,
        why: impl Into<String>,
    ) -> AuditEvent {
        AuditEvent {
            at: now,
            deployment_id: self.id.clone(),
            environment: self.environment.to_string(),
            actor: actor.0.clone(),
            what: what.to_string(),
            from: None,
            to: None,
            why: why.into(),
        }
    }

    /// Short sha for people.
    pub fn short_sha(&self) -> &str {
        self.sha.short()
    }

    /// True while the verification window is open at `now`.
    pub fn in_verification_window(&self, now: Timestamp) -> bool {
        self.state == State::Verifying && self.verify_until.is_some_and(|until| now < until)
    }
}

/// What recording one Slack click did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Counted; more approvals are needed.
    Progress { have: u32, need: u32 },
    /// Counted, and the quorum is reached: the deployment is now approved.
    QuorumReached { approvers: Vec<String> },
    /// Counted, and the quorum is reached, but a rule that blocks deploys now (a freeze, the
    /// deploy window, a critical incident) did not when the request came: the deployment
    /// keeps waiting, with its approvals, until that no longer holds or it expires.
    QuorumHeld {
        approvers: Vec<String>,
        blocker: String,
    },
}

/// Why a click did not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefused {
    #[error("you are not an approver for {environment}")]
    NotAnApprover { environment: String },
    #[error("you triggered this deployment, so you cannot approve it")]
    SelfApproval,
    #[error("you already approved this deployment ({have} of {need})")]
    AlreadyApproved { have: u32, need: u32 },
    #[error("this approval request expired at {expired_at}")]
    Expired { expired_at: Timestamp },
    #[error("this deployment was already decided: it is {state}")]
    AlreadyDecided { state: State },
}

/// Identity facts the approval rules need, resolved from the policy by the caller.
#[derive(Debug, Clone)]
pub struct ApproverFacts<'a> {
    /// Slack user ids allowed to approve in this environment.
    pub approvers: &'a [String],
    /// The GitHub login the clicking Slack user maps to, if any.
    pub clicker_login: Option<&'a str>,
    pub prevent_self_approval: bool,
}

impl Deployment {
    /// Records an Approve click by Slack user `user`; on quorum the deployment moves to
    /// `approved`. Refusals change nothing.
    pub fn record_approval(
        &mut self,
        user: &str,
        facts: &ApproverFacts<'_>,
        now: Timestamp,
    ) -> Result<(ApprovalOutcome, Vec<AuditEvent>), ApprovalRefused> {
        self.record_approval_unless(user, facts, now, None)
    }

    /// [`Deployment::record_approval`], with what blocks deploys at this moment: when the
    /// approval completes the quorum and `blocker` is set, the approval is kept but the
    /// deployment is not approved ([`ApprovalOutcome::QuorumHeld`]); its `reason` says why.
    pub fn record_approval_unless(
        &mut self,
        user: &str,
        facts: &ApproverFacts<'_>,
        now: Timestamp,
        blocker: Option<&str>,
    ) -> Result<(ApprovalOutcome, Vec<AuditEvent>), ApprovalRefused> {
        self.check_can_decide(user, facts, now)?;
        let need = self.approvals_required.max(1);
        if self.approvals.iter().any(|a| a.approver == user) {
            return Err(ApprovalRefused::AlreadyApproved {
                have: self.approval_count(),
                need,
            });
        }
        self.approvals.push(Approval {
            approver: user.to_string(),
            at: now,
        });
        let have = self.approval_count();
        let actor = Actor::slack(user);
        let mut events = vec![self.note(
            now,
            &actor,
            "approval_recorded",
            format!("{have} of {need}"),
        )];
        if have >= need {
            let approvers: Vec<String> =
                self.approvals.iter().map(|a| a.approver.clone()).collect();
            if let Some(blocker) = blocker {
                let why = format!("approvals complete, held: {blocker}");
                self.reason = Some(why.clone());
                self.updated_at = now;
                events.push(self.note(now, &actor, "approval_held", why));
                return Ok((
                    ApprovalOutcome::QuorumHeld {
                        approvers,
                        blocker: blocker.to_string(),
                    },
                    events,
                ));
            }
            let why = format!("approved by {}", approvers.join(", "));
            // check_can_decide guarantees awaiting_approval, from which Approve is legal.
            let event = self
                .apply(Action::Approve, now, &actor, why)
                .map_err(|e| ApprovalRefused::AlreadyDecided { state: e.from })?;
            events.push(event);
            Ok((ApprovalOutcome::QuorumReached { approvers }, events))
        } else {
            Ok((ApprovalOutcome::Progress { have, need }, events))
        }
    }

    /// Records a Reject click; any authorised approver (not the requester) can reject.
    pub fn record_rejection(
        &mut self,
        user: &str,
        reason: &str,
        facts: &ApproverFacts<'_>,
        now: Timestamp,
    ) -> Result<AuditEvent, ApprovalRefused> {
        self.check_can_decide(user, facts, now)?;
        let why = if reason.trim().is_empty() {
            format!("rejected by {user}")
        } else {
            format!("rejected by {user}: {}", reason.trim())
        };
        self.reason = Some(why.clone());
        self.apply(Action::Reject, now, &Actor::slack(user), why)
            .map_err(|e| ApprovalRefused::AlreadyDecided { state: e.from })
    }

    /// True when the approvals are complete but a blocker held the approval.
    pub fn approval_held(&self) -> bool {
        self.state == State::AwaitingApproval
            && self.approval_count() >= self.approvals_required.max(1)
    }

    pub fn approval_count(&self) -> u32 {
        u32::try_from(self.approvals.len()).unwrap_or(u32::MAX)
    }

    fn check_can_decide(
        &self,
        user: &str,
        facts: &ApproverFacts<'_>,
        now: Timestamp,
    ) -> Result<(), ApprovalRefused> {
        if self.state != State::AwaitingApproval {
            return Err(ApprovalRefused::AlreadyDecided { state: self.state });
        }
        if let Some(expired_at) = self.approval_expires_at.filter(|t| now >= *t) {
            return Err(ApprovalRefused::Expired { expired_at });
        }
        if !facts.approvers.iter().any(|a| a == user) {
            return Err(ApprovalRefused::NotAnApprover {
                environment: self.environment.to_string(),
            });
        }
        if facts.prevent_self_approval
            && facts
                .clicker_login
                .is_some_and(|login| login.eq_ignore_ascii_case(&self.requester))
        {
            return Err(ApprovalRefused::SelfApproval);
        }
        Ok(())
    }
}

impl Deployment {
    /// Opens a rollback request (replacing an expired one). Returns its audit event.
    pub fn open_rollback_request(
        &mut self,
        request: RollbackRequest,
        now: Timestamp,
    ) -> AuditEvent {
        let why = format!(
            "rollback to {} requested by {}; needs {} approval(s) by {}",
            request.short_target(),
            request.requested_by,
            request.need(),
            request.expires_at
        );
        let actor = Actor(request.requested_by.clone());
        self.rollback_request = Some(request);
        self.updated_at = now;
        self.note(now, &actor, "rollback_request_opened", why)
    }

    /// Records Slack user `user`'s approval of the open rollback request, under the same rules
    /// as a deploy's approval. Refusals change nothing. Reaching the quorum does not move the
    /// deployment: starting the rollback is the caller's next step.
    pub fn record_rollback_approval(
        &mut self,
        user: &str,
        facts: &ApproverFacts<'_>,
        now: Timestamp,
    ) -> Result<(RollbackApproval, AuditEvent), RollbackRefused> {
        let environment = self.environment.to_string();
        let request = self
            .rollback_request
            .as_mut()
            .ok_or(RollbackRefused::NoOpenRequest)?;
        if request.is_expired(now) {
            return Err(RollbackRefused::Expired {
                expired_at: request.expires_at,
            });
        }
        if !facts.approvers.iter().any(|a| a == user) {
            return Err(RollbackRefused::NotAnApprover { environment });
        }
        if facts.prevent_self_approval && request.is_requested_by(user, facts.clicker_login) {
            return Err(RollbackRefused::SelfApproval);
        }
        let need = request.need();
        if request.approvals.iter().any(|a| a.approver == user) {
            return Err(RollbackRefused::AlreadyApproved {
                have: request.approval_count(),
                need,
            });
        }
        if request.is_approved() {
            // Quorum already reached by others; one more changes nothing.
            return Err(RollbackRefused::AlreadyApproved {
                have: request.approval_count(),
                need,
            });
        }
        request.approvals.push(Approval {
            approver: user.to_string(),
            at: now,
        });
        let have = request.approval_count();
        let outcome = if request.is_approved() {
            RollbackApproval::QuorumReached {
                approvers: request.approvers(),
            }
        } else {
            RollbackApproval::Progress { have, need }
        };
        self.updated_at = now;
        let event = self.note(
            now,
            &Actor::slack(user),
            "rollback_approval_recorded",
            format!("{have} of {need}"),
        );
        Ok((outcome, event))
    }

    /// Withdraws the open rollback request; its requester or any approver may.
    pub fn cancel_rollback_request(
        &mut self,
        user: &str,
        facts: &ApproverFacts<'_>,
        now: Timestamp,
    ) -> Result<AuditEvent, RollbackRefused> {
        let request = self
            .rollback_request
            .as_ref()
            .ok_or(RollbackRefused::NoOpenRequest)?;
        let is_approver = facts.approvers.iter().any(|a| a == user);
        if !is_approver && !request.is_requested_by(user, facts.clicker_login) {
            return Err(RollbackRefused::MayNotCancel {
                environment: self.environment.to_string(),
            });
        }
        let why = format!(
            "rollback to {} requested by {} cancelled by {user}",
            request.short_target(),
            request.requested_by
        );
        self.rollback_request = None;
        self.updated_at = now;
        Ok(self.note(now, &Actor::slack(user), "rollback_request_cancelled", why))
    }

    /// Clears the rollback request if it expired at `now`; the audit event when it did.
    pub fn expire_rollback_request(&mut self, now: Timestamp) -> Option<AuditEvent> {
        let request = self
            .rollback_request
            .as_ref()
            .filter(|r| r.is_expired(now))?;
        let why = format!(
            "rollback to {} requested by {} expired with {} of {} approvals",
            request.short_target(),
            request.requested_by,
            request.approval_count(),
            request.need()
        );
        self.rollback_request = None;
        self.updated_at = now;
        Some(self.note(now, &Actor::system(), "rollback_request_expired", why))
    }
}

/// The heads of one scope (a repository in an environment): what runs there now, and what
/// to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EnvironmentHeads {
    pub environment: String,
    /// The repository whose heads these are (absent on records written before scopes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Head>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good: Option<Head>,
    #[serde(default)]
    pub version: u64,
}

/// One sha deployed to an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub sha: String,
    pub git_ref: String,
    pub deployment_id: String,
    pub at: Timestamp,
    /// End of the verification window while this head is the scope's current deployment
    /// verifying (absent otherwise, and on records written before it existed). It rides in
    /// the scope's partition, which the gate reads anyway, so a request can see that the lock
    /// holder's window has ended without reading the holder ([`crate::service::lifecycle::close_if_ended`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<Timestamp>,
}
