//! The policy: what may be deployed where, when, and with whose approval.
//!
//! One TOML file (see `shared/policy.example.toml` and `docs/policy.md`) is parsed into a
//! [`Policy`]; every problem in the file is reported with `FILE:LINE:COLUMN` and the dotted
//! field path, all at once. [`evaluate`] is the pure decision function the gate runs for each
//! deployment request: it takes the environment's policy, the request, the facts read from the
//! store and `now`, and says approve, reject (naming the rule) or wait for approvals.
//!
//! A section may be limited to some repositories (`repos`) and have per-repository
//! `[[overrides]]`; [`Policy::for_scope`] answers the rules for one (repository, environment)
//! and where each came from, or why no section governs it.

mod decode;
mod duration;
mod evaluate;
mod glob;
mod scope;
mod tree;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use duration::{format_duration, parse_duration};
pub use evaluate::{
    evaluate, evaluate_for, evaluate_in_scope, Check, Decision, GateFacts, GateKind, GateRequest,
    Rule,
};
pub use glob::{ref_matches, repo_matches};
pub use scope::{EffectivePolicy, NotGoverned, Position, Source, OVERRIDABLE_KEYS};

/// The example policy shipped with shipgate; `shipgate demo` runs on it.
pub const EXAMPLE_POLICY: &str = include_str!("../../../policy.example.toml");

/// Canonical alert severity; raw alert labels are mapped onto it by `[alerts.severity_map]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Critical, Severity::Warning, Severity::Info];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// Parses the canonical lowercase name only (`critical`, `warning`, `info`).
    pub fn parse(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    identities: BTreeMap<String, String>,
    alerts: AlertsPolicy,
    notifications: NotificationsPolicy,
    backups: BackupsPolicy,
    probes: Vec<Probe>,
    environments: BTreeMap<String, EnvironmentPolicy>,
    /// Per section: which repositories it governs and its overrides.
    scopes: BTreeMap<String, scope::Scope>,
    /// `[services]`: an alert's service label → the repository it is about.
    services: BTreeMap<String, crate::domain::ids::RepoName>,
    /// `[analysis.sources]`: the metric stores analysis checks query, by name.
    analysis_sources: BTreeMap<String, MetricSourceSpec>,
}

impl Policy {
    /// Parses and validates a policy. `file_name` only labels error positions.
    pub fn parse(file_name: &str, text: &str) -> Result<Policy, PolicyErrors> {
        decode::decode(file_name, text)
    }

