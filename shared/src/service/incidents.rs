//! Alerts in, incidents out: every alert source (Alertmanager, Grafana, CloudWatch alarms,
//! synthetic probes) is turned into [`AlertSignal`]s at the edge and ingested here.
//!
//! - One incident per `{source}:{fingerprint}`; its id is also the PagerDuty `dedup_key`.
//!   A firing signal opens it (or reopens a resolved one as a new episode, or refreshes an
//!   open one); a resolved signal closes the episode and measures its time to restore.
//! - Each signal is claimed once (`IDEM#alert#…`, keyed by a hash of source, fingerprint,
//!   status, `startsAt` and `endsAt`, or by the transport's own message id), so a redelivered
//!   notification changes nothing. The claim is pending for a short lease until the signal is
//!   applied, so one whose attempt failed without giving it back is retried after the lease.
//! - Labels are mapped by the policy's `[alerts]` table. An environment the policy does not know
//!   is kept as `raw_environment` on an incident with no environment: recorded and notified,
//!   never dropped. A severity that is missing or not in `severity_map` counts as
//!   [`UNMAPPED_SEVERITY`] (warning): someone wired the alert to shipgate, so it is shown,
//!   but an unrecognised label neither pages (PagerDuty routing is per severity) nor rolls
//!   back a deploy unless the environment rolls back on warnings.
//! - The alert's service label is routed to a repository by the policy
//!   ([`Policy::repository_for_service`]: `[services]`, else `[alerts] default_owner`). A
//!   routed incident belongs to that repository's scope: it names the repository
//!   (`repository`) and the deployment it is attributed to (`caused_by_deployment`, with
//!   `attribution` saying why): the one verifying in the scope when the alert *began* (its
//!   `startsAt`, within `[alerts] start_tolerance`), not when it arrived. It may roll that one
//!   back ([`super::rollback`]) and blocks only that repository's deploys.
//!   An alert naming no service, or one the policy cannot route, opens at environment level:
//!   nothing is rolled back automatically, a page says why ("no repository for service X"),
//!   and it blocks every repository of the environment per `block_on_critical_incident`.
//! - Each change (opened, reopened, updated, resolved) is written to the incident log with
//!   the incident, in one transaction; `shipgate history` reads it.
//! - `Incident` notifications go out when an incident opens and when it resolves.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::rollback::{self, RollbackOutcome};
use super::{ServiceError, Services};
// The alert types moved to `domain::events`; tests and benches still name them here.
use crate::domain::deployment::{DeploymentKind, State};
use crate::domain::dora::human_duration;
pub use crate::domain::events::{fingerprint_of_labels, AlertSignal, AlertStatus};
use crate::domain::ids::{short_sha, EnvName};
use crate::domain::incident::{
    kept_labels, Episode, Incident, IncidentChange, IncidentEvent, IncidentStatus,
};
use crate::domain::policy::{Policy, Severity};
use crate::domain::scope::Scope;
use crate::notify::{Notification, NotificationBody};
use crate::store::repo::{open_index_pk, Claim, CLAIM_LEASE};
use crate::store::RepoError;

/// How long an alert notification is remembered for deduplication.
pub const ALERT_CLAIM_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The severity of an alert whose severity label is missing or not in the policy's map.
pub const UNMAPPED_SEVERITY: Severity = Severity::Warning;

const SAVE_ATTEMPTS: usize = 8;

/// What an alert's labels say, read through the policy's `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMapping {
    /// The policy's environment the alert belongs to (`None` when unknown or absent).
    pub environment: Option<String>,
    /// The environment label as carried by the alert.
    pub raw_environment: Option<String>,
    pub service: Option<String>,
    pub severity: Severity,
    pub raw_severity: Option<String>,
}

