//! Black-box tests of incidents in the `shipgate` binary: `serve` runs as a real process on a
//! free loopback port with a temporary data directory; Alertmanager notifications are posted
//! to it with the bearer token; `incidents`, `history` and `status` then run as separate
//! processes against the same directory.

#[path = "common/serve.rs"]
mod serve;

use serve::{json_lines, run, shipgate, stderr, stdout, Server, Workspace};

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

const ALERT_TOKEN: &str = "test-alert-token-incidents";

/// Two environments; the `api` service is `acme/api`'s.
const POLICY: &str = r#"
[alerts]
environment_labels = ["env", "environment"]
service_labels = ["service", "app"]
severity_label = "severity"

[services]
api = "acme/api"

[environments.staging]
allowed_refs = ["main"]

[environments.production]
allowed_refs = ["main"]
"#;

/// Starts `shipgate serve` on `ws` with the alert token and no scheduled jobs.
async fn start(ws: &Workspace) -> Server {
    Server::launch(
        ws.clone(),
        &[("SHIPGATE_ALERT_TOKEN", ALERT_TOKEN)],
        &["--no-schedule"],
    )
    .await
}

/// Posts one Alertmanager notification with the bearer token; the answer must be 200.
async fn alert(server: &Server, body: &Value) {
    let resp = reqwest::Client::new()
        .post(server.url("/webhooks/alertmanager"))
        .bearer_auth(ALERT_TOKEN)
        .json(body)
        .send()
        .await
        .expect("send alert");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
}

/// A table's lines with each run of spaces between columns made one, so rows compare
/// whatever the column widths.
fn squeezed(table: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// Runs `shipgate ARGS --data DATA --policy POLICY` and returns stdout; it must succeed.
fn ok(ws: &Workspace, args: &[&str]) -> String {
    let out = run(shipgate()
        .args(args)
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy()));
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// One Alertmanager v4 notification carrying one alert.
fn notification(
    status: &str,
    fingerprint: &str,
    labels: Value,
    starts_at: Timestamp,
    ends_at: Option<Timestamp>,
) -> Value {
    let ends_at = ends_at.map_or("0001-01-01T00:00:00Z".to_string(), |t| t.to_string());
    json!({
        "receiver": "shipgate",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": {},
            "startsAt": starts_at.to_string(),
            "endsAt": ends_at,
            "generatorURL": "http://prometheus.example.com/graph",
            "fingerprint": fingerprint,
        }],
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com",
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0
    })
}

fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn ago(now: Timestamp, mins: i64) -> Timestamp {
    now - SignedDuration::from_mins(mins)
}

