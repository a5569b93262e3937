//! The alert wire formats, parsed into [`AlertSignal`]s.
//!
//! - **Alertmanager webhook v4**: `{status, alerts: [{status, labels, annotations, startsAt,
//!   endsAt, generatorURL, fingerprint}], externalURL, ...}`. Parsing is lenient: only
//!   `alerts` is required. A missing alert `status` falls back to the notification's; a missing
//!   `fingerprint` (Alertmanager before 0.19, trimmed test payloads) is derived from the sorted
//!   labels ([`fingerprint_of_labels`]); Go's zero time `0001-01-01T00:00:00Z` means "not set".
//! - **Grafana unified alerting webhook**: the same shape plus `orgId`, `title`, `state`,
//!   `message` and per alert `values`, `silenceURL`, `dashboardURL`, `panelURL`.
//! - **CloudWatch alarm state changes via SNS**: the SNS `Message` is the alarm JSON. SNS
//!   carries no alarm tags, so labels come from a naming convention: `key=value` pairs in the
//!   alarm's `AlarmDescription` or in its name, separated by commas, semicolons or
//!   whitespace, e.g. a description `"API 5xx above 5% env=production,service=api,severity=critical"`
//!   (pairs in the description win over pairs in the name). `ALARM` fires, `OK` resolves,
//!   `INSUFFICIENT_DATA` is ignored (missing data is not an outage, nor a recovery).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;
use shipgate::domain::events::{fingerprint_of_labels, AlertSignal, AlertStatus};

/// Why a body could not be read as alerts. Messages name the field, never echo values.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not a valid {format} notification: {source}")]
    Json {
        format: &'static str,
        #[source]
        source: serde_path_to_error::Error<serde_json::Error>,
    },
    #[error("{field} is not an RFC 3339 timestamp")]
    Timestamp { field: String },
    #[error("{field}: unknown alert status (expected firing or resolved)")]
    Status { field: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody {
    #[serde(default)]
    status: Option<String>,
    alerts: Vec<WebhookAlert>,
    #[serde(default, rename = "externalURL")]
    external_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    // Grafana only.
    #[serde(default, rename = "dashboardURL")]
    dashboard_url: Option<String>,
    #[serde(default, rename = "panelURL")]
    panel_url: Option<String>,
}

fn from_json<T: serde::de::DeserializeOwned>(
    format: &'static str,
    body: &[u8],
) -> Result<T, PayloadError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|source| PayloadError::Json { format, source })
}

/// Parses an RFC 3339 timestamp; Go's zero time (and empty strings) mean "not set".
pub fn parse_time(text: Option<&str>, field: &str) -> Result<Option<Timestamp>, PayloadError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.starts_with("0001-01-01") {
        return Ok(None);
    }
    let parsed = text
        .parse::<Timestamp>()
        // CloudWatch writes offsets without a colon: `2015-06-03T17:43:27.123+0000`.
        .or_else(|_| Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.f%z", text))
        .map_err(|_| PayloadError::Timestamp {
            field: field.to_string(),
        })?;
    Ok(Some(parsed))
}

