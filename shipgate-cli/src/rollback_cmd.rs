//! `shipgate rollback ENV`: rolls the environment's current deployment back to its previous
//! good version, as `cli:$USER` (an operator with shell access may roll back an environment
//! that needs approvals). GitHub is asked through the App from the environment
//! (`SHIPGATE_GITHUB_APP_ID`, `SHIPGATE_GITHUB_PRIVATE_KEY`).
//!
//! Exit 0 when the rollback started (or was already under way), 1 when it was refused or
//! GitHub could not be asked (the deployment is then rolling back and the server's sweeper
//! retries the GitHub call).

use std::io::Write;
use std::path::PathBuf;

use shipgate::config::Vars;
use shipgate::service::rollback::{self, RollbackOutcome};

use crate::error::CliError;
use crate::ops::Operator;

pub struct RollbackOptions {
    pub environment: String,
    pub data_dir: PathBuf,
    pub policy_file: PathBuf,
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
    let op = Operator::open(&opts.data_dir, &opts.policy_file, vars).await?;
    if op.services.github.is_none() {
        tracing::warn!("no GitHub App configured (SHIPGATE_GITHUB_APP_ID, SHIPGATE_GITHUB_PRIVATE_KEY): a rollback can be recorded but not carried out");
    }
    let who = requested_by(vars);
    let outcome = rollback::start_manual(&op.services, &opts.environment, &who).await;
    op.finish().await;
    let outcome = outcome.map_err(CliError::Rollback)?;

    let env = &opts.environment;
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
                "{env}: deployment {deployment_id} is rolling back to {target_sha}, but GitHub could not be asked: {error}; `shipgate serve`'s sweeper retries"
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

#[cfg(test)]
mod tests {
    use super::*;

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
