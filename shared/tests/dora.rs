//! The Four Keys over hand-built histories whose answers are worked out in the comments.

use std::collections::BTreeSet;

use jiff::civil::Date;
use jiff::Timestamp;
use shipgate::domain::dora::{
    frequency_bucket, human_duration, median, report, DeployOutcome, DeploymentFact, Frequency,
    IncidentFact, Window,
};

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn dep(
    id: &str,
    env: &str,
    at: &str,
    committed: Option<&str>,
    outcome: DeployOutcome,
) -> DeploymentFact {
    DeploymentFact {
        id: id.into(),
        environment: env.into(),
        repo: Some("acme/api".into()),
        sha: format!("{id}-sha"),
        at: t(at),
        committed_at: committed.map(t),
        commit_times: Vec::new(),
        outcome,
        // A failed deployment here failed before reaching the environment; see
        // `a_deployment_that_failed_after_reaching_the_environment_still_counts`.
        reached: outcome != DeployOutcome::Failed,
        failed_at: None,
        recovered_at: None,
        approval_wait_seconds: None,
    }
}

fn inc(
    id: &str,
    env: &str,
    opened: &str,
    resolved: Option<&str>,
    caused_by: Option<&str>,
) -> IncidentFact {
    IncidentFact {
        id: id.into(),
        episode: 1,
        environment: Some(env.into()),
        repository: None,
        opened_at: t(opened),
        resolved_at: resolved.map(t),
        caused_by_deployment: caused_by.map(str::to_string),
    }
}

/// 2026-03-01 is a Sunday, so this window is exactly one Four Keys week.
fn first_week_of_march() -> Window {
    Window {
        from: t("2026-03-01T00:00:00Z"),
        to: t("2026-03-08T00:00:00Z"),
    }
}

fn week_history() -> (Vec<DeploymentFact>, Vec<IncidentFact>) {
    use DeployOutcome::*;
    let deployments = vec![
        // lead time 2h
        dep(
            "d1",
            "production",
            "2026-03-02T10:00:00Z",
            Some("2026-03-02T08:00:00Z"),
            Succeeded,
        ),
        // lead time 24h, rolled back (started 12:30, finished 12:31): a failed change,
        // recovered in 1m
        DeploymentFact {
            failed_at: Some(t("2026-03-03T12:30:00Z")),
            recovered_at: Some(t("2026-03-03T12:31:00Z")),
            ..dep(
                "d2",
                "production",
                "2026-03-03T12:00:00Z",
                Some("2026-03-02T12:00:00Z"),
                RolledBack,
            )
        },
        // lead time 30m, caused incident i1: a failed change
        dep(
            "d3",
            "production",
            "2026-03-04T09:00:00Z",
            Some("2026-03-04T08:30:00Z"),
            Succeeded,
        ),
        // failed before reaching the environment: not a deployment, not in the failure rate
        dep(
            "d4",
            "production",
            "2026-03-05T10:00:00Z",
            Some("2026-03-05T09:00:00Z"),
            Failed,
        ),
        // still verifying, commit time unknown: counts for frequency, not yet judged
        dep("d5", "production", "2026-03-06T10:00:00Z", None, Verifying),
        // other environment and outside the window: ignored
        dep(
            "s1",
            "staging",
            "2026-03-02T09:00:00Z",
            Some("2026-03-02T08:00:00Z"),
            Succeeded,
        ),
        dep(
            "old",
            "production",
            "2026-02-28T23:59:59Z",
            Some("2026-02-20T00:00:00Z"),
            RolledBack,
        ),
        // `to` is exclusive
        dep(
            "late",
            "production",
            "2026-03-08T00:00:00Z",
            Some("2026-03-07T00:00:00Z"),
            RolledBack,
        ),
    ];
    let incidents = vec![
        inc(
            "i1",
            "production",
            "2026-03-04T09:10:00Z",
            Some("2026-03-04T09:40:00Z"),
            Some("d3"),
        ),
        // no deployment caused it: counts for time to restore only
        inc(
            "i2",
            "production",
            "2026-03-06T00:00:00Z",
            Some("2026-03-06T02:00:00Z"),
            None,
        ),
        inc("i3", "production", "2026-03-07T12:00:00Z", None, None),
        inc(
            "i4",
            "staging",
            "2026-03-02T00:00:00Z",
            Some("2026-03-03T00:00:00Z"),
            None,
        ),
    ];
    (deployments, incidents)
}

