//! DORA's figures on a scenario with known answers, built through the public routes: commits
//! arrive in `push` deliveries with their times, deployments through GitHub's protection rule
//! and status deliveries, alerts through the Alertmanager route with their `startsAt`. The
//! `dora-report` job then computes every figure, per repository and environment, over 7, 30
//! and 90 days, and each is checked against the value worked out by hand in the comments.
//!
//! The story (production, 30-minute verification windows; the clock is Monday 2 June 2025,
//! 10:00 UTC at the start and Thursday 31 July, 11:00 when the report runs):
//!
//! | when | octo-org/shop | octo-org/web |
//! |---|---|---|
//! | 06-02 10:00 | A (commits 08:00, 09:00) goes out, succeeds | |
//! | 06-22 10:00 | | W1 (09:00) goes out, succeeds |
//! | 07-12 10:00 | B (07:00, 08:00, 09:30); an alert begins 10:05, B rolls back 10:07–10:10, alert resolves 10:25 | |
//! | 07-27 10:00 | C (09:00); a critical alert that began 09:50 arrives 10:02: not C's, no rollback; resolves 10:12 | |
//! | 07-29 10:00 | | W2 (08:00, 09:00) goes out, succeeds |
//! | 07-30 10:00 | a warning alert flaps: 10:00–10:03 and 10:10–10:30 | |
//! | 07-31 09:00 | F fails before reaching production | |
//! | 07-31 10:00 | D (09:40) reaches production, `failure` at 10:06 | |
//! | 07-31 10:30 | E (10:20), the fix, goes out and is still verifying at 11:00 | |

#[path = "common/alert_webhook.rs"]
mod common;

use std::time::Duration;

use common::{alertmanager, Harness, Reply, ALERT_TOKEN, INSTALLATION_ID, ROLLBACK_GITHUB_ID};
use jiff::Timestamp;
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::domain::dora::{DoraReport, Frequency};
use shipgate::jobs::{self, JobContext, JobName, MetricSink};
use shipgate::service::lifecycle;

const ROUTE: &str = "/webhooks/alertmanager";
const SHOP: &str = "octo-org/shop";
const WEB: &str = "octo-org/web";

const POLICY: &str = r#"
[services]
api = "octo-org/shop"
web = "octo-org/web"

[environments.staging]
production = false
verification_window = "10m"

[environments.production]
verification_window = "30m"
rollback_on = ["critical"]
rollback = { method = "redeploy" }
"#;

