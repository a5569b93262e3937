//! A real `shipgate serve` for black-box tests: a process on a free loopback port with a
//! temporary data directory and a policy beside it, its log in a file the test can read.

// Every test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shipgate::domain::policy::EXAMPLE_POLICY;

/// The GitHub webhook secret every server here is started with.
pub const SECRET: &str = "test-webhook-secret-do-not-log";

pub fn shipgate() -> Command {
    let mut cmd = Command::new(testkit::shipgate_binary());
    // The tests decide every shipgate variable themselves.
    for (name, _) in std::env::vars() {
        if name.starts_with("SHIPGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A temporary data directory with a policy beside it (the example policy by default).
#[derive(Clone)]
pub struct Workspace {
    pub dir: Arc<tempfile::TempDir>,
}

impl Workspace {
    pub fn new() -> Self {
        Self::with_policy(EXAMPLE_POLICY)
    }
    pub fn with_policy(policy: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.toml"), policy).expect("write policy");
        Workspace { dir: Arc::new(dir) }
    }
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }
}

/// A running `shipgate serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub ws: Workspace,
}

impl Server {
    /// The example policy, only the webhook secret, no scheduled jobs.
    pub async fn start() -> Server {
        Self::launch(Workspace::new(), &[], &["--no-schedule"]).await
    }

    /// `serve` on `ws` with extra variables and arguments.
    /// Starts `shipgate serve` on port 0 and learns the port from its own "shipgate is serving"
    /// log line. (Probing for a free port first would race: another test's server could take
    /// the port, answer this one's health check and then receive its requests.)
    pub async fn launch(ws: Workspace, envs: &[(&str, &str)], args: &[&str]) -> Server {
        let log_path = ws.log();
        let from = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut child = shipgate()
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(ws.data())
            .arg("--policy")
            .arg(ws.policy())
            .args(args)
            .env("SHIPGATE_GITHUB_WEBHOOK_SECRET", SECRET)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn shipgate serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if let Some(addr) = serving_address(&log_path, from) {
                let base = format!("http://{addr}");
                if wait_healthy(&mut child, &base).await {
                    return Server { child, base, ws };
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("shipgate serve never became healthy:\n{logs}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.ws.log()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `within`) for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_with_timeout(&mut self.child, within)
    }
}

/// The `listen=` address of the first "shipgate is serving" line written after byte `from`.
pub fn serving_address(log: &Path, from: u64) -> Option<String> {
    logged_address(log, from, "shipgate is serving", "listen")
}

/// The address a log line containing `marker` names as `key=ADDR`, in the log from byte
/// `from` on.
pub fn logged_address(log: &Path, from: u64, marker: &str, key: &str) -> Option<String> {
    let bytes = std::fs::read(log).ok()?;
    let fresh = bytes.get(usize::try_from(from).ok()?..)?;
    let key = format!("{key}=");
    String::from_utf8_lossy(fresh)
        .lines()
        .filter(|line| line.contains(marker))
        .find_map(|line| {
            let rest = &line[line.find(&key)? + key.len()..];
            Some(rest.split_whitespace().next()?.to_string())
        })
}

/// A free loopback port (taken back at once; the race is harmless in these tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The text of a page's `<main>`: tags out, whitespace collapsed, so pages compare and
/// assertions read as the page does.
pub fn page_text(html: &str) -> String {
    let main = html
        .split_once("<main>")
        .and_then(|(_, rest)| rest.split_once("</main>"))
        .map_or(html, |(m, _)| m);
    let mut text = String::new();
    let mut in_tag = false;
    for c in main.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub async fn wait_healthy(child: &mut Child, base: &str) -> bool {
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

pub fn wait_with_timeout(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run shipgate")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// The `value` of the first button with `action_id` anywhere in a Slack message body.
pub fn button_value(v: &serde_json::Value, action_id: &str) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if map.get("action_id").and_then(Value::as_str) == Some(action_id) {
                if let Some(value) = map.get("value").and_then(Value::as_str) {
                    return Some(value.to_string());
                }
            }
            map.values().find_map(|x| button_value(x, action_id))
        }
        Value::Array(items) => items.iter().find_map(|x| button_value(x, action_id)),
        _ => None,
    }
}
