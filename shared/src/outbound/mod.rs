//! Clients for the third-party APIs shipgate calls: the GitHub App REST API, the Slack Web API,
//! PagerDuty Events API v2, and the Prometheus HTTP API as a metric source for analysis.
//!
//! Each client sits behind a small port trait ([`GitHubApi`], [`SlackApiPort`],
//! [`PagerDutyPort`]) so handlers can be tested with fakes. All of them share one retry loop
//! ([`RetryPolicy`]) and one error type ([`OutboundError`]) whose
//! [`is_permanent`](OutboundError::is_permanent) tells a queue consumer whether to dead-letter a
//! message or let it be redelivered.
//!
//! Clients are built once at cold start around one shared [`reqwest::Client`] (see
//! [`http_client`]); every base URL is configurable for GitHub Enterprise Server and local fakes.

pub mod github;
pub mod metrics;
pub mod pagerduty;
pub mod prometheus;
pub mod retry;
pub mod slack;

use std::time::Duration;

pub use github::{parse_run_id, GitHubApi, GitHubApp, GitHubAppConfig, NewDeployment, ReviewState};
pub use pagerduty::{
    PagerDuty, PagerDutyAction, PagerDutyEvent, PagerDutyLink, PagerDutyPayload, PagerDutyPort,
    PagerDutySeverity,
};
pub use retry::{AttemptFailure, OutboundError, RetryPolicy};
pub use slack::{SlackApi, SlackApiPort, SlackConfig, SlackMessageRef};

/// Builds the HTTP client all outbound clients share. Call it once at cold start.
///
/// Idle connections are dropped after 30 s: a Lambda frozen between invocations otherwise wakes
/// up holding sockets the server has long closed. Per-request timeouts come from the
/// [`RetryPolicy`], so only connecting is bounded here.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent("shipgate")
        .build()
}

/// A base URL without its trailing slashes, so `{base}/path` never doubles one.
pub(crate) fn trim_base_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}
