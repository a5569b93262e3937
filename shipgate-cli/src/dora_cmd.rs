//! `shipgate dora`: the DORA figures the `dora-report` job kept, one row per day, environment,
//! scope (the environment's roll-up, or one repository) and window: a quarter's chart is a
//! read of the kept days, not a recomputation. `--json` prints one object per row (the whole
//! report and its day), `--csv` a header and one line per row.

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
    let mut rows: Vec<(Date, DoraReport)> = Vec::new();
    for env in &environments {
        for day in repo.dora_days(env, from).await? {
            for report in day.reports {
                let scope_ok = match &only {
                    Some(r) => report.repo.as_deref() == Some(r.as_str()),
                    None => report.repo.is_none(),
                };
                if scope_ok && report.window.label() == opts.window {
                    rows.push((day.day, report));
                }
            }
        }
    }
    rows.sort_by(|a, b| (a.0, &a.1.environment).cmp(&(b.0, &b.1.environment)));
    let text = match opts.format {
        Format::Json => rows
            .iter()
            .map(|(day, r)| {
                let mut v = json!(r);
                v["day"] = json!(day.to_string());
                format!("{v}\n")
            })
            .collect(),
        Format::Csv => {
            let mut out = String::from("day,environment,repository,window,deployments,frequency,lead_time_seconds,change_failure_rate,time_to_restore_seconds,rolled_back,approval_wait_seconds\n");
            let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
            for (day, r) in &rows {
                out.push_str(&format!(
                    "{day},{},{},{},{},{},{},{},{},{},{}\n",
                    r.environment,
                    r.repo.as_deref().unwrap_or(""),
                    r.window.label(),
                    r.deployments,
                    r.frequency.map(|f| f.as_str()).unwrap_or(""),
                    num(r.lead_time_seconds),
                    num(r.change_failure_rate),
                    num(r.time_to_restore_seconds),
                    r.rolled_back,
                    num(r.approval_wait_seconds),
                ));
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
                            human(r.time_to_restore_seconds),
                            r.rolled_back.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "DAY",
                        "ENVIRONMENT",
                        "DEPLOYS",
                        "FREQUENCY",
                        "LEAD TIME",
                        "FAILURE RATE",
                        "RESTORE",
                        "ROLLED BACK",
                    ],
                    &body,
                )
            }
        }
    };
    emit(&text)
}
