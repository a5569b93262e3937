//! Deployments judged by their metrics: deploys go through the GitHub webhook handler as
//! GitHub drives them, a Prometheus stand-in answers the analysis queries with answers
//! recorded from a real Prometheus (`shared/tests/data/prometheus/`), and the sweeper runs the
//! checks minute by minute as the schedule would. A deploy whose error rate rises is rolled
//! back once, with the check named; a healthy one passes; a source that is down is
//! inconclusive, which the policy turns into a failure (the default) or a pass.

#[path = "common/alert_webhook.rs"]
mod common;

use common::{Harness, ALERT_TOKEN, REPO, ROLLBACK_GITHUB_ID, SHA_A, SHA_B};
use serde_json::Value;
use shipgate::config::ProcessEnv;
use shipgate::domain::deployment::State;
use shipgate::jobs::sweeper::{self, SweepReport};
use shipgate::service::analysis::Sources;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn recorded_body(name: &str) -> Value {
    testkit::fixture_json("shared", &format!("prometheus/{name}"))["body"].clone()
}

/// production: a 10-minute window, judged by the error ratio every minute, 5 samples, one
/// failure tolerated.
fn policy(prometheus: &str, extra: &str) -> String {
    format!(
        r#"
[services]
api = "{REPO}"

[analysis.sources.prom]
type = "prometheus"
url = "{prometheus}"

[environments.production]
verification_window = "10m"
rollback_on = ["critical"]
rollback = {{ method = "redeploy" }}

[environments.production.analysis]
{extra}

[[environments.production.analysis.checks]]
name = "error-rate"
source = "prom"
query = 'sum(rate(http_requests_total{{service="{{{{service}}}}",code=~"5.."}}[1m])) / sum(rate(http_requests_total{{service="{{{{service}}}}"}}[1m]))'
condition = "< 0.01"
count = 5
failure_limit = 1
"#
    )
}

