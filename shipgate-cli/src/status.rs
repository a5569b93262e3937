//! `shipgate status` and `shipgate history`: what the operator asks first — where is each
//! environment, who holds it, what is burning, and who did what.
//!
//! `status` also lists the open incidents of alerts that named no policy environment, with
//! the labels that failed to map; `history` merges the incident log (opened, reopened,
//! updated, resolved) with the deployments' audit log.
//!
//! State is per scope (a repository in an environment): `status` prints one row per
//! repository that deployed to each policy environment, named `owner/name · env` (an
//! environment nothing deployed to yet gets one row of its own). `--repo` keeps one
//! repository, in `status` and in `history`.
//!
//! Both read the data directory directly (SQLite in WAL mode lets them run beside a live
//! `shipgate serve`). Output is a table for people or, with `--json`, one JSON object per
//! line for scripts.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{json, Value};
use shipgate::domain::deployment::{AuditEvent, Deployment, Head};
use shipgate::domain::incident::{IncidentChange, IncidentEvent, IncidentStatus};
use shipgate::domain::policy::Severity;
use shipgate::domain::{short_sha, EnvName, RepoName, Scope};
use shipgate::store::Repo;
use shipgate_cli::error::CliError;
use shipgate_cli::state::State;

use crate::output::{csv_line, emit, parse_repo, table, time};

use crate::incidents_cmd::{
    environment_cell, incident_sources, labels_text, open_for, open_outside_policy,
    outside_policy_json, repository_cell, unmapped_reasons,
};

pub struct StatusOptions {
    pub state: State,
    /// On AWS the stack's policy parameter when not given.
    pub policy_file: Option<PathBuf>,
    pub repo: Option<String>,
    pub json: bool,
}

pub struct HistoryOptions {
    pub state: State,
    pub policy_file: Option<PathBuf>,
    pub environment: Option<String>,
    pub repo: Option<String>,
    pub json: bool,
    /// A CSV header and one line per event.
    pub csv: bool,
    pub limit: usize,
}

fn head_json(h: &Option<Head>) -> Value {
    match h {
        Some(h) => {
            json!({ "sha": h.sha, "ref": h.git_ref, "deployment_id": h.deployment_id, "at": h.at })
        }
        None => Value::Null,
    }
}

fn deployment_json(d: &Deployment) -> Value {
    json!({
        "id": d.id,
        "state": d.state,
        "repo": d.repo,
        "sha": d.sha,
        "ref": d.git_ref,
        "requester": d.requester,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    })
}

/// How many of an environment's latest deployments are searched for a repository's latest.
const LATEST_SEARCH: usize = 500;

/// One scope's status (or, with no repository, an environment nothing deployed to), as the
/// JSON line `--json` prints.
async fn environment_status(
    repo: &Repo,
    environment: &str,
    scope: Option<&Scope>,
) -> Result<Value, CliError> {
    let (heads, lock_holder, queue) = match scope {
        Some(scope) => (
            repo.heads(scope).await?,
            repo.lock_holder(scope).await?,
            repo.queue(scope).await?,
        ),
        None => (Default::default(), None, Vec::new()),
    };
    let queue: Vec<Value> = queue
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "position": i + 1,
                "deployment_id": e.deployment_id,
                "run_id": e.run_id,
                "ref": e.git_ref,
                "sha": e.sha,
                "since": e.since,
                "until": e.until,
            })
        })
        .collect();
    let heads: shipgate::domain::deployment::EnvironmentHeads = heads;
    let lock = match lock_holder {
        Some(holder) => {
            let state = repo.get_deployment(&holder).await?.map(|d| d.state);
            json!({ "deployment_id": holder, "state": state })
        }
        None => Value::Null,
    };
    let latest: Vec<Deployment> = repo
        .deployments_in(
            environment,
            Timestamp::UNIX_EPOCH,
            Timestamp::MAX,
            true,
            Some(LATEST_SEARCH),
        )
        .await?
        .into_iter()
        .filter(|d| scope.is_none_or(|s| d.repo == s.repo))
        .take(1)
        .collect();
    // The scope's own incidents and the environment-level ones (which block it too).
    let incidents: Vec<_> = repo
        .incidents_in(environment, Timestamp::UNIX_EPOCH, Timestamp::MAX)
        .await?
        .into_iter()
        .filter(|i| match (&i.repository, scope) {
            (None, _) => true,
            (Some(r), Some(s)) => *r == s.repo,
            (Some(_), None) => false,
        })
        .collect();
    let open: Vec<Value> = incidents
        .iter()
        .filter(|i| i.status == IncidentStatus::Open)
        .map(|i| {
            json!({
                "id": i.id,
                "severity": i.severity,
                "title": i.title,
                "source": i.source,
                "opened_at": i.opened_at,
                "repository": i.repository,
                "caused_by_deployment": i.caused_by_deployment,
            })
        })
        .collect();
    let critical: Vec<&str> = incidents
        .iter()
        .filter(|i| i.is_open_critical())
        .map(|i| i.id.as_str())
        .collect();
    Ok(json!({
        "environment": environment,
        "repo": scope.map(|s| s.repo.as_str()),
        "scope": scope.map_or_else(|| environment.to_string(), Scope::to_string),
        "current": head_json(&heads.current),
        "last_known_good": head_json(&heads.last_known_good),
        "lock": lock,
        "queue": queue,
        "latest_deployment": latest.first().map(deployment_json),
        "open_incidents": open,
        "open_critical_incidents": critical,
    }))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn head_cell(h: &Value) -> String {
    if h.is_null() {
        return "-".into();
    }
    format!("{} ({})", short_sha(text(&h["sha"])), text(&h["ref"]))
}

