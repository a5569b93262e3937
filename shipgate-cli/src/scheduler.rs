//! The in-process timer that stands in for EventBridge schedules in the self-hosted binary.
//!
//! For now one tick does the sweeper's two time-driven duties: close verification windows
//! that passed quietly (the deployment succeeds and becomes last known good), and retry
//! GitHub answers that are still pending for decided deployments. The scheduled-jobs engineer
//! replaces this with the real job runner; the server only relies on [`spawn_scheduler`]
//! stopping when the shutdown signal flips.

use std::time::Duration;

use jiff::Timestamp;
use shipgate::domain::deployment::{CallbackState, Deployment, State};
use shipgate::service::lifecycle::{self, LifecycleOutcome};
use shipgate::service::{gate, Services};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the timer fires.
pub const TICK: Duration = Duration::from_secs(30);

/// How far back a tick looks. GitHub waits at most 30 days on a protection rule, so older
/// deployments have nobody left to answer.
const HORIZON_DAYS: i64 = 30;

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Verification windows closed (deployments now succeeded).
    pub verified: usize,
    /// GitHub protection-rule answers sent.
    pub answered: usize,
    /// Steps that failed (logged; retried next tick).
    pub errors: usize,
}

/// Runs [`run_once`] every `every` (first tick at once) until `shutdown` becomes true. A tick
/// in progress finishes before the task ends.
pub fn spawn_scheduler(
    services: Services,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if services.github.is_none() {
            tracing::warn!(
                "no GitHub App configured: decisions are recorded but GitHub is never answered"
            );
        }
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    let report = run_once(&services).await;
                    if report != TickReport::default() {
                        tracing::info!(
                            verified = report.verified,
                            answered = report.answered,
                            errors = report.errors,
                            "scheduled sweep"
                        );
                    }
                }
                changed = shutdown.changed() => {
                    // An error means the sender is gone, which is a shutdown too.
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::info!("scheduler stopped");
    })
}

fn is_decided(dep: &Deployment) -> bool {
    !matches!(dep.state, State::Requested | State::AwaitingApproval)
}