/// Prometheus answering every query with the recorded answer `name`, `times` times (or for
/// good).
async fn answers(prometheus: &MockServer, name: &str, times: Option<u64>) {
    let mock = Mock::given(method("POST"))
        .and(path("/api/v1/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(recorded_body(name)));
    let mock = match times {
        Some(n) => mock.up_to_n_times(n),
        None => mock,
    };
    mock.mount(prometheus).await;
}

async fn harness(prometheus_url: &str, extra: &str) -> Harness {
    Harness::build(&policy(prometheus_url, extra), 201, ALERT_TOKEN).await
}

async fn sweep(h: &Harness) -> SweepReport {
    let http = shipgate::outbound::http_client().expect("client");
    let sources = Sources::from_policy(&h.services().policy, &ProcessEnv, &http, None);
    sweeper::sweep(h.services(), &sources).await
}

/// Sweeps once a minute for `minutes`, as the schedule would.
async fn sweep_minutes(h: &Harness, minutes: u64) -> Vec<SweepReport> {
    let mut reports = Vec::new();
    for _ in 0..minutes {
        h.advance_mins(1);
        reports.push(sweep(h).await);
    }
    reports
}

/// `SHA_A` deployed and judged healthy through its whole window: the last known good.
async fn good_first_deploy(h: &Harness, prometheus: &MockServer) -> String {
    answers(prometheus, "error-ratio-healthy.json", Some(5)).await;
    let id = h.deploy("production", SHA_A, 1001, 501).await;
    sweep_minutes(h, 11).await;
    assert_eq!(h.deployment(&id).await.state, State::Succeeded);
    prometheus.reset().await;
    id
}

fn analysis_lines(h_audit: &[shipgate::domain::deployment::AuditEvent]) -> Vec<String> {
    h_audit
        .iter()
        .filter(|e| e.what == "analysis_sample")
        .map(|e| e.why.clone())
        .collect()
}

#[tokio::test]
async fn a_deploy_whose_error_rate_rises_is_rolled_back_once_naming_the_check() {
    let prometheus = MockServer::start().await;
    let h = harness(&prometheus.uri(), "").await;
    good_first_deploy(&h, &prometheus).await;

    // Two healthy minutes, then the error ratio rises to 8%.
    answers(&prometheus, "error-ratio-healthy.json", Some(2)).await;
    answers(&prometheus, "error-ratio-bad.json", None).await;
    let id = h.deploy("production", SHA_B, 1002, 502).await;
    let before = h.deployment_events().len();
    let reports = sweep_minutes(&h, 4).await;
    // Slack hears of each sample (the message shows the checks), then of the rollback.
    let events: Vec<String> = h.deployment_events()[before..]
        .iter()
        .filter(|(d, _)| *d == id)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(
        events,
        vec!["analysis", "analysis", "analysis", "rollback_started"]
    );
    // Minutes 1-2 pass, 3 fails (tolerated), 4 fails: the second failure rolls it back.
    assert_eq!(
        reports
            .iter()
            .map(|r| r.analysis_failed.len())
            .collect::<Vec<_>>(),
        vec![0, 0, 0, 1]
    );
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::RollingBack);
    let rollback = dep.rollback.expect("rollback info");
    assert_eq!(rollback.started_by, "analysis");
    assert_eq!(rollback.target_sha, SHA_A);
    assert!(
        rollback
            .reason
            .starts_with("analysis check error-rate failed: 2 of 4 samples failed; last failing sample error-rate: 0.08 < 0.01: fail"),
        "{}",
        rollback.reason
    );
    assert_eq!(rollback.github_deployment_id, Some(ROLLBACK_GITHUB_ID));

    // The queries asked were the check's, with the deployment's facts in place.
    let asked: Vec<String> = prometheus
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let form: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&r.body).expect("form body");
            form.into_iter()
                .find(|(k, _)| k == "query")
                .map(|(_, v)| v)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert!(asked.iter().all(|q| q
        == r#"sum(rate(http_requests_total{service="api",code=~"5.."}[1m])) / sum(rate(http_requests_total{service="api"}[1m]))"#));

    // More sweeps, and more bad samples, start nothing more: one GitHub rollback deployment.
    sweep_minutes(&h, 3).await;
    let created = h.github_calls("/deployments").await;
    assert_eq!(created.len(), 1, "{created:?}");
    let body: Value = serde_json::from_slice(&created[0].body).expect("JSON");
    assert_eq!(body["ref"], SHA_A);
    assert_eq!(body["payload"]["shipgate_rollback_of"], id.as_str());

    // history carries every sample.
    let audit = h
        .services()
        .repo
        .audit_for_deployment(&id)
        .await
        .expect("audit");
    assert_eq!(
        analysis_lines(&audit),
        vec![
            "error-rate: 0.0052 < 0.01: pass",
            "error-rate: 0.0052 < 0.01: pass",
            "error-rate: 0.08 < 0.01: fail",
            "error-rate: 0.08 < 0.01: fail",
        ]
    );
}

#[tokio::test]
async fn a_healthy_deploy_passes_at_its_window_end_or_early_when_the_policy_allows() {
    let prometheus = MockServer::start().await;
    let h = harness(&prometheus.uri(), "").await;
    good_first_deploy(&h, &prometheus).await;
    answers(&prometheus, "error-ratio-healthy.json", None).await;
    let id = h.deploy("production", SHA_B, 1002, 502).await;
    sweep_minutes(&h, 6).await;
    // All five samples passed, but the window is not over.
    assert_eq!(h.deployment(&id).await.state, State::Verifying);
    sweep_minutes(&h, 5).await;
    assert_eq!(h.deployment(&id).await.state, State::Succeeded);
    assert!(h.github_calls("/deployments").await.is_empty());

    let prometheus = MockServer::start().await;
    let h = harness(&prometheus.uri(), "end_early = true").await;
    good_first_deploy(&h, &prometheus).await;
    answers(&prometheus, "error-ratio-healthy.json", None).await;
    let id = h.deploy("production", SHA_B, 1002, 502).await;
    let reports = sweep_minutes(&h, 5).await;
    assert_eq!(reports[4].analysis_passed_early, vec![id.clone()]);
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::Succeeded);
    let audit = h
        .services()
        .repo
        .audit_for_deployment(&id)
        .await
        .expect("audit");
    assert!(audit.iter().any(|e| e.what == "pass_verification"
        && e.why == "every analysis check passed; verification ended early"));
}

#[tokio::test]
async fn a_source_that_is_down_is_inconclusive_and_fails_the_deploy_unless_the_policy_passes_it() {
    let prometheus = MockServer::start().await;
    let h = harness(&prometheus.uri(), "").await;
    good_first_deploy(&h, &prometheus).await;
    // Prometheus goes down behind its load balancer, which answers 503 with a page of its own
    // (a refused connection is the same to analysis: see shared/tests/prometheus.rs).
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream connect error"))
        .mount(&prometheus)
        .await;
    let gone = prometheus.uri();
    let id = h.deploy("production", SHA_B, 1002, 502).await;
    sweep_minutes(&h, 9).await;
    // Inconclusive samples decide nothing while the window is open.
    assert_eq!(h.deployment(&id).await.state, State::Verifying);
    sweep_minutes(&h, 2).await;
    let dep = h.deployment(&id).await;
    assert_eq!(dep.state, State::RollingBack);
    let reason = dep.rollback.expect("rollback").reason;
    assert!(
        reason.starts_with(&format!(
            "analysis: the verification window ended before analysis could judge: error-rate ({gone} could not be asked: HTTP 503)"
        )),
        "{reason}"
    );

    let prometheus = MockServer::start().await;
    let h = harness(&prometheus.uri(), r#"inconclusive = "pass""#).await;
    good_first_deploy(&h, &prometheus).await;
    answers(&prometheus, "empty.json", None).await;
    let id = h.deploy("production", SHA_B, 1002, 502).await;
    sweep_minutes(&h, 11).await;
    assert_eq!(h.deployment(&id).await.state, State::Succeeded);
    let audit = h
        .services()
        .repo
        .audit_for_deployment(&id)
        .await
        .expect("audit");
    let lines = analysis_lines(&audit);
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l == "error-rate: inconclusive (the query returned no value)"));
}

