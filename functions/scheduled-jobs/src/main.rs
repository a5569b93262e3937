//! Lambda entry point of the scheduled-jobs function: cold-start wiring
//! ([`shipgate::aws::bootstrap::scheduled_jobs`]), then [`handle_invocation`] per schedule tick
//! or pre-deploy backup request.

use lambda_runtime::{service_fn, LambdaEvent};
use scheduled_jobs::handle_invocation;
use serde_json::Value;
use shipgate::aws::{bootstrap, lambda};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_lambda_tracing();
    let ctx = &bootstrap::scheduled_jobs().await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id.clone();
        handle_invocation(ctx, &event.payload, Some(&request_id))
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
