//! One retry loop for every outbound call, and the error type every client returns.
//!
//! The loop sends a request with a per-attempt timeout, classifies the answer and either returns
//! it, gives up for good (a 4xx the caller must not repeat), or sleeps and tries again (5xx, 429,
//! GitHub rate limits, transport errors and timeouts). Sleeps are exponential backoff with full
//! jitter unless the server said how long to wait (`Retry-After`, `x-ratelimit-reset`).
//!
//! A server-requested wait longer than [`RetryPolicy::max_retry_after`] is not slept at all: the
//! call fails at once as [`OutboundError::Exhausted`], which callers treat as "retry later" (the
//! notifier lets SQS redeliver). Retrying before the server's time would only be refused again,
//! GitHub penalises clients that keep calling while rate-limited, and a Lambda must not sleep for
//! minutes on the clock it is billed for.
//!
//! Errors and logs name the service and the operation, never the URL: Slack `response_url`s are
//! capability URLs, and tokens only ever travel in (sensitive) headers.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

/// How hard one outbound call tries before it gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included; `1` disables retries.
    pub max_attempts: u32,
    /// Backoff cap for the first retry; it doubles on each following one.
    pub base_delay: Duration,
    /// Upper bound of any backoff sleep.
    pub max_delay: Duration,
    /// The longest server-requested wait (`Retry-After`, rate-limit reset) that is slept; a longer
    /// one ends the call as [`OutboundError::Exhausted`] instead.
    pub max_retry_after: Duration,
    /// Per-attempt timeout, from connecting until the whole response body is read, so that a
    /// hanging server cannot hold a caller.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// Sized for a Lambda with a 30 s budget: at most 3 × 5 s of requests plus a few seconds of
    /// sleeps.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The full-jitter backoff before retry number `retry` (1 for the first retry): a uniformly
    /// random duration in `[0, min(max_delay, base_delay × 2^(retry-1))]`. Full jitter keeps a
    /// fleet of Lambdas that failed together from retrying together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let ceiling = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let ceiling_micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::thread_rng().gen_range(0..=ceiling_micros))
    }
}

/// Why one attempt failed in a way worth retrying.
#[derive(Debug)]
pub enum AttemptFailure {
    /// The server answered with a retryable status (5xx, 429, a rate-limited 403, Slack's
    /// `ratelimited`).
    Status {
        status: u16,
        message: String,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// No usable answer: connection refused or reset, TLS failure, timeout, body cut short.
    Transport(reqwest::Error),
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status {
                status, message, ..
            } => write!(f, "HTTP {status}: {message}"),
            Self::Transport(err) => f.write_str(&transport_cause(err)),
        }
    }
}

/// What went wrong on the wire, in words an operator can act on: `connection refused`, `DNS
/// lookup failed`, `TLS failed`, `timed out`, `connection reset`..., with the innermost cause
/// and the host (never the whole URL: a Slack `response_url` is a credential).
pub fn transport_cause(err: &reqwest::Error) -> String {
    // The top-level message names the whole URL; only the causes below it are shown.
    let mut innermost = "no further detail".to_string();
    let mut io_kind = None;
    let mut texts = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = StdError::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        innermost = e.to_string();
        texts.push(innermost.to_ascii_lowercase());
        source = e.source();
    }
    let mentions = |needle: &str| texts.iter().any(|t| t.contains(needle));
    use std::io::ErrorKind;
    let cause = if err.is_timeout() || io_kind == Some(ErrorKind::TimedOut) {
        "timed out"
    } else if io_kind == Some(ErrorKind::ConnectionRefused) {
        "connection refused"
    } else if mentions("dns error") || mentions("failed to lookup address") {
        "DNS lookup failed"
    } else if mentions("tls")
        || mentions("certificate")
        || mentions("handshake")
        || mentions("corrupt message")
    {
        "TLS failed"
    } else if matches!(
        io_kind,
        Some(ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
    ) {
        "connection reset"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "the answer was cut short"
    } else {
        "transport error"
    };
    let host = err
        .url()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_else(|| "?".into());
    format!("{cause} ({host}): {innermost}")
}

impl StdError for AttemptFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Status { .. } => None,
            Self::Transport(err) => Some(err),
        }
    }
}

