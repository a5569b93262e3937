//! The notifier: turns shipgate's [`Notification`]s into Slack messages and PagerDuty events.
//!
//! On AWS, notifications travel SNS → SQS → the notifier function, whose SQS adapter hands each
//! record to [`deliver`]; in the self-hosted binary an in-process task feeds them to the same
//! [`deliver`]. Delivery is idempotent per
//! notification id, so SQS's at-least-once delivery sends each notification once:
//!
//! - **Deployments** have one Slack message in their environment's channel. The first
//!   notification posts it and stores its `channel`/`ts` on the deployment; every later one
//!   re-renders the message in place with `chat.update`. The message is rendered from the
//!   deployment as stored now rather than from the notification's snapshot: SQS does not keep
//!   order, and an old notification redelivered late must not turn an approved deployment's
//!   message back into an approval request.
//! - **Incidents** are posted to the environment's channel and paged to PagerDuty (trigger
//!   while open, resolve when resolved, `dedup_key` = incident id).
//! - **Jobs** post a summary to the ops channel (or every environment channel) and page when
//!   asked to.
//!
//! Each notification is claimed once (`notify` scope, 7 days). A notification that sends to
//! several places also claims each send (`notify-step`), so a redelivery after a partial
//! failure repeats only what failed. A claim is pending for a short lease
//! ([`CLAIM_LEASE`]) while its send runs and is confirmed once it went out; any failure gives
//! the claims of what failed back, so the redelivery tries again, and a claim that could not
//! be given back stops blocking when its lease runs out. A copy that finds a claim pending
//! fails retryably instead of counting as a duplicate.
//!
//! ## Failures and the dead-letter queue
//! An SQS consumer can only ask for a message again or let it go. Retryable failures (5xx,
//! 429, timeouts, store conflicts) are reported in `batchItemFailures` and redelivered after
//! the visibility timeout. **Permanent failures** (a 4xx other than 429 — `channel_not_found`,
//! `not_in_channel`, an invalid routing key — or a record that is not a notification) are
//! reported as failed too, with an error log, rather than dropped: after `maxReceiveCount`
//! receives the message moves to the dead-letter queue, which has an alarm, where an operator
//! can see it, fix the configuration (invite the bot, set the key) and redrive it. That costs a
//! few repeated calls that fail the same way, which is cheap next to losing an approval
//! request silently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    self, ConfigError, PagerDutySettings, SlackSettings, Vars, GITHUB_WEB_URL_VAR, OPS_CHANNEL_VAR,
};
use crate::domain::deployment::{SlackRef, State};
use crate::domain::policy::Severity;
use crate::notify::{DeploymentSummary, Notification, NotificationBody};
use crate::outbound::{
    OutboundError, PagerDuty, PagerDutyAction, PagerDutyEvent, PagerDutyLink, PagerDutyPayload,
    PagerDutyPort, PagerDutySeverity, SlackApi, SlackApiPort, SlackConfig,
};
use crate::render::{self, SlackMessage};
use crate::service::update_deployment;
use crate::service::{ServiceError, Services};
use crate::store::repo::{Claim, CLAIM_LEASE};
use crate::store::{Repo, RepoError};
use secrecy::SecretString;
use tracing::Instrument;

/// Idempotency scope of whole notifications.
const NOTIFY_SCOPE: &str = "notify";
/// Idempotency scope of the single sends of a notification that fans out.
const STEP_SCOPE: &str = "notify-step";
/// Guard of a deployment's first Slack post.
const POST_SCOPE: &str = "slack-post";
/// Longer than SQS keeps retrying a message (5 receives × 6 min visibility) by far.
const DEDUPE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longer than one invocation may run (60 s), shorter than the queue's redelivery cycle: a
/// delivery killed while posting frees the deployment for the next attempt.
const POST_CLAIM_TTL: Duration = Duration::from_secs(5 * 60);
/// The queue's `maxReceiveCount` (template.yaml), quoted in the dead-letter log line.
pub const MAX_RECEIVES: u32 = 5;
/// A record is only started with at least this much of the invocation left: a delivery
/// killed by the timeout after claiming its notification would be lost as a "duplicate".
const DEFAULT_DELIVERY_BUDGET: Duration = Duration::from_secs(30);