#[test]
fn hand_built_week_gives_the_worked_out_four_keys() {
    let (deployments, incidents) = week_history();
    let r = report(
        "production",
        first_week_of_march(),
        &deployments,
        &incidents,
    );

    // d1, d2, d3, d5 reached production on four distinct days of one week: daily.
    assert_eq!(r.deployments, 4);
    assert_eq!(r.frequency, Some(Frequency::Daily));
    assert_eq!(r.deployments_per_day, Some(4.0 / 7.0));
    // Lead times 2h, 24h, 30m: median 2h.
    assert_eq!(r.lead_time_seconds, Some(7200.0));
    assert_eq!(r.lead_time_samples, 3);
    // Judged: d1, d2, d3 (d5 still verifying; d4 never reached production); failed: d2
    // (rolled back), d3 (incident).
    assert_eq!(r.judged_deployments, 3);
    assert_eq!(r.failed_changes, 2);
    assert_eq!(r.failed_before_reaching, 1);
    assert_eq!(r.change_failure_rate, Some(2.0 / 3.0));
    // Recovery: d2 from its rollback's start to its end, 1m; d3 from i1's start (09:10) to
    // its resolution (09:40), before the next good deploy (d5, two days later), 30m. Median
    // 15m 30s.
    assert_eq!(r.recovery_seconds, Some(930.0));
    assert_eq!((r.recovered_failures, r.unrecovered_failures), (2, 0));
    // Restored: i1 30m, i2 2h; median 1h15m. i3 still open.
    assert_eq!(r.time_to_restore_seconds, Some(4500.0));
    assert_eq!(r.restored_incidents, 2);
    assert_eq!(r.open_incidents, 1);
    assert_eq!(
        r.summary(),
        "production, last 7d: 4 deployments (daily), lead time 2h 0m, change failure rate 67%, recovery 15m 30s, time to restore 1h 15m"
    );
}

#[test]
fn an_environment_without_deployments_has_undefined_figures_not_zeros() {
    let (deployments, incidents) = week_history();
    let r = report(
        "production",
        Window {
            from: t("2026-04-01T00:00:00Z"),
            to: t("2026-04-08T00:00:00Z"),
        },
        &deployments,
        &incidents,
    );
    assert_eq!(r.deployments, 0);
    assert_eq!(r.frequency, None);
    assert_eq!(r.deployments_per_day, None);
    assert_eq!(r.lead_time_seconds, None);
    assert_eq!(r.change_failure_rate, None);
    assert_eq!(r.time_to_restore_seconds, None);
    assert_eq!(
        r.summary(),
        "production, last 7d: no deployments, lead time n/a, change failure rate n/a, recovery n/a, time to restore n/a"
    );
    let json = serde_json::to_value(&r).expect("json");
    assert!(json["change_failure_rate"].is_null());
}

#[test]
fn an_incident_without_a_deployment_counts_for_restore_time_but_not_failure_rate() {
    let deployments = vec![dep(
        "d1",
        "production",
        "2026-03-02T10:00:00Z",
        None,
        DeployOutcome::Succeeded,
    )];
    let incidents = vec![inc(
        "i1",
        "production",
        "2026-03-03T10:00:00Z",
        Some("2026-03-03T10:20:00Z"),
        None,
    )];
    let r = report(
        "production",
        first_week_of_march(),
        &deployments,
        &incidents,
    );
    assert_eq!(r.change_failure_rate, Some(0.0));
    assert_eq!(r.time_to_restore_seconds, Some(1200.0));
    // And with no deployments at all the incident still has a restore time.
    let r = report("production", first_week_of_march(), &[], &incidents);
    assert_eq!(r.deployments, 0);
    assert_eq!(r.change_failure_rate, None);
    assert_eq!(r.time_to_restore_seconds, Some(1200.0));
}