    /// Reads `path` and parses it; errors are labelled with the path as given.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyLoadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Policy::parse(&path.display().to_string(), &text)?)
    }

    /// The example policy, parsed.
    pub fn example() -> Result<Policy, PolicyErrors> {
        Policy::parse("policy.example.toml", EXAMPLE_POLICY)
    }

    /// The section `[environments.NAME]` as written, without overrides: for environment-wide
    /// uses (its notification channel, drills, the promotion chain). Decisions about one
    /// repository's deployment use [`Policy::for_scope`].
    pub fn environment(&self, name: &str) -> Option<&EnvironmentPolicy> {
        self.environments.get(name)
    }

    /// The `repos` patterns of section `name`: `None` when it governs every repository (or
    /// is not defined).
    pub fn section_repos(&self, name: &str) -> Option<&[String]> {
        self.scopes
            .get(name)
            .and_then(|s| s.repos.as_ref())
            .map(|(patterns, _)| patterns.as_slice())
    }

    /// The `repos` of each of section `name`'s overrides, in file order.
    pub fn override_repos(&self, name: &str) -> Vec<&[String]> {
        self.scopes
            .get(name)
            .map(|s| s.overrides.iter().map(|o| o.repos.as_slice()).collect())
            .unwrap_or_default()
    }

    pub fn environments(&self) -> impl Iterator<Item = &EnvironmentPolicy> {
        self.environments.values()
    }

    /// The environments' names, production first (DORA's figures are about production),
    /// each group in the policy's order: how reports and the dashboard list them.
    pub fn environment_names_production_first(&self) -> Vec<String> {
        let (mut production, others): (Vec<String>, Vec<String>) = self
            .environments()
            .map(|e| e.name.clone())
            .partition(|name| self.is_production(name));
        production.extend(others);
        production
    }

    /// Is `environment` production for DORA? Its `production` key when set; otherwise
    /// production when no other environment promotes from it (the end of its chain). An
    /// environment the policy does not know is not.
    pub fn is_production(&self, environment: &str) -> bool {
        let Some(env) = self.environments.get(environment) else {
            return false;
        };
        env.production.unwrap_or_else(|| {
            !self
                .environments
                .values()
                .any(|other| other.name != env.name && other.promotion_from.contains(&env.name))
        })
    }

    /// The GitHub login mapped to a Slack user id in `[identities]`.
    pub fn slack_user_login(&self, slack_id: &str) -> Option<&str> {
        self.identities.get(slack_id).map(String::as_str)
    }

    /// The Slack user id mapped to a GitHub login (logins compare case-insensitively, as on
    /// GitHub).
    pub fn github_login_slack_id(&self, login: &str) -> Option<&str> {
        self.identities
            .iter()
            .find(|(_, l)| l.eq_ignore_ascii_case(login))
            .map(|(id, _)| id.as_str())
    }

    /// All `[identities]`: Slack user id → GitHub login.
    pub fn identities(&self) -> &BTreeMap<String, String> {
        &self.identities
    }

    /// Maps a raw alert severity label value (case-insensitive) onto a canonical severity.
    pub fn canonical_severity(&self, raw: &str) -> Option<Severity> {
        self.alerts.canonical_severity(raw)
    }

    pub fn alerts(&self) -> &AlertsPolicy {
        &self.alerts
    }

    /// Labels that name an alert's environment, in priority order.
    pub fn environment_labels(&self) -> &[String] {
        &self.alerts.environment_labels
    }

    /// Labels that name an alert's service, in priority order.
    pub fn service_labels(&self) -> &[String] {
        &self.alerts.service_labels
    }

    /// The repository an alert's service is about: its `[services]` entry, else
    /// `{default_owner}/{service}` when `[alerts] default_owner` is set, else none (an alert
    /// the policy cannot route acts at environment level and rolls nothing back).
    pub fn repository_for_service(&self, service: &str) -> Option<crate::domain::ids::RepoName> {
        if let Some(repo) = self.services.get(service) {
            return Some(repo.clone());
        }
        let owner = self.alerts.default_owner.as_deref()?;
        crate::domain::ids::RepoName::parse(&format!("{owner}/{service}")).ok()
    }

    /// The `[services]` name of `repo`, if it has one.
    pub fn service_of(&self, repo: &crate::domain::ids::RepoName) -> Option<&str> {
        self.services
            .iter()
            .find(|(_, r)| *r == repo)
            .map(|(name, _)| name.as_str())
    }

    /// The label that carries an alert's raw severity.
    pub fn severity_label(&self) -> &str {
        &self.alerts.severity_label
    }

    pub fn notifications(&self) -> &NotificationsPolicy {
        &self.notifications
    }

    pub fn backups(&self) -> &BackupsPolicy {
        &self.backups
    }

    pub fn probes(&self) -> &[Probe] {
        &self.probes
    }

    /// `[analysis.sources]`, by name.
    pub fn analysis_sources(&self) -> &BTreeMap<String, MetricSourceSpec> {
        &self.analysis_sources
    }
}

/// `[alerts]`: how alert labels map onto environments, services and severities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsPolicy {
    pub environment_labels: Vec<String>,
    pub service_labels: Vec<String>,
    pub severity_label: String,
    /// Lowercased raw label value → canonical severity (defaults merged with the file's).
    pub severity_map: BTreeMap<String, Severity>,
    /// Owner of the repository named like a service that `[services]` does not list; none
    /// by default (see [`Policy::repository_for_service`]).
    pub default_owner: Option<String>,
    /// How long before a deployment went out an alert may have begun and still be
    /// attributed to it (clocks differ, and a rollout serves traffic before GitHub hears of
    /// its success). Default 60 s.
    pub start_tolerance: Duration,
}

