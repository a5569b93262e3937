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
//! - [`backup`]: the encrypted, chunked, streaming backup format, its ports and operations
//!   (back up, verify, restore, prune, drill).
//! - [`notify`]: typed notifications and the port that carries them to the notifier.
//! - [`web`]: the HTTP request/response types and error mapping of the webhook routes.
//! - [`config`]: typed configuration read once from `SHIPGATE_` variables.
//! - `aws` (feature `aws`): every AWS adapter — DynamoDB, S3, KMS, SNS, Secrets Manager and
//!   SSM — and, with feature `lambda`, the Lambda runtime side of a function.
//! - `embedded` (feature `embedded`): every adapter of the self-hosted backend — SQLite,
//!   a directory of objects, a key file, the in-process notification channel.
//!
//! Adapter code lives only in `aws` and `embedded`; everything else speaks to ports.

#[cfg(feature = "aws")]
pub mod aws;
pub mod backup;
pub mod config;
pub mod dashboard;
pub mod domain;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod jobs;
pub mod notifier;
pub mod notify;
pub mod outbound;
pub mod render;
pub mod service;
pub mod signature;
pub mod store;
pub mod web;
