//! The binary's one error type: every command fails with a [`CliError`], which `main` prints
//! once (prefixed with the command) and turns into the exit code.

use std::path::PathBuf;

use shipgate::config::ConfigError;
use shipgate::domain::policy::PolicyErrors;
use shipgate::store::{RepoError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Wrong use of the command line that clap cannot catch.
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem, one `FILE:LINE:COLUMN: FIELD: MESSAGE` per line.
    #[error("invalid policy:\n{0}")]
    Policy(#[source] PolicyErrors),
    /// `policy check` found problems; they were already printed.
    #[error("{count} problem(s) in {file}")]
    PolicyCheckFailed { file: String, count: usize },
    /// `policy explain`: no section governs the scope; the reason was already printed.
    #[error("no policy section governs {repo} in {environment}")]
    NotGoverned { repo: String, environment: String },
    /// A required variable is unset or malformed (the message names it, never its value).
    #[error("{source}{hint}")]
    Config {
        #[source]
        source: ConfigError,
        /// Why the variable matters here.
        hint: String,
    },
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data directory {} is writable by others (mode {mode:03o}): anyone who can write there can replace shipgate's state; run `chmod go-w {}` (shipgate creates it 0700) and start again",
        path.display(),
        path.display()
    )]
    DataDirWritableByOthers { path: PathBuf, mode: u32 },
    #[error(
        "no shipgate database at {}; point --data (or SHIPGATE_DATA_DIR) at the directory `shipgate serve` uses",
        path.display()
    )]
    NoDatabase { path: PathBuf },
    #[error("cannot open the database {}: {source}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    /// An AWS call of an operator command failed, or a stack is not a shipgate stack.
    #[cfg(feature = "aws")]
    #[error("{0}")]
    Aws(String),
    #[error("reading state: {0}")]
    Repo(#[from] RepoError),
    #[error("migrating the store: {0}")]
    Migrate(#[source] shipgate::store::migrate::MigrateError),
    /// The dashboard's sign-in is missing or malformed for where it would listen.
    #[error("dashboard: {0}")]
    Dashboard(#[source] crate::dashboard::DashboardConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("GitHub App client: {0}")]
    GitHubClient(#[source] shipgate::outbound::OutboundError),
    /// A backup could not be listed, verified or restored; the message walks the causes down
    /// to the specific one (tampered chunk, truncated, wrong key...).
    #[error("{}", chain(.0))]
    Backup(#[source] shipgate::backup::operations::JobError),
    /// A job could not run at all (as opposed to running and reporting a problem).
    #[error("{}", chain(.0))]
    Job(#[source] shipgate::jobs::JobError),
    #[error("rolling back: {}", chain(.0))]
    Rollback(#[source] shipgate::service::ServiceError),
    #[error("unlocking: {}", chain(.0))]
    Unlock(#[source] shipgate::service::ServiceError),
    /// The command ran and reported a failure, already printed; only the exit code is left.
    #[error("{0}")]
    Reported(String),
    #[error("backups: {0}")]
    Backups(#[source] shipgate::jobs::backup::BackupConfigError),
    #[error("notifier: {0}")]
    Notifier(#[source] shipgate::notifier::NotifierConfigError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

/// `error: cause: its cause...`, skipping a cause whose text its parent already ends with.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}