/// A 40-hex sha from a short tag.
fn sha(tag: &str) -> String {
    let hex: String = tag
        .bytes()
        .map(|b| format!("{:x}", b % 16))
        .collect::<String>();
    format!("{hex:0<40}")
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn at(day: &str, time: &str) -> Timestamp {
    t(&format!("2025-{day}T{time}:00Z"))
}

/// Moves the clock forward to `when`.
fn clock_to(h: &Harness, when: Timestamp) {
    let now = h.now();
    assert!(when >= now, "the clock only moves forward: {now} → {when}");
    let secs = when.duration_since(now).as_secs();
    h.clock
        .advance(Duration::from_secs(u64::try_from(secs).expect("forward")));
}

/// A `push` delivery moving `repo`'s main from `before` (`None`: a new branch) to the last
/// of `commits`.
async fn push(h: &Harness, repo: &str, before: Option<&str>, commits: &[(&str, Timestamp)]) {
    let list: Vec<Value> = commits
        .iter()
        .map(|(id, at)| json!({ "id": sha(id), "timestamp": at.to_string(), "message": id }))
        .collect();
    let head = list.last().cloned().unwrap_or(Value::Null);
    let body = json!({
        "ref": "refs/heads/main",
        "before": before.map_or("0".repeat(40), sha),
        "after": head["id"].clone(),
        "created": before.is_none(),
        "deleted": false,
        "commits": list,
        "head_commit": head,
        "repository": { "full_name": repo },
        "installation": { "id": INSTALLATION_ID },
    });
    let reply = h.deliver("push", &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

fn protection_rule(repo: &str, sha: &str, run_id: u64) -> Value {
    json!({
        "action": "requested",
        "environment": "production",
        "event": "push",
        "ref": "main",
        "sha": sha,
        "deployment_callback_url": format!("https://api.github.com/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule"),
        "installation": { "id": INSTALLATION_ID },
        "sender": { "login": "octocat" },
        "repository": { "full_name": repo },
    })
}

async fn status(
    h: &Harness,
    repo: &str,
    github_id: u64,
    sha: &str,
    run_id: Option<u64>,
    state: &str,
    payload: Value,
) -> Reply {
    let body = json!({
        "action": "created",
        "deployment_status": { "state": state, "description": format!("deploy {state}"), "environment": "production" },
        "deployment": { "id": github_id, "sha": sha, "ref": "main", "environment": "production", "payload": payload },
        "repository": { "full_name": repo },
        "workflow_run": run_id.map_or(Value::Null, |id| json!({ "id": id })),
    });
    let reply = h.deliver("deployment_status", &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
}

/// The protection rule approves `tag` for production; returns the deployment's id.
async fn request(h: &Harness, repo: &str, tag: &str, run_id: u64) -> String {
    let reply = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule(repo, &sha(tag), run_id),
        )
        .await;
    assert_eq!(
        (reply.status, reply.str("decision")),
        (200, "approved"),
        "{reply:?}"
    );
    reply.str("deployment_id").to_string()
}

/// `tag` goes out to production now; returns the deployment's id.
async fn goes_out(h: &Harness, repo: &str, tag: &str, run_id: u64) -> String {
    let id = request(h, repo, tag, run_id).await;
    let reply = status(
        h,
        repo,
        run_id + 1000,
        &sha(tag),
        Some(run_id),
        "success",
        json!({}),
    )
    .await;
    assert_eq!(reply.str("state"), "verifying", "{reply:?}");
    id
}

/// Lets the deployment's 30-minute window pass (31 minutes after `went_out`).
async fn passes(h: &Harness, id: &str, went_out: Timestamp) {
    clock_to(h, went_out + jiff::SignedDuration::from_mins(31));
    lifecycle::finish_verification(h.services(), id)
        .await
        .expect("finish");
    assert_eq!(h.deployment(id).await.state, State::Succeeded);
}

fn api_alert(
    status: &str,
    fingerprint: &str,
    severity: &str,
    began: Timestamp,
    ended: Option<Timestamp>,
) -> Value {
    alertmanager(
        status,
        fingerprint,
        json!({ "alertname": "ApiHighErrorRate", "env": "production", "service": "api", "severity": severity }),
        began,
        ended,
    )
}

/// Plays the story; returns the ids of B, C, D and the harness, at 07-31 11:00.
async fn story() -> (Harness, [String; 3]) {
    let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
    assert_eq!(h.now(), at("06-02", "10:00"));

    // 06-02: A, a new branch of two commits.
    push(
        &h,
        SHOP,
        None,
        &[("a1", at("06-02", "08:00")), ("A", at("06-02", "09:00"))],
    )
    .await;
    let a = goes_out(&h, SHOP, "A", 1).await;
    passes(&h, &a, at("06-02", "10:00")).await;

    // 06-22: web's first deployment.
    clock_to(&h, at("06-22", "10:00"));
    push(&h, WEB, None, &[("W1", at("06-22", "09:00"))]).await;
    let w1 = goes_out(&h, WEB, "W1", 2).await;
    passes(&h, &w1, at("06-22", "10:00")).await;

    // 07-12: B carries three commits; an alert that began five minutes after it went out
    // rolls it back.
    clock_to(&h, at("07-12", "10:00"));
    push(
        &h,
        SHOP,
        Some("A"),
        &[
            ("b1", at("07-12", "07:00")),
            ("b2", at("07-12", "08:00")),
            ("B", at("07-12", "09:30")),
        ],
    )
    .await;
    let b = goes_out(&h, SHOP, "B", 3).await;
    clock_to(&h, at("07-12", "10:07"));
    let reply = h
        .post_alert(
            ROUTE,
            &api_alert("firing", "fp-b", "critical", at("07-12", "10:05"), None),
        )
        .await;
    assert_eq!(reply.count("rollbacks_started"), 1, "{reply:?}");
    let incident = h.incident("alertmanager:fp-b").await;
    assert_eq!(incident.caused_by_deployment.as_deref(), Some(b.as_str()));
    assert_eq!(
        incident.attribution.as_deref(),
        Some(
            format!(
                "began 5m 0s after {} went out, inside its verification window",
                &sha("B")[..7]
            )
            .as_str()
        )
    );
    clock_to(&h, at("07-12", "10:10"));
    let reply = status(
        &h,
        SHOP,
        ROLLBACK_GITHUB_ID,
        &sha("A"),
        None,
        "success",
        json!({ "shipgate_rollback_of": b }),
    )
    .await;
    assert_eq!(reply.str("state"), "rolled_back", "{reply:?}");
    clock_to(&h, at("07-12", "10:26"));
    let reply = h
        .post_alert(
            ROUTE,
            &api_alert(
                "resolved",
                "fp-b",
                "critical",
                at("07-12", "10:05"),
                Some(at("07-12", "10:25")),
            ),
        )
        .await;
    assert_eq!(reply.count("resolved"), 1, "{reply:?}");

    // 07-27: C goes out; a critical alert that began ten minutes before it arrives two minutes
    // after: not C's doing, so C is neither blamed nor rolled back.
    clock_to(&h, at("07-27", "10:00"));
    push(&h, SHOP, Some("B"), &[("C", at("07-27", "09:00"))]).await;
    let c = goes_out(&h, SHOP, "C", 4).await;
    clock_to(&h, at("07-27", "10:02"));
    let reply = h
        .post_alert(
            ROUTE,
            &api_alert("firing", "fp-c", "critical", at("07-27", "09:50"), None),
        )
        .await;
    assert_eq!(reply.count("opened"), 1, "{reply:?}");
    assert_eq!(reply.count("rollbacks_started"), 0, "{reply:?}");
    let rollback = &reply.body["items"][0]["rollback"];
    assert_eq!(
        (
            &rollback["outcome"],
            &rollback["reason"],
            &rollback["deployment_id"]
        ),
        (&json!("skipped"), &json!("not_attributed"), &json!(c)),
        "{reply:?}"
    );
    let incident = h.incident("alertmanager:fp-c").await;
    assert_eq!(incident.caused_by_deployment, None);
    let why = format!(
        "began 10m 0s before {} went out; not attributed to it",
        &sha("C")[..7]
    );
    assert_eq!(incident.attribution.as_deref(), Some(why.as_str()));
    // The incident's Slack message says so.
    let said = h.notifications().into_iter().any(|n| {
        matches!(&n.body, shipgate::notify::NotificationBody::Incident { incident_id, attribution, deployment_id: None, .. }
            if incident_id == "alertmanager:fp-c" && attribution.as_deref() == Some(why.as_str()))
    });
    assert!(said, "{:?}", h.notifications());
    assert_eq!(h.deployment(&c).await.state, State::Verifying);
    clock_to(&h, at("07-27", "10:13"));
    h.post_alert(
        ROUTE,
        &api_alert(
            "resolved",
            "fp-c",
            "critical",
            at("07-27", "09:50"),
            Some(at("07-27", "10:12")),
        ),
    )
    .await;
    passes(&h, &c, at("07-27", "10:00")).await;

    // 07-29: web's second deployment, two commits.
    clock_to(&h, at("07-29", "10:00"));
    push(
        &h,
        WEB,
        Some("W1"),
        &[("w2a", at("07-29", "08:00")), ("W2", at("07-29", "09:00"))],
    )
    .await;
    let w2 = goes_out(&h, WEB, "W2", 5).await;
    passes(&h, &w2, at("07-29", "10:00")).await;

    // 07-30: a warning alert flaps while nothing verifies: two episodes of one incident.
    for (effect, began, arrives, ended, resolved_arrives) in [
        ("opened", "10:00", "10:01", "10:03", "10:04"),
        ("reopened", "10:10", "10:11", "10:30", "10:31"),
    ] {
        clock_to(&h, at("07-30", arrives));
        let reply = h
            .post_alert(
                ROUTE,
                &api_alert("firing", "fp-flap", "warning", at("07-30", began), None),
            )
            .await;
        assert_eq!(reply.body["items"][0]["effect"], effect, "{reply:?}");
        clock_to(&h, at("07-30", resolved_arrives));
        let reply = h
            .post_alert(
                ROUTE,
                &api_alert(
                    "resolved",
                    "fp-flap",
                    "warning",
                    at("07-30", began),
                    Some(at("07-30", ended)),
                ),
            )
            .await;
        assert_eq!(reply.count("resolved"), 1, "{reply:?}");
    }

    // 07-31 09:00: F fails before it reaches production.
    clock_to(&h, at("07-31", "09:00"));
    let f = request(&h, SHOP, "F", 6).await;
    clock_to(&h, at("07-31", "09:05"));
    status(&h, SHOP, 1006, &sha("F"), Some(6), "failure", json!({})).await;
    assert_eq!(h.deployment(&f).await.state, State::Failed);

    // 10:00: D reaches production, and fails there at 10:06.
    clock_to(&h, at("07-31", "10:00"));
    push(&h, SHOP, Some("C"), &[("D", at("07-31", "09:40"))]).await;
    let d = goes_out(&h, SHOP, "D", 7).await;
    clock_to(&h, at("07-31", "10:06"));
    status(&h, SHOP, 1007, &sha("D"), Some(7), "failure", json!({})).await;
    assert_eq!(h.deployment(&d).await.state, State::Failed);

    // 10:30: the fix E goes out, and is still verifying when the report runs at 11:00.
    clock_to(&h, at("07-31", "10:30"));
    push(&h, SHOP, Some("D"), &[("E", at("07-31", "10:20"))]).await;
    goes_out(&h, SHOP, "E", 8).await;
    clock_to(&h, at("07-31", "11:00"));
    (h, [b, c, d])
}

/// What each figure must be, worked out by hand.
struct Want {
    deployments: u32,
    frequency: Option<Frequency>,
    per_day: Option<f64>,
    lead_time: Option<f64>,
    lead_time_commits: u32,
    judged: u32,
    failed: u32,
    failed_before_reaching: u32,
    recovery: Option<f64>,
    recovered: u32,
    restore: Option<f64>,
    restored: u32,
    rolled_back: u32,
}

fn check(reports: &[DoraReport], env: &str, repo: Option<&str>, window: &str, want: Want) {
    let r = reports
        .iter()
        .find(|r| r.environment == env && r.repo.as_deref() == repo && r.window.label() == window)
        .unwrap_or_else(|| panic!("no report for {env} {repo:?} {window}"));
    let place = format!("{env} {repo:?} {window}");
    assert_eq!(r.deployments, want.deployments, "deployments, {place}");
    assert_eq!(r.frequency, want.frequency, "frequency, {place}");
    match (r.deployments_per_day, want.per_day) {
        (Some(got), Some(want)) => {
            assert!((got - want).abs() < 1e-9, "per day {got} ≠ {want}, {place}")
        }
        (got, want) => assert_eq!(got, want, "per day, {place}"),
    }
    assert_eq!(r.lead_time_seconds, want.lead_time, "lead time, {place}");
    assert_eq!(
        r.lead_time_samples, want.lead_time_commits,
        "commits, {place}"
    );
    assert_eq!(r.judged_deployments, want.judged, "judged, {place}");
    assert_eq!(r.failed_changes, want.failed, "failed changes, {place}");
    let rate = (want.judged > 0).then(|| f64::from(want.failed) / f64::from(want.judged));
    assert_eq!(r.change_failure_rate, rate, "change failure rate, {place}");
    assert_eq!(
        r.failed_before_reaching, want.failed_before_reaching,
        "failed before reaching, {place}"
    );
    assert_eq!(r.recovery_seconds, want.recovery, "recovery, {place}");
    assert_eq!(r.recovered_failures, want.recovered, "recovered, {place}");
    assert_eq!(r.unrecovered_failures, 0, "unrecovered, {place}");
    assert_eq!(
        r.time_to_restore_seconds, want.restore,
        "time to restore, {place}"
    );
    assert_eq!(
        r.restored_incidents, want.restored,
        "restored episodes, {place}"
    );
    assert_eq!(r.open_incidents, 0, "open, {place}");
    assert_eq!(r.rolled_back, want.rolled_back, "rolled back, {place}");
    assert_eq!(r.production, env == "production", "production, {place}");
}

/// Days from `from` to the report's 07-31 11:00.
fn days_since(from: Timestamp) -> f64 {
    at("07-31", "11:00").duration_since(from).as_secs_f64() / 86_400.0
}

#[tokio::test]
async fn every_figure_matches_the_hand_computed_value_per_repository_environment_and_window() {
    let (h, [b, _c, _d]) = story().await;

    // The flapping alert is one incident with two episodes, each with its own restore time.
    let flap = h.incident("alertmanager:fp-flap").await;
    let restores: Vec<i64> = flap
        .all_episodes()
        .iter()
        .map(|e| e.time_to_restore().map(|d| d.as_secs()).unwrap_or(-1))
        .collect();
    assert_eq!(restores, vec![180, 1200]);
    assert_eq!(flap.opened_at, at("07-30", "10:10"));
    // B's incident is B's; its deployment was rolled back.
    assert_eq!(h.deployment(&b).await.state, State::RolledBack);

    let ctx = JobContext::new(h.services().clone(), reqwest::Client::new())
        .with_metrics(MetricSink::memory());
    let run = jobs::run(&ctx, JobName::DoraReport).await.expect("runs");
    assert!(run.ok, "{run:?}");
    let reports: Vec<DoraReport> =
        serde_json::from_value(run.details["reports"].clone()).expect("reports");
    // Production leads: its roll-up and both repositories, then staging.
    let order: Vec<(&str, Option<&str>)> = reports
        .iter()
        .filter(|r| r.window.label() == "30d")
        .map(|r| (r.environment.as_str(), r.repo.as_deref()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("production", None),
            ("production", Some(SHOP)),
            ("production", Some(WEB)),
            ("staging", None)
        ]
    );
    use Frequency::Monthly;

    // octo-org/shop, 7 days [07-24 11:00, 07-31 11:00): C, D and E reached production, F did
    // not. Lead times: C 1h (its push started from B, deployed before), D 20m, E 10m: median
    // 20m. Judged C and D (E verifies, unblamed); D failed: 1/2. D recovered when the fix E
    // went out: 10:06 → 10:30 = 24m. Episodes: the 07-27 alert 22m, the flaps 3m and 20m:
    // median 20m. Deploy days 07-27 and 07-31 fall in one Sunday week, the other (07-24..26)
    // has none: monthly.
    check(
        &reports,
        "production",
        Some(SHOP),
        "7d",
        Want {
            deployments: 3,
            frequency: Some(Monthly),
            per_day: Some(3.0 / 7.0),
            lead_time: Some(1200.0),
            lead_time_commits: 3,
            judged: 2,
            failed: 1,
            failed_before_reaching: 1,
            recovery: Some(1440.0),
            recovered: 1,
            restore: Some(1200.0),
            restored: 3,
            rolled_back: 0,
        },
    );
    // 30 days [07-01 11:00, ...): B too. B's commits 3h, 2h, 30m (its push started from A):
    // six commits 10m, 20m, 30m, 1h, 2h, 3h: median 45m. Judged B, C, D; failed B (rolled
    // back, and blamed) and D: 2/3. B recovered from when its alert began (10:05) to its
    // rollback's end (10:10): 5m; D 24m: median 14m 30s. Episodes 20m (B's), 22m, 3m, 20m:
    // median 20m.
    check(
        &reports,
        "production",
        Some(SHOP),
        "30d",
        Want {
            deployments: 4,
            frequency: Some(Monthly),
            per_day: Some(4.0 / 30.0),
            lead_time: Some(2700.0),
            lead_time_commits: 6,
            judged: 3,
            failed: 2,
            failed_before_reaching: 1,
            recovery: Some(870.0),
            recovered: 2,
            restore: Some(1200.0),
            restored: 4,
            rolled_back: 1,
        },
    );
    // 90 days: A too (2h and 1h): eight commits, median 1h. The data began with A's request
    // (06-02 10:00), inside the window: the rate is over the 59 days since.
    check(
        &reports,
        "production",
        Some(SHOP),
        "90d",
        Want {
            deployments: 5,
            frequency: Some(Monthly),
            per_day: Some(5.0 / days_since(at("06-02", "10:00"))),
            lead_time: Some(3600.0),
            lead_time_commits: 8,
            judged: 4,
            failed: 2,
            failed_before_reaching: 1,
            recovery: Some(870.0),
            recovered: 2,
            restore: Some(1200.0),
            restored: 4,
            rolled_back: 1,
        },
    );

    // octo-org/web: W2 (2h, 1h) in the last 7 and 30 days; W1 (1h) too over 90, whose data
    // began at W1's request on 06-22. No incidents are web's.
    let web = |deployments, per_day, lead_time, commits| Want {
        deployments,
        frequency: Some(Monthly),
        per_day: Some(per_day),
        lead_time: Some(lead_time),
        lead_time_commits: commits,
        judged: deployments,
        failed: 0,
        failed_before_reaching: 0,
        recovery: None,
        recovered: 0,
        restore: None,
        restored: 0,
        rolled_back: 0,
    };
    check(
        &reports,
        "production",
        Some(WEB),
        "7d",
        web(1, 1.0 / 7.0, 5400.0, 2),
    );
    check(
        &reports,
        "production",
        Some(WEB),
        "30d",
        web(1, 1.0 / 30.0, 5400.0, 2),
    );
    check(
        &reports,
        "production",
        Some(WEB),
        "90d",
        web(2, 2.0 / days_since(at("06-22", "10:00")), 3600.0, 3),
    );

    // The roll-up: both repositories. 7 days: C, D, E, W2; commits 10m, 20m, 1h, 1h, 2h:
    // median 1h; judged C, D, W2, failed D: 1/3.
    check(
        &reports,
        "production",
        None,
        "7d",
        Want {
            deployments: 4,
            frequency: Some(Monthly),
            per_day: Some(4.0 / 7.0),
            lead_time: Some(3600.0),
            lead_time_commits: 5,
            judged: 3,
            failed: 1,
            failed_before_reaching: 1,
            recovery: Some(1440.0),
            recovered: 1,
            restore: Some(1200.0),
            restored: 3,
            rolled_back: 0,
        },
    );
    // 30 days: B, C, D, E, W2; eight commits, median 1h; judged 4, failed 2.
    check(
        &reports,
        "production",
        None,
        "30d",
        Want {
            deployments: 5,
            frequency: Some(Monthly),
            per_day: Some(5.0 / 30.0),
            lead_time: Some(3600.0),
            lead_time_commits: 8,
            judged: 4,
            failed: 2,
            failed_before_reaching: 1,
            recovery: Some(870.0),
            recovered: 2,
            restore: Some(1200.0),
            restored: 4,
            rolled_back: 1,
        },
    );
    // 90 days: all seven; eleven commits, median 1h; judged 6, failed 2.
    check(
        &reports,
        "production",
        None,
        "90d",
        Want {
            deployments: 7,
            frequency: Some(Monthly),
            per_day: Some(7.0 / days_since(at("06-02", "10:00"))),
            lead_time: Some(3600.0),
            lead_time_commits: 11,
            judged: 6,
            failed: 2,
            failed_before_reaching: 1,
            recovery: Some(870.0),
            recovered: 2,
            restore: Some(1200.0),
            restored: 4,
            rolled_back: 1,
        },
    );
    // staging saw nothing: every figure undefined, not zero.
    for window in ["7d", "30d", "90d"] {
        check(
            &reports,
            "staging",
            None,
            window,
            Want {
                deployments: 0,
                frequency: None,
                per_day: None,
                lead_time: None,
                lead_time_commits: 0,
                judged: 0,
                failed: 0,
                failed_before_reaching: 0,
                recovery: None,
                recovered: 0,
                restore: None,
                restored: 0,
                rolled_back: 0,
            },
        );
    }

    // The history kept this week (from Sunday 07-27) and the last (07-20..26) as their own
    // windows: a chart over weeks is a read.
    let weeks = h
        .repo
        .dora_weeks("production", jiff::civil::date(2025, 7, 20))
        .await
        .expect("weeks");
    let roll_up = |i: usize| {
        weeks[i]
            .reports
            .iter()
            .find(|r| r.repo.is_none())
            .cloned()
            .expect("roll-up")
    };
    assert_eq!(
        weeks.iter().map(|w| w.day.to_string()).collect::<Vec<_>>(),
        vec!["2025-07-20", "2025-07-27"]
    );
    assert_eq!(roll_up(0).deployments, 0);
    // This week so far: C, W2, D, E.
    assert_eq!(roll_up(1).deployments, 4);
    assert_eq!(roll_up(1).window.from, at("07-27", "00:00"));

    // The metrics carry the new figure.
    let recovery_lines = ctx
        .metrics
        .lines()
        .iter()
        .filter(|l| l.contains("\"FailedDeploymentRecoveryTime\":"))
        .count();
    // Production's roll-up and shop, over three windows each.
    assert_eq!(recovery_lines, 6);
}

#[tokio::test]
async fn with_any_in_window_an_alert_that_began_before_the_deploy_rolls_it_back() {
    let policy = POLICY.replace(
        "rollback = { method = \"redeploy\" }",
        "rollback = { method = \"redeploy\" }\nrollback_alerts = \"any_in_window\"",
    );
    let h = Harness::build(&policy, 201, ALERT_TOKEN).await;
    push(&h, SHOP, None, &[("A", at("06-02", "09:00"))]).await;
    let a = goes_out(&h, SHOP, "A", 1).await;
    passes(&h, &a, at("06-02", "10:00")).await;
    clock_to(&h, at("06-03", "10:00"));
    let b = goes_out(&h, SHOP, "B", 2).await;
    clock_to(&h, at("06-03", "10:02"));
    let reply = h
        .post_alert(
            ROUTE,
            &api_alert("firing", "fp-early", "critical", at("06-03", "09:50"), None),
        )
        .await;
    // Rolled back, though the incident is still not blamed on B: it began before B.
    assert_eq!(reply.count("rollbacks_started"), 1, "{reply:?}");
    assert_eq!(h.deployment(&b).await.state, State::RollingBack);
    let incident = h.incident("alertmanager:fp-early").await;
    assert_eq!(incident.caused_by_deployment, None);
}

#[tokio::test]
async fn a_late_resolution_of_an_earlier_episode_does_not_end_the_current_one() {
    let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
    let began = at("06-02", "10:00");
    clock_to(&h, at("06-02", "10:01"));
    h.post_alert(
        ROUTE,
        &api_alert("firing", "fp-late", "warning", began, None),
    )
    .await;
    clock_to(&h, at("06-02", "10:06"));
    h.post_alert(
        ROUTE,
        &api_alert(
            "resolved",
            "fp-late",
            "warning",
            began,
            Some(at("06-02", "10:05")),
        ),
    )
    .await;
    // It fires again at 10:10. Then the second Alertmanager of an HA pair delivers its own
    // resolution of the first firing (its end a little later), late: it belongs to the first
    // episode and must not end the second.
    clock_to(&h, at("06-02", "10:11"));
    h.post_alert(
        ROUTE,
        &api_alert("firing", "fp-late", "warning", at("06-02", "10:10"), None),
    )
    .await;
    clock_to(&h, at("06-02", "10:12"));
    let late = api_alert(
        "resolved",
        "fp-late",
        "warning",
        began,
        Some(t("2025-06-02T10:05:30Z")),
    );
    let reply = h.post_alert(ROUTE, &late).await;
    assert_eq!(
        reply.body["items"][0]["effect"], "already_resolved",
        "{reply:?}"
    );
    let incident = h.incident("alertmanager:fp-late").await;
    assert_eq!(
        incident.status,
        shipgate::domain::incident::IncidentStatus::Open
    );
    assert_eq!(incident.all_episodes().len(), 2);
}

#[tokio::test]
async fn an_alert_that_began_within_the_start_tolerance_is_the_deploys() {
    let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
    let a = goes_out(&h, SHOP, "A", 1).await;
    passes(&h, &a, at("06-02", "10:00")).await;
    clock_to(&h, at("06-03", "10:00"));
    let b = goes_out(&h, SHOP, "B", 2).await;
    clock_to(&h, at("06-03", "10:02"));
    // 30 seconds before B went out: inside the default 60-second tolerance.
    let reply = h
        .post_alert(
            ROUTE,
            &api_alert(
                "firing",
                "fp-skew",
                "critical",
                t("2025-06-03T09:59:30Z"),
                None,
            ),
        )
        .await;
    assert_eq!(reply.count("rollbacks_started"), 1, "{reply:?}");
    let incident = h.incident("alertmanager:fp-skew").await;
    assert_eq!(incident.caused_by_deployment.as_deref(), Some(b.as_str()));
    assert_eq!(
        incident.attribution.as_deref(),
        Some(
            format!(
                "began 30s before {} went out, within the 1m 0s start tolerance",
                &sha("B")[..7]
            )
            .as_str()
        )
    );
}
