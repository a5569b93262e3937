//! Turns the spanned TOML tree into a [`Policy`], collecting every problem with its position.
//!
//! Decoding by hand (rather than `#[derive(Deserialize)]`) is what lets one run report an unknown
//! key, a wrong type and a broken cross-reference together instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::duration::parse_duration;
use super::glob::{repo_matches, repo_patterns_overlap, validate_pattern, validate_repo_pattern};
use super::scope::{apply_key, Override, Position, Scope, ENVIRONMENT_WIDE_KEYS};
use super::tree::{self, Entry, Kind, LineIndex, Node, Span};
use super::{
    AlertsPolicy, AnalysisCheck, AnalysisPolicy, BackupsPolicy, DeployWindow, EnvironmentPolicy,
    Freeze, MetricSourceSpec, NotificationsPolicy, Policy, PolicyError, PolicyErrors, Probe,
    PrometheusAuthSpec, RollbackAlerts, RollbackMethod, Severity, TimeOfDay, ANALYSIS_VAR_PREFIX,
};
use crate::domain::analysis::{self, Condition, Inconclusive, SampleRule};
use crate::domain::ids::RepoName;

const ROOT_KEYS: &[&str] = &[
    "identities",
    "alerts",
    "notifications",
    "backups",
    "probes",
    "environments",
    "services",
    "analysis",
];
const ANALYSIS_ROOT_KEYS: &[&str] = &["sources"];
const SOURCE_KEYS: &[&str] = &[
    "type",
    "url",
    "region",
    "bearer_token_var",
    "basic_user",
    "basic_password_var",
];
const ANALYSIS_KEYS: &[&str] = &["checks", "inconclusive", "end_early"];
const CHECK_KEYS: &[&str] = &[
    "name",
    "source",
    "query",
    "condition",
    "interval",
    "count",
    "failure_limit",
    "baseline",
];
const ALERTS_KEYS: &[&str] = &[
    "environment_labels",
    "service_labels",
    "severity_label",
    "severity_map",
    "default_owner",
    "start_tolerance",
];
const NOTIFICATIONS_KEYS: &[&str] = &["pagerduty_routing_keys"];
/// What every variable `pagerduty_routing_keys` names must start with: the policy names where
/// a routing key is read from, and must not be able to name any other secret.
pub const ROUTING_KEY_VAR_PREFIX: &str = "SHIPGATE_PAGERDUTY_ROUTING_KEY_";
const BACKUPS_KEYS: &[&str] = &["tables", "schedule", "retention_days", "keep_daily"];
const PROBE_KEYS: &[&str] = &[
    "name",
    "url",
    "expect_status",
    "timeout",
    "failures_before_incident",
    "environment",
];
const ENVIRONMENT_KEYS: &[&str] = &[
    "allowed_refs",
    "promotion_from",
    "approvals_required",
    "approvers",
    "rollback_requesters",
    "prevent_self_approval",
    "require_reject_reason",
    "approval_ttl",
    "verification_window",
    "queue_wait",
    "deploy_timeout",
    "block_on_critical_incident",
    "rollback_on",
    "rollback_alerts",
    "rollback",
    "pre_deploy_backups",
    "slack_channel",
    "rollback_drill",
    "production",
    "windows",
    "freezes",
    "break_glass",
    "repos",
    "overrides",
    "analysis",
];
/// `repos` and the keys in `scope::OVERRIDABLE_KEYS`.
const OVERRIDE_KEYS: &[&str] = &[
    "repos",
    "allowed_refs",
    "approvals_required",
    "approvers",
    "rollback_requesters",
    "prevent_self_approval",
    "require_reject_reason",
    "approval_ttl",
    "verification_window",
    "queue_wait",
    "deploy_timeout",
    "block_on_critical_incident",
    "rollback_on",
    "rollback_alerts",
    "rollback",
    "pre_deploy_backups",
    "windows",
    "freezes",
    "break_glass",
    "analysis",
];
/// The largest `[alerts] start_tolerance`.
const MAX_START_TOLERANCE: Duration = Duration::from_secs(3600);
/// GitHub waits at most 30 days for a custom protection rule's answer.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(30 * 86_400);
const ROLLBACK_KEYS: &[&str] = &["method", "workflow", "ref"];
const WINDOW_KEYS: &[&str] = &["days", "start", "end", "timezone"];
const FREEZE_KEYS: &[&str] = &["from", "to", "timezone", "reason"];
const BREAK_GLASS_KEYS: &[&str] = &["allowed", "extra_approvals", "require_reason"];

pub(super) fn decode(file: &str, text: &str) -> Result<Policy, PolicyErrors> {
    let mut cx = Ctx {
        file,
        lines: LineIndex::new(text),
        errors: Vec::new(),
        source_names: BTreeMap::new(),
    };
    let root_entries = match tree::parse_document(text) {
        Ok(entries) => entries,
        Err(error) => {
            let message = error.message().trim().replace('\n', "; ");
            cx.error(error.span(), "", message);
            return Err(cx.into_errors());
        }
    };
    let mut root = Table {
        path: String::new(),
        span: None,
        entries: &root_entries,
        used: vec![false; root_entries.len()],
        known: ROOT_KEYS,
    };

    let identities = root
        .take("identities")
        .map(|f| cx.identities(&f))
        .unwrap_or_default();
    let alerts = root
        .take("alerts")
        .and_then(|f| cx.alerts(&f))
        .unwrap_or_default();
    let notifications = root
        .take("notifications")
        .and_then(|f| cx.notifications(&f))
        .unwrap_or_default();
    let backups = root
        .take("backups")
        .and_then(|f| cx.backups(&f))
        .unwrap_or_default();
    // Sources first: the environments' checks name them.
    let analysis_sources = root
        .take("analysis")
        .map(|f| cx.analysis_sources(&f))
        .unwrap_or_default();
    let (environments, scopes) = match root.take("environments") {
        Some(field) => cx.environments(&field, &identities, &backups),
        None => {
            cx.error(
                None,
                "environments",
                "at least one [environments.<name>] table is required",
            );
            (BTreeMap::new(), BTreeMap::new())
        }
    };
    let services = root
        .take("services")
        .map(|f| cx.services(&f))
        .unwrap_or_default();
    let probes = root
        .take("probes")
        .map(|f| cx.probes(&f, &environments))
        .unwrap_or_default();
    root.finish(&mut cx);

    if cx.errors.is_empty() {
        Ok(Policy {
            identities,
            alerts,
            notifications,
            backups,
            probes,
            environments,
            scopes,
            services,
            analysis_sources,
        })
    } else {
        Err(cx.into_errors())
    }
}

struct Ctx<'a> {
    file: &'a str,
    lines: LineIndex<'a>,
    errors: Vec<PolicyError>,
    /// The `[analysis.sources]` checks refer to: name → whether it is CloudWatch (`None` for
    /// a source with mistakes of its own).
    source_names: BTreeMap<String, Option<bool>>,
}

/// A value found under a key, with its dotted path and best-known position.
#[derive(Clone)]
struct Field<'t> {
    path: String,
    node: &'t Node,
    span: Option<Span>,
}

/// A table being read: keys are marked as used so the leftovers can be reported as unknown.
struct Table<'t> {
    path: String,
    span: Option<Span>,
    entries: &'t [Entry],
    used: Vec<bool>,
    known: &'static [&'static str],
}

