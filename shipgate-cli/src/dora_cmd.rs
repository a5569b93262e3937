//! `shipgate dora`: the DORA figures the `dora-report` job kept, one row per day (or, with
//! `--weekly`, per calendar week), environment, scope (the environment's roll-up, or one
//! repository) and window: a quarter's chart is a read of the kept days, not a
//! recomputation. Production environments come first. `--json` prints one object per row
//! (the whole report and its day), `--csv` a header and one line per row.

use jiff::civil::Date;
use jiff::Timestamp;
use serde_json::json;
use shipgate::domain::dora::{human_duration, DoraReport};
use shipgate_cli::error::CliError;
use shipgate_cli::state::State;

use crate::output::{emit, parse_repo, table};

/// How the rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

pub struct DoraOptions {
    pub state: State,
    pub policy_file: Option<std::path::PathBuf>,
    pub environment: Option<String>,
    pub repo: Option<String>,
    /// `7d`, `30d` or `90d`.
    pub window: String,
    /// The kept calendar weeks instead of the days' rolling windows.
    pub weekly: bool,
    /// Days back from today.
    pub days: u32,
    pub format: Format,
}

/// `shipgate dora`.
pub async fn run(opts: DoraOptions) -> Result<(), CliError> {
    if !["7d", "30d", "90d"].contains(&opts.window.as_str()) {
        return Err(CliError::Usage(format!(
            "--window {:?}: the report keeps 7d, 30d and 90d",
            opts.window
        )));
    }
    let environments = opts
        .state
        .environments(
            opts.environment.as_deref(),
            opts.policy_file.as_deref(),
            "show",
        )
        .await?;
    let only = parse_repo(opts.repo.as_deref())?;
    let repo = opts.state.repo()?;
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let from = today
        .checked_sub(jiff::Span::new().days(i64::from(opts.days)))
        .unwrap_or(Date::MIN);
    let mut rows: Vec<(Date, usize, DoraReport)> = Vec::new();
    for env in &environments {
        let kept = if opts.weekly {
            repo.dora_weeks(env, from).await?
        } else {
            repo.dora_days(env, from).await?
        };
        for day in kept {
            for report in day.reports {
                let scope_ok = match &only {
                    Some(r) => report.repo.as_deref() == Some(r.as_str()),
                    None => report.repo.is_none(),
                };
                if scope_ok && (opts.weekly || report.window.label() == opts.window) {
                    // Production first, then the policy's order.
                    let rank = usize::from(!report.production);
                    rows.push((day.day, rank, report));
                }
            }
        }
    }
    // A stable sort keeps the policy's order within production and the rest.
    rows.sort_by_key(|(day, rank, _)| (*day, *rank));
    let rows: Vec<(Date, DoraReport)> = rows.into_iter().map(|(d, _, r)| (d, r)).collect();
    let period = if opts.weekly { "week" } else { "day" };
    let text = match opts.format {
        Format::Json => rows
            .iter()
            .map(|(day, r)| {
                let mut v = json!(r);
                v[period] = json!(day.to_string());
                format!("{v}\n")
            })
            .collect(),
        Format::Csv => {
            let mut out = format!("{period},environment,repository,production,window,deployments,frequency,lead_time_seconds,lead_time_commits,change_failure_rate,judged_deployments,failed_changes,failed_before_reaching,recovery_seconds,recovered_failures,time_to_restore_seconds,restored_incidents,rolled_back,approval_wait_seconds\n");
            let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
            for (day, r) in &rows {
                let fields = [
                    day.to_string(),
                    r.environment.clone(),
                    r.repo.clone().unwrap_or_default(),
                    r.production.to_string(),
                    r.window.label(),
                    r.deployments.to_string(),
                    r.frequency.map(|f| f.as_str()).unwrap_or("").to_owned(),
                    num(r.lead_time_seconds),
                    r.lead_time_samples.to_string(),
                    num(r.change_failure_rate),
                    r.judged_deployments.to_string(),
                    r.failed_changes.to_string(),
                    r.failed_before_reaching.to_string(),
                    num(r.recovery_seconds),
                    r.recovered_failures.to_string(),
                    num(r.time_to_restore_seconds),
                    r.restored_incidents.to_string(),
                    r.rolled_back.to_string(),
                    num(r.approval_wait_seconds),
                ];
                out.push_str(&fields.join(","));
                out.push('\n');
            }
            out
        }
        Format::Table => {
            if rows.is_empty() {
                "no DORA figures kept yet (`shipgate job dora-report` makes today's)\n".to_owned()
            } else {
                let human = |v: Option<f64>| v.map(human_duration).unwrap_or_else(|| "-".into());
                let body: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(day, r)| {
                        vec![
                            day.to_string(),
                            r.environment.clone(),
                            r.deployments.to_string(),
                            r.frequency.map(|f| f.as_str()).unwrap_or("-").to_owned(),
                            human(r.lead_time_seconds),
                            r.change_failure_rate
                                .map(|c| format!("{:.0}%", c * 100.0))
                                .unwrap_or_else(|| "-".into()),
                            human(r.recovery_seconds),
                            human(r.time_to_restore_seconds),
                            r.rolled_back.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        if opts.weekly { "WEEK" } else { "DAY" },
                        "ENVIRONMENT",
                        "DEPLOYS",
                        "FREQUENCY",
                        "LEAD TIME",
                        "FAILURE RATE",
                        "RECOVERY",
                        "RESTORE (ALL)",
                        "ROLLED BACK",
                    ],
                    &body,
                )
            }
        }
    };
    emit(&text)
}
