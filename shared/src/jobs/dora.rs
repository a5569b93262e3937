//! The DORA report job: reads deployments, commit times and incidents of every policy
//! environment, computes the Four Keys ([`crate::domain::dora`]) over the last 7, 30 and 90
//! days, stores them (`META#dora` / `{environment}`), prints one EMF line per metric per
//! environment per window, and announces a summary.

use std::collections::HashMap;

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

/// When the deployment went out: the `begin_verification` (or, for a failure, `fail`) audit
/// event; failing that, the start of its verification window, its end, or its creation.
fn deployed_at(
    dep: &Deployment,
    outcome: DeployOutcome,
    audit_times: &HashMap<(String, String), Timestamp>,
    window: SignedDuration,
) -> Timestamp {
    let action = if outcome == DeployOutcome::Failed {
        "fail"
    } else {
        "begin_verification"
    };
    if let Some(t) = audit_times.get(&(dep.id.clone(), action.to_string())) {
        return *t;
    }
    if outcome != DeployOutcome::Failed {
        if let Some(t) = dep.verify_until.and_then(|u| u.checked_sub(window).ok()) {
            return t;
        }
    }
    dep.finished_at
        .or(dep.deploy_started_at)
        .unwrap_or(dep.created_at)
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

/// The facts of one environment over `[from, to)`.
pub async fn facts(
    svc: &Services,
    environment: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<(Vec<DeploymentFact>, Vec<IncidentFact>), RepoError> {
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
    let mut commit_times: HashMap<(String, String), Option<Timestamp>> = HashMap::new();
    let mut out = Vec::new();
    for dep in deployments
        .iter()
        .filter(|d| d.kind == DeploymentKind::Deploy)
    {
        let Some(outcome) = outcome_of(dep.state) else {
            continue;
        };
        let key = (dep.repo.to_string(), dep.sha.to_string());
        let committed_at = match commit_times.get(&key) {
            Some(t) => *t,
            None => {
                let t = svc
                    .repo
                    .sha_facts(dep.repo.as_str(), dep.sha.as_str(), "COMMIT")
                    .await?
                    .into_iter()
                    .map(|(_, f)| f.at)
                    .min();
                commit_times.insert(key, t);
                t
            }
        };
        out.push(DeploymentFact {
            id: dep.id.clone(),
            environment: dep.environment.to_string(),
            repo: Some(dep.repo.to_string()),
            sha: dep.sha.to_string(),
            at: deployed_at(dep, outcome, &audit_times, window),
            committed_at,
            outcome,
            approval_wait_seconds: approval_wait(dep),
        });
    }
    let incidents = svc
        .repo
        .incidents_in(environment, from, Timestamp::MAX)
        .await?
        .into_iter()
        .map(|i| IncidentFact {
            id: i.id,
            environment: i.environment,
            repository: i.repository.map(String::from),
            opened_at: i.opened_at,
            resolved_at: i.resolved_at,
            caused_by_deployment: i.caused_by_deployment,
        })
        .collect();
    Ok((out, incidents))
}

/// The Four Keys of every policy environment over [`WINDOWS`], ending at `now`: each
/// environment's roll-up, and, where more than one repository deployed to the environment in
/// the widest window, each repository's own report after it (with a single repository the
/// roll-up is its report).
pub async fn reports(svc: &Services, now: Timestamp) -> Result<Vec<DoraReport>, RepoError> {
    let widest = WINDOWS.iter().copied().max().unwrap_or(90);
    let from = Window::last_days(now, widest).from;
    let mut out = Vec::new();
    let environments: Vec<String> = svc.policy.environments().map(|e| e.name.clone()).collect();
    for env in environments {
        let (deployments, incidents) = facts(svc, &env, from, now).await?;
        let repos: std::collections::BTreeSet<&str> = deployments
            .iter()
            .filter_map(|d| d.repo.as_deref())
            .collect();
        let mut scopes: Vec<Option<&str>> = vec![None];
        if repos.len() > 1 {
            scopes.extend(repos.iter().copied().map(Some));
        }
        for repo in scopes {
            for days in WINDOWS {
                out.push(dora::report_for(
                    &env,
                    repo,
                    Window::last_days(now, days),
                    &deployments,
                    &incidents,
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
    let all = reports(svc, now).await?;
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
    let details = serde_json::json!({ "generated_at": now, "reports": all });
    Ok(JobOutcome::ok(summary, details).announced())
}
