//! Rollbacks: automatic (a rollback-worthy alert during a deployment's verification window)
//! and manual (`shipgate rollback ENV`, the Slack "Roll back" button).
//!
//! Starting a rollback is one optimistic-concurrency save of the deployment (`verifying` →
//! `rolling_back` with its [`RollbackInfo`]); only the caller whose save lands goes on to ask
//! GitHub to carry it out, so twenty alerts arriving together cause exactly one rollback.
//! Carrying it out depends on the environment's policy:
//!
//! - `redeploy`: a GitHub deployment of the last known good sha, whose payload carries
//!   `shipgate_rollback_of` so its statuses are recognised as the rollback's; its id is stored
//!   in `rollback.github_deployment_id`, and the lifecycle turns its `success` into
//!   `rolled_back`.
//! - `workflow`: a `workflow_dispatch` of the named workflow with inputs `environment`, `sha`
//!   and `reason` (a marker `META#rollback-dispatch` / `{deployment id}` records that it went out).
//!
//! When the GitHub call fails the deployment stays `rolling_back` without a rollback
//! deployment, a `rollback_failed` notification goes out, and [`resume`] (the sweeper's entry
//! point) tries again later.

use jiff::Timestamp;
use serde::Serialize;

use super::gate::update_deployment;
use super::{ServiceError, Services};
use crate::domain::deployment::{
    Action, Actor, Deployment, DeploymentKind, EnvironmentHeads, RollbackInfo, State,
};
use crate::domain::incident::Incident;
use crate::domain::policy::{EnvironmentPolicy, RollbackMethod, Severity};
use crate::notify::{Notification, NotificationBody};
use crate::outbound::github::NewDeployment;

/// How many earlier deployments a manual rollback looks through for a good version.
const HISTORY_LIMIT: usize = 200;

/// `META#` kind marking that a workflow rollback was dispatched.
pub const DISPATCH_META: &str = "rollback-dispatch";

/// Why no rollback was started for an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Skipped {
    /// The incident's environment is not in the policy.
    UnknownEnvironment,
    /// The environment does not roll back on this severity (`rollback_on`).
    SeverityNotRollingBack { severity: Severity },
    /// No deployment of the environment is inside its verification window.
    NoDeploymentVerifying,
}

/// What a rollback request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RollbackOutcome {
    /// The deployment is rolling back and GitHub accepted the rollback (`github_deployment_id`
    /// is the rollback's GitHub deployment for `redeploy`, `None` for `workflow`).
    Started {
        deployment_id: String,
        target_sha: String,
        github_deployment_id: Option<u64>,
    },
    /// The deployment is rolling back, but asking GitHub failed; [`resume`] retries.
    Failed {
        deployment_id: String,
        target_sha: String,
        error: String,
    },
    /// Someone else started this rollback first; nothing was done.
    AlreadyRollingBack { deployment_id: String },
    /// The alert does not call for a rollback.
    Skipped(Skipped),
    /// A rollback was called for, but the environment has no other good version to return
    /// to (its first deploy); someone was paged instead.
    NoLastKnownGood { deployment_id: String },
    /// A manual rollback that may not (or cannot) happen.
    Refused { reason: String },
}

impl RollbackOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            RollbackOutcome::Started { .. } => "started",
            RollbackOutcome::Failed { .. } => "failed",
            RollbackOutcome::AlreadyRollingBack { .. } => "already_rolling_back",
            RollbackOutcome::Skipped(_) => "skipped",
            RollbackOutcome::NoLastKnownGood { .. } => "no_last_known_good",
            RollbackOutcome::Refused { .. } => "refused",
        }
    }
}

/// The version a rollback returns to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    sha: String,
    git_ref: String,
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// The deployment of `environment` inside its verification window at `now`, if any. Only the
/// lock holder can be verifying: a deployment keeps the lock until its window closes.
pub async fn verifying_deployment(
    svc: &Services,
    environment: &str,
    now: Timestamp,
) -> Result<Option<Deployment>, ServiceError> {
    let Some(holder) = svc.repo.lock_holder(environment).await? else {
        return Ok(None);
    };
    Ok(svc
        .repo
        .get_deployment(&holder)
        .await?
        .filter(|d| d.in_verification_window(now)))
}

