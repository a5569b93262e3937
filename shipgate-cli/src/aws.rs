//! The operator commands against a deployed stack (the `aws` feature): `--stack NAME` reads
//! the table, bucket, key, topic, policy parameter and GitHub App secret from the CloudFormation
//! stack's outputs; `--table T` (with `--bucket`, `--kms-key`, `--topic`,
//! `--policy-parameter`, `--github-app-secret` as a command needs them) names them directly,
//! and each also overrides what the stack says. Credentials and region come from the standard
//! AWS chain (`AWS_PROFILE`, `AWS_REGION`, ...; `AWS_ENDPOINT_URL` for an emulator).

use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_cloudformation::error::DisplayErrorContext;
use shipgate::aws::backups::{backup_deps, restore_target, RestoreTargetError};
use shipgate::aws::bootstrap::{self, ResolvedVars, SsmPolicy};
use shipgate::aws::{DynamoStore, SnsPublisher};
use shipgate::backup::operations::BackupDeps;
use shipgate::backup::tables::TableSink;
use shipgate::config::{
    BACKUP_BUCKET_VAR, KMS_KEY_VAR, POLICY_PARAMETER_VAR, STATE_TABLE_VAR, TOPIC_ARN_VAR,
};
use shipgate::domain::policy::{Policy, SHIPGATE_TABLE};
use shipgate::jobs::backup::TableBackups;
use shipgate::notify::Publisher;
use shipgate::service::PolicyFetch;
use shipgate::store::Repo;

use crate::error::CliError;

/// The stack outputs `--stack` reads (template.yaml's `Outputs`).
pub mod outputs {
    pub const TABLE: &str = "StateTableName";
    pub const BUCKET: &str = "BackupBucketName";
    pub const KMS_KEY: &str = "BackupKeyArn";
    pub const TOPIC: &str = "NotificationsTopicArn";
    pub const POLICY_PARAMETER: &str = "PolicyParameterName";
    pub const GITHUB_APP_SECRET: &str = "GithubAppSecretName";
    pub const GITHUB_WEBHOOK_URL: &str = "GithubWebhookUrl";
    /// Every output the CLI reads, for the template test.
    pub const ALL: [&str; 7] = [
        TABLE,
        BUCKET,
        KMS_KEY,
        TOPIC,
        POLICY_PARAMETER,
        GITHUB_APP_SECRET,
        GITHUB_WEBHOOK_URL,
    ];
}

/// `policy check --stack NAME`: the policy a deployed stack runs with.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicyStackArgs {
    /// Check the policy in this stack's policy parameter (its `PolicyParameterName` output).
    #[arg(long, value_name = "NAME", conflicts_with = "file")]
    pub stack: Option<String>,
    /// Check the policy in this SSM parameter.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["file", "stack"])]
    pub policy_parameter: Option<String>,
}

impl PolicyStackArgs {
    /// The parameter's name and the policy text in it, when a stack or parameter is given.
    pub async fn read(&self) -> Result<Option<(String, String)>, CliError> {
        if self.stack.is_none() && self.policy_parameter.is_none() {
            return Ok(None);
        }
        let sdk = sdk_config().await?;
        let parameter = match (&self.stack, &self.policy_parameter) {
            (_, Some(parameter)) => parameter.clone(),
            (Some(stack), None) => stack_outputs(&sdk, stack)
                .await?
                .remove(outputs::POLICY_PARAMETER)
                .ok_or_else(|| {
                    CliError::Aws(format!(
                        "stack {stack} has no {} output (--policy-parameter NAME names it)",
                        outputs::POLICY_PARAMETER
                    ))
                })?,
            (None, None) => return Ok(None),
        };
        let ssm = SsmPolicy::new(aws_sdk_ssm::Client::new(&sdk), parameter.clone());
        let (name, text, _version) = ssm
            .fetch()
            .await
            .map_err(|e| CliError::Aws(format!("reading the policy parameter {parameter}: {e}")))?;
        Ok(Some((name, text)))
    }
}

/// The AWS configuration from the standard chain; a missing region is an error here rather
/// than at the first call.
async fn sdk_config() -> Result<SdkConfig, CliError> {
    let sdk = shipgate::aws::sdk_config().await;
    if sdk.region().is_none() {
        return Err(CliError::Aws(
            "no AWS region: set AWS_REGION, or a region in the AWS profile (AWS_PROFILE)"
                .to_owned(),
        ));
    }
    Ok(sdk)
}

