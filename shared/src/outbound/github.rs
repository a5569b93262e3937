//! The GitHub App client: App JWT → installation token, and the four REST calls shipgate makes
//! (answer a deployment protection rule, report its status, create a deployment, dispatch a
//! workflow).
//!
//! Installation tokens live for an hour; they are cached per installation and renewed five
//! minutes before they expire. A 401 from an API call (a token revoked or expired early) drops
//! the cached token and repeats the call once with a fresh one.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::retry::{
    classify_http, execute, json_bytes, truncate_chars, OutboundError, RawResponse, RetryPolicy,
};
use super::trim_base_url;

const SERVICE: &str = "github";

/// github.com's REST API. GitHub Enterprise Server uses `https://HOST/api/v3`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// GitHub rejects protection-rule comments longer than this many characters.
pub const MAX_COMMENT_CHARS: usize = 1024;

/// Renew a cached token this long before GitHub says it expires, so a token is never used in
/// the last minutes of its life (clock skew, long retries).
const TOKEN_REFRESH_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(5 * 60);

/// Where the GitHub App lives and how it proves who it is.
#[derive(Debug, Clone)]
pub struct GitHubAppConfig {
    /// REST API base URL, e.g. [`DEFAULT_API_URL`] or `https://ghes.example.com/api/v3`; a
    /// trailing slash is ignored.
    pub api_url: String,
    pub app_id: u64,
    /// The App's private key, PEM (PKCS#1 as GitHub issues it, or PKCS#8).
    pub private_key: SecretString,
}

impl GitHubAppConfig {
    /// Configuration for github.com.
    pub fn new(app_id: u64, private_key: SecretString) -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            app_id,
            private_key,
        }
    }
}

/// The decision sent back for a deployment protection rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    Approved,
    Rejected,
}

/// A deployment to create (`POST /repos/{owner}/{repo}/deployments`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewDeployment {
    /// Branch, tag or SHA to deploy.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub environment: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub payload: serde_json::Value,
    /// GitHub merges the default branch into `ref` when true; a rollback must deploy exactly
    /// what it names, so [`NewDeployment::new`] turns it off.
    pub auto_merge: bool,
    /// `Some(vec![])` skips commit-status checks (needed to redeploy a known-good SHA);
    /// `None` lets GitHub require every context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_contexts: Option<Vec<String>>,
    pub task: String,
}

impl NewDeployment {
    /// A `deploy` task for `git_ref` to `environment`, without auto-merge or status checks and
    /// with an empty payload.
    pub fn new(git_ref: impl Into<String>, environment: impl Into<String>) -> Self {
        Self {
            git_ref: git_ref.into(),
            environment: environment.into(),
            description: None,
            payload: serde_json::Value::Object(serde_json::Map::new()),
            auto_merge: false,
            required_contexts: Some(Vec::new()),
            task: "deploy".to_owned(),
        }
    }
}

/// The GitHub calls shipgate's handlers make, so they can be tested against a fake.
#[async_trait]
pub trait GitHubApi: Send + Sync {
    /// Approves or rejects the deployment a workflow run is waiting on. `comment` is cut to
    /// [`MAX_COMMENT_CHARS`] characters.
    async fn review_protection_rule(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
        environment_name: &str,
        state: ReviewState,
        comment: &str,
    ) -> Result<(), OutboundError>;

    /// Posts a status comment on a pending protection rule without deciding it.
    async fn report_protection_rule_status(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
        environment_name: &str,
        comment: &str,
    ) -> Result<(), OutboundError>;

    /// Creates a deployment and returns its id.
    async fn create_deployment(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        deployment: &NewDeployment,
    ) -> Result<u64, OutboundError>;

    /// A workflow run as GitHub sees it (`GET /repos/{o}/{r}/actions/runs/{run_id}`): its
    /// display title — the workflow's `run-name`, which is how a run asks for break-glass
    /// (`break-glass: <reason>`) — and where it is (the sweeper's reconciliation).
    async fn workflow_run(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
    ) -> Result<WorkflowRunView, OutboundError>;

