//! Lambda entry point of the scheduled-jobs function: cold-start wiring, then [`handle`] per
//! schedule tick.
//!
//! The GitHub App is optional here (`SHIPGATE_GITHUB_APP_ID` + `SHIPGATE_GITHUB_PRIVATE_KEY`):
//! without it the sweeper cannot answer GitHub and rollback drills cannot run, and both say
//! so. The webhook secret is not needed by jobs and not read.

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use scheduled_jobs::handle;
use serde_json::Value;
use shipgate::bootstrap::{self, BootError};
use shipgate::config::{self, GitHubSettings, Vars};
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

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_lambda_tracing();
    let sdk = bootstrap::aws_config().await;
    let vars = bootstrap::resolve_vars(&sdk).await?;
    let http = shipgate::outbound::http_client()?;
    let github = github_app(&vars, http)?;
    let services = bootstrap::aws_services(&vars, &sdk, github).await?;
    let ctx = JobContext::new(services, probe_client()?);
    // TODO(backups): wire `shipgate::jobs::BackupJobs` over `jobs::backup::BackupDeps` built from
    // SHIPGATE_BACKUP_BUCKET (S3 objects) and SHIPGATE_KMS_KEY_ID (KMS data keys), with scratch
    // tables named by SHIPGATE_SCRATCH_TABLE_PREFIX; until then `backup` and `restore-drill`
    // fail with a clear "not configured" error.
    if config::optional(&vars, "SHIPGATE_BACKUP_BUCKET").is_some() {
        tracing::warn!("SHIPGATE_BACKUP_BUCKET is set but backup jobs are not wired in this build");
    }
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id.clone();
        handle(ctx, &event.payload, Some(&request_id))
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
