//! Lambda entry point of the GitHub webhook function: configuration and clients are built
//! once at cold start; every invocation runs [`github_webhook::handle`].

use github_webhook::GitHubWebhook;
use shipgate::aws::{bootstrap, lambda};

// One event at a time per sandbox: a single-threaded runtime spends no CPU handing work
// between threads. (scheduled-jobs keeps the multi-threaded runtime for its long backup runs.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::init_lambda_tracing();
    let boot = bootstrap::github_webhook().await?;
    let app = GitHubWebhook::new(boot.services, boot.secret);
    lambda::run_http(|req| github_webhook::handle(&app, req)).await
}
