//! Rollback drills: prove on a schedule that an environment can go back to its previous good
//! version and forward again, and measure how long each leg takes. The scheduled job that
//! starts them is `crate::jobs::rollback_drill`; this module tracks them.
//!
//! For every environment with `rollback_drill = true` the job re-deploys the previous good sha
//! through a GitHub deployment (leg `rollback`); when that deployment reports `success`, it
//! re-deploys the current sha (leg `restore`); when that succeeds the drill passed. The legs'
//! GitHub deployments carry `shipgate_drill` in their payload and are recorded as
//! `META#rollback-drill-leg` / `{github deployment id}`, which is how
//! [`on_deployment_status`] — called first thing by the lifecycle — recognises their statuses.
//! Drills are per scope (a repository in an environment): a drill re-deploys one repository's
//! previous good version. The drill itself lives in `META#rollback-drill` / `{repo}#{env}`
//! (`{repo}` is `owner/name`), updated with version
//! checks so concurrent statuses cannot both start the next leg. A leg without a final status
//! within [`LEG_TIMEOUT`] times the drill out ([`time_out_stale`], called by the sweeper) and
//! pages, since the environment may be left on the old version.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::domain::deployment::State;
use crate::domain::events::DeploymentStatus;
use crate::domain::ids::{short_sha, GitHubDeploymentState};
use crate::domain::job::{JobName, JobReport};
use crate::domain::scope::Scope;
use crate::domain::time::{add, elapsed_secs};
use crate::notify::{Notification, NotificationBody};
use crate::outbound::github::NewDeployment;
use crate::service::{ServiceError, Services};
use crate::store::{Condition, Item, RepoError, StoreError, Write};

