//! DORA's keys over a time window, per environment: deployment frequency, change lead time,
//! change failure rate and failed deployment recovery time, with time to restore service
//! (every incident) beside them.
//!
//! A report is either an environment's roll-up over every repository ([`report`]) or one
//! repository's in that environment ([`report_for`]): a repository's report counts its own
//! deployments and the incidents that belong to it (blamed on its deployments, or opened in
//! its scope); environment-level incidents count in the roll-up only.
//!
//! Pure: the caller reads deployments, commit times and incidents from the store, turns them
//! into the plain facts below and passes the window in. A figure that is undefined for the
//! window (no deployments, no restored incidents) is `None`, never `0` or `NaN`. The exact
//! definitions, and where they follow or differ from Google's Four Keys, are in `docs/dora.md`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::time::elapsed_secs;

/// `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Window {
    /// The `days` days before `now` (`[now - days, now)`).
    pub fn last_days(now: Timestamp, days: u32) -> Window {
        let from = now
            .checked_sub(SignedDuration::from_hours(24 * i64::from(days)))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        Window { from, to: now }
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        self.from <= t && t < self.to
    }

    /// Whole and part days covered, at least one.
    pub fn days(&self) -> f64 {
        let secs = self.to.duration_since(self.from).as_secs_f64();
        (secs / 86_400.0).max(1.0)
    }

    /// A label such as `7d` (whole days, rounded).
    pub fn label(&self) -> String {
        format!("{}d", self.days().round())
    }
}

/// How one deployment ended, as far as is known when the report is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    /// Reached the environment; its verification window is still open.
    Verifying,
    /// Reached the environment and its verification window passed without a rollback.
    Succeeded,
    /// Reached the environment, then was rolled back (automatically or by hand).
    RolledBack,
    /// The deployment itself failed (a `failure`/`error` status), before or after it reached
    /// the environment.
    Failed,
}

/// One deployment, reduced to what the Four Keys need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentFact {
    pub id: String,
    pub environment: String,
    /// The deployment's repository (`owner/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    pub sha: String,
    /// When the deployment went out: the time its successful status arrived, or for a failed
    /// deployment the time it failed. This is the time the windows are applied to.
    pub at: Timestamp,
    /// Commit time of `sha` (for a squash-merged change, the merge commit's own time), when known.
    pub committed_at: Option<Timestamp>,
    /// Commit times of every commit this deployment was the first to deploy (from the pushes
    /// that led to `sha`); empty when unknown, and then `committed_at` alone is measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commit_times: Vec<Timestamp>,
    pub outcome: DeployOutcome,
    /// Did it reach the environment (GitHub reported it `success`)? Every outcome but
    /// `failed` implies it; a failed deployment may have failed before or after.
    pub reached: bool,
    /// When it was found failing, for a deployment that failed after reaching the
    /// environment or was rolled back: its `failure` status, or the start of its rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    /// When its rollback finished (the last known good version ran again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<Timestamp>,
    /// For a deployment that needed approvals and got them: seconds from its request to the
    /// approval that completed it (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_wait_seconds: Option<u64>,
}

/// One episode of an incident, reduced to what the keys need (an incident that resolved and
/// fired again is one fact per episode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentFact {
    pub id: String,
    /// The episode's number within its incident, from 1.
    #[serde(default)]
    pub episode: u32,
    pub environment: Option<String>,
    /// The repository the incident belongs to; `None` for an environment-level incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// When the episode began (the alert's start).
    pub opened_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    /// The deployment the episode is attributed to: the one verifying when the alert began.
    pub caused_by_deployment: Option<String>,
}

/// Four Keys' deployment frequency bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Daily => "daily",
            Frequency::Weekly => "weekly",
            Frequency::Monthly => "monthly",
            Frequency::Yearly => "yearly",
        }
    }
}

