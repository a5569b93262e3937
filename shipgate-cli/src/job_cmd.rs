//! `shipgate job NAME`: runs one scheduled job now, on demand, the way the schedule would
//! (recorded as the job's last result, announced when it fails), but never deduplicated.
//!
//! Prints the job's one-line summary, or with `--json` the whole report (summary, details,
//! start and finish times). Exit 0 when the job reports ok, 1 when it ran and found a problem
//! or could not run, 2 for an unknown job name.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use shipgate::config::Vars;
use shipgate::jobs::{self, JobContext, JobName, MetricSink};
use shipgate_cli::error::CliError;
use shipgate_cli::state::State;

use crate::ops::Operator;

pub struct JobOptions {
    pub name: String,
    pub state: State,
    pub policy_file: Option<PathBuf>,
    pub json: bool,
}

pub async fn run(opts: JobOptions, vars: &dyn Vars) -> Result<(), CliError> {
    let job: JobName = opts
        .name
        .parse()
        .map_err(|e: jobs::UnknownJob| CliError::Usage(e.to_string()))?;
    let mut op = Operator::open(&opts.state, opts.policy_file.as_deref(), vars).await?;
    let mut ctx =
        JobContext::new(op.services.clone(), op.http.clone()).with_metrics(MetricSink::Off);
    // Without backups configured (on AWS: no bucket or key), `backup` and `restore-drill`
    // report "not configured".
    if let Some(backups) = op.backups.take() {
        ctx = ctx.with_backups(Arc::new(backups.with_metrics(MetricSink::Off)));
    }
    let result = jobs::run(&ctx, job).await;
    drop(ctx);
    op.finish().await;
    let report = result.map_err(CliError::Job)?;

    let mut out = std::io::stdout().lock();
    if opts.json {
        let line = serde_json::to_string(&report).map_err(|e| CliError::Output(e.into()))?;
        writeln!(out, "{line}").map_err(CliError::Output)?;
    } else {
        let mark = if report.ok { "ok" } else { "FAILED" };
        writeln!(out, "{job}: {mark}: {}", report.summary).map_err(CliError::Output)?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(CliError::Reported(format!("{job} reported a problem")))
    }
}
