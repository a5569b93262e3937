//! `shipgate analysis run OWNER/NAME ENV [--at TIME] [--sha SHA]`: runs the environment's
//! analysis checks once, as a deployment of that repository whose verification began at
//! `--at` (default now) would be sampled, and prints each check's query, value, baseline and
//! verdict. Nothing is stored and nothing is rolled back: it is for trying a policy's checks
//! against the real metric sources before trusting them with deploys.
//!
//! Exit 0 when every check passes, 1 when any fails or is inconclusive (the line says why),
//! 2 for usage errors (an unknown environment, one without `[analysis]`).

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use serde_json::json;
use shipgate::config::Vars;
use shipgate::domain::analysis::Judgement;
use shipgate::domain::RepoName;
use shipgate::service::analysis::{evaluate_once, Sources};
use shipgate_cli::data;
use shipgate_cli::error::CliError;

use crate::output::{emit, table};

pub struct AnalysisRunOptions<'a> {
    pub repo: &'a str,
    pub environment: &'a str,
    pub policy_file: &'a Path,
    pub at: Option<Timestamp>,
    pub sha: Option<&'a str>,
    pub json: bool,
}

pub async fn run(opts: AnalysisRunOptions<'_>, vars: &dyn Vars) -> Result<(), CliError> {
    let repo = RepoName::parse(opts.repo).map_err(|e| {
        CliError::Usage(format!(
            "{:?} is not a repository (owner/name): {e}",
            opts.repo
        ))
    })?;
    let policy = data::load_policy(opts.policy_file)?;
    let Some(env) = policy.environment(opts.environment) else {
        return Err(CliError::Usage(format!(
            "environment {} is not in the policy",
            opts.environment
        )));
    };
    let Some(analysis) = &env.analysis else {
        return Err(CliError::Usage(format!(
            "environment {} has no [environments.{}.analysis]",
            opts.environment, opts.environment
        )));
    };
    let at = opts.at.unwrap_or_else(Timestamp::now);
    let http = shipgate::outbound::http_client()?;
    // CloudWatch sources are read by the scheduled-jobs function on AWS only.
    let sources = Sources::from_policy(&policy, vars, &http, None);
    let service = policy
        .service_of(&repo)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            repo.as_str()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        });
    let started = at.as_second().to_string();
    let facts = [
        ("repository", repo.as_str()),
        ("service", service.as_str()),
        ("environment", opts.environment),
        ("sha", opts.sha.unwrap_or("")),
        ("started_at", started.as_str()),
    ];
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    let mut all_passed = true;
    for check in &analysis.checks {
        let sample = evaluate_once(&sources, check, &facts, at, at).await;
        let (verdict, why) = match &sample.judgement {
            Judgement::Pass => ("pass", String::new()),
            Judgement::Fail => ("fail", String::new()),
            Judgement::Inconclusive { reason } => ("inconclusive", reason.clone()),
        };
        all_passed &= sample.judgement == Judgement::Pass;
        let number = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        if opts.json {
            lines.push(
                json!({
                    "check": check.name,
                    "source": check.source,
                    "at": at,
                    "value": sample.value,
                    "baseline": sample.baseline,
                    "condition": sample.condition,
                    "verdict": verdict,
                    "reason": (!why.is_empty()).then_some(why),
                })
                .to_string(),
            );
        } else {
            rows.push(vec![
                check.name.clone(),
                number(sample.value),
                sample.condition.clone(),
                number(sample.baseline),
                if why.is_empty() {
                    verdict.to_owned()
                } else {
                    format!("{verdict}: {why}")
                },
            ]);
        }
    }
    let text = if opts.json {
        lines.iter().map(|l| format!("{l}\n")).collect()
    } else {
        table(
            &["CHECK", "VALUE", "CONDITION", "BASELINE", "VERDICT"],
            &rows,
        )
    };
    emit(&text)?;
    let _ = std::io::stdout().flush();
    if all_passed {
        Ok(())
    } else {
        Err(CliError::Reported(
            "not every check passed (see above)".to_owned(),
        ))
    }
}