/// The default `[alerts] start_tolerance`.
pub const DEFAULT_START_TOLERANCE: Duration = Duration::from_secs(60);

impl AlertsPolicy {
    pub fn canonical_severity(&self, raw: &str) -> Option<Severity> {
        self.severity_map.get(&raw.trim().to_lowercase()).copied()
    }
}

impl Default for AlertsPolicy {
    fn default() -> Self {
        Self {
            environment_labels: vec!["env".to_owned(), "environment".to_owned()],
            service_labels: vec!["service".to_owned(), "app".to_owned()],
            severity_label: "severity".to_owned(),
            severity_map: [
                ("critical", Severity::Critical),
                ("page", Severity::Critical),
                ("warning", Severity::Warning),
                ("warn", Severity::Warning),
                ("info", Severity::Info),
            ]
            .into_iter()
            .map(|(raw, severity)| (raw.to_owned(), severity))
            .collect(),
            default_owner: None,
            start_tolerance: DEFAULT_START_TOLERANCE,
        }
    }
}

/// `[notifications]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationsPolicy {
    /// Severity → name of the environment variable that holds the PagerDuty routing key. The
    /// key itself never appears in the policy.
    pub pagerduty_routing_keys: BTreeMap<Severity, String>,
}

impl NotificationsPolicy {
    /// The environment variable naming the routing key for `severity`, if paging is set up.
    pub fn pagerduty_routing_key_var(&self, severity: Severity) -> Option<&str> {
        self.pagerduty_routing_keys
            .get(&severity)
            .map(String::as_str)
    }
}

/// `[backups]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupsPolicy {
    /// Tables to back up; always starts with `shipgate`.
    pub tables: Vec<String>,
    /// EventBridge schedule expression, `rate(...)` or `cron(...)`.
    pub schedule: String,
    pub retention_days: u32,
    pub keep_daily: u32,
}

/// The table shipgate keeps its own state in; always backed up.
pub const SHIPGATE_TABLE: &str = "shipgate";

impl Default for BackupsPolicy {
    fn default() -> Self {
        Self {
            tables: vec![SHIPGATE_TABLE.to_owned()],
            schedule: "rate(1 day)".to_owned(),
            retention_days: 90,
            keep_daily: 7,
        }
    }
}

/// One `[[probes]]` synthetic health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub url: String,
    pub expect_status: u16,
    pub timeout: Duration,
    pub failures_before_incident: u32,
    pub environment: String,
}

/// `[analysis.sources.<name>]`: a metric store analysis queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricSourceSpec {
    /// A Prometheus server's HTTP API (or one that speaks it: Thanos, Mimir, VictoriaMetrics).
    Prometheus {
        url: String,
        auth: PrometheusAuthSpec,
    },
    /// CloudWatch `GetMetricData`, with the function's own credentials; `region` when not the
    /// stack's.
    CloudWatch { region: Option<String> },
}

/// How shipgate authenticates to a Prometheus source; secrets are named by variable, never
/// written in the policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PrometheusAuthSpec {
    #[default]
    None,
    /// `bearer_token_var`: the variable holding the token.
    Bearer { token_var: String },
    /// `basic_user` and `basic_password_var`.
    Basic { user: String, password_var: String },
}

/// What every variable a source's credentials are read from must start with, so that the
/// policy cannot name any other secret.
pub const ANALYSIS_VAR_PREFIX: &str = "SHIPGATE_ANALYSIS_";

