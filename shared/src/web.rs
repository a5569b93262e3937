//! HTTP plumbing shared by the webhook functions and the self-hosted server.
//!
//! Handlers take an [`http::Request`] with the raw body (signatures are computed over the
//! exact bytes) and return an [`http::Response`] with a JSON body. Lambda adapts API Gateway
//! events to these types, the self-hosted server adapts axum's; the handlers cannot tell.
//! Every error becomes one JSON answer here: clients see a safe message, details go to the
//! log once.

use bytes::Bytes;
use http::StatusCode;

pub type Request = http::Request<Bytes>;
pub type Response = http::Response<String>;

/// Largest body any webhook route accepts (GitHub's own deliveries are capped at 25 MB, but
/// the events shipgate uses are far smaller; API Gateway allows 10 MB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A handler's failure, mapped to the status codes of the webhook routes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
    /// Authentic, but from someone shipgate does not act for.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// The same event is being handled right now: `503` with `Retry-After`, for senders that
    /// retry only on 5xx (Alertmanager, Grafana).
    #[error("{0}")]
    Busy(String),
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not found")]
    NotFound,
    /// Anything else; the cause is logged, never returned.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The one place errors become responses (and internal ones are logged).
    pub fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(source) => {
                tracing::error!(error = %source, cause = ?source.source(), "internal error");
                "internal error".to_string()
            }
            ApiError::Unauthorized(reason) => {
                tracing::warn!(status = status.as_u16(), reason = %reason, "refused unauthenticated request");
                "unauthorized".to_string()
            }
            // Each refusal is logged once, here, with its reason.
            ApiError::BadRequest(reason) => {
                tracing::warn!(status = status.as_u16(), reason = %reason, "refused a malformed request");
                reason.clone()
            }
            ApiError::Forbidden(reason) => {
                tracing::warn!(status = status.as_u16(), reason = %reason, "refused a request shipgate does not act for");
                reason.clone()
            }
            ApiError::Conflict(reason) | ApiError::Busy(reason) => {
                tracing::info!(status = status.as_u16(), reason = %reason, "the same event is being handled; asked the sender to retry");
                reason.clone()
            }
            ApiError::TooLarge { .. } => {
                let reason = self.to_string();
                tracing::warn!(status = status.as_u16(), reason = %reason, "refused an oversized request");
                reason
            }
            other => other.to_string(),
        };
        let busy = matches!(self, ApiError::Busy(_));
        let mut resp = json(status, &serde_json::json!({ "message": message }));
        if busy {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("5"),
            );
        }
        resp
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut resp = http::Response::new(body.to_string());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `200 {"message": ...}` plus extra fields.
pub fn ok(message: &str, extra: serde_json::Value) -> Response {
    let mut body = serde_json::json!({ "message": message });
    if let (Some(obj), serde_json::Value::Object(more)) = (body.as_object_mut(), extra) {
        obj.extend(more);
    }
    json(StatusCode::OK, &body)
}

/// `202`: authentic, understood, and deliberately not acted on.
pub fn accepted(message: &str) -> Response {
    json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "message": message }),
    )
}

/// A header as text, if present and valid UTF-8.
pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Refuses bodies over `limit` before any work is done on them.
pub fn check_size(req: &Request, limit: usize) -> Result<(), ApiError> {
    if req.body().len() > limit {
        return Err(ApiError::TooLarge { limit });
    }
    Ok(())
}

/// Refuses anything but POST.
pub fn require_post(req: &Request) -> Result<(), ApiError> {
    if req.method() != http::Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_answer_a_generic_message() {
        let err = ApiError::internal(std::io::Error::other("db password is hunter2"));
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.body(), r#"{"message":"internal error"}"#);
    }

    #[test]
    fn unauthorized_answers_never_say_why() {
        let resp = ApiError::Unauthorized("signature mismatch".into()).into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.body(), r#"{"message":"unauthorized"}"#);
    }

    #[test]
    fn oversized_bodies_are_refused() {
        let req = http::Request::new(Bytes::from(vec![b'x'; 11]));
        assert!(matches!(
            check_size(&req, 10),
            Err(ApiError::TooLarge { limit: 10 })
        ));
        assert!(check_size(&req, 11).is_ok());
    }
}