fn first_label(labels: &BTreeMap<String, String>, names: &[String]) -> Option<String> {
    names
        .iter()
        .find_map(|n| labels.get(n))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Maps an alert's labels onto an environment, a service and a canonical severity. The
/// environment label matches a policy environment exactly or, failing that, ignoring case
/// (`Production` is `production`).
pub fn map_labels(policy: &Policy, labels: &BTreeMap<String, String>) -> AlertMapping {
    let raw_environment = first_label(labels, policy.environment_labels());
    let environment = raw_environment.as_deref().and_then(|raw| {
        policy
            .environment(raw)
            .or_else(|| {
                policy
                    .environments()
                    .find(|e| e.name.eq_ignore_ascii_case(raw))
            })
            .map(|e| e.name.clone())
    });
    let raw_severity = labels
        .get(policy.severity_label())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let severity = raw_severity
        .as_deref()
        .and_then(|raw| policy.canonical_severity(raw))
        .unwrap_or(UNMAPPED_SEVERITY);
    AlertMapping {
        environment,
        raw_environment,
        service: first_label(labels, policy.service_labels()),
        severity,
        raw_severity,
    }
}

/// What one signal did to its incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// A new incident.
    Opened,
    /// A resolved incident fired again.
    Reopened,
    /// An open incident fired again (repeat notification).
    Refreshed,
    /// An open incident was closed.
    Resolved,
    /// The incident was already resolved; nothing changed.
    AlreadyResolved,
    /// A resolution for an alert shipgate never saw firing; nothing recorded.
    ResolvedUnknown,
    /// This notification item was processed before; nothing changed.
    Duplicate,
}

/// One signal's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestItem {
    pub incident_id: String,
    pub effect: Effect,
    /// `None` when the alert's environment is not in the policy (see `raw_environment`).
    pub environment: Option<String>,
    pub raw_environment: Option<String>,
    pub severity: Severity,
    /// The deployment that was verifying when the incident opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caused_by_deployment: Option<String>,
    /// Seconds from opening to resolution, for [`Effect::Resolved`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_restore_secs: Option<i64>,
    /// What the rollback check decided, when the incident opened in a known environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackOutcome>,
}

/// What ingesting a batch of signals did, item by item in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    pub items: Vec<IngestItem>,
}

impl IngestReport {
    pub fn count(&self, effect: Effect) -> usize {
        self.items.iter().filter(|i| i.effect == effect).count()
    }

    /// Items whose environment the policy does not know.
    pub fn unknown_environments(&self) -> impl Iterator<Item = &IngestItem> {
        self.items
            .iter()
            .filter(|i| i.environment.is_none() && i.effect != Effect::Duplicate)
    }

    /// Rollbacks this batch started.
    pub fn rollbacks_started(&self) -> usize {
        self.items
            .iter()
            .filter(|i| {
                matches!(
                    i.rollback,
                    Some(RollbackOutcome::Started { .. } | RollbackOutcome::Failed { .. })
                )
            })
            .count()
    }
}

/// Ingests a batch of signals in order. Items already processed stay processed when a later
/// one fails; the failing item's claim is given back when a redelivery could succeed, so the
/// sender's retry picks up exactly where this left off.
pub async fn ingest(
    svc: &Services,
    signals: Vec<AlertSignal>,
) -> Result<IngestReport, ServiceError> {
    let mut report = IngestReport::default();
    for signal in signals {
        report.items.push(ingest_one(svc, &signal).await?);
    }
    Ok(report)
}

async fn ingest_one(svc: &Services, signal: &AlertSignal) -> Result<IngestItem, ServiceError> {
    let key = signal.claim_key();
    let now = svc.now();
    match svc
        .repo
        .begin_event("alert", &key, now, CLAIM_LEASE)
        .await?
    {
        Claim::Acquired => {}
        Claim::Done => {
            let mapping = map_labels(&svc.policy, &signal.labels);
            tracing::info!(source = %signal.source, fingerprint = %signal.fingerprint, "duplicate alert notification; nothing changed");
            return Ok(IngestItem {
                incident_id: Incident::id_for(&signal.source, &signal.fingerprint),
                effect: Effect::Duplicate,
                environment: mapping.environment,
                raw_environment: mapping.raw_environment,
                severity: mapping.severity,
                caused_by_deployment: None,
                time_to_restore_secs: None,
                rollback: None,
            });
        }
        Claim::InProgress => {
            // A retryable error, not "duplicate": if the attempt holding the claim fails,
            // the sender's retry is what gets the alert processed.
            return Err(ServiceError::Busy(format!(
                "alert {} of {}",
                signal.fingerprint, signal.source
            )));
        }
    }
    let result = apply(svc, signal, now).await;
    match &result {
        Err(e) if e.is_retryable() => {
            if let Err(release) = svc.repo.release_event("alert", &key).await {
                tracing::error!(error = %release, "could not release alert claim; the retry waits for the claim's lease to run out");
            }
        }
        // Applied, or failed for good: a redelivery is a duplicate from now on.
        _ => {
            if let Err(confirm) = svc
                .repo
                .confirm_event("alert", &key, svc.now(), ALERT_CLAIM_TTL)
                .await
            {
                tracing::error!(error = %confirm, "could not confirm alert claim; a redelivery after its lease is applied again");
            }
        }
    }
    result
}

