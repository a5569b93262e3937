//! `shipgate incidents`: the open incidents and the ones resolved lately, one line each, from
//! every policy environment and from the alerts that named no policy environment (kept under
//! the pseudo-environment [`UNKNOWN_ENVIRONMENT`] with their labels). Also the incident
//! helpers `status` and `history` share.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::{json, Value};
use shipgate::domain::dora::human_duration;
use shipgate::domain::incident::{Episode, Incident, IncidentStatus};
use shipgate::domain::policy::{Policy, Severity};
use shipgate::domain::RepoName;
use shipgate::store::repo::UNKNOWN_ENVIRONMENT;
use shipgate::store::Repo;
use shipgate_cli::error::CliError;
use shipgate_cli::state::State;

use crate::output::{emit, parse_repo, table, time};

/// How long after its resolution an incident is still listed without `--since` or `--all`.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct IncidentsOptions {
    pub state: State,
    pub policy_file: Option<PathBuf>,
    pub environment: Option<String>,
    pub repo: Option<String>,
    /// Every incident ever recorded, not only the open and recent ones.
    pub all: bool,
    /// List incidents resolved this recently (default [`DEFAULT_SINCE`]).
    pub since: Option<Duration>,
    pub json: bool,
}

/// `--since`: `30m`, `12h`, `7d`, `1d12h`.
pub fn parse_since(s: &str) -> Result<Duration, String> {
    shipgate::domain::policy::parse_duration(s)
}

/// One incident timeline to read; `raw` keeps only the incidents whose environment label
/// was that (for the pseudo-environment of unmapped alerts).
pub(crate) struct Source {
    pub(crate) environment: String,
    raw: Option<String>,
}

impl Source {
    fn all(environment: &str) -> Source {
        Source {
            environment: environment.to_string(),
            raw: None,
        }
    }

    /// Whether an incident (or log entry) with this environment label belongs here.
    pub(crate) fn keeps(&self, raw_environment: Option<&str>) -> bool {
        self.raw
            .as_deref()
            .is_none_or(|raw| raw_environment == Some(raw))
    }
}

/// The incident timelines to read: with `--env E`, E's and the unmapped alerts that named E;
/// without, each of `environments` (the policy's) and every unmapped alert.
pub(crate) fn incident_sources(given: Option<&str>, environments: &[String]) -> Vec<Source> {
    match given {
        Some(UNKNOWN_ENVIRONMENT) => vec![Source::all(UNKNOWN_ENVIRONMENT)],
        Some(env) => vec![
            Source::all(env),
            Source {
                environment: UNKNOWN_ENVIRONMENT.to_string(),
                raw: Some(env.to_string()),
            },
        ],
        None => environments
            .iter()
            .map(|e| Source::all(e))
            .chain([Source::all(UNKNOWN_ENVIRONMENT)])
            .collect(),
    }
}

/// An incident's environment for a table: the policy's, or the label it failed to map.
pub(crate) fn environment_cell(environment: Option<&str>, raw: Option<&str>) -> String {
    match (environment, raw) {
        (Some(env), _) => env.to_string(),
        (None, Some(raw)) => format!("{raw} (not in policy)"),
        (None, None) => "(no environment label)".to_string(),
    }
}

