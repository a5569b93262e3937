//! The scope of environment-level state: a repository and one of its environments.
//!
//! GitHub Environments are defined per repository, so `production` in `acme/api` and
//! `production` in `acme/web` are two environments. Everything shipgate keeps about "the
//! environment" — its lock, its heads (current and last known good), the deployment verifying
//! there, the rollback target, open incidents caused by one repository's deployment, rollback
//! drills — belongs to a [`Scope`]. The environment's timelines (deployments, audit,
//! incidents) stay per environment name, so roll-ups across repositories read one partition.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::{EnvName, RepoName};

/// A repository and one of its environments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    pub repo: RepoName,
    pub environment: EnvName,
}

impl Scope {
    pub fn new(repo: RepoName, environment: EnvName) -> Self {
        Scope { repo, environment }
    }

    /// The store partition of the scope's records: `SCOPE#{owner/name}#{env}`. A repository
    /// name never holds `#`, so the key splits back unambiguously at its second `#`.
    pub fn key(&self) -> String {
        format!("SCOPE#{}#{}", self.repo, self.environment)
    }
}

/// `owner/name · env`, as `shipgate status` and Slack show it.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} · {}", self.repo, self.environment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_and_the_display_name_both_parts() {
        let scope = Scope::new(
            RepoName::parse("acme/api").unwrap(),
            EnvName::parse("production").unwrap(),
        );
        assert_eq!(scope.key(), "SCOPE#acme/api#production");
        assert_eq!(scope.to_string(), "acme/api · production");
    }
}
