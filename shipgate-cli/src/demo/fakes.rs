//! Local stand-ins for GitHub, Slack and PagerDuty: small HTTP servers on 127.0.0.1 that answer
//! the way the real services do, record every request and print a one-line summary of it into
//! the timeline, so the demo shows exactly what shipgate sent.
//!
//! Each fake answers only the endpoints shipgate calls (the paths of `shipgate::outbound`);
//! anything else is recorded, printed and answered 404, so an unexpected call is visible.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::timeline::{quote, short, Timeline};

/// The first id the fake GitHub gives a deployment shipgate creates.
const FIRST_CREATED_DEPLOYMENT: u64 = 1_523_799_001;

/// Which service a fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    GitHub,
    Slack,
    PagerDuty,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::GitHub => "github",
            Service::Slack => "slack",
            Service::PagerDuty => "pagerduty",
        }
    }
}

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: Value,
    /// What the fake answered with, as JSON (`Null` for empty answers).
    pub answer: Value,
}

/// A running fake: its base URL and what it received.
pub struct Fake {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct FakeState {
    service: Service,
    timeline: Timeline,
    requests: Mutex<Vec<Recorded>>,
    /// Ids, timestamps and tokens the fake hands out.
    counter: AtomicU64,
}

impl FakeState {
    fn record(&self, rec: Recorded) {
        match self.requests.lock() {
            Ok(mut r) => r.push(rec),
            Err(poisoned) => poisoned.into_inner().push(rec),
        }
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }

    fn say(&self, what: &str) {
        self.timeline
            .step("shipgate", self.service.name(), what, None);
    }
}

impl Fake {
    /// Binds 127.0.0.1 on a free port and serves until [`Fake::stop`].
    pub async fn start(service: Service, timeline: Timeline) -> std::io::Result<Fake> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(FakeState {
            service,
            timeline,
            requests: Mutex::new(Vec::new()),
            counter: AtomicU64::new(1),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "demo fake stopped with an error");
            }
        });
        Ok(Fake {
            addr,
            state,
            stop,
            task,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        match self.state.requests.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn count(&self) -> usize {
        match self.state.requests.lock() {
            Ok(r) => r.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Waits until a received request matches `pick` (which may return what it found), or
    /// `timeout` passes.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&[Recorded]) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = {
                let requests = match self.state.requests.lock() {
                    Ok(r) => r,
                    Err(poisoned) => poisoned.into_inner(),
                };
                pick(&requests)
            };
            if found.is_some() {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

async fn handle(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, answer) = match state.service {
        Service::GitHub => github(&state, &method, &path, &headers, &json_body),
        Service::Slack => slack(&state, &method, &path, &headers, &json_body),
        Service::PagerDuty => pagerduty(&state, &method, &path, &json_body),
    };
    state.record(Recorded {
        path,
        body: json_body,
        answer: answer.clone(),
    });
    let body = if answer.is_null() {
        String::new()
    } else {
        answer.to_string()
    };
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.status_mut() = status;
    if !answer.is_null() {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    resp
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
}

fn unexpected(state: &FakeState, method: &Method, path: &str) -> (StatusCode, Value) {
    state.say(&format!("UNEXPECTED {method} {path} (answered 404)"));
    (StatusCode::NOT_FOUND, json!({ "message": "Not Found" }))
}

/// `owner/repo` and the rest of a `/repos/{owner}/{repo}/…` path.
fn repo_path(path: &str) -> Option<(String, Vec<&str>)> {
    let rest = path.strip_prefix("/repos/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 3 {
        return None;
    }
    Some((format!("{}/{}", parts[0], parts[1]), parts[2..].to_vec()))
}

fn github(
    state: &FakeState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> (StatusCode, Value) {
    if method != Method::POST {
        return unexpected(state, method, path);
    }
    // GitHub refuses calls without credentials; so does its stand-in.
    if bearer(headers).is_none() {
        state.say(&format!("POST {path} without a token (answered 401)"));
        return (
            StatusCode::UNAUTHORIZED,
            json!({ "message": "Requires authentication" }),
        );
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["app", "installations", installation, "access_tokens"] = parts.as_slice() {
        let n = state.next();
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(1))
            .unwrap_or(jiff::Timestamp::MAX);
        state.say(&format!(
            "POST /app/installations/{installation}/access_tokens  App JWT exchanged for an installation token"
        ));
        return (
            StatusCode::CREATED,
            json!({ "token": format!("ghs_demoInstallationToken{n:04}"), "expires_at": expires.to_string() }),
        );
    }
    let Some((repo, rest)) = repo_path(path) else {
        return unexpected(state, method, path);
    };
    match rest.as_slice() {
        ["actions", "runs", run, "deployment_protection_rule"] => {
            let env = str_at(body, "/environment_name");
            let comment = str_at(body, "/comment");
            match body.get("state").and_then(Value::as_str) {
                Some(decision) => state.say(&format!(
                    "review run {run} {env}: {decision} {}",
                    quote(comment)
                )),
                None => state.say(&format!(
                    "status comment on run {run} {env}: {}",
                    quote(comment)
                )),
            }
            (StatusCode::NO_CONTENT, Value::Null)
        }
        ["deployments"] => {
            let id = FIRST_CREATED_DEPLOYMENT + state.next();
            let git_ref = str_at(body, "/ref");
            let env = str_at(body, "/environment");
            let of = str_at(body, "/payload/shipgate_rollback_of");
            let what = if of.is_empty() {
                String::new()
            } else {
                " (payload.shipgate_rollback_of set)".to_string()
            };
            state.say(&format!(
                "POST /repos/{repo}/deployments ref {} to {env}{what}  → deployment {id}",
                short(git_ref)
            ));
            (
                StatusCode::CREATED,
                json!({ "id": id, "ref": git_ref, "sha": git_ref, "environment": env, "payload": body.get("payload").cloned().unwrap_or(Value::Null) }),
            )
        }
        ["actions", "workflows", workflow, "dispatches"] => {
            state.say(&format!(
                "POST /repos/{repo}/actions/workflows/{workflow}/dispatches ref {} sha {}",
                str_at(body, "/ref"),
                short(str_at(body, "/inputs/sha"))
            ));
            (StatusCode::NO_CONTENT, Value::Null)
        }
        _ => unexpected(state, method, path),
    }
}

fn slack(
    state: &FakeState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> (StatusCode, Value) {
    if method != Method::POST {
        return unexpected(state, method, path);
    }
    // A click's response_url needs no token; the Web API does.
    if let Some(rest) = path.strip_prefix("/actions/") {
        let user = rest.split('/').nth(1).unwrap_or("?");
        state.say(&format!(
            "response_url (only {user} sees it) {}",
            quote(str_at(body, "/text"))
        ));
        return (StatusCode::OK, json!({ "ok": true }));
    }
    let Some(api) = path.strip_prefix("/api/") else {
        return unexpected(state, method, path);
    };
    if bearer(headers).is_none() {
        state.say(&format!("{api} without a bot token"));
        return (
            StatusCode::OK,
            json!({ "ok": false, "error": "not_authed" }),
        );
    }
    let channel = str_at(body, "/channel");
    let text = str_at(body, "/text");
    match api {
        "chat.postMessage" => {
            let ts = format!("1750000000.{:06}", state.next() * 100);
            state.say(&format!("chat.postMessage {channel} {}", quote(text)));
            (
                StatusCode::OK,
                json!({ "ok": true, "channel": channel, "ts": ts, "message": { "text": text } }),
            )
        }
        "chat.update" => {
            let ts = str_at(body, "/ts");
            state.say(&format!("chat.update {channel} {}", quote(text)));
            (
                StatusCode::OK,
                json!({ "ok": true, "channel": channel, "ts": ts, "text": text }),
            )
        }
        "chat.postEphemeral" => {
            let user = str_at(body, "/user");
            state.say(&format!(
                "chat.postEphemeral {channel} to {user} {}",
                quote(text)
            ));
            (
                StatusCode::OK,
                json!({ "ok": true, "message_ts": format!("1750000000.{:06}", state.next() * 100) }),
            )
        }
        "views.open" => {
            state.say(&format!(
                "views.open {}",
                quote(str_at(body, "/view/title/text"))
            ));
            (
                StatusCode::OK,
                json!({ "ok": true, "view": { "id": "V0DEMO" } }),
            )
        }
        _ => {
            state.say(&format!("{api} (not a method shipgate uses)"));
            (
                StatusCode::OK,
                json!({ "ok": false, "error": "unknown_method" }),
            )
        }
    }
}

fn pagerduty(state: &FakeState, method: &Method, path: &str, body: &Value) -> (StatusCode, Value) {
    if method != Method::POST || path != "/v2/enqueue" {
        return unexpected(state, method, path);
    }
    let action = str_at(body, "/event_action");
    let dedup = str_at(body, "/dedup_key");
    if str_at(body, "/routing_key").is_empty() {
        state.say("events without a routing key (answered 400)");
        return (
            StatusCode::BAD_REQUEST,
            json!({ "status": "invalid event", "message": "Event object is invalid", "errors": ["'routing_key' is missing"] }),
        );
    }
    let summary = str_at(body, "/payload/summary");
    let severity = str_at(body, "/payload/severity");
    let what = if summary.is_empty() {
        format!("{action} dedup_key={dedup}")
    } else {
        format!("{action} {severity} dedup_key={dedup} {}", quote(summary))
    };
    state.say(&what);
    (
        StatusCode::ACCEPTED,
        json!({ "status": "success", "message": "Event processed", "dedup_key": dedup }),
    )
}

/// The value of the first button with `action_id` anywhere in Block Kit `blocks`.
pub fn button_value(blocks: &Value, action_id: &str) -> Option<String> {
    match blocks {
        Value::Object(map) => {
            if map.get("action_id").and_then(Value::as_str) == Some(action_id) {
                if let Some(v) = map.get("value").and_then(Value::as_str) {
                    return Some(v.to_string());
                }
            }
            map.values().find_map(|v| button_value(v, action_id))
        }
        Value::Array(items) => items.iter().find_map(|v| button_value(v, action_id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_button_value_nested_in_blocks() {
        let blocks = json!([
            { "type": "section", "text": { "type": "mrkdwn", "text": "Deploy?" } },
            { "type": "actions", "elements": [
                { "type": "button", "action_id": "shipgate_reject", "value": "d1:n1" },
                { "type": "button", "action_id": "shipgate_approve", "value": "d1:n2" }
            ]}
        ]);
        assert_eq!(
            button_value(&blocks, "shipgate_approve").as_deref(),
            Some("d1:n2")
        );
        assert_eq!(button_value(&blocks, "shipgate_rollback"), None);
    }

    #[tokio::test]
    async fn fake_github_hands_out_tokens_and_deployment_ids_and_records_calls() {
        let fake = Fake::start(Service::GitHub, Timeline::silent())
            .await
            .expect("fake");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let token: Value = http
            .post(format!(
                "{}/app/installations/42/access_tokens",
                fake.base_url()
            ))
            .bearer_auth("jwt")
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert!(token["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("ghs_")));
        assert!(token["expires_at"].as_str().is_some());

        let created = http
            .post(format!("{}/repos/o/r/deployments", fake.base_url()))
            .bearer_auth("ghs")
            .body(r#"{"ref":"abc","environment":"production","payload":{"shipgate_rollback_of":"d1"}}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(created.status(), 201);
        let created: Value = created.json().await.expect("json");
        assert!(created["id"]
            .as_u64()
            .is_some_and(|id| id >= FIRST_CREATED_DEPLOYMENT));

        let anonymous = http
            .post(format!("{}/repos/o/r/deployments", fake.base_url()))
            .send()
            .await
            .expect("send");
        assert_eq!(anonymous.status(), 401);
        assert_eq!(fake.count(), 3);
        assert_eq!(fake.requests()[1].path, "/repos/o/r/deployments");
        fake.stop().await;
    }

    #[tokio::test]
    async fn fake_pagerduty_answers_like_the_events_api() {
        let fake = Fake::start(Service::PagerDuty, Timeline::silent())
            .await
            .expect("fake");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let resp = http
            .post(format!("{}/v2/enqueue", fake.base_url()))
            .body(r#"{"routing_key":"k","event_action":"trigger","dedup_key":"inc-1","payload":{"summary":"s","severity":"critical","source":"x"}}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["dedup_key"], "inc-1");
        assert_eq!(body["status"], "success");
        fake.stop().await;
    }
}