#[test]
fn a_squash_merged_change_takes_its_lead_time_from_the_merge_commit() {
    // The PR's first commit was a week earlier, but squash merging made a new commit at
    // 09:00 whose sha is what was deployed; its own timestamp is the commit time.
    let squash = DeploymentFact {
        id: "d1".into(),
        environment: "production".into(),
        repo: None,
        sha: "5qu45h".into(),
        at: t("2026-03-04T10:30:00Z"),
        committed_at: Some(t("2026-03-04T09:00:00Z")),
        commit_times: Vec::new(),
        outcome: DeployOutcome::Succeeded,
        reached: true,
        failed_at: None,
        recovered_at: None,
        approval_wait_seconds: None,
    };
    let r = report("production", first_week_of_march(), &[squash], &[]);
    assert_eq!(r.lead_time_seconds, Some(5400.0));
    assert_eq!(r.lead_time_samples, 1);
}

#[test]
fn a_commit_stamped_after_its_deployment_counts_as_zero_lead_time() {
    let skewed = dep(
        "d1",
        "production",
        "2026-03-04T10:00:00Z",
        Some("2026-03-04T10:05:00Z"),
        DeployOutcome::Succeeded,
    );
    let r = report("production", first_week_of_march(), &[skewed], &[]);
    assert_eq!(r.lead_time_seconds, Some(0.0));
}

#[test]
fn a_rolled_back_deployment_is_a_deployment_and_a_failed_change() {
    let deployments = vec![
        dep(
            "d1",
            "production",
            "2026-03-02T10:00:00Z",
            Some("2026-03-02T09:00:00Z"),
            DeployOutcome::RolledBack,
        ),
        dep(
            "d2",
            "production",
            "2026-03-02T12:00:00Z",
            Some("2026-03-02T09:00:00Z"),
            DeployOutcome::Succeeded,
        ),
    ];
    let r = report("production", first_week_of_march(), &deployments, &[]);
    assert_eq!(r.deployments, 2);
    assert_eq!(r.failed_changes, 1);
    assert_eq!(r.change_failure_rate, Some(0.5));
    // 1h and 3h: the median of an even count is the mean of the middle two.
    assert_eq!(r.lead_time_seconds, Some(7200.0));
}

#[test]
fn rollbacks_are_counted_and_approval_waits_take_their_median() {
    let waited = |id: &str, at: &str, outcome, wait: Option<u64>| DeploymentFact {
        approval_wait_seconds: wait,
        ..dep(id, "production", at, None, outcome)
    };
    let deployments = vec![
        waited(
            "d1",
            "2026-03-02T10:00:00Z",
            DeployOutcome::RolledBack,
            Some(600),
        ),
        waited(
            "d2",
            "2026-03-03T10:00:00Z",
            DeployOutcome::Succeeded,
            Some(1800),
        ),
        waited(
            "d3",
            "2026-03-04T10:00:00Z",
            DeployOutcome::RolledBack,
            None,
        ),
        waited(
            "d4",
            "2026-03-05T10:00:00Z",
            DeployOutcome::Succeeded,
            Some(120),
        ),
        // Outside the window: neither counted nor waited.
        waited(
            "d5",
            "2026-02-20T10:00:00Z",
            DeployOutcome::RolledBack,
            Some(9000),
        ),
    ];
    let r = report("production", first_week_of_march(), &deployments, &[]);
    assert_eq!(r.rolled_back, 2);
    assert_eq!(r.approval_wait_samples, 3);
    assert_eq!(r.approval_wait_seconds, Some(600.0));

    let none = report("production", first_week_of_march(), &[], &[]);
    assert_eq!((none.rolled_back, none.approval_wait_seconds), (0, None));
}