/// Errors building a [`Notifier`] from configuration.
#[derive(Debug, thiserror::Error)]
pub enum NotifierConfigError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Everything a delivery needs, built once at cold start.
pub struct Notifier {
    services: Services,
    slack: Option<Arc<dyn SlackApiPort>>,
    pagerduty: Option<Arc<dyn PagerDutyPort>>,
    default_routing_key: Option<SecretString>,
    /// Per-severity routing keys, read at cold start from the variables the policy names.
    routing_keys: BTreeMap<Severity, SecretString>,
    github_web_url: String,
    ops_channel: Option<String>,
    delivery_budget: Duration,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("slack", &self.slack.is_some())
            .field("pagerduty", &self.pagerduty.is_some())
            .field("default_routing_key", &self.default_routing_key.is_some())
            .field(
                "routing_keys",
                &self.routing_keys.keys().collect::<Vec<_>>(),
            )
            .field("github_web_url", &self.github_web_url)
            .field("ops_channel", &self.ops_channel)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier that sends nothing until Slack and PagerDuty are added.
    pub fn new(services: Services) -> Self {
        Notifier {
            services,
            slack: None,
            pagerduty: None,
            default_routing_key: None,
            routing_keys: BTreeMap::new(),
            github_web_url: render::DEFAULT_GITHUB_WEB_URL.to_owned(),
            ops_channel: None,
            delivery_budget: DEFAULT_DELIVERY_BUDGET,
        }
    }

    pub fn with_slack(mut self, slack: Arc<dyn SlackApiPort>) -> Self {
        self.slack = Some(slack);
        self
    }

    /// PagerDuty, with the routing key used when the policy names none for a severity.
    pub fn with_pagerduty(
        mut self,
        pagerduty: Arc<dyn PagerDutyPort>,
        default_routing_key: Option<SecretString>,
    ) -> Self {
        self.pagerduty = Some(pagerduty);
        self.default_routing_key = default_routing_key;
        self
    }

    /// Reads the routing keys of the variables named in the policy's
    /// `[notifications] pagerduty_routing_keys` (each may also come from `NAME_FILE`). A named
    /// variable that is not set leaves that severity to the default key, if there is one
    /// ([`Notifier::paging`] says which, once the default is known).
    pub fn with_routing_keys_from(mut self, vars: &dyn Vars) -> Result<Self, ConfigError> {
        for severity in Severity::ALL {
            let Some(var) = self
                .services
                .policy
                .notifications()
                .pagerduty_routing_key_var(severity)
            else {
                continue;
            };
            if let Some(key) = config::optional_secret(vars, var)? {
                self.routing_keys.insert(severity, key);
            }
        }
        Ok(self)
    }

    /// How each severity is paged, in words, for the start-up log: the variable its key comes
    /// from, the default key, or not at all; a variable the policy names but that is not set
    /// is said so.
    pub fn paging(&self) -> Vec<String> {
        Severity::ALL
            .into_iter()
            .map(|severity| {
                let named = self
                    .services
                    .policy
                    .notifications()
                    .pagerduty_routing_key_var(severity);
                let how = match (named, self.routing_keys.contains_key(&severity)) {
                    (Some(var), true) => format!("with {var}"),
                    _ if self.pagerduty.is_none() || self.default_routing_key.is_none() => {
                        "not paged".to_string()
                    }
                    _ => format!("with the default key {}", PagerDutySettings::ROUTING_KEY),
                };
                match named.filter(|_| !self.routing_keys.contains_key(&severity)) {
                    Some(var) => format!(
                        "{}: {how} ({var} is named by the policy but not set)",
                        severity.as_str()
                    ),
                    None => format!("{}: {how}", severity.as_str()),
                }
            })
            .collect()
    }