/// `[environments.<name>.analysis]`: the checks a deployment is judged by while it verifies.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisPolicy {
    pub checks: Vec<AnalysisCheck>,
    /// What checks still undecided when the window ends mean.
    pub inconclusive: crate::domain::analysis::Inconclusive,
    /// Whether a deployment whose checks all passed succeeds before its window ends.
    pub end_early: bool,
}

/// `[[environments.<name>.analysis.checks]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisCheck {
    pub name: String,
    /// The name of an `[analysis.sources.<name>]`.
    pub source: String,
    /// The query, with `{{placeholders}}` for the deployment's facts.
    pub query: String,
    pub condition: crate::domain::analysis::Condition,
    /// Time between samples; the first is taken one interval after verification begins.
    pub interval: Duration,
    pub rule: crate::domain::analysis::SampleRule,
    /// With a relative condition: the span before verification began whose mean is the
    /// baseline.
    pub baseline: Option<Duration>,
}

/// `[environments.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentPolicy {
    pub name: String,
    /// Ref globs; `None` when the key is absent, which allows any ref.
    pub allowed_refs: Option<Vec<String>>,
    pub promotion_from: Vec<String>,
    pub approvals_required: u32,
    /// Slack user ids allowed to approve.
    pub approvers: Vec<String>,
    /// Slack user ids allowed to press "Roll back"; empty means the approvers.
    pub rollback_requesters: Vec<String>,
    pub prevent_self_approval: bool,
    pub require_reject_reason: bool,
    pub approval_ttl: Duration,
    pub verification_window: Duration,
    /// How long a request waits in its scope's queue for the lock before it is rejected;
    /// zero turns the queue off (a locked scope rejects at once).
    pub queue_wait: Duration,
    /// How long a deployment may be approved or deploying with GitHub saying nothing about it
    /// before the sweeper fails it and frees its lock.
    pub deploy_timeout: Duration,
    pub block_on_critical_incident: bool,
    pub rollback_on: Vec<Severity>,
    /// Which alerts of a `rollback_on` severity roll a verifying deployment back.
    pub rollback_alerts: RollbackAlerts,
    /// Is this a production environment for DORA? `None`: the default, production when no
    /// other environment promotes from it ([`super::Policy::is_production`]).
    pub production: Option<bool>,
    pub rollback: RollbackMethod,
    pub pre_deploy_backups: Vec<String>,
    pub slack_channel: Option<String>,
    pub rollback_drill: bool,
    /// Deploys are allowed inside any of these; empty means at any time.
    pub windows: Vec<DeployWindow>,
    pub freezes: Vec<Freeze>,
    pub break_glass: BreakGlass,
    /// Checks of the deployment's metrics while it verifies; `None`: alerts alone decide.
    pub analysis: Option<AnalysisPolicy>,
}

/// The default `queue_wait`: room for a few deploys with their default 15-minute windows
/// ahead; a run still waiting after that deploys a build the world has moved past.
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(3600);

/// The default `deploy_timeout`: longer than GitHub Actions' deploy jobs usually take, short
/// enough that a lost status does not keep a scope locked for a working day.
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(3600);

impl EnvironmentPolicy {
    /// An environment with every default: any ref, no approvals, no windows or freezes.
    pub fn with_defaults(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            allowed_refs: None,
            promotion_from: Vec::new(),
            approvals_required: 0,
            approvers: Vec::new(),
            rollback_requesters: Vec::new(),
            prevent_self_approval: true,
            require_reject_reason: false,
            approval_ttl: Duration::from_secs(4 * 3600),
            verification_window: Duration::from_secs(15 * 60),
            queue_wait: DEFAULT_QUEUE_WAIT,
            deploy_timeout: DEFAULT_DEPLOY_TIMEOUT,
            block_on_critical_incident: true,
            rollback_on: vec![Severity::Critical],
            rollback_alerts: RollbackAlerts::BeganAfterDeploy,
            production: None,
            rollback: RollbackMethod::Redeploy,
            pre_deploy_backups: Vec::new(),
            slack_channel: None,
            rollback_drill: false,
            windows: Vec::new(),
            freezes: Vec::new(),
            break_glass: BreakGlass::default(),
            analysis: None,
        }
    }

    /// Is `slack_id` on this environment's approver list?
    pub fn is_approver(&self, slack_id: &str) -> bool {
        self.approvers.iter().any(|a| a == slack_id)
    }

    /// May `slack_id` start a manual rollback from Slack? Those listed in
    /// `rollback_requesters`, or, when that is empty, the approvers.
    pub fn may_request_rollback(&self, slack_id: &str) -> bool {
        if self.rollback_requesters.is_empty() {
            self.is_approver(slack_id)
        } else {
            self.rollback_requesters.iter().any(|a| a == slack_id)
        }
    }

    /// Does an alert of this severity roll a fresh deploy back?
    pub fn rolls_back_on(&self, severity: Severity) -> bool {
        self.rollback_on.contains(&severity)
    }
}

