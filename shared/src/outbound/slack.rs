//! The Slack Web API client: post and update approval messages, whisper to one user, and answer
//! an interaction through its `response_url`.
//!
//! Slack reports most failures as HTTP 200 with `{"ok":false,"error":"…"}`; those are permanent
//! (`channel_not_found`, `invalid_auth`, …) except `ratelimited`, which is retried like an HTTP
//! 429 (whose `Retry-After` is honoured).

use std::fmt;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::retry::{
    classify_http, execute, json_bytes, retry_after, OutboundError, RawResponse, RetryPolicy,
    Verdict,
};
use super::trim_base_url;

const SERVICE: &str = "slack";

/// Slack's Web API.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

const JSON_UTF8: &str = "application/json; charset=utf-8";

/// The bot token scopes shipgate's Slack app asks for: exactly the `oauth_config.scopes.bot`
/// of `manifests/slack-app.json` (a test in `tests/tests/manifests.rs` keeps them equal, and
/// checks that every Web API method this client calls is accounted for here).
///
/// - `chat:write`: `chat.postMessage` (approval requests and every other message),
///   `chat.update` (the message updated in place as the deployment moves) and
///   `chat.postEphemeral` (a note only one user sees). With it alone the bot posts only where
///   it is a member: invite it to every channel the policy's `slack_channel` names.
///
/// The other calls need no scope: `views.open` (the reject-reason dialog, opened with a
/// click's `trigger_id`) and a click's `response_url` (called without the token).
pub const BOT_SCOPES: &[&str] = &["chat:write"];

/// Where the Web API is and the bot token (`xoxb-…`) to call it with.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// Base URL without the method name; a trailing slash is ignored.
    pub api_url: String,
    pub bot_token: SecretString,
}

impl SlackConfig {
    /// Configuration for slack.com.
    pub fn new(bot_token: SecretString) -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            bot_token,
        }
    }
}

/// Where a posted message lives, so it can be updated in place later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackMessageRef {
    /// The channel id Slack answered with (a name given on posting becomes an id).
    pub channel: String,
    pub ts: String,
}

/// The Slack calls shipgate makes, so handlers can be tested against a fake.
#[async_trait]
pub trait SlackApiPort: Send + Sync {
    /// `chat.postMessage`; `blocks` is a Block Kit array (`Value::Null` sends text only).
    async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<SlackMessageRef, OutboundError>;

    /// `chat.update` of a message posted earlier.
    async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), OutboundError>;

    /// `chat.postEphemeral`: a message only `user` sees.
    async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), OutboundError>;

    /// POSTs `body` to an interaction's `response_url`. The URL must come from a payload whose
    /// Slack signature was verified; the bot token is not sent to it.
    async fn respond(
        &self,
        response_url: &str,
        body: &serde_json::Value,
    ) -> Result<(), OutboundError>;

    /// `views.open`: opens a modal for the user whose interaction carried `trigger_id` (valid
    /// for 3 s after the click). `view` is a Block Kit view object.
    ///
    /// Provided so clients that only post messages (and test fakes) need not implement it;
    /// the default refuses permanently.
    async fn open_view(
        &self,
        trigger_id: &str,
        view: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        let _ = (trigger_id, view);
        Err(OutboundError::Permanent {
            service: SERVICE,
            status: 0,
            message: "views.open is not supported by this client".to_owned(),
        })
    }
}

/// The Slack Web API as the shipgate bot.
pub struct SlackApi {
    http: reqwest::Client,
    api_url: String,
    bot_token: SecretString,
    policy: RetryPolicy,
}

impl fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackApi")
            .field("api_url", &self.api_url)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct MessageBody<'a> {
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    text: &'a str,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    blocks: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Posted {
    channel: String,
    ts: String,
}

impl SlackApi {
    /// A client using the default [`RetryPolicy`].
    pub fn new(config: SlackConfig, http: reqwest::Client) -> Self {
        Self {
            http,
            api_url: trim_base_url(&config.api_url),
            bot_token: config.bot_token,
            policy: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    async fn call<B: Serialize + Sync>(
        &self,
        method: &'static str,
        body: &B,
    ) -> Result<RawResponse, OutboundError> {
        let body = json_bytes(SERVICE, body)?;
        let url = format!("{}/{method}", self.api_url);
        let response = execute(
            &self.policy,
            SERVICE,
            method,
            || {
                self.http
                    .post(&url)
                    .bearer_auth(self.bot_token.expose_secret())
                    .header(CONTENT_TYPE, JSON_UTF8)
                    .body(body.clone())
            },
            classify_slack,
        )
        .await?;
        // classify_slack only lets `ok:true` through, so this cannot fail on a good answer;
        // it still guards against a proxy answering 200 with something else.
        let envelope: Envelope = serde_json::from_slice(&response.body)
            .map_err(|err| OutboundError::decode(SERVICE, format!("{method} response"), err))?;
        if !envelope.ok {
            return Err(OutboundError::Permanent {
                service: SERVICE,
                status: response.status.as_u16(),
                message: envelope.error.unwrap_or_else(|| "ok:false".to_owned()),
            });
        }
        Ok(response)
    }
}

/// HTTP-level classification, then Slack's `ok` flag on a 2xx.
fn classify_slack(response: &RawResponse) -> Verdict {
    match classify_http(response) {
        Verdict::Success => {}
        other => return other,
    }
    match serde_json::from_slice::<Envelope>(&response.body) {
        Ok(Envelope { ok: false, error }) => {
            let message = error.unwrap_or_else(|| "ok:false".to_owned());
            if message == "ratelimited" {
                Verdict::Retry {
                    retry_after: retry_after(&response.headers),
                    message,
                }
            } else {
                Verdict::Permanent { message }
            }
        }
        // A non-JSON 2xx is success for a response_url ("ok" in plain text); Web API callers
        // check the envelope themselves.
        _ => Verdict::Success,
    }
}

#[async_trait]
impl SlackApiPort for SlackApi {
    async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<SlackMessageRef, OutboundError> {
        let response = self
            .call(
                "chat.postMessage",
                &MessageBody {
                    channel,
                    ts: None,
                    user: None,
                    text,
                    blocks,
                },
            )
            .await?;
        let posted: Posted = serde_json::from_slice(&response.body).map_err(|err| {
            OutboundError::decode(SERVICE, "chat.postMessage response has no channel/ts", err)
        })?;
        Ok(SlackMessageRef {
            channel: posted.channel,
            ts: posted.ts,
        })
    }

    async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        self.call(
            "chat.update",
            &MessageBody {
                channel,
                ts: Some(ts),
                user: None,
                text,
                blocks,
            },
        )
        .await
        .map(drop)
    }

    async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), OutboundError> {
        self.call(
            "chat.postEphemeral",
            &MessageBody {
                channel,
                ts: None,
                user: Some(user),
                text,
                blocks: &serde_json::Value::Null,
            },
        )
        .await
        .map(drop)
    }

    async fn respond(
        &self,
        response_url: &str,
        body: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        let body = json_bytes(SERVICE, body)?;
        execute(
            &self.policy,
            SERVICE,
            "response_url",
            || {
                self.http
                    .post(response_url)
                    .header(CONTENT_TYPE, JSON_UTF8)
                    .body(body.clone())
            },
            classify_slack,
        )
        .await
        .map(drop)
    }

    async fn open_view(
        &self,
        trigger_id: &str,
        view: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        #[derive(Serialize)]
        struct OpenView<'a> {
            trigger_id: &'a str,
            view: &'a serde_json::Value,
        }
        self.call("views.open", &OpenView { trigger_id, view })
            .await
            .map(drop)
    }
}
