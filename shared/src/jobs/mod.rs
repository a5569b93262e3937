//! The scheduled jobs: backups and restore drills, rollback drills, the DORA report, the
//! sweeper and the synthetic health probes.
//!
//! Each job is one async function over a [`JobContext`]; [`run`] (on demand: `shipgate job
//! NAME`) and [`run_scheduled`] (a schedule tick, claimed once per scheduled time) wrap it the
//! same way: the result is recorded as `META#job` / `{name}`, a `Job` notification goes out
//! when the job has something to say or failed (paging for the jobs that page), and figures are
//! printed as CloudWatch Embedded Metric Format lines ([`emf`]).
//!
//! A job that ran and found a problem (a probe down, a drill that failed) returns an `Ok`
//! report with `ok: false`; [`JobError`] means the job could not run at all (state store
//! unreachable, backups not configured) and the invocation should count as failed.

pub mod analysis;
pub mod backup;
pub mod dora;
pub mod emf;
pub mod predeploy;
pub mod probes;
pub mod rollback_drill;
mod runner;
pub mod sweeper;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Vars;
use crate::service::{ServiceError, Services};
use crate::store::RepoError;

pub use crate::domain::job::{JobName, JobReport, UnknownJob};
pub use emf::MetricSink;
pub use runner::{run, run_scheduled, JOB_CLAIM_TTL};

/// What one job did, before the runner records and announces it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobOutcome {
    pub ok: bool,
    /// One line for people.
    pub summary: String,
    pub details: serde_json::Value,
    /// Announce a successful run too (reports and drills); failures are always announced.
    pub announce: bool,
}

impl JobOutcome {
    pub fn ok(summary: impl Into<String>, details: serde_json::Value) -> Self {
        JobOutcome {
            ok: true,
            summary: summary.into(),
            details,
            announce: false,
        }
    }

    pub fn failed(summary: impl Into<String>, details: serde_json::Value) -> Self {
        JobOutcome {
            ok: false,
            summary: summary.into(),
            details,
            announce: true,
        }
    }

    pub fn announced(mut self) -> Self {
        self.announce = true;
        self
    }
}

/// Why a job could not run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("this job needs {what}, which is not configured")]
    NotConfigured { what: &'static str },
    #[error("{job} failed: {message}")]
    Failed {
        job: JobName,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl From<RepoError> for JobError {
    fn from(e: RepoError) -> Self {
        JobError::Service(ServiceError::Repo(e))
    }
}

/// The backup side of the jobs (`backup`, `restore-drill`). Implemented over the backup
/// module's storage, keys and tables by whoever wires the function; `None` in a
/// [`JobContext`] makes those jobs fail with [`JobError::NotConfigured`].
#[async_trait]
pub trait BackupJobs: Send + Sync {
    async fn backup(&self, svc: &Services) -> Result<JobOutcome, JobError>;
    async fn restore_drill(&self, svc: &Services) -> Result<JobOutcome, JobError>;
    /// Backs up just `tables` (logical names from the policy's `[backups] tables`), without
    /// pruning: the pre-deploy backups. Returns one manifest per table, in order.
    async fn backup_tables(
        &self,
        svc: &Services,
        tables: &[String],
    ) -> Result<Vec<crate::backup::Manifest>, JobError>;
}

/// Everything the jobs need, built once at cold start.
#[derive(Clone)]
pub struct JobContext {
    pub services: Services,
    /// For probes: plain HTTP, no credentials attached.
    pub http: reqwest::Client,
    pub backups: Option<Arc<dyn BackupJobs>>,
    pub metrics: MetricSink,
    /// Where the credentials of the policy's analysis sources are read (the process
    /// environment, on AWS with the secrets overlaid).
    pub vars: Arc<dyn Vars + Send + Sync>,
    /// CloudWatch for analysis sources, where the process has AWS credentials.
    pub cloudwatch: Option<Arc<dyn crate::service::analysis::CloudWatchSources>>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("services", &self.services)
            .field("backups", &self.backups.is_some())
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// This context under the policy in force now (see [`Services::refreshed`]).
    pub fn refreshed(&self) -> JobContext {
        JobContext {
            services: self.services.refreshed(),
            ..self.clone()
        }
    }

    /// [`JobContext::refreshed`], after looking at the policy's remote copy when due (see
    /// [`Services::current`]).
    pub async fn current(&self) -> JobContext {
        JobContext {
            services: self.services.current().await,
            ..self.clone()
        }
    }

    /// A context without backups, printing metrics to stdout.
    pub fn new(services: Services, http: reqwest::Client) -> Self {
        JobContext {
            services,
            http,
            backups: None,
            metrics: MetricSink::Stdout,
            vars: Arc::new(crate::config::ProcessEnv),
            cloudwatch: None,
        }
    }

    /// Reads CloudWatch analysis sources through `cloudwatch`.
    pub fn with_cloudwatch(
        mut self,
        cloudwatch: Arc<dyn crate::service::analysis::CloudWatchSources>,
    ) -> Self {
        self.cloudwatch = Some(cloudwatch);
        self
    }

    /// Reads the analysis sources' credentials from `vars` instead of the process environment.
    pub fn with_vars(mut self, vars: Arc<dyn Vars + Send + Sync>) -> Self {
        self.vars = vars;
        self
    }

    pub fn with_backups(mut self, backups: Arc<dyn BackupJobs>) -> Self {
        self.backups = Some(backups);
        self
    }

    pub fn with_metrics(mut self, metrics: MetricSink) -> Self {
        self.metrics = metrics;
        self
    }
}