    /// Where repositories and commits are linked to.
    pub fn with_github_web_url(mut self, url: impl Into<String>) -> Self {
        self.github_web_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// The channel job summaries (and incidents of no known environment) go to.
    pub fn with_ops_channel(mut self, channel: Option<String>) -> Self {
        self.ops_channel = channel;
        self
    }

    /// How much invocation time must be left to start delivering a record.
    pub fn with_delivery_budget(mut self, budget: Duration) -> Self {
        self.delivery_budget = budget;
        self
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// How much invocation time must be left to start delivering a record.
    pub fn delivery_budget(&self) -> Duration {
        self.delivery_budget
    }

    fn routing_key(&self, severity: Option<Severity>) -> Option<&SecretString> {
        severity
            .and_then(|s| self.routing_keys.get(&s))
            .or(self.default_routing_key.as_ref())
    }
}

/// Builds the notifier from the typed settings: Slack when a bot token is set, PagerDuty when
/// any routing key is, plus `SHIPGATE_GITHUB_WEB_URL` and `SHIPGATE_SLACK_OPS_CHANNEL`. Used by
/// the Lambda function and by the self-hosted server (whose `services` must not hold the
/// in-process publisher's sender, or its channel never closes: the notifier publishes nothing).
pub fn from_settings(
    services: Services,
    slack: &SlackSettings,
    pagerduty: &PagerDutySettings,
    vars: &dyn Vars,
    http: reqwest::Client,
) -> Result<Notifier, NotifierConfigError> {
    let github_web_url =
        config::base_url(vars, GITHUB_WEB_URL_VAR, render::DEFAULT_GITHUB_WEB_URL)?;
    let mut notifier = Notifier::new(services)
        .with_github_web_url(github_web_url)
        .with_ops_channel(config::optional(vars, OPS_CHANNEL_VAR))
        .with_routing_keys_from(vars)?;
    match &slack.bot_token {
        Some(token) => {
            let config = SlackConfig {
                api_url: slack.api_url.clone(),
                bot_token: token.clone(),
            };
            notifier = notifier.with_slack(Arc::new(SlackApi::new(config, http.clone())));
        }
        None => tracing::info!(
            variable = SlackSettings::BOT_TOKEN,
            "no Slack bot token; Slack messages are not sent"
        ),
    }
    if pagerduty.routing_key.is_some() || !notifier.routing_keys.is_empty() {
        notifier = notifier.with_pagerduty(
            Arc::new(PagerDuty::new(pagerduty.url.clone(), http)),
            pagerduty.routing_key.clone(),
        );
    }
    // One line that says what is paged and how, after every key is known.
    let paging = notifier.paging();
    if paging.iter().any(|p| p.contains("but not set")) {
        tracing::warn!(paging = %paging.join("; "), "PagerDuty paging, per severity");
    } else {
        tracing::info!(paging = %paging.join("; "), "PagerDuty paging, per severity");
    }
    Ok(notifier)
}

/// What one delivered notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// This notification was delivered before; nothing was sent.
    Duplicate,
    /// Delivered; one entry per destination.
    Sent(Vec<Outcome>),
}

/// What happened at one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    SlackPosted {
        channel: String,
        ts: String,
    },
    SlackUpdated {
        channel: String,
        ts: String,
    },
    PagerDuty {
        action: PagerDutyAction,
        dedup_key: String,
    },
    /// Sent by an earlier, partly failed delivery of the same notification.
    AlreadySent {
        step: String,
    },
    /// Nothing to send there (not configured, or nothing to say).
    Skipped {
        target: &'static str,
        reason: String,
    },
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{step}: {source}")]
    Outbound {
        step: String,
        #[source]
        source: OutboundError,
    },
    #[error("state store: {0}")]
    Repo(#[from] RepoError),
    #[error("saving the deployment: {0}")]
    Service(#[from] ServiceError),
    /// Another delivery is posting this deployment's first message right now; once it has,
    /// this one updates that message.
    #[error(
        "the first Slack message of deployment {deployment_id} is being posted by another delivery"
    )]
    PostInProgress { deployment_id: String },
    /// Another delivery holds the claim of this notification (or send) and has not finished.
    #[error("{what} is being delivered by another attempt")]
    ClaimInProgress { what: String },
    /// The record's body is not a notification (`what` says which layer failed to parse).
    #[error("not a shipgate notification: {what}: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// An SNS message other than a notification (a subscription confirmation, say).
    #[error("not a shipgate notification: SNS message of type {kind}")]
    NotAnSnsNotification { kind: String },
    /// The invocation was about to time out before this record was started.
    #[error("not started: the invocation is about to time out")]
    OutOfTime,
    /// An earlier record of the batch about the same deployment or incident failed.
    #[error("not started: an earlier notification about the same subject failed")]
    WaitingForEarlier,
}

impl Failure {
    /// True when delivering the same notification again cannot succeed as things are.
    pub fn is_permanent(&self) -> bool {
        match self {
            Failure::Outbound { source, .. } => source.is_permanent(),
            Failure::Repo(RepoError::Store(e)) => !e.is_retryable(),
            Failure::Repo(RepoError::Stale { .. }) => false,
            Failure::Repo(RepoError::Corrupt { .. }) => true,
            Failure::Service(e) => !e.is_retryable(),
            Failure::PostInProgress { .. }
            | Failure::ClaimInProgress { .. }
            | Failure::OutOfTime
            | Failure::WaitingForEarlier => false,
            Failure::Malformed { .. } | Failure::NotAnSnsNotification { .. } => true,
        }
    }
}

/// A failed delivery: either worth retrying later, or not.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// Repeating it will fail the same way until someone fixes something.
    #[error("permanent failure: {0}")]
    Permanent(#[source] Failure),
    /// A later attempt may succeed.
    #[error("retryable failure: {0}")]
    Retryable(#[source] Failure),
}

impl DeliverError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliverError::Permanent(_))
    }

    pub fn failure(&self) -> &Failure {
        match self {
            DeliverError::Permanent(f) | DeliverError::Retryable(f) => f,
        }
    }
}

impl From<Failure> for DeliverError {
    fn from(failure: Failure) -> Self {
        if failure.is_permanent() {
            DeliverError::Permanent(failure)
        } else {
            DeliverError::Retryable(failure)
        }
    }
}

