//! The alert routes' HTTP contract: authentication before parsing, status codes, and the real
//! payloads of each source (Alertmanager, Grafana, CloudWatch through SNS, API Gateway events).

#[path = "common/alert_webhook.rs"]
mod common;

use alert_webhook::lambda::{handle_event, is_sns, status_of};
use alert_webhook::payload::{self, AlarmSignal};
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::sns::{CloudWatchAlarmPayload, SnsEvent, SnsEventObj};
use common::*;
use serde_json::{json, Value};
use shipgate::domain::policy::Severity;
use shipgate::service::incidents::{map_labels, AlertStatus};

const DEMO_TOKEN: &str = "shipgate-demo-alert-token";

fn read_event(name: &str) -> Value {
    let bytes =
        std::fs::read(event_path(name)).unwrap_or_else(|e| panic!("reading event {name}: {e}"));
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn refuses_requests_without_the_right_bearer_token_and_records_nothing() {
    let h = Harness::new().await;
    let body = serde_json::to_vec(&alertmanager(
        "firing",
        "fp",
        labels("production", "critical", "X"),
        h.now(),
        None,
    ))
    .unwrap();
    for auth in [
        None,
        Some("Bearer wrong token"),
        Some("Basic YWxlcnQ6dG9rZW4="),
        Some("Bearer "),
    ] {
        for route in ["/webhooks/alertmanager", "/webhooks/grafana"] {
            let reply = Reply::from(
                alert_webhook::handle(&h.alerts, alert_request(route, auth, body.clone())).await,
            );
            assert_eq!(reply.status, 401, "{route} {auth:?}");
            assert_eq!(reply.body, json!({ "message": "unauthorized" }));
        }
    }
    // Authentication comes before parsing: garbage with a bad token is still a 401.
    let reply = Reply::from(
        alert_webhook::handle(
            &h.alerts,
            alert_request("/webhooks/grafana", None, b"{not json".to_vec()),
        )
        .await,
    );
    assert_eq!(reply.status, 401);
    assert!(h.all_items().await.is_empty());
    assert!(h.notifications().is_empty());
}

#[tokio::test]
async fn answers_400_for_malformed_bodies_413_for_huge_ones_and_404_elsewhere() {
    let h = Harness::new().await;
    let auth = Some(format!("Bearer {ALERT_TOKEN}"));
    let send = |route: &'static str, body: Vec<u8>| {
        let req = alert_request(route, auth.as_deref(), body);
        async { Reply::from(alert_webhook::handle(&h.alerts, req).await) }
    };

    let bad_json = send("/webhooks/alertmanager", b"{\"alerts\": [".to_vec()).await;
    assert_eq!(bad_json.status, 400, "{bad_json:?}");
    let no_alerts = send(
        "/webhooks/alertmanager",
        b"{\"status\":\"firing\"}".to_vec(),
    )
    .await;
    assert_eq!(no_alerts.status, 400);
    assert!(no_alerts.str("message").contains("alerts"), "{no_alerts:?}");
    let bad_time = send(
        "/webhooks/grafana",
        br#"{"alerts":[{"status":"firing","startsAt":"soon"}]}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (bad_time.status, bad_time.str("message")),
        (400, "alerts[0].startsAt is not an RFC 3339 timestamp")
    );
    let huge = send("/webhooks/alertmanager", vec![b' '; 1024 * 1024 + 1]).await;
    assert_eq!(huge.status, 413);
    let empty = send(
        "/webhooks/alertmanager",
        br#"{"status":"firing","alerts":[]}"#.to_vec(),
    )
    .await;
    assert_eq!(empty.status, 202);
    let elsewhere = send("/webhooks/pagerduty", b"{}".to_vec()).await;
    assert_eq!(elsewhere.status, 404);
    let get = http::Request::builder()
        .method("GET")
        .uri("/webhooks/grafana")
        .body(bytes::Bytes::new())
        .unwrap();
    assert_eq!(
        alert_webhook::handle(&h.alerts, get)
            .await
            .status()
            .as_u16(),
        405
    );
    assert!(h.all_items().await.is_empty());
}

