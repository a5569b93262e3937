//! The domain: deployment lifecycle, approvals, incidents, audit and policy, and the ids and
//! names they are about.
//!
//! Nothing in here performs I/O or reads a clock; callers pass `now` in. That keeps every
//! decision shipgate makes reproducible in a unit test. The one exception is
//! [`DeploymentId::new`], whose UUIDv7 carries the time and randomness a fresh id needs.

pub mod analysis;
pub mod deployment;
pub mod dora;
pub mod events;
pub mod ids;
pub mod incident;
pub mod job;
pub mod policy;
pub mod scope;
pub mod time;

pub use ids::{short_sha, DeploymentId, EnvName, GitHubDeploymentState, IdError, RepoName, Sha};
pub use scope::Scope;
