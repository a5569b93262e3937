//! Every sample in `events/scheduled-jobs` parses into the job it names, and a tick delivered
//! twice runs its job once.

#[path = "common/scheduled_jobs.rs"]
mod common;

use scheduled_jobs::{handle, parse_event, EventError, HandlerError, JobRequest};
use serde_json::Value;
use shipgate::jobs::JobName;

use common::{t, Harness};

fn sample(name: &str) -> Value {
    let path = testkit::event_path("scheduled-jobs", name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const POLICY: &str = "[environments.staging]\n";

#[test]
fn every_schedule_input_in_the_template_names_its_job() {
    for job in JobName::ALL {
        let request = parse_event(&sample(&format!("{job}.json"))).expect("parses");
        assert_eq!(request, JobRequest { job, tick: None });
    }
}

#[test]
fn a_full_scheduled_event_names_its_job_in_detail_and_its_tick_in_time() {
    let request = parse_event(&sample("scheduled-event.sweeper.json")).expect("parses");
    assert_eq!(
        request,
        JobRequest {
            job: JobName::Sweeper,
            tick: Some("2026-03-02T10:05:00Z".into())
        }
    );
}

#[test]
fn an_eventbridge_scheduler_input_carries_its_scheduled_time() {
    let request = parse_event(&sample("scheduler-input.dora-report.json")).expect("parses");
    assert_eq!(request.job, JobName::DoraReport);
    assert_eq!(request.tick.as_deref(), Some("2026-03-02T06:00:00Z"));
}

#[test]
fn an_unknown_job_is_refused_with_the_list_of_names() {
    let err = parse_event(&serde_json::json!({"job": "backups"})).expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown job \"backups\"; expected one of: backup, restore-drill, rollback-drill, dora-report, sweeper, health-probes, migrate"
    );
    // The scheduled-event fixture from the runtime's own tests has an empty detail.
    let bare = serde_json::json!({"detail-type": "Scheduled Event", "time": "2015-10-08T16:53:06Z", "detail": {}});
    assert!(matches!(parse_event(&bare), Err(EventError::NoJob)));
    assert!(matches!(
        parse_event(&serde_json::json!({"job": 3})),
        Err(EventError::JobNotAString)
    ));
}

#[tokio::test]
async fn the_same_tick_delivered_twice_runs_its_job_once() {
    let h = Harness::new(POLICY, t("2026-03-02T10:05:00Z"), None);
    let event = sample("scheduled-event.sweeper.json");
    let first = handle(&h.ctx, &event, Some("req-1")).await.expect("runs");
    assert!(!first.duplicate);
    assert_eq!(first.scheduled_for.as_deref(), Some("2026-03-02T10:05:00Z"));
    // A retry of the same event (another request id) is still the same tick.
    let second = handle(&h.ctx, &event, Some("req-2")).await.expect("runs");
    assert!(second.duplicate);

    // A bare input is deduplicated by the invocation's request id.
    let bare = sample("sweeper.json");
    let a = handle(&h.ctx, &bare, Some("req-3")).await.expect("runs");
    let b = handle(&h.ctx, &bare, Some("req-3")).await.expect("runs");
    let c = handle(&h.ctx, &bare, Some("req-4")).await.expect("runs");
    assert!(!a.duplicate && b.duplicate && !c.duplicate);
}

#[tokio::test]
async fn a_job_that_cannot_run_fails_the_invocation() {
    let h = Harness::new(POLICY, t("2026-03-02T10:05:00Z"), None);
    let err = handle(&h.ctx, &sample("backup.json"), Some("req-1"))
        .await
        .expect_err("backups are not configured");
    assert!(matches!(err, HandlerError::Job(_)), "{err}");
}