#[test]
fn the_alertmanager_bot_fixtures_parse_into_one_alert_identity() {
    let firing = payload::alertmanager(&fixture("firing.alertmanager-bot.json")).unwrap();
    let resolved = payload::alertmanager(&fixture("resolved.alertmanager-bot.json")).unwrap();
    assert_eq!((firing.len(), resolved.len()), (1, 1));
    let (f, r) = (&firing[0], &resolved[0]);
    assert_eq!(
        (f.status, r.status),
        (AlertStatus::Firing, AlertStatus::Resolved)
    );
    assert_eq!(f.labels["alertname"], "Fire");
    assert_eq!(f.labels["severity"], "critical");
    assert_eq!(f.annotations["message"], "Something is on fire");
    // The 2018 payloads predate `fingerprint`: one is derived from the labels, the same for both.
    assert_eq!(f.fingerprint.len(), 16);
    assert_eq!(f.fingerprint, r.fingerprint);
    assert_eq!(
        f.starts_at,
        Some("2018-11-04T21:43:58.283995108Z".parse().unwrap())
    );
    assert_eq!(
        r.ends_at,
        Some("2018-11-04T21:48:13.283995108Z".parse().unwrap())
    );
    assert_eq!(
        f.link.as_deref(),
        Some("http://localhost:9090/graph?g0.expr=vector%28666%29&g0.tab=1")
    );
    assert_ne!(f.claim_key(), r.claim_key());
}

#[test]
fn the_trimmed_msteams_fixture_takes_the_group_status_and_external_url() {
    let signals = payload::alertmanager(&fixture("firing.prometheus-msteams.json")).unwrap();
    assert_eq!(signals.len(), 1);
    let s = &signals[0];
    assert_eq!(s.status, AlertStatus::Firing);
    assert_eq!(s.ends_at, None, "Go's zero time means no end");
    assert_eq!(
        s.link.as_deref(),
        Some("http://docker.for.mac.host.internal:9093")
    );
    assert_eq!(s.title(), "Server High Memory usage");
    let policy = shipgate::domain::policy::Policy::parse("p.toml", POLICY).unwrap();
    let m = map_labels(&policy, &s.labels);
    assert_eq!((m.environment, m.severity), (None, Severity::Warning));
}

#[test]
fn our_grafana_example_parses_with_fingerprints_links_and_both_statuses() {
    let signals = payload::grafana(&fixture("grafana.checkout-errors.json")).unwrap();
    assert_eq!(signals.len(), 2);
    let (firing, resolved) = (&signals[0], &signals[1]);
    assert_eq!(
        (firing.source.as_str(), firing.fingerprint.as_str()),
        ("grafana", "5e1d0a3c9b7f2468")
    );
    assert_eq!(firing.status, AlertStatus::Firing);
    assert_eq!(
        firing.link.as_deref(),
        Some("https://grafana.example.com/alerting/grafana/checkout-errors/view")
    );
    assert_eq!(firing.title(), "Checkout 5xx ratio above 5% for 3 minutes");
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(
        resolved.link.as_deref(),
        Some("https://grafana.example.com/d/checkout"),
        "empty URLs fall through"
    );
    assert_eq!(
        resolved.ends_at,
        Some("2025-06-02T09:55:00Z".parse().unwrap())
    );
    let policy = shipgate::domain::policy::Policy::parse("p.toml", POLICY).unwrap();
    let m = map_labels(&policy, &firing.labels);
    assert_eq!(
        (m.environment.as_deref(), m.service.as_deref(), m.severity),
        (Some("production"), Some("checkout"), Severity::Critical)
    );
}

#[test]
fn grafanas_documented_example_parses_into_two_firing_signals() {
    let body = fixture("webhook.grafana-docs-example.json");
    let signals = payload::grafana(&body).unwrap();
    assert_eq!(
        signals
            .iter()
            .map(|s| s.fingerprint.as_str())
            .collect::<Vec<_>>(),
        ["c6eadffa33fcdf37", "bc97ff14869b13e3"]
    );
    assert!(signals
        .iter()
        .all(|s| s.status == AlertStatus::Firing && s.ends_at.is_none()));
    assert_eq!(
        signals[0].link.as_deref(),
        Some("https://play.grafana.org/alerting/1afz29v7z/edit")
    );
}