#[test]
fn a_deployment_still_verifying_is_judged_once_it_is_blamed_for_an_incident() {
    let deployments = vec![dep(
        "d1",
        "production",
        "2026-03-02T10:00:00Z",
        None,
        DeployOutcome::Verifying,
    )];
    let quiet = report("production", first_week_of_march(), &deployments, &[]);
    assert_eq!(quiet.change_failure_rate, None);
    // The incident opens after the window closes; it is still this deployment's failure.
    let incidents = vec![inc(
        "i1",
        "production",
        "2026-03-09T10:00:00Z",
        None,
        Some("d1"),
    )];
    let blamed = report(
        "production",
        first_week_of_march(),
        &deployments,
        &incidents,
    );
    assert_eq!(blamed.change_failure_rate, Some(1.0));
    assert_eq!(blamed.open_incidents, 0);
}

/// Every weekday of May's last four weeks, plus one Wednesday deploy a week before that,
/// each one hour after its commit, and one rollback in the first week of March.
fn ninety_day_history() -> Vec<DeploymentFact> {
    let mut out = Vec::new();
    let mut day: Date = "2026-03-02".parse().expect("date");
    let end: Date = "2026-05-31".parse().expect("date");
    let may_3: Date = "2026-05-03".parse().expect("date");
    while day < end {
        use jiff::civil::Weekday::*;
        let deploys = if day >= may_3 {
            !matches!(day.weekday(), Saturday | Sunday)
        } else {
            day.weekday() == Wednesday
        };
        if deploys {
            let at = format!("{day}T10:00:00Z");
            let committed = format!("{day}T09:00:00Z");
            let outcome = if day == "2026-03-04".parse::<Date>().expect("date") {
                DeployOutcome::RolledBack
            } else {
                DeployOutcome::Succeeded
            };
            out.push(dep(
                &format!("d-{day}"),
                "production",
                &at,
                Some(&committed),
                outcome,
            ));
        }
        day = day.tomorrow().expect("tomorrow");
    }
    out
}

#[test]
fn seven_thirty_and_ninety_day_windows_each_see_their_own_history() {
    let history = ninety_day_history();
    // A Sunday midnight, so the 7-day window is exactly one week.
    let now = t("2026-05-31T00:00:00Z");

    let week = report("production", Window::last_days(now, 7), &history, &[]);
    assert_eq!(week.deployments, 5);
    assert_eq!(week.frequency, Some(Frequency::Daily));
    assert_eq!(week.change_failure_rate, Some(0.0));
    assert_eq!(week.lead_time_seconds, Some(3600.0));

    // May 1–30: four full weeks of five deploy days, and a partial week (May 1–2) without.
    let month = report("production", Window::last_days(now, 30), &history, &[]);
    assert_eq!(month.deployments, 20);
    assert_eq!(month.frequency, Some(Frequency::Daily));
    assert_eq!(month.window.label(), "30d");

    // March 2 – May 30: nine weeks with one deploy day, four with five: median 1 day a
    // week is not daily, but every week had a deploy: weekly.
    let quarter = report("production", Window::last_days(now, 90), &history, &[]);
    assert_eq!(quarter.deployments, 29);
    assert_eq!(quarter.frequency, Some(Frequency::Weekly));
    assert_eq!(quarter.failed_changes, 1);
    assert_eq!(quarter.change_failure_rate, Some(1.0 / 29.0));
}

fn days(list: &[&str]) -> BTreeSet<Date> {
    list.iter().map(|d| d.parse().expect("date")).collect()
}

#[test]
fn one_deploy_a_month_is_monthly_and_one_a_quarter_is_yearly() {
    let quarter = Window::last_days(t("2026-05-31T00:00:00Z"), 90);
    assert_eq!(
        frequency_bucket(&quarter, &days(&["2026-03-10", "2026-04-14", "2026-05-12"])),
        Frequency::Monthly
    );
    assert_eq!(
        frequency_bucket(&quarter, &days(&["2026-03-10"])),
        Frequency::Yearly
    );
    // Two deploys in March only: April and May weeks outnumber March's.
    assert_eq!(
        frequency_bucket(&quarter, &days(&["2026-03-10", "2026-03-17"])),
        Frequency::Yearly
    );
}

