//! The in-process timer that stands in for EventBridge schedules in the self-hosted binary.
//!
//! Each job has an interval; time is cut into slots of that length counted from the Unix
//! epoch (daily jobs: 00:00 UTC, weekly: Thursday 00:00 UTC, the epoch's weekday). A job runs
//! once per slot through [`jobs::run_scheduled`] with the slot's start (RFC 3339) as the tick,
//! which the runner claims in the store: a restart inside a slot, or a second server on the
//! same data directory, does not run it again. A job that cannot run (store down, backups not
//! configured) gives its claim back and is retried `RETRY_AFTER` later within the same slot.
//!
//! Jobs run one at a time in a fixed order — the sweeper first (it answers GitHub), the
//! backup before the restore drill that needs it — so the embedded store sees one job's
//! writes at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use shipgate::jobs::{self, JobContext, JobName};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Within a slot, how long after a job could not run it is tried again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(5 * 60);
/// Never sleep less than this between wake-ups (clock skew between the wall clock the slots
/// use and the monotonic clock the timer uses).
const MIN_SLEEP: Duration = Duration::from_millis(200);

/// The order jobs run in when several are due together.
pub(crate) const ORDER: [JobName; 6] = [
    JobName::Sweeper,
    JobName::HealthProbes,
    JobName::Backup,
    JobName::RestoreDrill,
    JobName::DoraReport,
    JobName::RollbackDrill,
];

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The standard interval of each job.
pub(crate) fn standard_interval(job: JobName) -> Duration {
    Duration::from_secs(match job {
        JobName::Sweeper => 30,
        JobName::HealthProbes => 60,
        JobName::Backup | JobName::RestoreDrill | JobName::DoraReport => DAY,
        // Not in ORDER, so never scheduled: `serve` migrates at start (and the sweeper when
        // the store is behind); `shipgate job migrate` runs it on demand.
        JobName::Migrate => DAY,
        JobName::RollbackDrill => 7 * DAY,
    })
}

/// Which jobs run and how often; a job without an interval does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    every: BTreeMap<JobName, Duration>,
}

impl Schedule {
    /// Every job at its `standard_interval`.
    pub fn standard() -> Self {
        Schedule {
            every: ORDER
                .into_iter()
                .map(|j| (j, standard_interval(j)))
                .collect(),
        }
    }

    /// No jobs at all (an embedded server that drives its jobs itself).
    pub fn none() -> Self {
        Schedule {
            every: BTreeMap::new(),
        }
    }

    /// Runs `job` every `every` (at least one second), or never with `None`.
    pub fn set(&mut self, job: JobName, every: Option<Duration>) {
        match every {
            Some(every) => {
                self.every.insert(job, every.max(Duration::from_secs(1)));
            }
            None => {
                self.every.remove(&job);
            }
        }
    }

    pub fn every(&self, job: JobName) -> Option<Duration> {
        self.every.get(&job).copied()
    }

    /// The scheduled jobs with their intervals, in run order.
    pub fn entries(&self) -> impl Iterator<Item = (JobName, Duration)> + '_ {
        ORDER
            .into_iter()
            .filter_map(|j| self.every(j).map(|every| (j, every)))
    }
}

/// Parses a `--schedule` override: `JOB=EVERY` with EVERY like `30s`, `10m`, `6h`, `1d`,
/// `7d`, or `off`.
pub fn parse_override(s: &str) -> Result<(JobName, Option<Duration>), String> {
    let (job, every) = s
        .split_once('=')
        .ok_or_else(|| format!("expected JOB=EVERY (e.g. backup=12h or sweeper=off), got {s:?}"))?;
    let job: JobName = job.parse().map_err(|e: jobs::UnknownJob| e.to_string())?;
    let every = every.trim();
    if every == "off" {
        return Ok((job, None));
    }
    Ok((job, Some(parse_interval(every)?)))
}