/// The Four Keys of one environment over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoraReport {
    pub environment: String,
    /// The repository the report is about; `None` for the environment's roll-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Is the environment production for DORA (the policy's `production`)?
    #[serde(default)]
    pub production: bool,
    pub window: Window,
    /// When the scope's data began, when that is inside the window: frequency is judged over
    /// `[data_began, to)` instead of the whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_began: Option<Timestamp>,
    /// Deployments that reached the environment in the window (rollbacks are not
    /// deployments; see `rolled_back`).
    pub deployments: u32,
    /// `None` when there were no deployments.
    pub frequency: Option<Frequency>,
    /// `deployments` divided by the days since the window (or the data) began; `None` when
    /// there were no deployments.
    pub deployments_per_day: Option<f64>,
    /// Median of (deployed − committed) in seconds over every commit the window's deployments
    /// were the first to deploy.
    pub lead_time_seconds: Option<f64>,
    /// How many commits were measured.
    pub lead_time_samples: u32,
    /// Deployments in the window that failed before reaching the environment: not
    /// deployments, and not in the change failure rate.
    #[serde(default)]
    pub failed_before_reaching: u32,
    /// Deployments whose outcome is known (not still verifying, or already blamed for an
    /// incident): the change failure rate's denominator.
    pub judged_deployments: u32,
    /// Judged deployments that failed, were rolled back, or caused an incident.
    pub failed_changes: u32,
    /// `failed_changes / judged_deployments`, between 0 and 1; `None` without judged deployments.
    pub change_failure_rate: Option<f64>,
    /// Failed deployment recovery time: median of (recovered − failed) in seconds over the
    /// window's failed changes that have recovered.
    #[serde(default)]
    pub recovery_seconds: Option<f64>,
    #[serde(default)]
    pub recovered_failures: u32,
    /// Failed changes of the window not recovered yet.
    #[serde(default)]
    pub unrecovered_failures: u32,
    /// Time to restore service over every incident: median of (resolved − began) in seconds
    /// over incident episodes that began and resolved in the window.
    pub time_to_restore_seconds: Option<f64>,
    /// Episodes measured for `time_to_restore_seconds`.
    pub restored_incidents: u32,
    /// Episodes that began in the window and are still open.
    pub open_incidents: u32,
    /// Deployments in the window that were rolled back (automatically or by hand).
    #[serde(default)]
    pub rolled_back: u32,
    /// Median of the approval waits of the window's deployments that needed approvals.
    #[serde(default)]
    pub approval_wait_seconds: Option<f64>,
    #[serde(default)]
    pub approval_wait_samples: u32,
}

/// Median with linear interpolation (BigQuery's `PERCENTILE_CONT(x, 0.5)`, as Four Keys uses).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        Some(v[n / 2])
    } else {
        Some((v[n / 2 - 1] + v[n / 2]) / 2.0)
    }
}

fn utc_date(t: Timestamp) -> Date {
    t.to_zoned(TimeZone::UTC).date()
}

/// The Sunday starting `d`'s week (BigQuery's `TIMESTAMP_TRUNC(x, WEEK)`): the weeks of the
/// frequency class and of the kept weekly history.
pub fn week_start(d: Date) -> Date {
    let back = i64::from(d.weekday().to_sunday_zero_offset());
    d.checked_sub(jiff::Span::new().days(back)).unwrap_or(d)
}

/// Four Keys' frequency bucket for deployments on `deploy_days` (UTC dates) over `window`.
///
/// Every UTC day of the window belongs to a week (Sunday to Saturday; the first and last weeks
/// may be partial). Per week: the number of distinct days with a deployment, and whether it had
/// one at all. Per month (of the week's Sunday): the number of weeks with a deployment.
/// Daily when the median days-with-a-deploy per week is at least 3; otherwise weekly when the
/// median of "week had a deploy" (0 or 1) is at least 1, i.e. most weeks had one; otherwise
/// monthly when the median over weeks of their month's deploying-week count is at least 1;
/// otherwise yearly.
pub fn frequency_bucket(window: &Window, deploy_days: &BTreeSet<Date>) -> Frequency {
    let first = utc_date(window.from);
    // `to` is exclusive: its own day counts only when the window ends after midnight.
    let to_zoned = window.to.to_zoned(TimeZone::UTC);
    let last_exclusive = if to_zoned.time() == jiff::civil::Time::midnight() {
        to_zoned.date()
    } else {
        to_zoned
            .date()
            .tomorrow()
            .unwrap_or_else(|_| to_zoned.date())
    };
    let mut weeks: BTreeMap<Date, (u32, bool)> = BTreeMap::new();
    let mut day = first;
    while day < last_exclusive {
        let entry = weeks.entry(week_start(day)).or_insert((0, false));
        if deploy_days.contains(&day) {
            entry.0 += 1;
            entry.1 = true;
        }
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    if weeks.is_empty() {
        return Frequency::Yearly;
    }
    let days_deployed: Vec<f64> = weeks.values().map(|(d, _)| f64::from(*d)).collect();
    let week_deployed: Vec<f64> = weeks
        .values()
        .map(|(_, w)| if *w { 1.0 } else { 0.0 })
        .collect();
    let mut per_month: BTreeMap<(i16, i8), u32> = BTreeMap::new();
    for (start, (_, deployed)) in &weeks {
        *per_month.entry((start.year(), start.month())).or_default() += u32::from(*deployed);
    }
    let monthly: Vec<f64> = weeks
        .keys()
        .map(|start| f64::from(per_month[&(start.year(), start.month())]))
        .collect();
    if median(&days_deployed).is_some_and(|m| m >= 3.0) {
        Frequency::Daily
    } else if median(&week_deployed).is_some_and(|m| m >= 1.0) {
        Frequency::Weekly
    } else if median(&monthly).is_some_and(|m| m >= 1.0) {
        Frequency::Monthly
    } else {
        Frequency::Yearly
    }
}

/// The keys of `environment` over `window`.
///
/// `deployments` and `incidents` may hold other environments and other times; only the
/// relevant ones are used. Incidents are matched to deployments by id for the change failure
/// rate whenever they were opened, so a deployment in the window that caused an incident after
/// the window still counts as a failed change.
pub fn report(
    environment: &str,
    window: Window,
    deployments: &[DeploymentFact],
    incidents: &[IncidentFact],
) -> DoraReport {
    report_for(environment, None, window, deployments, incidents)
}

/// The keys of repository `repo` in `environment` over `window` (`None`: the roll-up over
/// every repository, as [`report`]).
pub fn report_for(
    environment: &str,
    repo: Option<&str>,
    window: Window,
    deployments: &[DeploymentFact],
    incidents: &[IncidentFact],
) -> DoraReport {
    report_scoped(environment, repo, window, deployments, incidents, None)
}

/// The deployment of the same scope that went out first after `after` and stayed good (the
/// fix), if any.
fn next_good<'a>(
    d: &DeploymentFact,
    after: Timestamp,
    deployments: &'a [DeploymentFact],
    blamed: &HashSet<&str>,
) -> Option<&'a DeploymentFact> {
    deployments
        .iter()
        .filter(|n| n.environment == d.environment && n.repo == d.repo && n.id != d.id)
        .filter(|n| n.reached && n.at > after)
        .filter(|n| {
            matches!(
                n.outcome,
                DeployOutcome::Succeeded | DeployOutcome::Verifying
            )
        })
        .filter(|n| !blamed.contains(n.id.as_str()))
        .min_by_key(|n| n.at)
}

