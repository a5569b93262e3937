//! The Prometheus metric source against answers recorded from a real Prometheus server
//! (`tests/data/prometheus/`, with how they were made). A wiremock server plays each answer
//! back when the request carries the recorded query parameters, so the client is held both to
//! what Prometheus answers and to what it must be asked.

use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::Value;
use shipgate::outbound::metrics::SourceError;
use shipgate::outbound::prometheus::{Prometheus, PrometheusAuth};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

fn recorded(name: &str) -> Value {
    testkit::fixture_json("shared", &format!("prometheus/{name}"))
}

/// Matches a form-encoded POST whose fields are the recorded request's parameters (times
/// compared as numbers: the client sends milliseconds).
struct SameParams(Vec<(String, String)>);

fn same_value(name: &str, sent: &str, want: &str) -> bool {
    match name {
        "time" | "start" | "end" => match (sent.parse::<f64>(), want.parse::<f64>()) {
            (Ok(a), Ok(b)) => (a - b).abs() < 1e-6,
            _ => false,
        },
        _ => sent == want,
    }
}

impl Match for SameParams {
    fn matches(&self, request: &Request) -> bool {
        let sent: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&request.body).unwrap_or_default();
        sent.len() == self.0.len()
            && self.0.iter().all(|(name, want)| {
                sent.iter()
                    .any(|(n, v)| n == name && same_value(name, v, want))
            })
    }
}

/// Serves the recorded answer `name` for its recorded request, sent as a form POST.
async fn serve(server: &MockServer, name: &str) -> Value {
    let rec = recorded(name);
    let params = rec["request"]
        .get("query")
        .or_else(|| rec["request"].get("form"))
        .and_then(Value::as_object)
        .expect("recorded parameters")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
        .collect();
    let status = rec["status"].as_u64().expect("status") as u16;
    Mock::given(method("POST"))
        .and(path(rec["request"]["path"].as_str().expect("path")))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(SameParams(params))
        .respond_with(
            ResponseTemplate::new(status)
                .insert_header("content-type", rec["content_type"].as_str().unwrap_or(""))
                .set_body_json(&rec["body"]),
        )
        .mount(server)
        .await;
    rec
}

fn param(rec: &Value, name: &str) -> String {
    let req = &rec["request"];
    req.get("query")
        .or_else(|| req.get("form"))
        .and_then(|p| p[name].as_str())
        .unwrap_or_else(|| panic!("no {name} in {req}"))
        .to_owned()
}

fn time(rec: &Value, name: &str) -> Timestamp {
    let secs: f64 = param(rec, name).parse().expect("seconds");
    Timestamp::from_millisecond((secs * 1000.0).round() as i64).expect("timestamp")
}

async fn instant(name: &str) -> Result<Option<f64>, SourceError> {
    let server = MockServer::start().await;
    let rec = serve(&server, name).await;
    let prometheus = Prometheus::new(
        shipgate::outbound::http_client().expect("client"),
        &server.uri(),
        PrometheusAuth::None,
    );
    prometheus
        .value_at(&param(&rec, "query"), time(&rec, "time"))
        .await
}

#[tokio::test]
async fn an_error_ratio_is_read_from_a_one_series_vector() {
    let healthy = instant("error-ratio-healthy.json").await.expect("answer");
    let bad = instant("error-ratio-bad.json").await.expect("answer");
    assert_eq!(healthy, Some(0.005170630816959669));
    assert_eq!(bad, Some(0.08));
    let posted = instant("error-ratio-healthy-post.json")
        .await
        .expect("answer");
    assert_eq!(posted, healthy);
    // A time with a fraction of a second is sent as such.
    let fraction = instant("error-ratio-healthy-decimal-time.json")
        .await
        .expect("answer");
    assert_eq!(fraction, Some(0.004825922095829024));
}

#[tokio::test]
async fn a_latency_quantile_is_read_from_histogram_quantile() {
    assert_eq!(
        instant("latency-p99-healthy.json").await.expect("answer"),
        Some(0.22081249999999966)
    );
    assert_eq!(
        instant("latency-p99-bad.json").await.expect("answer"),
        Some(2.33846153846154)
    );
}