fn new_incident(
    id: String,
    signal: &AlertSignal,
    mapping: &AlertMapping,
    now: Timestamp,
) -> Incident {
    // The alert's own start is when service degraded; a start in the future (clock skew)
    // is not believed.
    let opened_at = signal.starts_at.filter(|t| *t <= now).unwrap_or(now);
    Incident {
        id,
        fingerprint: signal.fingerprint.clone(),
        source: signal.source.clone(),
        environment: mapping.environment.clone(),
        raw_environment: mapping.raw_environment.clone(),
        service: mapping.service.clone(),
        repository: None,
        severity: mapping.severity,
        raw_severity: mapping.raw_severity.clone(),
        title: signal.title(),
        status: IncidentStatus::Open,
        opened_at,
        last_seen_at: now,
        resolved_at: None,
        caused_by_deployment: None,
        attribution: None,
        dropped_episodes: 0,
        episodes: vec![Episode {
            began_at: opened_at,
            resolved_at: None,
            caused_by_deployment: None,
            attribution: None,
        }],
        link: signal.link.clone(),
        notifications: 1,
        alert_name: signal
            .labels
            .get("alertname")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        // Labels that named no policy environment are kept, so they can be shown.
        labels: match mapping.environment {
            Some(_) => BTreeMap::new(),
            None => kept_labels(&signal.labels),
        },
        version: 0,
    }
}