/// Starts the automatic rollback an incident calls for, if it calls for one.
///
/// Rolls back when the incident's severity is in the environment's `rollback_on` and a
/// deployment is inside its verification window (and, when the incident names the deployment
/// that was verifying when it opened, it is that one). Safe to call many times concurrently:
/// only one caller starts the rollback and calls GitHub.
pub async fn start_automatic(
    svc: &Services,
    environment: &str,
    incident: &Incident,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let Some(env) = svc.policy.environment(environment) else {
        return Ok(RollbackOutcome::Skipped(Skipped::UnknownEnvironment));
    };
    if !env.rolls_back_on(incident.severity) {
        return Ok(RollbackOutcome::Skipped(Skipped::SeverityNotRollingBack {
            severity: incident.severity,
        }));
    }
    let Some(dep) = verifying_deployment(svc, environment, now).await? else {
        return Ok(RollbackOutcome::Skipped(Skipped::NoDeploymentVerifying));
    };
    if incident
        .caused_by_deployment
        .as_ref()
        .is_some_and(|id| *id != dep.id)
    {
        // The incident opened during an earlier deployment's window; this one is not its cause.
        return Ok(RollbackOutcome::Skipped(Skipped::NoDeploymentVerifying));
    }

    let heads = svc.repo.heads(environment).await?;
    let Some(target) = heads
        .last_known_good
        .as_ref()
        .filter(|h| h.sha != dep.sha)
        .map(|h| Target {
            sha: h.sha.clone(),
            git_ref: h.git_ref.clone(),
        })
    else {
        page_no_last_known_good(svc, &dep, incident, now).await?;
        return Ok(RollbackOutcome::NoLastKnownGood {
            deployment_id: dep.id,
        });
    };

    let started_by = format!("alert:{}", incident.id);
    let reason = format!(
        "{} alert \"{}\" ({}) during the verification window of {}",
        incident.severity,
        incident.title,
        incident.id,
        short(&dep.sha)
    );
    let info = RollbackInfo {
        target_sha: target.sha.clone(),
        reason: reason.clone(),
        started_by: started_by.clone(),
        started_at: now,
        github_deployment_id: None,
        finished_at: None,
    };
    let why = format!("{reason}; rolling back to {}", short(&target.sha));
    let dep_id = dep.id.clone();
    let begun = begin(svc, &dep_id, info, &Actor(started_by), &why, |d| {
        d.in_verification_window(now)
    })
    .await?;
    let dep = match begun {
        Begun::Started(dep) => dep,
        Begun::NotStarted(Some(d)) if d.state == State::RollingBack => {
            return Ok(RollbackOutcome::AlreadyRollingBack {
                deployment_id: d.id,
            })
        }
        Begun::NotStarted(_) => {
            return Ok(RollbackOutcome::Skipped(Skipped::NoDeploymentVerifying))
        }
    };
    tracing::warn!(deployment_id = %dep.id, environment, incident_id = %incident.id, target_sha = %target.sha, "automatic rollback started");
    svc.publish(Notification::deployment(now, &dep, "rollback_started"))
        .await;
    carry_out(svc, &dep, &target.git_ref, env).await
}

/// Pages once per deployment: a rollback-worthy alert arrived, but there is nothing to roll
/// back to.
async fn page_no_last_known_good(
    svc: &Services,
    dep: &Deployment,
    incident: &Incident,
    now: Timestamp,
) -> Result<(), ServiceError> {
    let first = svc
        .repo
        .claim_event(
            "rollback-no-lkg",
            &dep.id,
            now,
            std::time::Duration::from_secs(30 * 24 * 3600),
        )
        .await?;
    if !first {
        return Ok(());
    }
    let summary = format!(
        "{} incident \"{}\" in {} during the verification window of {} ({}), but there is no last known good version to roll back to; no automatic action was taken",
        incident.severity,
        incident.title,
        dep.environment,
        dep.id,
        short(&dep.sha)
    );
    tracing::error!(deployment_id = %dep.id, incident_id = %incident.id, "no last known good version to roll back to");
    svc.repo
        .append_audit(&[dep.note(
            now,
            &Actor(format!("alert:{}", incident.id)),
            "rollback_impossible",
            "no last known good version to roll back to",
        )])
        .await?;
    svc.publish(Notification::new(
        now,
        NotificationBody::Job {
            job: "rollback".into(),
            ok: false,
            summary,
            details: serde_json::json!({
                "environment": dep.environment,
                "deployment_id": dep.id,
                "sha": dep.sha,
                "incident_id": incident.id,
                "reason": "no last known good version to roll back to",
            }),
            page: true,
        },
    ))
    .await;
    Ok(())
}

