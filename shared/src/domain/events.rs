//! The inbound events shipgate acts on, as the edge parsed them: what GitHub said in a
//! `deployment_protection_rule`, `deployment` or `deployment_status` delivery. Entry points
//! (the Lambda functions, `shipgate serve`) build these; the use cases in `crate::service`
//! take them.

/// What GitHub told us in a `deployment_protection_rule` / `requested` delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionRuleRequest {
    /// `owner/name`.
    pub repo: String,
    pub environment: String,
    /// The event that triggered the run (`push`, `workflow_dispatch`...).
    pub event: String,
    pub git_ref: String,
    pub sha: String,
    pub run_id: u64,
    pub installation_id: Option<u64>,
    /// GitHub login of the sender.
    pub requester: String,
    /// A break-glass reason, when the run asked for one.
    pub break_glass_reason: Option<String>,
}

/// A GitHub deployment was created (`deployment` / `created`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentCreated {
    pub github_deployment_id: u64,
    pub repo: String,
    pub environment: String,
    pub sha: String,
    pub git_ref: String,
    /// The workflow run that created it, when GitHub Actions did.
    pub run_id: Option<u64>,
    /// A shipgate deployment id found in the deployment's payload (`shipgate_rollback_of`).
    pub rollback_of: Option<String>,
}

/// A GitHub deployment status (`deployment_status` / `created`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub github_deployment_id: u64,
    pub repo: String,
    pub environment: String,
    pub sha: String,
    pub git_ref: String,
    /// `queued`, `pending`, `in_progress`, `success`, `failure`, `error` or `inactive`.
    pub state: String,
    pub description: Option<String>,
    pub run_id: Option<u64>,
    pub rollback_of: Option<String>,
}
