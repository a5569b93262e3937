//! `shipgate serve`: every webhook route on one port, on embedded storage.
//!
//! The wiring mirrors the Lambda cold starts (`shipgate::aws::bootstrap`): typed settings from the
//! same `SHIPGATE_` variables, the policy, the GitHub App client, and [`Services`] — with the
//! SQLite store instead of DynamoDB and an in-process channel instead of SNS. axum only
//! adapts requests: bodies are read (with the size limit) into the `http::Request<Bytes>` the
//! shared handlers take, and their `http::Response<String>` goes back unchanged.
//!
//! Only the GitHub webhook secret is required. Slack (`SHIPGATE_SLACK_SIGNING_SECRET`) and the
//! alert routes (`SHIPGATE_ALERT_TOKEN`) answer 503 with the variable to set until configured,
//! so a half-configured install says what is missing instead of refusing to start.
//!
//! [`start`] builds and starts everything and hands back a [`RunningServer`] (the demo drives
//! one in-process); [`serve`] is `start` plus the signal handling of the `serve` command.
//!
//! Shutdown (SIGTERM or SIGINT, or [`RunningServer::stop`]): stop accepting, finish in-flight
//! requests, stop the scheduler after its current job, then let the notifier deliver what was
//! already published.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alert_webhook::AlertWebhook;
use async_trait::async_trait;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use github_webhook::GitHubWebhook;
use http::StatusCode;
use secrecy::SecretString;
use shipgate::config::{
    self, ConfigError, GitHubSettings, PagerDutySettings, ProcessEnv, SlackSettings, Vars,
};
use shipgate::embedded::sqlite::Durability;
use shipgate::embedded::ChannelPublisher;
use shipgate::jobs::backup::TableBackups;
use shipgate::jobs::{JobContext, MetricSink};
use shipgate::outbound::{OutboundError, SlackApi, SlackApiPort, SlackConfig, SlackMessageRef};
use shipgate::service::{PolicySource, Services, SystemClock};
use shipgate::store::Repo;
use shipgate::web::{self, ApiError};
use slack_approval::{SlackApproval, Workspace};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::data;
use crate::error::CliError;
use crate::notifier_task::{
    spawn_notifier, spawn_pre_deploy_backups, DiscardPublisher, RoutingPublisher,
};
use crate::queue_timer::{spawn_queue_timer, Deadlines};
use crate::scheduler::{spawn_scheduler, Schedule};

/// Notifications buffered between handlers and the notifier before publishing waits.
const NOTIFY_CAPACITY: usize = 1024;
/// How long in-flight requests may take to finish after a shutdown signal.
const REQUEST_GRACE: Duration = Duration::from_secs(25);
/// How long the scheduler's current job and the notifier's drain may take at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(15);

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything [`start`] needs.
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub policy_file: PathBuf,
    /// Where the `SHIPGATE_` variables come from: the process environment for `serve`, a map
    /// for an embedded server (the demo).
    pub vars: Arc<dyn Vars + Send + Sync>,
    /// Which jobs run, how often.
    pub schedule: Schedule,
    /// How hard each commit waits for the disk (`--sync`).
    pub durability: Durability,
    /// Where the dashboard listens (`--dashboard`, `--dashboard-listen`); `None`: no dashboard.
    pub dashboard: Option<SocketAddr>,
}

impl ServeConfig {
    /// The `serve` defaults: variables from the process environment, the standard schedule.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, policy_file: PathBuf) -> Self {
        ServeConfig {
            listen,
            data_dir,
            policy_file,
            vars: Arc::new(ProcessEnv),
            schedule: Schedule::standard(),
            durability: Durability::Full,
            dashboard: None,
        }
    }
}

/// Flips the server into shutdown; cloneable, so a signal task or a demo step can hold one.
#[derive(Clone)]
pub(crate) struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Asks the server to stop; it finishes what is in flight first. Idempotent.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A started server: its address, the handlers' [`Services`] and the way to stop it.
pub struct RunningServer {
    /// The bound address (the port is real even when `listen` asked for port 0).
    pub addr: SocketAddr,
    /// The same services the routes use (store, policy, GitHub client, publisher to the
    /// in-process notifier).
    pub services: Services,
    shutdown: ShutdownHandle,
    finished: JoinHandle<Result<(), CliError>>,
}