enum Begun {
    /// This caller moved the deployment to `rolling_back`.
    Started(Deployment),
    /// The deployment was not in a state `allowed` accepts (it is returned as read).
    NotStarted(Option<Deployment>),
}

/// Moves a deployment to `rolling_back` if `allowed` still holds when it is saved. The
/// version check makes this the single point where concurrent requests are decided.
async fn begin(
    svc: &Services,
    deployment_id: &str,
    info: RollbackInfo,
    actor: &Actor,
    why: &str,
    allowed: impl Fn(&Deployment) -> bool,
) -> Result<Begun, ServiceError> {
    let now = info.started_at;
    let mut changed = false;
    let updated = update_deployment(svc, deployment_id, |d| {
        changed = false;
        if !allowed(d) {
            return None;
        }
        let event = d.apply(Action::StartRollback, now, actor, why).ok()?;
        d.rollback = Some(info.clone());
        changed = true;
        Some(vec![event])
    })
    .await?;
    Ok(match updated {
        Some(dep) if changed => Begun::Started(dep),
        other => Begun::NotStarted(other),
    })
}

/// Asks GitHub to carry out a started rollback. Failures are reported, not returned: the
/// deployment is already `rolling_back` and [`resume`] retries.
async fn carry_out(
    svc: &Services,
    dep: &Deployment,
    target_ref: &str,
    env: &EnvironmentPolicy,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let Some(rb) = dep.rollback.clone() else {
        return Ok(RollbackOutcome::Refused {
            reason: format!("deployment {} has no rollback to carry out", dep.id),
        });
    };
    let result: Result<Option<u64>, String> = match (&svc.github, dep.installation_id) {
        (None, _) => Err("no GitHub App is configured".into()),
        (_, None) => Err(format!(
            "deployment {} has no GitHub App installation recorded",
            dep.id
        )),
        (Some(github), Some(installation)) => match &env.rollback {
            RollbackMethod::Redeploy => {
                let mut new = NewDeployment::new(rb.target_sha.clone(), dep.environment.clone());
                new.description = Some(format!(
                    "shipgate rollback of {} to {}",
                    short(&dep.sha),
                    short(&rb.target_sha)
                ));
                new.payload = serde_json::json!({
                    "shipgate_rollback_of": dep.id,
                    "reason": rb.reason,
                });
                github
                    .create_deployment(installation, &dep.repo, &new)
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            RollbackMethod::Workflow { workflow, git_ref } => {
                let git_ref = git_ref.as_deref().unwrap_or(target_ref);
                let mut inputs = serde_json::Map::new();
                inputs.insert("environment".into(), dep.environment.clone().into());
                inputs.insert("sha".into(), rb.target_sha.clone().into());
                inputs.insert("reason".into(), rb.reason.clone().into());
                github
                    .dispatch_workflow(installation, &dep.repo, workflow, git_ref, &inputs)
                    .await
                    .map(|()| None)
                    .map_err(|e| e.to_string())
            }
        },
    };

    match result {
        Ok(github_id) => {
            let what = match github_id {
                Some(id) => format!("GitHub deployment {id} of {}", short(&rb.target_sha)),
                None => format!("workflow dispatched for {}", short(&rb.target_sha)),
            };
            if github_id.is_none() {
                svc.repo
                    .put_meta(
                        DISPATCH_META,
                        &dep.id,
                        &serde_json::json!({ "at": now, "target_sha": rb.target_sha }),
                    )
                    .await?;
            }
            update_deployment(svc, &dep.id, |d| {
                let current = d.rollback.as_mut()?;
                if let Some(id) = github_id {
                    // The lifecycle may have linked it already from GitHub's own webhook.
                    if current.github_deployment_id.is_none() {
                        current.github_deployment_id = Some(id);
                    }
                }
                Some(vec![d.note(
                    now,
                    &Actor::system(),
                    "rollback_requested",
                    what.clone(),
                )])
            })
            .await?;
            Ok(RollbackOutcome::Started {
                deployment_id: dep.id.clone(),
                target_sha: rb.target_sha,
                github_deployment_id: github_id,
            })
        }
        Err(error) => {
            tracing::error!(deployment_id = %dep.id, error = %error, "rollback could not be carried out; the sweeper will retry");
            svc.repo
                .append_audit(&[dep.note(now, &Actor::system(), "rollback_failed", &error)])
                .await?;
            let mut shown = dep.clone();
            shown.reason = Some(format!("rollback could not be started: {error}"));
            svc.publish(Notification::deployment(now, &shown, "rollback_failed"))
                .await;
            Ok(RollbackOutcome::Failed {
                deployment_id: dep.id.clone(),
                target_sha: rb.target_sha,
                error,
            })
        }
    }
}

/// Retries a rollback whose GitHub call failed: a `rolling_back` deployment without a rollback
/// deployment (or, for the workflow method, without a dispatch marker). The sweeper calls
/// this; anything else is left alone and reported as already rolling back.
pub async fn resume(svc: &Services, deployment_id: &str) -> Result<RollbackOutcome, ServiceError> {
    let Some(dep) = svc.repo.get_deployment(deployment_id).await? else {
        return Ok(RollbackOutcome::Refused {
            reason: format!("no deployment {deployment_id}"),
        });
    };
    let Some(rb) = dep
        .rollback
        .as_ref()
        .filter(|_| dep.state == State::RollingBack)
    else {
        return Ok(RollbackOutcome::Refused {
            reason: format!(
                "deployment {deployment_id} is {}, not rolling back",
                dep.state
            ),
        });
    };
    let env = svc
        .policy
        .environment(&dep.environment)
        .cloned()
        .unwrap_or_else(|| EnvironmentPolicy::with_defaults(dep.environment.clone()));
    let dispatched = svc
        .repo
        .get_meta::<serde_json::Value>(DISPATCH_META, &dep.id)
        .await?
        .is_some();
    if rb.github_deployment_id.is_some() || dispatched {
        return Ok(RollbackOutcome::AlreadyRollingBack {
            deployment_id: dep.id,
        });
    }
    // The target's ref: the last known good's when it is still the target, else the
    // deployment's own branch (a workflow_dispatch needs a branch or tag, not a sha).
    let heads = svc.repo.heads(&dep.environment).await?;
    let target_ref = heads
        .last_known_good
        .filter(|h| h.sha == rb.target_sha)
        .map(|h| h.git_ref)
        .unwrap_or_else(|| dep.git_ref.clone());
    carry_out(svc, &dep, &target_ref, &env).await
}

/// Whether `requested_by` may start a manual rollback of `env`, and the audit note about it.
///
/// Without required approvals anyone who can reach the entry points may. With them, Slack
/// users must be on the environment's `approvers` list — starting the rollback counts as
/// their approval — and CLI users (`cli:<user>`, people with shell access to the control
/// plane) are always allowed.
fn authorise(env: &EnvironmentPolicy, requested_by: &str) -> Result<String, String> {
    if env.approvals_required == 0 {
        return Ok(format!("started by {requested_by}"));
    }
    match requested_by.split_once(':') {
        Some(("cli", user)) if !user.trim().is_empty() => Ok(format!(
            "started by {requested_by} (operator with shell access)"
        )),
        Some(("slack", user)) if env.is_approver(user) => Ok(format!(
            "started by {requested_by}; counts as their approval"
        )),
        _ => Err(format!(
            "{requested_by} may not roll back {}: it requires approvals, so only its approvers (from Slack) or an operator (shipgate CLI) may start a rollback",
            env.name
        )),
    }
}

/// The version a manual rollback of `dep` returns to: the environment's last known good when
/// it differs from `dep`'s sha, otherwise (the current deployment *is* the last known good) the
/// most recent earlier succeeded deployment of another sha.
async fn manual_target(
    svc: &Services,
    dep: &Deployment,
    heads: &EnvironmentHeads,
) -> Result<Option<Target>, ServiceError> {
    if let Some(good) = heads.last_known_good.as_ref().filter(|h| h.sha != dep.sha) {
        return Ok(Some(Target {
            sha: good.sha.clone(),
            git_ref: good.git_ref.clone(),
        }));
    }
    let earlier = svc
        .repo
        .deployments_in(
            &dep.environment,
            Timestamp::UNIX_EPOCH,
            dep.created_at,
            true,
            Some(HISTORY_LIMIT),
        )
        .await?;
    Ok(earlier
        .into_iter()
        .find(|d| {
            d.id != dep.id
                && d.state == State::Succeeded
                && d.kind == DeploymentKind::Deploy
                && d.sha != dep.sha
        })
        .map(|d| Target {
            sha: d.sha,
            git_ref: d.git_ref,
        }))
}

/// Rolls back the deployment currently running in `environment` (verifying, succeeded or
/// failed) to the previous good version. `requested_by` is `cli:<user>` or `slack:<user id>`.
pub async fn start_manual(
    svc: &Services,
    environment: &str,
    requested_by: &str,
) -> Result<RollbackOutcome, ServiceError> {
    let now = svc.now();
    let refuse = |reason: String| Ok(RollbackOutcome::Refused { reason });
    let Some(env) = svc.policy.environment(environment) else {
        return refuse(format!("environment {environment} is not in the policy"));
    };
    let note = match authorise(env, requested_by) {
        Ok(note) => note,
        Err(reason) => return refuse(reason),
    };
    let heads = svc.repo.heads(environment).await?;
    let Some(current) = heads.current.as_ref() else {
        return refuse(format!("nothing has been deployed to {environment} yet"));
    };
    let Some(dep) = svc.repo.get_deployment(&current.deployment_id).await? else {
        return refuse(format!(
            "the current deployment {} of {environment} is not recorded",
            current.deployment_id
        ));
    };
    let rollable =
        |d: &Deployment| matches!(d.state, State::Verifying | State::Succeeded | State::Failed);
    if dep.state == State::RollingBack {
        return Ok(RollbackOutcome::AlreadyRollingBack {
            deployment_id: dep.id,
        });
    }
    if !rollable(&dep) {
        return refuse(format!(
            "the current deployment {} of {environment} is {}; only a verifying, succeeded or failed deployment can be rolled back",
            dep.id, dep.state
        ));
    }
    let Some(target) = manual_target(svc, &dep, &heads).await? else {
        return refuse(format!(
            "there is no earlier good version of {environment} to roll back to"
        ));
    };
    // A finished deployment gave its lock up; rolling back deploys again, so it takes the
    // lock back, and waits its turn if another deployment is under way.
    if let Some(holder) = svc.repo.try_take_lock(environment, &dep.id, now).await? {
        return refuse(format!(
            "environment {environment} is locked by deployment {holder}; wait for it to finish"
        ));
    }
    let reason = format!("manual rollback requested by {requested_by}");
    let info = RollbackInfo {
        target_sha: target.sha.clone(),
        reason: reason.clone(),
        started_by: requested_by.to_string(),
        started_at: now,
        github_deployment_id: None,
        finished_at: None,
    };
    let why = format!("{note}; rolling back to {}", short(&target.sha));
    let dep_id = dep.id.clone();
    let begun = begin(
        svc,
        &dep_id,
        info,
        &Actor(requested_by.to_string()),
        &why,
        rollable,
    )
    .await;
    let dep = match begun {
        Ok(Begun::Started(dep)) => dep,
        other => {
            // Give back a lock taken above for a rollback that did not start (a no-op when
            // the deployment is rolling back after all, or still verifying).
            if let Err(e) = svc.repo.release_stale_lock(environment).await {
                tracing::error!(environment, error = %e, "could not release the lock after a refused rollback");
            }
            return match other? {
                Begun::NotStarted(Some(d)) if d.state == State::RollingBack => {
                    Ok(RollbackOutcome::AlreadyRollingBack {
                        deployment_id: d.id,
                    })
                }
                _ => refuse(format!(
                    "deployment {dep_id} changed while the rollback was being started"
                )),
            };
        }
    };
    tracing::warn!(deployment_id = %dep.id, environment, requested_by, target_sha = %target.sha, "manual rollback started");
    svc.publish(Notification::deployment(now, &dep, "rollback_started"))
        .await;
    carry_out(svc, &dep, &target.git_ref, env).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(approvals: u32) -> EnvironmentPolicy {
        let mut env = EnvironmentPolicy::with_defaults("production");
        env.approvals_required = approvals;
        env.approvers = vec!["U0APPROV1".into()];
        env
    }

    #[test]
    fn anyone_may_roll_back_an_environment_without_approvals() {
        assert!(authorise(&env(0), "slack:U0SOMEONE").is_ok());
    }

    #[test]
    fn only_approvers_and_operators_may_roll_back_a_gated_environment() {
        let e = env(2);
        assert_eq!(
            authorise(&e, "slack:U0APPROV1").as_deref(),
            Ok("started by slack:U0APPROV1; counts as their approval")
        );
        assert!(authorise(&e, "cli:alice").is_ok());
        assert!(authorise(&e, "slack:U0SOMEONE").is_err());
        assert!(authorise(&e, "cli:").is_err());
        assert!(authorise(&e, "U0APPROV1").is_err());
    }
}
