//! Black-box tests of the GitHub App client against a wiremock stand-in for the REST API: the
//! exact requests it makes, token exchange and caching, and its retry behaviour.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::SecretString;
use serde_json::json;
use shipgate::outbound::{
    http_client, GitHubApi, GitHubApp, GitHubAppConfig, NewDeployment, OutboundError, RetryPolicy,
    ReviewState,
};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const APP_ID: u64 = 4242;
const INSTALLATION: u64 = 77;
const TOKEN_PATH: &str = "/app/installations/77/access_tokens";
const REVIEW_PATH: &str =
    "/repos/octo-org/hello-world/actions/runs/4242/deployment_protection_rule";

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    }
}

fn app_at(api_url: String) -> GitHubApp {
    let config = GitHubAppConfig {
        api_url,
        app_id: APP_ID,
        private_key: SecretString::from(include_str!("data/github-app-test-key.pem").to_owned()),
    };
    GitHubApp::new(config, http_client().unwrap())
        .unwrap()
        .with_policy(fast_policy())
}

fn app(server: &MockServer) -> GitHubApp {
    app_at(server.uri())
}

fn token_issued(token: &str) -> ResponseTemplate {
    let expires_at = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    ResponseTemplate::new(201).set_body_json(json!({
        "token": token,
        "expires_at": expires_at.to_string(),
        "permissions": {"deployments": "write", "actions": "write"},
        "repository_selection": "all"
    }))
}

async fn mount_token(server: &MockServer, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_issued(token))
        .up_to_n_times(times)
        .expect(times)
        .mount(server)
        .await;
}

/// The headers GitHub asks every REST client to send.
fn github_headers(builder: wiremock::MockBuilder) -> wiremock::MockBuilder {
    builder
        .and(header("accept", "application/vnd.github+json"))
        .and(header("x-github-api-version", "2022-11-28"))
        .and(header("user-agent", "shipgate"))
}

async fn approve(app: &GitHubApp, comment: &str) -> Result<(), OutboundError> {
    app.review_protection_rule(
        INSTALLATION,
        "octo-org/hello-world",
        4242,
        "production",
        ReviewState::Approved,
        comment,
    )
    .await
}

fn requests_to<'a>(requests: &'a [Request], wanted: &str) -> Vec<&'a Request> {
    requests.iter().filter(|r| r.url.path() == wanted).collect()
}

#[derive(serde::Deserialize)]
struct Claims {
    iat: i64,
    exp: i64,
    iss: String,
}