#[test]
fn three_deploy_days_a_week_is_daily_and_two_is_weekly() {
    let week = first_week_of_march();
    assert_eq!(
        frequency_bucket(&week, &days(&["2026-03-02", "2026-03-04", "2026-03-06"])),
        Frequency::Daily
    );
    assert_eq!(
        frequency_bucket(&week, &days(&["2026-03-02", "2026-03-04"])),
        Frequency::Weekly
    );
}

#[test]
fn median_interpolates_between_the_middle_values() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0]), Some(3.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(human_duration(45.0), "45s");
    assert_eq!(human_duration(3.0 * 86_400.0 + 3600.0), "3d 1h");
}

mod job {
    //! The dora-report job over SQLite state: facts read from deployments, the audit log,
    //! commit times and incidents; one EMF line per defined metric per environment per window.

    use std::sync::Arc;

    use serde_json::{json, Value};
    use shipgate::domain::deployment::{Action, Actor, Deployment, State};
    use shipgate::domain::policy::Policy;
    use shipgate::embedded::sqlite::SqliteStore;
    use shipgate::jobs::{self, JobContext, JobName, MetricSink};
    use shipgate::notify::NotificationBody;
    use shipgate::service::lifecycle::commit_seen;
    use shipgate::service::Services;
    use shipgate::store::Repo;
    use testkit::ManualClock;
    use testkit::RecordingPublisher;

    use super::t;

    const POLICY: &str = "[environments.production]\nverification_window = \"15m\"\n";

    #[tokio::test]
    async fn the_report_job_reads_state_and_emits_one_line_per_metric_and_window() {
        let now = t("2026-03-08T00:00:00Z");
        let published = RecordingPublisher::default();
        let svc = Services {
            repo: Repo::new(Arc::new(SqliteStore::in_memory().expect("sqlite"))),
            policy: Arc::new(Policy::parse("p.toml", POLICY).expect("policy")),
            github: None,
            publisher: Arc::new(published.clone()),
            clock: Arc::new(ManualClock::new(now)),
            policy_source: None,
        };
        // One deploy in 30 days would be "yearly" by the Four Keys rule (most weeks, and most
        // weeks' months, had none), but the data began the day of that deploy: over the six
        // days since, every week (the one) had a deployment, so it is weekly.
        // Requested 09:00, went out (begin_verification) 10:00, commit at 08:00: lead time 2h.
        let created = t("2026-03-02T09:00:00Z");
        let mut dep: Deployment = serde_json::from_value(json!({
            "id": "dep-1", "repo": "acme/api", "environment": "production",
            "git_ref": "refs/heads/main", "sha": "5a11ab1e", "requester": "octocat",
            "kind": "deploy", "state": "deploying", "version": 0,
            "created_at": created, "updated_at": created,
            // Approved 20 minutes after the request: the approval wait.
            "approvals_required": 1,
            "approvals": [{ "approver": "U0APPROV1", "at": "2026-03-02T09:20:00Z" }],
        }))
        .expect("deployment");
        svc.repo
            .create_deployment(&mut dep, &[], created)
            .await
            .expect("create");
        let went_out = t("2026-03-02T10:00:00Z");
        let event = dep
            .apply(
                Action::BeginVerification,
                went_out,
                &Actor::system(),
                "success",
            )
            .expect("legal");
        dep.apply(
            Action::PassVerification,
            t("2026-03-02T10:15:00Z"),
            &Actor::system(),
            "quiet",
        )
        .expect("legal");
        assert_eq!(dep.state, State::Succeeded);
        svc.repo
            .save_deployment(&mut dep, &[event])
            .await
            .expect("save");
        commit_seen(
            &svc,
            &"acme/api".parse().unwrap(),
            &"5a11ab1e".parse().unwrap(),
            t("2026-03-02T08:00:00Z"),
        )
        .await
        .expect("commit");

        let ctx = JobContext::new(svc, reqwest::Client::new()).with_metrics(MetricSink::memory());
        let report = jobs::run(&ctx, JobName::DoraReport).await.expect("runs");
        assert!(report.ok);
        assert_eq!(
            report.summary,
            "production, last 30d: 1 deployment (weekly), lead time 2h 0m, change failure rate 0%, recovery n/a, time to restore n/a"
        );

        let lines: Vec<Value> = ctx
            .metrics
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).expect("json"))
            .filter(|v: &Value| v.get("Window").is_some())
            .collect();
        // Three windows × (frequency, rollbacks, approval wait, lead time, failure rate); time
        // to restore is undefined.
        assert_eq!(lines.len(), 15);
        let in_30d = |metric: &str| {
            lines
                .iter()
                .find(|v| v["Window"] == "30d" && v.get(metric).is_some())
                .map(|v| v[metric].clone())
                .unwrap_or_else(|| panic!("no {metric} line"))
        };
        assert_eq!(in_30d("ApprovalWait"), 1200.0);
        assert_eq!(in_30d("Rollbacks"), 0.0);
        let lead_30d = lines
            .iter()
            .find(|v| v["Window"] == "30d" && v.get("LeadTimeForChanges").is_some())
            .expect("lead time line");
        assert_eq!(lead_30d["LeadTimeForChanges"], 7200.0);
        assert_eq!(lead_30d["Environment"], "production");
        assert_eq!(
            lead_30d["_aws"]["CloudWatchMetrics"][0],
            json!({
                "Namespace": "shipgate",
                "Dimensions": [["Environment", "Window"]],
                "Metrics": [{"Name": "LeadTimeForChanges", "Unit": "Seconds"}]
            })
        );
        assert!(!lines.iter().any(|v| v.get("TimeToRestore").is_some()));

        let announced = published
            .taken()
            .into_iter()
            .any(|n| matches!(n.body, NotificationBody::Job { ref job, ok: true, .. } if job == "dora-report"));
        assert!(announced);
        let stored: Value = ctx
            .services
            .repo
            .get_meta("dora", "production")
            .await
            .expect("meta")
            .expect("stored");
        assert_eq!(stored.as_array().map(Vec::len), Some(3));
    }
}

