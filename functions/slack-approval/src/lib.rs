//! `POST /webhooks/slack`: Approve / Reject / Roll back / Approve rollback / Cancel rollback
//! clicks from Slack in, decisions out.
//!
//! The handler authenticates the request (Slack's v0 signature, timestamp within 300 s) before
//! parsing anything, dedupes the click on `{user}:{action_ts}:{value}`, and hands it to
//! [`shipgate::service::approvals`]. The same [`handle`] serves Lambda (through `lambda_http`)
//! and the self-hosted server.
//!
//! Answers, all within Slack's 3 s acknowledgement window:
//! - a button click gets `200` with an empty body (Slack ignores the body of a `block_actions`
//!   answer); the clicker is told what happened in an ephemeral message sent to the click's
//!   `response_url`, and the shared message is updated by the notifier from the published
//!   notification;
//! - the reject-reason modal's submission gets `200` with a `response_action` JSON body: the
//!   modal is replaced by the outcome text, or keeps the input with an error when the reason
//!   was blank;
//! - interactions shipgate does not act on get `200` with an empty body;
//! - `401` bad or stale signature, `403` a click or submission from another workspace (a
//!   Slack Connect guest) or sent to another app ([`Workspace`]), `400` malformed payload,
//!   `409` the same click still being handled, `413` body too large, `500`.
//!
//! Time budget: the store writes are inline, GitHub gets at most
//! [`approvals::GITHUB_ANSWER_BUDGET`] (1.5 s, then the sweeper takes over), and each Slack
//! call made while the click waits (`response_url`, `views.open`) gets at most
//! [`SLACK_CALL_BUDGET`] (1 s).

pub mod interaction;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use secrecy::SecretString;
use serde_json::json;
use shipgate::outbound::SlackApiPort;
use shipgate::service::approvals::{self, ClickOutcome};
use shipgate::service::{ServiceError, Services};
use shipgate::signature::verify_slack;
use shipgate::store::repo::{Claim, CLAIM_LEASE};
use shipgate::web::{self, ApiError, Request, Response};
use tracing::Instrument;

use interaction::{
    ButtonAction, Click, Interaction, Origin, ReasonSubmission, REASON_ACTION_ID, REASON_BLOCK_ID,
    REASON_CALLBACK_ID,
};

/// How long a click id is remembered (Slack retries within minutes).
pub const CLICK_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest any one Slack call may hold up the answer to Slack.
pub const SLACK_CALL_BUDGET: Duration = Duration::from_secs(1);

/// Idempotency scope of Slack clicks.
pub const CLAIM_SCOPE: &str = "slack";

/// What the clicker is told when the reason dialog could not be opened.
pub const DIALOG_FAILED: &str =
    "Could not open the reason dialog, so nothing was rejected: please click Reject again.";

/// What the reason dialog says under a blank reason.
pub const REASON_BLANK: &str = "Give a reason for the rejection.";
/// Shown in the reason dialog when the same submission is still being handled.
pub const REASON_IN_PROGRESS: &str =
    "Your rejection is still being recorded; submit again in a moment.";

/// The Slack workspace (and app) whose clicks count. A click or submission from any other
/// workspace — a Slack Connect guest in a shared channel, whose own workspace differs — or
/// sent to another app is refused (`403`) before it does anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// `SHIPGATE_SLACK_TEAM_ID`: the workspace's id, `T…` (every click's `team.id`).
    pub team_id: String,
    /// `SHIPGATE_SLACK_APP_ID`: the app's id, `A…`; unchecked when not set.
    pub app_id: Option<String>,
}

impl Workspace {
    /// Why `origin` is refused, or `None` when it is this workspace (and app).
    pub fn refuses(&self, origin: &Origin) -> Option<String> {
        match origin.team_id.as_deref() {
            None => return Some("the interaction names no workspace (team.id)".into()),
            Some(team) if team != self.team_id => {
                return Some(format!(
                    "the interaction comes from workspace {team}, not {}",
                    self.team_id
                ))
            }
            Some(_) => {}
        }
        if let Some(home) = origin
            .user_team_id
            .as_deref()
            .filter(|home| *home != self.team_id)
        {
            return Some(format!(
                "the user belongs to workspace {home}, not {} (a guest from another workspace)",
                self.team_id
            ));
        }
        match (self.app_id.as_deref(), origin.api_app_id.as_deref()) {
            (Some(want), Some(got)) if want != got => {
                Some(format!("the interaction was sent to app {got}, not {want}"))
            }
            (Some(want), None) => Some(format!(
                "the interaction names no app (api_app_id); expected {want}"
            )),
            _ => None,
        }
    }
}

/// The handler's dependencies, built once at cold start.
#[derive(Clone)]
pub struct SlackApproval {
    pub services: Services,
    pub signing_secret: SecretString,
    pub workspace: Workspace,
    pub slack: Arc<dyn SlackApiPort>,
    pub max_body_bytes: usize,
    pub slack_call_budget: Duration,
}

impl std::fmt::Debug for SlackApproval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApproval").finish_non_exhaustive()
    }
}

