//! The sweeper's analysis step for one verifying deployment: take the samples its checks are
//! due (`service::analysis`), then act on what they say. A failed check (or, past the window,
//! checks the policy will not pass undecided) rolls the deployment back through the same
//! exactly-once path as a critical alert, with the check named as the reason; without an
//! earlier good version to return to, verification fails instead. Checks that all passed end
//! verification early where the policy allows it (`end_early`); otherwise the window's end
//! passes the deployment.

use jiff::Timestamp;

use crate::domain::analysis::AnalysisVerdict;
use crate::domain::deployment::Deployment;
use crate::notify::Notification;
use crate::service::analysis::{analysis_of, sample_due, verdict_of, Sources};
use crate::service::lifecycle::{fail_verification, pass_verification_early};
use crate::service::rollback::{self, RollbackOutcome};
use crate::service::{ServiceError, Services};

/// What the step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The environment has no analysis.
    NoAnalysis,
    /// Samples taken (how many); nothing decided yet, or the window's end decides.
    Sampled(usize),
    /// The analysis failed and a rollback started (or was already under way).
    RolledBack { reason: String },
    /// The analysis failed and there was no earlier good version: verification failed.
    Failed { reason: String },
    /// Every check passed and verification ended early.
    PassedEarly,
}

/// Runs the analysis of `dep` (verifying) at `now`.
pub async fn step(
    svc: &Services,
    sources: &Sources,
    dep: &Deployment,
    now: Timestamp,
) -> Result<Step, ServiceError> {
    let Some(analysis) = analysis_of(&svc.policy, dep) else {
        return Ok(Step::NoAnalysis);
    };
    let sampled = sample_due(svc, sources, dep, &analysis, now).await?;
    let window_ended = dep.verify_until.is_none_or(|u| u <= now);
    let verdict = verdict_of(&analysis, &sampled.samples, window_ended);
    if sampled.written > 0 && matches!(verdict, AnalysisVerdict::Continue | AnalysisVerdict::Passed)
    {
        // The deploy message shows each check's standing; a verdict that moves the
        // deployment announces itself.
        svc.publish(Notification::deployment(now, dep, "analysis"))
            .await;
    }
    let reason = match verdict {
        AnalysisVerdict::Continue => return Ok(Step::Sampled(sampled.written)),
        AnalysisVerdict::Passed => {
            let window_open = dep.verify_until.is_some_and(|u| now < u);
            if analysis.end_early && window_open {
                pass_verification_early(
                    svc,
                    &dep.id,
                    "every analysis check passed; verification ended early",
                )
                .await?;
                return Ok(Step::PassedEarly);
            }
            return Ok(Step::Sampled(sampled.written));
        }
        AnalysisVerdict::Failed { check, reason } => {
            format!("analysis check {check} failed: {reason}")
        }
        AnalysisVerdict::Undecided { reason } => format!("analysis: {reason}"),
    };
    match rollback::start_from_analysis(svc, dep, &reason).await? {
        RollbackOutcome::NoLastKnownGood { .. } => {
            fail_verification(svc, &dep.id, reason.clone()).await?;
            Ok(Step::Failed { reason })
        }
        _ => Ok(Step::RolledBack { reason }),
    }
}
