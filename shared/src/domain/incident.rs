//! Incidents: one per alert fingerprint, opened by a firing alert, closed when it resolves.
//! A resolved alert that fires again opens a new [`Episode`] of the same incident: each
//! episode keeps its own start, end and blame, and restore figures count each.
//!
//! An incident's id is `{source}:{fingerprint}` ([`Incident::id_for`]); the same id is the
//! PagerDuty `dedup_key`, so the page opened by a firing alert is the one its resolution closes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::{EnvName, RepoName};
use super::policy::Severity;
use super::scope::Scope;

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
    /// The repository whose scope the incident belongs to (the one verifying in its
    /// environment when it opened); `None` for an environment-level incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepoName>,
    pub severity: Severity,
    /// The severity label as the alert carried it (absent when it carried none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_severity: Option<String>,
    pub title: String,
    pub status: IncidentStatus,
    pub opened_at: Timestamp,
    pub last_seen_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// The deployment the current episode is attributed to: the one verifying in the
    /// incident's scope when the alert began (see `docs/dora.md`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by_deployment: Option<String>,
    /// Why the current episode is, or is not, attributed to a deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
    /// Every episode, oldest first; the last is the current one (`opened_at`, `resolved_at`,
    /// `caused_by_deployment` repeat it). Empty on records written before episodes: such an
    /// incident is one episode ([`Incident::all_episodes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub episodes: Vec<Episode>,
    /// Episodes dropped from the front of `episodes` to keep the record bounded (at most
    /// [`MAX_EPISODES`] are kept: a flapping alert must not outgrow a store item).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_episodes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default)]
    pub notifications: u32,
    /// The alert's `alertname` label, when it carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_name: Option<String>,
    /// The alert's labels, kept when they named no policy environment so the labels that
    /// failed to map can be shown (see [`kept_labels`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub version: u64,
}

/// One firing of an incident's alert, from when the alert began to when it resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// When the alert began (its `startsAt`, when believable; else when it arrived).
    pub began_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// The deployment this episode is attributed to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by_deployment: Option<String>,
    /// Why it is, or is not, attributed to a deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
}

impl Episode {
    /// Seconds from its start to its resolution, once resolved.
    pub fn time_to_restore(&self) -> Option<jiff::SignedDuration> {
        self.resolved_at.map(|at| at.duration_since(self.began_at))
    }
}

/// How many episodes an incident keeps (the newest); older ones are counted in
/// `dropped_episodes`.
pub const MAX_EPISODES: usize = 50;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many of an alert's labels an incident keeps.
pub const MAX_KEPT_LABELS: usize = 32;
/// How many characters of a kept label's name or value are kept.
pub const MAX_KEPT_LABEL_CHARS: usize = 200;

/// A bounded copy of an alert's labels: the first [`MAX_KEPT_LABELS`] by name, names and
/// values cut at [`MAX_KEPT_LABEL_CHARS`] (a cut one ends with `…`).
pub fn kept_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let cut = |s: &str| match s.char_indices().nth(MAX_KEPT_LABEL_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    };
    labels
        .iter()
        .take(MAX_KEPT_LABELS)
        .map(|(k, v)| (cut(k), cut(v)))
        .collect()
}

impl Incident {
    /// The scope the incident belongs to, when it belongs to one repository.
    pub fn scope(&self) -> Option<Scope> {
        let env = EnvName::parse(self.environment.as_deref()?).ok()?;
        Some(Scope::new(self.repository.clone()?, env))
    }

    /// The stable id of the incident an alert belongs to.
    pub fn id_for(source: &str, fingerprint: &str) -> String {
        format!("{source}:{fingerprint}")
    }

    /// The time to restore of a resolved incident.
    pub fn time_to_restore(&self) -> Option<jiff::SignedDuration> {
        self.resolved_at.map(|at| at.duration_since(self.opened_at))
    }

    /// Every episode, oldest first: the stored ones, or for a record written before episodes,
    /// the one its own fields describe.
    pub fn all_episodes(&self) -> Vec<Episode> {
        if !self.episodes.is_empty() {
            return self.episodes.clone();
        }
        vec![Episode {
            began_at: self.opened_at,
            resolved_at: self.resolved_at,
            caused_by_deployment: self.caused_by_deployment.clone(),
            attribution: self.attribution.clone(),
        }]
    }

