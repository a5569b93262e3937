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
use shipgate::jobs::backup::TableBackups;
use shipgate::jobs::{self, JobContext, JobName, MetricSink};
use shipgate_cli::error::CliError;

use crate::ops::Operator;

pub struct JobOptions {
    pub name: String,
    pub data_dir: PathBuf,
    pub policy_file: PathBuf,
    pub json: bool,
}

pub async fn run(opts: JobOptions, vars: &dyn Vars) -> Result<(), CliError> {
    let job: JobName = opts
        .name
        .parse()
        .map_err(|e: jobs::UnknownJob| CliError::Usage(e.to_string()))?;
    let op = Operator::open(&opts.data_dir, &opts.policy_file, vars).await?;
    let backups = TableBackups::embedded(&opts.data_dir, Arc::clone(op.services.repo.store()))
        .map_err(CliError::Backups)?
        .with_metrics(MetricSink::Off);
    let ctx = JobContext::new(op.services.clone(), op.http.clone())
        .with_backups(Arc::new(backups))
        .with_metrics(MetricSink::Off);
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