#[tokio::test]
async fn incidents_opening_and_closing_are_listed_in_history_and_status() {
    let ws = Workspace::with_policy(POLICY);
    let server = start(&ws).await;
    // Whole seconds, so the printed times are exact.
    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now");

    // acme/api in production: critical, resolved after 12m 30s.
    let api_labels = json!({ "alertname": "ApiHighErrorRate", "env": "production", "service": "api", "severity": "critical" });
    let api_start = ago(now, 120);
    let api_end = api_start + SignedDuration::from_secs(750);
    alert(
        &server,
        &notification(
            "firing",
            "a1a1a1a1a1a1a1a1",
            api_labels.clone(),
            api_start,
            None,
        ),
    )
    .await;
    alert(
        &server,
        &notification(
            "resolved",
            "a1a1a1a1a1a1a1a1",
            api_labels,
            api_start,
            Some(api_end),
        ),
    )
    .await;
    // Labels that map to nothing: an environment the policy does not know, an unknown severity.
    let disk_start = ago(now, 90);
    alert(&server, &notification(
            "firing",
            "b2b2b2b2b2b2b2b2",
            json!({ "alertname": "DiskFull", "env": "qa-7", "severity": "sev9", "team": "storage" }),
            disk_start,
            None,
        ))
        .await;
    // Staging, no service: an environment-level warning, which fires again while open.
    let queue_labels =
        json!({ "alertname": "QueueBacklog", "environment": "staging", "severity": "warning" });
    let queue_start = ago(now, 60);
    alert(
        &server,
        &notification(
            "firing",
            "c3c3c3c3c3c3c3c3",
            queue_labels.clone(),
            queue_start,
            None,
        ),
    )
    .await;
    alert(
        &server,
        &notification(
            "firing",
            "c3c3c3c3c3c3c3c3",
            queue_labels,
            ago(now, 30),
            None,
        ),
    )
    .await;
    // Resolved ten days ago: outside the default 7-day window.
    let old_labels =
        json!({ "alertname": "OldOutage", "env": "production", "severity": "critical" });
    let old_start = ago(now, 11 * 24 * 60);
    let old_end = ago(now, 10 * 24 * 60);
    alert(
        &server,
        &notification(
            "firing",
            "d4d4d4d4d4d4d4d4",
            old_labels.clone(),
            old_start,
            None,
        ),
    )
    .await;
    alert(
        &server,
        &notification(
            "resolved",
            "d4d4d4d4d4d4d4d4",
            old_labels,
            old_start,
            Some(old_end),
        ),
    )
    .await;

    // `shipgate incidents`: open ones and the ones resolved in the last 7 days, oldest first.
    let table = squeezed(&ok(&ws, &["incidents"]));
    assert_eq!(
        table,
        [
            "ID | STATE | SEVERITY | ENVIRONMENT | REPOSITORY | ALERT | OPENED | RESOLVED | BLAMED DEPLOYMENT".to_string(),
            format!(
                "alertmanager:a1a1a1a1a1a1a1a1 | resolved | critical | production | acme/api | ApiHighErrorRate | {} | {} (after 12m 30s) | -",
                time(api_start),
                time(api_end)
            ),
            format!(
                "alertmanager:b2b2b2b2b2b2b2b2 | open | warning | qa-7 (not in policy) | - | DiskFull | {} | - | -",
                time(disk_start)
            ),
            format!(
                "alertmanager:c3c3c3c3c3c3c3c3 | open | warning | staging | - | QueueBacklog | {} | - | -",
                time(queue_start)
            ),
        ]
    );
    let ids = |text: &str| -> Vec<String> {
        squeezed(text)
            .iter()
            .skip(1)
            .filter_map(|l| l.split(" | ").next().map(str::to_string))
            .collect()
    };
    assert_eq!(
        ids(&ok(&ws, &["incidents", "--all"])),
        [
            "alertmanager:d4d4d4d4d4d4d4d4",
            "alertmanager:a1a1a1a1a1a1a1a1",
            "alertmanager:b2b2b2b2b2b2b2b2",
            "alertmanager:c3c3c3c3c3c3c3c3"
        ]
    );
    assert_eq!(
        ids(&ok(&ws, &["incidents", "--since", "30d"])).len(),
        4,
        "30 days reach the old one"
    );
    assert_eq!(
        ids(&ok(&ws, &["incidents", "--since", "1h"])),
        [
            "alertmanager:b2b2b2b2b2b2b2b2",
            "alertmanager:c3c3c3c3c3c3c3c3"
        ],
        "only the open ones were resolved in the last hour"
    );
    assert_eq!(
        ids(&ok(&ws, &["incidents", "--env", "qa-7"])),
        ["alertmanager:b2b2b2b2b2b2b2b2"]
    );
    assert_eq!(
        ids(&ok(&ws, &["incidents", "--repo", "acme/api"])),
        ["alertmanager:a1a1a1a1a1a1a1a1"]
    );

    let lines = json_lines(&ok(&ws, &["incidents", "--json"]));
    assert_eq!(lines.len(), 3, "{lines:?}");
    let api = &lines[0];
    assert_eq!(api["id"], "alertmanager:a1a1a1a1a1a1a1a1");
    assert_eq!(api["state"], "resolved");
    assert_eq!(api["severity"], "critical");
    assert_eq!(api["environment"], "production");
    assert_eq!(api["repository"], "acme/api");
    assert_eq!(api["alert"], "ApiHighErrorRate");
    assert_eq!(api["opened_at"], api_start.to_string());
    assert_eq!(api["resolved_at"], api_end.to_string());
    assert_eq!(api["open_for_secs"], 750);
    assert_eq!(api["caused_by_deployment"], Value::Null);
    let disk = &lines[1];
    assert_eq!(
        (
            &disk["state"],
            &disk["environment"],
            &disk["raw_environment"],
            &disk["raw_severity"]
        ),
        (&json!("open"), &Value::Null, &json!("qa-7"), &json!("sev9"))
    );
    assert_eq!(
        disk["labels"],
        json!({ "alertname": "DiskFull", "env": "qa-7", "severity": "sev9", "team": "storage" })
    );
    assert_eq!(
        lines[2]["notifications"], 2,
        "the repeat notification counted"
    );

    // `shipgate history`: the incident log, merged by time.
    let history = squeezed(&ok(&ws, &["history"]));
    assert_eq!(
        history[0],
        "TIME | ENVIRONMENT | DEPLOYMENT | ACTOR | WHAT | CHANGE | WHY"
    );
    let expected = [
        format!(
            "{} | production | - | alertmanager | incident_opened | alertmanager:a1a1a1a1a1a1a1a1 [critical] ApiHighErrorRate · acme/api",
            time(api_start)
        ),
        format!(
            "{} | production | - | alertmanager | incident_resolved | open -> resolved | alertmanager:a1a1a1a1a1a1a1a1 [critical] ApiHighErrorRate · acme/api · open for 12m 30s",
            time(api_end)
        ),
        format!(
            "{} | qa-7 (not in policy) | - | alertmanager | incident_opened | alertmanager:b2b2b2b2b2b2b2b2 [warning] DiskFull",
            time(disk_start)
        ),
        format!(
            "{} | staging | - | alertmanager | incident_opened | alertmanager:c3c3c3c3c3c3c3c3 [warning] QueueBacklog",
            time(queue_start)
        ),
    ];
    for line in &expected {
        assert!(
            history.contains(line),
            "{line}\nmissing from:\n{history:#?}"
        );
    }
    let events = json_lines(&ok(&ws, &["history", "--json"]));
    let whats: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("?"),
                e["what"].as_str().unwrap_or("?"),
                e["incident_id"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        whats,
        [
            (
                "incident",
                "incident_opened",
                "alertmanager:d4d4d4d4d4d4d4d4"
            ),
            (
                "incident",
                "incident_resolved",
                "alertmanager:d4d4d4d4d4d4d4d4"
            ),
            (
                "incident",
                "incident_opened",
                "alertmanager:a1a1a1a1a1a1a1a1"
            ),
            (
                "incident",
                "incident_resolved",
                "alertmanager:a1a1a1a1a1a1a1a1"
            ),
            (
                "incident",
                "incident_opened",
                "alertmanager:b2b2b2b2b2b2b2b2"
            ),
            (
                "incident",
                "incident_opened",
                "alertmanager:c3c3c3c3c3c3c3c3"
            ),
            (
                "incident",
                "incident_updated",
                "alertmanager:c3c3c3c3c3c3c3c3"
            ),
        ]
    );
    let resolved = &events[3];
    assert_eq!(resolved["at"], api_end.to_string());
    assert_eq!(resolved["open_for_secs"], 750);
    assert_eq!(resolved["environment"], "production");
    assert_eq!(resolved["repository"], "acme/api");
    assert_eq!(resolved["severity"], "critical");
    assert_eq!(events[4]["raw_environment"], "qa-7");
    // The same log as CSV for a spreadsheet: a header, one line per event, machine times,
    // and fields with commas quoted.
    let csv = ok(&ws, &["history", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "time,environment,deployment,actor,what,change,why"
    );
    assert_eq!(lines.len(), events.len() + 1, "{csv}");
    assert!(
        lines[4].starts_with(&format!(
            "{api_end},production,-,alertmanager,incident_resolved,open -> resolved,"
        )),
        "{csv}"
    );
    let out = run(shipgate()
        .arg("history")
        .arg("--data")
        .arg(ws.data())
        .args(["--env", "qa-7", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let unmapped = json_lines(&stdout(&out));
    assert_eq!(unmapped.len(), 1, "{unmapped:?}");
    assert_eq!(unmapped[0]["incident_id"], "alertmanager:b2b2b2b2b2b2b2b2");

    // `shipgate status`: the unmapped alert, with what failed to map and its labels.
    let status = ok(&ws, &["status"]);
    let outside: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("open incident outside the policy"))
        .collect();
    assert_eq!(
        outside,
        [format!(
            "open incident outside the policy: alertmanager:b2b2b2b2b2b2b2b2 [warning] DiskFull (since {disk_start}): environment label \"qa-7\" is not a policy environment; severity label \"sev9\" is not in the severity map (counted as warning); labels: alertname=DiskFull, env=qa-7, severity=sev9, team=storage"
        )]
    );
    assert!(
        status.contains(&format!(
            "open incident in staging: alertmanager:c3c3c3c3c3c3c3c3 [warning] QueueBacklog (since {queue_start})"
        )),
        "{status}"
    );
    let lines = json_lines(&ok(&ws, &["status", "--json"]));
    let last = lines.last().expect("status lines");
    let outside = &last["incidents_outside_policy"];
    assert_eq!(outside.as_array().map(Vec::len), Some(1), "{last}");
    assert_eq!(outside[0]["id"], "alertmanager:b2b2b2b2b2b2b2b2");
    assert_eq!(outside[0]["raw_environment"], "qa-7");
    assert_eq!(outside[0]["labels"]["team"], "storage");
    assert_eq!(
        outside[0]["reasons"][0],
        "environment label \"qa-7\" is not a policy environment"
    );
    let rows: Vec<&str> = lines.iter().filter_map(|l| l["scope"].as_str()).collect();
    assert_eq!(rows, ["production", "staging"], "the rows are unchanged");
}

#[test]
fn incidents_refuses_bad_flags_and_a_data_directory_without_state() {
    let ws = Workspace::with_policy(POLICY);
    let out = run(shipgate()
        .arg("incidents")
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("shipgate incidents: no shipgate database"),
        "{}",
        stderr(&out)
    );
    assert!(!ws.data().exists(), "incidents must not create state");

    let out = run(shipgate().arg("incidents").arg("--data").arg(ws.data()));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "shipgate incidents: give --env E, or --policy FILE (or SHIPGATE_POLICY_FILE) to list every environment\n"
    );

    for (args, says) in [
        (&["--all", "--since", "1d"][..], "cannot be used with"),
        (&["--since", "5x"][..], "invalid duration"),
        (&["--repo", "not-a-repo"][..], "--repo \"not-a-repo\""),
    ] {
        let out = run(shipgate()
            .arg("incidents")
            .args(args)
            .arg("--data")
            .arg(ws.data())
            .arg("--policy")
            .arg(ws.policy()));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn help_lists_incidents() {
    let out = run(shipgate().arg("--help"));
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(
        help.lines()
            .any(|l| l.trim_start().starts_with("incidents")),
        "{help}"
    );
}
