//! `shipgate`: the self-hosted deployment control plane and its operator commands.
//!
//! One binary serves every webhook route on one port on embedded storage (`serve`), and
//! offers the operator commands (`status`, `history`, `policy`...). The handlers, routes and
//! wire formats are the ones the Lambda functions use; only the wiring differs.
//!
//! Exit codes: 0 success, 1 failure (invalid policy, missing configuration, unreadable data),
//! 2 usage errors and commands that are not built yet.

mod data;
mod error;
mod logging;
mod notifier_task;
mod policy_cmd;
mod scheduler;
mod server;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;
use crate::logging::LogFormat;

/// The deployment control plane for teams that ship with GitHub Actions.
#[derive(Debug, Parser)]
#[command(name = "shipgate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the webhook routes and run the schedules in-process, on embedded storage.
    Serve(ServeArgs),
    /// Validate a policy file, or print the example policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show each environment: current and last known good sha, lock holder, open incidents.
    Status(StatusArgs),
    /// Show the audit log: who did what, when and why.
    History(HistoryArgs),
    /// Walk through a complete deployment on a throwaway data directory (not built yet).
    Demo,
    /// Run one scheduled job now, e.g. `sweeper`, `backup`, `dora-report` (not built yet).
    Job {
        /// The job's name.
        name: String,
    },
    /// Create, list, verify and restore encrypted backups (not built yet).
    Backup {
        /// The backup subcommand and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Roll an environment back to its last known good sha (not built yet).
    Rollback {
        /// The policy environment to roll back.
        env: String,
    },
}

/// Where the state and the policy are.
#[derive(Debug, Args)]
struct DataArgs {
    /// Data directory; the state is `DIR/shipgate.db`.
    #[arg(long, value_name = "DIR", env = "SHIPGATE_DATA_DIR")]
    data: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    data: DataArgs,
    /// The policy file.
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: PathBuf,
    /// Log line format (logs go to stderr; the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and summarise its environments (`-` or nothing reads stdin).
    Check {
        /// The policy file.
        file: Option<PathBuf>,
    },
    /// Print the complete, commented example policy.
    Example,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The policy file (its environments are the ones shown).
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: PathBuf,
    /// One JSON object per environment and line, instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The policy file; its environments are merged when `--env` is not given.
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Only this environment.
    #[arg(long, value_name = "E")]
    env: Option<String>,
    /// One JSON audit event per line, instead of a table.
    #[arg(long)]
    json: bool,
    /// Show the newest N events (oldest first).
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = command_name(&cli.command);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shipgate {name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Serve(_) => "serve",
        Command::Policy(PolicyCommand::Check { .. }) => "policy check",
        Command::Policy(PolicyCommand::Example) => "policy example",
        Command::Status(_) => "status",
        Command::History(_) => "history",
        Command::Demo => "demo",
        Command::Job { .. } => "job",
        Command::Backup { .. } => "backup",
        Command::Rollback { .. } => "rollback",
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => {
            logging::init(args.log_format, "info");
            let config = server::ServeConfig {
                listen: args.listen,
                data_dir: args.data.data,
                policy_file: args.policy,
            };
            runtime()?.block_on(server::serve(config))
        }
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(file.as_deref()),
        Command::Policy(PolicyCommand::Example) => policy_cmd::example(),
        Command::Status(args) => {
            logging::init(LogFormat::Text, "warn");
            let opts = status::StatusOptions {
                data_dir: args.data.data,
                policy_file: args.policy,
                json: args.json,
            };
            runtime()?.block_on(status::status(opts))
        }
        Command::History(args) => {
            logging::init(LogFormat::Text, "warn");
            let opts = status::HistoryOptions {
                data_dir: args.data.data,
                policy_file: args.policy,
                environment: args.env,
                json: args.json,
                limit: args.limit,
            };
            runtime()?.block_on(status::history(opts))
        }
        // Registered so `--help` shows the whole surface; each is built by its own engineer
        // and must not pretend to work before then.
        Command::Demo | Command::Job { .. } | Command::Backup { .. } | Command::Rollback { .. } => {
            Err(CliError::NotBuilt)
        }
    }
}
