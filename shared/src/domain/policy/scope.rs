//! Which `[environments.NAME]` section governs a repository, and the rules that apply to one
//! (repository, environment) scope once the section's `[[overrides]]` are laid over it.
//!
//! A section without `repos` governs every repository that has an environment of its name; with
//! `repos` it governs the repositories matching one of the patterns. Each override names the
//! repositories it applies to and sets some of the section's keys; validation guarantees that
//! at most one override can set a given key for any one repository, so the order of overrides
//! never matters. [`Policy::for_scope`] answers the effective rules and where each came from.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;

use super::glob::repo_matches;
use super::{EnvironmentPolicy, Policy};
use crate::domain::ids::{EnvName, RepoName};

/// Keys an override may set; everything else in a section is environment-wide.
pub const OVERRIDABLE_KEYS: &[&str] = &[
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

/// Section keys an override may not set, and why.
pub(crate) const ENVIRONMENT_WIDE_KEYS: &[(&str, &str)] = &[
    (
        "promotion_from",
        "the promotion chain links environments, not repositories",
    ),
    (
        "slack_channel",
        "an environment's notifications go to one channel",
    ),
    (
        "rollback_drill",
        "rollback drills are scheduled per environment",
    ),
    (
        "production",
        "DORA reports an environment as production or not, for every repository",
    ),
    ("overrides", "overrides do not nest"),
];

/// Where something was written in the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Where an effective key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Not written anywhere: shipgate's default.
    Default,
    /// The section `[environments.NAME]` sets it, at this position.
    Section(Position),
    /// An override sets it: the override's position and its `repos`, and the key's position.
    Override {
        at: Position,
        repos: Vec<String>,
        key: Position,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Section(at) => write!(f, "{at}"),
            Source::Override { repos, key, .. } => {
                write!(f, "{key} (override for {})", repos.join(", "))
            }
        }
    }
}

/// One `[[environments.NAME.overrides]]` table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    pub(crate) at: Position,
    pub(crate) repos: Vec<String>,
    /// The keys it sets, with the position of each value.
    pub(crate) keys: BTreeMap<&'static str, Position>,
    /// The section with this override's keys applied; only `keys` are read from it.
    pub(crate) policy: EnvironmentPolicy,
}

/// How one section is scoped: its position, `repos` and overrides.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scope {
    pub(crate) at: Position,
    /// `None`: every repository.
    pub(crate) repos: Option<(Vec<String>, Position)>,
    /// The keys the section sets, with the position of each value.
    pub(crate) keys: BTreeMap<&'static str, Position>,
    pub(crate) overrides: Vec<Override>,
}

/// The rules for one (repository, environment), and where each came from.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub repo: RepoName,
    pub policy: EnvironmentPolicy,
    /// Position of the governing `[environments.NAME]` section.
    pub section: Position,
    /// The section's `repos`, when it has them.
    pub repos: Option<Vec<String>>,
    /// Every key of the section, in the policy file's documented order, with its source.
    pub sources: Vec<(&'static str, Source)>,
}

impl EffectivePolicy {
    /// Where `key`'s value came from.
    pub fn source(&self, key: &str) -> Option<&Source> {
        self.sources.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
    }
}

impl Deref for EffectivePolicy {
    type Target = EnvironmentPolicy;

    fn deref(&self) -> &EnvironmentPolicy {
        &self.policy
    }
}

/// Why no rules apply to a (repository, environment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotGoverned {
    #[error("environment {environment:?} is not defined in the policy; nothing deploys there")]
    UnknownEnvironment { environment: String },
    #[error("no policy section governs {repo} in {environment:?}: [environments.{environment}] at {at} governs only repos = [{}]", quoted(.repos))]
    RepoNotListed {
        repo: RepoName,
        environment: String,
        repos: Vec<String>,
        at: Position,
    },
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every key a section may hold, in the order `policy explain` prints them.
pub(crate) const SECTION_KEYS: &[&str] = &[
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
];

impl Policy {
    /// The rules for deployments of `repo` to `environment`: the section of that name if it
    /// governs the repository, with the overrides matching the repository applied.
    pub fn for_scope(
        &self,
        repo: &RepoName,
        environment: &EnvName,
    ) -> Result<EffectivePolicy, NotGoverned> {
        self.for_scope_str(repo, environment.as_str())
    }

