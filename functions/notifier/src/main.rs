//! Lambda entry point of the notifier: configuration and clients are built once at cold
//! start; every invocation hands its SQS batch to [`notifier::handle_sqs_until`] and answers
//! with the records that failed (`ReportBatchItemFailures`).

use lambda_runtime::{service_fn, LambdaEvent};
use shipgate::aws::{bootstrap, lambda};

// One event at a time per sandbox: a single-threaded runtime spends no CPU handing work
// between threads. (scheduled-jobs keeps the multi-threaded runtime for its long backup runs.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_lambda_tracing();
    let app = &bootstrap::notifier().await?;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::sqs::SqsEvent>| async move {
            let deadline = event.context.deadline();
            let response = notifier::handle_sqs_until(app, event.payload, Some(deadline)).await;
            Ok::<_, std::convert::Infallible>(response)
        },
    ))
    .await
}
