//! `shipgate demo` as a user runs it: the built binary, no network, no configuration. The
//! story must end as expected (exit 0) and its timeline must show every part of the main job.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Far more than the story needs (about 15 s in a debug build), far less than a minute.
const LIMIT: Duration = Duration::from_secs(50);

/// Runs `shipgate demo ARGS` with a clean environment and waits at most [`LIMIT`].
fn demo(args: &[&str], extra_env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = Command::new(testkit::shipgate_binary());
    cmd.arg("demo").args(args);
    // The demo configures its own server; nothing from the caller's shell may leak in.
    for (name, _) in std::env::vars() {
        if name.starts_with("SHIPGATE_") || name == "RUST_LOG" || name == "NO_COLOR" {
            cmd.env_remove(name);
        }
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shipgate demo");
    // Drained while it runs, so a full pipe never blocks the demo.
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
            panic!("shipgate demo ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let output = Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    (output, elapsed)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first line containing every one of `parts`.
fn line_with<'a>(timeline: &'a str, parts: &[&str]) -> Option<&'a str> {
    timeline
        .lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
}

#[test]
fn demo_plays_the_whole_story_and_exits_zero() {
    let (out, elapsed) = demo(&[], &[]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(elapsed < LIMIT, "took {elapsed:?}");
    // Not a terminal: no colour codes.
    assert!(!stdout.contains('\x1b'), "{stdout}");

    let expect = |what: &str, parts: &[&str]| {
        assert!(
            line_with(&stdout, parts).is_some(),
            "the timeline does not show {what} (a line with {parts:?}):\n{stdout}"
        );
    };
    expect(
        "the production approval request",
        &[
            "github → shipgate",
            "deployment_protection_rule api production",
            "→ awaiting_approval (needs 2)",
        ],
    );
    expect(
        "the Slack approval message",
        &["shipgate → slack", "chat.postMessage C0PRODUCTION"],
    );
    expect(
        "the refused self-approval",
        &[
            "alice-ops (U0APPROV1) clicks Approve on production",
            "→ refused: you triggered this deployment",
        ],
    );
    expect(
        "what the self-approver was told",
        &["response_url (only U0APPROV1 sees it)", "Not counted"],
    );
    expect(
        "the approval quorum",
        &["clicks Approve on production", "→ approved"],
    );
    expect(
        "GitHub being told",
        &["shipgate → github", "review run 7002 production: approved"],
    );
    expect(
        "the verification window",
        &["deployment_status success (api production", "→ verifying"],
    );
    expect(
        "the critical alert starting the rollback",
        &["alertmanager → shipgate", "firing", "→ rolling_back"],
    );
    expect(
        "the rollback deployment sent to GitHub",
        &[
            "shipgate → github",
            "POST /repos/acme/api/deployments ref c5b1e9a to production",
        ],
    );
    expect(
        "the page",
        &["shipgate → pagerduty", "trigger critical dedup_key="],
    );
    expect(
        "the finished rollback",
        &[
            "deployment_status success (rollback deployment",
            "→ rolled_back",
        ],
    );
    expect(
        "the resolution",
        &["shipgate → pagerduty", "resolve dedup_key="],
    );
    expect(
        "web deploying beside api in staging",
        &[
            "deployment_protection_rule api staging 9a4e1c7 (run 7102",
            "→ approved",
        ],
    );
    expect(
        "web's second change queued behind its first",
        &[
            "deployment_protection_rule web staging c0ffee2 (run 7103",
            "→ queued (1st in line behind dep-",
        ],
    );
    expect(
        "GitHub told the run is queued",
        &[
            "shipgate → github",
            "status comment on run 7103 staging",
            "queued behind deployment",
        ],
    );
    expect(
        "Slack showing the place in line",
        &[
            "shipgate → slack",
            "Queued: acme/web `refs/heads/main` (c0ffee2) to staging — 1st in line behind",
        ],
    );
    expect(
        "the queued run approved when the window ahead ended",
        &["shipgate → github", "review run 7103 staging: approved"],
    );
    expect(
        "the backup",
        &["scheduler → shipgate", "backup: backed up 1 table", "→ ok"],
    );
    expect(
        "a passing restore drill",
        &[
            "scheduler → shipgate",
            "restore-drill: restore drill passed",
            "→ ok",
        ],
    );
    expect(
        "the DORA report",
        &[
            "production, last 30d: 2 deployments",
            "change failure rate 50%",
        ],
    );
    expect("the verdict", &["The story ended as expected"]);

    // The timeline tells the story in order: each beat comes after the one before.
    let beats = [
        "→ awaiting_approval",
        "→ refused",
        "→ approved",
        "→ verifying",
        "→ rolling_back",
        "→ rolled_back",
        "backup: backed up",
        "restore drill passed",
    ];
    let mut from = 0;
    for beat in beats {
        let at = stdout[from..]
            .find(beat)
            .unwrap_or_else(|| panic!("{beat:?} missing after byte {from} of:\n{stdout}"));
        from += at + beat.len();
    }
    // The PagerDuty trigger and resolve are one incident.
    let key = |action: &str| {
        line_with(&stdout, &["shipgate → pagerduty", action])
            .and_then(|l| l.split("dedup_key=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    assert!(key("trigger").is_some(), "{stdout}");
    assert_eq!(key("trigger"), key("resolve"), "{stdout}");

    // Without --keep, the data directory named in the banner is gone afterwards.
    let data = line_with(&stdout, &["(data "])
        .and_then(|l| l.split("(data ").nth(1))
        .and_then(|rest| rest.strip_suffix(')'))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no data directory in:\n{stdout}"));
    assert!(!data.exists(), "{} was left behind", data.display());
}

#[test]
fn demo_keeps_its_data_directory_when_asked() {
    let (out, _) = demo(&["--keep", "--no-color"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let kept = line_with(&stdout, &["Data kept in "])
        .and_then(|l| l.split("Data kept in ").nth(1))
        .and_then(|rest| rest.split(':').next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no kept directory in:\n{stdout}"));
    assert!(kept.join("shipgate.db").is_file(), "{}", kept.display());
    assert!(kept.join("policy.toml").is_file(), "{}", kept.display());
    let backups = std::fs::read_dir(kept.join("backups"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(backups > 0, "no backup objects in {}", kept.display());
    std::fs::remove_dir_all(&kept).expect("clean up the kept directory");
}