    /// Does an alert of `severity` roll back a fresh deploy to `environment` in some
    /// repository: in the section's `rollback_on`, or in that of one of its overrides? For
    /// callers that know the environment before the repository; they decide for the
    /// repository with [`Policy::for_scope`] once they know it.
    pub fn rolls_back_on_in_some_scope(
        &self,
        environment: &str,
        severity: super::Severity,
    ) -> bool {
        let section = self
            .environments
            .get(environment)
            .is_some_and(|e| e.rolls_back_on(severity));
        section
            || self.scopes.get(environment).is_some_and(|scope| {
                scope
                    .overrides
                    .iter()
                    .any(|o| o.keys.contains_key("rollback_on") && o.policy.rolls_back_on(severity))
            })
    }

    /// [`Policy::for_scope`] for an environment name held as a string.
    pub fn for_scope_str(
        &self,
        repo: &RepoName,
        environment: &str,
    ) -> Result<EffectivePolicy, NotGoverned> {
        let (Some(section), Some(scope)) = (
            self.environments.get(environment),
            self.scopes.get(environment),
        ) else {
            return Err(NotGoverned::UnknownEnvironment {
                environment: environment.to_owned(),
            });
        };
        if let Some((patterns, _)) = &scope.repos {
            if !patterns.iter().any(|p| repo_matches(p, repo.as_str())) {
                return Err(NotGoverned::RepoNotListed {
                    repo: repo.clone(),
                    environment: environment.to_owned(),
                    repos: patterns.clone(),
                    at: scope.at.clone(),
                });
            }
        }
        let mut policy = section.clone();
        let mut sources: BTreeMap<&'static str, Source> = scope
            .keys
            .iter()
            .map(|(k, at)| (*k, Source::Section(at.clone())))
            .collect();
        for o in &scope.overrides {
            if !o.repos.iter().any(|p| repo_matches(p, repo.as_str())) {
                continue;
            }
            for (key, at) in &o.keys {
                apply_key(&mut policy, &o.policy, key);
                sources.insert(
                    key,
                    Source::Override {
                        at: o.at.clone(),
                        repos: o.repos.clone(),
                        key: at.clone(),
                    },
                );
            }
        }
        Ok(EffectivePolicy {
            repo: repo.clone(),
            policy,
            section: scope.at.clone(),
            repos: scope.repos.as_ref().map(|(p, _)| p.clone()),
            sources: SECTION_KEYS
                .iter()
                .map(|k| (*k, sources.remove(k).unwrap_or(Source::Default)))
                .collect(),
        })
    }
}

/// Copies one overridable key's value from `from` onto `to`.
pub(crate) fn apply_key(to: &mut EnvironmentPolicy, from: &EnvironmentPolicy, key: &str) {
    match key {
        "allowed_refs" => to.allowed_refs = from.allowed_refs.clone(),
        "approvals_required" => to.approvals_required = from.approvals_required,
        "approvers" => to.approvers = from.approvers.clone(),
        "rollback_requesters" => to.rollback_requesters = from.rollback_requesters.clone(),
        "prevent_self_approval" => to.prevent_self_approval = from.prevent_self_approval,
        "require_reject_reason" => to.require_reject_reason = from.require_reject_reason,
        "approval_ttl" => to.approval_ttl = from.approval_ttl,
        "verification_window" => to.verification_window = from.verification_window,
        "queue_wait" => to.queue_wait = from.queue_wait,
        "deploy_timeout" => to.deploy_timeout = from.deploy_timeout,
        "block_on_critical_incident" => {
            to.block_on_critical_incident = from.block_on_critical_incident
        }
        "rollback_on" => to.rollback_on = from.rollback_on.clone(),
        "rollback_alerts" => to.rollback_alerts = from.rollback_alerts,
        "rollback" => to.rollback = from.rollback.clone(),
        "pre_deploy_backups" => to.pre_deploy_backups = from.pre_deploy_backups.clone(),
        "windows" => to.windows = from.windows.clone(),
        "freezes" => to.freezes = from.freezes.clone(),
        "break_glass" => to.break_glass = from.break_glass.clone(),
        "analysis" => to.analysis = from.analysis.clone(),
        _ => {}
    }
}