    /// The newest status of a deployment
    /// (`GET /repos/{o}/{r}/deployments/{id}/statuses?per_page=1`), `None` when it has none.
    async fn latest_deployment_status(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        deployment_id: u64,
    ) -> Result<Option<String>, OutboundError>;

    /// The environments a workflow run is still waiting on, protection rules not yet passed
    /// (`GET /repos/{o}/{r}/actions/runs/{run_id}/pending_deployments`). Asked before an
    /// answer is sent again: an environment missing from it has had its answer.
    async fn pending_environments(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
    ) -> Result<Vec<String>, OutboundError>;

    /// Triggers a `workflow_dispatch` run of `workflow_id_or_file` (a numeric id or a file name
    /// such as `rollback.yml`) on `git_ref`, asking for the run's id (`return_run_details`,
    /// answered since February 2026). Returns the run id, or `None` where GitHub does not
    /// give it (GitHub Enterprise Server versions that refuse the parameter are asked again
    /// without it).
    async fn dispatch_workflow(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        workflow_id_or_file: &str,
        git_ref: &str,
        inputs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<u64>, OutboundError>;
}

/// What [`GitHubApi::workflow_run`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WorkflowRunView {
    #[serde(default)]
    pub display_title: String,
    /// `queued`, `in_progress`, `waiting`, `completed`, ...
    #[serde(default)]
    pub status: String,
    /// Set once `completed`: `success`, `failure`, `cancelled`, `timed_out`, ...
    #[serde(default)]
    pub conclusion: Option<String>,
}

/// Takes the workflow run id out of a `deployment_callback_url`
/// (`…/repos/o/r/actions/runs/4242/deployment_protection_rule` → `4242`).
pub fn parse_run_id(deployment_callback_url: &str) -> Option<u64> {
    let path = deployment_callback_url
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    // The last `runs/<n>` wins, so an owner or repository named `runs` cannot confuse it.
    segments
        .windows(2)
        .rev()
        .find(|pair| pair[0] == "runs" && pair[1].parse::<u64>().is_ok())
        .and_then(|pair| pair[1].parse().ok())
}

struct CachedToken {
    token: SecretString,
    refresh_at: jiff::Timestamp,
}

/// A GitHub App acting through its installations.
pub struct GitHubApp {
    http: reqwest::Client,
    api_url: String,
    app_id: u64,
    key: EncodingKey,
    policy: RetryPolicy,
    tokens: Mutex<HashMap<u64, CachedToken>>,
}

impl fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubApp")
            .field("api_url", &self.api_url)
            .field("app_id", &self.app_id)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

#[derive(Deserialize)]
struct InstallationToken {
    token: String,
    expires_at: jiff::Timestamp,
}

#[derive(Serialize)]
struct ProtectionRuleBody<'a> {
    environment_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<ReviewState>,
    comment: &'a str,
}

#[derive(Serialize)]
struct DispatchBody<'a> {
    #[serde(rename = "ref")]
    git_ref: &'a str,
    inputs: &'a serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    return_run_details: bool,
}

#[derive(Deserialize)]
struct DispatchedRun {
    workflow_run_id: u64,
}

#[derive(Deserialize)]
struct CreatedDeployment {
    id: u64,
}