/// An incident's repository for a table, else the service the policy could not route.
pub(crate) fn repository_cell(repository: Option<&RepoName>, service: Option<&str>) -> String {
    match (repository, service) {
        (Some(repo), _) => repo.to_string(),
        (None, Some(service)) => format!("service {service}"),
        (None, None) => "-".to_string(),
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub(crate) fn open_for(secs: i64) -> String {
    human_duration(secs as f64)
}

/// `k=v, k=v`, or `not recorded` for an incident stored without them.
pub(crate) fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "not recorded".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an incident's labels did not map onto the policy: its environment label and, when
/// that failed too, its severity label.
pub(crate) fn unmapped_reasons(incident: &Incident, policy: &Policy) -> Vec<String> {
    let mut reasons = Vec::new();
    if incident.environment.is_none() {
        reasons.push(match incident.raw_environment.as_deref() {
            Some(raw) if policy.environment(raw).is_some() => {
                format!("environment label {raw:?} was not in the policy when the alert came")
            }
            Some(raw) => format!("environment label {raw:?} is not a policy environment"),
            None => format!(
                "no environment label ({})",
                policy.environment_labels().join(" or ")
            ),
        });
    }
    match incident.raw_severity.as_deref() {
        Some(raw) if policy.canonical_severity(raw).is_none() => reasons.push(format!(
            "severity label {raw:?} is not in the severity map (counted as {})",
            incident.severity
        )),
        Some(_) => {}
        None => reasons.push(format!(
            "no severity label {:?} (counted as {})",
            policy.severity_label(),
            incident.severity
        )),
    }
    reasons
}

/// The open incidents of alerts that named no policy environment.
pub(crate) async fn open_outside_policy(repo: &Repo) -> Result<Vec<Incident>, CliError> {
    let mut open = Vec::new();
    for entry in repo.open_incidents(UNKNOWN_ENVIRONMENT).await? {
        if let Some(incident) = repo.get_incident(&entry.id).await? {
            if incident.status == IncidentStatus::Open {
                open.push(incident);
            }
        }
    }
    open.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
    Ok(open)
}

/// What `status --json` says about an incident outside the policy.
pub(crate) fn outside_policy_json(incident: &Incident, policy: &Policy) -> Value {
    json!({
        "id": incident.id,
        "severity": incident.severity,
        "alert": incident.alert(),
        "title": incident.title,
        "source": incident.source,
        "opened_at": incident.opened_at,
        "raw_environment": incident.raw_environment,
        "raw_severity": incident.raw_severity,
        "service": incident.service,
        "labels": incident.labels,
        "reasons": unmapped_reasons(incident, policy),
    })
}

/// One `--json` line of `shipgate incidents`.
#[derive(Serialize)]
struct IncidentLine<'a> {
    id: &'a str,
    state: IncidentStatus,
    severity: Severity,
    raw_severity: Option<&'a str>,
    environment: Option<&'a str>,
    raw_environment: Option<&'a str>,
    repository: Option<&'a RepoName>,
    service: Option<&'a str>,
    alert: &'a str,
    title: &'a str,
    source: &'a str,
    opened_at: Timestamp,
    last_seen_at: Timestamp,
    resolved_at: Option<Timestamp>,
    open_for_secs: Option<i64>,
    caused_by_deployment: Option<&'a str>,
    attribution: Option<&'a str>,
    /// Every episode (a resolved alert that fired again is a new one), oldest first.
    episodes: Vec<Episode>,
    link: Option<&'a str>,
    notifications: u32,
    labels: &'a BTreeMap<String, String>,
}

impl<'a> IncidentLine<'a> {
    fn of(i: &'a Incident) -> Self {
        IncidentLine {
            id: &i.id,
            state: i.status,
            severity: i.severity,
            raw_severity: i.raw_severity.as_deref(),
            environment: i.environment.as_deref(),
            raw_environment: i.raw_environment.as_deref(),
            repository: i.repository.as_ref(),
            service: i.service.as_deref(),
            alert: i.alert(),
            title: &i.title,
            source: &i.source,
            opened_at: i.opened_at,
            last_seen_at: i.last_seen_at,
            resolved_at: i.resolved_at,
            open_for_secs: i.time_to_restore().map(|d| d.as_secs()),
            caused_by_deployment: i.caused_by_deployment.as_deref(),
            attribution: i.attribution.as_deref(),
            episodes: i.all_episodes(),
            link: i.link.as_deref(),
            notifications: i.notifications,
            labels: &i.labels,
        }
    }
}

fn state(status: IncidentStatus) -> &'static str {
    match status {
        IncidentStatus::Open => "open",
        IncidentStatus::Resolved => "resolved",
    }
}

fn row(i: &Incident) -> Vec<String> {
    let resolved = match (i.resolved_at, i.time_to_restore()) {
        (Some(at), Some(took)) => format!("{} (after {})", time(at), open_for(took.as_secs())),
        (Some(at), None) => time(at),
        (None, _) => "-".to_string(),
    };
    vec![
        i.id.clone(),
        state(i.status).to_string(),
        i.severity.to_string(),
        environment_cell(i.environment.as_deref(), i.raw_environment.as_deref()),
        repository_cell(i.repository.as_ref(), i.service.as_deref()),
        i.alert().to_string(),
        time(i.opened_at),
        resolved,
        i.caused_by_deployment
            .clone()
            .unwrap_or_else(|| "-".to_string()),
    ]
}

/// Open incidents are always listed; resolved ones when resolved at or after `cutoff`
/// (`None`: every one).
fn listed(incident: &Incident, cutoff: Option<Timestamp>) -> bool {
    match (incident.status, cutoff) {
        (IncidentStatus::Open, _) | (_, None) => true,
        (IncidentStatus::Resolved, Some(cutoff)) => {
            incident.resolved_at.is_some_and(|at| at >= cutoff)
        }
    }
}

