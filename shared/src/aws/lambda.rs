//! The Lambda runtime side of a function: JSON logs for CloudWatch and the HTTP adapter that
//! hands API Gateway HTTP API v2 events to the same `http::Request<Bytes>` handlers
//! `shipgate serve` routes to.

/// JSON logs for CloudWatch, level from `RUST_LOG` (default `info`).
///
/// `RUST_LOG` takes a level and `target=level` pairs (`warn,shipgate=debug`); span and field
/// filters are not supported here. That filter needs no regular expressions, which keeps a
/// regex engine out of every function binary.
pub fn init_lambda_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let default = || Targets::new().with_default(LevelFilter::INFO);
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse::<Targets>().unwrap_or_else(|e| {
            // Logging is not up yet; say it on stderr, which Lambda also sends to CloudWatch.
            eprintln!("RUST_LOG={spec:?} is not `level` or `target=level` pairs ({e}); using info");
            default()
        }),
        _ => default(),
    };
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .without_time(); // CloudWatch stamps every line already.
    let _ = tracing_subscriber::registry()
        .with(json)
        .with(filter)
        .try_init();
}

/// Runs an HTTP handler under the Lambda runtime (API Gateway HTTP API v2 events).
pub async fn run_http<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(crate::web::Request) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = crate::web::Response> + Send,
{
    let handler = &handler;
    lambda_http::run(lambda_http::service_fn(
        move |event: lambda_http::Request| async move {
            let (parts, body) = event.into_parts();
            // lambda_http already decoded base64 bodies; signatures need the exact bytes.
            let bytes = bytes::Bytes::copy_from_slice(body.as_ref());
            let resp = handler(http::Request::from_parts(parts, bytes)).await;
            Ok::<_, std::convert::Infallible>(resp)
        },
    ))
    .await
}