#[tokio::test]
async fn token_exchange_is_authenticated_with_a_valid_rs256_app_jwt() {
    let server = MockServer::start().await;
    github_headers(Mock::given(method("POST")).and(path(TOKEN_PATH)))
        .and(|request: &Request| request.body.is_empty())
        .respond_with(token_issued("ghs_one"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;

    approve(&app(&server), "ok").await.unwrap();

    let requests = server.received_requests().await.unwrap();
    let exchange = requests_to(&requests, TOKEN_PATH)[0];
    let authorization = exchange.headers["authorization"].to_str().unwrap();
    let jwt = authorization.strip_prefix("Bearer ").unwrap();
    let public_key =
        DecodingKey::from_rsa_pem(include_bytes!("data/github-app-test-key.pub.pem")).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[APP_ID.to_string()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let decoded = jsonwebtoken::decode::<Claims>(jwt, &public_key, &validation).unwrap();

    assert_eq!(decoded.header.alg, Algorithm::RS256);
    assert_eq!(decoded.claims.iss, "4242");
    let now = jiff::Timestamp::now().as_second();
    assert!(
        (decoded.claims.iat - (now - 60)).abs() <= 5,
        "iat is backdated a minute"
    );
    assert!(
        (decoded.claims.exp - (now + 540)).abs() <= 5,
        "exp is nine minutes ahead"
    );
}

#[tokio::test]
async fn installation_token_is_exchanged_once_and_reused_for_later_calls() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .and(header("authorization", "Bearer ghs_one"))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&server)
        .await;

    let app = app(&server);
    approve(&app, "first").await.unwrap();
    approve(&app, "second").await.unwrap();
}

#[tokio::test]
async fn tokens_are_cached_per_installation() {
    let server = MockServer::start().await;
    for (installation, token) in [(1, "ghs_a"), (2, "ghs_b")] {
        Mock::given(method("POST"))
            .and(path(format!(
                "/app/installations/{installation}/access_tokens"
            )))
            .respond_with(token_issued(token))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(REVIEW_PATH))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ResponseTemplate::new(204))
            .expect(2)
            .mount(&server)
            .await;
    }

    let app = app(&server);
    for installation in [1, 2, 1, 2] {
        app.review_protection_rule(
            installation,
            "octo-org/hello-world",
            4242,
            "production",
            ReviewState::Approved,
            "ok",
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn review_posts_the_decision_for_the_run_with_the_installation_token() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    github_headers(Mock::given(method("POST")).and(path(REVIEW_PATH)))
        .and(header("authorization", "Bearer ghs_one"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "environment_name": "production",
            "state": "rejected",
            "comment": "Rejected by @alice in Slack"
        })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    app(&server)
        .review_protection_rule(
            INSTALLATION,
            "octo-org/hello-world",
            4242,
            "production",
            ReviewState::Rejected,
            "Rejected by @alice in Slack",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn status_report_uses_the_same_endpoint_without_a_state() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    github_headers(Mock::given(method("POST")).and(path(REVIEW_PATH)))
        .and(body_json(json!({
            "environment_name": "production",
            "comment": "Waiting for 1 more approval"
        })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    app(&server)
        .report_protection_rule_status(
            INSTALLATION,
            "octo-org/hello-world",
            4242,
            "production",
            "Waiting for 1 more approval",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn long_comment_is_cut_to_1024_characters_on_a_character_boundary() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    // Two-byte characters: a cut at 1024 bytes would keep only 512 of them.
    approve(&app(&server), &"é".repeat(1500)).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    let body: serde_json::Value = requests_to(&requests, REVIEW_PATH)[0].body_json().unwrap();
    assert_eq!(body["comment"], json!("é".repeat(1024)));
}

#[tokio::test]
async fn refused_token_is_dropped_renewed_and_the_call_retried_once() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_old", 1).await;
    mount_token(&server, "ghs_new", 1).await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .and(header("authorization", "Bearer ghs_old"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .and(header("authorization", "Bearer ghs_new"))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&server)
        .await;

    let app = app(&server);
    approve(&app, "ok").await.unwrap();
    // The renewed token is the one cached.
    approve(&app, "ok again").await.unwrap();
}

#[tokio::test]
async fn a_second_401_is_permanent_and_the_error_carries_no_token() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    mount_token(&server, "ghs_two", 1).await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .expect(2)
        .mount(&server)
        .await;

    let err = approve(&app(&server), "ok").await.unwrap_err();

    assert!(matches!(
        err,
        OutboundError::Permanent { service: "github", status: 401, ref message } if message == "Bad credentials"
    ));
    assert!(err.is_permanent());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("ghs_"), "{shown}");
}

#[tokio::test]
async fn server_errors_are_retried_until_the_call_succeeds() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    approve(&app(&server), "ok").await.unwrap();
}

#[tokio::test]
async fn persistent_server_errors_exhaust_the_policy_and_stay_retryable() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;

    let err = approve(&app(&server), "ok").await.unwrap_err();

    assert!(matches!(
        err,
        OutboundError::Exhausted {
            service: "github",
            attempts: 3,
            ..
        }
    ));
    assert_eq!(err.status(), Some(503));
    assert!(!err.is_permanent());
}

#[tokio::test]
async fn validation_failure_is_permanent_and_not_retried() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "message": "Validation Failed",
            "documentation_url": "https://docs.github.com/rest"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let err = approve(&app(&server), "ok").await.unwrap_err();

    assert!(matches!(
        err,
        OutboundError::Permanent { service: "github", status: 422, ref message } if message == "Validation Failed"
    ));
    assert!(err.is_permanent());
}

#[tokio::test]
async fn secondary_rate_limit_with_retry_after_is_waited_out_and_retried() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "0")
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit"})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    approve(&app(&server), "ok").await.unwrap();
}

#[tokio::test]
async fn rate_limit_resetting_beyond_the_cap_gives_up_at_once_as_retryable() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    let reset = jiff::Timestamp::now().as_second() + 1800;
    Mock::given(method("POST"))
        .and(path(REVIEW_PATH))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .set_body_json(json!({"message": "API rate limit exceeded"})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let started = std::time::Instant::now();
    let err = approve(&app(&server), "ok").await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no sleeping for the reset"
    );
    assert!(matches!(err, OutboundError::Exhausted { attempts: 1, .. }));
    assert!(!err.is_permanent());
    let wait = err.retry_after().unwrap();
    assert!(wait > Duration::from_secs(1790) && wait <= Duration::from_secs(1802));
}

