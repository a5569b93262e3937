//! Prometheus as a metric source for analysis, through its HTTP API: an instant query
//! (`POST /api/v1/query`, form-encoded `query` and `time`) gives a sample's value, and a range
//! query (`POST /api/v1/query_range`) over the time before a deploy gives a baseline, the mean
//! of its points.
//!
//! A query must come down to one number: a scalar, or a vector of exactly one series (write
//! `sum(...)`, `max(...)` or `histogram_quantile(...)` around it). An empty vector is no value,
//! and so is `NaN` (Prometheus's answer to 0/0, a ratio of two idle counters): both make a
//! sample inconclusive, never a pass. Several series, an error answer (a bad query is `400`
//! with `status: "error"`) and a source that cannot be reached are errors, which the analysis
//! also records as inconclusive, with the reason.

use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::metrics::{MetricSource, SourceError};
use super::retry::transport_cause;
use super::trim_base_url;

/// How a Prometheus server wants to be authenticated.
#[derive(Clone, Default)]
pub enum PrometheusAuth {
    #[default]
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(SecretString),
    /// HTTP basic authentication.
    Basic {
        user: String,
        password: SecretString,
    },
}

impl std::fmt::Debug for PrometheusAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrometheusAuth::None => f.write_str("None"),
            PrometheusAuth::Bearer(_) => f.write_str("Bearer(***)"),
            PrometheusAuth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
        }
    }
}

/// A Prometheus server.
#[derive(Debug, Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    base_url: String,
    auth: PrometheusAuth,
    timeout: Duration,
}

/// How long one query may take before the sample is inconclusive.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

#[async_trait::async_trait]
impl MetricSource for Prometheus {
    async fn value_at(&self, query: &str, at: Timestamp) -> Result<Option<f64>, SourceError> {
        Prometheus::value_at(self, query, at).await
    }

    async fn mean_over(
        &self,
        query: &str,
        from: Timestamp,
        to: Timestamp,
        step: Duration,
    ) -> Result<Option<f64>, SourceError> {
        Prometheus::mean_over(self, query, from, to, step).await
    }
}

impl Prometheus {
    /// The server at `base_url` (`https://prometheus.example.com`, or with a path prefix).
    pub fn new(http: reqwest::Client, base_url: &str, auth: PrometheusAuth) -> Self {
        Prometheus {
            http,
            base_url: trim_base_url(base_url),
            auth,
            timeout: QUERY_TIMEOUT,
        }
    }

    /// The value of `query` at `at`: `Ok(None)` when there is none (no series, or NaN).
    pub async fn value_at(&self, query: &str, at: Timestamp) -> Result<Option<f64>, SourceError> {
        let time = seconds(at);
        let data = self
            .post("/api/v1/query", &[("query", query), ("time", &time)])
            .await?;
        match data.result_type.as_str() {
            "scalar" => point(&data.result),
            "vector" => {
                let series = data
                    .result
                    .as_array()
                    .ok_or_else(|| SourceError::Answer("a vector that is not a list".into()))?;
                match series.as_slice() {
                    [] => Ok(None),
                    [one] => point(&one["value"]),
                    many => Err(SourceError::Series(many.len())),
                }
            }
            other => Err(SourceError::Answer(format!(
                "an instant query gave a {other}"
            ))),
        }
    }

    /// The mean of `query` over `[from, to]`, evaluated every `step`: `Ok(None)` when it has no
    /// finite point there.
    pub async fn mean_over(
        &self,
        query: &str,
        from: Timestamp,
        to: Timestamp,
        step: Duration,
    ) -> Result<Option<f64>, SourceError> {
        let (start, end) = (seconds(from), seconds(to));
        let step = format!("{}s", step.as_secs().max(1));
        let data = self
            .post(
                "/api/v1/query_range",
                &[
                    ("query", query),
                    ("start", &start),
                    ("end", &end),
                    ("step", &step),
                ],
            )
            .await?;
        if data.result_type != "matrix" {
            return Err(SourceError::Answer(format!(
                "a range query gave a {}",
                data.result_type
            )));
        }
        let series = data
            .result
            .as_array()
            .ok_or_else(|| SourceError::Answer("a matrix that is not a list".into()))?;
        let points = match series.as_slice() {
            [] => return Ok(None),
            [one] => one["values"]
                .as_array()
                .ok_or_else(|| SourceError::Answer("a series without values".into()))?,
            many => return Err(SourceError::Series(many.len())),
        };
        let mut sum = 0.0;
        let mut n = 0u32;
        for p in points {
            if let Some(v) = point(p)? {
                sum += v;
                n += 1;
            }
        }
        Ok((n > 0).then(|| sum / f64::from(n)))
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Data, SourceError> {
        let url = format!("{}{path}", self.base_url);
        let unreachable = |cause: String| SourceError::Unreachable {
            url: self.base_url.clone(),
            cause,
        };
        let body = serde_urlencoded::to_string(form)
            .map_err(|e| SourceError::Answer(format!("cannot encode the query: {e}")))?;
        let mut request = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .timeout(self.timeout);
        request = match &self.auth {
            PrometheusAuth::None => request,
            PrometheusAuth::Bearer(token) => request.bearer_auth(token.expose_secret()),
            PrometheusAuth::Basic { user, password } => {
                request.basic_auth(user, Some(password.expose_secret()))
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(transport_cause(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(transport_cause(&e)))?;
        // Prometheus's own errors (400 bad query, 422 execution, 503 timeout) carry a JSON body
        // that says what went wrong; a proxy's error page does not.
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
            if status.is_success() {
                SourceError::Answer("not JSON".into())
            } else {
                unreachable(format!("HTTP {}", status.as_u16()))
            }
        })?;
        if answer.status != "success" {
            return Err(SourceError::Refused {
                error_type: answer.error_type.unwrap_or_else(|| "error".into()),
                message: answer.error.unwrap_or_default(),
            });
        }
        answer
            .data
            .ok_or_else(|| SourceError::Answer("success without data".into()))
    }
}

/// Unix seconds with milliseconds, as Prometheus takes times.
fn seconds(at: Timestamp) -> String {
    format!("{:.3}", at.as_millisecond() as f64 / 1000.0)
}

/// `[time, "value"]` → the value; `NaN` and infinities are no value.
fn point(pair: &Value) -> Result<Option<f64>, SourceError> {
    let text = pair.get(1).and_then(Value::as_str).ok_or_else(|| {
        SourceError::Answer(format!("a sample that is not [time, \"value\"]: {pair}"))
    })?;
    let value: f64 = text.parse().map_err(|_| {
        SourceError::Answer(format!("a sample value {text:?} that is not a number"))
    })?;
    Ok(value.is_finite().then_some(value))
}