impl<'t> Table<'t> {
    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    fn take(&mut self, key: &str) -> Option<Field<'t>> {
        debug_assert!(self.known.contains(&key) || self.known.is_empty());
        let index = self.entries.iter().position(|e| e.key == key)?;
        self.used[index] = true;
        let entry = &self.entries[index];
        Some(Field {
            path: self.child_path(key),
            node: &entry.value,
            span: entry
                .value
                .span
                .clone()
                .or_else(|| entry.key_span.clone())
                .or_else(|| self.span.clone()),
        })
    }

    /// Every entry, for tables whose keys are data (`[identities]`, `[environments]`).
    fn take_all(&mut self) -> Vec<(&'t str, Option<Span>, Field<'t>)> {
        self.used.iter_mut().for_each(|u| *u = true);
        self.entries
            .iter()
            .map(|entry| {
                let key_span = entry.key_span.clone().or_else(|| self.span.clone());
                (
                    entry.key.as_str(),
                    key_span.clone(),
                    Field {
                        path: self.child_path(&entry.key),
                        node: &entry.value,
                        span: entry.value.span.clone().or(key_span),
                    },
                )
            })
            .collect()
    }

    /// Like [`Table::take`], for a key the table does not accept, to refuse it with a
    /// clearer message than "unknown key".
    fn take_refused(&mut self, key: &str) -> Option<Field<'t>> {
        let index = self.entries.iter().position(|e| e.key == key)?;
        self.used[index] = true;
        let entry = &self.entries[index];
        Some(Field {
            path: self.child_path(key),
            node: &entry.value,
            span: entry
                .key_span
                .clone()
                .or_else(|| entry.value.span.clone())
                .or_else(|| self.span.clone()),
        })
    }

    /// Where each of `keys` present in this table is written (its value's position).
    fn key_positions(
        &self,
        cx: &Ctx<'_>,
        keys: &'static [&'static str],
    ) -> BTreeMap<&'static str, Position> {
        keys.iter()
            .filter_map(|key| {
                let entry = self.entries.iter().find(|e| e.key == *key)?;
                let span = entry
                    .value
                    .span
                    .clone()
                    .or_else(|| entry.key_span.clone())
                    .or_else(|| self.span.clone());
                Some((*key, cx.position(span)))
            })
            .collect()
    }

    fn finish(self, cx: &mut Ctx<'_>) {
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if !used {
                let span = entry.key_span.clone().or_else(|| entry.value.span.clone());
                cx.error(
                    span.or(self.span.clone()),
                    &self.child_path(&entry.key),
                    format!("unknown key; expected one of: {}", self.known.join(", ")),
                );
            }
        }
    }
}

