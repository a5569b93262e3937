//! `shipgate-load` as a user runs it: the built binary against a server it spawns itself.
//! The correctness section must pass and the counts must add up; timings are only reported.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shipgate-load");
/// 500 requests take a few seconds even in a debug build on a busy machine.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `shipgate-load ARGS` with a clean environment and waits at most [`LIMIT`].
fn load(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // The spawned server configures itself; nothing from the caller's shell may leak in.
    for (name, _) in std::env::vars() {
        if name.starts_with("SHIPGATE_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shipgate-load");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shipgate-load ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn count(v: &Value, key: &str) -> u64 {
    v.as_object()
        .map(|m| m.get(key).and_then(Value::as_u64).unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn a_spawned_load_of_500_requests_passes_every_correctness_check_and_adds_up() {
    let out = load(&[
        "--spawn",
        "--count",
        "500",
        "--clients",
        "8",
        "--environments",
        "4",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    let report: Value = serde_json::from_str(&stdout).expect("one JSON report");

    assert_eq!(report["mode"], "spawned");
    assert_eq!(report["passed"], true);
    assert!(report["target"]
        .as_str()
        .is_some_and(|t| t.starts_with("http://127.0.0.1:")));
    assert!(report["store"]
        .as_str()
        .is_some_and(|s| s.contains("synchronous=FULL")));

    // The whole budget was spent (the duration default is far longer), and every request is
    // counted once by status and once by kind.
    let requests = report["requests"].as_u64().expect("requests");
    assert_eq!(requests, 500);
    let by_status: u64 = report["by_status"]
        .as_object()
        .expect("by_status")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    let by_kind: u64 = report["by_kind"]
        .as_object()
        .expect("by_kind")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(by_status, requests);
    assert_eq!(by_kind, requests);
    assert_eq!(count(&report["by_status"], "error"), 0, "{stdout}");
    // The mix reached past the gate: deployments progressed and some were redelivered.
    assert!(count(&report["by_kind"], "protection_rule") > 0, "{stdout}");
    assert!(
        count(&report["by_kind"], "deployment_status") > 0,
        "{stdout}"
    );
    assert!(count(&report["by_kind"], "redelivery") > 0, "{stdout}");

    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for expected in [
        "each delivery processed exactly once",
        "each incident's notifications started at most one rollback",
        "every accepted delivery recorded exactly once",
        "redeliveries changed nothing",
        "at most one lock holder per environment",
        "exactly one rollback per incident that called for one",
    ] {
        assert!(
            names.contains(&expected),
            "missing check {expected}: {names:?}"
        );
    }
    for c in checks {
        assert_eq!(c["passed"], true, "{c}");
    }
    for key in ["latency", "exchange_latency"] {
        let percentiles = &report[key];
        let p50 = percentiles["p50_ms"].as_f64().expect("p50");
        let p99 = percentiles["p99_ms"].as_f64().expect("p99");
        let max = percentiles["max_ms"].as_f64().expect("max");
        assert!(
            p50 > 0.0 && p50 <= p99 && p99 <= max,
            "{key}: {percentiles}"
        );
    }
    // Every request is at least one exchange; resends add more.
    let requests = report["requests"].as_u64().expect("requests");
    let exchanges = report["exchanges"].as_u64().expect("exchanges");
    assert!(
        exchanges >= requests,
        "{exchanges} exchanges for {requests} requests"
    );
}

#[test]
fn non_loopback_targets_are_refused_as_a_usage_error() {
    let out = load(&[
        "--target",
        "http://192.0.2.10:8080",
        "--github-webhook-secret",
        "s",
        "--alert-token",
        "t",
        "--count",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only loopback targets"), "{stderr}");
}

#[test]
fn the_printed_load_policy_loads_as_shipgate_serve_loads_it() {
    let out = load(&["--print-policy", "--environments", "3"]);
    assert!(out.status.success());
    let policy = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(policy.contains("[environments.load-02]"), "{policy}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("load.toml");
    std::fs::write(&file, &policy).expect("write");
    // The loader `shipgate serve --policy` reads it with.
    let loaded = shipgate_cli::data::load_policy(&file);
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}