/// `rollback_alerts`: which alerts roll a verifying deployment back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RollbackAlerts {
    /// `"began_after_deploy"` (the default): only an alert attributed to the deployment, one
    /// that began after it went out (within `[alerts] start_tolerance`).
    #[default]
    BeganAfterDeploy,
    /// `"any_in_window"`: any alert arriving while it verifies, whenever it began.
    AnyInWindow,
}

impl RollbackAlerts {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackAlerts::BeganAfterDeploy => "began_after_deploy",
            RollbackAlerts::AnyInWindow => "any_in_window",
        }
    }
}

/// How an environment is rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackMethod {
    /// Create a GitHub deployment of the last known good sha.
    Redeploy,
    /// Dispatch a workflow (`workflow_dispatch`); `git_ref` `None` means the default branch.
    Workflow {
        workflow: String,
        git_ref: Option<String>,
    },
}

/// A time of day in minutes after midnight, `00:00` to `24:00` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub const MIDNIGHT: TimeOfDay = TimeOfDay(0);
    pub const END_OF_DAY: TimeOfDay = TimeOfDay(24 * 60);

    pub fn from_hm(hour: u8, minute: u8) -> Option<TimeOfDay> {
        let minutes = u16::from(hour) * 60 + u16::from(minute);
        (minute < 60 && minutes <= 24 * 60).then_some(TimeOfDay(minutes))
    }

    pub fn minutes(self) -> u16 {
        self.0
    }

    /// Parses `HH:MM` (`24:00` allowed as an end of day).
    pub fn parse(text: &str) -> Option<TimeOfDay> {
        let (h, m) = text.split_once(':')?;
        // Two ASCII digits each: `u8::from_str` alone would also take `+1`.
        let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return None;
        }
        TimeOfDay::from_hm(h.parse().ok()?, m.parse().ok()?)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// A weekly deploy window in a time zone: on `days`, from `start` (inclusive) to `end`
/// (exclusive), local time. Overnight windows are written as two windows.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployWindow {
    pub days: Vec<jiff::civil::Weekday>,
    pub start: TimeOfDay,
    pub end: TimeOfDay,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
}

/// A freeze: no deploys from `from` to `to` (both inclusive) in `timezone`'s calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct Freeze {
    pub from: jiff::civil::Date,
    pub to: jiff::civil::Date,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    pub reason: String,
}

/// The break-glass path through freezes, windows and incident blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlass {
    pub allowed: bool,
    /// Approvals needed on top of `approvals_required`.
    pub extra_approvals: u32,
    pub require_reason: bool,
}

impl Default for BreakGlass {
    fn default() -> Self {
        Self {
            allowed: false,
            extra_approvals: 1,
            require_reason: true,
        }
    }
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending field (`environments.production.approvals_required`);
    /// empty for TOML syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a policy file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    pub fn errors(&self) -> &[PolicyError] {
        &self.0
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// Why [`Policy::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("cannot read policy file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid policy:\n{0}")]
    Invalid(#[from] PolicyErrors),
}
