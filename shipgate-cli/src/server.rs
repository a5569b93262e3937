//! `shipgate serve`: every webhook route on one port, on embedded storage.
//!
//! The wiring mirrors the Lambda cold start (`shipgate::bootstrap`): typed settings from the
//! same `SHIPGATE_` variables, the policy, the GitHub App client, and [`Services`] — with the
//! SQLite store instead of DynamoDB and an in-process channel instead of SNS. axum only
//! adapts requests: bodies are read (with the size limit) into the `http::Request<Bytes>` the
//! shared handlers take, and their `http::Response<String>` goes back unchanged.
//!
//! Shutdown (SIGTERM or SIGINT): stop accepting, finish in-flight requests, stop the
//! scheduler after its current tick, then let the notifier drain what was published.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use github_webhook::GitHubWebhook;
use http::StatusCode;
use shipgate::config::{ConfigError, GitHubSettings, PagerDutySettings, ProcessEnv, SlackSettings};
use shipgate::notify::ChannelPublisher;
use shipgate::service::{Services, SystemClock};
use shipgate::store::Repo;
use shipgate::web::{self, ApiError};
use tokio::sync::watch;

use crate::data;
use crate::error::CliError;
use crate::notifier_task::{spawn_notifier, NotifierDeps};
use crate::scheduler::{spawn_scheduler, TICK};

/// Notifications buffered between handlers and the notifier before publishing waits.
const NOTIFY_CAPACITY: usize = 1024;
/// How long in-flight requests may take to finish after a shutdown signal.
const REQUEST_GRACE: Duration = Duration::from_secs(25);
/// How long the scheduler's current tick and the notifier's drain may take at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(15);

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub policy_file: PathBuf,
}

/// What every route handler can reach.
#[derive(Clone)]
struct AppState {
    github: Arc<GitHubWebhook>,
    repo: Repo,
}

