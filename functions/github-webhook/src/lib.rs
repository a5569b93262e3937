//! `POST /webhooks/github`: GitHub App webhooks in, deployment decisions out.
//!
//! The handler authenticates the delivery (`X-Hub-Signature-256`) before parsing anything,
//! dedupes it on `X-GitHub-Delivery`, parses only the fields it needs into typed events, and
//! hands them to the shared use cases. The same [`handle`] serves Lambda (through
//! `lambda_http`) and the self-hosted server.

pub mod events;

use std::time::Duration;

use http::StatusCode;
use secrecy::SecretString;
use shipgate::domain::events::CommitsPushed;
use shipgate::service::{gate, lifecycle, ServiceError, Services};
use shipgate::signature::verify_github;
use shipgate::store::repo::{Claim, CLAIM_LEASE};
use shipgate::web::{self, ApiError, Request, Response};

use events::{GitHubEvent, ParseError};

/// How long a delivery id is remembered (GitHub redelivers for up to 3 days).
pub const DELIVERY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The handler's dependencies, built once at cold start.
#[derive(Clone)]
pub struct GitHubWebhook {
    pub services: Services,
    pub webhook_secret: SecretString,
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for GitHubWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubWebhook").finish_non_exhaustive()
    }
}

impl GitHubWebhook {
    pub fn new(services: Services, webhook_secret: SecretString) -> Self {
        GitHubWebhook {
            services,
            webhook_secret,
            max_body_bytes: web::MAX_BODY_BYTES,
        }
    }
}

