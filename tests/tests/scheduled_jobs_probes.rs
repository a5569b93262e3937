//! Health probes against a local HTTP server: consecutive failures open an incident through
//! the alert path, the next success resolves it.

#[path = "common/scheduled_jobs.rs"]
mod common;

use std::time::Duration;

use shipgate::domain::incident::IncidentStatus;
use shipgate::domain::policy::Severity;
use shipgate::jobs::{self, probes::ProbeState, JobName};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::{t, Harness};

fn policy(url: &str) -> String {
    format!(
        r#"
[[probes]]
name = "api-staging"
url = "{url}"
expect_status = 200
timeout = "1s"
failures_before_incident = 2
environment = "staging"

[environments.staging]
verification_window = "10m"
"#
    )
}

#[tokio::test]
async fn two_failures_in_a_row_open_an_incident_and_a_success_resolves_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/healthz"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/healthz"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let h = Harness::new(
        &policy(&format!("{}/healthz", server.uri())),
        t("2026-03-02T10:00:00Z"),
        None,
    );
    let repo = &h.svc().repo;

    let first = jobs::run(&h.ctx, JobName::HealthProbes)
        .await
        .expect("runs");
    assert!(first.ok);
    assert_eq!(
        first.summary,
        "1 probes: 0 up, 1 down: api-staging (status 503, expected 200)"
    );
    let state: ProbeState = repo
        .get_meta("probe", "api-staging")
        .await
        .expect("meta")
        .expect("state");
    assert_eq!(state.consecutive_failures, 1);
    assert!(!state.incident_open);
    assert_eq!(
        repo.get_incident("probe:api-staging").await.expect("read"),
        None
    );

    h.clock.advance(Duration::from_secs(60));
    let second = jobs::run(&h.ctx, JobName::HealthProbes)
        .await
        .expect("runs");
    assert_eq!(second.details["probes"][0]["incident"], "opened");
    let incident = repo
        .get_incident("probe:api-staging")
        .await
        .expect("read")
        .expect("incident opened");
    assert_eq!(incident.status, IncidentStatus::Open);
    assert_eq!(incident.source, "probe");
    assert_eq!(incident.severity, Severity::Critical);
    assert_eq!(incident.environment.as_deref(), Some("staging"));
    // The outage began with the first failed check.
    assert_eq!(incident.opened_at, t("2026-03-02T10:00:00Z"));

    h.clock.advance(Duration::from_secs(60));
    let third = jobs::run(&h.ctx, JobName::HealthProbes)
        .await
        .expect("runs");
    assert_eq!(third.details["probes"][0]["incident"], "resolved");
    let incident = repo
        .get_incident("probe:api-staging")
        .await
        .expect("read")
        .expect("incident");
    assert_eq!(incident.status, IncidentStatus::Resolved);
    assert_eq!(incident.resolved_at, Some(t("2026-03-02T10:02:00Z")));

    let up: Vec<f64> = h
        .ctx
        .metrics
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["ProbeUp"].as_f64())
        .collect();
    assert_eq!(up, vec![0.0, 0.0, 1.0]);
}

#[tokio::test]
async fn a_probe_that_answers_too_slowly_fails_with_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let h = Harness::new(
        &policy(&format!("{}/healthz", server.uri())),
        t("2026-03-02T10:00:00Z"),
        None,
    );
    let report = jobs::run(&h.ctx, JobName::HealthProbes)
        .await
        .expect("runs");
    let check = &report.details["probes"][0]["check"];
    assert_eq!(check["ok"], false);
    assert_eq!(check["error"], "no answer within 1s");
    assert!(check["latency_ms"].as_u64().expect("latency") < 2900);
}