async fn apply(
    svc: &Services,
    signal: &AlertSignal,
    now: Timestamp,
) -> Result<IngestItem, ServiceError> {
    let mapping = map_labels(&svc.policy, &signal.labels);
    let id = Incident::id_for(&signal.source, &signal.fingerprint);
    let item = |effect: Effect, inc: Option<&Incident>| IngestItem {
        incident_id: id.clone(),
        effect,
        environment: inc.map_or(mapping.environment.clone(), |i| i.environment.clone()),
        raw_environment: inc.map_or(mapping.raw_environment.clone(), |i| {
            i.raw_environment.clone()
        }),
        severity: inc.map_or(mapping.severity, |i| i.severity),
        caused_by_deployment: inc.and_then(|i| i.caused_by_deployment.clone()),
        time_to_restore_secs: None,
        rollback: None,
    };

    // Read, change, save with a version check; a concurrent change of the same incident
    // (the same alert from two notifications at once) re-reads and re-applies.
    let mut saved = None;
    for _ in 0..SAVE_ATTEMPTS {
        let existing = svc.repo.get_incident(&id).await?;
        // Where the incident's open-index entry was, so a reopening in another scope moves it.
        let mut indexed_at = None;
        let (mut inc, effect) = match (existing, signal.status) {
            (None, AlertStatus::Firing) => (
                new_incident(id.clone(), signal, &mapping, now),
                Effect::Opened,
            ),
            (None, AlertStatus::Resolved) => {
                tracing::info!(incident_id = %id, "resolution of an alert never seen firing");
                return Ok(item(Effect::ResolvedUnknown, None));
            }
            (Some(mut inc), AlertStatus::Firing) => {
                indexed_at = Some(open_index_pk(&inc));
                let effect = if inc.fired(now, signal.starts_at) {
                    Effect::Reopened
                } else {
                    Effect::Refreshed
                };
                if signal.link.is_some() {
                    inc.link = signal.link.clone();
                }
                (inc, effect)
            }
            (Some(inc), AlertStatus::Resolved)
                if resolves_an_earlier_episode(&inc, signal.starts_at) =>
            {
                // A resolution of an earlier firing, arriving after the alert fired again:
                // it does not end the current episode.
                return Ok(item(Effect::AlreadyResolved, Some(&inc)));
            }
            (Some(mut inc), AlertStatus::Resolved) => {
                // The alert's own end is when service was restored, if it is believable.
                let at = signal
                    .ends_at
                    .filter(|t| *t >= inc.opened_at && *t <= now)
                    .unwrap_or(now);
                inc.last_seen_at = now;
                if inc.resolve(at).is_none() {
                    return Ok(item(Effect::AlreadyResolved, Some(&inc)));
                }
                (inc, Effect::Resolved)
            }
        };
        if matches!(effect, Effect::Opened | Effect::Reopened) {
            // The policy routes the alert's service to a repository: the incident belongs to
            // that repository's scope and is attributed to the deployment verifying there when
            // the alert began, if any. An alert it cannot route stays at environment level
            // (and blocks every repository of the environment per
            // `block_on_critical_incident`).
            let scope = inc
                .service
                .as_deref()
                .and_then(|s| svc.policy.repository_for_service(s))
                .zip(
                    inc.environment
                        .as_deref()
                        .and_then(|e| EnvName::parse(e).ok()),
                )
                .map(|(repo, env)| Scope::new(repo, env));
            let (blamed, why) = match &scope {
                Some(scope) => attribution(svc, scope, inc.opened_at).await?,
                None => (
                    None,
                    match &inc.service {
                        Some(s) => format!("no repository for service {s:?}; not attributed"),
                        None => "the alert names no service; not attributed".to_owned(),
                    },
                ),
            };
            inc.attribute(blamed, why);
            inc.repository = scope.map(|s| s.repo);
        }
        let change = match effect {
            Effect::Opened => Some(IncidentChange::Opened),
            Effect::Reopened => Some(IncidentChange::Reopened),
            Effect::Refreshed => Some(IncidentChange::Updated),
            Effect::Resolved => Some(IncidentChange::Resolved),
            _ => None,
        };
        let event = change.map(|c| IncidentEvent::of(&inc, c));
        match svc
            .repo
            .save_incident_logged(&mut inc, indexed_at.as_deref(), event.as_ref())
            .await
        {
            Ok(()) => {
                saved = Some((inc, effect));
                break;
            }
            Err(RepoError::Stale { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let Some((inc, effect)) = saved else {
        return Err(ServiceError::Contended(format!("incident {id}")));
    };

    let mut result = item(effect, Some(&inc));
    tracing::info!(incident_id = %inc.id, effect = ?effect, environment = inc.environment.as_deref().unwrap_or("-"), severity = %inc.severity, "alert ingested");
    if inc.environment.is_none() {
        tracing::warn!(incident_id = %inc.id, raw_environment = inc.raw_environment.as_deref().unwrap_or("-"), "alert for an environment the policy does not know; recorded without one");
    }
    match effect {
        Effect::Opened | Effect::Reopened => publish(svc, &inc, "open", now).await,
        Effect::Resolved => {
            result.time_to_restore_secs = inc.time_to_restore().map(|d| d.as_secs());
            publish(svc, &inc, "resolved", now).await;
        }
        _ => {}
    }
    // An incident that opened inside a deployment's verification window rolls it back. A
    // repeat notification of such an incident asks again: that is a no-op once the rollback
    // started, and finishes the job if an earlier attempt failed midway.
    let ask = matches!(effect, Effect::Opened | Effect::Reopened)
        || (effect == Effect::Refreshed && inc.caused_by_deployment.is_some());
    if let (true, Some(env)) = (ask, inc.environment.as_deref()) {
        result.rollback = Some(rollback::start_automatic(svc, env, &inc).await?);
    }
    Ok(result)
}

/// Does a resolution whose alert began at `starts_at` belong to an episode before the current
/// one? When it began before the previous episode ended, it does.
fn resolves_an_earlier_episode(inc: &Incident, starts_at: Option<Timestamp>) -> bool {
    let (Some(started), Some(previous)) = (starts_at, inc.episodes.iter().rev().nth(1)) else {
        return false;
    };
    previous.resolved_at.is_some_and(|ended| started < ended)
}

/// How far back [`attribution`] looks for a deployment that was verifying when an alert
/// began, when the scope has changed since: GitHub waits at most 30 days for an answer, so a
/// deployment going out later than that after its request does not exist.
const ATTRIBUTION_LOOKBACK: SignedDuration = SignedDuration::from_hours(31 * 24);
/// At most this many of the environment's deployments are read for that look back.
const ATTRIBUTION_LOOKBACK_LIMIT: usize = 200;

/// The deployment an episode that began at `began` is attributed to, and why: the one
/// verifying in `scope` when the alert began, counting a deployment as verifying from
/// `[alerts] start_tolerance` before it went out to the end of its window.
///
/// One read of the scope's partition (the heads live there), as before; only an alert that
/// began before the scope's latest change (a late notification, or an alert that predates
/// the deploy now verifying) pays one more query, of the environment's recent deployments.
async fn attribution(
    svc: &Services,
    scope: &Scope,
    began: Timestamp,
) -> Result<(Option<String>, String), ServiceError> {
    let tolerance =
        SignedDuration::try_from(svc.policy.alerts().start_tolerance).unwrap_or_default();
    let state = svc.repo.scope_state(scope).await?;
    let Some(current) = state.current else {
        return Ok((
            None,
            format!("nothing had been deployed to {scope} when it began"),
        ));
    };
    let sha = short_sha(&current.sha);
    // Heads written before they carried the window's end: the lock holder that is the
    // scope's current deployment is verifying (a finished one has let the lock go).
    let holder_verifying = state.lock_holder.as_deref() == Some(current.deployment_id.as_str());
    let until = current
        .verify_until
        .or(holder_verifying.then_some(Timestamp::MAX));
    if let Some(until) = until {
        if began >= until {
            return Ok((
                None,
                format!("began after the verification window of {sha} ended; not attributed"),
            ));
        }
        if began.checked_add(tolerance).unwrap_or(Timestamp::MAX) >= current.at {
            let why = attributed_because(began, current.at, sha, tolerance);
            return Ok((Some(current.deployment_id), why));
        }
        let before = human_duration(current.at.duration_since(began).as_secs_f64());
        if let Some(found) = verifying_at(svc, scope, began, tolerance).await? {
            return Ok(found);
        }
        return Ok((
            None,
            format!("began {before} before {sha} went out; not attributed to it"),
        ));
    }
    if began >= current.at {
        return Ok((
            None,
            format!("no deployment was verifying in {scope} when it began ({sha} running)"),
        ));
    }
    Ok(verifying_at(svc, scope, began, tolerance)
        .await?
        .unwrap_or_else(|| {
            (
                None,
                format!("no deployment was verifying in {scope} when it began"),
            )
        }))
}

/// Why an alert that began at `began` is the deployment's that went out at `went_out`: after
/// it, or within the start tolerance before it.
fn attributed_because(
    began: Timestamp,
    went_out: Timestamp,
    sha: &str,
    tolerance: SignedDuration,
) -> String {
    if began >= went_out {
        let after = human_duration(began.duration_since(went_out).as_secs_f64());
        format!("began {after} after {sha} went out, inside its verification window")
    } else {
        format!(
            "began {} before {sha} went out, within the {} start tolerance",
            human_duration(went_out.duration_since(began).as_secs_f64()),
            human_duration(tolerance.as_secs_f64())
        )
    }
}

/// The deployment of `scope` that was inside its verification window at `began` (went out
/// at most `tolerance` after it, not yet rolled back), looked up among the environment's
/// recent deployments.
async fn verifying_at(
    svc: &Services,
    scope: &Scope,
    began: Timestamp,
    tolerance: SignedDuration,
) -> Result<Option<(Option<String>, String)>, ServiceError> {
    let window = svc
        .policy
        .for_scope(&scope.repo, &scope.environment)
        .ok()
        .and_then(|p| SignedDuration::try_from(p.policy.verification_window).ok())
        .unwrap_or_default();
    let from = began
        .checked_sub(ATTRIBUTION_LOOKBACK)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let to = began.checked_add(tolerance).unwrap_or(Timestamp::MAX);
    let deployments = svc
        .repo
        .deployments_in(
            scope.environment.as_str(),
            from,
            to,
            true,
            Some(ATTRIBUTION_LOOKBACK_LIMIT),
        )
        .await?;
    for dep in deployments
        .iter()
        .filter(|d| d.repo == scope.repo && d.kind == DeploymentKind::Deploy)
    {
        let Some(until) = dep.verify_until else {
            continue;
        };
        let Ok(went_out) = until.checked_sub(window) else {
            continue;
        };
        // It ran until its window ended, or until it passed early, or until its rollback
        // finished, whichever came first.
        let end = [
            Some(until),
            (dep.state == State::Succeeded)
                .then_some(dep.finished_at)
                .flatten(),
            dep.rollback.as_ref().and_then(|r| r.finished_at),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(until);
        if began < end && to >= went_out {
            let why = attributed_because(began, went_out, dep.sha.short(), tolerance);
            return Ok(Some((Some(dep.id.clone()), why)));
        }
    }
    Ok(None)
}

async fn publish(svc: &Services, inc: &Incident, status: &str, now: Timestamp) {
    svc.publish(Notification::new(
        now,
        NotificationBody::Incident {
            incident_id: inc.id.clone(),
            environment: inc.environment.clone(),
            severity: inc.severity.as_str().to_string(),
            title: inc.title.clone(),
            status: status.to_string(),
            link: inc.link.clone(),
            deployment_id: inc.caused_by_deployment.clone(),
            repository: inc.repository.as_ref().map(ToString::to_string),
            attribution: inc.attribution.clone(),
        },
    ))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::MAX_TITLE_CHARS;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policy() -> Policy {
        Policy::parse(
            "t.toml",
            r#"
[alerts]
environment_labels = ["env", "environment"]
[alerts.severity_map]
p1 = "critical"
[environments.production]
[environments.staging]
"#,
        )
        .unwrap()
    }

    #[test]
    fn label_fingerprints_ignore_insertion_order_and_separate_fields() {
        let a = fingerprint_of_labels(&labels(&[("a", "1"), ("b", "2")]));
        let b = fingerprint_of_labels(&labels(&[("b", "2"), ("a", "1")]));
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        assert_ne!(a, fingerprint_of_labels(&labels(&[("a", "12")])));
        assert_ne!(
            fingerprint_of_labels(&labels(&[("a", "b=c")])),
            fingerprint_of_labels(&labels(&[("a=b", "c")]))
        );
    }

    #[test]
    fn labels_map_through_the_policy_with_case_insensitive_environments() {
        let m = map_labels(
            &policy(),
            &labels(&[
                ("environment", "Production"),
                ("app", "api"),
                ("severity", "P1"),
            ]),
        );
        assert_eq!(m.environment.as_deref(), Some("production"));
        assert_eq!(m.raw_environment.as_deref(), Some("Production"));
        assert_eq!(m.service.as_deref(), Some("api"));
        assert_eq!(m.severity, Severity::Critical);
        assert_eq!(m.raw_severity.as_deref(), Some("P1"));
    }

    #[test]
    fn unknown_environments_and_severities_are_kept_raw() {
        let m = map_labels(
            &policy(),
            &labels(&[("env", "qa-7"), ("severity", "sev-unknown")]),
        );
        assert_eq!(m.environment, None);
        assert_eq!(m.raw_environment.as_deref(), Some("qa-7"));
        assert_eq!(m.severity, UNMAPPED_SEVERITY);
        assert_eq!(m.raw_severity.as_deref(), Some("sev-unknown"));
        let none = map_labels(&policy(), &labels(&[]));
        assert_eq!(
            (none.environment, none.raw_environment, none.severity),
            (None, None, Severity::Warning)
        );
    }

    #[test]
    fn claim_keys_change_with_status_and_times_but_not_with_annotations() {
        let mut s = AlertSignal {
            source: "alertmanager".into(),
            fingerprint: "f".into(),
            status: AlertStatus::Firing,
            labels: labels(&[]),
            annotations: labels(&[("summary", "x")]),
            starts_at: Some("2025-06-02T10:00:00Z".parse().unwrap()),
            ends_at: None,
            link: None,
            delivery_key: None,
        };
        let first = s.claim_key();
        s.annotations.clear();
        assert_eq!(s.claim_key(), first);
        s.status = AlertStatus::Resolved;
        assert_ne!(s.claim_key(), first);
        s.delivery_key = Some("msg-1".into());
        assert_eq!(s.claim_key(), "alertmanager#msg-1");
    }

    #[test]
    fn titles_prefer_the_summary_and_stay_on_one_short_line() {
        let mut s = AlertSignal {
            source: "grafana".into(),
            fingerprint: "f".into(),
            status: AlertStatus::Firing,
            labels: labels(&[("alertname", "HighErrorRate")]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            link: None,
            delivery_key: None,
        };
        assert_eq!(s.title(), "HighErrorRate");
        s.annotations.insert(
            "summary".into(),
            format!("{}\nsecond line", "x".repeat(300)),
        );
        let t = s.title();
        assert_eq!(t.chars().count(), MAX_TITLE_CHARS + 1);
        assert!(t.ends_with('…'));
        s.labels.clear();
        s.annotations.clear();
        assert_eq!(s.title(), "alert f");
    }
}
