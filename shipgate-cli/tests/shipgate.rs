//! Black-box tests of the `shipgate` binary: `serve` runs as a real process on a free
//! loopback port with a temporary data directory and the example policy; the operator
//! commands run as separate processes against the same directory.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use shipgate::domain::policy::EXAMPLE_POLICY;
use shipgate::signature::sign_github;

const BIN: &str = env!("CARGO_BIN_EXE_shipgate");
const SECRET: &str = "test-webhook-secret-do-not-log";

fn shipgate() -> Command {
    let mut cmd = Command::new(BIN);
    // The tests decide every shipgate variable themselves.
    for (name, _) in std::env::vars() {
        if name.starts_with("SHIPGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A temporary data directory with the example policy beside it.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.toml"), EXAMPLE_POLICY).expect("write policy");
        Workspace { dir }
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }
}

/// A running `shipgate serve`.
struct Server {
    child: Child,
    base: String,
    ws: Workspace,
}

impl Server {
    async fn start() -> Server {
        let ws = Workspace::new();
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(ws.log()).expect("log file");
            let mut child = shipgate()
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data")
                .arg(ws.data())
                .arg("--policy")
                .arg(ws.policy())
                .env("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET)
                .env("RUST_LOG", "debug")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn shipgate serve");
            let base = format!("http://127.0.0.1:{port}");
            if wait_healthy(&mut child, &base).await {
                return Server { child, base, ws };
            }
            // Most likely another test took the port between probing and binding.
            let _ = child.kill();
            let _ = child.wait();
        }
        let logs = std::fs::read_to_string(ws.log()).unwrap_or_default();
        panic!("shipgate serve never became healthy:\n{logs}");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.ws.log()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `within`) for the process to exit.
    fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_with_timeout(&mut self.child, within)
    }
}

async fn wait_healthy(child: &mut Child, base: &str) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(resp) = client.get(format!("{base}/healthz")).send().await {
            if resp.status() == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_with_timeout(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

async fn deliver(
    server: &Server,
    event: &str,
    delivery: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(server.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery);
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    let resp = req.body(body).send().await.expect("send delivery");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("response is not JSON: {text:?}"));
    (status, json)
}

fn signed(body: &[u8]) -> Option<String> {
    Some(sign_github(&SecretString::from(SECRET), body))
}

const PING: &str = r#"{"zen":"Keep it logically awesome.","hook_id":123,"hook":{"app_id":42}}"#;

fn protection_rule(environment: &str, run_id: u64) -> String {
    serde_json::json!({
        "action": "requested",
        "environment": environment,
        "event": "push",
        "ref": "refs/heads/main",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "deployment_callback_url": format!("https://api.github.com/repos/acme/api/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": 7 },
        "sender": { "login": "octocat" },
        "repository": { "full_name": "acme/api" }
    })
    .to_string()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run shipgate")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn github_route_answers_the_documented_status_codes() {
    let server = Server::start().await;

    let (status, body) = deliver(
        &server,
        "ping",
        "d-bad-sig",
        PING.into(),
        Some(format!("sha256={}", "0".repeat(64))),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("unauthorized"))
    );

    let (status, _) = deliver(&server, "ping", "d-unsigned", PING.into(), None).await;
    assert_eq!(status, 401);

    let garbage = b"this is not json".to_vec();
    let (status, _) = deliver(
        &server,
        "ping",
        "d-malformed",
        garbage.clone(),
        signed(&garbage),
    )
    .await;
    assert_eq!(status, 400);

    let huge = vec![b' '; shipgate::web::MAX_BODY_BYTES + 1];
    let (status, body) = deliver(&server, "ping", "d-huge", huge.clone(), signed(&huge)).await;
    assert_eq!(status, 413);
    assert_eq!(body["message"], "request body is larger than 1048576 bytes");

    let suite = br#"{"action":"completed","check_suite":{"id":1}}"#.to_vec();
    let (status, body) = deliver(
        &server,
        "check_suite",
        "d-suite",
        suite.clone(),
        signed(&suite),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let (status, body) = deliver(
        &server,
        "ping",
        "d-ping",
        PING.into(),
        signed(PING.as_bytes()),
    )
    .await;
    assert_eq!((status, body["message"].as_str()), (200, Some("pong")));
    let (status, body) = deliver(
        &server,
        "ping",
        "d-ping",
        PING.into(),
        signed(PING.as_bytes()),
    )
    .await;
    assert_eq!(
        (status, body["duplicate"].as_bool()),
        (200, Some(true)),
        "a redelivery changes nothing"
    );

    let logs = server.logs();
    assert!(
        logs.contains("/webhooks/github"),
        "requests are logged: {logs}"
    );
    assert!(
        !logs.contains(SECRET),
        "the webhook secret leaked into the logs"
    );
    assert!(
        !logs.contains("logically awesome"),
        "a request body leaked into the logs"
    );
    let sig = signed(PING.as_bytes()).unwrap_or_default();
    assert!(
        !logs.contains(sig.trim_start_matches("sha256=")),
        "a signature leaked into the logs"
    );
}

#[tokio::test]
async fn unbuilt_function_routes_answer_501_and_unknown_ones_404() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    for path in [
        "/webhooks/slack",
        "/webhooks/alertmanager",
        "/webhooks/grafana",
    ] {
        let resp = client
            .post(server.url(path))
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 501, "{path}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["message"], "not implemented yet", "{path}");
    }
    let resp = client.get(server.url("/nope")).send().await.expect("send");
    assert_eq!(resp.status(), 404);
    let resp = client
        .get(server.url("/webhooks/github"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["message"], "method not allowed");
}

#[tokio::test]
async fn healthz_reports_ok_and_the_version() {
    let server = Server::start().await;
    let resp = reqwest::get(server.url("/healthz")).await.expect("healthz");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        server.ws.data().join("shipgate.db").is_file(),
        "the state lives in DIR/shipgate.db"
    );
}