#[test]
fn the_cloudwatch_alarm_sns_fixture_parses_and_maps() {
    let bytes = fixture("example-cloudwatch-alarm-sns-payload-single-metric.json");
    let typed: SnsEventObj<CloudWatchAlarmPayload> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(typed.records[0].sns.message.alarm_name, "EXAMPLE");
    let event: SnsEvent = serde_json::from_slice(&bytes).unwrap();
    let record = &event.records[0];

    let AlarmSignal::Signal(signal) =
        payload::cloudwatch_alarm(&record.sns.message, &record.sns.message_id).unwrap()
    else {
        panic!("ALARM must fire")
    };
    assert_eq!(
        (signal.source.as_str(), signal.status),
        ("cloudwatch", AlertStatus::Firing)
    );
    assert_eq!(
        signal.starts_at,
        Some("2015-06-03T17:43:27.123Z".parse().unwrap())
    );
    assert_eq!(signal.labels["alertname"], "EXAMPLE");
    assert_eq!(signal.labels["dimension_InstanceId"], "TestInstance");
    assert_eq!(signal.labels["namespace"], "AWS/EC2");
    assert_eq!(
        signal.claim_key(),
        "cloudwatch#95df01b4-ee98-5cb9-9903-4c221d41eb5e"
    );
    assert_eq!(signal.link, None, "the example ARN names no real region");
    assert!(signal.annotations["description"].starts_with("Threshold Crossed"));

    let ok = record
        .sns
        .message
        .replace("\"NewStateValue\": \"ALARM\"", "\"NewStateValue\": \"OK\"");
    let AlarmSignal::Signal(resolved) = payload::cloudwatch_alarm(&ok, "m2").unwrap() else {
        panic!("OK must resolve")
    };
    assert_eq!(
        (resolved.status, resolved.fingerprint.as_str()),
        (AlertStatus::Resolved, signal.fingerprint.as_str())
    );
    let unknown = record.sns.message.replace(
        "\"NewStateValue\": \"ALARM\"",
        "\"NewStateValue\": \"INSUFFICIENT_DATA\"",
    );
    assert_eq!(
        payload::cloudwatch_alarm(&unknown, "m3").unwrap(),
        AlarmSignal::Ignored {
            state: "INSUFFICIENT_DATA".into()
        }
    );
}

#[test]
fn the_sample_events_parse_into_their_lambda_types() {
    for name in [
        "apigw-alertmanager-firing.json",
        "apigw-grafana-firing.json",
    ] {
        let value = read_event(name);
        assert!(!is_sns(&value), "{name}");
        let req: ApiGatewayV2httpRequest = serde_json::from_value(value).unwrap();
        assert_eq!(req.request_context.http.method, http::Method::POST);
        assert_eq!(
            req.headers["authorization"].to_str().unwrap(),
            format!("Bearer {DEMO_TOKEN}")
        );
        let body = req.body.unwrap();
        let parsed = if name.contains("grafana") {
            payload::grafana(body.as_bytes())
        } else {
            payload::alertmanager(body.as_bytes())
        };
        assert!(!parsed.unwrap().is_empty(), "{name}");
    }
    let value = read_event("sns-cloudwatch-alarm.json");
    assert!(is_sns(&value));
    let event: SnsEvent = serde_json::from_value(value).unwrap();
    let typed: SnsEventObj<CloudWatchAlarmPayload> =
        serde_json::from_slice(&std::fs::read(event_path("sns-cloudwatch-alarm.json")).unwrap())
            .unwrap();
    assert_eq!(typed.records[0].sns.message.new_state_value, "ALARM");
    let AlarmSignal::Signal(signal) =
        payload::cloudwatch_alarm(&event.records[0].sns.message, "m").unwrap()
    else {
        panic!("the sample alarm fires")
    };
    let policy = shipgate::domain::policy::Policy::parse("p.toml", POLICY).unwrap();
    let m = map_labels(&policy, &signal.labels);
    assert_eq!(
        (m.environment.as_deref(), m.service.as_deref(), m.severity),
        (Some("production"), Some("api"), Severity::Critical)
    );
    assert_eq!(
        signal.link.as_deref(),
        Some("https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#alarmsV2:alarm/api-5xx-high")
    );
}