/// `META#` kind of a drill, named by environment.
pub const DRILL_META: &str = "rollback-drill";
/// `META#` kind pointing from a leg's GitHub deployment id to its drill.
pub const LEG_META: &str = "rollback-drill-leg";
/// How long one leg may go without a final status.
pub const LEG_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How far back the previous good version is looked for.
const LOOKBACK_DAYS: i64 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillStatus {
    Running,
    Passed,
    Failed,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegName {
    /// Back to the previous good sha.
    Rollback,
    /// Forward again to the current sha.
    Restore,
}

/// One GitHub deployment of a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillLeg {
    pub name: LegName,
    pub sha: String,
    pub github_deployment_id: u64,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The final GitHub status (`success`, `failure`, `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<GitHubDeploymentState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// One drill of one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    pub id: String,
    pub environment: String,
    pub repo: String,
    pub installation_id: u64,
    pub current_sha: String,
    pub previous_sha: String,
    pub status: DrillStatus,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub legs: Vec<DrillLeg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Drill {
    fn leg_seconds(&self, name: LegName) -> Option<f64> {
        self.legs
            .iter()
            .find(|l| l.name == name)
            .and_then(|l| l.seconds)
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let short = |s: &str| short_sha(s).to_string();
        let secs = |s: Option<f64>| {
            s.map(crate::domain::dora::human_duration)
                .unwrap_or_else(|| "n/a".into())
        };
        match self.status {
            DrillStatus::Running => format!(
                "rollback drill running in {}: {} → {} → {}",
                self.environment,
                short(&self.current_sha),
                short(&self.previous_sha),
                short(&self.current_sha)
            ),
            DrillStatus::Passed => format!(
                "rollback drill passed in {}: rolled back to {} in {}, restored {} in {}",
                self.environment,
                short(&self.previous_sha),
                secs(self.leg_seconds(LegName::Rollback)),
                short(&self.current_sha),
                secs(self.leg_seconds(LegName::Restore)),
            ),
            DrillStatus::Failed | DrillStatus::TimedOut => format!(
                "rollback drill {} in {}: {}",
                if self.status == DrillStatus::Failed {
                    "failed"
                } else {
                    "timed out"
                },
                self.environment,
                self.reason.as_deref().unwrap_or("no reason recorded")
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LegPointer {
    environment: String,
    /// The drill's repository (absent on pointers written before drills were per scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repo: Option<String>,
    drill_id: String,
}

/// The sort key of a scope's drill under `META#rollback-drill`.
fn drill_sk(repo: &str, environment: &str) -> String {
    format!("{repo}#{environment}")
}

fn meta_pk(kind: &str) -> String {
    format!("META#{kind}")
}

fn corrupt(e: serde_json::Error) -> ServiceError {
    ServiceError::Repo(RepoError::Corrupt {
        what: "rollback drill".into(),
        source: e,
    })
}

/// The scope's latest drill, with its stored version.
pub async fn load(svc: &Services, scope: &Scope) -> Result<Option<(Drill, u64)>, ServiceError> {
    load_sk(
        svc,
        &drill_sk(scope.repo.as_str(), scope.environment.as_str()),
    )
    .await
}

async fn load_sk(svc: &Services, sk: &str) -> Result<Option<(Drill, u64)>, ServiceError> {
    let Some(item) = svc
        .repo
        .store()
        .get(&meta_pk(DRILL_META), sk)
        .await
        .map_err(RepoError::from)?
    else {
        return Ok(None);
    };
    let drill: Drill = serde_json::from_str(&item.data).map_err(corrupt)?;
    Ok(Some((drill, item.version)))
}

/// Saves a drill if nobody saved it since `version` was read (0: it must not exist).
/// Returns false when someone else did.
async fn save(svc: &Services, drill: &Drill, version: u64) -> Result<bool, ServiceError> {
    let data = serde_json::to_string(drill).map_err(corrupt)?;
    let condition = if version == 0 {
        Condition::Absent { now: i64::MIN }
    } else {
        Condition::Version(version)
    };
    let write = Write::Put {
        item: Item {
            pk: meta_pk(DRILL_META),
            sk: drill_sk(&drill.repo, &drill.environment),
            version: version + 1,
            expires_at: None,
            timeline: None,
            data,
        },
        condition,
    };
    match svc.repo.store().write(write).await {
        Ok(()) => Ok(true),
        Err(StoreError::ConditionFailed { .. } | StoreError::Conflict) => Ok(false),
        Err(e) => Err(RepoError::from(e).into()),
    }
}

/// Creates one leg's GitHub deployment and points its id at the drill.
async fn create_leg(
    svc: &Services,
    drill: &Drill,
    name: LegName,
    sha: &str,
) -> Result<DrillLeg, String> {
    let Some(github) = svc.github.as_ref() else {
        return Err("no GitHub App is configured".into());
    };
    let mut deployment = NewDeployment::new(sha, drill.environment.clone());
    let leg = match name {
        LegName::Rollback => "rollback",
        LegName::Restore => "restore",
    };
    deployment.description = Some(format!(
        "shipgate rollback drill {}: {leg} to {}",
        drill.id,
        short_sha(sha)
    ));
    deployment.payload =
        serde_json::json!({ "shipgate_drill": drill.id, "shipgate_drill_leg": leg });
    let id = github
        .create_deployment(drill.installation_id, &drill.repo, &deployment)
        .await
        .map_err(|e| format!("creating the {leg} deployment failed: {e}"))?;
    svc.repo
        .put_meta(
            LEG_META,
            &id.to_string(),
            &LegPointer {
                environment: drill.environment.clone(),
                repo: Some(drill.repo.clone()),
                drill_id: drill.id.clone(),
            },
        )
        .await
        .map_err(|e| format!("recording the {leg} deployment {id} failed: {e}"))?;
    Ok(DrillLeg {
        name,
        sha: sha.to_string(),
        github_deployment_id: id,
        created_at: svc.now(),
        finished_at: None,
        state: None,
        seconds: None,
    })
}

/// What starting a drill in one environment did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StartResult {
    Started { drill: Drill },
    Skipped { environment: String, reason: String },
    Failed { environment: String, reason: String },
}

/// Starts a drill in one environment, unless one is running or the environment is busy.
pub async fn start_in(svc: &Services, scope: &Scope) -> Result<StartResult, ServiceError> {
    let now = svc.now();
    let environment = scope.environment.as_str();
    let skipped = |reason: String| {
        Ok(StartResult::Skipped {
            environment: environment.to_string(),
            reason,
        })
    };
    let previous = load(svc, scope).await?;
    if let Some((d, _)) = previous
        .as_ref()
        .filter(|(d, _)| d.status == DrillStatus::Running)
    {
        return skipped(format!("drill {} is still running", d.id));
    }
    if let Some(holder) = svc.repo.lock_holder(scope).await? {
        return skipped(format!("deployment {holder} is in progress"));
    }
    let heads = svc.repo.heads(scope).await?;
    let Some(current) = heads.current else {
        return skipped("nothing has been deployed yet".into());
    };
    let Some(current_dep) = svc.repo.get_deployment(&current.deployment_id).await? else {
        return skipped(format!(
            "the current deployment {} is not recorded",
            current.deployment_id
        ));
    };
    let from = now
        .checked_sub(SignedDuration::from_hours(24 * LOOKBACK_DAYS))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let history = svc
        .repo
        .deployments_in(environment, from, now, true, None)
        .await?;
    let Some(previous_good) = history
        .iter()
        .find(|d| d.repo == scope.repo && d.state == State::Succeeded && d.sha != current.sha)
    else {
        return skipped("no earlier good version to roll back to".into());
    };
    let Some(installation_id) = current_dep
        .installation_id
        .or(previous_good.installation_id)
    else {
        return skipped("no GitHub App installation is known for the repository".into());
    };
    let mut drill = Drill {
        id: format!("drill-{}", uuid::Uuid::now_v7().simple()),
        environment: environment.to_string(),
        repo: current_dep.repo.to_string(),
        installation_id,
        current_sha: current.sha.clone(),
        previous_sha: previous_good.sha.to_string(),
        status: DrillStatus::Running,
        started_at: now,
        finished_at: None,
        legs: Vec::new(),
        reason: None,
    };
    let version = previous.map(|(_, v)| v).unwrap_or(0);
    if !save(svc, &drill, version).await? {
        return skipped("another drill started at the same time".into());
    }
    match create_leg(svc, &drill, LegName::Rollback, &drill.previous_sha.clone()).await {
        Ok(leg) => {
            drill.legs.push(leg);
            // A concurrent save here can only be the sweeper timing the drill out, which
            // already reported it.
            save(svc, &drill, version + 1).await?;
            tracing::info!(environment, drill_id = %drill.id, "rollback drill started");
            Ok(StartResult::Started { drill })
        }
        Err(reason) => {
            drill.status = DrillStatus::Failed;
            drill.finished_at = Some(svc.now());
            drill.reason = Some(reason.clone());
            save(svc, &drill, version + 1).await?;
            Ok(StartResult::Failed {
                environment: environment.to_string(),
                reason,
            })
        }
    }
}

/// Records a finished drill as the job's latest result and announces it (paging on failure).
async fn finish(svc: &Services, drill: &Drill) {
    let now = svc.now();
    let ok = drill.status == DrillStatus::Passed;
    let details = serde_json::to_value(drill).unwrap_or_default();
    let report = JobReport {
        job: JobName::RollbackDrill,
        ok,
        summary: drill.summary(),
        details: details.clone(),
        started_at: drill.started_at,
        finished_at: now,
        scheduled_for: None,
        duplicate: false,
    };
    if let Err(e) = svc
        .repo
        .put_meta("job", JobName::RollbackDrill.as_str(), &report)
        .await
    {
        tracing::error!(error = %e, "could not record the rollback drill result");
    }
    svc.publish(Notification::new(
        now,
        NotificationBody::Job {
            job: JobName::RollbackDrill.as_str().to_string(),
            ok,
            summary: drill.summary(),
            details,
            page: !ok,
        },
    ))
    .await;
}

/// The lifecycle's hook: when `ev` is a status of a drill's GitHub deployment, records it
/// against the drill (starting the next leg on success) and returns true: the lifecycle then
/// reports the status as untracked. False for every other deployment.
pub async fn on_deployment_status(
    svc: &Services,
    ev: &DeploymentStatus,
) -> Result<bool, ServiceError> {
    let Some(ptr) = svc
        .repo
        .get_meta::<LegPointer>(LEG_META, &ev.github_deployment_id.to_string())
        .await?
    else {
        return Ok(false);
    };
    let terminal = ev.state.is_final();
    if !terminal {
        return Ok(true);
    }
    for _ in 0..8 {
        // Pointers written before drills were per scope name no repository: the status
        // comes from the drill's repository.
        let repo = ptr.repo.clone().unwrap_or_else(|| ev.repo.to_string());
        let sk = drill_sk(&repo, &ptr.environment);
        let Some((mut drill, version)) = load_sk(svc, &sk).await? else {
            return Ok(true);
        };
        if drill.id != ptr.drill_id || drill.status != DrillStatus::Running {
            return Ok(true);
        }
        let now = svc.now();
        let Some(leg) = drill
            .legs
            .iter_mut()
            .find(|l| l.github_deployment_id == ev.github_deployment_id)
        else {
            return Ok(true);
        };
        if leg.finished_at.is_some() {
            return Ok(true);
        }
        leg.finished_at = Some(now);
        leg.state = Some(ev.state.clone());
        leg.seconds = Some(elapsed_secs(leg.created_at, now));
        let leg_name = leg.name;
        if ev.state != GitHubDeploymentState::Success {
            drill.status = DrillStatus::Failed;
            drill.finished_at = Some(now);
            drill.reason = Some(format!(
                "the {} deployment {} reported {}{}",
                if leg_name == LegName::Rollback {
                    "rollback"
                } else {
                    "restore"
                },
                ev.github_deployment_id,
                ev.state,
                ev.description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        } else if leg_name == LegName::Restore {
            drill.status = DrillStatus::Passed;
            drill.finished_at = Some(now);
        }
        // Only the status whose save lands goes on, so a redelivered success cannot start
        // the restore leg twice.
        if !save(svc, &drill, version).await? {
            continue;
        }
        if drill.status != DrillStatus::Running {
            finish(svc, &drill).await;
            return Ok(true);
        }
        let current = drill.current_sha.clone();
        match create_leg(svc, &drill, LegName::Restore, &current).await {
            Ok(leg) => drill.legs.push(leg),
            Err(reason) => {
                drill.status = DrillStatus::Failed;
                drill.finished_at = Some(svc.now());
                drill.reason = Some(reason);
            }
        }
        if save(svc, &drill, version + 1).await? && drill.status != DrillStatus::Running {
            finish(svc, &drill).await;
        }
        return Ok(true);
    }
    Err(ServiceError::Contended(format!(
        "rollback drill of {}",
        ptr.environment
    )))
}

/// Times out running drills whose current leg got no final status within [`LEG_TIMEOUT`];
/// returns their ids. Each is announced with a page.
pub async fn time_out_stale(svc: &Services) -> Result<Vec<String>, ServiceError> {
    let mut timed_out = Vec::new();
    let environments: Vec<String> = svc
        .policy
        .environments()
        .filter(|e| e.rollback_drill)
        .map(|e| e.name.clone())
        .collect();
    let mut scopes = Vec::new();
    for env in environments {
        for repo in svc.repo.repositories_in(&env).await? {
            scopes.push((repo, env.clone()));
        }
    }
    for (repo, env) in scopes {
        let Some((mut drill, version)) = load_sk(svc, &drill_sk(repo.as_str(), &env)).await? else {
            continue;
        };
        if drill.status != DrillStatus::Running {
            continue;
        }
        let now = svc.now();
        let (since, what) = match drill.legs.last() {
            Some(leg) => (
                leg.created_at,
                format!(
                    "the {} deployment {} got no final status within {}",
                    if leg.name == LegName::Rollback {
                        "rollback"
                    } else {
                        "restore"
                    },
                    leg.github_deployment_id,
                    crate::domain::dora::human_duration(LEG_TIMEOUT.as_secs_f64())
                ),
            ),
            None => (drill.started_at, "no drill deployment was created".into()),
        };
        if now < add(since, LEG_TIMEOUT) {
            continue;
        }
        drill.status = DrillStatus::TimedOut;
        drill.finished_at = Some(now);
        let left_on =
            if drill.legs.iter().any(|l| {
                l.name == LegName::Rollback && l.state == Some(GitHubDeploymentState::Success)
            }) {
                format!(
                    "; {env} may still run the previous version {}",
                    short_sha(&drill.previous_sha)
                )
            } else {
                String::new()
            };
        drill.reason = Some(format!("{what}{left_on}"));
        if save(svc, &drill, version).await? {
            tracing::warn!(environment = %env, drill_id = %drill.id, "rollback drill timed out");
            finish(svc, &drill).await;
            timed_out.push(drill.id.clone());
        }
    }
    Ok(timed_out)
}