/// `shipgate incidents`.
pub async fn run(opts: IncidentsOptions) -> Result<(), CliError> {
    let environments = opts
        .state
        .environments(
            opts.environment.as_deref(),
            opts.policy_file.as_deref(),
            "list",
        )
        .await?;
    let only = parse_repo(opts.repo.as_deref())?;
    let repo = opts.state.repo()?;
    let cutoff = if opts.all {
        None
    } else {
        let since = opts.since.unwrap_or(DEFAULT_SINCE);
        Some(
            SignedDuration::try_from(since)
                .ok()
                .and_then(|d| Timestamp::now().checked_sub(d).ok())
                .unwrap_or(Timestamp::MIN),
        )
    };
    let mut incidents = Vec::new();
    for source in incident_sources(opts.environment.as_deref(), &environments) {
        let found = repo
            .incidents_in(&source.environment, Timestamp::UNIX_EPOCH, Timestamp::MAX)
            .await?;
        incidents.extend(found.into_iter().filter(|i| {
            source.keeps(i.raw_environment.as_deref())
                && only
                    .as_ref()
                    .is_none_or(|o| i.repository.as_ref() == Some(o))
                && listed(i, cutoff)
        }));
    }
    incidents.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
    if opts.json {
        let mut lines = String::new();
        for i in &incidents {
            let line = serde_json::to_string(&IncidentLine::of(i))
                .map_err(|e| CliError::Output(e.into()))?;
            lines.push_str(&line);
            lines.push('\n');
        }
        return emit(&lines);
    }
    let rows: Vec<Vec<String>> = incidents.iter().map(row).collect();
    emit(&table(
        &[
            "ID",
            "STATE",
            "SEVERITY",
            "ENVIRONMENT",
            "REPOSITORY",
            "ALERT",
            "OPENED",
            "RESOLVED",
            "BLAMED DEPLOYMENT",
        ],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(status: IncidentStatus, resolved_at: Option<&str>) -> Incident {
        let opened: Timestamp = "2026-01-01T10:00:00Z".parse().expect("timestamp");
        Incident {
            id: "alertmanager:f".into(),
            fingerprint: "f".into(),
            source: "alertmanager".into(),
            environment: None,
            raw_environment: Some("qa-7".into()),
            service: None,
            repository: None,
            severity: Severity::Warning,
            raw_severity: Some("sev9".into()),
            title: "disk full".into(),
            status,
            opened_at: opened,
            last_seen_at: opened,
            resolved_at: resolved_at.map(|t| t.parse().expect("timestamp")),
            caused_by_deployment: None,
            attribution: None,
            episodes: Vec::new(),
            dropped_episodes: 0,
            link: None,
            notifications: 1,
            alert_name: Some("DiskFull".into()),
            labels: BTreeMap::from([("env".to_string(), "qa-7".to_string())]),
            version: 1,
        }
    }

    #[test]
    fn open_incidents_are_always_listed_and_resolved_ones_within_the_window() {
        let cutoff: Timestamp = "2026-01-01T12:00:00Z".parse().expect("timestamp");
        assert!(listed(&incident(IncidentStatus::Open, None), Some(cutoff)));
        let early = incident(IncidentStatus::Resolved, Some("2026-01-01T11:00:00Z"));
        let late = incident(IncidentStatus::Resolved, Some("2026-01-01T13:00:00Z"));
        assert!(!listed(&early, Some(cutoff)));
        assert!(listed(&late, Some(cutoff)));
        assert!(listed(&early, None));
    }

    #[test]
    fn an_explicit_environment_also_reads_the_unmapped_alerts_that_named_it() {
        let sources = incident_sources(Some("qa-7"), &[]);
        let read: Vec<&str> = sources.iter().map(|s| s.environment.as_str()).collect();
        assert_eq!(read, ["qa-7", UNKNOWN_ENVIRONMENT]);
        assert!(sources[1].keeps(Some("qa-7")) && !sources[1].keeps(Some("qa-8")));
        let every = incident_sources(None, &["production".to_string()]);
        let read: Vec<&str> = every.iter().map(|s| s.environment.as_str()).collect();
        assert_eq!(read, ["production", UNKNOWN_ENVIRONMENT]);
        assert!(every[1].keeps(None));
    }

    #[test]
    fn unmapped_labels_are_explained() {
        let policy = Policy::parse("p.toml", "[environments.production]\n").expect("policy");
        let inc = incident(IncidentStatus::Open, None);
        assert_eq!(
            unmapped_reasons(&inc, &policy),
            [
                "environment label \"qa-7\" is not a policy environment",
                "severity label \"sev9\" is not in the severity map (counted as warning)",
            ]
        );
        assert_eq!(labels_text(&inc.labels), "env=qa-7");
        assert_eq!(row(&inc)[3..6], ["qa-7 (not in policy)", "-", "DiskFull"]);
    }
}