/// Handles one webhook delivery.
pub async fn handle(app: &GitHubWebhook, req: Request) -> Response {
    let delivery = web::header(&req, "x-github-delivery")
        .unwrap_or("")
        .to_string();
    let event = web::header(&req, "x-github-event")
        .unwrap_or("")
        .to_string();
    let span = tracing::info_span!("github_webhook", delivery = %delivery, event = %event);
    let _enter = span.enter();
    match handle_inner(app, &req, &delivery, &event).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn service_error(e: ServiceError) -> ApiError {
    ApiError::internal(e)
}

async fn handle_inner(
    app: &GitHubWebhook,
    req: &Request,
    delivery: &str,
    event: &str,
) -> Result<Response, ApiError> {
    web::require_post(req)?;
    web::check_size(req, app.max_body_bytes)?;
    verify_github(
        &app.webhook_secret,
        req.body(),
        web::header(req, "x-hub-signature-256"),
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if event.is_empty() {
        return Err(ApiError::BadRequest("missing X-GitHub-Event header".into()));
    }
    if delivery.is_empty() || delivery.len() > 100 {
        return Err(ApiError::BadRequest(
            "missing or malformed X-GitHub-Delivery header".into(),
        ));
    }
    let parsed = match events::parse(event, req.body()) {
        Ok(ev) => ev,
        Err(ParseError::Unused { event, action }) => {
            tracing::debug!(
                event,
                action = action.as_deref().unwrap_or(""),
                "ignoring event shipgate does not use"
            );
            return Ok(web::accepted(&format!("event {event} ignored")));
        }
        Err(e) => return Err(ApiError::BadRequest(e.to_string())),
    };

    // The policy in force when the event arrived.
    let svc = &app.services.current().await;
    let now = svc.now();
    match svc
        .repo
        .begin_event("github", delivery, now, CLAIM_LEASE)
        .await
        .map_err(ApiError::internal)?
    {
        Claim::Acquired => {}
        Claim::Done => {
            tracing::info!("duplicate delivery; nothing changed");
            return Ok(web::ok(
                "duplicate delivery ignored",
                serde_json::json!({ "duplicate": true }),
            ));
        }
        Claim::InProgress => {
            // Not a 2xx: if the attempt holding the claim fails, this redelivery must not
            // have been acknowledged. Logged once, with the answer.
            return Err(ApiError::Conflict(
                "this delivery is being processed; deliver it again later".into(),
            ));
        }
    }

    let result = dispatch(svc, parsed).await;
    match &result {
        // Give the delivery id back when a redelivery could succeed.
        Err(e) if e.is_retryable() => {
            if let Err(release) = svc.repo.release_event("github", delivery).await {
                tracing::error!(error = %release, "could not release delivery claim; a redelivery waits for the claim's lease to run out");
            }
        }
        // Processed, or failed for good: redeliveries are duplicates from now on.
        _ => {
            if let Err(confirm) = svc
                .repo
                .confirm_event("github", delivery, svc.now(), DELIVERY_TTL)
                .await
            {
                tracing::error!(error = %confirm, "could not confirm delivery claim; a redelivery after its lease is processed again");
            }
        }
    }
    result.map_err(service_error)
}

async fn dispatch(svc: &Services, event: GitHubEvent) -> Result<Response, ServiceError> {
    match event {
        GitHubEvent::Ping {
            hook_id,
            app_id,
            zen,
        } => {
            let record = serde_json::json!({ "hook_id": hook_id, "app_id": app_id, "zen": zen, "at": svc.now() });
            svc.repo
                .put_meta("github-hook", &hook_id.unwrap_or(0).to_string(), &record)
                .await?;
            Ok(web::ok(
                "pong",
                serde_json::json!({ "hook_id": hook_id, "app_id": app_id }),
            ))
        }
        GitHubEvent::ProtectionRule(req) => {
            let outcome = gate::request(svc, &req).await?;
            let body = match outcome {
                gate::GateOutcome::Approved { deployment_id } => {
                    serde_json::json!({ "decision": "approved", "deployment_id": deployment_id })
                }
                gate::GateOutcome::AwaitingApproval {
                    deployment_id,
                    required,
                } => {
                    serde_json::json!({ "decision": "awaiting_approval", "deployment_id": deployment_id, "approvals_required": required })
                }
                gate::GateOutcome::Rejected {
                    deployment_id,
                    message,
                } => {
                    serde_json::json!({ "decision": "rejected", "deployment_id": deployment_id, "reason": message })
                }
                gate::GateOutcome::Queued {
                    deployment_id,
                    position,
                    behind,
                } => {
                    serde_json::json!({ "decision": "queued", "deployment_id": deployment_id, "position": position, "behind": behind })
                }
                gate::GateOutcome::AlreadyGated {
                    deployment_id,
                    state,
                } => {
                    serde_json::json!({ "decision": state.as_str(), "deployment_id": deployment_id, "duplicate": true })
                }
            };
            Ok(web::ok("gated", body))
        }
        GitHubEvent::DeploymentCreated(ev) => {
            let outcome = lifecycle::deployment_created(svc, &ev).await?;
            Ok(lifecycle_response(outcome))
        }
        GitHubEvent::DeploymentStatus(ev) => {
            let outcome = lifecycle::deployment_status(svc, &ev).await?;
            Ok(lifecycle_response(outcome))
        }
        GitHubEvent::WorkflowRunCompleted(run) => {
            lifecycle::workflow_completed(svc, &run).await?;
            Ok(web::ok(
                "recorded",
                serde_json::json!({ "sha": run.sha, "conclusion": run.conclusion }),
            ))
        }
        GitHubEvent::Push(push) => {
            lifecycle::pushed(svc, &push).await?;
            let CommitsPushed { commits, .. } = push;
            Ok(web::ok(
                "recorded",
                serde_json::json!({ "commits": commits.len() }),
            ))
        }
    }
}

fn lifecycle_response(outcome: lifecycle::LifecycleOutcome) -> Response {
    use lifecycle::LifecycleOutcome as O;
    let body = match outcome {
        O::Moved {
            deployment_id,
            state,
        } => serde_json::json!({ "deployment_id": deployment_id, "state": state, "changed": true }),
        O::Unchanged {
            deployment_id,
            state,
        } => {
            serde_json::json!({ "deployment_id": deployment_id, "state": state, "changed": false })
        }
        O::Untracked => serde_json::json!({ "tracked": false }),
    };
    web::json(StatusCode::OK, &body)
}