impl SlackApproval {
    pub fn new(
        services: Services,
        signing_secret: SecretString,
        workspace: Workspace,
        slack: Arc<dyn SlackApiPort>,
    ) -> Self {
        SlackApproval {
            services,
            signing_secret,
            workspace,
            slack,
            max_body_bytes: web::MAX_BODY_BYTES,
            slack_call_budget: SLACK_CALL_BUDGET,
        }
    }
}

/// Handles one interactivity request.
pub async fn handle(app: &SlackApproval, req: Request) -> Response {
    match handle_inner(app, &req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// `200` with an empty body: Slack's "received".
fn empty_ok() -> Response {
    let mut resp = http::Response::new(String::new());
    *resp.status_mut() = StatusCode::OK;
    resp
}

async fn handle_inner(app: &SlackApproval, req: &Request) -> Result<Response, ApiError> {
    web::require_post(req)?;
    web::check_size(req, app.max_body_bytes)?;
    let now = app.services.now();
    verify_slack(
        &app.signing_secret,
        req.body(),
        web::header(req, "x-slack-request-timestamp"),
        web::header(req, "x-slack-signature"),
        now.as_second(),
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;

    let parsed =
        interaction::parse_form(req.body()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match parsed {
        Interaction::Ignored { kind, detail } => {
            tracing::debug!(
                kind,
                detail,
                "ignoring interaction shipgate does not act on"
            );
            Ok(empty_ok())
        }
        Interaction::Click(click) => {
            refuse_other_workspace(app, &click.origin, &click.user)?;
            let span = tracing::info_span!(
                "slack_click",
                deployment_id = %click.deployment_id,
                action = click.action.as_str(),
                user = %click.user,
            );
            on_click(app, click).instrument(span).await
        }
        Interaction::ReasonSubmitted(sub) => {
            refuse_other_workspace(app, &sub.origin, &sub.user)?;
            let span = tracing::info_span!(
                "slack_reject_reason",
                deployment_id = %sub.deployment_id,
                user = %sub.user,
            );
            on_reason(app, sub).instrument(span).await
        }
    }
}

fn refuse_other_workspace(
    app: &SlackApproval,
    origin: &Origin,
    user: &str,
) -> Result<(), ApiError> {
    match app.workspace.refuses(origin) {
        None => Ok(()),
        Some(why) => Err(ApiError::Forbidden(format!(
            "{why}; shipgate acts only on its own workspace's clicks (user {user})"
        ))),
    }
}

/// Claims a click id for this attempt (pending for [`CLAIM_LEASE`]). [`Claim::Acquired`]
/// must end in [`confirm`] (the click did what it does) or in a release (a retry of the same
/// click should count), as [`on_click`] does.
async fn claim(svc: &Services, key: &str) -> Result<Claim, ApiError> {
    svc.repo
        .begin_event(CLAIM_SCOPE, key, svc.now(), CLAIM_LEASE)
        .await
        .map_err(ApiError::internal)
}

/// Marks a claimed click as handled, so a repeat of it changes nothing. A failure only
/// costs a repeat after the lease, which the use cases absorb (they are idempotent).
async fn confirm(svc: &Services, key: &str) {
    if let Err(e) = svc
        .repo
        .confirm_event(CLAIM_SCOPE, key, svc.now(), CLICK_TTL)
        .await
    {
        tracing::error!(error = %e, "could not confirm click claim; a retry after its lease is handled again");
    }
}

/// Turns a failed use case into the answer, giving the claim back when a retry may succeed
/// and confirming it otherwise.
async fn failed(svc: &Services, key: &str, e: ServiceError) -> ApiError {
    if e.is_retryable() {
        if let Err(release) = svc.repo.release_event(CLAIM_SCOPE, key).await {
            tracing::error!(error = %release, "could not release click claim; a retry waits for its lease to run out");
        }
    } else {
        confirm(svc, key).await;
    }
    ApiError::internal(e)
}

async fn on_click(app: &SlackApproval, click: Click) -> Result<Response, ApiError> {
    let svc = &app.services.current().await;
    let key = format!("{}:{}:{}", click.user, click.action_ts, click.value);
    match claim(svc, &key).await? {
        Claim::Acquired => {}
        Claim::Done => {
            tracing::info!("repeated click; nothing changed");
            return Ok(empty_ok());
        }
        Claim::InProgress => {
            // Not a 2xx: if the attempt holding the claim fails, this copy must not have been
            // taken for handled. Logged once, with the answer.
            return Err(ApiError::Conflict(
                "this click is still being handled; try again in a moment".into(),
            ));
        }
    }
    let (id, nonce, user) = (&click.deployment_id, &click.nonce, &click.user);
    let result = match click.action {
        ButtonAction::Approve => approvals::approve(svc, id, nonce, user).await,
        ButtonAction::Reject => approvals::reject(svc, id, nonce, user, None).await,
        ButtonAction::Rollback => approvals::request_rollback(svc, id, nonce, user).await,
        ButtonAction::ApproveRollback => approvals::approve_rollback(svc, id, nonce, user).await,
        ButtonAction::CancelRollback => approvals::cancel_rollback(svc, id, nonce, user).await,
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => return Err(failed(svc, &key, e).await),
    };
    let text = match &outcome {
        ClickOutcome::ReasonRequired { environment } => {
            match open_reason_dialog(app, &click, environment).await {
                Ok(()) => {
                    confirm(svc, &key).await;
                    return Ok(empty_ok());
                }
                Err(()) => {
                    // The click did nothing; let the same click count if Slack retries it.
                    if let Err(e) = svc.repo.release_event(CLAIM_SCOPE, &key).await {
                        tracing::error!(error = %e, "could not release click claim");
                    }
                    DIALOG_FAILED.to_string()
                }
            }
        }
        other => {
            confirm(svc, &key).await;
            other.text()
        }
    };
    if let Some(url) = click.response_url.as_deref() {
        tell_clicker(app, url, &text).await;
    }
    Ok(empty_ok())
}

/// The modal asking why; its submission comes back as a `view_submission`.
pub fn reason_view(deployment_id: &str, nonce: &str, environment: &str) -> serde_json::Value {
    json!({
        "type": "modal",
        "callback_id": REASON_CALLBACK_ID,
        "private_metadata": format!("{deployment_id}:{nonce}"),
        "title": { "type": "plain_text", "text": "Reject deployment" },
        "submit": { "type": "plain_text", "text": "Reject" },
        "close": { "type": "plain_text", "text": "Cancel" },
        "blocks": [{
            "type": "input",
            "block_id": REASON_BLOCK_ID,
            "label": { "type": "plain_text", "text": format!("Why reject this {environment} deployment?") },
            "element": {
                "type": "plain_text_input",
                "action_id": REASON_ACTION_ID,
                "multiline": true,
                "max_length": 500
            }
        }]
    })
}

async fn open_reason_dialog(
    app: &SlackApproval,
    click: &Click,
    environment: &str,
) -> Result<(), ()> {
    let Some(trigger_id) = click.trigger_id.as_deref() else {
        tracing::warn!("reject click without trigger_id; cannot ask for a reason");
        return Err(());
    };
    let view = reason_view(&click.deployment_id, &click.nonce, environment);
    match tokio::time::timeout(
        app.slack_call_budget,
        app.slack.open_view(trigger_id, &view),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not open the reject-reason dialog");
            Err(())
        }
        Err(_) => {
            tracing::warn!("opening the reject-reason dialog took too long");
            Err(())
        }
    }
}

/// The ephemeral answer to the clicker; best effort, within the budget.
async fn tell_clicker(app: &SlackApproval, response_url: &str, text: &str) {
    let body = ephemeral(text);
    match tokio::time::timeout(
        app.slack_call_budget,
        app.slack.respond(response_url, &body),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not answer the clicker"),
        Err(_) => tracing::warn!("answering the clicker took too long; gave up"),
    }
}

/// The JSON posted to a `response_url`: a message only the clicker sees, below the original.
pub fn ephemeral(text: &str) -> serde_json::Value {
    json!({ "response_type": "ephemeral", "replace_original": false, "text": text })
}

/// The modal shown after a submission: the outcome, with a Close button.
pub fn outcome_view(text: &str) -> serde_json::Value {
    json!({
        "type": "modal",
        "title": { "type": "plain_text", "text": "shipgate" },
        "close": { "type": "plain_text", "text": "Close" },
        "blocks": [{ "type": "section", "text": { "type": "plain_text", "text": text } }]
    })
}

async fn on_reason(app: &SlackApproval, sub: ReasonSubmission) -> Result<Response, ApiError> {
    let svc = &app.services.current().await;
    if sub.reason.trim().is_empty() {
        return Ok(web::json(
            StatusCode::OK,
            &json!({ "response_action": "errors", "errors": { REASON_BLOCK_ID: REASON_BLANK } }),
        ));
    }
    let key = format!("{}:{}:{}", sub.user, sub.view_id, sub.metadata);
    match claim(svc, &key).await? {
        Claim::Acquired => {}
        Claim::Done => {
            tracing::info!("repeated reason submission; nothing changed");
            return Ok(empty_ok());
        }
        Claim::InProgress => {
            // Keep the dialog open, so the person can submit again once the first attempt
            // has finished (or failed).
            tracing::info!("reason submission is being handled by another attempt");
            return Ok(web::json(
                StatusCode::OK,
                &json!({ "response_action": "errors", "errors": { REASON_BLOCK_ID: REASON_IN_PROGRESS } }),
            ));
        }
    }
    let outcome = match approvals::reject(
        svc,
        &sub.deployment_id,
        &sub.nonce,
        &sub.user,
        Some(&sub.reason),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(e) => return Err(failed(svc, &key, e).await),
    };
    confirm(svc, &key).await;
    Ok(web::json(
        StatusCode::OK,
        &json!({ "response_action": "update", "view": outcome_view(&outcome.text()) }),
    ))
}
