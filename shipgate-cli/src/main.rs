//! `shipgate`: the self-hosted deployment control plane and its operator commands.
//!
//! One binary serves every webhook route on one port on embedded storage and runs the
//! schedules in-process (`serve`), and offers the operator commands (`status`, `history`,
//! `incidents`, `policy`, `job`, `backup`, `rollback`, `migrate`, `analysis`, `dora`). The handlers, routes, jobs and wire formats are the
//! ones the Lambda functions use; only the wiring differs.
//!
//! Exit codes: 0 success, 1 failure (invalid policy, missing configuration, unreadable data,
//! a job or verification that failed, a refused rollback), 2 usage errors.

mod analysis_cmd;
mod backup_cmd;
mod dashboard_cmd;
mod demo;
mod dora_cmd;
mod incidents_cmd;
mod job_cmd;
mod migrate_cmd;
mod ops;
mod output;
mod policy_cmd;
mod progress;
mod rollback_cmd;
mod setup_cmd;
mod status;
mod unlock_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use shipgate::config::ProcessEnv;
use shipgate_cli::error::CliError;
use shipgate_cli::logging::{self, LogFormat};
use shipgate_cli::state::StateArgs;
use shipgate_cli::{data, runtime, scheduler, server};

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
    /// Show the audit log: who did what, when and why, with incidents opening and closing.
    History(HistoryArgs),
    /// List incidents: the open ones and those resolved in the last 7 days.
    Incidents(IncidentsArgs),
    /// Play a complete story (approvals, deploys, a rollback, backups) against local fakes.
    Demo(demo::DemoArgs),
    /// Run one scheduled job now: backup, restore-drill, rollback-drill, dora-report,
    /// sweeper, health-probes or migrate.
    Job(JobArgs),
    /// List, verify and restore the encrypted backups (`shipgate job backup` makes one).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Roll an environment back to its previous good version (as `cli:$USER`); where approvals
    /// are required, this opens a rollback request that approvers approve in Slack.
    Rollback(RollbackArgs),
    /// Free a repository's environment whose lock is held by a deployment that will not end
    /// on its own (as `cli:$USER`, with a reason that is audited and announced).
    Unlock(UnlockArgs),
    /// Migrate the store in the data directory to the current schema (`serve` does it at
    /// start); safe to run again.
    Migrate(MigrateArgs),
    /// Print the GitHub App or Slack app manifest, filled in with shipgate's public URL, to
    /// create the app from.
    #[command(subcommand)]
    Setup(SetupCommand),
    /// Try an environment's analysis checks against the real metric sources.
    #[command(subcommand)]
    Analysis(AnalysisCommand),
    /// Show the DORA figures the `dora-report` job kept, one row per day.
    Dora(DoraArgs),
    /// Serve the read-only dashboard from a data directory or a deployed stack's table.
    Dashboard(DashboardArgs),
}

#[derive(Debug, Args)]
struct DashboardArgs {
    #[command(flatten)]
    data: StateArgs,
    /// The policy file (on AWS, when not given: the stack's policy parameter).
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Address to serve the pages on. Sign-in: SHIPGATE_DASHBOARD_TOKEN or
    /// SHIPGATE_DASHBOARD_USER_HEADER; without either only a loopback address is allowed.
    #[arg(long, value_name = "ADDR", default_value = shipgate_cli::dashboard::DEFAULT_LISTEN)]
    listen: SocketAddr,
}

#[derive(Debug, Args)]
struct DoraArgs {
    #[command(flatten)]
    data: StateArgs,
    /// The policy file; its environments are shown when `--env` is not given (on AWS, when
    /// not given: the stack's policy parameter).
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Only this environment.
    #[arg(long, value_name = "E")]
    env: Option<String>,
    /// One repository's figures instead of the environment's roll-up (`owner/name`).
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    /// Which of the kept windows: 7d, 30d or 90d.
    #[arg(
        long,
        value_name = "W",
        default_value = "30d",
        conflicts_with = "weekly"
    )]
    window: String,
    /// Each calendar week's own figures (weeks start on Sunday, UTC) instead of the rolling
    /// windows of each day.
    #[arg(long)]
    weekly: bool,
    /// How many days back from today.
    #[arg(long, value_name = "N", default_value_t = 90)]
    days: u32,
    /// One JSON object per row (the whole report and its `day`).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// A CSV header and one line per row.
    #[arg(long)]
    csv: bool,
}