/// Where a deployed stack keeps shipgate's state, as the command line gives it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsArgs {
    /// A deployed shipgate stack: its outputs name the table, bucket, key, topic, policy
    /// parameter and GitHub App secret (AWS credentials and region from the standard chain).
    #[arg(
        long,
        value_name = "NAME",
        group = "aws_store",
        conflicts_with = "data"
    )]
    pub stack: Option<String>,
    /// shipgate's DynamoDB table (instead of, or over, the stack's `StateTableName`).
    #[arg(long, value_name = "T", group = "aws_store", conflicts_with = "data")]
    pub table: Option<String>,
    /// The backup bucket (the stack's `BackupBucketName`): `backup`, and `job backup`.
    #[arg(long, value_name = "B", requires = "aws_store")]
    pub bucket: Option<String>,
    /// The backup KMS key id or ARN (the stack's `BackupKeyArn`).
    #[arg(long, value_name = "KEY", requires = "aws_store")]
    pub kms_key: Option<String>,
    /// The notifications topic (the stack's `NotificationsTopicArn`): where `rollback`,
    /// `unlock` and `job` announce, for the stack's notifier to deliver.
    #[arg(long, value_name = "ARN", requires = "aws_store")]
    pub topic: Option<String>,
    /// The policy's SSM parameter (the stack's `PolicyParameterName`), read when `--policy`
    /// is not given.
    #[arg(long, value_name = "NAME", requires = "aws_store")]
    pub policy_parameter: Option<String>,
    /// The Secrets Manager secret with the GitHub App's id and key (the stack's
    /// `GithubAppSecretName`), read by `rollback` and `job`.
    #[arg(long, value_name = "NAME", requires = "aws_store")]
    pub github_app_secret: Option<String>,
}

impl AwsArgs {
    /// Whether the command line names a stack or a table.
    pub fn given(&self) -> bool {
        self.stack.is_some() || self.table.is_some()
    }
}

/// A deployed stack's resources, resolved.
pub struct AwsState {
    sdk: SdkConfig,
    table: String,
    bucket: Option<String>,
    kms_key: Option<String>,
    topic: Option<String>,
    policy_parameter: Option<String>,
    github_app_secret: Option<String>,
    /// What to call it in messages: `stack NAME` or `table T`.
    label: String,
}

fn aws_error(what: String, e: impl std::error::Error) -> CliError {
    CliError::Aws(format!("{what}: {}", DisplayErrorContext(e)))
}