#[tokio::test]
async fn create_deployment_posts_the_deployment_and_returns_its_id() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    github_headers(
        Mock::given(method("POST")).and(path("/repos/octo-org/hello-world/deployments")),
    )
    .and(header("authorization", "Bearer ghs_one"))
    .and(body_json(json!({
        "ref": "9f0c1e2",
        "environment": "production",
        "description": "shipgate rollback to last known good",
        "payload": {"shipgate": {"rollback_of": "d-123"}},
        "auto_merge": false,
        "required_contexts": [],
        "task": "deploy"
    })))
    .respond_with(ResponseTemplate::new(201).set_body_json(json!({
        "id": 1_234_567_890_u64,
        "sha": "9f0c1e2",
        "ref": "9f0c1e2",
        "task": "deploy",
        "environment": "production"
    })))
    .expect(1)
    .mount(&server)
    .await;

    let deployment = NewDeployment {
        description: Some("shipgate rollback to last known good".into()),
        payload: json!({"shipgate": {"rollback_of": "d-123"}}),
        ..NewDeployment::new("9f0c1e2", "production")
    };
    let id = app(&server)
        .create_deployment(INSTALLATION, "octo-org/hello-world", &deployment)
        .await
        .unwrap();

    assert_eq!(id, 1_234_567_890);
}

#[tokio::test]
async fn dispatch_workflow_posts_ref_and_inputs_to_the_workflow() {
    let server = MockServer::start().await;
    mount_token(&server, "ghs_one", 1).await;
    github_headers(Mock::given(method("POST")).and(path(
        "/repos/octo-org/hello-world/actions/workflows/rollback.yml/dispatches",
    )))
    .and(header("authorization", "Bearer ghs_one"))
    .and(body_json(
        json!({"ref": "main", "inputs": {"sha": "9f0c1e2", "environment": "production"}, "return_run_details": true}),
    ))
    .respond_with(ResponseTemplate::new(200).set_body_json(json!({
        "workflow_run_id": 4711,
        "run_url": "https://api.github.com/repos/octo-org/hello-world/actions/runs/4711",
        "html_url": "https://github.com/octo-org/hello-world/actions/runs/4711",
    })))
    .expect(1)
    .mount(&server)
    .await;

    let mut inputs = serde_json::Map::new();
    inputs.insert("sha".into(), json!("9f0c1e2"));
    inputs.insert("environment".into(), json!("production"));
    let run = app(&server)
        .dispatch_workflow(
            INSTALLATION,
            "octo-org/hello-world",
            "rollback.yml",
            "main",
            &inputs,
        )
        .await
        .unwrap();
    assert_eq!(run, Some(4711));
}

#[tokio::test]
async fn a_dispatch_answered_without_run_details_or_with_an_unreadable_body_still_went_out() {
    for answer in [
        ResponseTemplate::new(204),
        ResponseTemplate::new(200).set_body_string("{\"unexpected\": true}"),
    ] {
        let server = MockServer::start().await;
        mount_token(&server, "ghs_one", 1).await;
        Mock::given(method("POST"))
            .and(path(
                "/repos/octo-org/hello-world/actions/workflows/rollback.yml/dispatches",
            ))
            .respond_with(answer)
            .expect(1)
            .mount(&server)
            .await;
        let run = app(&server)
            .dispatch_workflow(
                INSTALLATION,
                "octo-org/hello-world",
                "rollback.yml",
                "main",
                &serde_json::Map::new(),
            )
            .await
            .unwrap();
        assert_eq!(run, None, "dispatched once; the run is known by its name");
    }
}

#[tokio::test]
async fn enterprise_server_base_url_with_trailing_slash_prefixes_every_path() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/api/v3{TOKEN_PATH}")))
        .respond_with(token_issued("ghs_one"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/api/v3{REVIEW_PATH}")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    approve(&app_at(format!("{}/api/v3/", server.uri())), "ok")
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_repository_name_is_refused_before_any_request() {
    let server = MockServer::start().await;

    let err = app(&server)
        .review_protection_rule(
            INSTALLATION,
            "octo-org/hello-world/../../admin",
            1,
            "production",
            ReviewState::Approved,
            "ok",
        )
        .await
        .unwrap_err();

    assert!(matches!(err, OutboundError::InvalidRequest { .. }));
    assert!(server.received_requests().await.unwrap().is_empty());
}