#[derive(Debug, Subcommand)]
enum AnalysisCommand {
    /// Run the checks once, as for a deployment of OWNER/NAME whose verification began at
    /// `--at`, and print each value, baseline and verdict (nothing is stored). Exit 1 unless
    /// every check passes.
    Run {
        /// The repository, `owner/name` (its `[services]` name fills `{{service}}`).
        repo: String,
        /// The environment whose `[analysis]` to run.
        environment: String,
        /// The policy file.
        #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
        policy: PathBuf,
        /// When verification began: the value is read then and a baseline over the span
        /// before it (RFC 3339, e.g. 2026-12-05T10:00:00Z; default now).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<jiff::Timestamp>,
        /// The deployed sha, for `{{sha}}` (default empty).
        #[arg(long, value_name = "SHA")]
        sha: Option<String>,
        /// One JSON object per check and line, instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    text.parse::<jiff::Timestamp>()
        .map_err(|e| format!("{text:?} is not an RFC 3339 time (2026-12-05T10:00:00Z): {e}"))
}

#[derive(Debug, Subcommand)]
enum SetupCommand {
    /// Print the GitHub App manifest; its webhook URL is BASE/webhooks/github.
    GithubApp(SetupArgs),
    /// Print the Slack app manifest; its interactivity request URL is BASE/webhooks/slack.
    SlackApp(SetupArgs),
}

#[derive(Debug, Args)]
struct SetupArgs {
    /// shipgate's public base URL, https (plain http on a loopback address only), e.g.
    /// https://deploy.example.com. On AWS, the base of the stack's GithubWebhookUrl output
    /// (or `--stack NAME`, in a build with the `aws` feature).
    #[cfg_attr(
        feature = "aws",
        arg(long, value_name = "BASE", required_unless_present = "stack")
    )]
    #[cfg_attr(not(feature = "aws"), arg(long, value_name = "BASE", required = true))]
    url: Option<String>,
    /// The deployed stack whose API the app calls (its `GithubWebhookUrl` output).
    #[cfg(feature = "aws")]
    #[arg(long, value_name = "NAME", conflicts_with = "url")]
    stack: Option<String>,
}

impl SetupArgs {
    /// The base URL: `--url`, or the stack's API.
    fn base(self) -> Result<String, CliError> {
        #[cfg(feature = "aws")]
        if let Some(stack) = self.stack {
            return runtime()?.block_on(shipgate_cli::aws::stack_base_url(&stack));
        }
        self.url
            .ok_or_else(|| CliError::Usage("give --url BASE".to_owned()))
    }
}

