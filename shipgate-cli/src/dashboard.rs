//! The dashboard's listener in `shipgate serve`: its own address (loopback by default, never
//! the webhook port), its sign-in, and the pages of [`shipgate::dashboard`].
//!
//! Who may look, set once at start:
//! - `SHIPGATE_DASHBOARD_TOKEN`: a request carries `Authorization: Bearer <token>`, or the
//!   session cookie a browser gets from signing in with the token at `/login`;
//! - `SHIPGATE_DASHBOARD_USER_HEADER`: the name of the header in which a reverse proxy in
//!   front passes the user it authenticated (e.g. `X-Forwarded-User`); a request without it
//!   is refused. Only the proxy may reach the listener then.
//! - neither: anyone who can reach the address, which must then be a loopback one. A
//!   non-loopback address without either is refused at start.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use shipgate::config::{self, ConfigError, Vars};
use shipgate::dashboard::auth::{self, SESSION_COOKIE};
use shipgate::dashboard::html::{content_security_policy, Site};
use shipgate::dashboard::{login_page, View};
use shipgate::service::Services;

/// The variable holding the dashboard's token.
pub const TOKEN_VAR: &str = "SHIPGATE_DASHBOARD_TOKEN";
/// The variable naming a reverse proxy's authenticated-user header.
pub const USER_HEADER_VAR: &str = "SHIPGATE_DASHBOARD_USER_HEADER";
/// The default listen address of `--dashboard`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8788";
/// The largest sign-in form accepted.
const MAX_LOGIN_BYTES: usize = 4096;

/// How requests prove who they are.
#[derive(Clone, Default)]
pub struct DashboardAuth {
    token: Option<SecretString>,
    /// The session cookie's value for `token`.
    session: Option<String>,
    user_header: Option<HeaderName>,
}

impl std::fmt::Debug for DashboardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardAuth")
            .field("token", &self.token.as_ref().map(|_| "[set]"))
            .field("user_header", &self.user_header)
            .finish()
    }
}

/// Why the dashboard cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum DashboardConfigError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{USER_HEADER_VAR} {0:?} is not a header name")]
    Header(String),
    #[error("the dashboard would listen on {0}, which is not a loopback address, without authentication: set {TOKEN_VAR} (a token of at least 32 characters) or {USER_HEADER_VAR} (behind a reverse proxy that authenticates), or listen on 127.0.0.1")]
    OpenToTheNetwork(SocketAddr),
}

impl DashboardAuth {
    /// Reads the variables once, at start.
    fn from_vars(vars: &dyn Vars) -> Result<Self, DashboardConfigError> {
        let token = config::optional_strong_secret(vars, TOKEN_VAR)?;
        let user_header = match vars.var(USER_HEADER_VAR).filter(|v| !v.trim().is_empty()) {
            Some(name) => Some(
                HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| DashboardConfigError::Header(name.clone()))?,
            ),
            None => None,
        };
        Ok(DashboardAuth {
            session: token.as_ref().map(auth::session_value),
            token,
            user_header,
        })
    }

    /// Refuses an address others can reach when nothing authenticates them.
    fn check_listen(&self, listen: SocketAddr) -> Result<(), DashboardConfigError> {
        if self.token.is_none() && self.user_header.is_none() && !listen.ip().is_loopback() {
            return Err(DashboardConfigError::OpenToTheNetwork(listen));
        }
        Ok(())
    }

    /// `Ok(Some(user))` for a proxy's user, `Ok(None)` for a token or an open dashboard,
    /// `Err(())` when the request proves nothing.
    fn identify(&self, headers: &HeaderMap) -> Result<Option<String>, ()> {
        if let Some(name) = &self.user_header {
            if let Some(user) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
            {
                return Ok(Some(user.to_string()));
            }
        }
        if let (Some(token), Some(session)) = (&self.token, &self.session) {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if bearer.is_some_and(|b| auth::same(b.trim(), token.expose_secret())) {
                return Ok(None);
            }
            let cookie = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|h| auth::cookie(h, SESSION_COOKIE));
            if cookie.is_some_and(|c| auth::same(c, session)) {
                return Ok(None);
            }
        }
        if self.token.is_none() && self.user_header.is_none() {
            return Ok(None);
        }
        Err(())
    }
}

/// Everything the dashboard's listener needs, read once at start: where it listens, who may
/// look, and where GitHub links point. `serve --dashboard` and `shipgate dashboard` both
/// start from it, so the two are refused and configured alike.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub listen: SocketAddr,
    pub auth: DashboardAuth,
    pub github_web: String,
}

impl DashboardConfig {
    /// Reads the variables and refuses an address others can reach without sign-in.
    pub fn from_vars(vars: &dyn Vars, listen: SocketAddr) -> Result<Self, DashboardConfigError> {
        let auth = DashboardAuth::from_vars(vars)?;
        auth.check_listen(listen)?;
        let github_web = config::base_url(
            vars,
            config::GITHUB_WEB_URL_VAR,
            shipgate::render::DEFAULT_GITHUB_WEB_URL,
        )?;
        Ok(DashboardConfig {
            listen,
            auth,
            github_web,
        })
    }

