//! `shipgate rollback ENV [--repo OWNER/NAME]`: rolls the current deployment of one
//! repository in the environment back to that repository's previous good version, as
//! `cli:$USER`, under the same approval rules as a deploy. `--repo` may be left out while
//! only one repository has deployed to the environment; with more it is required. Where the
//! environment needs no approvals the rollback starts at once; otherwise this opens a
//! rollback request that the environment's approvers approve in Slack (the CLI user's own
//! approval does not count where `prevent_self_approval` is on), and the rollback starts when
//! the last approval needed arrives. GitHub is asked through the App from the environment
//! (`SHIPGATE_GITHUB_APP_ID`, `SHIPGATE_GITHUB_PRIVATE_KEY`).
//!
//! Exit 0 when the rollback started (or was already under way) or its request is open and
//! awaiting approvals, 1 when it was refused or GitHub could not be asked (the deployment is
//! then rolling back and the server's sweeper retries the GitHub call).

use std::io::Write;
use std::path::PathBuf;

use shipgate::config::Vars;
use shipgate::domain::{EnvName, RepoName, Scope};
use shipgate::service::rollback::{self, RollbackOutcome};
use shipgate::store::Repo;
use shipgate_cli::error::CliError;
use shipgate_cli::state::State;

use crate::ops::Operator;

pub struct RollbackOptions {
    pub environment: String,
    pub repo: Option<String>,
    pub state: State,
    pub policy_file: Option<PathBuf>,
    pub json: bool,
}

/// `cli:<user>`, from `$USER` (or `$LOGNAME`).
pub fn requested_by(vars: &dyn Vars) -> String {
    let user = ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|v| vars.var(v))
        .map(|u| u.trim().to_string())
        .find(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    format!("cli:{user}")
}

pub async fn run(opts: RollbackOptions, vars: &dyn Vars) -> Result<(), CliError> {
    let op = Operator::open(&opts.state, opts.policy_file.as_deref(), vars).await?;
    if op.services.github.is_none() {
        tracing::warn!("no GitHub App configured (SHIPGATE_GITHUB_APP_ID, SHIPGATE_GITHUB_PRIVATE_KEY): a rollback can be recorded but not carried out");
    }
    let known = op.services.policy.environment(&opts.environment).is_some();
    let scope = if known {
        resolve_scope(&op.services.repo, &opts.environment, opts.repo.as_deref()).await
    } else {
        Ok(Err(format!(
            "environment {} is not in the policy",
            opts.environment
        )))
    };
    let (outcome, env) = match scope {
        Ok(Ok(scope)) => {
            let who = requested_by(vars);
            let outcome = rollback::start_manual(&op.services, &scope, &who).await;
            // One repository in the environment: the line names the environment as before.
            let label = if opts.repo.is_some() {
                scope.to_string()
            } else {
                opts.environment.clone()
            };
            (outcome.map_err(CliError::Rollback), label)
        }
        Ok(Err(reason)) => (
            Ok(RollbackOutcome::Refused { reason }),
            opts.environment.clone(),
        ),
        Err(e) => (Err(e), opts.environment.clone()),
    };
    op.finish().await;
    let outcome = outcome?;
    let env = &env;
    let (line, ok) = match &outcome {
        RollbackOutcome::Started {
            deployment_id,
            target_sha,
            github_deployment_id,
        } => (
            format!(
                "{env}: rolling back deployment {deployment_id} to {target_sha}{}",
                github_deployment_id
                    .map(|id| format!(" (GitHub deployment {id})"))
                    .unwrap_or_else(|| " (workflow dispatched)".to_string())
            ),
            true,
        ),
        RollbackOutcome::AlreadyRollingBack { deployment_id } => (
            format!("{env}: deployment {deployment_id} is already rolling back; nothing done"),
            true,
        ),
        RollbackOutcome::Failed {
            deployment_id,
            target_sha,
            error,
        } => (
            format!(
                "{env}: deployment {deployment_id} is rolling back to {target_sha}, but GitHub could not be asked: {error}; the sweeper retries"
            ),
            false,
        ),
        RollbackOutcome::Refused { reason } => (format!("{env}: refused: {reason}"), false),
        RollbackOutcome::NoLastKnownGood { deployment_id } => (
            format!("{env}: refused: deployment {deployment_id} has no earlier good version to return to"),
            false,
        ),
        RollbackOutcome::Skipped(skipped) => {
            (format!("{env}: refused: {skipped:?}"), false)
        }
        RollbackOutcome::AwaitingApprovals { .. } | RollbackOutcome::ApprovalRecorded { .. } => {
            (awaiting_line(env, &outcome), true)
        }
        RollbackOutcome::NotCounted { refusal, .. } => {
            (format!("{env}: refused: {refusal}"), false)
        }
        RollbackOutcome::RequestCancelled { deployment_id, .. } => (
            format!("{env}: the rollback request of deployment {deployment_id} was cancelled"),
            false,
        ),
        RollbackOutcome::StaleButton => (
            format!("{env}: refused: the rollback request changed meanwhile; run the command again"),
            false,
        ),
    };
    let mut out = std::io::stdout().lock();
    if opts.json {
        let json = serde_json::to_string(&outcome).map_err(|e| CliError::Output(e.into()))?;
        writeln!(out, "{json}").map_err(CliError::Output)?;
    } else {
        writeln!(out, "{line}").map_err(CliError::Output)?;
    }
    if ok {
        Ok(())
    } else {
        Err(CliError::Reported(line))
    }
}