/// `30s`, `10m`, `6h`, `1d`, `2w`.
pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid interval {s:?}: expected a number and s, m, h, d or w (e.g. 30s, 12h, 1d), or off")
    };
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(unit_at);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(bad()),
    }
}

/// The start of the slot of length `every` that contains `now`.
pub(crate) fn slot_start(now: Timestamp, every: Duration) -> Timestamp {
    let len = every.as_secs().max(1) as i64;
    let start = now.as_second().div_euclid(len) * len;
    Timestamp::from_second(start).unwrap_or(now)
}

/// What the scheduler remembers between wake-ups, per job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct JobState {
    /// The slot handled last (ran, or found already handled).
    done: Option<Timestamp>,
    /// Not before this time: the job could not run in the current slot.
    retry_at: Option<Timestamp>,
}

/// Decides what is due; pure, so the timing can be tested without waiting.
#[derive(Debug, Clone)]
pub(crate) struct Planner {
    schedule: Schedule,
    state: BTreeMap<JobName, JobState>,
}

impl Planner {
    pub fn new(schedule: Schedule) -> Self {
        Planner {
            schedule,
            state: BTreeMap::new(),
        }
    }

    /// The jobs due at `now`, in run order, each with its tick (the slot's start).
    pub fn due(&self, now: Timestamp) -> Vec<(JobName, String)> {
        self.schedule
            .entries()
            .filter_map(|(job, every)| {
                let slot = slot_start(now, every);
                let st = self.state.get(&job).copied().unwrap_or_default();
                let handled = st.done == Some(slot);
                let waiting = st.retry_at.is_some_and(|at| at > now && at > slot);
                (!handled && !waiting).then(|| (job, slot.to_string()))
            })
            .collect()
    }

    /// Records that `job` handled the slot containing `now` (`ran`), or could not run.
    pub fn record(&mut self, job: JobName, now: Timestamp, ran: bool) {
        let Some(every) = self.schedule.every(job) else {
            return;
        };
        let st = self.state.entry(job).or_default();
        if ran {
            st.done = Some(slot_start(now, every));
            st.retry_at = None;
        } else {
            st.retry_at = now.checked_add(RETRY_AFTER).ok();
        }
    }

    /// How long from `now` until something may be due.
    pub fn next_wake(&self, now: Timestamp) -> Duration {
        let mut next: Option<Timestamp> = None;
        for (job, every) in self.schedule.entries() {
            let slot = slot_start(now, every);
            let slot_end = slot
                .checked_add(SignedDuration::from_secs(every.as_secs() as i64))
                .unwrap_or(Timestamp::MAX);
            let st = self.state.get(&job).copied().unwrap_or_default();
            let candidate = match st.retry_at {
                Some(at) if at > now && at < slot_end => at,
                _ => slot_end,
            };
            next = Some(next.map_or(candidate, |n| n.min(candidate)));
        }
        let Some(next) = next else {
            return Duration::from_secs(DAY);
        };
        let wait = now.duration_until(next);
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .max(MIN_SLEEP)
    }
}

