//! Synthetic health probes: GET each policy probe's URL, record status and latency, and turn
//! a run of failures into an incident.
//!
//! A probe fails when it times out, cannot connect, or answers with a status other than its
//! `expect_status`. After `failures_before_incident` failures in a row it fires an alert
//! (source `probe`, fingerprint = probe name, severity critical) into the same incident path
//! as Alertmanager and Grafana, so it opens an incident, pages and may roll back a fresh
//! deploy; the first success after that resolves it. The run of failures is kept in
//! `META#probe` / `{name}` between ticks.

use std::collections::BTreeMap;
use std::time::Instant;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::emf::{self, Unit};
use super::{JobContext, JobError, JobOutcome};
use crate::domain::events::{AlertSignal, AlertStatus};
use crate::domain::policy::{Policy, Probe};
use crate::service::incidents;
use crate::service::{ServiceError, Services};

/// `META#` kind of a probe's state.
pub const PROBE_META: &str = "probe";

/// One check of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCheck {
    pub at: Timestamp,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed, for people (never the response body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What is remembered about a probe between ticks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeState {
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
    /// True once this run of failures fired its alert (until a success resolves it).
    #[serde(default)]
    pub incident_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<ProbeCheck>,
}

/// GETs the probe's URL once, within its timeout.
pub async fn check(http: &reqwest::Client, probe: &Probe, at: Timestamp) -> ProbeCheck {
    let started = Instant::now();
    let result = http.get(&probe.url).timeout(probe.timeout).send().await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let ok = status == probe.expect_status;
            ProbeCheck {
                at,
                ok,
                status: Some(status),
                latency_ms,
                error: (!ok).then(|| format!("status {status}, expected {}", probe.expect_status)),
            }
        }
        Err(e) => {
            let error = if e.is_timeout() {
                format!("no answer within {}s", probe.timeout.as_secs_f64())
            } else if e.is_connect() {
                "could not connect".to_string()
            } else {
                "request failed".to_string()
            };
            ProbeCheck {
                at,
                ok: false,
                status: None,
                latency_ms,
                error: Some(error),
            }
        }
    }
}

fn signal(
    policy: &Policy,
    probe: &Probe,
    status: AlertStatus,
    state: &ProbeState,
    now: Timestamp,
) -> AlertSignal {
    let mut labels = BTreeMap::new();
    let env_label = policy
        .environment_labels()
        .first()
        .cloned()
        .unwrap_or_else(|| "env".into());
    labels.insert(env_label, probe.environment.clone());
    labels.insert(policy.severity_label().to_string(), "critical".into());
    labels.insert("alertname".into(), format!("probe {}", probe.name));
    labels.insert("probe".into(), probe.name.clone());
    let mut annotations = BTreeMap::new();
    let detail = state
        .last
        .as_ref()
        .and_then(|c| c.error.clone())
        .unwrap_or_else(|| "failing".into());
    annotations.insert(
        "summary".into(),
        format!(
            "health probe {} failed {} times in a row: {detail}",
            probe.name, state.consecutive_failures
        ),
    );
    AlertSignal {
        source: "probe".into(),
        fingerprint: probe.name.clone(),
        status,
        labels,
        annotations,
        starts_at: state.failing_since,
        ends_at: (status == AlertStatus::Resolved).then_some(now),
        link: Some(probe.url.clone()),
        delivery_key: None,
    }
}

/// What one probe's tick did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub probe: String,
    pub environment: String,
    pub check: ProbeCheck,
    pub consecutive_failures: u32,
    /// `opened` or `resolved` when this tick fired or resolved the probe's alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<&'static str>,
}

/// Applies one check to a probe's stored state, firing or resolving its alert when the run of
/// failures crosses the threshold or ends.
pub async fn record(
    svc: &Services,
    probe: &Probe,
    check: ProbeCheck,
) -> Result<ProbeResult, ServiceError> {
    let now = check.at;
    let mut state: ProbeState = svc
        .repo
        .get_meta(PROBE_META, &probe.name)
        .await?
        .unwrap_or_default();
    let mut incident = None;
    if check.ok {
        let was_open = state.incident_open;
        state.consecutive_failures = 0;
        state.last = Some(check.clone());
        if was_open {
            let resolved = signal(&svc.policy, probe, AlertStatus::Resolved, &state, now);
            incidents::ingest(svc, vec![resolved]).await?;
            incident = Some("resolved");
        }
        state.incident_open = false;
        state.failing_since = None;
    } else {
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.failing_since.get_or_insert(now);
        state.last = Some(check.clone());
        if !state.incident_open
            && state.consecutive_failures >= probe.failures_before_incident.max(1)
        {
            let firing = signal(&svc.policy, probe, AlertStatus::Firing, &state, now);
            incidents::ingest(svc, vec![firing]).await?;
            state.incident_open = true;
            incident = Some("opened");
        }
    }
    svc.repo.put_meta(PROBE_META, &probe.name, &state).await?;
    Ok(ProbeResult {
        probe: probe.name.clone(),
        environment: probe.environment.clone(),
        check,
        consecutive_failures: state.consecutive_failures,
        incident,
    })
}

/// The health-probes job: every probe at once, then their states in order.
pub async fn run(ctx: &JobContext) -> Result<JobOutcome, JobError> {
    let svc = &ctx.services;
    let probes = svc.policy.probes().to_vec();
    if probes.is_empty() {
        return Ok(JobOutcome::ok(
            "no probes configured",
            serde_json::json!({ "probes": [] }),
        ));
    }
    let now = svc.now();
    let checks = futures::future::join_all(probes.iter().map(|p| check(&ctx.http, p, now))).await;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (probe, check) in probes.iter().zip(checks) {
        let dims = [
            ("Probe", probe.name.as_str()),
            ("Environment", probe.environment.as_str()),
        ];
        ctx.metrics.emit(emf::line(
            now,
            &dims,
            "ProbeUp",
            Unit::Count,
            if check.ok { 1.0 } else { 0.0 },
        ));
        ctx.metrics.emit(emf::line(
            now,
            &dims,
            "ProbeLatency",
            Unit::Milliseconds,
            check.latency_ms as f64,
        ));
        match record(svc, probe, check).await {
            Ok(r) => results.push(r),
            Err(e) => {
                tracing::error!(probe = %probe.name, error = %e, "could not record a probe result");
                errors.push(format!("{}: {e}", probe.name));
            }
        }
    }
    let down: Vec<String> = results
        .iter()
        .filter(|r| !r.check.ok)
        .map(|r| {
            format!(
                "{} ({})",
                r.probe,
                r.check.error.as_deref().unwrap_or("failing")
            )
        })
        .collect();
    let mut summary = format!(
        "{} probes: {} up, {} down",
        probes.len(),
        results.iter().filter(|r| r.check.ok).count(),
        down.len()
    );
    if !down.is_empty() {
        summary.push_str(&format!(": {}", down.join(", ")));
    }
    let details = serde_json::json!({ "probes": results, "errors": errors });
    // A probe that is down is reported through its incident, not as a failed job.
    if errors.is_empty() {
        Ok(JobOutcome::ok(summary, details))
    } else {
        Ok(JobOutcome::failed(summary, details))
    }
}