impl RunningServer {
    pub(crate) fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Shuts down and waits until requests, the scheduler and the notifier are done.
    pub async fn stop(self) -> Result<(), CliError> {
        self.shutdown.shutdown();
        self.wait().await
    }

    /// Waits until the server has stopped (after a [`ShutdownHandle::shutdown`]).
    pub(crate) async fn wait(self) -> Result<(), CliError> {
        let RunningServer {
            services, finished, ..
        } = self;
        // Our copy holds a sender to the notifier's channel; the notifier drains without it.
        drop(services);
        match finished.await {
            Ok(result) => result,
            Err(e) => Err(CliError::Serve(std::io::Error::other(e))),
        }
    }
}

/// What every route handler can reach.
#[derive(Clone)]
struct AppState {
    github: Arc<GitHubWebhook>,
    /// `None` until `SHIPGATE_SLACK_SIGNING_SECRET` is set.
    slack: Option<Arc<SlackApproval>>,
    /// `None` until `SHIPGATE_ALERT_TOKEN` is set.
    alerts: Option<Arc<AlertWebhook>>,
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
    // Installed before the port opens, so a signal never meets the default (killing) action.
    let signals = crate::signals::Signals::install().map_err(CliError::Serve)?;
    let running = start(cfg).await?;
    let on_signal = running.shutdown_handle();
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        on_signal.shutdown();
    });
    running.wait().await
}