#[tokio::test]
async fn no_series_and_nan_are_no_value_not_zero() {
    assert_eq!(instant("empty.json").await.expect("answer"), None);
    // 0/0: a scalar NaN; an idle ratio: a vector sample NaN.
    assert_eq!(instant("nan.json").await.expect("answer"), None);
    assert_eq!(instant("nan-vector.json").await.expect("answer"), None);
}

#[tokio::test]
async fn several_series_and_a_refused_query_are_errors_that_say_what_to_fix() {
    assert_eq!(
        instant("two-series.json").await,
        Err(SourceError::Series(2))
    );
    let refused = instant("bad-query.json").await.expect_err("a 400");
    assert_eq!(
        refused,
        SourceError::Refused {
            error_type: "bad_data".into(),
            message: "invalid parameter \"query\": 1:35: parse error: unclosed left parenthesis"
                .into()
        }
    );
    assert_eq!(
        refused.to_string(),
        "the query was refused (bad_data): invalid parameter \"query\": 1:35: parse error: unclosed left parenthesis"
    );
}

#[tokio::test]
async fn a_baseline_is_the_mean_of_a_range_query() {
    let server = MockServer::start().await;
    let rec = serve(&server, "error-ratio-range.json").await;
    let points = rec["body"]["data"]["result"][0]["values"]
        .as_array()
        .expect("points");
    let want: f64 = points
        .iter()
        .map(|p| {
            p[1].as_str()
                .expect("value")
                .parse::<f64>()
                .expect("number")
        })
        .sum::<f64>()
        / points.len() as f64;
    let prometheus = Prometheus::new(
        shipgate::outbound::http_client().expect("client"),
        &server.uri(),
        PrometheusAuth::None,
    );
    let mean = prometheus
        .mean_over(
            &param(&rec, "query"),
            time(&rec, "start"),
            time(&rec, "end"),
            Duration::from_secs(10),
        )
        .await
        .expect("answer")
        .expect("a mean");
    assert!((mean - want).abs() < 1e-12, "{mean} vs {want}");
}

#[tokio::test]
async fn credentials_are_sent_as_configured_and_never_printed() {
    let server = MockServer::start().await;
    let rec = recorded("empty.json");
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer prom-token-used-only-here"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&rec["body"]))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Basic c2hpcGdhdGU6cHJvbS1wYXNz"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&rec["body"]))
        .mount(&server)
        .await;
    let http = shipgate::outbound::http_client().expect("client");
    let bearer = PrometheusAuth::Bearer(SecretString::from("prom-token-used-only-here"));
    let basic = PrometheusAuth::Basic {
        user: "shipgate".into(),
        password: SecretString::from("prom-pass"),
    };
    assert!(
        !format!("{bearer:?}{basic:?}").contains("prom-"),
        "{bearer:?} {basic:?}"
    );
    for auth in [bearer, basic] {
        let p = Prometheus::new(http.clone(), &server.uri(), auth);
        assert_eq!(p.value_at("up", Timestamp::UNIX_EPOCH).await, Ok(None));
    }
    let none = Prometheus::new(http, &server.uri(), PrometheusAuth::None);
    // Without credentials nothing matches: wiremock answers 404 without a JSON body.
    assert!(matches!(
        none.value_at("up", Timestamp::UNIX_EPOCH).await,
        Err(SourceError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn a_source_that_is_down_or_answers_an_error_page_is_unreachable() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let http = shipgate::outbound::http_client().expect("client");
    let down = Prometheus::new(
        http.clone(),
        &format!("http://127.0.0.1:{port}"),
        PrometheusAuth::None,
    );
    match down.value_at("up", Timestamp::UNIX_EPOCH).await {
        Err(SourceError::Unreachable { url, cause }) => {
            assert_eq!(url, format!("http://127.0.0.1:{port}"));
            assert!(cause.starts_with("connection refused"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
        .mount(&server)
        .await;
    let proxy = Prometheus::new(http, &server.uri(), PrometheusAuth::None);
    assert_eq!(
        proxy.value_at("up", Timestamp::UNIX_EPOCH).await,
        Err(SourceError::Unreachable {
            url: server.uri(),
            cause: "HTTP 502".into()
        })
    );
}