#[tokio::test]
async fn serve_exits_zero_promptly_on_sigterm() {
    let mut server = Server::start().await;
    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(10))
        .expect("exited within 10 s");
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        server.logs()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(server.logs().contains("shutdown requested"));
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_before_exiting() {
    use std::io::Write;
    let mut server = Server::start().await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let sig = signed(PING.as_bytes()).unwrap_or_default();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (first, rest) = PING.as_bytes().split_at(10);
    write!(
        conn,
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: ping\r\nX-GitHub-Delivery: d-slow\r\nX-Hub-Signature-256: {sig}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        PING.len()
    )
    .expect("send headers");
    conn.write_all(first)
        .expect("send the first part of the body");
    conn.flush().expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    assert!(kill.expect("run kill").success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "exited with a request in flight"
    );

    conn.write_all(rest).expect("send the rest of the body");
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .expect("read the response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("pong"), "{response}");
    let status = wait_with_timeout(&mut server.child, Duration::from_secs(10))
        .expect("exits after the request");
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_refuses_to_start_without_the_webhook_secret() {
    let ws = Workspace::new();
    let mut child = shipgate()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_with_timeout(&mut child, Duration::from_secs(10)).expect("exits by itself");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert!(!status.success());
    assert!(err.contains("SHIPGATE_GITHUB_WEBHOOK_SECRET"), "{err}");
    assert!(err.contains("/webhooks/github"), "{err}");
}

const BROKEN_POLICY: &str = r#"[identities]
U0APPROV1 = "alice-ops"

[environments.production]
approvals_required = 1
approvers = ["U0APPROV1"]
verification_window = "15 minutes"

[[environments.production.windows]]
days = ["mon", "funday"]
start = "08:00"
end = "18:00"
timezone = "Europe/Berlin"
"#;

fn broken_policy(dir: &Path) -> PathBuf {
    let path = dir.join("broken.toml");
    std::fs::write(&path, BROKEN_POLICY).expect("write policy");
    path
}

#[test]
fn policy_check_reports_every_problem_with_its_line_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = broken_policy(dir.path());
    let out = run(shipgate().arg("policy").arg("check").arg(&path));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let p = path.display();
    assert!(
        text.contains(&format!(
            "{p}:7:23: environments.production.verification_window: invalid duration"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{p}:10:16: environments.production.windows[0].days[1]: unknown weekday \"funday\""
        )),
        "{text}"
    );
}

#[test]
fn serve_refuses_an_invalid_policy_and_prints_its_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = broken_policy(dir.path());
    let out = run(shipgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--policy")
        .arg(&path)
        .env("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:10:16:", path.display())), "{err}");
}