    /// Makes sure `episodes` holds the current episode (records written before episodes).
    fn ensure_episodes(&mut self) {
        if self.episodes.is_empty() {
            self.episodes = self.all_episodes();
        }
    }

    /// A repeated firing notification: refresh, and reopen a resolved incident as a new
    /// episode that began at `began` (the alert's own start, when the caller believes it;
    /// never before the previous episode's end, nor after `now`). Returns true when the
    /// incident was (re)opened by this notification.
    pub fn fired(&mut self, now: Timestamp, began: Option<Timestamp>) -> bool {
        self.last_seen_at = now;
        self.notifications = self.notifications.saturating_add(1);
        if self.status == IncidentStatus::Resolved {
            self.ensure_episodes();
            let floor = self.resolved_at.unwrap_or(self.opened_at);
            let began = began.filter(|t| *t >= floor && *t <= now).unwrap_or(now);
            self.status = IncidentStatus::Open;
            self.opened_at = began;
            self.resolved_at = None;
            self.caused_by_deployment = None;
            self.attribution = None;
            while self.episodes.len() >= MAX_EPISODES {
                self.episodes.remove(0);
                self.dropped_episodes = self.dropped_episodes.saturating_add(1);
            }
            self.episodes.push(Episode {
                began_at: began,
                resolved_at: None,
                caused_by_deployment: None,
                attribution: None,
            });
            return true;
        }
        false
    }

    /// Attributes the current episode to `deployment` (or to none), saying why.
    pub fn attribute(&mut self, deployment: Option<String>, why: String) {
        self.ensure_episodes();
        if let Some(current) = self.episodes.last_mut() {
            current.caused_by_deployment = deployment.clone();
            current.attribution = Some(why.clone());
        }
        self.caused_by_deployment = deployment;
        self.attribution = Some(why);
    }

    /// Closes the incident's current episode; returns its time to restore, or `None` when it
    /// was not open.
    pub fn resolve(&mut self, at: Timestamp) -> Option<jiff::SignedDuration> {
        if self.status != IncidentStatus::Open {
            return None;
        }
        self.ensure_episodes();
        self.status = IncidentStatus::Resolved;
        self.resolved_at = Some(at);
        if let Some(current) = self.episodes.last_mut() {
            current.resolved_at = Some(at);
        }
        Some(at.duration_since(self.opened_at))
    }

    pub fn is_open_critical(&self) -> bool {
        self.status == IncidentStatus::Open && self.severity == Severity::Critical
    }

    /// The alert's name for listings: its `alertname` label, else the incident's title.
    pub fn alert(&self) -> &str {
        self.alert_name.as_deref().unwrap_or(&self.title)
    }
}

/// A change of an incident, as its log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentChange {
    /// A firing alert opened a new incident.
    Opened,
    /// A resolved incident fired again.
    Reopened,
    /// An open incident's alert fired again.
    Updated,
    /// The alert resolved and the incident closed.
    Resolved,
}

impl IncidentChange {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentChange::Opened => "opened",
            IncidentChange::Reopened => "reopened",
            IncidentChange::Updated => "updated",
            IncidentChange::Resolved => "resolved",
        }
    }
}

/// One entry of the incident log: written in the transaction that changes the incident, read
/// by `shipgate history` beside the deployments' audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentEvent {
    /// When it happened: the incident's opening for `opened`/`reopened`, its resolution for
    /// `resolved`, the repeat notification for `updated`.
    pub at: Timestamp,
    pub incident_id: String,
    pub change: IncidentChange,
    /// `None` when the alert named no policy environment (see `raw_environment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepoName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub severity: Severity,
    /// The alert's name (see [`Incident::alert`]).
    pub alert: String,
    pub title: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by_deployment: Option<String>,
    /// Why the episode is, or is not, attributed to a deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
    /// How long the incident was open, on `resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for_secs: Option<i64>,
}