fn parse_status(text: &str, field: &str) -> Result<AlertStatus, PayloadError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "firing" => Ok(AlertStatus::Firing),
        "resolved" => Ok(AlertStatus::Resolved),
        _ => Err(PayloadError::Status {
            field: field.to_string(),
        }),
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn webhook_signals(
    source: &'static str,
    format: &'static str,
    body: &[u8],
) -> Result<Vec<AlertSignal>, PayloadError> {
    let parsed: WebhookBody = from_json(format, body)?;
    let group_status = parsed.status.clone();
    parsed
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, alert)| {
            let status_text = alert
                .status
                .as_deref()
                .or(group_status.as_deref())
                .ok_or_else(|| PayloadError::Status {
                    field: format!("alerts[{i}].status"),
                })?;
            let status = parse_status(status_text, &format!("alerts[{i}].status"))?;
            let starts_at =
                parse_time(alert.starts_at.as_deref(), &format!("alerts[{i}].startsAt"))?;
            let ends_at = parse_time(alert.ends_at.as_deref(), &format!("alerts[{i}].endsAt"))?;
            let fingerprint = non_empty(alert.fingerprint)
                .unwrap_or_else(|| fingerprint_of_labels(&alert.labels));
            let link = non_empty(alert.generator_url)
                .or_else(|| non_empty(alert.panel_url))
                .or_else(|| non_empty(alert.dashboard_url))
                .or_else(|| non_empty(parsed.external_url.clone()));
            Ok(AlertSignal {
                source: source.to_string(),
                fingerprint,
                status,
                labels: alert.labels,
                annotations: alert.annotations,
                starts_at,
                ends_at,
                link,
                delivery_key: None,
            })
        })
        .collect()
}

/// Reads an Alertmanager webhook (version 4) body.
pub fn alertmanager(body: &[u8]) -> Result<Vec<AlertSignal>, PayloadError> {
    webhook_signals("alertmanager", "Alertmanager", body)
}

/// Reads a Grafana unified-alerting webhook body.
pub fn grafana(body: &[u8]) -> Result<Vec<AlertSignal>, PayloadError> {
    webhook_signals("grafana", "Grafana", body)
}

/// The fields of a CloudWatch alarm state-change message shipgate uses. Lenient on purpose:
/// `aws_lambda_events`' own type requires every field, and composite alarms lack `Trigger`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AlarmMessage {
    alarm_name: String,
    #[serde(default)]
    alarm_description: Option<String>,
    new_state_value: String,
    #[serde(default)]
    new_state_reason: Option<String>,
    #[serde(default)]
    state_change_time: Option<String>,
    #[serde(default)]
    alarm_arn: Option<String>,
    #[serde(default, rename = "AWSAccountId")]
    account_id: Option<String>,
    #[serde(default)]
    trigger: Option<AlarmTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AlarmTrigger {
    #[serde(default)]
    metric_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    dimensions: Vec<AlarmDimension>,
}

#[derive(Debug, Deserialize)]
struct AlarmDimension {
    #[serde(alias = "Name")]
    name: String,
    #[serde(alias = "Value")]
    value: String,
}

/// What a CloudWatch alarm message turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmSignal {
    Signal(Box<AlertSignal>),
    /// `INSUFFICIENT_DATA` (or another state that is neither an alarm nor a recovery).
    Ignored {
        state: String,
    },
}

