//! `shipgate analysis run` against a Prometheus stand-in answering with recorded answers of a
//! real Prometheus (`shared/tests/data/prometheus/`): each check's value, baseline and verdict,
//! and the exit code a script can act on.

#[path = "common/serve.rs"]
mod serve;

use serde_json::Value;
use serve::{json_lines, run, shipgate, stderr, stdout};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn recorded_body(name: &str) -> Value {
    testkit::fixture_json("shared", &format!("prometheus/{name}"))["body"].clone()
}

fn policy(prometheus: &str) -> String {
    format!(
        r#"
[services]
api = "acme/api"

[analysis.sources.prom]
type = "prometheus"
url = "{prometheus}"
bearer_token_var = "SHIPGATE_ANALYSIS_PROM_TOKEN"

[environments.production]
[environments.production.analysis]
[[environments.production.analysis.checks]]
name = "error-rate"
source = "prom"
query = 'sum(rate(http_requests_total{{service="{{{{service}}}}",code=~"5.."}}[1m]))'
condition = "< 0.01"

[[environments.production.analysis.checks]]
name = "p99"
source = "prom"
query = 'histogram_quantile(0.99, sum by (le) (rate(x{{service="{{{{service}}}}"}}[5m])))'
condition = "<= baseline * 1.2"
baseline = "1h"
"#
    )
}

async fn prometheus(instant: &str, range: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(recorded_body(instant)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/query_range"))
        .respond_with(ResponseTemplate::new(200).set_body_json(recorded_body(range)))
        .mount(&server)
        .await;
    server
}

fn analysis_run(policy_text: &str, token: Option<&str>) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy_text).expect("write policy");
    let mut cmd = shipgate();
    cmd.args([
        "analysis",
        "run",
        "acme/api",
        "production",
        "--json",
        "--at",
    ])
    .arg("2026-12-05T10:00:00Z")
    .arg("--policy")
    .arg(&file);
    if let Some(token) = token {
        cmd.env("SHIPGATE_ANALYSIS_PROM_TOKEN", token);
    }
    run(&mut cmd)
}

#[tokio::test]
async fn a_healthy_error_rate_passes_and_a_relative_latency_is_judged_against_its_baseline() {
    let server = prometheus("error-ratio-healthy.json", "error-ratio-range.json").await;
    let out = analysis_run(&policy(&server.uri()), Some("prom-token-cli"));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 2, "{}", stderr(&out));
    assert_eq!(lines[0]["check"], "error-rate");
    assert_eq!(lines[0]["value"], 0.005170630816959669);
    assert_eq!(lines[0]["verdict"], "pass");
    // The baseline is the mean of the recorded range (healthy, then bad); the value is the
    // healthy instant answer, well within 1.2 times it.
    let baseline = lines[1]["baseline"].as_f64().expect("baseline");
    assert!(baseline > 0.02 && baseline < 0.05, "{baseline}");
    assert_eq!(lines[1]["verdict"], "pass");
    assert!(out.status.success(), "{}", stderr(&out));
    // The queries carried the repository's service name and the token.
    for request in server.received_requests().await.unwrap_or_default() {
        assert_eq!(
            request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer prom-token-cli")
        );
        let body = String::from_utf8_lossy(&request.body);
        assert!(body.contains("service%3D%22api%22"), "{body}");
    }
}

#[tokio::test]
async fn a_bad_value_fails_and_a_missing_token_is_inconclusive_both_exit_1() {
    let server = prometheus("error-ratio-bad.json", "error-ratio-range.json").await;
    let out = analysis_run(&policy(&server.uri()), Some("prom-token-cli"));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines[0]["verdict"], "fail", "{lines:?}");
    assert_eq!(lines[0]["value"], 0.08);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let out = analysis_run(&policy(&server.uri()), None);
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines[0]["verdict"], "inconclusive");
    assert_eq!(
        lines[0]["reason"],
        "source prom: SHIPGATE_ANALYSIS_PROM_TOKEN is not set"
    );
    assert_eq!(out.status.code(), Some(1));
}