impl IncidentEvent {
    /// The log entry for `change`, just applied to `incident`.
    pub fn of(incident: &Incident, change: IncidentChange) -> Self {
        let at = match change {
            IncidentChange::Opened | IncidentChange::Reopened => incident.opened_at,
            IncidentChange::Updated => incident.last_seen_at,
            IncidentChange::Resolved => incident.resolved_at.unwrap_or(incident.last_seen_at),
        };
        let open_for_secs = match change {
            IncidentChange::Resolved => incident.time_to_restore().map(|d| d.as_secs()),
            _ => None,
        };
        IncidentEvent {
            at,
            incident_id: incident.id.clone(),
            change,
            environment: incident.environment.clone(),
            raw_environment: incident.raw_environment.clone(),
            repository: incident.repository.clone(),
            service: incident.service.clone(),
            severity: incident.severity,
            alert: incident.alert().to_string(),
            title: incident.title.clone(),
            source: incident.source.clone(),
            caused_by_deployment: incident.caused_by_deployment.clone(),
            attribution: incident.attribution.clone(),
            open_for_secs,
        }
    }
}

/// An environment's open-incident index entry: enough to decide "is a critical incident open"
/// and to list open incidents without reading each record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenIncident {
    pub id: String,
    /// The repository of a scoped incident (absent on an environment-level one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepoName>,
    pub severity: Severity,
    pub title: String,
    pub opened_at: Timestamp,
}