#[tokio::test]
async fn the_lambda_entry_point_serves_both_http_events_and_sns_notifications() {
    let h = Harness::build(POLICY, 201, DEMO_TOKEN).await;

    let am = handle_event(&h.alerts, read_event("apigw-alertmanager-firing.json"))
        .await
        .unwrap();
    assert_eq!(status_of(&am), Some(http::StatusCode::OK), "{am}");
    let body: Value = serde_json::from_str(am["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["opened"], json!(1));
    assert_eq!(am["headers"]["content-type"], json!("application/json"));

    let gf = handle_event(&h.alerts, read_event("apigw-grafana-firing.json"))
        .await
        .unwrap();
    let body: Value = serde_json::from_str(gf["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (body["opened"].clone(), body["items"][1]["effect"].clone()),
        (json!(1), json!("resolved_unknown"))
    );

    let sns = handle_event(&h.alerts, read_event("sns-cloudwatch-alarm.json"))
        .await
        .unwrap();
    assert_eq!(
        sns["ingested"]["items"][0]["effect"],
        json!("opened"),
        "{sns}"
    );
    assert_eq!(
        sns["ingested"]["items"][0]["environment"],
        json!("production")
    );
    let again = handle_event(&h.alerts, read_event("sns-cloudwatch-alarm.json"))
        .await
        .unwrap();
    assert_eq!(
        again["ingested"]["items"][0]["effect"],
        json!("duplicate"),
        "the SNS message id is the idempotency key"
    );
    assert_eq!(
        h.repo
            .open_critical_incident_ids(&testkit::scope(REPO, "production"))
            .await
            .unwrap()
            .len(),
        3
    );

    // A base64 body with a wrong token is refused like any other.
    let mut forged = read_event("apigw-grafana-firing.json");
    forged["headers"]["authorization"] = json!("Bearer guessed");
    forged["body"] = json!("eyJhbGVydHMiOltdfQ==");
    forged["isBase64Encoded"] = json!(true);
    let reply = handle_event(&h.alerts, forged).await.unwrap();
    assert_eq!(status_of(&reply), Some(http::StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn an_alert_being_processed_is_answered_503_with_retry_after_and_its_resend_is_ingested() {
    let h = Harness::new().await;
    let body = serde_json::to_vec(&alertmanager(
        "firing",
        "fp-busy",
        labels("production", "critical", "X"),
        h.now(),
        None,
    ))
    .unwrap();
    // Another delivery of the same notification holds its claim, as while it is processed.
    let signals = alert_webhook::payload::alertmanager(&body).unwrap();
    let key = signals[0].claim_key();
    let claim = h
        .repo
        .begin_event("alert", &key, h.now(), std::time::Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(claim, shipgate::store::repo::Claim::Acquired);

    let req = alert_request(
        "/webhooks/alertmanager",
        Some(&format!("Bearer {}", common::ALERT_TOKEN)),
        body.clone(),
    );
    let resp = alert_webhook::handle(&h.alerts, req).await;
    // Alertmanager sends again on a 5xx (not on a 4xx), after its group interval.
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let reply = Reply::from(resp);
    let message = reply.body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("alert fp-busy of alertmanager is being processed by another delivery; send it again later"),
        "{message}"
    );
    assert!(h
        .repo
        .open_incidents("production")
        .await
        .unwrap()
        .is_empty());

    // That attempt failed and gave its claim back: the resend is what opens the incident.
    h.repo.release_event("alert", &key).await.unwrap();
    let reply = h
        .post_alert(
            "/webhooks/alertmanager",
            &serde_json::from_slice(&body).unwrap(),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body["opened"].clone()),
        (200, json!(1)),
        "{reply:?}"
    );
}
