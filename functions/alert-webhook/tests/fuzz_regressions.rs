//! Hostile alert notifications, kept as plain tests beside the `alertmanager`, `grafana`,
//! `cloudwatch_alarm` and `alert_lambda_event` fuzz targets (fuzz/README.md): each must be
//! refused with an `Err`, never a panic.

use alert_webhook::lambda::{is_sns, to_http_request};
use alert_webhook::payload::{
    alertmanager, cloudwatch_alarm, grafana, key_value_pairs, parse_time,
};
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;

fn webhook(alert: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"status": "firing", "alerts": [alert]})).expect("json")
}

#[test]
fn hostile_webhook_bodies_are_refused_by_both_parsers() {
    let deep = format!(
        r#"{{"alerts":[{{"labels":{}1{}}}]}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let mut bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        b"{}".to_vec(),
        b"{\"alerts\":null}".to_vec(),
        b"{\"alerts\":[{}]}".to_vec(),
        b"\xff{\"alerts\":[]}".to_vec(),
        deep.into_bytes(),
    ];
    for alert in [
        serde_json::json!({"status": "pending"}),
        serde_json::json!({"status": "firing", "labels": {"a": 1}}),
        serde_json::json!({"status": "firing", "startsAt": "not a time"}),
        serde_json::json!({"status": "firing", "startsAt": "+10000-01-01T00:00:00Z"}),
        serde_json::json!({"status": "firing", "startsAt": "2026-02-30T00:00:00Z"}),
        serde_json::json!({"status": "firing", "endsAt": "2026-01-01T00:00:00+99:99"}),
        serde_json::json!({"status": "résolved"}),
    ] {
        bodies.push(webhook(alert));
    }
    for body in &bodies {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]);
        assert!(alertmanager(body).is_err(), "alertmanager accepted {shown}");
        assert!(grafana(body).is_err(), "grafana accepted {shown}");
    }
}

#[test]
fn timestamps_are_parsed_or_refused_whatever_the_text() {
    for text in [
        "é",
        "2026-01-01T00:00:00.",
        "2026-01-01T00:00:00.9999999999Z",
        "0001-01-0",
    ] {
        assert!(
            parse_time(Some(text), "t").is_err(),
            "{text:?} was accepted"
        );
    }
    // Go's zero time is Alertmanager's "not set".
    assert_eq!(parse_time(Some("0001-01-01T00:00:00Z"), "t").unwrap(), None);
    assert_eq!(parse_time(Some("  "), "t").unwrap(), None);
}

#[test]
fn hostile_cloudwatch_messages_are_refused() {
    // Deep nesting where a typed field is expected; inside ignored fields serde_json skips
    // nesting without recursing, so that is accepted and harmless.
    let deep = format!(
        r#"{{"AlarmName":"a","NewStateValue":"ALARM","Trigger":{{"Dimensions":{}{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    for message in [
        "",
        "plain text, not JSON",
        "{}",
        r#"{"AlarmName":"a"}"#,
        r#"{"AlarmName":7,"NewStateValue":"ALARM"}"#,
        r#"{"AlarmName":"a","NewStateValue":"ALARM","StateChangeTime":"yesterday"}"#,
        r#"{"AlarmName":"a","NewStateValue":"ALARM","Trigger":{"Dimensions":[{"name":"x"}]}}"#,
        &deep,
    ] {
        assert!(
            cloudwatch_alarm(message, "m-1").is_err(),
            "{message:?} was accepted"
        );
    }
}

#[test]
fn alarm_names_and_arns_of_any_text_make_safe_links() {
    for (name, arn) in [
        ("é=ü;;==,\u{0}", "arn:aws:cloudwatch:eu-west-1:1:alarm:x"),
        ("x", "arn:aws:cloudwatch:EU-WEST-1:1:alarm:x"),
        ("x", "arn:aws:cloudwatch:evil.example/#:1:alarm:x"),
        ("x", ":::"),
        ("x", ""),
    ] {
        let message = serde_json::json!({
            "AlarmName": name,
            "AlarmArn": arn,
            "NewStateValue": "ALARM",
        })
        .to_string();
        let signal = cloudwatch_alarm(&message, "m-1").expect("a well-formed alarm parses");
        let link = match signal {
            alert_webhook::payload::AlarmSignal::Signal(s) => s.link,
            other => panic!("expected a signal, got {other:?}"),
        };
        if let Some(link) = link {
            let host = link
                .trim_start_matches("https://")
                .split('/')
                .next()
                .unwrap();
            assert!(host.ends_with(".console.aws.amazon.com"), "{link}");
            assert!(
                !link.contains(char::is_whitespace) && link.is_ascii(),
                "{link}"
            );
        }
    }
    assert!(key_value_pairs("=,=;= \u{0}=\u{0} é=").contains_key("\u{0}"));
}

#[test]
fn api_gateway_events_with_unusable_paths_or_bodies_are_bad_requests() {
    for (path, body, base64) in [
        ("/webhooks/alertmanager", "!!!", true),
        ("/webhooks/alertmanager\u{0}", "{}", false),
        ("/web hooks", "{}", false),
        ("http://[::1", "{}", false),
    ] {
        let mut event: serde_json::Value = serde_json::from_str(include_str!(
            "../../../events/alert-webhook/apigw-alertmanager-firing.json"
        ))
        .expect("sample event is JSON");
        event["rawPath"] = path.into();
        event["requestContext"]["http"]["path"] = path.into();
        event["body"] = body.into();
        event["isBase64Encoded"] = base64.into();
        assert!(!is_sns(&event));
        let event: ApiGatewayV2httpRequest =
            serde_json::from_value(event).expect("still an API Gateway event");
        assert!(to_http_request(event).is_err(), "{path:?} was accepted");
    }
}