impl OpenIncident {
    pub fn of(incident: &Incident) -> Self {
        OpenIncident {
            id: incident.id.clone(),
            repository: incident.repository.clone(),
            severity: incident.severity,
            title: incident.title.clone(),
            opened_at: incident.opened_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(at: Timestamp) -> Incident {
        Incident {
            id: Incident::id_for("alertmanager", "abc"),
            fingerprint: "abc".into(),
            source: "alertmanager".into(),
            environment: Some("production".into()),
            raw_environment: Some("production".into()),
            service: None,
            repository: None,
            severity: Severity::Critical,
            raw_severity: Some("critical".into()),
            title: "api down".into(),
            status: IncidentStatus::Open,
            opened_at: at,
            last_seen_at: at,
            resolved_at: None,
            caused_by_deployment: None,
            attribution: None,
            episodes: Vec::new(),
            dropped_episodes: 0,
            link: None,
            notifications: 1,
            alert_name: None,
            labels: BTreeMap::new(),
            version: 0,
        }
    }

    #[test]
    fn resolving_measures_time_to_restore_once() {
        let t0: Timestamp = "2025-06-02T10:00:00Z".parse().unwrap();
        let mut inc = incident(t0);
        let t1 = t0 + jiff::SignedDuration::from_mins(12);
        assert_eq!(inc.resolve(t1), Some(jiff::SignedDuration::from_mins(12)));
        assert_eq!(
            inc.time_to_restore(),
            Some(jiff::SignedDuration::from_mins(12))
        );
        assert_eq!(inc.resolve(t1 + jiff::SignedDuration::from_mins(1)), None);
        assert!(!inc.is_open_critical());
    }

    #[test]
    fn firing_again_reopens_a_resolved_incident_from_now() {
        let t0: Timestamp = "2025-06-02T10:00:00Z".parse().unwrap();
        let mut inc = incident(t0);
        assert!(!inc.fired(t0 + jiff::SignedDuration::from_mins(1), None));
        inc.resolve(t0 + jiff::SignedDuration::from_mins(2));
        let t3 = t0 + jiff::SignedDuration::from_mins(3);
        assert!(inc.fired(t3, None));
        assert_eq!(
            (inc.status, inc.opened_at, inc.resolved_at),
            (IncidentStatus::Open, t3, None)
        );
        assert_eq!(inc.notifications, 3);
        assert_eq!(inc.id, "alertmanager:abc");
    }

    #[test]
    fn a_flapping_alert_keeps_every_episode_with_its_own_start_end_and_blame() {
        let t0: Timestamp = "2025-06-02T10:00:00Z".parse().unwrap();
        let mins = |m| t0 + jiff::SignedDuration::from_mins(m);
        let mut inc = incident(t0);
        inc.attribute(Some("dep-1".into()), "began 2m after".into());
        assert_eq!(
            inc.resolve(mins(4)),
            Some(jiff::SignedDuration::from_mins(4))
        );
        // Fires again: began at its own start (10 past), which is after the first end.
        assert!(inc.fired(mins(11), Some(mins(10))));
        assert_eq!(inc.opened_at, mins(10));
        assert_eq!(
            inc.caused_by_deployment, None,
            "a new episode is blamed afresh"
        );
        inc.attribute(None, "no deployment verifying".into());
        assert_eq!(
            inc.resolve(mins(13)),
            Some(jiff::SignedDuration::from_mins(3))
        );
        let episodes = inc.all_episodes();
        assert_eq!(episodes.len(), 2);
        assert_eq!(
            (episodes[0].began_at, episodes[0].resolved_at),
            (t0, Some(mins(4)))
        );
        assert_eq!(episodes[0].caused_by_deployment.as_deref(), Some("dep-1"));
        assert_eq!(
            (episodes[1].began_at, episodes[1].resolved_at),
            (mins(10), Some(mins(13)))
        );
        assert_eq!(episodes[1].caused_by_deployment, None);
        // A start before the previous end is not believed: the episode begins on arrival.
        assert!(inc.fired(mins(20), Some(mins(12))));
        assert_eq!(inc.opened_at, mins(20));
    }

    #[test]
    fn a_flapping_alert_keeps_its_newest_episodes_and_counts_the_rest() {
        let t0: Timestamp = "2025-06-02T10:00:00Z".parse().unwrap();
        let mut inc = incident(t0);
        for n in 1..=(MAX_EPISODES as i64 + 9) {
            inc.resolve(t0 + jiff::SignedDuration::from_mins(2 * n - 1));
            assert!(inc.fired(t0 + jiff::SignedDuration::from_mins(2 * n), None));
        }
        assert_eq!(inc.episodes.len(), MAX_EPISODES);
        assert_eq!(inc.dropped_episodes, 10);
        assert_eq!(inc.episodes.last().map(|e| e.began_at), Some(inc.opened_at));
    }

    #[test]
    fn a_record_from_before_episodes_is_one_episode() {
        let t0: Timestamp = "2025-06-02T10:00:00Z".parse().unwrap();
        let mut inc = incident(t0);
        inc.caused_by_deployment = Some("dep-9".into());
        let json = serde_json::to_value(&inc).unwrap();
        assert!(json.get("episodes").is_none());
        let back: Incident = serde_json::from_value(json).unwrap();
        let episodes = back.all_episodes();
        assert_eq!(episodes.len(), 1);
        assert_eq!(episodes[0].began_at, t0);
        assert_eq!(episodes[0].caused_by_deployment.as_deref(), Some("dep-9"));
    }

    #[test]
    fn a_resolution_logs_how_long_the_incident_was_open() {
        let t0: Timestamp = "2025-06-02T10:00:00Z".parse().unwrap();
        let mut inc = incident(t0);
        let opened = IncidentEvent::of(&inc, IncidentChange::Opened);
        assert_eq!((opened.at, opened.open_for_secs), (t0, None));
        assert_eq!(opened.alert, "api down");
        inc.resolve(t0 + jiff::SignedDuration::from_mins(12));
        let resolved = IncidentEvent::of(&inc, IncidentChange::Resolved);
        assert_eq!(resolved.at, t0 + jiff::SignedDuration::from_mins(12));
        assert_eq!(resolved.open_for_secs, Some(720));
    }

    #[test]
    fn kept_labels_are_bounded() {
        let many: BTreeMap<String, String> = (0..40)
            .map(|i| (format!("k{i:02}"), "v".repeat(300)))
            .collect();
        let kept = kept_labels(&many);
        assert_eq!(kept.len(), MAX_KEPT_LABELS);
        let value = kept.get("k00").map(String::as_str).unwrap_or_default();
        assert_eq!(value.chars().count(), MAX_KEPT_LABEL_CHARS + 1);
        assert!(value.ends_with('…'));
    }
}
