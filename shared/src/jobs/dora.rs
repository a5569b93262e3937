//! The DORA report job: reads deployments, commit times and incidents of every policy
//! environment, computes the Four Keys ([`crate::domain::dora`]) over the last 7, 30 and 90
//! days, stores them (`META#dora` / `{environment}`), prints one EMF line per metric per
//! environment per window, and announces a summary.

use std::collections::{BTreeSet, HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};

use super::emf::{self, Unit};
use super::{JobContext, JobError, JobOutcome};
use crate::domain::deployment::{Deployment, DeploymentKind, State};
use crate::domain::dora::{self, DeployOutcome, DeploymentFact, DoraReport, IncidentFact, Window};
use crate::service::Services;
use crate::store::RepoError;

/// The windows reported, in days.
pub const WINDOWS: [u32; 3] = [7, 30, 90];

/// `META#` kind holding each environment's latest reports.
pub const DORA_META: &str = "dora";

/// Deployments are looked up by creation time; one may have gone out this long after it was
/// requested (approval TTL, queueing) and still belong to the window.
const CREATION_SLACK_DAYS: i64 = 7;

fn outcome_of(state: State) -> Option<DeployOutcome> {
    match state {
        State::Verifying => Some(DeployOutcome::Verifying),
        State::Succeeded => Some(DeployOutcome::Succeeded),
        State::RollingBack | State::RolledBack => Some(DeployOutcome::RolledBack),
        State::Failed => Some(DeployOutcome::Failed),
        _ => None,
    }
}

/// When the deployment went out, and whether it reached the environment at all: the
/// `begin_verification` audit event (GitHub reported it `success`), else the start of its
/// verification window. A failed deployment with neither never reached the environment; its
/// time is its `fail` event, its end, or its creation.
fn deployed_at(
    dep: &Deployment,
    audit_times: &HashMap<(String, String), Timestamp>,
    window: SignedDuration,
) -> (Timestamp, bool) {
    let audit = |what: &str| {
        audit_times
            .get(&(dep.id.clone(), what.to_string()))
            .copied()
    };
    if let Some(t) = audit("begin_verification")
        .or_else(|| dep.verify_until.and_then(|u| u.checked_sub(window).ok()))
    {
        return (t, true);
    }
    let at = audit("fail")
        .or(dep.finished_at)
        .or(dep.deploy_started_at)
        .unwrap_or(dep.created_at);
    (at, dep.state != State::Failed)
}

/// How many pushes back from a deployed sha the report walks to find the commits it was the
/// first to deploy.
const MAX_PUSH_WALK: usize = 50;

/// The commit times of every commit `sha` was the first to deploy to `environment`: the
/// commits of the pushes that led to it, walking each push's previous head back until a sha
/// that was deployed there before (`deployed_before`, or one whose deployment succeeded
/// there), a new branch, or a sha shipgate saw no push to. Also returns `sha`'s own commit
/// time. One read per push walked; the report job's, never an event's.
async fn commits_of(
    svc: &Services,
    repo: &str,
    sha: &str,
    environment: &str,
    deployed_before: &HashSet<&str>,
) -> Result<(Option<Timestamp>, Vec<Timestamp>), RepoError> {
    let mut record = svc.repo.sha_record(repo, sha).await?;
    let committed_at = record.committed_at;
    let mut times = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for _ in 0..MAX_PUSH_WALK {
        // A sha pushed more than once (to two branches): the push that continues from a sha
        // deployed here, else the first received.
        let Some(push) = record.pushes.iter().min_by_key(|p| {
            let continues = p
                .before
                .as_ref()
                .is_some_and(|b| deployed_before.contains(b.as_str()));
            (!continues, p.received_at)
        }) else {
            break;
        };
        for c in &push.commits {
            if seen.insert(c.sha.to_string()) {
                times.push(c.at);
            }
        }
        let Some(before) = &push.before else {
            break;
        };
        if deployed_before.contains(before.as_str()) {
            break;
        }
        record = svc.repo.sha_record(repo, before.as_str()).await?;
        if record.succeeded_in.contains(environment) {
            break;
        }
    }
    Ok((committed_at, times))
}