impl<'a> Ctx<'a> {
    fn error(&mut self, span: Option<Span>, field: &str, message: impl Into<String>) {
        let (line, column) = self.lines.position(span.map_or(0, |s| s.start));
        self.errors.push(PolicyError {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn position(&self, span: Option<Span>) -> Position {
        let (line, column) = self.lines.position(span.map_or(0, |s| s.start));
        Position {
            file: self.file.to_owned(),
            line,
            column,
        }
    }

    fn fail(&mut self, field: &Field<'_>, message: impl Into<String>) {
        self.error(field.span.clone(), &field.path, message);
    }

    fn into_errors(mut self) -> PolicyErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        PolicyErrors(self.errors)
    }

    fn wrong_type(&mut self, field: &Field<'_>, expected: &str) {
        let found = field.node.kind.type_name();
        self.fail(field, format!("expected {expected}, found {found}"));
    }

    fn table<'t>(
        &mut self,
        field: &Field<'t>,
        known: &'static [&'static str],
    ) -> Option<Table<'t>> {
        match &field.node.kind {
            Kind::Table(entries) => Some(Table {
                path: field.path.clone(),
                span: field.span.clone(),
                entries,
                used: vec![false; entries.len()],
                known,
            }),
            _ => {
                self.wrong_type(field, "a table");
                None
            }
        }
    }

    fn array<'t>(&mut self, field: &Field<'t>) -> Option<Vec<Field<'t>>> {
        match &field.node.kind {
            Kind::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, node)| Field {
                        path: format!("{}[{i}]", field.path),
                        node,
                        span: node.span.clone().or_else(|| field.span.clone()),
                    })
                    .collect(),
            ),
            _ => {
                self.wrong_type(field, "an array");
                None
            }
        }
    }

    fn string(&mut self, field: &Field<'_>) -> Option<String> {
        match &field.node.kind {
            Kind::String(s) => Some(s.clone()),
            _ => {
                self.wrong_type(field, "a string");
                None
            }
        }
    }

    /// A string that must not be blank.
    fn text(&mut self, field: &Field<'_>) -> Option<String> {
        let s = self.string(field)?;
        if s.trim().is_empty() {
            self.fail(field, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, field: &Field<'_>) -> Option<bool> {
        match field.node.kind {
            Kind::Boolean(b) => Some(b),
            _ => {
                self.wrong_type(field, "a boolean (true or false)");
                None
            }
        }
    }

    fn integer(&mut self, field: &Field<'_>, min: i64, max: i64) -> Option<i64> {
        match field.node.kind {
            Kind::Integer(n) if (min..=max).contains(&n) => Some(n),
            Kind::Integer(n) => {
                self.fail(field, format!("{n} is out of range ({min} to {max})"));
                None
            }
            _ => {
                self.wrong_type(field, "an integer");
                None
            }
        }
    }

    fn u32(&mut self, field: &Field<'_>, min: u32, max: u32) -> Option<u32> {
        self.integer(field, min.into(), max.into())
            .and_then(|n| u32::try_from(n).ok())
    }

    /// A list of strings; bad elements are reported and left out.
    fn strings<'t>(&mut self, field: &Field<'t>) -> Option<Vec<(String, Field<'t>)>> {
        let items = self.array(field)?;
        Some(
            items
                .into_iter()
                .filter_map(|item| self.text(&item).map(|s| (s, item)))
                .collect(),
        )
    }

    fn duration(&mut self, field: &Field<'_>, min: Duration) -> Option<Duration> {
        let text = self.string(field)?;
        match parse_duration(&text) {
            Ok(d) if d < min => {
                self.fail(
                    field,
                    format!("must be at least {}", super::duration::format_duration(min)),
                );
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                self.fail(field, message);
                None
            }
        }
    }

    fn severity(&mut self, field: &Field<'_>) -> Option<Severity> {
        let text = self.string(field)?;
        let severity = Severity::parse(&text);
        if severity.is_none() {
            self.fail(
                field,
                format!("unknown severity {text:?}; use critical, warning or info"),
            );
        }
        severity
    }

    fn timezone(&mut self, table: &mut Table<'_>) -> Option<(jiff::tz::TimeZone, String)> {
        let Some(field) = table.take("timezone") else {
            return Some((jiff::tz::TimeZone::UTC, "UTC".to_owned()));
        };
        let name = self.text(&field)?;
        match jiff::tz::TimeZone::get(&name) {
            Ok(tz) => Some((tz, name)),
            Err(_) => {
                self.fail(
                    &field,
                    format!("unknown time zone {name:?}; use an IANA name such as \"Europe/Berlin\" or \"UTC\""),
                );
                None
            }
        }
    }

    fn required<'t>(&mut self, table: &mut Table<'t>, key: &str) -> Option<Field<'t>> {
        let field = table.take(key);
        if field.is_none() {
            let path = table.child_path(key);
            self.error(table.span.clone(), &path, "is required");
        }
        field
    }

    fn identities(&mut self, field: &Field<'_>) -> BTreeMap<String, String> {
        let mut identities = BTreeMap::new();
        let Some(mut table) = self.table(field, &[]) else {
            return identities;
        };
        let mut logins: BTreeMap<String, String> = BTreeMap::new();
        for (slack_id, key_span, value) in table.take_all() {
            if !is_slack_user_id(slack_id) {
                self.error(
                    key_span,
                    &value.path,
                    format!("{slack_id:?} does not look like a Slack user id (U or W followed by capitals and digits, e.g. U024BE7LH)"),
                );
                continue;
            }
            let Some(login) = self.text(&value) else {
                continue;
            };
            if !is_github_login(&login) {
                self.fail(&value, format!("{login:?} is not a valid GitHub login"));
                continue;
            }
            if let Some(other) = logins.insert(login.to_lowercase(), slack_id.to_owned()) {
                self.fail(
                    &value,
                    format!("GitHub login {login:?} is already mapped to Slack user {other}"),
                );
                continue;
            }
            identities.insert(slack_id.to_owned(), login);
        }
        identities
    }

    fn alerts(&mut self, field: &Field<'_>) -> Option<AlertsPolicy> {
        let mut table = self.table(field, ALERTS_KEYS)?;
        let mut alerts = AlertsPolicy::default();
        for (key, target) in [
            ("environment_labels", &mut alerts.environment_labels),
            ("service_labels", &mut alerts.service_labels),
        ] {
            if let Some(f) = table.take(key) {
                if let Some(labels) = self.strings(&f) {
                    if labels.is_empty() {
                        self.fail(&f, "needs at least one label name");
                    }
                    *target = labels.into_iter().map(|(s, _)| s).collect();
                }
            }
        }
        if let Some(f) = table.take("default_owner") {
            if let Some(owner) = self.text(&f) {
                if crate::domain::ids::RepoName::parse(&format!("{owner}/x")).is_err() {
                    self.fail(
                        &f,
                        format!(
                            "{owner:?} is not a GitHub owner (letters, digits and -, at most 39)"
                        ),
                    );
                } else {
                    alerts.default_owner = Some(owner);
                }
            }
        }
        if let Some(f) = table.take("start_tolerance") {
            if let Some(d) = self.duration(&f, Duration::ZERO) {
                if d > MAX_START_TOLERANCE {
                    self.fail(&f, "at most \"1h\": an alert that began longer before a deploy is not that deploy's");
                } else {
                    alerts.start_tolerance = d;
                }
            }
        }
        if let Some(f) = table.take("severity_label") {
            if let Some(label) = self.text(&f) {
                alerts.severity_label = label;
            }
        }
        if let Some(f) = table.take("severity_map") {
            if let Some(mut map) = self.table(&f, &[]) {
                for (raw, _, value) in map.take_all() {
                    if let Some(severity) = self.severity(&value) {
                        alerts
                            .severity_map
                            .insert(raw.trim().to_lowercase(), severity);
                    }
                }
            }
        }
        table.finish(self);
        Some(alerts)
    }

    /// `[services]`: service label value → `owner/name`.
    fn services(&mut self, field: &Field<'_>) -> BTreeMap<String, RepoName> {
        let mut services = BTreeMap::new();
        let Some(mut table) = self.table(field, &[]) else {
            return services;
        };
        for (service, _, value) in table.take_all() {
            let Some(repo) = self.text(&value) else {
                continue;
            };
            match RepoName::parse(&repo) {
                Ok(repo) => {
                    services.insert(service.to_owned(), repo);
                }
                Err(e) => self.fail(
                    &value,
                    format!("{repo:?} is not a repository (owner/name): {e}"),
                ),
            }
        }
        services
    }

    fn notifications(&mut self, field: &Field<'_>) -> Option<NotificationsPolicy> {
        let mut table = self.table(field, NOTIFICATIONS_KEYS)?;
        let mut notifications = NotificationsPolicy::default();
        if let Some(f) = table.take("pagerduty_routing_keys") {
            if let Some(mut keys) = self.table(&f, &[]) {
                for (name, key_span, value) in keys.take_all() {
                    let Some(severity) = Severity::parse(name) else {
                        self.error(
                            key_span,
                            &value.path,
                            format!("unknown severity {name:?}; use critical, warning or info"),
                        );
                        continue;
                    };
                    // The value is deliberately never echoed: if it is not an env reference
                    // it may well be the secret itself.
                    let Some(reference) = self.string(&value) else {
                        continue;
                    };
                    match reference.strip_prefix("env:") {
                        Some(var)
                            if is_env_var_name(var)
                                && var.len() > ROUTING_KEY_VAR_PREFIX.len()
                                && var.starts_with(ROUTING_KEY_VAR_PREFIX) =>
                        {
                            notifications
                                .pagerduty_routing_keys
                                .insert(severity, var.to_owned());
                        }
                        // Any other name could point at another secret (the Slack bot token,
                        // the webhook secret) and send it to PagerDuty in the event body.
                        Some(var) if is_env_var_name(var) => self.fail(
                            &value,
                            format!(
                                "a routing key variable must be named {ROUTING_KEY_VAR_PREFIX}<SUFFIX> (e.g. \"env:{ROUTING_KEY_VAR_PREFIX}CRITICAL\"), so the policy cannot name another secret"
                            ),
                        ),
                        Some(_) => self.fail(
                            &value,
                            "expected \"env:VARIABLE_NAME\" with a variable name of letters, digits and underscores",
                        ),
                        None => self.fail(
                            &value,
                            "routing keys are secrets and must not be written into the policy; name the environment variable that holds it as \"env:VARIABLE_NAME\"",
                        ),
                    }
                }
            }
        }
        table.finish(self);
        Some(notifications)
    }

    fn backups(&mut self, field: &Field<'_>) -> Option<BackupsPolicy> {
        let mut table = self.table(field, BACKUPS_KEYS)?;
        let mut backups = BackupsPolicy::default();
        if let Some(f) = table.take("tables") {
            for (name, item) in self.strings(&f).unwrap_or_default() {
                if !is_table_name(&name) {
                    self.fail(
                        &item,
                        format!("{name:?} is not a valid table name (3-255 of letters, digits, '_', '-', '.')"),
                    );
                } else if !backups.tables.contains(&name) {
                    backups.tables.push(name);
                }
            }
        }
        if let Some(f) = table.take("schedule") {
            if let Some(schedule) = self.string(&f) {
                match validate_schedule(&schedule) {
                    Ok(()) => backups.schedule = schedule,
                    Err(message) => self.fail(&f, message),
                }
            }
        }
        if let Some(f) = table.take("retention_days") {
            if let Some(days) = self.u32(&f, 1, 36_500) {
                backups.retention_days = days;
            }
        }
        let keep_daily = table.take("keep_daily");
        if let Some(f) = &keep_daily {
            if let Some(n) = self.u32(f, 1, 36_500) {
                backups.keep_daily = n;
            }
        }
        if backups.keep_daily > backups.retention_days {
            let span = keep_daily
                .as_ref()
                .and_then(|f| f.span.clone())
                .or(field.span.clone());
            self.error(
                span,
                &table.child_path("keep_daily"),
                format!(
                    "keeps {} daily backups but retention_days is {}",
                    backups.keep_daily, backups.retention_days
                ),
            );
        }
        table.finish(self);
        Some(backups)
    }

    fn probes(
        &mut self,
        field: &Field<'_>,
        environments: &BTreeMap<String, EnvironmentPolicy>,
    ) -> Vec<Probe> {
        let mut probes: Vec<Probe> = Vec::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        for item in self.array(field).unwrap_or_default() {
            let Some(mut table) = self.table(&item, PROBE_KEYS) else {
                continue;
            };
            let name_field = self.required(&mut table, "name");
            let name = name_field.as_ref().and_then(|f| self.text(f));
            if let (Some(name), Some(f)) = (&name, &name_field) {
                if !names.insert(name.clone()) {
                    self.fail(f, format!("duplicate probe name {name:?}"));
                }
            }
            let url = self.required(&mut table, "url").and_then(|f| {
                let url = self.text(&f)?;
                if url.starts_with("https://") || url.starts_with("http://") {
                    Some(url)
                } else {
                    self.fail(&f, "must be an http:// or https:// URL");
                    None
                }
            });
            let expect_status = match table.take("expect_status") {
                Some(f) => self
                    .integer(&f, 100, 599)
                    .and_then(|n| u16::try_from(n).ok()),
                None => Some(200),
            };
            let timeout = match table.take("timeout") {
                Some(f) => self.duration(&f, Duration::from_secs(1)).and_then(|d| {
                    if d > Duration::from_secs(300) {
                        self.fail(&f, "must be at most 5m");
                        None
                    } else {
                        Some(d)
                    }
                }),
                None => Some(Duration::from_secs(5)),
            };
            let failures_before_incident = match table.take("failures_before_incident") {
                Some(f) => self.u32(&f, 1, 1_000),
                None => Some(3),
            };
            let environment = self.required(&mut table, "environment").and_then(|f| {
                let env = self.text(&f)?;
                if environments.contains_key(&env) {
                    Some(env)
                } else {
                    self.fail(&f, unknown_environment(&env, environments.keys()));
                    None
                }
            });
            table.finish(self);
            if let (
                Some(name),
                Some(url),
                Some(expect_status),
                Some(timeout),
                Some(failures),
                Some(environment),
            ) = (
                name,
                url,
                expect_status,
                timeout,
                failures_before_incident,
                environment,
            ) {
                probes.push(Probe {
                    name,
                    url,
                    expect_status,
                    timeout,
                    failures_before_incident: failures,
                    environment,
                });
            }
        }
        probes
    }

    fn environments(
        &mut self,
        field: &Field<'_>,
        identities: &BTreeMap<String, String>,
        backups: &BackupsPolicy,
    ) -> (BTreeMap<String, EnvironmentPolicy>, BTreeMap<String, Scope>) {
        let mut environments = BTreeMap::new();
        let mut scopes = BTreeMap::new();
        let Some(mut table) = self.table(field, &[]) else {
            return (environments, scopes);
        };
        let entries = table.take_all();
        if entries.is_empty() {
            self.fail(
                field,
                "at least one [environments.<name>] table is required",
            );
        }
        let mut promotions: Vec<(String, Vec<(String, Field<'_>)>)> = Vec::new();
        let mut drills: Vec<(String, Field<'_>)> = Vec::new();
        for (name, key_span, value) in entries {
            if name.trim().is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
                self.error(
                    key_span,
                    &value.path,
                    "environment names must be 1-255 printable characters",
                );
                continue;
            }
            let Some(mut env_table) = self.table(&value, ENVIRONMENT_KEYS) else {
                continue;
            };
            let at = self.position(value.span.clone().or(key_span));
            let repos = env_table.take("repos").and_then(|f| {
                let patterns = self.repo_patterns(&f)?;
                if matches!(&f.node.kind, Kind::Array(items) if items.is_empty()) {
                    self.fail(
                        &f,
                        "an empty list governs no repository; remove the key to govern every repository",
                    );
                    return None;
                }
                Some((patterns, self.position(f.span.clone())))
            });
            let overrides_field = env_table.take("overrides");
            let keys = env_table.key_positions(self, super::scope::SECTION_KEYS);
            let (env, promotion, drill) = self.environment(
                EnvironmentPolicy::with_defaults(name),
                false,
                &mut env_table,
                identities,
                backups,
            );
            env_table.finish(self);
            let overrides = overrides_field
                .map(|f| {
                    self.overrides(
                        &f,
                        &env,
                        repos.as_ref().map(|(p, _)| p.as_slice()),
                        identities,
                        backups,
                    )
                })
                .unwrap_or_default();
            self.check_combined_overrides(name, &env, &overrides);
            scopes.insert(
                name.to_owned(),
                Scope {
                    at,
                    repos,
                    keys,
                    overrides,
                },
            );
            promotions.push((name.to_owned(), promotion));
            if let Some(drill) = drill {
                drills.push((name.to_owned(), drill));
            }
            environments.insert(name.to_owned(), env);
        }
        self.check_promotions(&promotions);
        // The last stage of a promotion chain is production in every realistic setup; a drill
        // there would roll real users back on a schedule.
        for (name, field) in drills {
            let promotes_from = promotions
                .iter()
                .find(|(n, _)| *n == name)
                .is_some_and(|(_, from)| !from.is_empty());
            let promoted_to = promotions
                .iter()
                .any(|(_, from)| from.iter().any(|(f, _)| *f == name));
            if promotes_from && !promoted_to {
                self.fail(
                    &field,
                    format!("rollback drills are for staging-like environments; {name} is the last stage of the promotion chain"),
                );
            }
        }
        (environments, scopes)
    }

    /// Several overrides setting different keys can apply to one repository together; each
    /// was checked alone, so check their combination for every repository an override names
    /// literally (without `*`): the approvals must still be reachable.
    fn check_combined_overrides(
        &mut self,
        name: &str,
        section: &EnvironmentPolicy,
        overrides: &[Override],
    ) {
        let mut literals: Vec<String> = overrides
            .iter()
            .flat_map(|o| o.repos.iter())
            .filter(|p| !p.contains('*'))
            .map(|p| p.to_ascii_lowercase())
            .collect();
        literals.sort();
        literals.dedup();
        for repo in literals {
            let matching: Vec<(usize, &Override)> = overrides
                .iter()
                .enumerate()
                .filter(|(_, o)| o.repos.iter().any(|p| repo_matches(p, &repo)))
                .collect();
            let Some((last, last_override)) = matching.last().copied() else {
                continue;
            };
            if matching.len() < 2 {
                continue;
            }
            let mut env = section.clone();
            for (_, o) in &matching {
                for key in o.keys.keys() {
                    apply_key(&mut env, &o.policy, key);
                }
            }
            let listed = env.approvers.len();
            let mut needed = env.approvals_required;
            let mut what = String::new();
            if env.break_glass.allowed {
                needed += env.break_glass.extra_approvals;
                what = " with break-glass".to_owned();
            }
            if usize::try_from(needed).map_or(true, |n| n > listed) {
                let at: Vec<String> = matching.iter().map(|(_, o)| o.at.to_string()).collect();
                self.errors.push(PolicyError {
                    file: last_override.at.file.clone(),
                    line: last_override.at.line,
                    column: last_override.at.column,
                    field: format!("environments.{name}.overrides[{last}]"),
                    message: format!(
                        "for {repo} the overrides at {} combine to need {needed} approval{}{what} but only {}",
                        at.join(" and "),
                        plural(needed as usize),
                        approvers_listed(listed)
                    ),
                });
            }
        }
    }

    /// A list of `repos` patterns; bad ones are reported and left out.
    fn repo_patterns(&mut self, field: &Field<'_>) -> Option<Vec<String>> {
        let items = self.strings(field)?;
        let mut patterns = Vec::new();
        for (pattern, item) in items {
            match validate_repo_pattern(&pattern) {
                Ok(()) => patterns.push(pattern),
                Err(message) => self.fail(&item, message),
            }
        }
        Some(patterns)
    }

    /// `[[environments.NAME.overrides]]`: each is checked on its own (applied to the section)
    /// and against the earlier ones: two overrides that can match one repository must not set
    /// the same key.
    fn overrides(
        &mut self,
        field: &Field<'_>,
        section: &EnvironmentPolicy,
        section_repos: Option<&[String]>,
        identities: &BTreeMap<String, String>,
        backups: &BackupsPolicy,
    ) -> Vec<Override> {
        let mut overrides: Vec<Override> = Vec::new();
        for item in self.array(field).unwrap_or_default() {
            let Some(mut table) = self.table(&item, OVERRIDE_KEYS) else {
                continue;
            };
            let at = self.position(item.span.clone());
            let repos_field = self.required(&mut table, "repos");
            let repos = repos_field.as_ref().and_then(|f| {
                let patterns = self.repo_patterns(f)?;
                if matches!(&f.node.kind, Kind::Array(items) if items.is_empty()) {
                    self.fail(f, "an override needs at least one repository pattern");
                }
                Some(patterns)
            });
            for (key, why) in ENVIRONMENT_WIDE_KEYS {
                if let Some(f) = table.take_refused(key) {
                    self.fail(
                        &f,
                        format!("{key} cannot be overridden per repository: {why}; an override may set: {}", super::scope::OVERRIDABLE_KEYS.join(", ")),
                    );
                }
            }
            let keys = table.key_positions(self, super::scope::OVERRIDABLE_KEYS);
            if keys.is_empty() {
                self.fail(
                    &item,
                    format!(
                        "an override sets no key; give it one of: {}",
                        super::scope::OVERRIDABLE_KEYS.join(", ")
                    ),
                );
            }
            let (policy, _, _) =
                self.environment(section.clone(), true, &mut table, identities, backups);
            let key_fields: Vec<(&'static str, Field<'_>)> = keys
                .keys()
                .filter_map(|key| table.take(key).map(|f| (*key, f)))
                .collect();
            table.finish(self);
            let (Some(repos), Some(repos_field)) = (repos, repos_field) else {
                continue;
            };
            if let Some(section_repos) = section_repos {
                for (i, pattern) in repos.iter().enumerate() {
                    if !section_repos
                        .iter()
                        .any(|s| repo_patterns_overlap(s, pattern))
                    {
                        let item = Field {
                            path: format!("{}[{i}]", repos_field.path),
                            ..repos_field.clone()
                        };
                        let span = match &repos_field.node.kind {
                            Kind::Array(nodes) => nodes.get(i).and_then(|n| n.span.clone()),
                            _ => None,
                        };
                        self.error(
                            span.or(item.span.clone()),
                            &item.path,
                            format!(
                                "{pattern:?} matches no repository the section governs (repos = [{}])",
                                quoted(section_repos)
                            ),
                        );
                    }
                }
            }
            for earlier in &overrides {
                let Some((mine, theirs)) = repos.iter().find_map(|a| {
                    earlier
                        .repos
                        .iter()
                        .find(|b| repo_patterns_overlap(a, b))
                        .map(|b| (a, b))
                }) else {
                    continue;
                };
                for (key, f) in &key_fields {
                    if let Some(first) = earlier.keys.get(key) {
                        self.fail(
                            f,
                            format!(
                                "conflicting overrides: {key} is also set at {first} by the override for {theirs:?}, and a repository can match both {theirs:?} and {mine:?}; set each key in at most one override per repository"
                            ),
                        );
                    }
                }
            }
            overrides.push(Override {
                at,
                repos,
                keys,
                policy,
            });
        }
        overrides
    }

    fn check_promotions(&mut self, promotions: &[(String, Vec<(String, Field<'_>)>)]) {
        let known: BTreeSet<&str> = promotions.iter().map(|(n, _)| n.as_str()).collect();
        for (name, from) in promotions {
            for (source, field) in from {
                if source == name {
                    self.fail(field, "an environment cannot promote from itself");
                } else if !known.contains(source.as_str()) {
                    self.fail(field, unknown_environment(source, known.iter()));
                }
            }
        }
        // A cycle is reported once, at the edge that closes it in the first environment
        // (alphabetically) that is part of it.
        let graph: BTreeMap<&str, Vec<&str>> = promotions
            .iter()
            .map(|(n, from)| {
                let edges = from
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .filter(|s| *s != n && known.contains(s))
                    .collect();
                (n.as_str(), edges)
            })
            .collect();
        let mut reported: BTreeSet<&str> = BTreeSet::new();
        for (name, from) in promotions {
            if reported.contains(name.as_str()) {
                continue;
            }
            for (source, field) in from {
                if let Some(mut path) = find_path(&graph, source, name) {
                    path.insert(0, name.as_str());
                    reported.extend(path.iter().copied());
                    self.fail(field, format!("promotion cycle: {}", path.join(" <- ")));
                    break;
                }
            }
        }
    }

    /// Reads a section's keys onto `env` (the defaults), or an override's onto the section
    /// (`overriding`: then the environment-wide keys are not read here).
    fn environment<'t>(
        &mut self,
        mut env: EnvironmentPolicy,
        overriding: bool,
        table: &mut Table<'t>,
        identities: &BTreeMap<String, String>,
        backups: &BackupsPolicy,
    ) -> (
        EnvironmentPolicy,
        Vec<(String, Field<'t>)>,
        Option<Field<'t>>,
    ) {
        if let Some(f) = table.take("allowed_refs") {
            if let Some(patterns) = self.strings(&f) {
                if patterns.is_empty() {
                    self.fail(
                        &f,
                        "an empty list allows no ref at all; remove the key to allow any ref",
                    );
                }
                for (pattern, item) in &patterns {
                    if let Err(message) = validate_pattern(pattern) {
                        self.fail(item, message);
                    }
                }
                env.allowed_refs = Some(patterns.into_iter().map(|(p, _)| p).collect());
            }
        }
        let promotion = if overriding {
            Vec::new()
        } else {
            let promotion = table
                .take("promotion_from")
                .and_then(|f| self.strings(&f))
                .unwrap_or_default();
            env.promotion_from = promotion.iter().map(|(s, _)| s.clone()).collect();
            promotion
        };

        let mut approver_fields = Vec::new();
        let approvers_field = table.take("approvers");
        if let Some(f) = &approvers_field {
            let (ids, fields) = self.slack_user_ids(f);
            env.approvers = ids;
            approver_fields = fields;
        }
        if let Some(f) = table.take("rollback_requesters") {
            env.rollback_requesters = self.slack_user_ids(&f).0;
        }
        let approvals_field = table.take("approvals_required");
        if let Some(f) = &approvals_field {
            if let Some(n) = self.u32(f, 0, 100) {
                env.approvals_required = n;
            }
        }
        if let Some(f) = table.take("prevent_self_approval") {
            if let Some(b) = self.bool(&f) {
                env.prevent_self_approval = b;
            }
        }
        if let Some(f) = table.take("require_reject_reason") {
            if let Some(b) = self.bool(&f) {
                env.require_reject_reason = b;
            }
        }
        if let Some(f) = table.take("approval_ttl") {
            if let Some(d) = self.duration(&f, Duration::from_secs(60)) {
                env.approval_ttl = d;
            }
        }
        if let Some(f) = table.take("verification_window") {
            if let Some(d) = self.duration(&f, Duration::from_secs(1)) {
                env.verification_window = d;
            }
        }
        if let Some(f) = table.take("queue_wait") {
            if let Some(d) = self.duration(&f, Duration::ZERO) {
                if d > MAX_QUEUE_WAIT {
                    self.fail(
                        &f,
                        "must be at most 30d: GitHub stops waiting for a protection rule's answer after 30 days",
                    );
                } else {
                    env.queue_wait = d;
                }
            }
        }
        if let Some(f) = table.take("deploy_timeout") {
            if let Some(d) = self.duration(&f, Duration::from_secs(60)) {
                env.deploy_timeout = d;
            }
        }
        if let Some(f) = table.take("block_on_critical_incident") {
            if let Some(b) = self.bool(&f) {
                env.block_on_critical_incident = b;
            }
        }
        if let Some(f) = table.take("rollback_on") {
            if let Some(items) = self.array(&f) {
                let mut severities: Vec<Severity> = items
                    .iter()
                    .filter_map(|item| self.severity(item))
                    .collect();
                severities.sort();
                severities.dedup();
                env.rollback_on = severities;
            }
        }
        if let Some(f) = table.take("rollback_alerts") {
            match self.string(&f).as_deref() {
                Some("began_after_deploy") => {
                    env.rollback_alerts = RollbackAlerts::BeganAfterDeploy
                }
                Some("any_in_window") => env.rollback_alerts = RollbackAlerts::AnyInWindow,
                Some(other) => self.fail(
                    &f,
                    format!("{other:?} is not one of \"began_after_deploy\", \"any_in_window\""),
                ),
                None => {}
            }
        }
        if !overriding {
            if let Some(f) = table.take("production") {
                if let Some(b) = self.bool(&f) {
                    env.production = Some(b);
                }
            }
        }
        if let Some(f) = table.take("rollback") {
            if let Some(method) = self.rollback(&f) {
                env.rollback = method;
            }
        }
        if let Some(f) = table.take("pre_deploy_backups") {
            env.pre_deploy_backups.clear();
            for (name, item) in self.strings(&f).unwrap_or_default() {
                if backups.tables.contains(&name) {
                    env.pre_deploy_backups.push(name);
                } else {
                    self.fail(
                        &item,
                        format!(
                            "table {name:?} is not listed in backups.tables ({})",
                            backups.tables.join(", ")
                        ),
                    );
                }
            }
        }
        let slack_channel = if overriding {
            None
        } else {
            table.take("slack_channel")
        };
        if let Some(f) = slack_channel {
            if let Some(channel) = self.text(&f) {
                if channel.chars().any(char::is_whitespace) {
                    self.fail(&f, "a Slack channel id (C0123ABCD) or #name has no spaces");
                } else {
                    env.slack_channel = Some(channel);
                }
            }
        }
        let drill = if overriding {
            None
        } else {
            table.take("rollback_drill")
        };
        if let Some(f) = &drill {
            env.rollback_drill = self.bool(f).unwrap_or(false);
        }
        if let Some(f) = table.take("windows") {
            env.windows.clear();
            for item in self.array(&f).unwrap_or_default() {
                if let Some(window) = self.window(&item) {
                    env.windows.push(window);
                }
            }
        }
        if let Some(f) = table.take("freezes") {
            env.freezes.clear();
            for item in self.array(&f).unwrap_or_default() {
                if let Some(freeze) = self.freeze(&item) {
                    env.freezes.push(freeze);
                }
            }
        }
        let break_glass_field = table.take("break_glass");
        let mut extra_field = None;
        if let Some(f) = &break_glass_field {
            if let Some(mut bg) = self.table(f, BREAK_GLASS_KEYS) {
                if let Some(f) = bg.take("allowed") {
                    env.break_glass.allowed = self.bool(&f).unwrap_or(false);
                }
                extra_field = bg.take("extra_approvals");
                if let Some(f) = &extra_field {
                    if let Some(n) = self.u32(f, 0, 100) {
                        env.break_glass.extra_approvals = n;
                    }
                }
                if let Some(f) = bg.take("require_reason") {
                    if let Some(b) = self.bool(&f) {
                        env.break_glass.require_reason = b;
                    }
                }
                bg.finish(self);
            }
        }

        // An override is checked as applied to its section, and only when it changes one of
        // the numbers involved: the section's own problems are reported once, at the section.
        let recheck = !overriding
            || approvals_field.is_some()
            || approvers_field.is_some()
            || break_glass_field.is_some();
        let listed = env.approvers.len();
        if recheck && usize::try_from(env.approvals_required).map_or(true, |n| n > listed) {
            let span = approvals_field
                .as_ref()
                .or(approvers_field.as_ref())
                .and_then(|f| f.span.clone())
                .or(table.span.clone());
            self.error(
                span,
                &table.child_path("approvals_required"),
                format!(
                    "needs {} approval{} but only {}",
                    env.approvals_required,
                    plural(env.approvals_required as usize),
                    approvers_listed(listed)
                ),
            );
        } else if recheck && env.break_glass.allowed {
            let needed = env.approvals_required + env.break_glass.extra_approvals;
            if usize::try_from(needed).map_or(true, |n| n > listed) {
                let span = extra_field
                    .as_ref()
                    .or(break_glass_field.as_ref())
                    .and_then(|f| f.span.clone());
                self.error(
                    span,
                    &format!("{}.break_glass.extra_approvals", table.path),
                    format!(
                        "break-glass needs {needed} approval{} ({} + {} extra) but only {}",
                        plural(needed as usize),
                        env.approvals_required,
                        env.break_glass.extra_approvals,
                        approvers_listed(listed)
                    ),
                );
            }
        }
        // An override's analysis replaces the section's whole: its checks, and its rules.
        if let Some(f) = table.take("analysis") {
            env.analysis = self.analysis(&f, env.verification_window);
        }
        if env.prevent_self_approval {
            // Self-approval is detected through the Slack → GitHub mapping; an approver without
            // one could approve their own deploy unnoticed.
            for (id, item) in env.approvers.iter().zip(&approver_fields) {
                if identities.contains_key(id) {
                    continue;
                }
                self.fail(
                    item,
                    format!("approver {id} has no GitHub login in [identities], so self-approval cannot be checked (prevent_self_approval is on)"),
                );
            }
        }
        (env, promotion, drill)
    }

    /// `[analysis]` at the root: `[analysis.sources.<name>]`.
    fn analysis_sources(&mut self, field: &Field<'_>) -> BTreeMap<String, MetricSourceSpec> {
        let mut out = BTreeMap::new();
        let Some(mut root) = self.table(field, ANALYSIS_ROOT_KEYS) else {
            return out;
        };
        if let Some(f) = root.take("sources") {
            if let Some(mut sources) = self.table(&f, &[]) {
                for (name, _, item) in sources.take_all() {
                    // Declared is enough for checks to name it: a source with mistakes of its
                    // own is reported once, not again at every check that uses it.
                    let source = self.metric_source(&item);
                    let cloudwatch = source
                        .as_ref()
                        .map(|s| matches!(s, MetricSourceSpec::CloudWatch { .. }));
                    self.source_names.insert(name.to_string(), cloudwatch);
                    if let Some(source) = source {
                        out.insert(name.to_string(), source);
                    }
                }
                sources.finish(self);
            }
        }
        root.finish(self);
        out
    }

    fn metric_source(&mut self, field: &Field<'_>) -> Option<MetricSourceSpec> {
        let mut table = self.table(field, SOURCE_KEYS)?;
        let kind_field = self.required(&mut table, "type")?;
        let kind = self.text(&kind_field)?;
        if kind == "cloudwatch" {
            for key in [
                "url",
                "bearer_token_var",
                "basic_user",
                "basic_password_var",
            ] {
                if let Some(f) = table.take(key) {
                    self.fail(
                        &f,
                        "a CloudWatch source uses the function's own AWS credentials; remove it",
                    );
                }
            }
            let region = match table.take("region") {
                Some(f) => {
                    let region = self.text(&f)?;
                    let valid = region
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if !valid {
                        self.fail(
                            &f,
                            format!("{region:?} is not an AWS region (e.g. eu-west-1)"),
                        );
                        return None;
                    }
                    Some(region)
                }
                None => None,
            };
            table.finish(self);
            return Some(MetricSourceSpec::CloudWatch { region });
        }
        if let Some(f) = table.take("region") {
            self.fail(&f, "region is for a CloudWatch source");
        }
        let url = self.required(&mut table, "url").and_then(|f| {
            let url = self.text(&f)?;
            if url.starts_with("https://") || url.starts_with("http://") {
                Some(url)
            } else {
                self.fail(&f, "must be an http:// or https:// URL");
                None
            }
        });
        let var = |cx: &mut Self, f: Field<'_>| {
            let name = cx.text(&f)?;
            if name.starts_with(ANALYSIS_VAR_PREFIX) && is_env_var_name(&name) {
                Some(name)
            } else {
                cx.fail(
                    &f,
                    format!("{name:?}: name a variable starting with {ANALYSIS_VAR_PREFIX} (the policy names where a secret is, never the secret)"),
                );
                None
            }
        };
        let bearer = table.take("bearer_token_var");
        let user = table.take("basic_user");
        let password = table.take("basic_password_var");
        let auth = match (bearer, user, password) {
            (None, None, None) => Some(PrometheusAuthSpec::None),
            (Some(b), None, None) => {
                var(self, b).map(|token_var| PrometheusAuthSpec::Bearer { token_var })
            }
            (None, Some(u), Some(p)) => {
                let user = self.text(&u);
                let password_var = var(self, p);
                user.zip(password_var)
                    .map(|(user, password_var)| PrometheusAuthSpec::Basic { user, password_var })
            }
            (Some(b), _, _) => {
                self.fail(
                    &b,
                    "use bearer_token_var or basic_user with basic_password_var, not both",
                );
                None
            }
            (None, Some(f), None) | (None, None, Some(f)) => {
                self.fail(&f, "basic_user and basic_password_var go together");
                None
            }
        };
        table.finish(self);
        match kind.as_str() {
            "prometheus" => Some(MetricSourceSpec::Prometheus {
                url: url?,
                auth: auth?,
            }),
            other => {
                self.fail(
                    &kind_field,
                    format!(
                        "unknown source type {other:?} (known: \"prometheus\", \"cloudwatch\")"
                    ),
                );
                None
            }
        }
    }

    /// `[environments.<name>.analysis]`, checked against the environment's verification
    /// window.
    fn analysis(&mut self, field: &Field<'_>, window: Duration) -> Option<AnalysisPolicy> {
        let mut table = self.table(field, ANALYSIS_KEYS)?;
        let inconclusive = match table.take("inconclusive") {
            Some(f) => match self.text(&f).as_deref() {
                Some("fail") => Some(Inconclusive::FailAtWindowEnd),
                Some("pass") => Some(Inconclusive::PassAtWindowEnd),
                Some(other) => {
                    self.fail(
                        &f,
                        format!("{other:?}: \"fail\" (the default: an undecided deployment fails when its window ends) or \"pass\""),
                    );
                    None
                }
                None => None,
            },
            None => Some(Inconclusive::default()),
        };
        let end_early = match table.take("end_early") {
            Some(f) => self.bool(&f),
            None => Some(false),
        };
        let mut checks = Vec::new();
        let mut names = BTreeSet::new();
        if let Some(f) = self.required(&mut table, "checks") {
            let items = self.array(&f).unwrap_or_default();
            if items.is_empty() {
                self.fail(&f, "list at least one check (or remove [analysis])");
            }
            for item in items {
                let (name, check) = self.check(&item, window);
                if let Some(name) = name {
                    if !names.insert(name.clone()) {
                        self.fail(&item, format!("duplicate check name {name:?}"));
                        continue;
                    }
                }
                checks.extend(check);
            }
        }
        table.finish(self);
        Some(AnalysisPolicy {
            checks,
            inconclusive: inconclusive?,
            end_early: end_early?,
        })
    }

    /// A check and, even when the check has mistakes, its name.
    fn check(
        &mut self,
        field: &Field<'_>,
        window: Duration,
    ) -> (Option<String>, Option<AnalysisCheck>) {
        let Some(mut table) = self.table(field, CHECK_KEYS) else {
            return (None, None);
        };
        let name = self
            .required(&mut table, "name")
            .and_then(|f| self.text(&f));
        let mut cloudwatch = false;
        let source = self.required(&mut table, "source").and_then(|f| {
            let source = self.text(&f)?;
            if let Some(kind) = self.source_names.get(&source) {
                cloudwatch = *kind == Some(true);
                Some(source)
            } else {
                let known: Vec<String> = self.source_names.keys().cloned().collect();
                self.fail(
                    &f,
                    format!(
                        "no source {source:?} in [analysis.sources] ({})",
                        if known.is_empty() {
                            "none defined".to_string()
                        } else {
                            quoted(&known)
                        }
                    ),
                );
                None
            }
        });
        let query = self.required(&mut table, "query").and_then(|f| {
            let query = self.text(&f)?;
            let facts: Vec<(&str, &str)> =
                analysis::PLACEHOLDERS.iter().map(|p| (*p, "x")).collect();
            let rendered = match analysis::render_query(&query, &facts) {
                Ok(rendered) => rendered,
                Err(message) => {
                    self.fail(&f, message);
                    return None;
                }
            };
            if cloudwatch {
                if let Err(message) = analysis::check_cloudwatch_queries(&rendered) {
                    self.fail(&f, message);
                    return None;
                }
            }
            Some(query)
        });
        let condition_field = self.required(&mut table, "condition");
        let condition = condition_field.as_ref().and_then(|f| {
            let text = self.text(f)?;
            match Condition::parse(&text) {
                Ok(c) => Some(c),
                Err(message) => {
                    self.fail(f, message);
                    None
                }
            }
        });
        let interval = match table.take("interval") {
            Some(f) => self.duration(&f, Duration::from_secs(10)),
            None => Some(Duration::from_secs(60)),
        };
        let count_field = table.take("count");
        let count = match &count_field {
            Some(f) => self.u32(f, 1, 1_000),
            None => Some(5),
        };
        let failure_limit = match table.take("failure_limit") {
            Some(f) => match self.u32(&f, 0, 1_000) {
                None => None,
                Some(limit) if count.is_some_and(|c| limit >= c) => {
                    self.fail(&f, format!("must be below count ({}): with as many failures allowed as samples taken, the check cannot fail", count.unwrap_or(0)));
                    None
                }
                Some(limit) => Some(limit),
            },
            None => Some(0),
        };
        let baseline_field = table.take("baseline");
        let baseline = match &baseline_field {
            Some(f) => self.duration(f, Duration::from_secs(60)).map(Some),
            None => Some(None),
        };
        match (&condition, &baseline) {
            (Some(c), Some(None)) if c.needs_baseline() => {
                if let Some(f) = &condition_field {
                    self.fail(f, "a condition relative to the baseline needs baseline = \"1h\" (the span before the deploy it is measured over)");
                }
            }
            (Some(c), Some(Some(_))) if !c.needs_baseline() => {
                if let Some(f) = &baseline_field {
                    self.fail(f, "the condition does not use the baseline; write it as \"<= baseline * 1.2\", or remove baseline");
                }
            }
            _ => {}
        }
        if let (Some(interval), Some(count)) = (interval, count) {
            let needed = interval.saturating_mul(count);
            if needed > window {
                let span = count_field
                    .as_ref()
                    .and_then(|f| f.span.clone())
                    .or(field.span.clone());
                self.error(
                    span,
                    &table.child_path("count"),
                    format!(
                        "{count} sample{} every {} take {}, longer than the verification window ({})",
                        plural(count as usize),
                        super::format_duration(interval),
                        super::format_duration(needed),
                        super::format_duration(window)
                    ),
                );
            }
        }
        table.finish(self);
        let check = (|| {
            Some(AnalysisCheck {
                name: name.clone()?,
                source: source?,
                query: query?,
                condition: condition?,
                interval: interval?,
                rule: SampleRule {
                    count: count?,
                    failure_limit: failure_limit?,
                },
                baseline: baseline?,
            })
        })();
        (name, check)
    }

    /// A list of Slack user ids, each checked and listed once; with the field of each kept id.
    fn slack_user_ids<'t>(&mut self, field: &Field<'t>) -> (Vec<String>, Vec<Field<'t>>) {
        let mut ids = Vec::new();
        let mut fields = Vec::new();
        for (id, item) in self.strings(field).unwrap_or_default() {
            if !is_slack_user_id(&id) {
                self.fail(
                    &item,
                    format!("{id:?} does not look like a Slack user id (U or W followed by capitals and digits, e.g. U024BE7LH)"),
                );
            } else if ids.contains(&id) {
                self.fail(&item, format!("{id} is listed twice"));
            } else {
                ids.push(id);
                fields.push(item);
            }
        }
        (ids, fields)
    }

    fn rollback(&mut self, field: &Field<'_>) -> Option<RollbackMethod> {
        let mut table = self.table(field, ROLLBACK_KEYS)?;
        let method = self.required(&mut table, "method");
        let workflow = table.take("workflow");
        let git_ref = table.take("ref");
        let result = match method.as_ref().and_then(|f| self.string(f)).as_deref() {
            Some("redeploy") => {
                for extra in [&workflow, &git_ref].into_iter().flatten() {
                    self.fail(extra, "only used with method = \"workflow\"");
                }
                Some(RollbackMethod::Redeploy)
            }
            Some("workflow") => {
                let git_ref = git_ref.and_then(|f| self.text(&f));
                match workflow {
                    None => {
                        self.error(
                            field.span.clone(),
                            &table.child_path("workflow"),
                            "method = \"workflow\" needs the workflow file to dispatch, e.g. workflow = \"rollback.yml\"",
                        );
                        None
                    }
                    Some(f) => {
                        let name = self.text(&f)?;
                        let is_file = (name.ends_with(".yml") || name.ends_with(".yaml"))
                            && !name.contains('/');
                        if is_file || name.bytes().all(|b| b.is_ascii_digit()) {
                            Some(RollbackMethod::Workflow {
                                workflow: name,
                                git_ref,
                            })
                        } else {
                            self.fail(&f, "expected a workflow file name such as \"rollback.yml\" (or a workflow id)");
                            None
                        }
                    }
                }
            }
            Some(other) => {
                if let Some(f) = &method {
                    self.fail(
                        f,
                        format!(
                            "unknown rollback method {other:?}; use \"redeploy\" or \"workflow\""
                        ),
                    );
                }
                None
            }
            None => None,
        };
        table.finish(self);
        result
    }

    fn window(&mut self, field: &Field<'_>) -> Option<DeployWindow> {
        let mut table = self.table(field, WINDOW_KEYS)?;
        let days = self.required(&mut table, "days").and_then(|f| {
            let items = self.array(&f)?;
            if items.is_empty() {
                self.fail(&f, "needs at least one day");
                return None;
            }
            let mut days = Vec::new();
            let mut ok = true;
            for item in items {
                let Some(text) = self.string(&item) else {
                    ok = false;
                    continue;
                };
                match parse_weekday(&text) {
                    Some(day) if !days.contains(&day) => days.push(day),
                    Some(_) => {}
                    None => {
                        self.fail(
                            &item,
                            format!(
                                "unknown weekday {text:?}; use mon, tue, wed, thu, fri, sat or sun"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            days.sort_by_key(|d: &jiff::civil::Weekday| d.to_monday_zero_offset());
            ok.then_some(days)
        });
        let mut time = |cx: &mut Self, key: &str| {
            let f = cx.required(&mut table, key)?;
            let text = cx.string(&f)?;
            match TimeOfDay::parse(&text) {
                Some(t) => Some((t, f)),
                None => {
                    cx.fail(
                        &f,
                        format!("invalid time {text:?}; use HH:MM between 00:00 and 24:00"),
                    );
                    None
                }
            }
        };
        let start = time(self, "start");
        let end = time(self, "end");
        let timezone = self.timezone(&mut table);
        table.finish(self);
        let ((start, _), (end, end_field)) = (start?, end?);
        if start >= end {
            self.fail(
                &end_field,
                format!("the window ends at {end}, not after its start {start}; write an overnight window as two windows (e.g. 22:00-24:00 and 00:00-06:00 on the next day)"),
            );
            return None;
        }
        let (timezone, timezone_name) = timezone?;
        Some(DeployWindow {
            days: days?,
            start,
            end,
            timezone,
            timezone_name,
        })
    }

    fn freeze(&mut self, field: &Field<'_>) -> Option<Freeze> {
        let mut table = self.table(field, FREEZE_KEYS)?;
        let mut date = |cx: &mut Self, key: &str| {
            let f = cx.required(&mut table, key)?;
            let text = match &f.node.kind {
                Kind::String(s) | Kind::Datetime(s) => s.clone(),
                _ => {
                    cx.wrong_type(&f, "a date (\"YYYY-MM-DD\")");
                    return None;
                }
            };
            match text.parse::<jiff::civil::Date>() {
                Ok(d) if text.len() == 10 => Some((d, f)),
                _ => {
                    cx.fail(&f, format!("invalid date {text:?}; use YYYY-MM-DD"));
                    None
                }
            }
        };
        let from = date(self, "from");
        let to = date(self, "to");
        let timezone = self.timezone(&mut table);
        let reason = self
            .required(&mut table, "reason")
            .and_then(|f| self.text(&f));
        table.finish(self);
        let ((from, _), (to, to_field)) = (from?, to?);
        if from > to {
            self.fail(
                &to_field,
                format!("the freeze ends on {to}, before it starts on {from}"),
            );
            return None;
        }
        let (timezone, timezone_name) = timezone?;
        Some(Freeze {
            from,
            to,
            timezone,
            timezone_name,
            reason: reason?,
        })
    }
}

/// Finds a path `from -> ... -> to` along promotion edges (env -> the envs it promotes from).
fn find_path<'g>(
    graph: &BTreeMap<&'g str, Vec<&'g str>>,
    from: &'g str,
    to: &str,
) -> Option<Vec<&'g str>> {
    let mut stack = vec![vec![from]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = *path.last()?;
        if last == to {
            return Some(path);
        }
        if !seen.insert(last) {
            continue;
        }
        for next in graph.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next);
            stack.push(longer);
        }
    }
    None
}

fn unknown_environment<'k>(
    name: &str,
    known: impl Iterator<Item = &'k (impl AsRef<str> + ?Sized + 'k)>,
) -> String {
    let known: Vec<&str> = known.map(AsRef::as_ref).collect();
    format!(
        "unknown environment {name:?} (defined: {})",
        known.join(", ")
    )
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn approvers_listed(n: usize) -> String {
    if n == 1 {
        "1 approver is listed".to_owned()
    } else {
        format!("{n} approvers are listed")
    }
}

fn parse_weekday(text: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::*;
    Some(match text.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Monday,
        "tue" | "tuesday" => Tuesday,
        "wed" | "wednesday" => Wednesday,
        "thu" | "thursday" => Thursday,
        "fri" | "friday" => Friday,
        "sat" | "saturday" => Saturday,
        "sun" | "sunday" => Sunday,
        _ => return None,
    })
}

/// Slack user ids: `U` or `W` followed by capitals and digits (`U024BE7LH`).
fn is_slack_user_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('U' | 'W'))
        && id.len() >= 7
        && id.len() <= 21
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn is_github_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 39
        && !login.starts_with('-')
        && !login.ends_with('-')
        && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// DynamoDB table names.