#[derive(Debug, Args)]
struct JobArgs {
    /// The job's name.
    name: String,
    #[command(flatten)]
    data: StateArgs,
    /// The policy file (on AWS, when not given: the stack's policy parameter).
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Print the whole report (summary, details, times) as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// List backups, newest first.
    List {
        #[command(flatten)]
        data: StateArgs,
        /// Only the backups of this table (shipgate's own is `shipgate` on either store).
        #[arg(long, value_name = "TABLE")]
        source: Option<String>,
        /// One JSON manifest per line, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a backup completely (key, every chunk, count, SHA-256) without writing anything.
    Verify {
        /// A backup id, `latest`, or `TABLE/latest`.
        #[arg(value_name = "ID|latest")]
        backup: String,
        #[command(flatten)]
        data: StateArgs,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Verify a backup, then write it into a new store: a SQLite file with `--data`, a new
    /// DynamoDB table on AWS.
    Restore {
        /// A backup id, `latest`, or `TABLE/latest`.
        #[arg(value_name = "ID|latest")]
        backup: String,
        /// The target: with `--data`, NAME means `DIR/restores/NAME.db` and a value with `/`
        /// is a path; on AWS, the name of a new DynamoDB table.
        #[arg(long, value_name = "TABLE")]
        into: String,
        /// Write into a target that is not empty (on AWS: a table that exists), overwriting
        /// items with the same keys.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        data: StateArgs,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct RollbackArgs {
    /// The policy environment to roll back.
    env: String,
    /// The repository (`owner/name`) whose deployment to roll back; required when more than
    /// one repository has deployed to the environment.
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    #[command(flatten)]
    data: StateArgs,
    /// The policy file (on AWS, when not given: the stack's policy parameter).
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct UnlockArgs {
    /// The policy environment to unlock.
    env: String,
    /// The repository (`owner/name`) whose lock to free; required when more than one
    /// repository has deployed to the environment.
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    /// Why (required; recorded in the audit log and shown in Slack).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    #[command(flatten)]
    data: StateArgs,
    /// The policy file (on AWS, when not given: the stack's policy parameter).
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(flatten)]
    data: StateArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory; the state is `DIR/shipgate.db` (created, private, when missing).
    #[arg(long, value_name = "DIR", env = "SHIPGATE_DATA_DIR")]
    data: PathBuf,
    /// The policy file.
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: PathBuf,
    /// Log line format (logs go to stderr; the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Change one job's interval, e.g. `backup=12h`, `health-probes=5m`, `rollback-drill=off`
    /// (repeatable). Defaults: sweeper=30s health-probes=60s backup=1d restore-drill=1d
    /// dora-report=1d rollback-drill=1w.
    #[arg(long = "schedule", value_name = "JOB=EVERY", value_parser = scheduler::parse_override)]
    schedule: Vec<(shipgate::jobs::JobName, Option<std::time::Duration>)>,
    /// Run no scheduled jobs (run them with `shipgate job NAME` from another timer instead).
    #[arg(long, conflicts_with = "schedule")]
    no_schedule: bool,
    /// Serve the read-only dashboard on its own address, 127.0.0.1:8788 (see
    /// `--dashboard-listen`). Sign-in: SHIPGATE_DASHBOARD_TOKEN, or a reverse proxy's user
    /// header named by SHIPGATE_DASHBOARD_USER_HEADER; without either only a loopback address
    /// is allowed.
    #[arg(long)]
    dashboard: bool,
    /// Serve the dashboard on this address instead (implies `--dashboard`).
    #[arg(long, value_name = "ADDR")]
    dashboard_listen: Option<SocketAddr>,
    /// How hard each commit waits for the disk: `full` (an answered event survives a power
    /// loss) or `normal` (it survives a crash of shipgate; faster).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = data::SyncMode::Full, env = "SHIPGATE_SYNC")]
    sync: data::SyncMode,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and summarise its environments (`-` or nothing reads stdin);
    /// with the `aws` feature, `--stack NAME` checks the policy a deployed stack runs with.
    Check {
        /// The policy file.
        file: Option<PathBuf>,
        #[cfg(feature = "aws")]
        #[command(flatten)]
        stack: shipgate_cli::aws::PolicyStackArgs,
    },
    /// Print the complete, commented example policy.
    Example,
    /// Print the rules that apply to one repository's environment and where each came from
    /// (exit 1 when no section governs it).
    Explain {
        /// The repository, `owner/name`.
        repo: String,
        /// The environment's name.
        environment: String,
        /// The policy file (`-` reads stdin).
        #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
        policy: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    data: StateArgs,
    /// The policy file, whose environments are the ones shown (on AWS, when not given: the
    /// stack's policy parameter).
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Only this repository (`owner/name`).
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    /// One JSON object per repository and environment and line, instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    #[command(flatten)]
    data: StateArgs,
    /// The policy file; its environments are merged when `--env` is not given.
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Only this environment.
    #[arg(long, value_name = "E")]
    env: Option<String>,
    /// Only this repository (`owner/name`).
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    /// One JSON audit event per line, instead of a table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// A CSV header and one line per event (RFC 4180), for a spreadsheet.
    #[arg(long)]
    csv: bool,
    /// Show the newest N events (oldest first).
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
}

#[derive(Debug, Args)]
struct IncidentsArgs {
    #[command(flatten)]
    data: StateArgs,
    /// The policy file; its environments are listed when `--env` is not given.
    #[arg(long, value_name = "FILE", env = "SHIPGATE_POLICY_FILE")]
    policy: Option<PathBuf>,
    /// Only this environment (and the alerts that named it but no policy environment).
    #[arg(long, value_name = "ENV")]
    env: Option<String>,
    /// Only this repository's incidents (`owner/name`).
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    /// Every incident, however long ago it was resolved.
    #[arg(long)]
    all: bool,
    /// List the incidents resolved this recently (`12h`, `30d`, `1d12h`; default 7d).
    #[arg(long, value_name = "DURATION", value_parser = incidents_cmd::parse_since, conflicts_with = "all")]
    since: Option<std::time::Duration>,
    /// One JSON object per incident and line, instead of a table.
    #[arg(long)]
    json: bool,
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
        Command::Policy(PolicyCommand::Explain { .. }) => "policy explain",
        Command::Status(_) => "status",
        Command::History(_) => "history",
        Command::Incidents(_) => "incidents",
        Command::Demo(_) => "demo",
        Command::Job(_) => "job",
        Command::Backup(BackupCommand::List { .. }) => "backup list",
        Command::Backup(BackupCommand::Verify { .. }) => "backup verify",
        Command::Backup(BackupCommand::Restore { .. }) => "backup restore",
        Command::Rollback(_) => "rollback",
        Command::Unlock(_) => "unlock",
        Command::Migrate(_) => "migrate",
        Command::Setup(SetupCommand::GithubApp(_)) => "setup github-app",
        Command::Setup(SetupCommand::SlackApp(_)) => "setup slack-app",
        Command::Analysis(AnalysisCommand::Run { .. }) => "analysis run",
        Command::Dora(_) => "dora",
        Command::Dashboard(_) => "dashboard",
    }
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => {
            logging::init(args.log_format, "info");
            let mut config = server::ServeConfig::new(args.listen, args.data, args.policy);
            config.durability = args.sync.into();
            config.dashboard =
                match (args.dashboard_listen, args.dashboard) {
                    (Some(addr), _) => Some(addr),
                    (None, true) => Some(shipgate_cli::dashboard::DEFAULT_LISTEN.parse().map_err(
                        |e| CliError::Usage(format!("the default dashboard address: {e}")),
                    )?),
                    (None, false) => None,
                };
            if args.no_schedule {
                config.schedule = scheduler::Schedule::none();
            }
            for (job, every) in args.schedule {
                config.schedule.set(job, every);
            }
            runtime()?.block_on(server::serve(config))
        }
        #[cfg(not(feature = "aws"))]
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(file.as_deref()),
        #[cfg(feature = "aws")]
        Command::Policy(PolicyCommand::Check { file, stack }) => {
            match runtime()?.block_on(stack.read())? {
                Some((label, text)) => policy_cmd::check_text(label, &text),
                None => policy_cmd::check(file.as_deref()),
            }
        }
        Command::Policy(PolicyCommand::Example) => policy_cmd::example(),
        Command::Policy(PolicyCommand::Explain {
            repo,
            environment,
            policy,
            json,
        }) => policy_cmd::explain(&policy, &repo, &environment, json),
        Command::Status(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let opts = status::StatusOptions {
                state: rt.block_on(args.data.resolve())?,
                policy_file: args.policy,
                repo: args.repo,
                json: args.json,
            };
            rt.block_on(status::status(opts))
        }
        Command::History(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let opts = status::HistoryOptions {
                state: rt.block_on(args.data.resolve())?,
                policy_file: args.policy,
                environment: args.env,
                repo: args.repo,
                json: args.json,
                csv: args.csv,
                limit: args.limit,
            };
            rt.block_on(status::history(opts))
        }
        Command::Incidents(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let opts = incidents_cmd::IncidentsOptions {
                state: rt.block_on(args.data.resolve())?,
                policy_file: args.policy,
                environment: args.env,
                repo: args.repo,
                all: args.all,
                since: args.since,
                json: args.json,
            };
            rt.block_on(incidents_cmd::run(opts))
        }
        Command::Demo(args) => std::process::exit(i32::from(demo::run(&args))),
        Command::Job(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let opts = job_cmd::JobOptions {
                name: args.name,
                state: rt.block_on(args.data.resolve())?,
                policy_file: args.policy,
                json: args.json,
            };
            rt.block_on(job_cmd::run(opts, &ProcessEnv))
        }
        Command::Backup(cmd) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            match cmd {
                BackupCommand::List { data, source, json } => {
                    let state = rt.block_on(data.resolve())?;
                    rt.block_on(backup_cmd::list(&state, source.as_deref(), json))
                }
                BackupCommand::Verify { backup, data, json } => {
                    let state = rt.block_on(data.resolve())?;
                    rt.block_on(backup_cmd::verify(&state, &backup, json))
                }
                BackupCommand::Restore {
                    backup,
                    into,
                    force,
                    data,
                    json,
                } => {
                    let state = rt.block_on(data.resolve())?;
                    rt.block_on(backup_cmd::restore(&state, &backup, &into, force, json))
                }
            }
        }
        Command::Rollback(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let opts = rollback_cmd::RollbackOptions {
                environment: args.env,
                repo: args.repo,
                state: rt.block_on(args.data.resolve())?,
                policy_file: args.policy,
                json: args.json,
            };
            rt.block_on(rollback_cmd::run(opts, &ProcessEnv))
        }
        Command::Unlock(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let opts = unlock_cmd::UnlockOptions {
                environment: args.env,
                repo: args.repo,
                reason: args.reason,
                state: rt.block_on(args.data.resolve())?,
                policy_file: args.policy,
                json: args.json,
            };
            rt.block_on(unlock_cmd::run(opts, &ProcessEnv))
        }
        Command::Migrate(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let state = rt.block_on(args.data.resolve())?;
            rt.block_on(migrate_cmd::run(&state, args.json))
        }
        Command::Analysis(AnalysisCommand::Run {
            repo,
            environment,
            policy,
            at,
            sha,
            json,
        }) => {
            logging::init(LogFormat::Text, "warn");
            let opts = analysis_cmd::AnalysisRunOptions {
                repo: &repo,
                environment: &environment,
                policy_file: &policy,
                at,
                sha: sha.as_deref(),
                json,
            };
            runtime()?.block_on(analysis_cmd::run(opts, &ProcessEnv))
        }
        Command::Dora(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let format = match (args.json, args.csv) {
                (true, _) => dora_cmd::Format::Json,
                (_, true) => dora_cmd::Format::Csv,
                _ => dora_cmd::Format::Table,
            };
            let opts = dora_cmd::DoraOptions {
                state: rt.block_on(args.data.resolve())?,
                policy_file: args.policy,
                environment: args.env,
                repo: args.repo,
                window: args.window,
                weekly: args.weekly,
                days: args.days,
                format,
            };
            rt.block_on(dora_cmd::run(opts))
        }
        Command::Dashboard(args) => {
            logging::init(LogFormat::Text, "warn");
            let rt = runtime()?;
            let state = rt.block_on(args.data.resolve())?;
            rt.block_on(dashboard_cmd::run(
                &state,
                args.policy.as_deref(),
                args.listen,
                &shipgate::config::ProcessEnv,
            ))
        }
        Command::Setup(SetupCommand::GithubApp(args)) => {
            setup_cmd::run(setup_cmd::App::GitHub, &args.base()?)
        }
        Command::Setup(SetupCommand::SlackApp(args)) => {
            setup_cmd::run(setup_cmd::App::Slack, &args.base()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // Every `requires`, `conflicts_with` and group names an argument of its command.
        Cli::command().debug_assert();
    }
}