#[test]
fn each_repository_gets_its_own_keys_and_the_environment_rolls_them_up() {
    let api_ok = dep(
        "a1",
        "production",
        "2026-03-02T10:00:00Z",
        None,
        DeployOutcome::Succeeded,
    );
    let api_bad = dep(
        "a2",
        "production",
        "2026-03-03T10:00:00Z",
        None,
        DeployOutcome::RolledBack,
    );
    let web_ok = DeploymentFact {
        repo: Some("acme/web".into()),
        ..dep(
            "w1",
            "production",
            "2026-03-03T11:00:00Z",
            None,
            DeployOutcome::Succeeded,
        )
    };
    let api_incident = IncidentFact {
        repository: Some("acme/api".into()),
        ..inc(
            "i-api",
            "production",
            "2026-03-03T10:05:00Z",
            Some("2026-03-03T10:25:00Z"),
            Some("a2"),
        )
    };
    let shared = inc(
        "i-env",
        "production",
        "2026-03-04T10:00:00Z",
        Some("2026-03-04T11:00:00Z"),
        None,
    );
    let deployments = [api_ok, api_bad, web_ok];
    let incidents = [api_incident, shared];
    let week = first_week_of_march();

    let api = shipgate::domain::dora::report_for(
        "production",
        Some("acme/api"),
        week,
        &deployments,
        &incidents,
    );
    assert_eq!(api.repo.as_deref(), Some("acme/api"));
    assert_eq!((api.deployments, api.failed_changes), (2, 1));
    assert_eq!(api.restored_incidents, 1);
    assert_eq!(api.time_to_restore_seconds, Some(1200.0));

    let web = shipgate::domain::dora::report_for(
        "production",
        Some("acme/web"),
        week,
        &deployments,
        &incidents,
    );
    assert_eq!((web.deployments, web.failed_changes), (1, 0));
    assert_eq!(web.restored_incidents, 0);

    let all = report("production", week, &deployments, &incidents);
    assert_eq!(all.repo, None);
    assert_eq!((all.deployments, all.failed_changes), (3, 1));
    assert_eq!(all.restored_incidents, 2);
    assert!(all.summary().starts_with("production, last 7d"));
    assert!(api.summary().starts_with("acme/api · production, last 7d"));
}

