//! `shipgate demo`: the whole job in one command, on a fresh machine, without accounts or
//! network.
//!
//! It starts the real server ([`shipgate_cli::server::start`], as `shipgate serve` does) on a
//! free loopback port with a temporary data directory and the example policy (verification
//! windows shortened so the story takes seconds), puts local fakes in place of GitHub, Slack
//! and PagerDuty, and plays a realistic story as signed HTTP requests built from the samples
//! in `events/` ([`story`]). Everything shipgate sends to the fakes is printed as it happens,
//! into one timeline ([`timeline`]).
//!
//! Exit code 0 only when every step of the story ended as expected; otherwise the first
//! deviation is printed (expected vs seen) and the exit code is 1.
//!
//! The GitHub App key the demo signs JWTs with (`demo-github-app-key.pem`) is a demo-only key
//! generated for this purpose; it belongs to no App and the fake GitHub never checks it.

mod fakes;
mod payloads;
mod story;
mod timeline;

use std::path::PathBuf;

use shipgate_cli::error::CliError;
use shipgate_cli::logging::{self, LogFormat};

/// `shipgate demo` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DemoArgs {
    /// Keep the temporary data directory (state, policy, backups) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Never colour the timeline (colours are used only on a terminal, and never when
    /// NO_COLOR is set).
    #[arg(long)]
    pub no_color: bool,
}

/// Why the story could not be told to its end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A step saw something else than the story expects.
    #[error("{what}: expected {expected}, saw {seen}")]
    Unexpected {
        what: String,
        expected: String,
        seen: String,
    },
    #[error("the demo policy: {0}")]
    Policy(String),
    #[error("cannot create the temporary data directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a fake service: {0}")]
    Fake(#[source] std::io::Error),
    #[error("shipgate server: {0}")]
    Server(#[source] CliError),
    #[error("backups: {0}")]
    Backups(#[source] shipgate::jobs::backup::BackupConfigError),
    #[error("HTTP: {0}")]
    Http(#[source] reqwest::Error),
    #[error("JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error(transparent)]
    Template(#[from] payloads::TemplateError),
    #[error("reading the state: {0}")]
    Repo(#[source] shipgate::store::RepoError),
    #[error("job: {0}")]
    Job(#[source] shipgate::jobs::JobError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] CliError),
}

/// Plays the story; returns the process exit code (0: the story ended as expected).
pub fn run(args: &DemoArgs) -> u8 {
    // The timeline is the output; logs only for what went wrong (RUST_LOG overrides).
    logging::init(LogFormat::Text, "error");
    let tl = timeline::Timeline::new(timeline::colour_wanted(args.no_color));
    match tell(&tl, args.keep) {
        Ok(s) => {
            tl.plain("");
            tl.headline(&format!(
                "The story ended as expected: {} checks passed. shipgate called GitHub {} times, Slack {}, PagerDuty {}.",
                s.checks, s.github_calls, s.slack_calls, s.pagerduty_calls
            ));
            0
        }
        Err(e) => {
            tl.release();
            tl.plain("");
            tl.failure(&format!("the story did not end as expected: {e}"));
            1
        }
    }
}

fn tell(tl: &timeline::Timeline, keep: bool) -> Result<story::Summary, DemoError> {
    let dir = tempfile::Builder::new()
        .prefix("shipgate-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let runtime = shipgate_cli::runtime().map_err(DemoError::Runtime)?;
    let result = runtime.block_on(story::play(tl, dir.path()));
    // Tasks still running (a fake's connection) must not outlive the data directory.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if keep {
        let path = dir.keep();
        tl.plain(&format!(
            "Data kept in {}: try `shipgate status --data {0} --policy {0}/policy.toml` and `shipgate history --data {0}`.",
            path.display()
        ));
    }
    result
}
