//! What the operator commands that act (`job`, `rollback`) share: the existing state and the
//! policy, the GitHub App from the environment, and an in-process notifier that delivers what
//! the command published (a failed job's summary, a rollback's Slack message) before the
//! command exits — the same path `serve` uses, so Slack hears about a manual rollback.
//!
//! Unlike `serve`, nothing here needs the GitHub webhook secret: these commands never receive
//! webhooks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shipgate::config::{GitHubAppSettings, PagerDutySettings, SlackSettings, Vars};
use shipgate::embedded::ChannelPublisher;
use shipgate::service::{Services, SystemClock};
use shipgate_cli::data;
use shipgate_cli::error::CliError;
use shipgate_cli::notifier_task::{spawn_notifier, DiscardPublisher};
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
    notifier: JoinHandle<u64>,
    stop: watch::Sender<bool>,
}

impl Operator {
    /// Opens existing state in `data_dir` (never creates it) with the policy in `policy_file`.
    pub async fn open(
        data_dir: &Path,
        policy_file: &Path,
        vars: &dyn Vars,
    ) -> Result<Operator, CliError> {
        let policy = Arc::new(data::load_policy(policy_file)?);
        let repo = data::open_existing(data_dir)?;
        let http = shipgate::outbound::http_client()?;
        let github = GitHubAppSettings::from_vars(vars)
            .map_err(config_error)?
            .client(http.clone())
            .map_err(CliError::GitHubClient)?;
        let slack = SlackSettings::from_vars(vars).map_err(config_error)?;
        let pagerduty = PagerDutySettings::from_vars(vars).map_err(config_error)?;

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
            notifier,
            stop,
        })
    }

    /// Delivers what the command published, then lets go of everything.
    pub async fn finish(self) {
        let Operator {
            services,
            notifier,
            stop,
            ..
        } = self;
        drop(services);
        stop.send_replace(true);
        match tokio::time::timeout(DRAIN, notifier).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "notifier task failed"),
            Err(_) => tracing::warn!("notifications not delivered in time; they are lost"),
        }
    }
}

fn config_error(source: shipgate::config::ConfigError) -> CliError {
    CliError::Config {
        source,
        hint: String::new(),
    }
}