/// Builds the services from `cfg`, binds the port and starts the routes, the scheduler and
/// the notifier. Configuration problems are returned before anything is started.
pub async fn start(cfg: ServeConfig) -> Result<RunningServer, CliError> {
    let vars: &dyn Vars = &*cfg.vars;
    let policy = Arc::new(data::load_policy(&cfg.policy_file)?);
    // Replaced on SIGHUP and when the file changes (see `policy_reload`).
    let policy_source = PolicySource::new(Arc::clone(&policy));
    let github_settings = GitHubSettings::from_vars(vars).map_err(config_error)?;
    let slack = SlackSettings::from_vars(vars).map_err(config_error)?;
    // Clicks are received only with the signing secret, and then only the workspace's count.
    let slack_workspace = match &slack.signing_secret {
        Some(_) => Some(Workspace {
            team_id: slack.required_team_id().map_err(config_error)?,
            app_id: slack.app_id.clone(),
        }),
        None => None,
    };
    let pagerduty = PagerDutySettings::from_vars(vars).map_err(config_error)?;
    // The dashboard's sign-in is checked before anything listens: an address others can
    // reach without authentication is refused.
    let dashboard = cfg
        .dashboard
        .map(|addr| crate::dashboard::DashboardConfig::from_vars(vars, addr))
        .transpose()
        .map_err(CliError::Dashboard)?;
    let alert_token =
        config::optional_strong_secret(vars, config::ALERT_TOKEN).map_err(config_error)?;
    // Clients whose configuration can be refused come before anything is written to disk.
    let http = shipgate::outbound::http_client()?;
    let github = github_settings
        .app
        .client(http.clone())
        .map_err(CliError::GitHubClient)?;
    let repo = data::create_or_open(&cfg.data_dir, cfg.durability)?;
    // Records written by an older layout move to the current keys before anything reads them.
    let migrated = shipgate::store::migrate::migrate(&repo)
        .await
        .map_err(CliError::Migrate)?;
    if migrated.from_version != migrated.to_version {
        tracing::info!(from = migrated.from_version, to = migrated.to_version, moved = migrated.moved, dropped = migrated.dropped, kept = ?migrated.kept, "store migrated");
    }
    // EMF metric lines are for CloudWatch; a self-hosted server keeps stdout quiet.
    let backups = TableBackups::embedded(&cfg.data_dir, Arc::clone(repo.store()))
        .map_err(CliError::Backups)?
        .with_metrics(MetricSink::Off);

    // The notifier's own services publish nowhere: it publishes nothing, and holding a
    // sender would keep its channel open forever.
    let notifier_services = Services {
        repo: repo.clone(),
        policy: Arc::clone(&policy),
        github: github.clone(),
        publisher: Arc::new(DiscardPublisher),
        clock: Arc::new(SystemClock),
        policy_source: Some(Arc::clone(&policy_source)),
    };
    let notifier = shipgate::notifier::from_settings(
        notifier_services,
        &slack,
        &pagerduty,
        vars,
        http.clone(),
    )
    .map_err(CliError::Notifier)?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(CliError::Serve)?;
    let dashboard_listener = match &dashboard {
        Some(d) => Some(
            tokio::net::TcpListener::bind(d.listen)
                .await
                .map_err(|source| CliError::Listen {
                    addr: d.listen,
                    source,
                })?,
        ),
        None => None,
    };

    let (channel, notifications) = ChannelPublisher::new(NOTIFY_CAPACITY);
    let (deadlines, deadline_rx) = Deadlines::new();
    let (publisher, pre_deploy_requests) = RoutingPublisher::new(channel, deadlines);
    let services = Services {
        repo: repo.clone(),
        policy: Arc::clone(&policy),
        github,
        publisher: Arc::new(publisher),
        clock: Arc::new(SystemClock),
        policy_source: Some(Arc::clone(&policy_source)),
    };

    let slack_app = match (&slack.signing_secret, slack_workspace) {
        (Some(secret), Some(workspace)) => {
            let client = slack_client(&slack, http.clone());
            Some(Arc::new(SlackApproval::new(
                services.clone(),
                secret.clone(),
                workspace,
                client,
            )))
        }
        _ => {
            tracing::warn!(
                variable = SlackSettings::SIGNING_SECRET,
                "Slack is not configured: POST /webhooks/slack answers 503 until it is set"
            );
            None
        }
    };
    let alerts = match alert_token {
        Some(token) => Some(Arc::new(AlertWebhook::new(services.clone(), token))),
        None => {
            tracing::warn!(
                variable = config::ALERT_TOKEN,
                "alerts are not configured: POST /webhooks/alertmanager and /webhooks/grafana answer 503 until it is set"
            );
            None
        }
    };
    if services.github.is_none() {
        tracing::warn!(
            "no GitHub App configured (SHIPGATE_GITHUB_APP_ID, SHIPGATE_GITHUB_PRIVATE_KEY): \
             decisions are recorded but GitHub is never answered and rollbacks cannot run"
        );
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown = ShutdownHandle(Arc::new(shutdown_tx));
    let (notifier_stop_tx, notifier_stop_rx) = watch::channel(false);
    let notifier = spawn_notifier(notifications, notifier, notifier_stop_rx);
    let jobs = JobContext::new(services.clone(), http)
        .with_backups(Arc::new(backups))
        .with_metrics(MetricSink::Off);
    spawn_pre_deploy_backups(pre_deploy_requests, jobs.clone(), shutdown_rx.clone());
    spawn_queue_timer(deadline_rx, services.clone(), shutdown_rx.clone());
    crate::policy_reload::spawn(
        cfg.policy_file.clone(),
        Arc::clone(&policy_source),
        Arc::clone(&services.publisher),
        shutdown_rx.clone(),
    );
    let scheduler = spawn_scheduler(jobs, cfg.schedule, shutdown_rx.clone());
    let state = AppState {
        github: Arc::new(GitHubWebhook::new(
            services.clone(),
            github_settings.webhook_secret,
        )),
        slack: slack_app,
        alerts,
        repo,
    };

    tracing::info!(
        listen = %local,
        data = %data::db_path(&cfg.data_dir).display(),
        policy = %cfg.policy_file.display(),
        environments = policy.environments().count(),
        github_app = services.github.is_some(),
        slack = state.slack.is_some(),
        alerts = state.alerts.is_some(),
        version = VERSION,
        "shipgate is serving"
    );

    if let (Some(listener), Some(dashboard)) = (dashboard_listener, dashboard) {
        let at = listener.local_addr().map_err(CliError::Serve)?;
        tracing::info!(dashboard = %at, auth = ?dashboard.auth, "the dashboard is serving");
        let pages = dashboard.router(services.clone());
        let stop = shutdown_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, pages)
                .with_graceful_shutdown(signalled(stop))
                .await
            {
                tracing::error!(error = %e, "the dashboard stopped");
            }
        });
    }
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(signalled(shutdown_rx.clone()))
        .into_future();
    let finished = tokio::spawn(async move {
        let grace = async {
            signalled(shutdown_rx.clone()).await;
            tokio::time::sleep(REQUEST_GRACE).await;
        };
        let served = tokio::select! {
            result = server => result.map_err(CliError::Serve),
            () = grace => {
                tracing::warn!(grace_secs = REQUEST_GRACE.as_secs(), "requests still running after the grace period; stopping anyway");
                Ok(())
            }
        };
        if tokio::time::timeout(DRAIN_GRACE, scheduler).await.is_err() {
            tracing::warn!("the scheduler's current job did not finish in time");
        }
        // Nothing publishes any more (the routes and the scheduler are gone): the notifier
        // delivers what is queued and ends.
        notifier_stop_tx.send_replace(true);
        match tokio::time::timeout(DRAIN_GRACE, notifier).await {
            Ok(Ok(handled)) => tracing::info!(notifications = handled, "stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "notifier task failed"),
            Err(_) => {
                tracing::warn!("notifier did not drain in time; pending notifications are lost")
            }
        }
        served
    });

    Ok(RunningServer {
        addr: local,
        services,
        shutdown,
        finished,
    })
}