impl GitHubApp {
    /// Parses the private key once (a bad key fails here, at cold start) and uses the default
    /// [`RetryPolicy`].
    pub fn new(config: GitHubAppConfig, http: reqwest::Client) -> Result<Self, OutboundError> {
        let key = EncodingKey::from_rsa_pem(config.private_key.expose_secret().as_bytes())
            .map_err(|source| OutboundError::Credentials {
                service: SERVICE,
                source: Box::new(source),
            })?;
        Ok(Self {
            http,
            api_url: trim_base_url(&config.api_url),
            app_id: config.app_id,
            key,
            policy: RetryPolicy::default(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The App JWT GitHub exchanges for installation tokens. `iat` is backdated a minute against
    /// clock drift, and the lifetime stays under GitHub's ten-minute limit.
    fn app_jwt(&self) -> Result<SecretString, OutboundError> {
        let now = jiff::Timestamp::now().as_second();
        let claims = AppClaims {
            iat: now - 60,
            exp: now + 9 * 60,
            iss: self.app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(SecretString::from)
            .map_err(|source| OutboundError::Credentials {
                service: SERVICE,
                source: Box::new(source),
            })
    }

    fn request(&self, method: Method, path: &str, bearer: &SecretString) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.api_url, path))
            .bearer_auth(bearer.expose_secret())
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header(reqwest::header::USER_AGENT, "shipgate")
    }

    /// A token for `installation_id`, from the cache while it has more than five minutes left.
    /// The lock is held across the exchange so concurrent callers share one exchange.
    async fn installation_token(
        &self,
        installation_id: u64,
    ) -> Result<SecretString, OutboundError> {
        let mut tokens = self.tokens.lock().await;
        let now = jiff::Timestamp::now();
        if let Some(cached) = tokens.get(&installation_id) {
            if now < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        let jwt = self.app_jwt()?;
        let path = format!("/app/installations/{installation_id}/access_tokens");
        let response = execute(
            &self.policy,
            SERVICE,
            "create_installation_token",
            || self.request(Method::POST, &path, &jwt),
            classify_http,
        )
        .await?;
        let issued: InstallationToken = serde_json::from_slice(&response.body)
            .map_err(|err| OutboundError::decode(SERVICE, "installation token response", err))?;
        let token = SecretString::from(issued.token);
        let refresh_at = issued
            .expires_at
            .checked_sub(TOKEN_REFRESH_MARGIN)
            .unwrap_or(issued.expires_at);
        tokens.insert(
            installation_id,
            CachedToken {
                token: token.clone(),
                refresh_at,
            },
        );
        Ok(token)
    }

    async fn forget_token(&self, installation_id: u64) {
        self.tokens.lock().await.remove(&installation_id);
    }

    /// Calls the API as an installation; on a 401 renews the token and tries once more.
    async fn call(
        &self,
        installation_id: u64,
        operation: &'static str,
        method: Method,
        path: &str,
        body: &Bytes,
    ) -> Result<RawResponse, OutboundError> {
        let mut renewed = false;
        loop {
            let token = self.installation_token(installation_id).await?;
            let result = execute(
                &self.policy,
                SERVICE,
                operation,
                || {
                    self.request(method.clone(), path, &token)
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone())
                },
                classify_http,
            )
            .await;
            match result {
                Err(OutboundError::Permanent { status, .. })
                    if status == StatusCode::UNAUTHORIZED.as_u16() && !renewed =>
                {
                    tracing::warn!(
                        service = SERVICE,
                        operation,
                        installation_id,
                        "installation token refused; renewing it and retrying once"
                    );
                    self.forget_token(installation_id).await;
                    renewed = true;
                }
                other => return other,
            }
        }
    }

    /// `GET path`, its JSON body read as `T` (`what` names it in a decode error).
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        installation_id: u64,
        operation: &'static str,
        path: &str,
        what: &'static str,
    ) -> Result<T, OutboundError> {
        let response = self
            .call(installation_id, operation, Method::GET, path, &Bytes::new())
            .await?;
        serde_json::from_slice(&response.body)
            .map_err(|err| OutboundError::decode(SERVICE, what, err))
    }

    async fn protection_rule(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
        body: ProtectionRuleBody<'_>,
        operation: &'static str,
    ) -> Result<(), OutboundError> {
        let repo = RepoPath::parse(repo_full_name)?;
        let body = json_bytes(
            SERVICE,
            &ProtectionRuleBody {
                comment: truncate_chars(body.comment, MAX_COMMENT_CHARS),
                ..body
            },
        )?;
        let path = format!("/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule");
        self.call(installation_id, operation, Method::POST, &path, &body)
            .await
            .map(drop)
    }
}

#[async_trait]
impl GitHubApi for GitHubApp {
    async fn review_protection_rule(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
        environment_name: &str,
        state: ReviewState,
        comment: &str,
    ) -> Result<(), OutboundError> {
        let body = ProtectionRuleBody {
            environment_name,
            state: Some(state),
            comment,
        };
        self.protection_rule(
            installation_id,
            repo_full_name,
            run_id,
            body,
            "review_protection_rule",
        )
        .await
    }