    /// The dashboard's routes over `services`.
    pub fn router(self, services: Services) -> Router {
        router(services, self.auth, self.github_web)
    }
}

#[derive(Clone)]
struct DashState {
    services: Services,
    auth: Arc<DashboardAuth>,
    csp: Arc<str>,
    github_web: Arc<str>,
}

/// The dashboard's routes over `services`.
fn router(services: Services, auth: DashboardAuth, github_web: String) -> Router {
    let state = DashState {
        services,
        auth: Arc::new(auth),
        csp: Arc::from(content_security_policy()),
        github_web: Arc::from(github_web),
    };
    Router::new()
        .route("/", get(overview))
        .route("/incidents", get(incidents))
        .route("/backups", get(backups))
        .route("/dora", get(dora))
        .route("/deployments/{id}", get(deployment))
        .route("/login", get(login_form).post(login))
        .fallback(not_found)
        .with_state(state)
}

fn html(state: &DashState, status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(&state.csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn refused(state: &DashState) -> Response {
    let mut resp = html(state, StatusCode::UNAUTHORIZED, login_page(None));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"shipgate dashboard\""),
    );
    resp
}

fn failed(state: &DashState, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "dashboard page failed");
    html(
        state,
        StatusCode::INTERNAL_SERVER_ERROR,
        "<!doctype html><title>shipgate</title><p>The page could not be read from the store; see the server's log.</p>".to_string(),
    )
}

/// Which page a request asks for.
enum Page {
    Overview,
    Incidents,
    Backups,
    Dora(Option<String>),
    Deployment(String),
}

/// Renders a page for an identified request.
async fn render(state: DashState, headers: HeaderMap, which: Page) -> Response {
    let Ok(user) = state.auth.identify(&headers) else {
        return refused(&state);
    };
    let svc = state.services.refreshed();
    let view = View {
        repo: &svc.repo,
        policy: &svc.policy,
        now: svc.now(),
        site: Site::Live,
        signed_in: user.as_deref(),
        github_web: &state.github_web,
    };
    let made = match which {
        Page::Overview => view.overview().await.map(Some),
        Page::Incidents => view.incidents().await.map(Some),
        Page::Backups => view.backups().await.map(Some),
        Page::Dora(repo) => view.dora(repo.as_deref()).await.map(Some),
        Page::Deployment(id) => view.deployment(&id).await,
    };
    match made {
        Ok(Some(page)) => html(&state, StatusCode::OK, page),
        Ok(None) => not_found_page(&state),
        Err(e) => failed(&state, &e),
    }
}

async fn overview(State(state): State<DashState>, headers: HeaderMap) -> Response {
    render(state, headers, Page::Overview).await
}

async fn incidents(State(state): State<DashState>, headers: HeaderMap) -> Response {
    render(state, headers, Page::Incidents).await
}

async fn backups(State(state): State<DashState>, headers: HeaderMap) -> Response {
    render(state, headers, Page::Backups).await
}

#[derive(serde::Deserialize)]
struct DoraQuery {
    repo: Option<String>,
}

async fn dora(
    State(state): State<DashState>,
    headers: HeaderMap,
    Query(q): Query<DoraQuery>,
) -> Response {
    render(state, headers, Page::Dora(q.repo)).await
}

async fn deployment(
    State(state): State<DashState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    render(state, headers, Page::Deployment(id)).await
}

fn not_found_page(state: &DashState) -> Response {
    html(
        state,
        StatusCode::NOT_FOUND,
        "<!doctype html><title>shipgate</title><p>No such page. <a href=\"/\">The overview</a>.</p>".to_string(),
    )
}

async fn not_found(State(state): State<DashState>, headers: HeaderMap) -> Response {
    // Unauthenticated requests learn nothing about which paths exist.
    if state.auth.identify(&headers).is_err() {
        return refused(&state);
    }
    not_found_page(&state)
}

async fn login_form(State(state): State<DashState>) -> Response {
    html(&state, StatusCode::OK, login_page(None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Signing in with the token sets the session cookie (HttpOnly, SameSite=Strict) and goes to
/// the overview; a wrong token is refused with the form again.
async fn login(State(state): State<DashState>, body: axum::body::Bytes) -> Response {
    let (Some(token), Some(session)) = (&state.auth.token, &state.auth.session) else {
        return html(
            &state,
            StatusCode::NOT_FOUND,
            login_page(Some(
                "This dashboard signs in through its reverse proxy, not with a token.",
            )),
        );
    };
    let given = if body.len() > MAX_LOGIN_BYTES {
        None
    } else {
        serde_urlencoded::from_bytes::<LoginForm>(&body).ok()
    };
    match given {
        Some(form) if auth::same(&form.token, token.expose_secret()) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            let headers = resp.headers_mut();
            headers.insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(cookie) = HeaderValue::from_str(&format!(
                "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict"
            )) {
                headers.insert(header::SET_COOKIE, cookie);
            }
            resp
        }
        _ => {
            tracing::warn!("dashboard sign-in with a wrong token");
            html(
                &state,
                StatusCode::UNAUTHORIZED,
                login_page(Some("That is not the dashboard's token.")),
            )
        }
    }
}