fn config_error(source: ConfigError) -> CliError {
    let hint = match &source {
        ConfigError::Missing(var) if var.starts_with(GitHubSettings::WEBHOOK_SECRET) => {
            "; `shipgate serve` needs it to verify deliveries to POST /webhooks/github".to_string()
        }
        _ => String::new(),
    };
    CliError::Config { source, hint }
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn serve(cfg: ServeConfig) -> Result<(), CliError> {
    let policy = Arc::new(data::load_policy(&cfg.policy_file)?);
    let github_settings = GitHubSettings::from_vars(&ProcessEnv).map_err(config_error)?;
    let slack = SlackSettings::from_vars(&ProcessEnv).map_err(config_error)?;
    let pagerduty = PagerDutySettings::from_vars(&ProcessEnv).map_err(config_error)?;
    let repo = data::create_or_open(&cfg.data_dir)?;
    let http = shipgate::outbound::http_client()?;
    let github = shipgate::bootstrap::github_client(&github_settings, http)
        .map_err(CliError::GitHubClient)?;

    // Installed before the port opens, so a signal never meets the default (killing) action.
    let signals = Signals::install().map_err(CliError::Serve)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(CliError::Serve)?;

    let (publisher, notifications) = ChannelPublisher::new(NOTIFY_CAPACITY);
    let notifier = spawn_notifier(
        notifications,
        NotifierDeps {
            policy: Arc::clone(&policy),
            slack,
            pagerduty,
        },
    );
    let services = Services {
        repo: repo.clone(),
        policy: Arc::clone(&policy),
        github,
        publisher: Arc::new(publisher),
        clock: Arc::new(SystemClock),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let scheduler = spawn_scheduler(services.clone(), TICK, shutdown_rx.clone());
    let state = AppState {
        github: Arc::new(GitHubWebhook::new(services, github_settings.webhook_secret)),
        repo,
    };

    tracing::info!(
        listen = %local,
        data = %data::db_path(&cfg.data_dir).display(),
        policy = %cfg.policy_file.display(),
        environments = policy.environments().count(),
        github_app = state.github.services.github.is_some(),
        version = VERSION,
        "shipgate is serving"
    );

    let on_signal = Arc::clone(&shutdown_tx);
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        on_signal.send_replace(true);
    });

    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(signalled(shutdown_rx.clone()))
        .into_future();
    let grace = async {
        signalled(shutdown_rx.clone()).await;
        tokio::time::sleep(REQUEST_GRACE).await;
    };
    tokio::select! {
        result = server => result.map_err(CliError::Serve)?,
        () = grace => tracing::warn!(grace_secs = REQUEST_GRACE.as_secs(), "requests still running after the grace period; stopping anyway"),
    }

    shutdown_tx.send_replace(true);
    if tokio::time::timeout(DRAIN_GRACE, scheduler).await.is_err() {
        tracing::warn!("scheduler tick did not finish in time");
    }
    // Every sender lived in the router and the scheduler, both gone now: the channel closes
    // once it is empty.
    match tokio::time::timeout(DRAIN_GRACE, notifier).await {
        Ok(Ok(handled)) => tracing::info!(notifications = handled, "stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "notifier task failed"),
        Err(_) => tracing::warn!("notifier did not drain in time; pending notifications are lost"),
    }
    Ok(())
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// SIGTERM (service managers, containers) and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/webhooks/github", post(github))
        .merge(pending_function_routes())
        .fallback(|| async { to_axum(ApiError::NotFound.into_response()) })
        .method_not_allowed_fallback(|| async {
            to_axum(ApiError::MethodNotAllowed.into_response())
        })
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// Routes of the functions still being built (slack-approval, alert-webhook). Each answers
// 501 until its handler exists; then route it like `github` below: read the body with
// `read_body`, call the crate's `handle`, return `to_axum(response)`.
// ───────────────────────────────────────────────────────────────────────────────────────────
fn pending_function_routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/slack", post(not_implemented))
        .route("/webhooks/alertmanager", post(not_implemented))
        .route("/webhooks/grafana", post(not_implemented))
}

async fn not_implemented() -> axum::response::Response {
    to_axum(web::json(
        StatusCode::NOT_IMPLEMENTED,
        &serde_json::json!({ "message": "not implemented yet" }),
    ))
}

async fn github(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    match read_body(req, state.github.max_body_bytes).await {
        Ok(req) => to_axum(github_webhook::handle(&state.github, req).await),
        Err(e) => to_axum(e.into_response()),
    }
}

/// `200 {"status":"ok"}` when the store answers a read; 503 otherwise.
async fn healthz(State(state): State<AppState>) -> axum::response::Response {
    match state.repo.store().get("META#health", "probe").await {
        Ok(_) => to_axum(web::json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "version": VERSION }),
        )),
        Err(e) => {
            tracing::error!(error = %e, "health check: the store did not answer");
            to_axum(web::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "unavailable", "version": VERSION }),
            ))
        }
    }
}

/// Turns an axum request into the handlers' `http::Request<Bytes>`, refusing bodies over
/// `limit` without buffering more than `limit` bytes of them.
async fn read_body(req: axum::extract::Request, limit: usize) -> Result<web::Request, ApiError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |l| l as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(http::Request::from_parts(parts, Bytes::from(buf)))
}

fn to_axum(resp: web::Response) -> axum::response::Response {
    resp.map(axum::body::Body::from)
}

/// One line per request: method, path (no query: it may carry tokens), status, duration.
/// Bodies and headers (signatures) are never logged.
async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if path == "/healthz" {
        tracing::debug!(%method, path, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, path, status, elapsed_ms, "request");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &'static [u8], content_length: Option<&str>) -> axum::extract::Request {
        let mut b = http::Request::builder()
            .method("POST")
            .uri("/webhooks/github");
        if let Some(len) = content_length {
            b = b.header(http::header::CONTENT_LENGTH, len);
        }
        b.body(axum::body::Body::from(body)).expect("request")
    }

    #[tokio::test]
    async fn bodies_within_the_limit_reach_the_handler_unchanged() {
        let req = read_body(request(b"{\"zen\":1}", None), 9)
            .await
            .expect("read");
        assert_eq!(req.body().as_ref(), b"{\"zen\":1}");
        assert_eq!(req.uri().path(), "/webhooks/github");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_with_413_json() {
        let err = read_body(request(b"0123456789", None), 9)
            .await
            .expect_err("too large");
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            resp.body(),
            r#"{"message":"request body is larger than 9 bytes"}"#
        );
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let err = read_body(request(b"", Some("5000000")), 1024)
            .await
            .expect_err("too large");
        assert!(matches!(err, ApiError::TooLarge { limit: 1024 }));
    }
}
