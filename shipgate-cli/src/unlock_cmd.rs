//! `shipgate unlock ENV [--repo OWNER/NAME] --reason TEXT`: frees a scope whose lock is held
//! by a deployment that will not end on its own, as `cli:$USER` (see
//! `shipgate::service::unlock`). The holder is cancelled (it never started deploying) or
//! failed (it did, or may have); the reason is required, recorded in the audit log and shown
//! in the deployment's Slack message, and a request GitHub still waits on is answered
//! `rejected`. Requests queued behind the holder then go in order.
//!
//! Exit 0 when the scope is free afterwards (unlocked, a leftover lock released, or nothing
//! held it), 1 when refused.

use std::io::Write;
use std::path::PathBuf;

use shipgate::config::Vars;
use shipgate::service::unlock::{unlock, UnlockOutcome};
use shipgate_cli::error::CliError;
use shipgate_cli::state::State;

use crate::ops::Operator;
use crate::rollback_cmd::{requested_by, resolve_scope};

pub struct UnlockOptions {
    pub environment: String,
    pub repo: Option<String>,
    pub reason: String,
    pub state: State,
    pub policy_file: Option<PathBuf>,
    pub json: bool,
}

pub async fn run(opts: UnlockOptions, vars: &dyn Vars) -> Result<(), CliError> {
    if opts.reason.trim().is_empty() {
        return Err(CliError::Usage(
            "--reason must say why (it is audited and announced)".into(),
        ));
    }
    let op = Operator::open(&opts.state, opts.policy_file.as_deref(), vars).await?;
    let scope = resolve_scope(&op.services.repo, &opts.environment, opts.repo.as_deref()).await;
    let (outcome, label) = match scope {
        Ok(Ok(scope)) => {
            let who = requested_by(vars);
            let outcome = unlock(&op.services, &scope, &who, &opts.reason)
                .await
                .map_err(CliError::Unlock);
            (outcome, scope.to_string())
        }
        Ok(Err(reason)) => (
            Ok(UnlockOutcome::Refused { reason }),
            opts.environment.clone(),
        ),
        Err(e) => (Err(e), opts.environment.clone()),
    };
    op.finish().await;
    let outcome = outcome?;
    let (line, ok) = match &outcome {
        UnlockOutcome::Unlocked {
            deployment_id,
            state,
        } => (
            format!("{label}: unlocked; deployment {deployment_id} is {state}"),
            true,
        ),
        UnlockOutcome::ReleasedStale { deployment_id } => (
            format!("{label}: released a lock left by deployment {deployment_id}, which had already ended"),
            true,
        ),
        UnlockOutcome::NotLocked => (format!("{label}: not locked; nothing to do"), true),
        UnlockOutcome::Refused { reason } => (format!("{label}: refused: {reason}"), false),
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