#[tokio::test]
async fn a_window_that_ends_before_the_analysis_passed_does_not_pass_on_the_readers_path() {
    // A reader that meets the ended window (a new request for the scope) must not pass a
    // deployment whose analysis has not: the sweeper's analysis step decides.
    let prometheus = MockServer::start().await;
    let h = harness(&prometheus.uri(), "").await;
    good_first_deploy(&h, &prometheus).await;
    let id = h.deploy("production", SHA_B, 1002, 502).await;
    h.advance_mins(11);
    let outcome = shipgate::service::lifecycle::finish_verification(h.services(), &id)
        .await
        .expect("finish");
    assert!(
        matches!(
            outcome,
            shipgate::service::lifecycle::LifecycleOutcome::Unchanged {
                state: State::Verifying,
                ..
            }
        ),
        "{outcome:?}"
    );
}

/// Two sweeps at once (two scheduled-jobs invocations, or `serve` and `shipgate job sweeper`):
/// each slot is sampled once and the rollback starts once, on SQLite and on DynamoDB.
async fn racing_sweeps_sample_each_slot_once_and_roll_back_once(
    h: Harness,
    prometheus: MockServer,
) {
    good_first_deploy(&h, &prometheus).await;
    answers(&prometheus, "error-ratio-bad.json", None).await;
    let id = h.deploy("production", SHA_B, 1002, 502).await;
    for _ in 0..3 {
        h.advance_mins(1);
        let (a, b) = tokio::join!(sweep(&h), sweep(&h));
        assert!(a.errors.is_empty() && b.errors.is_empty(), "{a:?} {b:?}");
    }
    let samples = h.services().repo.samples(&id).await.expect("samples");
    let slots: Vec<u32> = samples.iter().map(|s| s.slot).collect();
    assert_eq!(slots, vec![1, 2], "{samples:?}");
    assert_eq!(h.deployment(&id).await.state, State::RollingBack);
    assert_eq!(h.github_calls("/deployments").await.len(), 1);
    let audit = h
        .services()
        .repo
        .audit_for_deployment(&id)
        .await
        .expect("audit");
    assert_eq!(analysis_lines(&audit).len(), 2);
    assert_eq!(
        audit.iter().filter(|e| e.what == "start_rollback").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_sweeps_sample_each_slot_once_on_sqlite() {
    let prometheus = MockServer::start().await;
    let h = harness(&prometheus.uri(), "").await;
    racing_sweeps_sample_each_slot_once_and_roll_back_once(h, prometheus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_sweeps_sample_each_slot_once_on_dynamodb() {
    let prometheus = MockServer::start().await;
    let h = Harness::build_on(
        &policy(&prometheus.uri(), ""),
        201,
        ALERT_TOKEN,
        Some(common::dynamodb_store().await),
    )
    .await;
    racing_sweeps_sample_each_slot_once_and_roll_back_once(h, prometheus).await;
}
