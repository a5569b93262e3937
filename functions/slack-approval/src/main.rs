//! Lambda entry point of the Slack approval function: configuration and clients are built once
//! at cold start; every invocation runs [`slack_approval::handle`].

use std::sync::Arc;

use shipgate::aws::{bootstrap, lambda};
use shipgate::outbound::{http_client, SlackApi, SlackConfig};
use slack_approval::{Settings, SlackApproval};

// One event at a time per sandbox: a single-threaded runtime spends no CPU handing work
// between threads. (scheduled-jobs keeps the multi-threaded runtime for its long backup runs.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::init_lambda_tracing();
    let sdk = shipgate::aws::sdk_config().await;
    let vars = bootstrap::resolve_vars(&sdk).await?;
    let settings = Settings::from_vars(&vars)?;
    let http = http_client()?;
    let github = settings.github_client(http.clone())?;
    if github.is_none() {
        tracing::warn!(
            "no GitHub App configured: decisions are recorded but GitHub is not answered"
        );
    }
    let services = bootstrap::aws_services(&vars, &sdk, github).await?;
    let slack = SlackApi::new(
        SlackConfig {
            api_url: settings.slack_api_url.clone(),
            bot_token: settings.bot_token.clone(),
        },
        http,
    );
    let app = SlackApproval::new(services, settings.signing_secret.clone(), Arc::new(slack));
    lambda::run_http(|req| slack_approval::handle(&app, req)).await
}