#[test]
fn example_policy_round_trips_through_policy_check() {
    let mut example = shipgate()
        .args(["policy", "example"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn policy example");
    let pipe = example.stdout.take().expect("stdout");
    let check = run(shipgate()
        .args(["policy", "check", "-"])
        .stdin(Stdio::from(pipe)));
    assert!(example.wait().expect("wait").success());
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    let text = stdout(&check);
    assert!(text.starts_with("<stdin>: ok, 2 environments\n"), "{text}");
    assert!(
        text.contains("  production: ") && text.contains("  staging: "),
        "{text}"
    );
}

#[tokio::test]
async fn status_and_history_show_a_gated_deployment() {
    let server = Server::start().await;
    let (status, _) = deliver(&server, "ping", "d-1", PING.into(), signed(PING.as_bytes())).await;
    assert_eq!(status, 200);
    let rule = protection_rule("staging", 4242);
    let (status, body) = deliver(
        &server,
        "deployment_protection_rule",
        "d-2",
        rule.clone().into(),
        signed(rule.as_bytes()),
    )
    .await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let id = body["deployment_id"]
        .as_str()
        .expect("deployment id")
        .to_string();

    // Read beside the running server, as an operator would.
    let data = server.ws.data();
    let policy = server.ws.policy();
    let out = run(shipgate()
        .arg("status")
        .arg("--data")
        .arg(&data)
        .arg("--policy")
        .arg(&policy)
        .arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let envs: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["environment"].as_str())
        .collect();
    assert_eq!(envs, ["production", "staging"]);
    let staging = &lines[1];
    assert_eq!(staging["lock"]["deployment_id"], id.as_str());
    assert_eq!(staging["lock"]["state"], "approved");
    assert_eq!(staging["latest_deployment"]["id"], id.as_str());
    assert_eq!(
        staging["latest_deployment"]["sha"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(staging["current"], Value::Null);
    assert_eq!(staging["open_incidents"], serde_json::json!([]));
    assert_eq!(lines[0]["lock"], Value::Null);

    // The variables work as well as the flags.
    let out = run(shipgate()
        .arg("status")
        .env("SHIPGATE_DATA_DIR", &data)
        .env("SHIPGATE_POLICY_FILE", &policy));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("ENVIRONMENT"), "{table}");
    assert!(table.contains(&format!("{id} (approved)")), "{table}");

    let out = run(shipgate()
        .arg("history")
        .arg("--data")
        .arg(&data)
        .arg("--policy")
        .arg(&policy)
        .arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&stdout(&out));
    let whats: Vec<&str> = events.iter().filter_map(|e| e["what"].as_str()).collect();
    assert_eq!(whats, ["requested", "auto_approve"], "{events:?}");
    assert!(events.iter().all(|e| e["deployment_id"] == id.as_str()));
    assert_eq!(events[1]["to"], "approved");

    let out = run(shipgate()
        .arg("history")
        .arg("--data")
        .arg(&data)
        .args(["--env", "staging", "--limit", "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert_eq!(
        table.lines().count(),
        2,
        "header and the newest event: {table}"
    );
    assert!(
        table.contains("auto_approve") && table.contains("requested -> approved"),
        "{table}"
    );

    let out = run(shipgate().arg("history").arg("--data").arg(&data).args([
        "--env",
        "production",
        "--json",
    ]));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
}

#[test]
fn operator_commands_refuse_a_data_directory_without_state() {
    let ws = Workspace::new();
    let out = run(shipgate()
        .arg("status")
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no shipgate database"),
        "{}",
        stderr(&out)
    );
    assert!(!ws.data().exists(), "status must not create state");
}

#[test]
fn unbuilt_commands_exit_2_and_say_so() {
    for (args, name) in [
        (vec!["demo"], "demo"),
        (vec!["job", "sweeper"], "job"),
        (vec!["backup", "create"], "backup"),
        (vec!["rollback", "production"], "rollback"),
    ] {
        let out = run(shipgate().args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr(&out).trim(),
            format!("shipgate {name}: not built yet")
        );
        assert_eq!(stdout(&out), "");
    }
}

#[test]
fn help_lists_the_whole_command_surface() {
    let out = run(shipgate().arg("--help"));
    assert!(out.status.success());
    let help = stdout(&out);
    for cmd in [
        "serve", "policy", "status", "history", "demo", "job", "backup", "rollback",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from:\n{help}"
        );
    }
}