/// Runs the schedule until `shutdown` becomes true; the job in progress finishes first.
pub(crate) fn spawn_scheduler(
    ctx: JobContext,
    schedule: Schedule,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let intervals: Vec<String> = schedule
            .entries()
            .map(|(j, every)| format!("{j}={}s", every.as_secs()))
            .collect();
        tracing::info!(jobs = %intervals.join(" "), "scheduler started");
        let mut planner = Planner::new(schedule);
        'outer: loop {
            for (job, tick) in planner.due(ctx.services.now()) {
                if *shutdown.borrow() {
                    break 'outer;
                }
                let ran = match jobs::run_scheduled(&ctx, job, &tick).await {
                    Ok(report) if report.duplicate => {
                        tracing::debug!(job = %job, tick, "tick already handled");
                        true
                    }
                    Ok(report) if report.ok => {
                        tracing::info!(job = %job, tick, summary = %report.summary, "job done");
                        true
                    }
                    Ok(report) => {
                        tracing::warn!(job = %job, tick, summary = %report.summary, "job found a problem");
                        true
                    }
                    Err(e) => {
                        tracing::error!(job = %job, tick, error = %e, retry_in_secs = RETRY_AFTER.as_secs(), "job could not run");
                        false
                    }
                };
                planner.record(job, ctx.services.now(), ran);
            }
            let wait = planner.next_wake(ctx.services.now());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => {
                    // An error means the sender is gone, which is a shutdown too.
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::info!("scheduler stopped");
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shipgate::domain::policy::Policy;
    use shipgate::embedded::sqlite::SqliteStore;
    use shipgate::service::Services;
    use shipgate::store::Repo;
    use testkit::ManualClock;
    use testkit::RecordingPublisher;

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn only(job: JobName, every: Duration) -> Schedule {
        let mut s = Schedule::none();
        s.set(job, Some(every));
        s
    }

    #[test]
    fn slots_are_counted_from_the_epoch_so_daily_jobs_tick_at_midnight_utc() {
        let now = t("2026-03-02T10:17:45Z");
        assert_eq!(
            slot_start(now, Duration::from_secs(DAY)),
            t("2026-03-02T00:00:00Z")
        );
        assert_eq!(
            slot_start(now, Duration::from_secs(30)),
            t("2026-03-02T10:17:30Z")
        );
        // 1970-01-01 was a Thursday.
        assert_eq!(
            slot_start(now, Duration::from_secs(7 * DAY)),
            t("2026-02-26T00:00:00Z")
        );
    }

    #[test]
    fn a_job_runs_once_per_slot_and_again_in_the_next() {
        let mut p = Planner::new(only(JobName::Backup, Duration::from_secs(DAY)));
        let now = t("2026-03-02T10:00:00Z");
        assert_eq!(
            p.due(now),
            vec![(JobName::Backup, "2026-03-02T00:00:00Z".to_string())]
        );
        p.record(JobName::Backup, now, true);
        assert!(p.due(t("2026-03-02T23:59:59Z")).is_empty());
        assert_eq!(p.next_wake(now), Duration::from_secs(14 * HOUR));
        assert_eq!(
            p.due(t("2026-03-03T00:00:01Z")),
            vec![(JobName::Backup, "2026-03-03T00:00:00Z".to_string())]
        );
    }

    #[test]
    fn a_job_that_could_not_run_is_retried_later_in_the_same_slot() {
        let mut p = Planner::new(only(JobName::Backup, Duration::from_secs(DAY)));
        let now = t("2026-03-02T10:00:00Z");
        p.record(JobName::Backup, now, false);
        assert!(p.due(t("2026-03-02T10:04:00Z")).is_empty());
        assert_eq!(p.next_wake(now), RETRY_AFTER);
        assert_eq!(p.due(t("2026-03-02T10:05:00Z")).len(), 1);
    }

    #[test]
    fn due_jobs_come_in_run_order_with_the_sweeper_first_and_backup_before_its_drill() {
        let p = Planner::new(Schedule::standard());
        let due: Vec<JobName> = p
            .due(t("2026-03-02T10:00:00Z"))
            .into_iter()
            .map(|(j, _)| j)
            .collect();
        assert_eq!(due, ORDER.to_vec());
        let backup = due.iter().position(|j| *j == JobName::Backup);
        let drill = due.iter().position(|j| *j == JobName::RestoreDrill);
        assert!(backup < drill);
    }

    #[test]
    fn overrides_parse_intervals_and_off_and_name_bad_input() {
        assert_eq!(
            parse_override("backup=12h"),
            Ok((JobName::Backup, Some(Duration::from_secs(12 * HOUR))))
        );
        assert_eq!(parse_override("sweeper=off"), Ok((JobName::Sweeper, None)));
        assert_eq!(
            parse_override("rollback-drill=2w"),
            Ok((JobName::RollbackDrill, Some(Duration::from_secs(14 * DAY))))
        );
        assert!(parse_override("backup")
            .err()
            .is_some_and(|e| e.contains("JOB=EVERY")));
        assert!(parse_override("backups=1d")
            .err()
            .is_some_and(|e| e.contains("unknown job")));
        assert!(parse_override("backup=0s").is_err());
        assert!(parse_override("backup=5x").is_err());
    }

    fn context(clock: &ManualClock) -> JobContext {
        let services = Services {
            repo: Repo::new(Arc::new(SqliteStore::in_memory().expect("sqlite"))),
            policy: Arc::new(Policy::example().expect("example policy")),
            github: None,
            publisher: Arc::new(RecordingPublisher::default()),
            clock: Arc::new(clock.clone()),
            policy_source: None,
        };
        JobContext::new(services, reqwest::Client::new())
            .with_metrics(shipgate::jobs::MetricSink::Off)
    }

    async fn wait_for_report(ctx: &JobContext, job: JobName) -> jobs::JobReport {
        for _ in 0..250 {
            if let Some(r) = ctx
                .services
                .repo
                .get_meta::<jobs::JobReport>("job", job.as_str())
                .await
                .expect("read")
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{job} never ran");
    }

    async fn stop(tx: watch::Sender<bool>, handle: JoinHandle<()>) {
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("scheduler stops promptly")
            .expect("scheduler task");
    }

    #[tokio::test]
    async fn a_restart_inside_the_slot_does_not_run_the_job_again() {
        let clock = ManualClock::new(t("2026-03-02T10:00:00Z"));
        let ctx = context(&clock);

        let (tx, rx) = watch::channel(false);
        let handle = spawn_scheduler(
            ctx.clone(),
            only(JobName::DoraReport, Duration::from_secs(DAY)),
            rx,
        );
        let first = wait_for_report(&ctx, JobName::DoraReport).await;
        stop(tx, handle).await;
        assert_eq!(first.scheduled_for.as_deref(), Some("2026-03-02T00:00:00Z"));
        assert_eq!(first.started_at, t("2026-03-02T10:00:00Z"));

        // Restarted an hour later, same day. The rollback drill runs after the DORA report,
        // so once it has recorded a result the pass is over.
        clock.set(t("2026-03-02T11:00:00Z"));
        let mut schedule = only(JobName::DoraReport, Duration::from_secs(DAY));
        schedule.set(JobName::RollbackDrill, Some(Duration::from_secs(DAY)));
        let (tx, rx) = watch::channel(false);
        let handle = spawn_scheduler(ctx.clone(), schedule, rx);
        wait_for_report(&ctx, JobName::RollbackDrill).await;
        stop(tx, handle).await;
        let after = wait_for_report(&ctx, JobName::DoraReport).await;
        assert_eq!(after, first, "the DORA report did not run a second time");

        // The next day is a new slot.
        clock.set(t("2026-03-03T00:00:05Z"));
        let (tx, rx) = watch::channel(false);
        let handle = spawn_scheduler(
            ctx.clone(),
            only(JobName::DoraReport, Duration::from_secs(DAY)),
            rx,
        );
        let mut next = wait_for_report(&ctx, JobName::DoraReport).await;
        for _ in 0..250 {
            if next.started_at != first.started_at {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            next = wait_for_report(&ctx, JobName::DoraReport).await;
        }
        stop(tx, handle).await;
        assert_eq!(next.scheduled_for.as_deref(), Some("2026-03-03T00:00:00Z"));
    }

    #[tokio::test]
    async fn scheduler_stops_when_shutdown_is_signalled() {
        let clock = ManualClock::new(t("2026-03-02T10:00:00Z"));
        let (tx, rx) = watch::channel(false);
        let handle = spawn_scheduler(context(&clock), Schedule::none(), rx);
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("scheduler stops promptly")
            .expect("scheduler task");
    }
}