/// The Slack client for the approval route. The bot token only matters for the reject-reason
/// dialog (`views.open`); answers to a click's `response_url` need none, so a missing token
/// degrades one feature instead of the whole route.
fn slack_client(slack: &SlackSettings, http: reqwest::Client) -> Arc<dyn SlackApiPort> {
    match &slack.bot_token {
        Some(token) => Arc::new(SlackApi::new(
            SlackConfig {
                api_url: slack.api_url.clone(),
                bot_token: token.clone(),
            },
            http,
        )),
        None => {
            tracing::warn!(
                variable = SlackSettings::BOT_TOKEN,
                "no Slack bot token: Reject cannot open its reason dialog, and no messages are posted"
            );
            Arc::new(ResponseUrlOnly(SlackApi::new(
                SlackConfig {
                    api_url: slack.api_url.clone(),
                    bot_token: SecretString::from(String::new()),
                },
                http,
            )))
        }
    }
}

/// A Slack client without a bot token: it can answer a click's `response_url` (which needs
/// no token) and refuses every Web API method with an error naming the variable to set.
struct ResponseUrlOnly(SlackApi);

fn no_bot_token() -> OutboundError {
    OutboundError::Permanent {
        service: "slack",
        status: 0,
        message: format!("{} is not set", SlackSettings::BOT_TOKEN),
    }
}

#[async_trait]
impl SlackApiPort for ResponseUrlOnly {
    async fn post_message(
        &self,
        _channel: &str,
        _text: &str,
        _blocks: &serde_json::Value,
    ) -> Result<SlackMessageRef, OutboundError> {
        Err(no_bot_token())
    }

    async fn update_message(
        &self,
        _channel: &str,
        _ts: &str,
        _text: &str,
        _blocks: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        Err(no_bot_token())
    }

    async fn post_ephemeral(
        &self,
        _channel: &str,
        _user: &str,
        _text: &str,
    ) -> Result<(), OutboundError> {
        Err(no_bot_token())
    }

    async fn respond(
        &self,
        response_url: &str,
        body: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        self.0.respond(response_url, body).await
    }

    async fn open_view(
        &self,
        _trigger_id: &str,
        _view: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        Err(no_bot_token())
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/webhooks/github", post(github))
        .route("/webhooks/slack", post(slack))
        .route("/webhooks/alertmanager", post(alerts))
        .route("/webhooks/grafana", post(alerts))
        .fallback(|| async { to_axum(ApiError::NotFound.into_response()) })
        .method_not_allowed_fallback(|| async {
            to_axum(ApiError::MethodNotAllowed.into_response())
        })
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// 503 naming what to configure: the route exists, the install is incomplete.
fn not_configured(what: &str, variable: &str) -> axum::response::Response {
    to_axum(web::json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "message": format!("{what} is not configured: set {variable}") }),
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

async fn slack(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let Some(app) = state.slack else {
        return not_configured("Slack", SlackSettings::SIGNING_SECRET);
    };
    match read_body(req, app.max_body_bytes).await {
        Ok(req) => to_axum(slack_approval::handle(&app, req).await),
        Err(e) => to_axum(e.into_response()),
    }
}

async fn alerts(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let Some(app) = state.alerts else {
        return not_configured("Alerting", config::ALERT_TOKEN);
    };
    match read_body(req, app.max_body_bytes).await {
        Ok(req) => to_axum(alert_webhook::handle(&app, req).await),
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
