//! Cold-start wiring shared by the Lambda functions: logging, secrets, policy, clients.
//!
//! On AWS, secrets live in Secrets Manager: `SHIPGATE_SECRETS` and every `SHIPGATE_SECRETS_*`
//! variable name one or more secrets (comma-separated), each a JSON object whose keys are `SHIPGATE_` variable names. They are
//! fetched once at cold start and overlaid on the process environment, so the typed settings
//! in [`crate::config`] read them exactly as they read local variables. The policy comes from
//! `SHIPGATE_POLICY_FILE`, inline `SHIPGATE_POLICY`, or the SSM parameter named by
//! `SHIPGATE_POLICY_PARAMETER`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::aws::dynamodb::DynamoStore;
use crate::aws::sns::SnsPublisher;
use crate::config::{self, ConfigError, GitHubSettings, Vars};
use crate::domain::policy::{Policy, PolicyErrors, PolicyLoadError};
use crate::notify::Publisher;
use crate::outbound::github::{GitHubApi, GitHubApp, GitHubAppConfig};
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
}

/// The process environment with Secrets Manager values overlaid.
#[derive(Debug, Clone, Default)]
pub struct ResolvedVars {
    overlay: HashMap<String, String>,
}

impl Vars for ResolvedVars {
    fn var(&self, name: &str) -> Option<String> {
        self.overlay
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}

/// The AWS SDK configuration (honours `AWS_ENDPOINT_URL` for the emulator).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// Fetches the secrets named by `SHIPGATE_SECRETS` and overlays them.
pub async fn resolve_vars(sdk: &aws_config::SdkConfig) -> Result<ResolvedVars, BootError> {
    let mut overlay = HashMap::new();
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
    if names.is_empty() {
        return Ok(ResolvedVars { overlay });
    }
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    for name in &names {
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
    if let Some(path) = config::optional(vars, "SHIPGATE_POLICY_FILE") {
        return Ok(Policy::load(path)?);
    }
    if let Some(text) = config::optional(vars, "SHIPGATE_POLICY") {
        return Ok(Policy::parse("SHIPGATE_POLICY", &text)?);
    }
    if let (Some(name), Some(sdk)) = (config::optional(vars, "SHIPGATE_POLICY_PARAMETER"), sdk) {
        let out = aws_sdk_ssm::Client::new(sdk)
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| BootError::Parameter {
                name: name.clone(),
                message: aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
            })?;
        let text = out
            .parameter()
            .and_then(|p| p.value())
            .ok_or_else(|| BootError::Parameter {
                name: name.clone(),
                message: "parameter has no value".into(),
            })?;
        return Ok(Policy::parse(&name, text)?);
    }
    Err(BootError::NoPolicy)
}

/// The GitHub App client, when the App is configured.
pub fn github_client(
    settings: &GitHubSettings,
    http: reqwest::Client,
) -> Result<Option<Arc<dyn GitHubApi>>, BootError> {
    match &settings.app {
        Some((app_id, key)) => {
            let mut cfg = GitHubAppConfig::new(*app_id, key.clone());
            cfg.api_url = settings.api_url.clone();
            Ok(Some(Arc::new(GitHubApp::new(cfg, http)?)))
        }
        None => Ok(None),
    }
}

/// Services on AWS: DynamoDB table `SHIPGATE_TABLE`, SNS topic `SHIPGATE_TOPIC_ARN`.
pub async fn aws_services(
    vars: &dyn Vars,
    sdk: &aws_config::SdkConfig,
    github: Option<Arc<dyn GitHubApi>>,
) -> Result<Services, BootError> {
    let table = config::required(vars, "SHIPGATE_TABLE")?;
    let topic = config::required(vars, "SHIPGATE_TOPIC_ARN")?;
    let policy = load_policy(vars, Some(sdk)).await?;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table);
    let publisher: Arc<dyn Publisher> =
        Arc::new(SnsPublisher::new(aws_sdk_sns::Client::new(sdk), topic));
    Ok(Services {
        repo: Repo::new(Arc::new(store)),
        policy: Arc::new(policy),
        github,
        publisher,
        clock: Arc::new(SystemClock),
    })
}
