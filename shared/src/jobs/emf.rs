//! CloudWatch Embedded Metric Format: figures as one JSON line each, which Lambda's log
//! pipeline turns into metrics without an API call (the self-hosted binary prints the same
//! lines, which are simply logs there).
//!
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde_json::{json, Map, Value};

/// The namespace every shipgate metric lives in.
pub const NAMESPACE: &str = "shipgate";

/// Every metric shipgate emits in [`NAMESPACE`], with its dimensions; [`line`] emits no
/// other name (the CloudWatch dashboard in `template.yaml` charts exactly these).
pub const METRICS: &[&str] = &[
    // The DORA report (`dora-report`), dimensions `Environment`, `Window` (`7d`, `30d`, `90d`)
    // and, per repository, `Repository`.
    "DeploymentFrequency",
    "LeadTimeForChanges",
    "ChangeFailureRate",
    "TimeToRestore",
    "FailedDeploymentRecoveryTime",
    // With the DORA report: deployments rolled back, and the median wait for approvals.
    "Rollbacks",
    "ApprovalWait",
    // Every job run, dimension `Job`.
    "JobSucceeded",
    "JobDuration",
    // Backups and restore drills, dimension `Table`.
    "BackupItems",
    "RestoreDrillRPO",
    "RestoreDrillRTO",
    // Synthetic health probes, dimensions `Probe`, `Environment`.
    "ProbeUp",
    "ProbeLatency",
];

/// CloudWatch units shipgate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
    Percent,
    CountPerSecond,
    None,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::Percent => "Percent",
            Unit::CountPerSecond => "Count/Second",
            Unit::None => "None",
        }
    }
}

/// One EMF line: a single metric with its dimensions.
pub fn line(
    at: Timestamp,
    dimensions: &[(&str, &str)],
    metric: &str,
    unit: Unit,
    value: f64,
) -> String {
    debug_assert!(METRICS.contains(&metric), "{metric} is not in emf::METRICS");
    let names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.as_millisecond(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": [{"Name": metric, "Unit": unit.as_str()}],
            }],
        }),
    );
    for (k, v) in dimensions {
        doc.insert((*k).to_string(), Value::String((*v).to_string()));
    }
    // Non-finite values are not JSON numbers; callers pass only defined figures.
    let number = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
    doc.insert(metric.to_string(), number);
    Value::Object(doc).to_string()
}

/// Where metric lines go.
#[derive(Clone, Default)]
pub enum MetricSink {
    /// Standard output, where Lambda's log agent picks EMF lines up.
    #[default]
    Stdout,
    /// Kept in memory (tests, the self-hosted binary's status page).
    Memory(Arc<Mutex<Vec<String>>>),
    Off,
}

impl MetricSink {
    pub fn memory() -> Self {
        MetricSink::Memory(Arc::new(Mutex::new(Vec::new())))
    }

    pub fn emit(&self, line: String) {
        match self {
            MetricSink::Stdout => println!("{line}"),
            MetricSink::Memory(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
            MetricSink::Off => {}
        }
    }

    /// What a [`MetricSink::Memory`] holds (empty for the others).
    pub fn lines(&self) -> Vec<String> {
        match self {
            MetricSink::Memory(lines) => lines.lock().map(|l| l.clone()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_its_metric_and_carries_dimensions_and_value_at_top_level() {
        let at: Timestamp = "2026-03-02T10:00:00Z".parse().unwrap();
        let text = line(
            at,
            &[("Environment", "production"), ("Window", "30d")],
            "LeadTimeForChanges",
            Unit::Seconds,
            5400.0,
        );
        assert!(!text.contains('\n'));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({
                "_aws": {
                    "Timestamp": 1_772_445_600_000_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "shipgate",
                        "Dimensions": [["Environment", "Window"]],
                        "Metrics": [{"Name": "LeadTimeForChanges", "Unit": "Seconds"}]
                    }]
                },
                "Environment": "production",
                "Window": "30d",
                "LeadTimeForChanges": 5400.0
            })
        );
    }

    #[test]
    fn memory_sink_keeps_lines_and_off_drops_them() {
        let sink = MetricSink::memory();
        sink.emit("a".into());
        assert_eq!(sink.lines(), vec!["a".to_string()]);
        MetricSink::Off.emit("b".into());
        assert!(MetricSink::Off.lines().is_empty());
    }
}