#[test]
fn a_deployment_that_failed_after_reaching_the_environment_still_counts() {
    // d1 reached production at 10:00 (a `success` status) and a `failure` status followed at
    // 10:20; the fix d2 went out at 11:00. d0 failed before ever reaching production.
    let failed_after = DeploymentFact {
        reached: true,
        failed_at: Some(t("2026-03-02T10:20:00Z")),
        ..dep(
            "d1",
            "production",
            "2026-03-02T10:00:00Z",
            Some("2026-03-02T09:00:00Z"),
            DeployOutcome::Failed,
        )
    };
    let never_reached = dep(
        "d0",
        "production",
        "2026-03-02T09:30:00Z",
        Some("2026-03-02T09:00:00Z"),
        DeployOutcome::Failed,
    );
    let fix = dep(
        "d2",
        "production",
        "2026-03-02T11:00:00Z",
        Some("2026-03-02T10:40:00Z"),
        DeployOutcome::Succeeded,
    );
    let r = report(
        "production",
        first_week_of_march(),
        &[never_reached, failed_after, fix],
        &[],
    );
    assert_eq!(
        r.deployments, 2,
        "d1 reached production, so it is a deployment"
    );
    assert_eq!(r.failed_before_reaching, 1);
    // Lead times 1h (d1) and 20m (d2).
    assert_eq!(r.lead_time_samples, 2);
    assert_eq!(r.lead_time_seconds, Some(2400.0));
    assert_eq!((r.judged_deployments, r.failed_changes), (2, 1));
    // Recovered when the fix went out: 10:20 → 11:00.
    assert_eq!(r.recovery_seconds, Some(2400.0));
}

#[test]
fn lead_time_is_the_median_over_every_commit_a_deployment_first_carried() {
    // A merge of three commits made at 08:00, 09:00 and 09:50, deployed at 10:00: lead times
    // 2h, 1h and 10m; median 1h. The head commit alone would say 10m.
    let merged = DeploymentFact {
        commit_times: vec![
            t("2026-03-02T08:00:00Z"),
            t("2026-03-02T09:00:00Z"),
            t("2026-03-02T09:50:00Z"),
        ],
        ..dep(
            "d1",
            "production",
            "2026-03-02T10:00:00Z",
            Some("2026-03-02T09:50:00Z"),
            DeployOutcome::Succeeded,
        )
    };
    let r = report("production", first_week_of_march(), &[merged], &[]);
    assert_eq!(r.lead_time_samples, 3);
    assert_eq!(r.lead_time_seconds, Some(3600.0));
}

#[test]
fn frequency_on_young_data_is_judged_since_the_data_began() {
    // Five deployments today, on data that began this morning: weekly (the one week there is
    // data for had a deployment; one deploy day is not three), not "yearly" because 29 of
    // the 30 days before had no data to deploy from.
    let now = t("2026-03-04T18:00:00Z");
    let today: Vec<DeploymentFact> = (0..5)
        .map(|i| {
            dep(
                &format!("d{i}"),
                "production",
                &format!("2026-03-04T1{i}:00:00Z"),
                None,
                DeployOutcome::Succeeded,
            )
        })
        .collect();
    let window = Window::last_days(now, 30);
    let whole = report("production", window, &today, &[]);
    assert_eq!(whole.frequency, Some(Frequency::Yearly));
    let young = shipgate::domain::dora::report_scoped(
        "production",
        None,
        window,
        &today,
        &[],
        Some(t("2026-03-04T09:00:00Z")),
    );
    assert_eq!(young.frequency, Some(Frequency::Weekly));
    assert_eq!(young.data_began, Some(t("2026-03-04T09:00:00Z")));
    // Five deployments over the one (part) day since the data began.
    assert_eq!(young.deployments_per_day, Some(5.0));
}