fn status_row(s: &Value) -> Vec<String> {
    let lock = &s["lock"];
    let lock = if lock.is_null() {
        "-".to_string()
    } else {
        format!(
            "{} ({})",
            text(&lock["deployment_id"]),
            lock["state"].as_str().unwrap_or("missing")
        )
    };
    let latest = &s["latest_deployment"];
    let latest = if latest.is_null() {
        "-".to_string()
    } else {
        format!(
            "{} {} {}",
            text(&latest["id"]),
            text(&latest["state"]),
            short_sha(text(&latest["sha"]))
        )
    };
    let open = s["open_incidents"].as_array().map_or(0, Vec::len);
    let critical = s["open_critical_incidents"].as_array().map_or(0, Vec::len);
    let queued = s["queue"].as_array().map_or(0, Vec::len);
    vec![
        text(&s["scope"]).to_string(),
        head_cell(&s["current"]),
        head_cell(&s["last_known_good"]),
        lock,
        queued.to_string(),
        format!("{open} ({critical} critical)"),
        latest,
    ]
}

/// `shipgate status`.
pub async fn status(opts: StatusOptions) -> Result<(), CliError> {
    let policy = opts.state.policy(opts.policy_file.as_deref()).await?;
    let repo = opts.state.repo()?;
    let only = parse_repo(opts.repo.as_deref())?;
    let mut statuses = Vec::new();
    for env in policy.environments() {
        let Ok(env_name) = EnvName::parse(&env.name) else {
            continue;
        };
        let repos: Vec<RepoName> = repo
            .repositories_in(&env.name)
            .await?
            .into_iter()
            .filter(|r| only.as_ref().is_none_or(|o| o == r))
            .collect();
        if repos.is_empty() {
            if only.is_none() {
                statuses.push(environment_status(&repo, &env.name, None).await?);
            }
            continue;
        }
        for r in repos {
            let scope = Scope::new(r, env_name.clone());
            statuses.push(environment_status(&repo, &env.name, Some(&scope)).await?);
        }
    }
    // Alerts that named no policy environment belong to no row; `--repo` leaves them out.
    let outside = match only {
        Some(_) => Vec::new(),
        None => open_outside_policy(&repo).await?,
    };
    if opts.json {
        let mut lines: String = statuses.iter().map(|s| format!("{s}\n")).collect();
        if !outside.is_empty() {
            let outside: Vec<Value> = outside
                .iter()
                .map(|i| outside_policy_json(i, &policy))
                .collect();
            lines.push_str(&format!(
                "{}\n",
                json!({ "incidents_outside_policy": outside })
            ));
        }
        return emit(&lines);
    }
    let rows: Vec<Vec<String>> = statuses.iter().map(status_row).collect();
    let mut out = table(
        &[
            "SCOPE",
            "CURRENT",
            "LAST GOOD",
            "LOCK",
            "QUEUED",
            "INCIDENTS",
            "LATEST DEPLOYMENT",
        ],
        &rows,
    );
    for s in &statuses {
        for q in s["queue"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "queued in {}: {}. {} {} ({}) run {}, waiting since {}, gives up at {}\n",
                text(&s["scope"]),
                q["position"],
                text(&q["deployment_id"]),
                text(&q["ref"]),
                short_sha(text(&q["sha"])),
                q["run_id"],
                text(&q["since"]),
                text(&q["until"]),
            ));
        }
        for inc in s["open_incidents"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "open incident in {}: {} [{}] {} (since {})\n",
                text(&s["scope"]),
                text(&inc["id"]),
                text(&inc["severity"]),
                text(&inc["title"]),
                text(&inc["opened_at"]),
            ));
        }
    }
    for inc in &outside {
        out.push_str(&format!(
            "open incident outside the policy: {} [{}] {} (since {}): {}; labels: {}\n",
            inc.id,
            inc.severity,
            inc.alert(),
            inc.opened_at,
            unmapped_reasons(inc, &policy).join("; "),
            labels_text(&inc.labels),
        ));
    }
    emit(&out)
}

