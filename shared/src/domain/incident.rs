//! Incidents: one per alert fingerprint, opened by a firing alert, closed when it resolves.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::policy::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

/// One incident, keyed by the alert's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id: the alert source plus its fingerprint. Also the PagerDuty `dedup_key`.
    pub id: String,
    pub fingerprint: String,
    /// `alertmanager`, `grafana`, `cloudwatch` or `probe`.
    pub source: String,
    /// `None` when the alert named an environment the policy does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The environment label as the alert carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub severity: Severity,
    pub title: String,
    pub status: IncidentStatus,
    pub opened_at: Timestamp,
    pub last_seen_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// The deployment that was verifying when the incident opened, if any (for change failure rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by_deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default)]
    pub notifications: u32,
    #[serde(default)]
    pub version: u64,
}

impl Incident {
    /// A repeated firing notification: refresh, and reopen a resolved incident.
    /// Returns true when the incident was (re)opened by this notification.
    pub fn fired(&mut self, now: Timestamp) -> bool {
        self.last_seen_at = now;
        self.notifications = self.notifications.saturating_add(1);
        if self.status == IncidentStatus::Resolved {
            self.status = IncidentStatus::Open;
            self.opened_at = now;
            self.resolved_at = None;
            return true;
        }
        false
    }

    /// Closes the incident; returns the time to restore, or `None` when it was not open.
    pub fn resolve(&mut self, at: Timestamp) -> Option<jiff::SignedDuration> {
        if self.status != IncidentStatus::Open {
            return None;
        }
        self.status = IncidentStatus::Resolved;
        self.resolved_at = Some(at);
        Some(at.duration_since(self.opened_at))
    }

    pub fn is_open_critical(&self) -> bool {
        self.status == IncidentStatus::Open && self.severity == Severity::Critical
    }
}