/// What can go wrong calling GitHub, Slack or PagerDuty.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The service refused the request for good (a 4xx other than 408/429, Slack `ok:false`).
    /// Sending it again will fail again: the notifier dead-letters these.
    #[error("{service} rejected the request (HTTP {status}): {message}")]
    Permanent {
        service: &'static str,
        status: u16,
        message: String,
    },
    /// Every attempt failed in a retryable way, or the server asked for a longer wait than the
    /// policy allows. Worth retrying later (e.g. on the queue's next delivery).
    #[error("{service} call failed after {attempts} attempt(s); last: {last}")]
    Exhausted {
        service: &'static str,
        attempts: u32,
        #[source]
        last: AttemptFailure,
    },
    /// The request could not be built or sent for a reason retrying does not fix (for example a
    /// malformed base URL).
    #[error("could not send the request to {service}")]
    Transport {
        service: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The service answered success, but not with what its API documents.
    #[error("unexpected response from {service}: {message}")]
    Decode {
        service: &'static str,
        message: String,
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// The caller passed something that cannot form a valid request (e.g. a repository name
    /// that is not `owner/name`); nothing was sent.
    #[error("invalid request to {service}: {message}")]
    InvalidRequest {
        service: &'static str,
        message: String,
    },
    /// Credentials could not be used, e.g. the GitHub App private key is not an RSA PEM.
    #[error("invalid credentials for {service}")]
    Credentials {
        service: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl OutboundError {
    /// True when repeating the same call cannot succeed, so it belongs in a dead-letter queue
    /// rather than back on the queue.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Permanent { .. }
            | Self::Decode { .. }
            | Self::InvalidRequest { .. }
            | Self::Credentials { .. } => true,
            Self::Exhausted { .. } => false,
            Self::Transport { source, .. } => source.is_builder(),
        }
    }

    /// True when the last attempt ran out of time.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Exhausted {
                last: AttemptFailure::Transport(err),
                ..
            }
            | Self::Transport { source: err, .. } => err.is_timeout(),
            _ => false,
        }
    }

    /// The wait the server last asked for, useful to delay a redelivery.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Exhausted {
                last: AttemptFailure::Status { retry_after, .. },
                ..
            } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status behind the error, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Permanent { status, .. }
            | Self::Exhausted {
                last: AttemptFailure::Status { status, .. },
                ..
            } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn decode(
        service: &'static str,
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self::Decode {
            service,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// A request body serialised once; each attempt sends a cheap clone.
pub(crate) fn json_bytes(
    service: &'static str,
    body: &impl serde::Serialize,
) -> Result<Bytes, OutboundError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|err| OutboundError::InvalidRequest {
            service,
            message: format!("body cannot be serialised as JSON: {err}"),
        })
}

/// A fully read response.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a client makes of one response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    Permanent {
        message: String,
    },
}

/// The default reading of an HTTP answer, shared by all three services.
pub(crate) fn classify_http(response: &RawResponse) -> Verdict {
    let status = response.status;
    if status.is_success() {
        return Verdict::Success;
    }
    let message = error_message(&response.body);
    let retry_after = retry_after(&response.headers);
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        if let Some(wait) = retry_after.or_else(|| rate_limit_reset(&response.headers)) {
            return Verdict::Retry {
                message,
                retry_after: Some(wait),
            };
        }
        // GitHub documents secondary rate limits without either header: wait at least a
        // minute. That is beyond any sensible `max_retry_after`, so the call ends as Exhausted
        // (retry later) rather than Permanent.
        if status == StatusCode::FORBIDDEN && message.to_ascii_lowercase().contains("rate limit") {
            return Verdict::Retry {
                message,
                retry_after: Some(Duration::from_secs(60)),
            };
        }
    }
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Verdict::Retry {
            message,
            retry_after,
        }
    } else {
        Verdict::Permanent { message }
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Some(until(at))
}

/// GitHub's primary/secondary limit: `x-ratelimit-remaining: 0` with the reset epoch second.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let remaining = headers.get("x-ratelimit-remaining")?.to_str().ok()?.trim();
    if remaining != "0" {
        return None;
    }
    let reset: i64 = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let at = jiff::Timestamp::from_second(reset).ok()?;
    // One extra second: the reset is truncated to whole seconds.
    Some(until(at) + Duration::from_secs(1))
}

