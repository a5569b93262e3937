//! Lambda entry point of the alert webhook function: configuration and clients are built once
//! at cold start; every invocation — an API Gateway HTTP API request from Alertmanager or
//! Grafana, or an SNS notification of a CloudWatch alarm — runs
//! [`alert_webhook::lambda::handle_event`].

use alert_webhook::AlertWebhook;
use lambda_runtime::{service_fn, LambdaEvent};
use shipgate::aws::{bootstrap, lambda};

// One event at a time per sandbox: a single-threaded runtime spends no CPU handing work
// between threads. (scheduled-jobs keeps the multi-threaded runtime for its long backup runs.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_lambda_tracing();
    let boot = bootstrap::alert_webhook().await?;
    let app = &AlertWebhook::new(boot.services, boot.secret);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            alert_webhook::lambda::handle_event(app, event.payload).await
        },
    ))
    .await
}
