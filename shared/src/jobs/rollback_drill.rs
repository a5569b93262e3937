//! The `rollback-drill` job: starts a drill for every repository of every environment that
//! opts in (`rollback_drill = true`). The drill's legs, their deployment statuses and time-outs are
//! tracked by [`crate::service::drill`].

use super::{JobContext, JobError, JobOutcome};
use crate::domain::ids::EnvName;
use crate::domain::scope::Scope;
use crate::service::drill::{start_in, StartResult};

/// The drill job: starts a drill in every environment that opts in.
pub async fn start(ctx: &JobContext) -> Result<JobOutcome, JobError> {
    let svc = &ctx.services;
    let environments: Vec<String> = svc
        .policy
        .environments()
        .filter(|e| e.rollback_drill)
        .map(|e| e.name.clone())
        .collect();
    if environments.is_empty() {
        return Ok(JobOutcome::ok(
            "no environment opts in to rollback drills",
            serde_json::json!({ "environments": [] }),
        ));
    }
    // One drill per repository that deployed to the environment (a drill re-deploys one
    // repository's previous good version).
    let mut results = Vec::new();
    for env in &environments {
        let repos = svc.repo.repositories_in(env).await?;
        if repos.is_empty() {
            results.push(StartResult::Skipped {
                environment: env.clone(),
                reason: "nothing has been deployed yet".into(),
            });
        }
        for repo in repos {
            let Ok(environment) = EnvName::parse(env) else {
                continue;
            };
            results.push(start_in(svc, &Scope::new(repo, environment)).await?);
        }
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| match r {
            StartResult::Failed {
                environment,
                reason,
            } => Some(format!("{environment}: {reason}")),
            _ => None,
        })
        .collect();
    let summary = results
        .iter()
        .map(|r| match r {
            StartResult::Started { drill } => drill.summary(),
            StartResult::Skipped {
                environment,
                reason,
            } => format!("rollback drill skipped in {environment}: {reason}"),
            StartResult::Failed {
                environment,
                reason,
            } => format!("rollback drill failed in {environment}: {reason}"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let details = serde_json::json!({ "environments": results });
    if failed.is_empty() {
        Ok(JobOutcome::ok(summary, details))
    } else {
        Ok(JobOutcome::failed(summary, details))
    }
}