/// The scope to roll back: `--repo` in `environment`, or the one repository that deployed
/// there when `--repo` is left out. The inner error is a refusal to print: nothing deployed
/// there yet, or several repositories and no `--repo`.
pub async fn resolve_scope(
    repo: &Repo,
    environment: &str,
    given: Option<&str>,
) -> Result<Result<Scope, String>, CliError> {
    let env = EnvName::parse(environment)
        .map_err(|e| CliError::Usage(format!("environment {environment:?}: {e}")))?;
    if let Some(given) = given {
        let name = RepoName::parse(given)
            .map_err(|e| CliError::Usage(format!("--repo {given:?}: {e}")))?;
        return Ok(Ok(Scope::new(name, env)));
    }
    let mut repos = repo.repositories_in(environment).await?;
    Ok(match repos.len() {
        0 => Err(format!("nothing has been deployed to {environment} yet")),
        1 => Ok(Scope::new(repos.remove(0), env)),
        _ => Err(format!(
            "more than one repository has deployed to {environment} ({}); say which with --repo OWNER/NAME",
            repos
                .iter()
                .map(RepoName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}

/// What an operator is told while a rollback waits for its approvals.
fn awaiting_line(env: &str, outcome: &RollbackOutcome) -> String {
    match outcome {
        RollbackOutcome::AwaitingApprovals {
            deployment_id,
            target_sha,
            requested_by,
            have,
            need,
            expires_at,
            opened,
        } => {
            let what = if *opened {
                format!("rollback of deployment {deployment_id} to {target_sha} requested")
            } else {
                format!("a rollback of deployment {deployment_id} to {target_sha} was already requested by {requested_by}")
            };
            let missing = need.saturating_sub(*have);
            let plural = if missing == 1 { "" } else { "s" };
            format!(
                "{env}: {what}; awaiting {missing} approval{plural} in Slack ({have} of {need} so far); request expires at {expires_at}"
            )
        }
        RollbackOutcome::ApprovalRecorded {
            have,
            need,
            expires_at,
            ..
        } => {
            format!("{env}: approval recorded ({have} of {need}); request expires at {expires_at}")
        }
        other => format!("{env}: {}", other.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_request_says_how_many_approvals_are_missing_and_when_it_expires() {
        let outcome = RollbackOutcome::AwaitingApprovals {
            deployment_id: "dep-1".into(),
            target_sha: "aaaaaaa111".into(),
            requested_by: "cli:ada".into(),
            have: 0,
            need: 2,
            expires_at: "2025-06-02T11:00:00Z".parse().unwrap(),
            opened: true,
        };
        assert_eq!(
            awaiting_line("production", &outcome),
            "production: rollback of deployment dep-1 to aaaaaaa111 requested; awaiting 2 approvals in Slack (0 of 2 so far); request expires at 2025-06-02T11:00:00Z"
        );
        let RollbackOutcome::AwaitingApprovals { expires_at, .. } = outcome else {
            unreachable!()
        };
        let again = RollbackOutcome::AwaitingApprovals {
            deployment_id: "dep-1".into(),
            target_sha: "aaaaaaa111".into(),
            requested_by: "cli:ada".into(),
            have: 1,
            need: 2,
            expires_at,
            opened: false,
        };
        assert_eq!(
            awaiting_line("production", &again),
            "production: a rollback of deployment dep-1 to aaaaaaa111 was already requested by cli:ada; awaiting 1 approval in Slack (1 of 2 so far); request expires at 2025-06-02T11:00:00Z"
        );
    }

    #[test]
    fn the_requester_is_the_shell_user() {
        assert_eq!(requested_by(&[("USER", "ada")]), "cli:ada");
        assert_eq!(
            requested_by(&[("USER", " "), ("LOGNAME", "bob")]),
            "cli:bob"
        );
        assert_eq!(requested_by(&[("HOME", "/root")]), "cli:unknown");
    }
}