/// Failed deployment recovery of one failed change: from when it was found failing (its
/// failure, the start of its rollback or the first episode attributed to it, whichever came
/// first; else when it went out) to the first of: its rollback finishing, the fix going out,
/// every episode attributed to it resolving. `None` while none of these has happened.
fn recovery(
    d: &DeploymentFact,
    deployments: &[DeploymentFact],
    incidents: &[IncidentFact],
    blamed: &HashSet<&str>,
) -> Option<f64> {
    let ours: Vec<&IncidentFact> = incidents
        .iter()
        .filter(|i| i.caused_by_deployment.as_deref() == Some(d.id.as_str()))
        .collect();
    let start = ours
        .iter()
        .map(|i| i.opened_at)
        .chain(d.failed_at)
        .min()
        .unwrap_or(d.at);
    let all_resolved = (!ours.is_empty() && ours.iter().all(|i| i.resolved_at.is_some()))
        .then(|| ours.iter().filter_map(|i| i.resolved_at).max())
        .flatten();
    let end = [
        d.recovered_at,
        next_good(d, start, deployments, blamed).map(|n| n.at),
        all_resolved,
    ]
    .into_iter()
    .flatten()
    .min()?;
    Some(elapsed_secs(start, end))
}

/// [`report_for`], judging frequency over `[data_began, to)` when the scope's data began
/// inside the window.
pub fn report_scoped(
    environment: &str,
    repo: Option<&str>,
    window: Window,
    deployments: &[DeploymentFact],
    incidents: &[IncidentFact],
    data_began: Option<Timestamp>,
) -> DoraReport {
    let ours = |d: &&DeploymentFact| repo.is_none_or(|r| d.repo.as_deref() == Some(r));
    let in_window: Vec<&DeploymentFact> = deployments
        .iter()
        .filter(|d| d.environment == environment && window.contains(d.at))
        .filter(ours)
        .collect();
    let our_ids: HashSet<&str> = deployments
        .iter()
        .filter(ours)
        .map(|d| d.id.as_str())
        .collect();
    let reached: Vec<&DeploymentFact> = in_window.iter().copied().filter(|d| d.reached).collect();
    let failed_before_reaching = in_window.len() - reached.len();

    // Frequency is judged over the time there is data for, when that is shorter.
    let data_began = data_began.filter(|b| *b > window.from && *b < window.to);
    let judged_span = Window {
        from: data_began.unwrap_or(window.from),
        to: window.to,
    };
    let deployments_count = u32::try_from(reached.len()).unwrap_or(u32::MAX);
    let deploy_days: BTreeSet<Date> = reached.iter().map(|d| utc_date(d.at)).collect();
    let frequency = (!reached.is_empty()).then(|| frequency_bucket(&judged_span, &deploy_days));
    let deployments_per_day =
        (!reached.is_empty()).then(|| f64::from(deployments_count) / judged_span.days());

    // Every commit a deployment was the first to deploy; the head commit when the pushes
    // are unknown. A commit stamped after its own deployment is clock skew: 0, not negative.
    let lead_times: Vec<f64> = reached
        .iter()
        .flat_map(|d| {
            let times: Vec<Timestamp> = if d.commit_times.is_empty() {
                d.committed_at.into_iter().collect()
            } else {
                d.commit_times.clone()
            };
            times.into_iter().map(move |c| elapsed_secs(c, d.at))
        })
        .collect();

    let caused: HashSet<&str> = incidents
        .iter()
        .filter_map(|i| i.caused_by_deployment.as_deref())
        .collect();
    let mut judged = 0u32;
    let mut failed = 0u32;
    let mut recoveries = Vec::new();
    let mut unrecovered = 0u32;
    for d in &reached {
        let blamed = caused.contains(d.id.as_str());
        let is_failure =
            blamed || matches!(d.outcome, DeployOutcome::RolledBack | DeployOutcome::Failed);
        if d.outcome == DeployOutcome::Verifying && !blamed {
            continue;
        }
        judged += 1;
        if is_failure {
            failed += 1;
            match recovery(d, deployments, incidents, &caused) {
                Some(secs) => recoveries.push(secs),
                None => unrecovered += 1,
            }
        }
    }
    let change_failure_rate = (judged > 0).then(|| f64::from(failed) / f64::from(judged));
    let rolled_back = in_window
        .iter()
        .filter(|d| d.outcome == DeployOutcome::RolledBack)
        .count();
    let approval_waits: Vec<f64> = in_window
        .iter()
        .filter_map(|d| d.approval_wait_seconds)
        .map(|s| s as f64)
        .collect();

    let env_incidents: Vec<&IncidentFact> = incidents
        .iter()
        .filter(|i| i.environment.as_deref() == Some(environment) && window.contains(i.opened_at))
        .filter(|i| {
            repo.is_none_or(|r| {
                i.repository.as_deref() == Some(r)
                    || i.caused_by_deployment
                        .as_deref()
                        .is_some_and(|d| our_ids.contains(d))
            })
        })
        .collect();
    let restore_times: Vec<f64> = env_incidents
        .iter()
        .filter_map(|i| i.resolved_at.map(|r| elapsed_secs(i.opened_at, r)))
        .collect();
    let open_incidents = env_incidents
        .iter()
        .filter(|i| i.resolved_at.is_none())
        .count();

    DoraReport {
        environment: environment.to_string(),
        repo: repo.map(str::to_string),
        production: false,
        window,
        data_began,
        deployments: deployments_count,
        frequency,
        deployments_per_day,
        lead_time_seconds: median(&lead_times),
        lead_time_samples: u32::try_from(lead_times.len()).unwrap_or(u32::MAX),
        failed_before_reaching: u32::try_from(failed_before_reaching).unwrap_or(u32::MAX),
        judged_deployments: judged,
        failed_changes: failed,
        change_failure_rate,
        recovery_seconds: median(&recoveries),
        recovered_failures: u32::try_from(recoveries.len()).unwrap_or(u32::MAX),
        unrecovered_failures: unrecovered,
        time_to_restore_seconds: median(&restore_times),
        restored_incidents: u32::try_from(restore_times.len()).unwrap_or(u32::MAX),
        open_incidents: u32::try_from(open_incidents).unwrap_or(u32::MAX),
        rolled_back: u32::try_from(rolled_back).unwrap_or(u32::MAX),
        approval_wait_seconds: median(&approval_waits),
        approval_wait_samples: u32::try_from(approval_waits.len()).unwrap_or(u32::MAX),
    }
}

