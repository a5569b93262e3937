//! `shipgate dora`: the figures the `dora-report` job kept, read back per day, as a table,
//! JSON and CSV, from a data directory a real `shipgate serve` created.

#[path = "common/serve.rs"]
mod serve;

use std::time::Duration;

use serve::{json_lines, run, shipgate, stderr, stdout, Server, Workspace};

fn with_data_and_policy(args: &[&str], ws: &Workspace) -> std::process::Output {
    run(shipgate()
        .args(args)
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy()))
}

#[tokio::test]
async fn the_reports_of_a_day_are_kept_once_and_read_back_as_table_json_and_csv() {
    let ws = Workspace::new();
    // serve creates the store; the jobs and the reads run beside it, as an operator would.
    let mut server = Server::launch(ws.clone(), &[], &["--no-schedule"]).await;
    let before = with_data_and_policy(&["dora"], &ws);
    assert!(before.status.success(), "{}", stderr(&before));
    assert_eq!(
        stdout(&before),
        "no DORA figures kept yet (`shipgate job dora-report` makes today's)\n"
    );
    for _ in 0..2 {
        let job = with_data_and_policy(&["job", "dora-report"], &ws);
        assert!(job.status.success(), "{}", stderr(&job));
    }

    // A second run the same day replaced the first: one row per environment.
    let rows = json_lines(&stdout(&with_data_and_policy(&["dora", "--json"], &ws)));
    let environments: Vec<&str> = rows
        .iter()
        .map(|r| r["environment"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(environments, vec!["production", "staging"], "{rows:?}");
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    for row in &rows {
        assert_eq!(row["day"], today.as_str());
        assert!(row["window"]["from"].is_string(), "{row}");
        assert_eq!(row["deployments"], 0);
    }

    let csv = stdout(&with_data_and_policy(
        &["dora", "--csv", "--window", "7d"],
        &ws,
    ));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "day,environment,repository,production,window,deployments,frequency,lead_time_seconds,lead_time_commits,change_failure_rate,judged_deployments,failed_changes,failed_before_reaching,recovery_seconds,recovered_failures,time_to_restore_seconds,restored_incidents,rolled_back,approval_wait_seconds"
    );
    assert_eq!(
        lines[1],
        format!("{today},production,,true,7d,0,,,0,,0,0,0,,0,,0,0,")
    );
    assert_eq!(lines.len(), 3, "{csv}");

    // The calendar weeks: this week so far (and the last, when there is one), per
    // environment, each its own window.
    let sunday = {
        let now = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let back = i64::from(now.weekday().to_sunday_zero_offset());
        now.checked_sub(jiff::Span::new().days(back))
            .expect("date")
            .to_string()
    };
    let weekly = json_lines(&stdout(&with_data_and_policy(
        &["dora", "--weekly", "--json", "--env", "production"],
        &ws,
    )));
    let this_week: Vec<&serde_json::Value> = weekly
        .iter()
        .filter(|r| r["week"] == sunday.as_str())
        .collect();
    assert_eq!(this_week.len(), 1, "{weekly:?}");
    assert_eq!(this_week[0]["production"], true);
    assert_eq!(
        this_week[0]["window"]["from"].as_str().map(|f| &f[..10]),
        Some(sunday.as_str())
    );

    let table = stdout(&with_data_and_policy(&["dora", "--env", "staging"], &ws));
    assert!(table.starts_with("DAY"), "{table}");
    assert!(table.contains(&format!("{today}  staging")), "{table}");

    let bad = with_data_and_policy(&["dora", "--window", "14d"], &ws);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("--window \"14d\": the report keeps 7d, 30d and 90d"),
        "{}",
        stderr(&bad)
    );
    server.terminate(Duration::from_secs(10));
}