    async fn report_protection_rule_status(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
        environment_name: &str,
        comment: &str,
    ) -> Result<(), OutboundError> {
        let body = ProtectionRuleBody {
            environment_name,
            state: None,
            comment,
        };
        self.protection_rule(
            installation_id,
            repo_full_name,
            run_id,
            body,
            "report_protection_rule_status",
        )
        .await
    }

    async fn create_deployment(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        deployment: &NewDeployment,
    ) -> Result<u64, OutboundError> {
        let repo = RepoPath::parse(repo_full_name)?;
        let body = json_bytes(SERVICE, deployment)?;
        let path = format!("/repos/{repo}/deployments");
        let response = self
            .call(
                installation_id,
                "create_deployment",
                Method::POST,
                &path,
                &body,
            )
            .await?;
        // A 202 (auto-merge happened instead) has no id; with auto_merge off it should not occur.
        let created: CreatedDeployment = serde_json::from_slice(&response.body)
            .map_err(|err| OutboundError::decode(SERVICE, "deployment response has no id", err))?;
        Ok(created.id)
    }

    async fn workflow_run(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
    ) -> Result<WorkflowRunView, OutboundError> {
        let repo = RepoPath::parse(repo_full_name)?;
        let path = format!("/repos/{repo}/actions/runs/{run_id}");
        self.get_json(
            installation_id,
            "workflow_run",
            &path,
            "workflow run response",
        )
        .await
    }

    async fn latest_deployment_status(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        deployment_id: u64,
    ) -> Result<Option<String>, OutboundError> {
        #[derive(Deserialize)]
        struct Status {
            state: String,
        }
        let repo = RepoPath::parse(repo_full_name)?;
        let path = format!("/repos/{repo}/deployments/{deployment_id}/statuses?per_page=1");
        let statuses: Vec<Status> = self
            .get_json(
                installation_id,
                "deployment_statuses",
                &path,
                "deployment statuses response",
            )
            .await?;
        Ok(statuses.into_iter().next().map(|s| s.state))
    }

    async fn pending_environments(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        run_id: u64,
    ) -> Result<Vec<String>, OutboundError> {
        #[derive(Deserialize)]
        struct Pending {
            environment: PendingEnvironment,
        }
        #[derive(Deserialize)]
        struct PendingEnvironment {
            name: String,
        }
        let repo = RepoPath::parse(repo_full_name)?;
        let path = format!("/repos/{repo}/actions/runs/{run_id}/pending_deployments");
        let pending: Vec<Pending> = self
            .get_json(
                installation_id,
                "pending_deployments",
                &path,
                "pending deployments response",
            )
            .await?;
        Ok(pending.into_iter().map(|p| p.environment.name).collect())
    }

