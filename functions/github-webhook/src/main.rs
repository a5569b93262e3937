//! Lambda entry point of the GitHub webhook function: configuration and clients are built
//! once at cold start; every invocation runs [`github_webhook::handle`].

use github_webhook::GitHubWebhook;
use shipgate::aws::{bootstrap, lambda};
use shipgate::config::GitHubSettings;

// One event at a time per sandbox: a single-threaded runtime spends no CPU handing work
// between threads. (scheduled-jobs keeps the multi-threaded runtime for its long backup runs.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::init_lambda_tracing();
    let sdk = shipgate::aws::sdk_config().await;
    let vars = bootstrap::resolve_vars(&sdk).await?;
    let settings = GitHubSettings::from_vars(&vars)?;
    let github = bootstrap::github_client(&settings, shipgate::outbound::http_client()?)?;
    let services = bootstrap::aws_services(&vars, &sdk, github).await?;
    let app = GitHubWebhook::new(services, settings.webhook_secret);
    lambda::run_http(|req| github_webhook::handle(&app, req)).await
}
