//! shipgate: the deployment control plane's shared library.
//!
//! Everything the Lambda functions and the self-hosted binary have in common lives here:
//!
//! - [`domain`]: the deployment lifecycle, approvals, incidents, audit events and the policy —
//!   pure and synchronous, `now` is always passed in.
//! - [`jobs`]: the scheduled jobs (backups, restores and drills, DORA report, sweeper, probes).
//! - [`signature`]: verification of GitHub, Slack and bearer-token authenticated requests.
//! - [`store`]: the state port (a conditional-write item store) with its DynamoDB and embedded
//!   SQLite adapters, and the typed repository the handlers use.
//! - [`service`]: the use cases every entry point shares (gate, lifecycle, approvals...).
//! - [`outbound`]: clients for the third-party APIs shipgate calls (GitHub App, Slack Web API,
//!   PagerDuty Events v2), with retries.
//! - [`render`]: Slack Block Kit rendering of notifications.
//! - [`backup`]: the encrypted, chunked, streaming backup format and its verifier.
//! - [`notify`]: typed notifications and the port that carries them to the notifier.
//! - [`web`]: the HTTP request/response types and error mapping of the webhook routes.
//! - [`bootstrap`]: cold-start wiring for the Lambda functions (secrets, policy, clients).
//! - [`config`]: typed configuration read once from `SHIPGATE_` variables.

pub mod backup;
pub mod bootstrap;
pub mod config;
pub mod domain;
pub mod jobs;
pub mod notify;
pub mod outbound;
pub mod render;
pub mod service;
pub mod signature;
pub mod store;
pub mod web;