fn is_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// A shallow check of an EventBridge schedule expression; EventBridge has the final word.
fn validate_schedule(expression: &str) -> Result<(), String> {
    const HELP: &str =
        "use an EventBridge expression such as \"rate(1 day)\" or \"cron(0 3 * * ? *)\"";
    if let Some(inner) = expression
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'))
    {
        let mut parts = inner.split_whitespace();
        let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("invalid rate expression {expression:?}; {HELP}"));
        };
        let value: u32 =
            value.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                format!("the rate in {expression:?} must be a positive whole number")
            })?;
        let singular = ["minute", "hour", "day"].contains(&unit);
        let plural = ["minutes", "hours", "days"].contains(&unit);
        return match (value == 1, singular, plural) {
            (true, true, _) | (false, _, true) => Ok(()),
            (true, false, true) => Err(format!("EventBridge wants the singular unit for 1 in {expression:?} (e.g. \"rate(1 day)\")")),
            (false, true, _) => Err(format!("EventBridge wants the plural unit in {expression:?} (e.g. \"rate({value} days)\")")),
            _ => Err(format!("unknown unit {unit:?} in {expression:?}; use minute(s), hour(s) or day(s)")),
        };
    }
    if let Some(inner) = expression
        .strip_prefix("cron(")
        .and_then(|s| s.strip_suffix(')'))
    {
        let fields = inner.split_whitespace().count();
        return if fields == 6 {
            Ok(())
        } else {
            Err(format!("a cron expression has 6 fields (minutes hours day-of-month month day-of-week year), {expression:?} has {fields}"))
        };
    }
    Err(format!("invalid schedule {expression:?}; {HELP}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_expressions_are_checked_shallowly() {
        assert!(validate_schedule("rate(1 day)").is_ok());
        assert!(validate_schedule("rate(12 hours)").is_ok());
        assert!(validate_schedule("cron(0 3 * * ? *)").is_ok());
        assert!(validate_schedule("rate(1 days)").is_err());
        assert!(validate_schedule("rate(2 day)").is_err());
        assert!(validate_schedule("rate(0 days)").is_err());
        assert!(validate_schedule("cron(0 3 * * *)").is_err());
        assert!(validate_schedule("daily").is_err());
    }

    #[test]
    fn slack_ids_and_logins_are_recognised() {
        assert!(is_slack_user_id("U024BE7LH"));
        assert!(is_slack_user_id("W012A3CDE"));
        assert!(!is_slack_user_id("octocat"));
        assert!(!is_slack_user_id("C0STAGING"));
        assert!(is_github_login("octo-cat"));
        assert!(!is_github_login("-octo"));
    }
}