/// One line of `history`: a deployment's audit event or an incident's log entry.
enum Entry {
    Deployment(AuditEvent),
    Incident(IncidentEvent),
}

impl Entry {
    fn at(&self) -> Timestamp {
        match self {
            Entry::Deployment(e) => e.at,
            Entry::Incident(e) => e.at,
        }
    }
}

/// Merges per-environment logs into one, oldest first, keeping the newest `limit` events.
fn merge_newest(mut logs: Vec<Vec<Entry>>, limit: usize) -> Vec<Entry> {
    let mut all: Vec<Entry> = logs.drain(..).flatten().collect();
    // Stable: events of one environment at the same instant keep their stored order.
    all.sort_by_key(Entry::at);
    let skip = all.len().saturating_sub(limit);
    all.split_off(skip)
}

/// A deployment event's `--json` line: the audit event with `"kind":"deployment"` first.
#[derive(Serialize)]
struct DeploymentLine<'a> {
    kind: &'static str,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// An incident event's `--json` line.
#[derive(Serialize)]
struct IncidentEventLine<'a> {
    kind: &'static str,
    at: Timestamp,
    what: String,
    incident_id: &'a str,
    environment: Option<&'a str>,
    raw_environment: Option<&'a str>,
    repository: Option<&'a RepoName>,
    service: Option<&'a str>,
    severity: Severity,
    alert: &'a str,
    title: &'a str,
    source: &'a str,
    caused_by_deployment: Option<&'a str>,
    open_for_secs: Option<i64>,
}

fn entry_json(entry: &Entry) -> Result<String, serde_json::Error> {
    match entry {
        Entry::Deployment(event) => serde_json::to_string(&DeploymentLine {
            kind: "deployment",
            event,
        }),
        Entry::Incident(e) => serde_json::to_string(&IncidentEventLine {
            kind: "incident",
            at: e.at,
            what: incident_what(e.change),
            incident_id: &e.incident_id,
            environment: e.environment.as_deref(),
            raw_environment: e.raw_environment.as_deref(),
            repository: e.repository.as_ref(),
            service: e.service.as_deref(),
            severity: e.severity,
            alert: &e.alert,
            title: &e.title,
            source: &e.source,
            caused_by_deployment: e.caused_by_deployment.as_deref(),
            open_for_secs: e.open_for_secs,
        }),
    }
}

fn incident_what(change: IncidentChange) -> String {
    format!("incident_{}", change.as_str())
}

fn incident_row(e: &IncidentEvent) -> Vec<String> {
    let change = match e.change {
        IncidentChange::Reopened => "resolved -> open",
        IncidentChange::Resolved => "open -> resolved",
        IncidentChange::Opened | IncidentChange::Updated => "",
    };
    let mut why = format!("{} [{}] {}", e.incident_id, e.severity, e.alert);
    if e.repository.is_some() || e.service.is_some() {
        why.push_str(" · ");
        why.push_str(&repository_cell(
            e.repository.as_ref(),
            e.service.as_deref(),
        ));
    }
    if let Some(secs) = e.open_for_secs {
        why.push_str(&format!(" · open for {}", open_for(secs)));
    }
    vec![
        time(e.at),
        environment_cell(e.environment.as_deref(), e.raw_environment.as_deref()),
        e.caused_by_deployment
            .clone()
            .unwrap_or_else(|| "-".to_string()),
        e.source.clone(),
        incident_what(e.change),
        change.to_string(),
        why,
    ]
}

/// An audit event's row, its time written as `at`.
fn deployment_row(e: &AuditEvent, at: String) -> Vec<String> {
    vec![
        at,
        e.environment.clone(),
        e.deployment_id.clone(),
        e.actor.clone(),
        e.what.clone(),
        change(e),
        e.why.clone(),
    ]
}

