//! Lambda entry point of the scheduled-jobs function: cold-start wiring, then
//! [`handle_invocation`] per schedule tick or pre-deploy backup request.
//!
//! The GitHub App is optional here (`SHIPGATE_GITHUB_APP_ID` + `SHIPGATE_GITHUB_PRIVATE_KEY`):
//! without it the sweeper cannot answer GitHub and rollback drills cannot run, and both say
//! so. The webhook secret is not needed by jobs and not read.
//!
//! Backups need `SHIPGATE_BACKUP_BUCKET` and `SHIPGATE_KMS_KEY_ID` (scratch tables for restore
//! drills are named by `SHIPGATE_SCRATCH_TABLE_PREFIX`); without the first two, `backup` and
//! `restore-drill` report "not configured". Set but invalid (a bad prefix, a policy table that
//! cannot be backed up) fails the cold start.

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use scheduled_jobs::handle_invocation;
use serde_json::Value;
use shipgate::aws::bootstrap::{self, BootError};
use shipgate::aws::lambda;
use shipgate::config::{self, GitHubSettings, Vars};
use shipgate::config::{BACKUP_BUCKET_VAR, KMS_KEY_VAR};
use shipgate::jobs::backup::TableBackups;
use shipgate::jobs::JobContext;
use shipgate::outbound::github::{GitHubApi, GitHubApp, GitHubAppConfig};

/// Probes follow a few redirects (a health URL behind a login redirect should fail on status,
/// not loop) and identify themselves.
fn probe_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent("shipgate-probe")
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
}

fn github_app(
    vars: &dyn Vars,
    http: reqwest::Client,
) -> Result<Option<Arc<dyn GitHubApi>>, BootError> {
    let app_id = config::parse_u64(vars, GitHubSettings::APP_ID)?;
    let key = config::optional_secret(vars, GitHubSettings::PRIVATE_KEY)?;
    let (Some(app_id), Some(private_key)) = (app_id, key) else {
        tracing::warn!("no GitHub App configured: pending answers and rollback drills are skipped");
        return Ok(None);
    };
    let config = GitHubAppConfig {
        api_url: config::base_url(vars, GitHubSettings::API_URL, "https://api.github.com")?,
        app_id,
        private_key,
    };
    Ok(Some(Arc::new(GitHubApp::new(config, http)?)))
}

/// Whether both the backup bucket and the KMS key are set. Without them the backup and
/// restore-drill jobs report "not configured" (and page) on every tick; the other jobs still
/// run, so this is a warning rather than a failed cold start.
fn backups_configured(vars: &dyn Vars) -> bool {
    let missing: Vec<&str> = [BACKUP_BUCKET_VAR, KMS_KEY_VAR]
        .into_iter()
        .filter(|name| config::optional(vars, name).is_none())
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            missing = %missing.join(", "),
            "backups are not configured: the backup and restore-drill jobs will fail"
        );
    }
    missing.is_empty()
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_lambda_tracing();
    let sdk = shipgate::aws::sdk_config().await;
    let vars = bootstrap::resolve_vars(&sdk).await?;
    let http = shipgate::outbound::http_client()?;
    let github = github_app(&vars, http)?;
    let services = bootstrap::aws_services(&vars, &sdk, github).await?;
    let mut ctx = JobContext::new(services, probe_client()?);
    if backups_configured(&vars) {
        let backups = TableBackups::aws(&sdk, &vars, &ctx.services.policy)?;
        tracing::info!(tables = ?backups.tables(), "backups configured");
        ctx = ctx.with_backups(Arc::new(backups));
    }
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id.clone();
        handle_invocation(ctx, &event.payload, Some(&request_id))
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
