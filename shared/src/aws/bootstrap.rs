//! Cold-start wiring of the Lambda functions: one constructor per function
//! ([`github_webhook`], [`slack_approval`], [`alert_webhook`], [`notifier`],
//! [`scheduled_jobs`]) reads the secrets, the typed settings and the policy once and builds
//! every client, so each function's `main` only sets up logging, calls it and runs.
//!
//! On AWS, secrets live in Secrets Manager: `SHIPGATE_SECRETS` and every `SHIPGATE_SECRETS_*`
//! variable name one or more secrets (comma-separated), each a JSON object whose keys are `SHIPGATE_` variable names. They are
//! fetched once at cold start and overlaid on the process environment, so the typed settings
//! in [`crate::config`] read them exactly as they read local variables. The policy comes from
//! `SHIPGATE_POLICY_FILE`, inline `SHIPGATE_POLICY`, or the SSM parameter named by
//! `SHIPGATE_POLICY_PARAMETER`.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;

use crate::aws::dynamodb::DynamoStore;
use crate::aws::sns::SnsPublisher;
use crate::config::{
    self, AlertSettings, ConfigError, GitHubAppSettings, GitHubSettings, PagerDutySettings,
    SlackApprovalSettings, SlackSettings, Vars, BACKUP_BUCKET_VAR, KMS_KEY_VAR, POLICY_FILE_VAR,
    POLICY_PARAMETER_VAR, POLICY_VAR, STATE_TABLE_VAR, TOPIC_ARN_VAR,
};
use crate::domain::policy::{Policy, PolicyErrors, PolicyLoadError};
use crate::jobs::backup::{BackupConfigError, TableBackups};
use crate::jobs::JobContext;
use crate::notifier::{Notifier, NotifierConfigError};
use crate::notify::Publisher;
use crate::outbound::github::GitHubApi;
use crate::outbound::{http_client, SlackApi, SlackApiPort, SlackConfig};
use crate::service::{Services, SystemClock};
use crate::store::Repo;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("policy: {0}")]
    Policy(#[from] PolicyErrors),
    #[error("policy: {0}")]
    PolicyLoad(#[from] PolicyLoadError),
    #[error("no policy: set SHIPGATE_POLICY_FILE, SHIPGATE_POLICY or SHIPGATE_POLICY_PARAMETER")]
    NoPolicy,
    #[error("secret {name}: {message}")]
    Secret { name: String, message: String },
    #[error("policy parameter {name}: {message}")]
    Parameter { name: String, message: String },
    #[error("GitHub client: {0}")]
    GitHub(#[from] crate::outbound::OutboundError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("notifier: {0}")]
    Notifier(#[from] NotifierConfigError),
    #[error("backups: {0}")]
    Backups(#[from] BackupConfigError),
}

/// The process environment with Secrets Manager values overlaid.
#[derive(Debug, Clone, Default)]
pub struct ResolvedVars {
    overlay: HashMap<String, String>,
}

impl ResolvedVars {
    /// Sets `name` to `value` over the environment and the secrets (a command-line option
    /// that names a resource).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.overlay.insert(name.to_owned(), value.into());
    }
}

impl Vars for ResolvedVars {
    fn var(&self, name: &str) -> Option<String> {
        self.overlay
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}

/// Fetches the secrets named by `SHIPGATE_SECRETS` and overlays them.
pub async fn resolve_vars(sdk: &aws_config::SdkConfig) -> Result<ResolvedVars, BootError> {
    // `SHIPGATE_SECRETS` and every `SHIPGATE_SECRETS_*` variable name secrets to load.
    let mut names: Vec<String> = std::env::vars()
        .filter(|(k, _)| k == "SHIPGATE_SECRETS" || k.starts_with("SHIPGATE_SECRETS_"))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|n| n.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    fetch_secrets(sdk, &names).await
}

/// The process environment with the secrets `names` (Secrets Manager names or ARNs, each a
/// JSON object of `SHIPGATE_` variables) overlaid, in order: a later secret's value wins.
pub async fn fetch_secrets(
    sdk: &aws_config::SdkConfig,
    names: &[String],
) -> Result<ResolvedVars, BootError> {
    let mut overlay = HashMap::new();
    if names.is_empty() {
        return Ok(ResolvedVars { overlay });
    }
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    for name in names {
        let name = name.as_str();
        let out = client
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| BootError::Secret {
                name: name.into(),
                message: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
            })?;
        let text = out.secret_string().ok_or_else(|| BootError::Secret {
            name: name.into(),
            message: "not a string secret".into(),
        })?;
        let map: HashMap<String, String> =
            serde_json::from_str(text).map_err(|_| BootError::Secret {
                name: name.into(),
                message: "expected a JSON object of SHIPGATE_ variables to strings".into(),
            })?;
        for (k, v) in map {
            if k.starts_with("SHIPGATE_") {
                overlay.insert(k, v);
            }
        }
    }
    Ok(ResolvedVars { overlay })
}

/// Loads the policy from a file, inline text or an SSM parameter.
pub async fn load_policy(
    vars: &dyn Vars,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<Policy, BootError> {
    Ok(load_policy_source(vars, sdk).await?.0)
}

/// How often a warm function looks at the policy parameter for a new version.
pub const POLICY_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The policy, with the parameter it came from and its version when it came from SSM.
async fn load_policy_source(
    vars: &dyn Vars,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<(Policy, Option<(Arc<SsmPolicy>, i64)>), BootError> {
    if let Some(path) = config::optional(vars, POLICY_FILE_VAR) {
        return Ok((Policy::load(path)?, None));
    }
    if let Some(text) = config::optional(vars, POLICY_VAR) {
        return Ok((Policy::parse(POLICY_VAR, &text)?, None));
    }
    if let (Some(name), Some(sdk)) = (config::optional(vars, POLICY_PARAMETER_VAR), sdk) {
        let ssm = Arc::new(SsmPolicy {
            client: aws_sdk_ssm::Client::new(sdk),
            name: name.clone(),
        });
        let (name, text, version) = ssm
            .read()
            .await
            .map_err(|message| BootError::Parameter { name, message })?;
        return Ok((Policy::parse(&name, &text)?, Some((ssm, version))));
    }
    Err(BootError::NoPolicy)
}

/// The policy's SSM parameter, read at a cold start and looked at again by warm functions.
pub struct SsmPolicy {
    client: aws_sdk_ssm::Client,
    name: String,
}

impl SsmPolicy {
    /// The parameter `name`, read through `client`.
    pub fn new(client: aws_sdk_ssm::Client, name: impl Into<String>) -> Self {
        SsmPolicy {
            client,
            name: name.into(),
        }
    }

    async fn read(&self) -> Result<(String, String, i64), String> {
        let out = self
            .client
            .get_parameter()
            .name(&self.name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string())?;
        let parameter = out.parameter().ok_or("no parameter in the answer")?;
        let text = parameter.value().ok_or("parameter has no value")?;
        Ok((self.name.clone(), text.to_string(), parameter.version()))
    }
}

#[async_trait::async_trait]
impl crate::service::PolicyFetch for SsmPolicy {
    async fn fetch(&self) -> Result<(String, String, i64), String> {
        self.read().await
    }
}

/// Services on AWS: DynamoDB table `SHIPGATE_TABLE`, SNS topic `SHIPGATE_TOPIC_ARN`.
pub async fn aws_services(
    vars: &dyn Vars,
    sdk: &aws_config::SdkConfig,
    github: Option<Arc<dyn GitHubApi>>,
) -> Result<Services, BootError> {
    let table = config::required(vars, STATE_TABLE_VAR)?;
    let topic = config::required(vars, TOPIC_ARN_VAR)?;
    let (policy, remote) = load_policy_source(vars, Some(sdk)).await?;
    let policy = Arc::new(policy);
    // A policy from SSM is looked at again by warm functions (see `PolicySource`).
    let policy_source = remote.map(|(ssm, version)| {
        crate::service::PolicySource::with_remote(
            Arc::clone(&policy),
            version,
            ssm,
            POLICY_CHECK_EVERY,
            jiff::Timestamp::now(),
        )
    });
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table);
    let publisher: Arc<dyn Publisher> =
        Arc::new(SnsPublisher::new(aws_sdk_sns::Client::new(sdk), topic));
    Ok(Services {
        repo: Repo::new(Arc::new(store)),
        policy,
        github,
        publisher,
        clock: Arc::new(SystemClock),
        policy_source,
    })
}

/// What every function reads first: the AWS configuration, the secrets overlaid on the
/// environment, and the one HTTP client all outbound clients share.
struct Cold {
    sdk: aws_config::SdkConfig,
    vars: ResolvedVars,
    http: reqwest::Client,
}

impl Cold {
    async fn load() -> Result<Self, BootError> {
        let sdk = super::sdk_config().await;
        let vars = resolve_vars(&sdk).await?;
        Ok(Cold {
            sdk,
            vars,
            http: http_client()?,
        })
    }

    /// The GitHub App client, or `None` with a warning saying what that function then cannot do.
    fn github(
        &self,
        settings: &GitHubAppSettings,
        without: &str,
    ) -> Result<Option<Arc<dyn GitHubApi>>, BootError> {
        let github = settings.client(self.http.clone())?;
        if github.is_none() {
            tracing::warn!("no GitHub App configured: {without}");
        }
        Ok(github)
    }

    async fn services(&self, github: Option<Arc<dyn GitHubApi>>) -> Result<Services, BootError> {
        aws_services(&self.vars, &self.sdk, github).await
    }
}

/// A webhook function's dependencies: the services and the secret that authenticates its
/// requests.
#[derive(Debug)]
pub struct Webhook {
    pub services: Services,
    pub secret: SecretString,
}

/// The GitHub webhook function: the webhook secret and, when configured, the GitHub App.
pub async fn github_webhook() -> Result<Webhook, BootError> {
    let cold = Cold::load().await?;
    let settings = GitHubSettings::from_vars(&cold.vars)?;
    let github = cold.github(
        &settings.app,
        "decisions are recorded but GitHub is never answered",
    )?;
    Ok(Webhook {
        services: cold.services(github).await?,
        secret: settings.webhook_secret,
    })
}

/// The alert function: the bearer token alert sources present and, when configured, the
/// GitHub App that carries out rollbacks.
pub async fn alert_webhook() -> Result<Webhook, BootError> {
    let cold = Cold::load().await?;
    let settings = AlertSettings::from_vars(&cold.vars)?;
    let github = cold.github(
        &settings.github,
        "incidents are recorded, automatic rollbacks cannot be carried out",
    )?;
    Ok(Webhook {
        services: cold.services(github).await?,
        secret: settings.token,
    })
}

/// The Slack approval function's dependencies.
pub struct SlackApproval {
    pub services: Services,
    pub signing_secret: SecretString,
    /// `SHIPGATE_SLACK_TEAM_ID`: the workspace whose clicks count.
    pub team_id: String,
    /// `SHIPGATE_SLACK_APP_ID`, when set: the app clicks must be sent to.
    pub app_id: Option<String>,
    pub slack: Arc<dyn SlackApiPort>,
}

/// The Slack approval function: the signing secret, the bot token and, when configured, the
/// GitHub App.
pub async fn slack_approval() -> Result<SlackApproval, BootError> {
    let cold = Cold::load().await?;
    let settings = SlackApprovalSettings::from_vars(&cold.vars)?;
    let github = cold.github(
        &settings.github,
        "decisions are recorded but GitHub is not answered",
    )?;
    let slack = SlackApi::new(
        SlackConfig {
            api_url: settings.slack_api_url.clone(),
            bot_token: settings.bot_token.clone(),
        },
        cold.http.clone(),
    );
    Ok(SlackApproval {
        services: cold.services(github).await?,
        signing_secret: settings.signing_secret,
        team_id: settings.team_id,
        app_id: settings.app_id,
        slack: Arc::new(slack),
    })
}

/// The notifier function: Slack when a bot token is set, PagerDuty when any routing key is.
pub async fn notifier() -> Result<Notifier, BootError> {
    let cold = Cold::load().await?;
    let slack = SlackSettings::from_vars(&cold.vars)?;
    let pagerduty = PagerDutySettings::from_vars(&cold.vars)?;
    let services = cold.services(None).await?;
    Ok(crate::notifier::from_settings(
        services,
        &slack,
        &pagerduty,
        &cold.vars,
        cold.http.clone(),
    )?)
}

/// Probes follow a few redirects (a health URL behind a login redirect should fail on status,
/// not loop) and identify themselves.
fn probe_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent("shipgate-probe")
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
}

/// The scheduled-jobs function. The GitHub App is optional here: without it the sweeper
/// cannot answer GitHub and rollback drills cannot run, and both say so; the webhook secret is
/// not needed and not read. Backups need `SHIPGATE_BACKUP_BUCKET` and `SHIPGATE_KMS_KEY_ID`;
/// without them `backup` and `restore-drill` report "not configured" (and page) on every tick
/// while the other jobs run, so that is a warning, not a failed cold start. Set but invalid (a
/// bad scratch prefix, a policy table that cannot be backed up) fails the cold start.
pub async fn scheduled_jobs() -> Result<JobContext, BootError> {
    let cold = Cold::load().await?;
    let app = GitHubAppSettings::from_vars(&cold.vars)?;
    let github = cold.github(&app, "pending answers and rollback drills are skipped")?;
    let mut ctx = JobContext::new(cold.services(github).await?, probe_client()?)
        // Analysis sources' credentials may come from Secrets Manager.
        .with_vars(Arc::new(cold.vars.clone()))
        .with_cloudwatch(Arc::new(super::cloudwatch::SdkCloudWatch::new(
            cold.sdk.clone(),
        )));
    let missing: Vec<&str> = [BACKUP_BUCKET_VAR, KMS_KEY_VAR]
        .into_iter()
        .filter(|name| config::optional(&cold.vars, name).is_none())
        .collect();
    if missing.is_empty() {
        let backups = TableBackups::aws(&cold.sdk, &cold.vars, &ctx.services.policy)?;
        tracing::info!(tables = ?backups.tables(), "backups configured");
        ctx = ctx.with_backups(Arc::new(backups));
    } else {
        tracing::warn!(
            missing = %missing.join(", "),
            "backups are not configured: the backup and restore-drill jobs will fail"
        );
    }
    Ok(ctx)
}
