//! Alert notifications per second on one core: authentication, parse and decision, in memory.
//!
//! One iteration is what the function does for a notification before the incident store:
//!
//! - Alertmanager and Grafana (HTTP): `verify_bearer` on the `Authorization` header, then
//!   `payload::alertmanager` / `payload::grafana`.
//! - CloudWatch via SNS: the Lambda event is read as JSON, recognised as SNS (`is_sns`), turned
//!   into an `SnsEvent`, and each record's message goes through `payload::cloudwatch_alarm`.
//!   SNS deliveries are authenticated by Lambda's invoke permission, so there is no signature
//!   to check in the function.
//!
//! For every signal the decision is then the part of `incidents::ingest` that needs no store:
//! the idempotency key (`claim_key`), the policy's label mapping (`map_labels`: environment,
//! service, canonical severity), the title, and whether a firing alert of that severity rolls
//! the environment back (`rolls_back_on`). Bodies are the repository's `events/alert-webhook`
//! samples (Alertmanager 0.9 KB with one alert, Grafana 1.7 KB with two, SNS event 1.9 KB).
//!
//! Run: `cargo bench -p alert-webhook --bench inbound`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use alert_webhook::lambda::is_sns;
use alert_webhook::payload::{self, AlarmSignal};
use aws_lambda_events::sns::SnsEvent;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use secrecy::SecretString;
use shipgate::domain::policy::Policy;
use shipgate::service::incidents::{map_labels, AlertSignal, AlertStatus};
use shipgate::signature::verify_bearer;

const TOKEN: &str = "shipgate-bench-alert-token";

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/alert-webhook")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn apigw_body(path: &Path) -> Vec<u8> {
    let event: serde_json::Value =
        serde_json::from_slice(&read(path)).expect("event sample is JSON");
    event["body"]
        .as_str()
        .expect("event sample has a string body")
        .as_bytes()
        .to_vec()
}

/// The store-free part of ingesting one signal; returns something derived from all of it.
fn decide(policy: &Policy, signal: &AlertSignal) -> usize {
    let key = signal.claim_key();
    let mapping = map_labels(policy, &signal.labels);
    let rolls_back = signal.status == AlertStatus::Firing
        && mapping
            .environment
            .as_deref()
            .and_then(|env| policy.environment(env))
            .is_some_and(|env| env.rolls_back_on(mapping.severity));
    key.len() + signal.title().len() + usize::from(rolls_back)
}

fn inbound(c: &mut Criterion) {
    let token = SecretString::from(TOKEN.to_string());
    let authorization = format!("Bearer {TOKEN}");
    let policy = Policy::example().expect("example policy parses");
    let dir = events_dir();
    let alertmanager = apigw_body(&dir.join("apigw-alertmanager-firing.json"));
    let grafana = apigw_body(&dir.join("apigw-grafana-firing.json"));
    let sns = read(&dir.join("sns-cloudwatch-alarm.json"));

    let http = |parse: fn(&[u8]) -> Result<Vec<AlertSignal>, payload::PayloadError>,
                body: &[u8]|
     -> usize {
        verify_bearer(&token, Some(&authorization)).expect("token verifies");
        let signals = parse(body).expect("notification parses");
        signals.iter().map(|s| decide(&policy, s)).sum()
    };
    let cloudwatch = |body: &[u8]| -> usize {
        let value: serde_json::Value = serde_json::from_slice(body).expect("event is JSON");
        assert!(is_sns(&value), "event is an SNS delivery");
        let event: SnsEvent = serde_json::from_value(value).expect("SNS event");
        event
            .records
            .iter()
            .map(
                |r| match payload::cloudwatch_alarm(&r.sns.message, &r.sns.message_id) {
                    Ok(AlarmSignal::Signal(signal)) => decide(&policy, &signal),
                    other => panic!("alarm should fire, got {other:?}"),
                },
            )
            .sum()
    };

    // The samples must take the full path: signals that map onto a known environment.
    for signals in [
        payload::alertmanager(&alertmanager).expect("alertmanager parses"),
        payload::grafana(&grafana).expect("grafana parses"),
    ] {
        assert!(!signals.is_empty());
        assert!(signals
            .iter()
            .all(|s| map_labels(&policy, &s.labels).environment.is_some()));
    }
    assert!(cloudwatch(&sns) > 0);

    let mut group = c.benchmark_group("alert_inbound");
    group.throughput(Throughput::Elements(1));
    group.bench_function("alertmanager/0.9KB", |b| {
        b.iter(|| http(payload::alertmanager, black_box(alertmanager.as_slice())))
    });
    group.bench_function("grafana/1.7KB", |b| {
        b.iter(|| http(payload::grafana, black_box(grafana.as_slice())))
    });
    group.bench_function("cloudwatch_sns/1.9KB", |b| {
        b.iter(|| cloudwatch(black_box(sns.as_slice())))
    });
    group.finish();
}

criterion_group!(benches, inbound);
criterion_main!(benches);
