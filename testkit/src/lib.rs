//! The test kit: what the workspace's tests share, kept out of the production crates.
//!
//! - [`contract`]: the conformance suite every `ItemStore` adapter must pass, the
//!   [`store_contract_tests!`] macro that runs it, and a deliberately broken adapter;
//! - [`shipgate_binary`]: the `shipgate` binary, built on first use, for end-to-end tests;
//! - [`ManualClock`] and [`RecordingPublisher`]: doubles for the clock and publisher ports;
//! - [`TestServices`]: the use cases on SQLite with a wiremock GitHub, Slack and PagerDuty;
//! - [`CountingStore`]: a store wrapper counting the round trips a use case costs;
//! - [`scope`]: a repository and environment as the store keys their state;
//! - fixture loaders ([`fixture`], [`event_path`], [`github_app_key`]) that find test data
//!   from the workspace root, and requests signed as GitHub and Slack sign them.
//!
//! A dev-dependency only: nothing here is compiled into a function or the binary.

mod binary;
pub mod contract;
pub mod counting;
mod doubles;
mod fixtures;
mod reply;
mod services;
mod signing;

pub use binary::shipgate_binary;
pub use counting::{CountingStore, Counts};
pub use doubles::{ManualClock, RecordingPublisher};
pub use fixtures::{
    event_path, fixture, fixture_json, github_app_key, github_app_key_path, test_data,
    workspace_root,
};
pub use reply::Reply;
pub use services::{fast_retries, github_app, mount_installation_token, Builder, TestServices};
pub use signing::{
    github_delivery, github_signature, signed_slack_request, slack_form_body, slack_request,
};

/// The library under test, re-exported for the macros.
pub use shipgate;

/// The scope of repository `repo` (`owner/name`) in `environment`, for tests that read a
/// scope's lock or heads. Panics on a malformed name: test input only.
pub fn scope(repo: &str, environment: &str) -> shipgate::domain::Scope {
    let repo = shipgate::domain::RepoName::parse(repo)
        .unwrap_or_else(|e| panic!("test repository {repo:?}: {e}"));
    let env = shipgate::domain::EnvName::parse(environment)
        .unwrap_or_else(|e| panic!("test environment {environment:?}: {e}"));
    shipgate::domain::Scope::new(repo, env)
}
