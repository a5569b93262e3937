//! The Lambda adapter: one function receives both API Gateway HTTP API (payload 2.0) requests
//! and SNS notifications, so the payload arrives as raw JSON and is dispatched on its shape.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::sns::SnsEvent;
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use shipgate::web::{self, ApiError};

use crate::{handle, handle_sns, AlertWebhook, SnsError};

/// Why an invocation failed (Lambda logs it and, for SNS, retries).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event is neither an SNS notification nor an API Gateway HTTP API request: {0}")]
    Shape(#[source] serde_json::Error),
    #[error(transparent)]
    Sns(#[from] SnsError),
    #[error("could not serialise the response: {0}")]
    Response(#[source] serde_json::Error),
}

impl From<EventError> for lambda_runtime::Diagnostic {
    /// The error type tells an operator reading the Lambda error whether a retry can help:
    /// a storage or GitHub failure can, an event of the wrong shape cannot.
    fn from(e: EventError) -> Self {
        let error_type = match &e {
            EventError::Shape(_) => "InvalidEvent",
            EventError::Sns(s) if s.source.is_retryable() => "Retryable",
            EventError::Sns(_) => "Failed",
            EventError::Response(_) => "InvalidResponse",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// True for an SNS → Lambda event (`Records[0].EventSource == "aws:sns"`).
pub fn is_sns(payload: &serde_json::Value) -> bool {
    payload
        .pointer("/Records/0/EventSource")
        .and_then(serde_json::Value::as_str)
        == Some("aws:sns")
}

/// Handles one invocation, whatever its trigger.
pub async fn handle_event(
    app: &AlertWebhook,
    payload: serde_json::Value,
) -> Result<serde_json::Value, EventError> {
    if is_sns(&payload) {
        let event: SnsEvent = serde_json::from_value(payload).map_err(EventError::Shape)?;
        let report = handle_sns(app, event).await?;
        return serde_json::to_value(report).map_err(EventError::Response);
    }
    let event: ApiGatewayV2httpRequest =
        serde_json::from_value(payload).map_err(EventError::Shape)?;
    let response = match to_http_request(event) {
        Ok(req) => handle(app, req).await,
        Err(e) => e.into_response(),
    };
    serde_json::to_value(to_apigw_response(response)).map_err(EventError::Response)
}

/// Turns an API Gateway HTTP API request into the handler's request, decoding a base64 body
/// (signatures and tokens are checked over the exact bytes the sender sent).
pub fn to_http_request(event: ApiGatewayV2httpRequest) -> Result<web::Request, ApiError> {
    let method = event.request_context.http.method.clone();
    let path = event
        .raw_path
        .clone()
        .or_else(|| event.request_context.http.path.clone())
        .unwrap_or_else(|| "/".to_string());
    let uri = match event.raw_query_string.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let body = match event.body {
        None => Bytes::new(),
        Some(text) if event.is_base64_encoded => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|_| ApiError::BadRequest("body is not valid base64".into()))?,
        ),
        Some(text) => Bytes::from(text),
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .map_err(|_| ApiError::BadRequest("request path is not a valid URI".into()))?;
    *req.headers_mut() = event.headers;
    Ok(req)
}

/// Turns the handler's response into an API Gateway HTTP API response.
pub fn to_apigw_response(resp: web::Response) -> ApiGatewayV2httpResponse {
    let (parts, body) = resp.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    out.body = Some(Body::Text(body));
    out.is_base64_encoded = false;
    out
}

/// The HTTP status of a serialised API Gateway response (for logs and tests).
pub fn status_of(value: &serde_json::Value) -> Option<StatusCode> {
    value
        .get("statusCode")
        .and_then(serde_json::Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
}