fn until(at: jiff::Timestamp) -> Duration {
    let millis = at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// A short, log-safe description of an error body: the JSON `message` (GitHub, PagerDuty) or
/// `error` (Slack) with PagerDuty's `errors`, else the start of the text.
pub(crate) fn error_message(body: &[u8]) -> String {
    const LIMIT: usize = 300;
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => {
            let head = json
                .get("message")
                .or_else(|| json.get("error"))
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let errors = json.get("errors").map(|v| v.to_string());
            match (head, errors) {
                (Some(head), Some(errors)) => format!("{head} {errors}"),
                (Some(head), None) => head,
                (None, Some(errors)) => errors,
                (None, None) => json.to_string(),
            }
        }
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    truncate_chars(&text, LIMIT).to_owned()
}

/// The first `max` characters of `text`, cut on a character boundary.
pub(crate) fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Sends a request built by `build` until `classify` accepts the answer, the answer is
/// permanent, or the policy runs out. `operation` names the call in logs (never the URL).
pub(crate) async fn execute(
    policy: &RetryPolicy,
    service: &'static str,
    operation: &'static str,
    build: impl Fn() -> reqwest::RequestBuilder,
    classify: impl Fn(&RawResponse) -> Verdict,
) -> Result<RawResponse, OutboundError> {
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match send_once(policy, &build).await {
            Ok(response) => match classify(&response) {
                Verdict::Success => return Ok(response),
                Verdict::Permanent { message } => {
                    return Err(OutboundError::Permanent {
                        service,
                        status: response.status.as_u16(),
                        message,
                    })
                }
                Verdict::Retry {
                    message,
                    retry_after,
                } => AttemptFailure::Status {
                    status: response.status.as_u16(),
                    message,
                    retry_after,
                },
            },
            Err(err) if err.is_builder() => {
                return Err(OutboundError::Transport {
                    service,
                    source: err,
                })
            }
            Err(err) => AttemptFailure::Transport(err),
        };

        let exhausted = |last| OutboundError::Exhausted {
            service,
            attempts: attempt,
            last,
        };
        if attempt >= max_attempts {
            return Err(exhausted(failure));
        }
        let wait = match &failure {
            AttemptFailure::Status {
                retry_after: Some(wait),
                ..
            } => {
                if *wait > policy.max_retry_after {
                    tracing::warn!(
                        service,
                        operation,
                        attempt,
                        requested_wait_ms = millis(*wait),
                        max_retry_after_ms = millis(policy.max_retry_after),
                        error = %failure,
                        "server asked for a longer wait than allowed; giving up for now"
                    );
                    return Err(exhausted(failure));
                }
                *wait
            }
            _ => policy.backoff(attempt),
        };
        tracing::warn!(
            service,
            operation,
            attempt,
            max_attempts,
            wait_ms = millis(wait),
            error = %failure,
            "outbound call failed; retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

async fn send_once(
    policy: &RetryPolicy,
    build: &impl Fn() -> reqwest::RequestBuilder,
) -> Result<RawResponse, reqwest::Error> {
    // Errors keep only the URL's origin (scheme, host, port): the path and query of some
    // URLs are capabilities (Slack response_url), while the host says where it failed.
    let (client, request) = build().timeout(policy.timeout).build_split();
    let request = request.map_err(reqwest::Error::without_url)?;
    let origin = origin_of(request.url());
    let keep_origin = |e: reqwest::Error| match &origin {
        Some(origin) => e.without_url().with_url(origin.clone()),
        None => e.without_url(),
    };
    let response = client.execute(request).await.map_err(keep_origin)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(keep_origin)?;
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// `scheme://host:port/` of `url`, without its path, query or credentials.
fn origin_of(url: &reqwest::Url) -> Option<reqwest::Url> {
    let host = url.host_str()?;
    let origin = match url.port() {
        Some(port) => format!("{}://{host}:{port}/", url.scheme()),
        None => format!("{}://{host}/", url.scheme()),
    };
    reqwest::Url::parse(&origin).ok()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn response(status: u16, headers: &[(&'static str, &str)], body: &str) -> RawResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        RawResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn backoff_stays_within_the_doubling_ceiling_and_max_delay() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(100));
            assert!(policy.backoff(2) <= Duration::from_millis(200));
            assert!(policy.backoff(3) <= Duration::from_millis(350));
            assert!(policy.backoff(40) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn backoff_is_jittered_rather_than_fixed() {
        let policy = RetryPolicy {
            base_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let samples: std::collections::HashSet<_> = (0..20).map(|_| policy.backoff(1)).collect();
        assert!(samples.len() > 1);
    }

    #[test]
    fn server_errors_rate_limits_and_request_timeouts_are_retryable() {
        for status in [500, 502, 503, 504, 429, 408] {
            assert!(
                matches!(
                    classify_http(&response(status, &[], "")),
                    Verdict::Retry { .. }
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_permanent_with_the_body_message() {
        let verdict = classify_http(&response(
            422,
            &[],
            r#"{"message":"Validation Failed","documentation_url":"https://docs"}"#,
        ));
        assert_eq!(
            verdict,
            Verdict::Permanent {
                message: "Validation Failed".into()
            }
        );
        for status in [400, 401, 403, 404, 409] {
            assert!(matches!(
                classify_http(&response(status, &[], "nope")),
                Verdict::Permanent { .. }
            ));
        }
    }

    #[test]
    fn retry_after_seconds_are_honoured_on_429() {
        let verdict = classify_http(&response(429, &[("retry-after", "7")], ""));
        assert_eq!(
            verdict,
            Verdict::Retry {
                message: "(empty body)".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_accepts_an_http_date() {
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&at)
            .unwrap();
        let wait = retry_after(&response(503, &[("retry-after", &date)], "").headers).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    }

    #[test]
    fn github_secondary_rate_limit_403_with_retry_after_is_retryable() {
        let verdict = classify_http(&response(
            403,
            &[("retry-after", "3")],
            r#"{"message":"You have exceeded a secondary rate limit"}"#,
        ));
        assert!(matches!(
            verdict,
            Verdict::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }

    #[test]
    fn github_rate_limit_403_waits_until_the_reset_second() {
        let reset = jiff::Timestamp::now().as_second() + 20;
        let verdict = classify_http(&response(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset.to_string()),
            ],
            r#"{"message":"API rate limit exceeded"}"#,
        ));
        let Verdict::Retry {
            retry_after: Some(wait),
            ..
        } = verdict
        else {
            panic!("expected a retry, got {verdict:?}");
        };
        assert!(wait > Duration::from_secs(18) && wait <= Duration::from_secs(22));
    }

    #[test]
    fn github_403_with_remaining_quota_is_permanent() {
        let verdict = classify_http(&response(
            403,
            &[
                ("x-ratelimit-remaining", "4999"),
                ("x-ratelimit-reset", "1"),
            ],
            r#"{"message":"Resource not accessible by integration"}"#,
        ));
        assert!(matches!(verdict, Verdict::Permanent { .. }));
    }

    #[test]
    fn github_secondary_rate_limit_without_headers_waits_a_minute() {
        let verdict = classify_http(&response(
            403,
            &[],
            r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes"}"#,
        ));
        assert!(matches!(
            verdict,
            Verdict::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(60)
        ));
    }

    #[test]
    fn error_message_combines_pagerduty_message_and_errors() {
        let message = error_message(
            br#"{"status":"invalid event","message":"Event object is invalid","errors":["'payload' is missing"]}"#,
        );
        assert_eq!(
            message,
            r#"Event object is invalid ["'payload' is missing"]"#
        );
    }

    #[test]
    fn error_message_is_truncated_on_a_char_boundary() {
        let body = "é".repeat(1000);
        assert_eq!(error_message(body.as_bytes()).chars().count(), 300);
    }

    /// The cause a failed call reports, through the retry loop the clients use.
    async fn cause_of(url: &str) -> String {
        let client = reqwest::Client::new();
        let policy = RetryPolicy {
            max_attempts: 1,
            timeout: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        let err = execute(&policy, "test", "get", || client.get(url), classify_http)
            .await
            .expect_err("must fail");
        match err {
            OutboundError::Exhausted { last, .. } => last.to_string(),
            other => panic!("not a transport failure: {other}"),
        }
    }

    #[tokio::test]
    async fn transport_failures_name_their_cause_and_the_host_not_the_url() {
        // Nothing listens on a port just freed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let refused = cause_of(&format!("http://127.0.0.1:{port}/actions/T0/secret-path")).await;
        assert!(
            refused.starts_with(&format!("connection refused (127.0.0.1:{port}): ")),
            "{refused}"
        );
        assert!(!refused.contains("secret-path"), "{refused}");

        // A server that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = silent.accept().await {
                held.push(sock);
            }
        });
        let timed_out = cause_of(&format!("http://{addr}/")).await;
        assert!(
            timed_out.starts_with(&format!("timed out ({addr})")),
            "{timed_out}"
        );

        // A plain-text server spoken to over TLS.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        let answer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut sock, _)) = plain.accept().await {
                let _ = sock
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let tls = cause_of(&format!("https://{addr}/")).await;
        assert!(tls.starts_with(&format!("TLS failed ({addr}): ")), "{tls}");
        hold.abort();
        answer.abort();
    }
}
