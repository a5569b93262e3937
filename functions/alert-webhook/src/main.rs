//! Lambda entry point of the alert webhook function: configuration and clients are built once
//! at cold start; every invocation — an API Gateway HTTP API request from Alertmanager or
//! Grafana, or an SNS notification of a CloudWatch alarm — runs
//! [`alert_webhook::lambda::handle_event`].

use alert_webhook::AlertWebhook;
use lambda_runtime::{service_fn, LambdaEvent};
use shipgate::aws::{bootstrap, lambda};
use shipgate::config;

// One event at a time per sandbox: a single-threaded runtime spends no CPU handing work
// between threads. (scheduled-jobs keeps the multi-threaded runtime for its long backup runs.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_lambda_tracing();
    let sdk = shipgate::aws::sdk_config().await;
    let vars = bootstrap::resolve_vars(&sdk).await?;
    let token = config::required_secret(&vars, config::ALERT_TOKEN)?;
    let github = alert_webhook::github_from_vars(&vars)?;
    if github.is_none() {
        tracing::warn!("no GitHub App configured: incidents are recorded, automatic rollbacks cannot be carried out");
    }
    let services = bootstrap::aws_services(&vars, &sdk, github).await?;
    let app = AlertWebhook::new(services, token);
    let app = &app;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            alert_webhook::lambda::handle_event(app, event.payload).await
        },
    ))
    .await
}