/// `key=value` pairs in free text (the CloudWatch labelling convention). Keys are lowercased;
/// tokens without `=` are prose and skipped.
pub fn key_value_pairs(text: &str) -> BTreeMap<String, String> {
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter_map(|token| token.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect()
}

/// The region code of an alarm ARN (`arn:aws:cloudwatch:eu-west-1:123:alarm:name`).
fn arn_region(arn: &str) -> Option<&str> {
    let region = arn.split(':').nth(3)?;
    (!region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    .then_some(region)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a CloudWatch alarm notification (the SNS `Message`). `message_id` is the SNS message
/// id, the notification's idempotency key.
pub fn cloudwatch_alarm(message: &str, message_id: &str) -> Result<AlarmSignal, PayloadError> {
    let alarm: AlarmMessage = from_json("CloudWatch alarm", message.as_bytes())?;
    let status = match alarm.new_state_value.as_str() {
        "ALARM" => AlertStatus::Firing,
        "OK" => AlertStatus::Resolved,
        other => {
            return Ok(AlarmSignal::Ignored {
                state: other.to_string(),
            })
        }
    };
    let changed_at = parse_time(alarm.state_change_time.as_deref(), "StateChangeTime")?;

    let mut labels = key_value_pairs(&alarm.alarm_name);
    if let Some(description) = &alarm.alarm_description {
        labels.extend(key_value_pairs(description));
    }
    labels.insert("alertname".into(), alarm.alarm_name.clone());
    if let Some(trigger) = &alarm.trigger {
        for (key, value) in [
            ("metric", &trigger.metric_name),
            ("namespace", &trigger.namespace),
        ] {
            if let Some(value) = value {
                labels.entry(key.into()).or_insert_with(|| value.clone());
            }
        }
        for d in &trigger.dimensions {
            labels.insert(format!("dimension_{}", d.name), d.value.clone());
        }
    }
    if let Some(account) = &alarm.account_id {
        labels
            .entry("aws_account".into())
            .or_insert_with(|| account.clone());
    }

    let mut annotations = BTreeMap::new();
    if let Some(reason) = non_empty(alarm.new_state_reason.clone()) {
        annotations.insert("description".to_string(), reason);
    }
    if let Some(description) = non_empty(alarm.alarm_description.clone()) {
        annotations.insert("alarm_description".to_string(), description);
    }

    // The ARN identifies the alarm across accounts and regions; the name is the fallback.
    let identity = alarm
        .alarm_arn
        .clone()
        .unwrap_or_else(|| alarm.alarm_name.clone());
    let fingerprint = fingerprint_of_labels(&BTreeMap::from([("alarm".to_string(), identity)]));
    let link = alarm.alarm_arn.as_deref().and_then(arn_region).map(|region| {
        format!(
            "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#alarmsV2:alarm/{}",
            percent_encode(&alarm.alarm_name)
        )
    });
    let (starts_at, ends_at) = match status {
        AlertStatus::Firing => (changed_at, None),
        AlertStatus::Resolved => (None, changed_at),
    };
    Ok(AlarmSignal::Signal(Box::new(AlertSignal {
        source: "cloudwatch".into(),
        fingerprint,
        status,
        labels,
        annotations,
        starts_at,
        ends_at,
        link,
        delivery_key: Some(message_id.to_string()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs_are_found_among_prose_and_separators() {
        let pairs =
            key_value_pairs("API 5xx high. Env=production,service=api; severity=critical x=");
        assert_eq!(
            pairs,
            BTreeMap::from([
                ("env".to_string(), "production".to_string()),
                ("service".to_string(), "api".to_string()),
                ("severity".to_string(), "critical".to_string()),
            ])
        );
    }

    #[test]
    fn go_zero_times_and_colonless_offsets_are_understood() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z"), "t").unwrap(), None);
        assert_eq!(
            parse_time(Some("2015-06-03T17:43:27.123+0000"), "t").unwrap(),
            Some("2015-06-03T17:43:27.123Z".parse().unwrap())
        );
        assert_eq!(
            parse_time(Some("2018-11-04T22:43:58.283995108+01:00"), "t").unwrap(),
            Some("2018-11-04T21:43:58.283995108Z".parse().unwrap())
        );
        assert!(
            matches!(parse_time(Some("yesterday"), "alerts[0].startsAt"), Err(PayloadError::Timestamp { field }) if field == "alerts[0].startsAt")
        );
    }

    #[test]
    fn an_unknown_alert_status_is_malformed() {
        let body = br#"{"alerts":[{"status":"exploded","labels":{}}]}"#;
        assert!(matches!(
            alertmanager(body),
            Err(PayloadError::Status { .. })
        ));
        let body = br#"{"alerts":[{"labels":{}}]}"#;
        assert!(matches!(
            alertmanager(body),
            Err(PayloadError::Status { .. })
        ));
    }

    #[test]
    fn alarm_links_point_at_the_console_of_the_alarm_region() {
        assert_eq!(
            arn_region("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:a b"),
            Some("eu-west-1")
        );
        assert_eq!(
            arn_region("arn:aws:cloudwatch:REGION:ACCOUNT_NUMBER:alarm:EXAMPLE"),
            None
        );
        assert_eq!(percent_encode("api 5xx/high"), "api%205xx%2Fhigh");
    }
}