fn change(e: &AuditEvent) -> String {
    match (e.from, e.to) {
        (Some(from), Some(to)) => format!("{from} -> {to}"),
        _ => String::new(),
    }
}

/// `shipgate history`.
pub async fn history(opts: HistoryOptions) -> Result<(), CliError> {
    let environments = opts
        .state
        .environments(
            opts.environment.as_deref(),
            opts.policy_file.as_deref(),
            "show",
        )
        .await?;
    let only = parse_repo(opts.repo.as_deref())?;
    let repo = opts.state.repo()?;
    let mut logs = Vec::new();
    for env in &environments {
        let mut log = repo
            .audit_for_environment(env, Timestamp::UNIX_EPOCH, Timestamp::MAX, None)
            .await?;
        if let Some(only) = &only {
            // Audit lines name their deployment; the deployments name their repository.
            let ids: std::collections::BTreeSet<String> = repo
                .deployments_in(env, Timestamp::UNIX_EPOCH, Timestamp::MAX, false, None)
                .await?
                .into_iter()
                .filter(|d| d.repo == *only)
                .map(|d| d.id)
                .collect();
            log.retain(|e| ids.contains(&e.deployment_id));
        }
        logs.push(log.into_iter().map(Entry::Deployment).collect());
    }
    // The incident log of the same environments and of the alerts that named none.
    for source in incident_sources(opts.environment.as_deref(), &environments) {
        let log = repo
            .incident_log(&source.environment, Timestamp::UNIX_EPOCH, Timestamp::MAX)
            .await?;
        logs.push(
            log.into_iter()
                .filter(|e| {
                    source.keeps(e.raw_environment.as_deref())
                        && only
                            .as_ref()
                            .is_none_or(|o| e.repository.as_ref() == Some(o))
                })
                .map(Entry::Incident)
                .collect(),
        );
    }
    let events = merge_newest(logs, opts.limit);
    if opts.json {
        let mut lines = String::new();
        for e in &events {
            let line = entry_json(e).map_err(|e| CliError::Output(e.into()))?;
            lines.push_str(&line);
            lines.push('\n');
        }
        return emit(&lines);
    }
    if opts.csv {
        let mut out = csv_line(&[
            "time",
            "environment",
            "deployment",
            "actor",
            "what",
            "change",
            "why",
        ]);
        for entry in &events {
            let row = match entry {
                Entry::Deployment(e) => deployment_row(e, e.at.to_string()),
                Entry::Incident(e) => {
                    // Machine-readable times, whatever the table shows.
                    let mut row = incident_row(e);
                    row[0] = e.at.to_string();
                    row
                }
            };
            out.push_str(&csv_line(&row));
        }
        return emit(&out);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|entry| match entry {
            Entry::Deployment(e) => deployment_row(e, time(e.at)),
            Entry::Incident(e) => incident_row(e),
        })
        .collect();
    emit(&table(
        &[
            "TIME",
            "ENVIRONMENT",
            "DEPLOYMENT",
            "ACTOR",
            "WHAT",
            "CHANGE",
            "WHY",
        ],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: &str, env: &str, what: &str) -> AuditEvent {
        AuditEvent {
            at: at.parse().expect("timestamp"),
            deployment_id: format!("dep-{what}"),
            environment: env.into(),
            actor: "shipgate".into(),
            what: what.into(),
            from: None,
            to: None,
            why: String::new(),
        }
    }

    #[test]
    fn history_merges_environments_by_time_and_keeps_the_newest() {
        let staging = vec![
            event("2026-01-01T10:00:00Z", "staging", "a"),
            event("2026-01-01T12:00:00Z", "staging", "c"),
        ];
        let production = vec![
            event("2026-01-01T11:00:00Z", "production", "b"),
            event("2026-01-01T13:00:00Z", "production", "d"),
        ];
        let entries = |log: Vec<AuditEvent>| log.into_iter().map(Entry::Deployment).collect();
        let merged = merge_newest(vec![entries(staging), entries(production)], 3);
        let order: Vec<&str> = merged
            .iter()
            .filter_map(|e| match e {
                Entry::Deployment(e) => Some(e.what.as_str()),
                Entry::Incident(_) => None,
            })
            .collect();
        assert_eq!(order, ["b", "c", "d"]);
    }

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let out = table(
            &["A", "LONG"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(out, "A    LONG\nxyz  1\nq\n");
    }
}