/// A duration for people: `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

impl DoraReport {
    /// One line for people: `production, last 30d: 12 deployments (weekly), lead time 3h 20m,
    /// change failure rate 8%, recovery 4m 10s, time to restore 45m 0s`.
    pub fn summary(&self) -> String {
        let freq = match self.frequency {
            Some(f) => format!(
                "{} deployment{} ({})",
                self.deployments,
                if self.deployments == 1 { "" } else { "s" },
                f.as_str()
            ),
            None => "no deployments".to_string(),
        };
        let lead = self
            .lead_time_seconds
            .map(human_duration)
            .unwrap_or_else(|| "n/a".into());
        let cfr = self
            .change_failure_rate
            .map(|r| format!("{:.0}%", r * 100.0))
            .unwrap_or_else(|| "n/a".into());
        let ttr = self
            .time_to_restore_seconds
            .map(human_duration)
            .unwrap_or_else(|| "n/a".into());
        let recovery = self
            .recovery_seconds
            .map(human_duration)
            .unwrap_or_else(|| "n/a".into());
        let place = match &self.repo {
            Some(repo) => format!("{repo} · {}", self.environment),
            None => self.environment.clone(),
        };
        format!(
            "{place}, last {}: {freq}, lead time {lead}, change failure rate {cfr}, recovery {recovery}, time to restore {ttr}",
            self.window.label()
        )
    }
}
