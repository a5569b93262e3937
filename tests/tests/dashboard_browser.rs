//! The dashboard in a real browser: Debian's headless Chromium, driven through ChromeDriver's
//! WebDriver protocol, against a real `shipgate serve` on the data the demo story leaves.
//!
//! It needs Chromium and ChromeDriver, so it is ignored by `cargo test` and run by
//! `make browser-test` (which installs Debian's `chromium` and `chromium-driver` when they are
//! missing, and otherwise fails saying what to install). With `SHIPGATE_SCREENSHOTS_DIR` set,
//! it writes a screenshot of each page at desktop and phone widths there (the README's).
//!
//! What it checks: an unauthenticated visit gets the sign-in form, not the data; signing in
//! with the token leads to the overview, which shows the demo's states; a deployment's page
//! shows its whole timeline; the incidents, rollbacks and backups pages show the story's; and
//! the DORA page draws four charts whose points carry exactly the values
//! `shipgate job dora-report --json` computes for this week.

#[path = "common/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use serve::{free_port, run, shipgate, stderr, stdout};

const TOKEN: &str = "browser-test-dashboard-token-0123456789abcdef";

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory removed when the test ends.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Plays the demo and keeps its data directory.
fn demo_data() -> PathBuf {
    let out = run(shipgate().args(["demo", "--keep", "--no-color"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let kept = text
        .lines()
        .find_map(|l| l.strip_prefix("Data kept in "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("the demo kept no data:\n{text}"));
    PathBuf::from(kept)
}

/// `shipgate serve` on the demo's data with the dashboard; returns it and the dashboard's URL.
async fn serve(dir: &Path) -> (Killed, String) {
    let port = free_port();
    let log = dir.join("serve.log");
    let child = shipgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-schedule"])
        .args(["--dashboard-listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(dir)
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .env("SHIPGATE_GITHUB_WEBHOOK_SECRET", serve::SECRET)
        .env("SHIPGATE_DASHBOARD_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn shipgate serve");
    let child = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http.get(format!("{base}/login")).send().await.is_ok() {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the dashboard never answered:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A WebDriver session in headless Chromium.
struct Browser {
    http: reqwest::Client,
    session: String,
    // Dropped in this order: the driver (and its browser) first, then their profile.
    _driver: Killed,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let driver_bin = var_or("SHIPGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = var_or("SHIPGATE_TEST_CHROMIUM", "/usr/bin/chromium");
        let port = free_port();
        let driver = Killed(
            Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {driver_bin}: {e} (make browser-test installs it)")
                }),
        );
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile dir");
        // As on this machine's closed network: no background connections, no sandbox (root).
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let deadline = Instant::now() + Duration::from_secs(20);
        let session = loop {
            match http.post(format!("{url}/session")).json(&caps).send().await {
                Ok(resp) => {
                    let v: Value = resp.json().await.expect("session JSON");
                    match v["value"]["sessionId"].as_str() {
                        Some(id) => break id.to_string(),
                        None => panic!("no session: {v}"),
                    }
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("ChromeDriver never answered: {e}"),
            }
        };
        Browser {
            http,
            session: format!("{url}/session/{session}"),
            _driver: driver,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let req = self.http.request(method, format!("{}{path}", self.session));
        let req = if body.is_null() { req } else { req.json(&body) };
        let v: Value = req
            .send()
            .await
            .expect("WebDriver")
            .json()
            .await
            .expect("WebDriver JSON");
        if v["value"].get("error").is_some() {
            panic!("WebDriver {path}: {v}");
        }
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    async fn text(&self) -> String {
        self.js(
            "return document.querySelector('main').innerText;",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    async fn title(&self) -> String {
        self.cmd(reqwest::Method::GET, "/title", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({ "cmd": cmd, "params": params }),
        )
        .await
    }

    /// A whole-page PNG at `width` CSS pixels (a phone's viewport when `mobile`).
    async fn screenshot(&self, file: &Path, width: u32, height: u32, mobile: bool) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(file, png).expect("write screenshot");
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
    }
}

/// Screenshots of the page now shown, when asked for.
async fn shoot(browser: &Browser, name: &str) {
    let Ok(dir) = std::env::var("SHIPGATE_SCREENSHOTS_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    browser
        .screenshot(&dir.join(format!("{name}-desktop.png")), 1280, 900, false)
        .await;
    browser
        .screenshot(&dir.join(format!("{name}-phone.png")), 390, 844, true)
        .await;
}

/// This week's production roll-up as `shipgate job dora-report --json` computes it.
fn this_weeks_production(dir: &Path) -> Value {
    let out = run(shipgate()
        .args(["job", "dora-report", "--json"])
        .arg("--data")
        .arg(dir)
        .arg("--policy")
        .arg(dir.join("policy.toml")));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(stdout(&out).trim()).expect("job JSON");
    let weeks = report["details"]["weeks"]
        .as_array()
        .expect("weeks")
        .clone();
    let newest = weeks
        .iter()
        .filter(|w| w["environment"] == "production")
        .max_by_key(|w| w["week"].as_str().unwrap_or_default().to_string())
        .expect("a production week")
        .clone();
    let roll_up = newest["reports"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r.get("repo").is_none()).cloned())
        .expect("the roll-up");
    json!({ "week": newest["week"], "report": roll_up })
}

#[tokio::test]
#[ignore = "needs Chromium and ChromeDriver: run by `make browser-test`"]
async fn the_dashboard_shows_the_demo_story_in_a_real_browser() {
    let dir = demo_data();
    let _removed = Removed(dir.clone());
    let (_server, base) = serve(&dir).await;
    let browser = Browser::start().await;
    browser
        .cdp(
            "Emulation.setTimezoneOverride",
            json!({ "timezoneId": "Asia/Kolkata" }),
        )
        .await;

    // Unauthenticated: the sign-in form, and nothing of the state.
    browser.go(&format!("{base}/")).await;
    assert_eq!(browser.title().await, "Sign in · shipgate");
    let refused = browser.text().await;
    assert!(refused.contains("Sign in"), "{refused}");
    assert!(!refused.contains("acme/api"), "{refused}");
    shoot(&browser, "sign-in").await;

    // Signing in with the token leads to the overview.
    browser
        .js(
            "document.querySelector('input[name=token]').value = arguments[0]; document.querySelector('form.login').submit();",
            json!([TOKEN]),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.title().await != "Overview · shipgate" {
        assert!(Instant::now() < deadline, "never reached the overview");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let overview = browser.text().await;
    // The demo's ending: production rolled back to its last known good, staging runs both
    // repositories' last deploys, every lock free and every queue empty.
    for expected in [
        "production",
        "staging",
        "acme/api",
        "acme/web",
        "restored by rollback",
        "succeeded",
        "free",
        "empty",
    ] {
        assert!(overview.contains(expected), "{expected:?} in:\n{overview}");
    }
    // Times read in the viewer's zone (the script ran), with UTC kept in the title.
    let times = browser
        .js(
            "return Array.from(document.querySelectorAll('time')).map(t => [t.textContent, t.title]);",
            json!([]),
        )
        .await;
    let first = &times[0];
    assert!(
        !first[0].as_str().unwrap_or("UTC").contains("UTC"),
        "{times}"
    );
    assert!(
        first[1].as_str().unwrap_or_default().ends_with('Z'),
        "{times}"
    );
    let refresh = browser
        .js(
            "return document.querySelector('meta[http-equiv=refresh]').content;",
            json!([]),
        )
        .await;
    assert_eq!(refresh, "30");
    shoot(&browser, "overview").await;

    // The production deployment that was rolled back: its whole timeline.
    let link = browser
        .js(
            "return document.querySelector('main a[href^=\"/deployments/\"]').getAttribute('href');",
            json!([]),
        )
        .await;
    let link = link.as_str().expect("a deployment link").to_string();
    browser.go(&format!("{base}{link}")).await;
    let timeline = browser.text().await;
    for expected in [
        "Timeline",
        "approve",
        "begin_verification",
        "start_rollback",
        "finish_rollback",
        "incident",
        "critical",
    ] {
        assert!(timeline.contains(expected), "{expected:?} in:\n{timeline}");
    }
    let steps = browser
        .js(
            "return document.querySelectorAll('ol.timeline li').length;",
            json!([]),
        )
        .await;
    assert!(steps.as_u64().unwrap_or(0) >= 6, "{steps}: {timeline}");
    shoot(&browser, "deployment").await;

    browser.go(&format!("{base}/incidents")).await;
    let incidents = browser.text().await;
    for expected in ["Incidents", "Rollbacks", "critical", "resolved", "alert:"] {
        assert!(
            incidents.contains(expected),
            "{expected:?} in:\n{incidents}"
        );
    }
    shoot(&browser, "incidents").await;

    browser.go(&format!("{base}/backups")).await;
    let backups = browser.text().await;
    for expected in [
        "Last backup",
        "Last restore drill",
        "backed up 1 table",
        "RPO",
    ] {
        assert!(backups.contains(expected), "{expected:?} in:\n{backups}");
    }
    shoot(&browser, "backups").await;

    // DORA: four charts for production, and this week's points are the report's values.
    let want = this_weeks_production(&dir);
    browser.go(&format!("{base}/dora")).await;
    let charts = browser
        .js(
            "return Array.from(document.querySelectorAll('section[data-environment=production] svg.chart')).map(s => s.getAttribute('data-metric'));",
            json!([]),
        )
        .await;
    assert_eq!(
        charts,
        json!([
            "deployments",
            "lead_time_seconds",
            "change_failure_rate",
            "time_to_restore_seconds"
        ])
    );
    let week = want["week"].as_str().expect("week");
    let report = &want["report"];
    for (metric, series, field) in [
        ("deployments", "deployments", "deployments"),
        ("lead_time_seconds", "lead time", "lead_time_seconds"),
        ("change_failure_rate", "failure rate", "change_failure_rate"),
        (
            "time_to_restore_seconds",
            "time to restore",
            "time_to_restore_seconds",
        ),
        (
            "time_to_restore_seconds",
            "deployment recovery",
            "recovery_seconds",
        ),
    ] {
        let drawn = browser
            .js(
                "const p = document.querySelector(`section[data-environment=production] svg[data-metric=\"${arguments[0]}\"] .point[data-series=\"${arguments[1]}\"][data-week=\"${arguments[2]}\"]`); return p ? Number(p.getAttribute('data-value')) : null;",
                json!([metric, series, week]),
            )
            .await;
        let expected = &report[field];
        match (drawn.as_f64(), expected.as_f64()) {
            (Some(d), Some(e)) => assert!(
                (d - e).abs() < 1e-9,
                "{metric}/{series}: drew {d}, the report says {e}"
            ),
            (d, e) => assert_eq!(
                d, e,
                "{metric}/{series}: drew {drawn}, the report says {expected}"
            ),
        }
    }
    assert!(
        report["deployments"].as_u64().unwrap_or(0) > 0,
        "the demo deployed to production this week: {report}"
    );
    shoot(&browser, "dora").await;
}