impl AwsState {
    /// Loads the AWS configuration and, with `--stack`, the stack's outputs.
    pub async fn resolve(args: AwsArgs) -> Result<AwsState, CliError> {
        let sdk = sdk_config().await?;
        let mut outputs = std::collections::HashMap::new();
        if let Some(stack) = &args.stack {
            outputs = stack_outputs(&sdk, stack).await?;
        }
        let mut from_stack = |name: &str| outputs.remove(name);
        let table = match args.table.or_else(|| from_stack(outputs::TABLE)) {
            Some(table) => table,
            None => {
                return Err(CliError::Aws(format!(
                "stack {} has no {} output: is it a shipgate stack? (--table T names the table)",
                args.stack.as_deref().unwrap_or_default(),
                outputs::TABLE
            )))
            }
        };
        let label = match &args.stack {
            Some(stack) => format!("stack {stack}"),
            None => format!("table {table}"),
        };
        Ok(AwsState {
            table,
            bucket: args.bucket.or_else(|| from_stack(outputs::BUCKET)),
            kms_key: args.kms_key.or_else(|| from_stack(outputs::KMS_KEY)),
            topic: args.topic.or_else(|| from_stack(outputs::TOPIC)),
            policy_parameter: args
                .policy_parameter
                .or_else(|| from_stack(outputs::POLICY_PARAMETER)),
            github_app_secret: args
                .github_app_secret
                .or_else(|| from_stack(outputs::GITHUB_APP_SECRET)),
            label,
            sdk,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The state in the DynamoDB table.
    pub fn repo(&self) -> Repo {
        let client = aws_sdk_dynamodb::Client::new(&self.sdk);
        Repo::new(Arc::new(DynamoStore::new(client, self.table.clone())))
    }

    /// The policy from the stack's SSM parameter.
    pub async fn policy(&self) -> Result<Policy, CliError> {
        let Some(parameter) = &self.policy_parameter else {
            return Err(CliError::Usage(format!(
                "{} names no policy parameter: give --policy FILE or --policy-parameter NAME",
                self.label
            )));
        };
        let mut vars = ResolvedVars::default();
        vars.set(POLICY_PARAMETER_VAR, parameter.clone());
        bootstrap::load_policy(&vars, Some(&self.sdk))
            .await
            .map_err(|e| CliError::Aws(format!("reading the policy: {e}")))
    }

    fn missing(&self, what: &str, flag: &str) -> CliError {
        CliError::Usage(format!("{} names no {what}: give {flag}", self.label))
    }

    /// The backups in the bucket, with the key's data keys.
    pub fn backup_deps(&self) -> Result<BackupDeps, CliError> {
        let bucket = self
            .bucket
            .clone()
            .ok_or_else(|| self.missing("backup bucket", "--bucket B"))?;
        let key = self
            .kms_key
            .clone()
            .ok_or_else(|| self.missing("backup key", "--kms-key KEY"))?;
        Ok(backup_deps(&self.sdk, bucket, key))
    }

    /// The variables a job or a rollback reads: the process environment, the GitHub App
    /// secret's values when a secret is named, and the stack's resources.
    pub async fn vars(&self) -> Result<ResolvedVars, CliError> {
        let names: Vec<String> = self.github_app_secret.iter().cloned().collect();
        let mut vars = bootstrap::fetch_secrets(&self.sdk, &names)
            .await
            .map_err(|e| CliError::Aws(e.to_string()))?;
        vars.set(STATE_TABLE_VAR, self.table.clone());
        for (name, value) in [
            (BACKUP_BUCKET_VAR, &self.bucket),
            (KMS_KEY_VAR, &self.kms_key),
            (TOPIC_ARN_VAR, &self.topic),
        ] {
            if let Some(value) = value {
                vars.set(name, value.clone());
            }
        }
        Ok(vars)
    }

    /// Where `rollback`, `unlock` and `job` announce: the notifications topic.
    pub fn publisher(&self) -> Result<Arc<dyn Publisher>, CliError> {
        let topic = self
            .topic
            .clone()
            .ok_or_else(|| self.missing("notifications topic", "--topic ARN"))?;
        Ok(Arc::new(SnsPublisher::new(
            aws_sdk_sns::Client::new(&self.sdk),
            topic,
        )))
    }

    /// The backup and restore-drill jobs over the table (and the policy's other tables).
    pub fn job_backups(
        &self,
        vars: &ResolvedVars,
        policy: &Policy,
    ) -> Result<Option<TableBackups>, CliError> {
        if self.bucket.is_none() || self.kms_key.is_none() {
            return Ok(None);
        }
        TableBackups::aws(&self.sdk, vars, policy)
            .map(Some)
            .map_err(CliError::Backups)
    }

    /// `backup restore --into T`: a new table like the backup's source, or with `force` an
    /// existing one.
    pub async fn restore_target(
        &self,
        source: &str,
        into: &str,
        force: bool,
    ) -> Result<Box<dyn TableSink>, CliError> {
        // shipgate's own table is filed as `shipgate`; other tables under their own names.
        let like = if source == SHIPGATE_TABLE {
            self.table.as_str()
        } else {
            source
        };
        restore_target(&self.sdk, like, into, force)
            .await
            .map_err(|e| match e {
                RestoreTargetError::Table(e) => CliError::Aws(e.to_string()),
                other => CliError::Usage(other.to_string()),
            })
    }
}

/// The stack's public base URL: its `GithubWebhookUrl` output without `/webhooks/github`.
pub async fn stack_base_url(stack: &str) -> Result<String, CliError> {
    let sdk = sdk_config().await?;
    let url = stack_outputs(&sdk, stack)
        .await?
        .remove(outputs::GITHUB_WEBHOOK_URL)
        .ok_or_else(|| {
            CliError::Aws(format!(
                "stack {stack} has no {} output: is it a shipgate stack? (--url BASE names the URL)",
                outputs::GITHUB_WEBHOOK_URL
            ))
        })?;
    match url.strip_suffix("/webhooks/github") {
        Some(base) => Ok(base.to_owned()),
        None => Err(CliError::Aws(format!(
            "stack {stack}'s {} output {url:?} does not end in /webhooks/github",
            outputs::GITHUB_WEBHOOK_URL
        ))),
    }
}

/// Every output of `stack`, by key.
pub async fn stack_outputs(
    sdk: &SdkConfig,
    stack: &str,
) -> Result<std::collections::HashMap<String, String>, CliError> {
    let client = aws_sdk_cloudformation::Client::new(sdk);
    let described = client
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| aws_error(format!("describing stack {stack}"), e))?;
    let Some(found) = described.stacks().first() else {
        return Err(CliError::Aws(format!("no stack {stack}")));
    };
    Ok(found
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect())
}