/// Delivers one notification at most once per id. The claim is confirmed once everything
/// went out; a failure gives it back, so a redelivery of the same notification tries again.
/// A copy arriving while another delivery holds the claim fails retryably.
pub async fn deliver(app: &Notifier, n: &Notification) -> Result<Delivered, DeliverError> {
    let repo = &app.services.repo;
    let now = app.services.now();
    match repo
        .begin_event(NOTIFY_SCOPE, &n.id, now, CLAIM_LEASE)
        .await
        .map_err(|e| DeliverError::from(Failure::from(e)))?
    {
        Claim::Acquired => {}
        Claim::Done => {
            tracing::info!(notification_id = %n.id, "notification delivered before; nothing sent");
            return Ok(Delivered::Duplicate);
        }
        Claim::InProgress => {
            // Retryable: if the delivery holding the claim fails, this copy's retry is the
            // one that gets the notification out.
            return Err(DeliverError::Retryable(Failure::ClaimInProgress {
                what: format!("notification {}", n.id),
            }));
        }
    }
    let result = match &n.body {
        NotificationBody::Deployment { deployment, event } => {
            deliver_deployment(app, deployment, event).await
        }
        NotificationBody::Incident {
            incident_id,
            environment,
            severity,
            title,
            status,
            link,
            deployment_id,
            repository,
            attribution,
        } => {
            let view = render::IncidentView {
                id: incident_id,
                environment: environment.as_deref(),
                repository: repository.as_deref(),
                severity,
                title,
                status,
                link: link.as_deref(),
                deployment_id: deployment_id.as_deref(),
                attribution: attribution.as_deref(),
            };
            deliver_incident(app, n, &view).await
        }
        NotificationBody::Job {
            job,
            ok,
            summary,
            details,
            page,
        } => deliver_job(app, n, job, *ok, summary, details, *page).await,
        // The topic's subscription filter keeps these away from the notifier; one that
        // arrives anyway (an old filter, the self-hosted channel) is for the jobs runner.
        NotificationBody::PreDeployBackup { .. } => Ok(vec![Outcome::Skipped {
            target: "jobs",
            reason: "a pre-deploy backup request is for the scheduled jobs".into(),
        }]),
    };
    match result {
        Ok(outcomes) => {
            confirm(repo, NOTIFY_SCOPE, &n.id, app.services.now()).await;
            Ok(Delivered::Sent(outcomes))
        }
        Err(failure) => {
            let err = DeliverError::from(failure);
            if err.is_permanent() {
                tracing::error!(notification_id = %n.id, error = %err, "notification cannot be delivered; retrying will not help until the cause is fixed");
            } else {
                tracing::warn!(notification_id = %n.id, error = %err, "notification not delivered; worth retrying");
            }
            if let Err(e) = repo.release_event(NOTIFY_SCOPE, &n.id).await {
                // The redelivery will be taken for a duplicate: say so loudly.
                tracing::error!(notification_id = %n.id, error = %e, "could not release the claim of a failed notification; its redelivery will be skipped");
            }
            Err(err)
        }
    }
}

/// Marks a claimed notification or send as done. A failure only costs one repeat after the
/// claim's lease (Slack messages are updated in place, pages deduplicate on their key).
async fn confirm(repo: &Repo, scope: &str, key: &str, now: jiff::Timestamp) {
    if let Err(e) = repo.confirm_event(scope, key, now, DEDUPE_TTL).await {
        tracing::error!(scope, key, error = %e, "could not confirm a delivered claim; a redelivery after its lease repeats it");
    }
}

fn skipped(target: &'static str, reason: impl Into<String>) -> Outcome {
    let reason = reason.into();
    tracing::debug!(target_service = target, reason = %reason, "nothing sent");
    Outcome::Skipped { target, reason }
}

fn outbound(step: &str) -> impl FnOnce(OutboundError) -> Failure + '_ {
    move |source| Failure::Outbound {
        step: step.to_owned(),
        source,
    }
}