/// Seconds from the deployment's request to the approval that completed its count, for a
/// deployment that needed approvals and got them all.
fn approval_wait(dep: &Deployment) -> Option<u64> {
    let needed = usize::try_from(dep.approvals_required).ok()?;
    if needed == 0 {
        return None;
    }
    let mut times: Vec<Timestamp> = dep.approvals.iter().map(|a| a.at).collect();
    times.sort();
    let completed = times.get(needed - 1)?;
    // An approval stamped before its request is clock skew: no wait.
    Some(u64::try_from(completed.duration_since(dep.created_at).as_secs()).unwrap_or(0))
}

/// What the report knows of one environment.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub deployments: Vec<DeploymentFact>,
    /// One per incident episode.
    pub incidents: Vec<IncidentFact>,
    /// When each scope's data began (`None`: the environment's), when inside what was read.
    pub began: HashMap<Option<String>, Timestamp>,
}

/// The facts of one environment over `[from, to)`: its deployments, its incidents' episodes,
/// and when its data began.
pub async fn facts(
    svc: &Services,
    environment: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Facts, RepoError> {
    let created_from = from
        .checked_sub(SignedDuration::from_hours(24 * CREATION_SLACK_DAYS))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let deployments = svc
        .repo
        .deployments_in(environment, created_from, to, false, None)
        .await?;
    let mut audit_times = HashMap::new();
    for e in svc
        .repo
        .audit_for_environment(environment, created_from, to, None)
        .await?
    {
        if e.what == "begin_verification" || e.what == "fail" {
            audit_times.entry((e.deployment_id, e.what)).or_insert(e.at);
        }
    }
    let window = svc
        .policy
        .environment(environment)
        .and_then(|e| SignedDuration::try_from(e.verification_window).ok())
        .unwrap_or(SignedDuration::ZERO);
    let mut timed: Vec<(&Deployment, DeployOutcome, Timestamp, bool)> = deployments
        .iter()
        .filter(|d| d.kind == DeploymentKind::Deploy)
        .filter_map(|d| {
            let outcome = outcome_of(d.state)?;
            let (at, reached) = deployed_at(d, &audit_times, window);
            Some((d, outcome, at, reached))
        })
        .collect();
    timed.sort_by_key(|(_, _, at, _)| *at);
    let mut out = Vec::new();
    // Per repository, the shas that reached the environment so far (in time order): where the
    // walk back through pushes stops.
    let mut deployed: HashMap<String, HashSet<&str>> = HashMap::new();
    for (dep, outcome, at, reached) in timed {
        let before = deployed.entry(dep.repo.to_string()).or_default();
        // A sha that reached the environment before (a redeploy, a re-run) carries no commit
        // it was the first to deploy: no lead-time samples.
        let (committed_at, commit_times) = if before.contains(dep.sha.as_str()) {
            (None, Vec::new())
        } else {
            commits_of(
                svc,
                dep.repo.as_str(),
                dep.sha.as_str(),
                environment,
                before,
            )
            .await?
        };
        if reached {
            before.insert(dep.sha.as_str());
        }
        let failed_at = match outcome {
            DeployOutcome::RolledBack => dep.rollback.as_ref().map(|r| r.started_at),
            DeployOutcome::Failed if reached => audit_times
                .get(&(dep.id.clone(), "fail".to_string()))
                .copied()
                .or(dep.rollback.as_ref().map(|r| r.started_at))
                .or(dep.finished_at),
            _ => None,
        };
        let recovered_at = match outcome {
            DeployOutcome::RolledBack => dep.rollback.as_ref().and_then(|r| r.finished_at),
            _ => None,
        };
        out.push(DeploymentFact {
            id: dep.id.clone(),
            environment: dep.environment.to_string(),
            repo: Some(dep.repo.to_string()),
            sha: dep.sha.to_string(),
            at,
            committed_at,
            commit_times,
            outcome,
            reached,
            failed_at,
            recovered_at,
            approval_wait_seconds: approval_wait(dep),
        });
    }
    let mut incidents = Vec::new();
    for i in svc
        .repo
        .incidents_in(environment, from, Timestamp::MAX)
        .await?
    {
        for (n, episode) in i.all_episodes().into_iter().enumerate() {
            incidents.push(IncidentFact {
                id: i.id.clone(),
                episode: u32::try_from(n + 1).unwrap_or(u32::MAX),
                environment: i.environment.clone(),
                repository: i.repository.as_ref().map(ToString::to_string),
                opened_at: episode.began_at,
                resolved_at: episode.resolved_at,
                caused_by_deployment: episode.caused_by_deployment,
            });
        }
    }
    let began = data_began(svc, environment, created_from, &deployments).await?;
    Ok(Facts {
        deployments: out,
        incidents,
        began,
    })
}

/// When each scope's data began, when the environment's history began inside what the
/// report read (`since`): the first deployment of each repository, and of the environment
/// under `None`. Empty when the environment has deployments from before `since`; the
/// windows are then taken whole. One query, of at most one deployment.
async fn data_began(
    svc: &Services,
    environment: &str,
    since: Timestamp,
    deployments: &[Deployment],
) -> Result<HashMap<Option<String>, Timestamp>, RepoError> {
    let older = svc
        .repo
        .deployments_in(environment, Timestamp::UNIX_EPOCH, since, true, Some(1))
        .await?;
    let mut began = HashMap::new();
    if !older.is_empty() {
        return Ok(began);
    }
    for d in deployments {
        for key in [None, Some(d.repo.to_string())] {
            let entry = began.entry(key).or_insert(d.created_at);
            *entry = (*entry).min(d.created_at);
        }
    }
    Ok(began)
}

/// Every report of one environment over each of `windows`: the roll-up, and, where more
/// than one repository deployed there, each repository's own after it (with a single
/// repository the roll-up is its report).
fn scoped_reports(svc: &Services, env: &str, facts: &Facts, windows: &[Window]) -> Vec<DoraReport> {
    let repos: BTreeSet<&str> = facts
        .deployments
        .iter()
        .filter_map(|d| d.repo.as_deref())
        .collect();
    let mut scopes: Vec<Option<&str>> = vec![None];
    if repos.len() > 1 {
        scopes.extend(repos.iter().copied().map(Some));
    }
    let production = svc.policy.is_production(env);
    let mut out = Vec::new();
    for repo in scopes {
        let began = facts.began.get(&repo.map(str::to_string)).copied();
        for window in windows {
            let mut report = dora::report_scoped(
                env,
                repo,
                *window,
                &facts.deployments,
                &facts.incidents,
                began,
            );
            report.production = production;
            out.push(report);
        }
    }
    out
}

fn midnight(day: jiff::civil::Date) -> Timestamp {
    day.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What one run computes: the rolling windows, and the calendar weeks it refreshes.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every environment's reports over [`WINDOWS`] ending now, production first.
    pub rolling: Vec<DoraReport>,
    /// Per environment: the week (its Sunday) and its reports (the week so far for this
    /// week, the whole week for the last, so late facts settle into it).
    pub weeks: Vec<(String, jiff::civil::Date, Vec<DoraReport>)>,
}

/// Reads each environment's facts once and computes both the rolling windows and the
/// current and previous calendar week.
pub async fn history(svc: &Services, now: Timestamp) -> Result<History, RepoError> {
    let widest = WINDOWS.iter().copied().max().unwrap_or(90);
    let from = Window::last_days(now, widest).from;
    let this_week = dora::week_start(now.to_zoned(jiff::tz::TimeZone::UTC).date());
    let last_week = this_week
        .checked_sub(jiff::Span::new().days(7))
        .unwrap_or(this_week);
    let mut out = History::default();
    for env in svc.policy.environment_names_production_first() {
        let facts = facts(svc, &env, from, now).await?;
        let rolling: Vec<Window> = WINDOWS
            .iter()
            .map(|days| Window::last_days(now, *days))
            .collect();
        out.rolling
            .extend(scoped_reports(svc, &env, &facts, &rolling));
        for (week, to) in [(last_week, midnight(this_week)), (this_week, now)] {
            let window = Window {
                from: midnight(week),
                to,
            };
            if window.to > window.from {
                out.weeks.push((
                    env.clone(),
                    week,
                    scoped_reports(svc, &env, &facts, &[window]),
                ));
            }
        }
    }
    Ok(out)
}

/// The EMF lines of one report: one per defined metric.
pub fn metric_lines(report: &DoraReport, at: Timestamp) -> Vec<String> {
    let label = report.window.label();
    let mut dims = vec![
        ("Environment", report.environment.as_str()),
        ("Window", label.as_str()),
    ];
    if let Some(repo) = &report.repo {
        dims.push(("Repository", repo.as_str()));
    }
    let mut lines = vec![emf::line(
        at,
        &dims,
        "DeploymentFrequency",
        Unit::Count,
        f64::from(report.deployments),
    )];
    lines.push(emf::line(
        at,
        &dims,
        "Rollbacks",
        Unit::Count,
        f64::from(report.rolled_back),
    ));
    let defined = [
        ("ApprovalWait", Unit::Seconds, report.approval_wait_seconds),
        (
            "LeadTimeForChanges",
            Unit::Seconds,
            report.lead_time_seconds,
        ),
        (
            "ChangeFailureRate",
            Unit::Percent,
            report.change_failure_rate.map(|r| r * 100.0),
        ),
        (
            "FailedDeploymentRecoveryTime",
            Unit::Seconds,
            report.recovery_seconds,
        ),
        (
            "TimeToRestore",
            Unit::Seconds,
            report.time_to_restore_seconds,
        ),
    ];
    for (name, unit, value) in defined {
        if let Some(v) = value {
            lines.push(emf::line(at, &dims, name, unit, v));
        }
    }
    lines
}

/// The dora-report job.
pub async fn run(ctx: &JobContext) -> Result<JobOutcome, JobError> {
    let svc = &ctx.services;
    let now = svc.now();
    let History {
        rolling: all,
        weeks,
    } = history(svc, now).await?;
    let mut by_env: std::collections::BTreeMap<String, Vec<&DoraReport>> = Default::default();
    for r in &all {
        for line in metric_lines(r, now) {
            ctx.metrics.emit(line);
        }
        by_env.entry(r.environment.clone()).or_default().push(r);
    }
    let day = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    for (env, reports) in &by_env {
        svc.repo.put_meta(DORA_META, env, reports).await?;
        // The history: one record per environment and day, so a chart over a quarter is a
        // read (a second run the same day replaces the first's).
        let owned: Vec<DoraReport> = reports.iter().map(|r| (*r).clone()).collect();
        svc.repo.put_dora_day(env, day, &owned).await?;
    }
    for (env, week, reports) in &weeks {
        svc.repo.put_dora_week(env, *week, reports).await?;
    }
    // People read the 30-day figures; the others are in the details and the metrics.
    let summary = all
        .iter()
        .filter(|r| r.window.label() == "30d")
        .map(DoraReport::summary)
        .collect::<Vec<_>>()
        .join("\n");
    let summary = if summary.is_empty() {
        "no environments in the policy".to_string()
    } else {
        summary
    };
    let weeks: Vec<serde_json::Value> = weeks
        .iter()
        .map(|(env, week, reports)| {
            serde_json::json!({ "environment": env, "week": week.to_string(), "reports": reports })
        })
        .collect();
    let details = serde_json::json!({ "generated_at": now, "reports": all, "weeks": weeks });
    Ok(JobOutcome::ok(summary, details).announced())
}
