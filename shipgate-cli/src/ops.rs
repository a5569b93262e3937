//! What the operator commands that act (`job`, `rollback`, `unlock`) share: the existing state
//! and the policy, the GitHub App, and where what the command publishes goes.
//!
//! On a data directory, an in-process notifier delivers what the command published (a failed
//! job's summary, a rollback's Slack message) before the command exits — the same path
//! `serve` uses, so Slack hears about a manual rollback; the GitHub App comes from the
//! environment. On AWS, what the command publishes goes to the stack's notifications topic
//! and the stack's notifier function delivers it, as it does for the Lambda functions; the
//! GitHub App comes from the stack's GitHub App secret, over the environment.
//!
//! Unlike `serve`, nothing here needs the GitHub webhook secret: these commands never receive
//! webhooks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shipgate::config::{GitHubAppSettings, PagerDutySettings, SlackSettings, Vars};
use shipgate::embedded::ChannelPublisher;
use shipgate::jobs::backup::TableBackups;
use shipgate::service::{Services, SystemClock};
use shipgate_cli::error::CliError;
use shipgate_cli::notifier_task::{spawn_notifier, DiscardPublisher};
use shipgate_cli::state::State;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Notifications one command may queue before publishing waits.
const CAPACITY: usize = 64;
/// How long the notifier may take to deliver what a command published.
const DRAIN: Duration = Duration::from_secs(20);

/// The opened state, policy and clients of one operator command.
pub struct Operator {
    pub services: Services,
    pub http: reqwest::Client,
    /// The backup and restore-drill jobs over this state, where backups are configured.
    pub backups: Option<TableBackups>,
    /// The in-process notifier (on a data directory) and how to stop it.
    notifier: Option<(JoinHandle<u64>, watch::Sender<bool>)>,
}

impl Operator {
    /// Opens the existing state (never creates it) with the policy in `policy_file` (on AWS,
    /// when not given, the stack's policy parameter). `env`: the process environment.
    pub async fn open(
        state: &State,
        policy_file: Option<&Path>,
        env: &dyn Vars,
    ) -> Result<Operator, CliError> {
        match state {
            State::Embedded { data_dir } => {
                Self::open_embedded(state, data_dir, policy_file, env).await
            }
            #[cfg(feature = "aws")]
            State::Aws(aws) => Self::open_aws(state, aws, policy_file).await,
        }
    }

    async fn open_embedded(
        state: &State,
        data_dir: &Path,
        policy_file: Option<&Path>,
        vars: &dyn Vars,
    ) -> Result<Operator, CliError> {
        let policy = Arc::new(state.policy(policy_file).await?);
        let repo = state.repo()?;
        let http = shipgate::outbound::http_client()?;
        let github = github(vars, &http)?;
        let slack = SlackSettings::from_vars(vars).map_err(config_error)?;
        let pagerduty = PagerDutySettings::from_vars(vars).map_err(config_error)?;
        let backups = TableBackups::embedded(data_dir, Arc::clone(repo.store()))
            .map_err(CliError::Backups)?;

        let notifier_services = Services {
            repo: repo.clone(),
            policy: Arc::clone(&policy),
            github: github.clone(),
            publisher: Arc::new(DiscardPublisher),
            clock: Arc::new(SystemClock),
            policy_source: None,
        };
        let notifier = shipgate::notifier::from_settings(
            notifier_services,
            &slack,
            &pagerduty,
            vars,
            http.clone(),
        )
        .map_err(CliError::Notifier)?;
        let (publisher, rx) = ChannelPublisher::new(CAPACITY);
        let (stop, stop_rx) = watch::channel(false);
        let notifier = spawn_notifier(rx, notifier, stop_rx);
        Ok(Operator {
            services: Services {
                repo,
                policy,
                github,
                publisher: Arc::new(publisher),
                clock: Arc::new(SystemClock),
                policy_source: None,
            },
            http,
            backups: Some(backups),
            notifier: Some((notifier, stop)),
        })
    }

    #[cfg(feature = "aws")]
    async fn open_aws(
        state: &State,
        aws: &shipgate_cli::aws::AwsState,
        policy_file: Option<&Path>,
    ) -> Result<Operator, CliError> {
        let policy = state.policy(policy_file).await?;
        let vars = aws.vars().await?;
        let http = shipgate::outbound::http_client()?;
        let github = github(&vars, &http)?;
        let backups = aws.job_backups(&vars, &policy)?;
        Ok(Operator {
            services: Services {
                repo: state.repo()?,
                policy: Arc::new(policy),
                github,
                publisher: aws.publisher()?,
                clock: Arc::new(SystemClock),
                policy_source: None,
            },
            http,
            backups,
            notifier: None,
        })
    }

    /// Delivers what the command published, then lets go of everything.
    pub async fn finish(self) {
        let Operator {
            services, notifier, ..
        } = self;
        drop(services);
        let Some((notifier, stop)) = notifier else {
            return;
        };
        stop.send_replace(true);
        match tokio::time::timeout(DRAIN, notifier).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "notifier task failed"),
            Err(_) => tracing::warn!("notifications not delivered in time; they are lost"),
        }
    }
}

/// The GitHub App from `vars` (`None` when none is configured).
fn github(
    vars: &dyn Vars,
    http: &reqwest::Client,
) -> Result<Option<Arc<dyn shipgate::outbound::github::GitHubApi>>, CliError> {
    GitHubAppSettings::from_vars(vars)
        .map_err(config_error)?
        .client(http.clone())
        .map_err(CliError::GitHubClient)
}

fn config_error(source: shipgate::config::ConfigError) -> CliError {
    CliError::Config {
        source,
        hint: String::new(),
    }
}