async fn deliver_deployment(
    app: &Notifier,
    snapshot: &DeploymentSummary,
    event: &str,
) -> Result<Vec<Outcome>, Failure> {
    let svc = &app.services.current().await;
    let span = tracing::info_span!("deployment", deployment_id = %snapshot.id, environment = %snapshot.environment, event);
    async move {
        let Some(channel) = svc
            .policy
            .environment(&snapshot.environment)
            .and_then(|e| e.slack_channel.as_deref())
        else {
            return Ok(vec![skipped(
                "slack",
                format!("no slack_channel for environment {}", snapshot.environment),
            )]);
        };
        let Some(slack) = app.slack.as_deref() else {
            return Ok(vec![skipped("slack", "no Slack bot token")]);
        };

        let Some(stored) = svc.repo.get_deployment(&snapshot.id).await? else {
            // Not a deployment shipgate keeps (or already gone): there is nowhere to remember
            // the message, so every notification about it is a message of its own.
            tracing::warn!("deployment not in the store; posting without keeping a reference");
            let message = render::deployment_message(snapshot, &app.github_web_url);
            let posted = slack
                .post_message(channel, &message.text, &message.blocks)
                .await
                .map_err(outbound("slack chat.postMessage"))?;
            return Ok(vec![Outcome::SlackPosted {
                channel: posted.channel,
                ts: posted.ts,
            }]);
        };
        let mut summary: DeploymentSummary = (&stored).into();
        // Where the environment judges deploys by their metrics, the message shows each
        // check's standing: one read of the deployment's samples.
        if let Some(analysis) = crate::service::analysis::analysis_of(&svc.policy, &stored) {
            let samples = svc.repo.samples(&stored.id).await?;
            summary.analysis = crate::service::analysis::check_lines(&analysis, &samples);
        }
        if stored.state == State::Queued && snapshot.state == State::Queued {
            // The place in line is the notification's: the record does not keep it.
            summary.queue = snapshot.queue.clone().or(summary.queue);
        }
        let message = render::deployment_message_with_rollback_request(
            &summary,
            stored.rollback_request.as_ref(),
            &app.github_web_url,
        );
        if let Some(existing) = &stored.slack {
            return update(slack, existing, &message).await;
        }

        let now = svc.now();
        if !svc
            .repo
            .claim_event(POST_SCOPE, &stored.id, now, POST_CLAIM_TTL)
            .await?
        {
            // The other delivery may have finished between our read and our claim.
            return match svc.repo.get_deployment(&stored.id).await? {
                Some(fresh) => match &fresh.slack {
                    Some(existing) => {
                        let message = render::deployment_message_with_rollback_request(
                            &(&fresh).into(),
                            fresh.rollback_request.as_ref(),
                            &app.github_web_url,
                        );
                        update(slack, existing, &message).await
                    }
                    None => Err(Failure::PostInProgress {
                        deployment_id: stored.id.clone(),
                    }),
                },
                None => Err(Failure::PostInProgress {
                    deployment_id: stored.id.clone(),
                }),
            };
        }

        let posted = match slack
            .post_message(channel, &message.text, &message.blocks)
            .await
        {
            Ok(posted) => posted,
            Err(e) => {
                release_post_claim(app, &stored.id).await;
                return Err(outbound("slack chat.postMessage")(e));
            }
        };
        let reference = SlackRef {
            channel: posted.channel.clone(),
            ts: posted.ts.clone(),
        };
        let saved = update_deployment(svc, &stored.id, |dep| {
            if dep.slack.is_some() {
                return None;
            }
            dep.slack = Some(reference.clone());
            Some(Vec::new())
        })
        .await;
        if let Err(e) = saved {
            // The message is out; failing now would only post it twice. The next notification
            // for this deployment posts a fresh message and keeps that one.
            tracing::error!(error = %e, channel = %posted.channel, ts = %posted.ts, "posted the deployment's Slack message but could not store its reference");
            release_post_claim(app, &stored.id).await;
        }
        tracing::info!(channel = %posted.channel, ts = %posted.ts, "posted deployment message");
        Ok(vec![Outcome::SlackPosted {
            channel: posted.channel,
            ts: posted.ts,
        }])
    }
    .instrument(span)
    .await
}

async fn release_post_claim(app: &Notifier, deployment_id: &str) {
    if let Err(e) = app
        .services
        .repo
        .release_event(POST_SCOPE, deployment_id)
        .await
    {
        tracing::warn!(error = %e, "could not release the first-post guard; it expires on its own");
    }
}

async fn update(
    slack: &dyn SlackApiPort,
    existing: &SlackRef,
    message: &SlackMessage,
) -> Result<Vec<Outcome>, Failure> {
    slack
        .update_message(
            &existing.channel,
            &existing.ts,
            &message.text,
            &message.blocks,
        )
        .await
        .map_err(outbound("slack chat.update"))?;
    tracing::info!(channel = %existing.channel, ts = %existing.ts, "updated deployment message");
    Ok(vec![Outcome::SlackUpdated {
        channel: existing.channel.clone(),
        ts: existing.ts.clone(),
    }])
}

/// The sends of one notification that fans out, each claimed on its own so a redelivery
/// repeats only the ones that failed.
struct Steps<'a> {
    app: &'a Notifier,
    notification_id: &'a str,
    outcomes: Vec<Outcome>,
    failures: Vec<Failure>,
}