    async fn dispatch_workflow(
        &self,
        installation_id: u64,
        repo_full_name: &str,
        workflow_id_or_file: &str,
        git_ref: &str,
        inputs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<u64>, OutboundError> {
        let repo = RepoPath::parse(repo_full_name)?;
        if !is_path_segment(workflow_id_or_file) {
            return Err(OutboundError::InvalidRequest {
                service: SERVICE,
                message: format!("workflow {workflow_id_or_file:?} is not an id or a file name"),
            });
        }
        let path = format!("/repos/{repo}/actions/workflows/{workflow_id_or_file}/dispatches");
        let body = json_bytes(
            SERVICE,
            &DispatchBody {
                git_ref,
                inputs,
                return_run_details: true,
            },
        )?;
        match self
            .call(
                installation_id,
                "dispatch_workflow",
                Method::POST,
                &path,
                &body,
            )
            .await
        {
            Ok(response) if response.body.is_empty() => Ok(None),
            // The dispatch went out: an answer without a readable run id must not make the
            // caller dispatch again (the run is then known by its name).
            Ok(response) => match serde_json::from_slice::<DispatchedRun>(&response.body) {
                Ok(run) => Ok(Some(run.workflow_run_id)),
                Err(e) => {
                    tracing::warn!(error = %e, "dispatch accepted, but its answer carries no readable run id");
                    Ok(None)
                }
            },
            // A server that does not know the parameter refuses the request: ask without it.
            Err(OutboundError::Permanent {
                status, message, ..
            }) if status == 422 && message.contains("return_run_details") => {
                tracing::info!(
                    workflow = workflow_id_or_file,
                    "GitHub refused return_run_details; dispatching without it"
                );
                let body = json_bytes(
                    SERVICE,
                    &DispatchBody {
                        git_ref,
                        inputs,
                        return_run_details: false,
                    },
                )?;
                self.call(
                    installation_id,
                    "dispatch_workflow",
                    Method::POST,
                    &path,
                    &body,
                )
                .await
                .map(|_| None)
            }
            Err(e) => Err(e),
        }
    }
}

/// `owner/name`, checked so it can be put into a URL path as is.
struct RepoPath<'a> {
    owner: &'a str,
    name: &'a str,
}

impl<'a> RepoPath<'a> {
    fn parse(full_name: &'a str) -> Result<Self, OutboundError> {
        match full_name.split_once('/') {
            Some((owner, name)) if is_path_segment(owner) && is_path_segment(name) => {
                Ok(Self { owner, name })
            }
            _ => Err(OutboundError::InvalidRequest {
                service: SERVICE,
                message: format!("repository {full_name:?} is not owner/name"),
            }),
        }
    }
}

impl fmt::Display for RepoPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// GitHub owner, repository and workflow file names only use these characters; anything else
/// (a `/`, `..`, `?`) would change which URL is called.
fn is_path_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_taken_from_a_deployment_callback_url() {
        assert_eq!(
            parse_run_id(
                "https://api.github.com/repos/o/r/actions/runs/4242/deployment_protection_rule"
            ),
            Some(4242)
        );
    }

    #[test]
    fn run_id_survives_repositories_named_runs_and_enterprise_prefixes() {
        assert_eq!(
            parse_run_id("https://ghes.example.com/api/v3/repos/runs/runs/actions/runs/7/deployment_protection_rule?x=1"),
            Some(7)
        );
    }

    #[test]
    fn callback_url_without_a_run_id_gives_none() {
        assert_eq!(parse_run_id("https://github.local/deploy-the-thing"), None);
        assert_eq!(
            parse_run_id("https://api.github.com/repos/o/r/actions/runs/abc"),
            None
        );
        assert_eq!(parse_run_id(""), None);
    }

    #[test]
    fn repository_names_that_would_escape_the_path_are_refused() {
        assert!(RepoPath::parse("octo-org/hello.world_2").is_ok());
        for bad in ["octo", "o/r/x", "../r", "o/..", "o/r?x=1", "/r", "o/"] {
            assert!(
                matches!(
                    RepoPath::parse(bad),
                    Err(OutboundError::InvalidRequest { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn new_deployment_serialises_as_github_documents_it() {
        let deployment = NewDeployment::new("abc123", "production");
        assert_eq!(
            serde_json::to_value(&deployment).unwrap(),
            serde_json::json!({
                "ref": "abc123",
                "environment": "production",
                "payload": {},
                "auto_merge": false,
                "required_contexts": [],
                "task": "deploy"
            })
        );
    }

    #[test]
    fn a_key_that_is_not_rsa_pem_is_refused_at_construction() {
        let config = GitHubAppConfig::new(1, SecretString::from("not a key".to_owned()));
        let err = GitHubApp::new(config, reqwest::Client::new()).unwrap_err();
        assert!(matches!(err, OutboundError::Credentials { .. }));
        assert!(err.is_permanent());
    }
}
