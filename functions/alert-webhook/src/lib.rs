//! The alert webhook: Alertmanager and Grafana notifications (`POST /webhooks/alertmanager`,
//! `POST /webhooks/grafana`) and CloudWatch alarms (through SNS) in; incidents, pages and
//! automatic rollbacks out.
//!
//! HTTP requests are authenticated with `Authorization: Bearer <SHIPGATE_ALERT_TOKEN>`
//! (constant-time) before the body is parsed; SNS invocations come from AWS itself. Parsed
//! alerts become [`AlertSignal`](shipgate::domain::events::AlertSignal)s and go to the shared [`incidents::ingest`] use case. The same
//! [`handle`] serves Lambda and the self-hosted server; [`lambda::handle_event`] adapts the
//! one Lambda function's two event shapes (API Gateway HTTP API v2 and SNS).

#[cfg(feature = "lambda")]
pub mod lambda;
pub mod payload;

#[cfg(feature = "lambda")]
use aws_lambda_events::sns::SnsEvent;
use secrecy::SecretString;
use serde::Serialize;
use shipgate::service::incidents::{self, Effect, IngestReport};
use shipgate::service::{ServiceError, Services};
use shipgate::signature::verify_bearer;
use shipgate::web::{self, ApiError, Request, Response};

#[cfg(feature = "lambda")]
use payload::AlarmSignal;

/// The handler's dependencies, built once at cold start.
#[derive(Clone)]
pub struct AlertWebhook {
    pub services: Services,
    /// What alert sources must present as `Authorization: Bearer …`.
    pub token: SecretString,
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for AlertWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertWebhook")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl AlertWebhook {
    pub fn new(services: Services, token: SecretString) -> Self {
        AlertWebhook {
            services,
            token,
            max_body_bytes: web::MAX_BODY_BYTES,
        }
    }
}

/// Handles one HTTP request to an alert route.
pub async fn handle(app: &AlertWebhook, req: Request) -> Response {
    let route = route_of(req.uri().path());
    let span = tracing::info_span!("alert_webhook", route = route.map_or("-", Route::name));
    let _enter = span.enter();
    match handle_inner(app, &req, route).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Alertmanager,
    Grafana,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Alertmanager => "alertmanager",
            Route::Grafana => "grafana",
        }
    }
}

/// The route of a path. Suffix matching lets API Gateway stage prefixes
/// (`/prod/webhooks/grafana`) through.
fn route_of(path: &str) -> Option<Route> {
    let path = path.trim_end_matches('/');
    if path.ends_with("/webhooks/alertmanager") {
        Some(Route::Alertmanager)
    } else if path.ends_with("/webhooks/grafana") {
        Some(Route::Grafana)
    } else {
        None
    }
}

async fn handle_inner(
    app: &AlertWebhook,
    req: &Request,
    route: Option<Route>,
) -> Result<Response, ApiError> {
    let route = route.ok_or(ApiError::NotFound)?;
    web::require_post(req)?;
    web::check_size(req, app.max_body_bytes)?;
    verify_bearer(&app.token, web::header(req, "authorization"))
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let signals = match route {
        Route::Alertmanager => payload::alertmanager(req.body()),
        Route::Grafana => payload::grafana(req.body()),
    }
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if signals.is_empty() {
        return Ok(web::accepted("notification carries no alerts"));
    }
    let report = incidents::ingest(&app.services.current().await, signals)
        .await
        .map_err(service_error)?;
    Ok(web::ok("ingested", summary(&report)))
}

fn service_error(e: ServiceError) -> ApiError {
    match e {
        ServiceError::Busy(what) => ApiError::Busy(format!(
            "{what} is being processed by another delivery; send it again later"
        )),
        e => ApiError::internal(e),
    }
}

/// The response body: counts, then the items.
pub fn summary(report: &IngestReport) -> serde_json::Value {
    serde_json::json!({
        "alerts": report.items.len(),
        "opened": report.count(Effect::Opened) + report.count(Effect::Reopened),
        "resolved": report.count(Effect::Resolved),
        "duplicates": report.count(Effect::Duplicate),
        "unknown_environment": report.unknown_environments().count(),
        "rollbacks_started": report.rollbacks_started(),
        "items": report.items,
    })
}

/// What one SNS invocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnsReport {
    /// Ingested alarm notifications (duplicates included, marked as such in `items`).
    pub ingested: IngestReport,
    /// Records that were not alarm state changes shipgate acts on, with why.
    pub skipped: Vec<SkippedRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRecord {
    pub message_id: String,
    pub reason: String,
}

/// Why an SNS invocation should be retried by Lambda.
#[derive(Debug, thiserror::Error)]
#[error("SNS message {message_id} could not be processed: {source}")]
pub struct SnsError {
    pub message_id: String,
    #[source]
    pub source: ServiceError,
}

/// Handles CloudWatch alarm notifications delivered through SNS. Each record's SNS message
/// id is its idempotency key. Records that are not alarm changes are skipped (retrying would
/// not help); a storage or GitHub failure fails the invocation so Lambda retries it, and
/// the records already processed are recognised as duplicates then.
#[cfg(feature = "lambda")]
pub async fn handle_sns(app: &AlertWebhook, event: SnsEvent) -> Result<SnsReport, SnsError> {
    let mut report = SnsReport::default();
    for record in event.records {
        let message_id = record.sns.message_id.clone();
        let signal = match payload::cloudwatch_alarm(&record.sns.message, &message_id) {
            Ok(AlarmSignal::Signal(signal)) => *signal,
            Ok(AlarmSignal::Ignored { state }) => {
                tracing::info!(message_id = %message_id, state = %state, "alarm state ignored");
                report.skipped.push(SkippedRecord {
                    message_id,
                    reason: format!("alarm state {state} neither fires nor resolves"),
                });
                continue;
            }
            Err(e) => {
                tracing::warn!(message_id = %message_id, error = %e, "SNS message is not a CloudWatch alarm; skipped");
                report.skipped.push(SkippedRecord {
                    message_id,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let ingested = incidents::ingest(&app.services.current().await, vec![signal])
            .await
            .map_err(|source| SnsError {
                message_id: message_id.clone(),
                source,
            })?;
        report.ingested.items.extend(ingested.items);
    }
    Ok(report)
}