impl<'a> Steps<'a> {
    fn new(app: &'a Notifier, notification_id: &'a str) -> Self {
        Steps {
            app,
            notification_id,
            outcomes: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn skip(&mut self, target: &'static str, reason: impl Into<String>) {
        self.outcomes.push(skipped(target, reason));
    }

    async fn run<F, Fut>(&mut self, step: &str, send: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Outcome, Failure>>,
    {
        let repo = &self.app.services.repo;
        let key = format!("{}#{step}", self.notification_id);
        match repo
            .begin_event(STEP_SCOPE, &key, self.app.services.now(), CLAIM_LEASE)
            .await
        {
            Ok(Claim::Acquired) => {}
            Ok(Claim::Done) => {
                self.outcomes.push(Outcome::AlreadySent {
                    step: step.to_owned(),
                });
                return;
            }
            Ok(Claim::InProgress) => {
                self.failures.push(Failure::ClaimInProgress {
                    what: format!("send {step} of notification {}", self.notification_id),
                });
                return;
            }
            Err(e) => {
                self.failures.push(e.into());
                return;
            }
        }
        match send().await {
            Ok(outcome) => {
                confirm(repo, STEP_SCOPE, &key, self.app.services.now()).await;
                self.outcomes.push(outcome);
            }
            Err(failure) => {
                tracing::debug!(step, error = %failure, "send failed");
                if let Err(e) = repo.release_event(STEP_SCOPE, &key).await {
                    tracing::error!(step, error = %e, "could not release the claim of a failed send; its retry will be skipped");
                }
                self.failures.push(failure);
            }
        }
    }

    /// Everything sent, or the failure that decides what happens to the message: a retryable
    /// one wins, since the redelivery it causes also retries the permanent ones.
    fn finish(mut self) -> Result<Vec<Outcome>, Failure> {
        if self.failures.is_empty() {
            return Ok(self.outcomes);
        }
        let pick = self
            .failures
            .iter()
            .position(|f| !f.is_permanent())
            .unwrap_or(0);
        Err(self.failures.swap_remove(pick))
    }
}

fn pagerduty_severity(severity: Option<Severity>) -> PagerDutySeverity {
    match severity {
        Some(Severity::Critical) => PagerDutySeverity::Critical,
        Some(Severity::Warning) => PagerDutySeverity::Warning,
        Some(Severity::Info) => PagerDutySeverity::Info,
        // An unknown label is still worth a look, but not a wake-up call.
        None => PagerDutySeverity::Error,
    }
}

async fn post(
    slack: &dyn SlackApiPort,
    channel: &str,
    message: &SlackMessage,
) -> Result<Outcome, Failure> {
    let posted = slack
        .post_message(channel, &message.text, &message.blocks)
        .await
        .map_err(outbound("slack chat.postMessage"))?;
    Ok(Outcome::SlackPosted {
        channel: posted.channel,
        ts: posted.ts,
    })
}

async fn send_pagerduty(
    pagerduty: &dyn PagerDutyPort,
    event: PagerDutyEvent,
) -> Result<Outcome, Failure> {
    let action = event.event_action;
    let dedup_key = pagerduty
        .send(event)
        .await
        .map_err(outbound("pagerduty enqueue"))?;
    tracing::info!(action = ?action, dedup_key = %dedup_key, "sent PagerDuty event");
    Ok(Outcome::PagerDuty { action, dedup_key })
}

async fn deliver_incident(
    app: &Notifier,
    n: &Notification,
    incident: &render::IncidentView<'_>,
) -> Result<Vec<Outcome>, Failure> {
    let span = tracing::info_span!(
        "incident",
        incident_id = incident.id,
        status = incident.status
    );
    async move {
        let policy = &app.services.refreshed().policy;
        let mut steps = Steps::new(app, &n.id);

        let channel = incident
            .environment
            .and_then(|e| policy.environment(e))
            .and_then(|e| e.slack_channel.clone())
            .or_else(|| app.ops_channel.clone());
        match (app.slack.as_deref(), channel) {
            (Some(slack), Some(channel)) => {
                let message = render::incident_message(incident);
                steps
                    .run(
                        "slack",
                        || async move { post(slack, &channel, &message).await },
                    )
                    .await;
            }
            (None, _) => steps.skip("slack", "no Slack bot token"),
            (_, None) => steps.skip("slack", "no Slack channel for the incident's environment"),
        }

        let severity = Severity::parse(incident.severity)
            .or_else(|| policy.canonical_severity(incident.severity));
        let action = match incident.status {
            "open" | "firing" => Some(PagerDutyAction::Trigger),
            "resolved" => Some(PagerDutyAction::Resolve),
            _ => None,
        };
        match (app.pagerduty.as_deref(), action) {
            (None, _) => steps.skip("pagerduty", "PagerDuty is not configured"),
            (_, None) => steps.skip(
                "pagerduty",
                format!("nothing to page for status {}", incident.status),
            ),
            (Some(pagerduty), Some(action)) => match app.routing_key(severity) {
                None => {
                    tracing::warn!(
                        severity = incident.severity,
                        "no PagerDuty routing key for this severity and no default; not paged"
                    );
                    steps.skip("pagerduty", "no routing key for this severity");
                }
                Some(key) => {
                    let event = incident_event(app, incident, severity, action, key.clone()).await;
                    steps
                        .run("pagerduty", || send_pagerduty(pagerduty, event))
                        .await;
                }
            },
        }
        steps.finish()
    }
    .instrument(span)
    .await
}

async fn incident_event(
    app: &Notifier,
    incident: &render::IncidentView<'_>,
    severity: Option<Severity>,
    action: PagerDutyAction,
    routing_key: SecretString,
) -> PagerDutyEvent {
    if action != PagerDutyAction::Trigger {
        return PagerDutyEvent {
            routing_key,
            event_action: action,
            dedup_key: Some(incident.id.to_owned()),
            payload: None,
            links: Vec::new(),
        };
    }
    let mut links = Vec::new();
    if let Some(href) = incident.link {
        links.push(PagerDutyLink {
            href: href.to_owned(),
            text: "Alert".to_owned(),
        });
    }
    if let Some(id) = incident.deployment_id {
        // The page is still worth sending without the link: a failed read only loses it.
        match app.services.repo.get_deployment(id).await {
            Ok(Some(dep)) => links.push(PagerDutyLink {
                href: format!("{}/{}/commit/{}", app.github_web_url, dep.repo, dep.sha),
                text: format!(
                    "Deployment {} ({}@{} to {})",
                    dep.id,
                    dep.repo,
                    dep.short_sha(),
                    dep.environment
                ),
            }),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, deployment_id = id, "could not read the incident's deployment for its link")
            }
        }
    }
    let mut details = serde_json::Map::new();
    details.insert("incident_id".into(), incident.id.into());
    details.insert("status".into(), incident.status.into());
    if let Some(env) = incident.environment {
        details.insert("environment".into(), env.into());
    }
    if let Some(dep) = incident.deployment_id {
        details.insert("deployment_id".into(), dep.into());
    }
    PagerDutyEvent {
        routing_key,
        event_action: action,
        dedup_key: Some(incident.id.to_owned()),
        payload: Some(PagerDutyPayload {
            group: incident.environment.map(str::to_owned),
            custom_details: Some(serde_json::Value::Object(details)),
            ..PagerDutyPayload::new(incident.title, "shipgate", pagerduty_severity(severity))
        }),
        links,
    }
}

async fn deliver_job(
    app: &Notifier,
    n: &Notification,
    job: &str,
    ok: bool,
    summary: &str,
    details: &serde_json::Value,
    page: bool,
) -> Result<Vec<Outcome>, Failure> {
    let span = tracing::info_span!("job", job, ok, page);
    async move {
        let mut steps = Steps::new(app, &n.id);
        let channels: BTreeSet<String> = match &app.ops_channel {
            Some(ops) => BTreeSet::from([ops.clone()]),
            None => app
                .services
                .policy
                .environments()
                .filter_map(|e| e.slack_channel.clone())
                .collect(),
        };
        match app.slack.as_deref() {
            None => steps.skip("slack", "no Slack bot token"),
            Some(_) if channels.is_empty() => steps.skip("slack", "no Slack channel configured"),
            Some(slack) => {
                let message = render::job_message(job, ok, summary, details);
                for channel in &channels {
                    let message = &message;
                    steps
                        .run(&format!("slack#{channel}"), || async move {
                            post(slack, channel, message).await
                        })
                        .await;
                }
            }
        }
        if page {
            let severity = if ok {
                Severity::Info
            } else {
                Severity::Critical
            };
            match (app.pagerduty.as_deref(), app.routing_key(Some(severity))) {
                (Some(pagerduty), Some(key)) => {
                    let outcome = if ok { "succeeded" } else { "failed" };
                    let event = PagerDutyEvent {
                        routing_key: key.clone(),
                        event_action: PagerDutyAction::Trigger,
                        // One alert per job, however often it fails, until someone resolves it.
                        dedup_key: Some(format!("shipgate-job-{job}")),
                        payload: Some(PagerDutyPayload {
                            component: Some(job.to_owned()),
                            class: Some("scheduled-job".to_owned()),
                            custom_details: (!details.is_null()).then(|| details.clone()),
                            ..PagerDutyPayload::new(
                                format!("shipgate {job} {outcome}: {summary}"),
                                "shipgate",
                                pagerduty_severity(Some(severity)),
                            )
                        }),
                        links: Vec::new(),
                    };
                    steps
                        .run("pagerduty", || send_pagerduty(pagerduty, event))
                        .await;
                }
                (None, _) => {
                    tracing::warn!("the job asked to page but PagerDuty is not configured");
                    steps.skip("pagerduty", "PagerDuty is not configured");
                }
                (Some(_), None) => {
                    tracing::warn!("the job asked to page but there is no routing key");
                    steps.skip("pagerduty", "no routing key");
                }
            }
        }
        steps.finish()
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::Policy;
    use crate::embedded::sqlite::SqliteStore;
    use crate::notify::{PublishError, Publisher};
    use crate::service::SystemClock;
    use crate::store::Repo;

    /// The notifier publishes nothing; its services need a publisher all the same.
    struct Discard;

    #[async_trait::async_trait]
    impl Publisher for Discard {
        async fn publish(&self, _: &Notification) -> Result<(), PublishError> {
            Ok(())
        }
    }

    fn services() -> Services {
        let policy = Policy::parse(
            "p.toml",
            "[notifications]\npagerduty_routing_keys = { critical = \"env:SHIPGATE_PAGERDUTY_ROUTING_KEY_CRIT\", warning = \"env:SHIPGATE_PAGERDUTY_ROUTING_KEY_WARN\" }\n[environments.production]\n",
        )
        .expect("policy");
        Services {
            repo: Repo::new(Arc::new(SqliteStore::in_memory().expect("store"))),
            policy: Arc::new(policy),
            github: None,
            publisher: Arc::new(Discard),
            clock: Arc::new(SystemClock),
            policy_source: None,
        }
    }

    fn settings(vars: &dyn Vars) -> (SlackSettings, PagerDutySettings) {
        (
            SlackSettings::from_vars(vars).expect("slack settings"),
            PagerDutySettings::from_vars(vars).expect("pagerduty settings"),
        )
    }

    #[test]
    fn from_settings_wires_slack_pagerduty_and_the_policy_routing_keys() {
        let vars = [
            ("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-secret-token"),
            ("SHIPGATE_PAGERDUTY_ROUTING_KEY", "default-secret-key"),
            ("SHIPGATE_PAGERDUTY_ROUTING_KEY_CRIT", "critical-secret-key"),
            ("SHIPGATE_GITHUB_WEB_URL", "https://ghe.example.com/"),
            ("SHIPGATE_SLACK_OPS_CHANNEL", "C0OPS"),
        ];
        let (slack, pd) = settings(&vars);
        let app = from_settings(services(), &slack, &pd, &vars, reqwest::Client::new())
            .expect("notifier");
        assert!(app.slack.is_some() && app.pagerduty.is_some());
        assert_eq!(app.github_web_url, "https://ghe.example.com");
        assert_eq!(app.ops_channel.as_deref(), Some("C0OPS"));
        // SHIPGATE_PAGERDUTY_ROUTING_KEY_WARN is named by the policy but unset: warnings fall back to the default key.
        use secrecy::ExposeSecret;
        let key = |s| {
            app.routing_key(Some(s))
                .map(|k| k.expose_secret().to_owned())
        };
        assert_eq!(
            key(Severity::Critical).as_deref(),
            Some("critical-secret-key")
        );
        assert_eq!(
            key(Severity::Warning).as_deref(),
            Some("default-secret-key")
        );
        assert_eq!(
            app.paging(),
            [
                "critical: with SHIPGATE_PAGERDUTY_ROUTING_KEY_CRIT",
                "warning: with the default key SHIPGATE_PAGERDUTY_ROUTING_KEY (SHIPGATE_PAGERDUTY_ROUTING_KEY_WARN is named by the policy but not set)",
                "info: with the default key SHIPGATE_PAGERDUTY_ROUTING_KEY",
            ]
        );
        let debug = format!("{app:?}");
        assert!(!debug.contains("secret"), "{debug}");

        // Without any key, start-up says nothing is paged, and nothing about a default key.
        let vars = [("SHIPGATE_SLACK_BOT_TOKEN", "xoxb-secret-token")];
        let (slack, pd) = settings(&vars);
        let app = from_settings(services(), &slack, &pd, &vars, reqwest::Client::new())
            .expect("notifier");
        assert_eq!(
            app.paging(),
            [
                "critical: not paged (SHIPGATE_PAGERDUTY_ROUTING_KEY_CRIT is named by the policy but not set)",
                "warning: not paged (SHIPGATE_PAGERDUTY_ROUTING_KEY_WARN is named by the policy but not set)",
                "info: not paged",
            ]
        );
    }

    #[test]
    fn from_settings_without_credentials_sends_nothing_and_refuses_a_bad_web_url() {
        let vars = [("SHIPGATE_GITHUB_WEB_URL", "ghe.example.com")];
        let (slack, pd) = settings(&vars);
        let err = from_settings(services(), &slack, &pd, &vars, reqwest::Client::new())
            .expect_err("a URL without a scheme");
        assert!(err.to_string().contains("SHIPGATE_GITHUB_WEB_URL"));

        let vars: [(&str, &str); 0] = [];
        let (slack, pd) = settings(&vars);
        let app = from_settings(services(), &slack, &pd, &vars, reqwest::Client::new())
            .expect("notifier");
        assert!(app.slack.is_none() && app.pagerduty.is_none());
        assert_eq!(app.github_web_url, render::DEFAULT_GITHUB_WEB_URL);
    }

    #[test]
    fn unknown_severities_page_as_error_and_known_ones_keep_their_level() {
        assert_eq!(pagerduty_severity(None), PagerDutySeverity::Error);
        assert_eq!(
            pagerduty_severity(Some(Severity::Critical)),
            PagerDutySeverity::Critical
        );
        assert_eq!(
            pagerduty_severity(Some(Severity::Info)),
            PagerDutySeverity::Info
        );
    }
}