/// One sweep over every policy environment.
pub async fn run_once(svc: &Services) -> TickReport {
    let mut report = TickReport::default();
    let now = svc.now();
    for env in svc.policy.environments() {
        let environment = env.name.as_str();
        match svc
            .repo
            .active_deployments(environment, now, HORIZON_DAYS)
            .await
        {
            Ok(active) => {
                let due = active.iter().filter(|d| {
                    d.state == State::Verifying && d.verify_until.is_some_and(|u| u <= now)
                });
                for dep in due {
                    match lifecycle::finish_verification(svc, &dep.id).await {
                        Ok(LifecycleOutcome::Moved { .. }) => report.verified += 1,
                        Ok(_) => {}
                        Err(e) => {
                            report.errors += 1;
                            tracing::warn!(deployment_id = %dep.id, error = %e, "could not close verification window");
                        }
                    }
                }
            }
            Err(e) => {
                report.errors += 1;
                tracing::error!(environment, error = %e, "could not list active deployments");
            }
        }

        // Without an App every attempt would only log that it cannot answer.
        if svc.github.is_none() {
            continue;
        }
        let from = now
            .checked_sub(jiff::SignedDuration::from_hours(24 * HORIZON_DAYS))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        match svc
            .repo
            .deployments_in(environment, from, Timestamp::MAX, false, None)
            .await
        {
            Ok(all) => {
                let pending = all.iter().filter(|d| {
                    d.callback == CallbackState::Pending
                        && is_decided(d)
                        && d.run_id.is_some()
                        && d.installation_id.is_some()
                });
                for dep in pending {
                    match gate::answer_github(svc, &dep.id).await {
                        Ok(true) => report.answered += 1,
                        Ok(false) => {}
                        Err(e) => {
                            report.errors += 1;
                            tracing::warn!(deployment_id = %dep.id, error = %e, "GitHub answer failed again");
                        }
                    }
                }
            }
            Err(e) => {
                report.errors += 1;
                tracing::error!(environment, error = %e, "could not list deployments");
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use shipgate::domain::policy::Policy;
    use shipgate::notify::RecordingPublisher;
    use shipgate::outbound::github::{GitHubApi, NewDeployment, ReviewState};
    use shipgate::outbound::OutboundError;
    use shipgate::service::ManualClock;
    use shipgate::store::sqlite::SqliteStore;
    use shipgate::store::Repo;

    use super::*;

    /// Records protection-rule reviews; everything else is unexpected here.
    #[derive(Default)]
    struct FakeGitHub {
        reviews: Mutex<Vec<(u64, String, ReviewState)>>,
    }

    #[async_trait]
    impl GitHubApi for FakeGitHub {
        async fn review_protection_rule(
            &self,
            _installation_id: u64,
            _repo: &str,
            run_id: u64,
            environment: &str,
            state: ReviewState,
            _comment: &str,
        ) -> Result<(), OutboundError> {
            if let Ok(mut r) = self.reviews.lock() {
                r.push((run_id, environment.to_string(), state));
            }
            Ok(())
        }
        async fn report_protection_rule_status(
            &self,
            _: u64,
            _: &str,
            _: u64,
            _: &str,
            _: &str,
        ) -> Result<(), OutboundError> {
            panic!("no status comments expected from the sweep")
        }
        async fn create_deployment(
            &self,
            _: u64,
            _: &str,
            _: &NewDeployment,
        ) -> Result<u64, OutboundError> {
            panic!("no deployments expected from the sweep")
        }
        async fn dispatch_workflow(
            &self,
            _: u64,
            _: &str,
            _: &str,
            _: &str,
            _: &serde_json::Map<String, serde_json::Value>,
        ) -> Result<(), OutboundError> {
            panic!("no workflow dispatch expected from the sweep")
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    /// Built from JSON so fields other teams add with defaults do not break this test.
    fn deployment(id: &str, env: &str, state: State, run_id: u64, at: Timestamp) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "repo": "acme/api",
            "environment": env,
            "git_ref": "refs/heads/main",
            "sha": format!("{id}0000000000"),
            "requester": "octocat",
            "kind": "deploy",
            "state": state,
            "version": 0,
            "created_at": at,
            "updated_at": at,
            "run_id": run_id,
            "installation_id": 42,
        }))
        .expect("deployment")
    }

    fn services(clock: &ManualClock, github: Option<Arc<dyn GitHubApi>>) -> Services {
        Services {
            repo: Repo::new(Arc::new(SqliteStore::in_memory().expect("sqlite"))),
            policy: Arc::new(Policy::example().expect("example policy")),
            github,
            publisher: Arc::new(RecordingPublisher::default()),
            clock: Arc::new(clock.clone()),
        }
    }

    #[tokio::test]
    async fn sweep_closes_verification_windows_that_passed_and_leaves_open_ones() {
        let start = t("2026-03-02T10:00:00Z");
        let clock = ManualClock::new(start);
        let svc = services(&clock, None);

        let mut due = deployment("due", "staging", State::Verifying, 1, start);
        due.verify_until = Some(t("2026-03-02T10:10:00Z"));
        svc.repo
            .create_deployment(&mut due, &[], start)
            .await
            .expect("create due");
        let mut open = deployment("open", "production", State::Verifying, 2, start);
        open.verify_until = Some(t("2026-03-02T10:30:00Z"));
        svc.repo
            .create_deployment(&mut open, &[], start)
            .await
            .expect("create open");

        clock.set(t("2026-03-02T10:15:00Z"));
        let report = run_once(&svc).await;
        assert_eq!(
            report,
            TickReport {
                verified: 1,
                answered: 0,
                errors: 0
            }
        );

        let due = svc
            .repo
            .get_deployment("due")
            .await
            .expect("read")
            .expect("due exists");
        assert_eq!(due.state, State::Succeeded);
        let heads = svc.repo.heads("staging").await.expect("heads");
        assert_eq!(
            heads.last_known_good.map(|h| h.deployment_id).as_deref(),
            Some("due")
        );
        assert_eq!(svc.repo.lock_holder("staging").await.expect("lock"), None);
        let open = svc
            .repo
            .get_deployment("open")
            .await
            .expect("read")
            .expect("open exists");
        assert_eq!(open.state, State::Verifying);

        // A second tick changes nothing.
        assert_eq!(run_once(&svc).await, TickReport::default());
    }

    #[tokio::test]
    async fn sweep_answers_github_for_decided_deployments_still_pending() {
        let now = t("2026-03-02T10:00:00Z");
        let clock = ManualClock::new(now);
        let fake = Arc::new(FakeGitHub::default());
        let svc = services(&clock, Some(fake.clone() as Arc<dyn GitHubApi>));

        let mut approved = deployment("approved", "staging", State::Approved, 11, now);
        approved.callback = CallbackState::Pending;
        svc.repo
            .create_deployment(&mut approved, &[], now)
            .await
            .expect("create");
        let mut rejected = deployment("rejected", "production", State::Rejected, 12, now);
        rejected.callback = CallbackState::Pending;
        rejected.reason = Some("not promoted from staging".into());
        svc.repo
            .create_deployment(&mut rejected, &[], now)
            .await
            .expect("create");
        let mut waiting = deployment("waiting", "production", State::AwaitingApproval, 13, now);
        waiting.callback = CallbackState::Pending;
        svc.repo
            .create_deployment(&mut waiting, &[], now)
            .await
            .expect("create");

        let report = run_once(&svc).await;
        assert_eq!(
            report,
            TickReport {
                verified: 0,
                answered: 2,
                errors: 0
            }
        );
        let mut reviews = fake.reviews.lock().expect("reviews").clone();
        reviews.sort_by_key(|r| r.0);
        assert_eq!(
            reviews,
            vec![
                (11, "staging".to_string(), ReviewState::Approved),
                (12, "production".to_string(), ReviewState::Rejected),
            ]
        );
        let approved = svc
            .repo
            .get_deployment("approved")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(approved.callback, CallbackState::Answered);
        assert_eq!(run_once(&svc).await, TickReport::default());
    }

    #[tokio::test]
    async fn scheduler_stops_when_shutdown_is_signalled() {
        let clock = ManualClock::new(t("2026-03-02T10:00:00Z"));
        let (tx, rx) = watch::channel(false);
        let handle = spawn_scheduler(services(&clock, None), Duration::from_secs(3600), rx);
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("scheduler stops promptly")
            .expect("scheduler task");
    }
}
