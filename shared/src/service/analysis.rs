//! Analysis of a verifying deployment: taking the samples its checks are due (from the
//! policy's metric sources), and what the samples say. Acting on the verdict (rolling back,
//! ending verification early) is the sweeper's (`jobs::analysis`); the end of a window asks
//! [`passed_at_window_end`] before a deployment may succeed.
//!
//! Check `c` of a deployment whose verification began at `start` takes sample `k` (`k >= 1`)
//! at `start + k × c.interval`, evaluating the query at that time, as long as that time is not
//! after the window's end. A sweep that finds several slots due (it ran late, or the process
//! was down) samples each at its own time, oldest first, until the check is decided. The store
//! keeps one sample per slot, so sweeps that race write each slot once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use secrecy::SecretString;

use super::{ServiceError, Services};
use crate::config::Vars;
use crate::domain::analysis::{
    analysis_verdict, render_query, AnalysisVerdict, CheckVerdict, Judgement, Sample,
};
use crate::domain::deployment::{Deployment, State};
use crate::domain::policy::{
    AnalysisCheck, AnalysisPolicy, MetricSourceSpec, Policy, PrometheusAuthSpec,
};
use crate::outbound::metrics::MetricSource;
use crate::outbound::prometheus::{Prometheus, PrometheusAuth};

/// At most this many samples per check in one sweep: a process down for hours catches up over
/// several sweeps instead of stalling one.
const MAX_SAMPLES_PER_SWEEP: usize = 20;

/// The policy's metric sources, ready to query; a source whose credentials are missing says so
/// at every sample instead.
#[derive(Clone, Default)]
pub struct Sources {
    by_name: BTreeMap<String, Result<Arc<dyn MetricSource>, String>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

/// Makes CloudWatch sources; only a process with AWS credentials has one (the scheduled-jobs
/// function).
pub trait CloudWatchSources: Send + Sync {
    /// CloudWatch in `region`, or the process's own region.
    fn cloudwatch(&self, region: Option<&str>) -> Arc<dyn MetricSource>;
}

impl Sources {
    /// Builds a client for every `[analysis.sources]` entry, reading credentials from the
    /// variables the policy names (no I/O). CloudWatch sources come from `cloudwatch`; without
    /// one their samples are inconclusive, saying so.
    pub fn from_policy(
        policy: &Policy,
        vars: &dyn Vars,
        http: &reqwest::Client,
        cloudwatch: Option<&dyn CloudWatchSources>,
    ) -> Sources {
        let mut by_name = BTreeMap::new();
        for (name, spec) in policy.analysis_sources() {
            let source = match spec {
                MetricSourceSpec::CloudWatch { region } => match cloudwatch {
                    Some(factory) => Ok(factory.cloudwatch(region.as_deref())),
                    None => Err(format!(
                        "source {name}: CloudWatch is read by shipgate on AWS (the scheduled-jobs function), not by this process"
                    )),
                },
                MetricSourceSpec::Prometheus { url, auth } => {
                    let secret = |var: &str| {
                        vars.var(var)
                            .filter(|v| !v.trim().is_empty())
                            .map(SecretString::from)
                            .ok_or_else(|| format!("source {name}: {var} is not set"))
                    };
                    let auth = match auth {
                        PrometheusAuthSpec::None => Ok(PrometheusAuth::None),
                        PrometheusAuthSpec::Bearer { token_var } => {
                            secret(token_var).map(PrometheusAuth::Bearer)
                        }
                        PrometheusAuthSpec::Basic { user, password_var } => secret(password_var)
                            .map(|password| PrometheusAuth::Basic {
                                user: user.clone(),
                                password,
                            }),
                    };
                    auth.map(|auth| {
                        Arc::new(Prometheus::new(http.clone(), url, auth)) as Arc<dyn MetricSource>
                    })
                }
            };
            by_name.insert(name.clone(), source);
        }
        Sources { by_name }
    }

    /// `name` answered by `source` (tests and tools).
    pub fn with_source(mut self, name: &str, source: Arc<dyn MetricSource>) -> Sources {
        self.by_name.insert(name.to_owned(), Ok(source));
        self
    }

    fn get(&self, name: &str) -> Result<&Arc<dyn MetricSource>, String> {
        match self.by_name.get(name) {
            Some(Ok(source)) => Ok(source),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("source {name} is not in this process's policy")),
        }
    }
}

/// The analysis that applies to `dep`: its repository's override's, else its environment's.
pub fn analysis_of(policy: &Policy, dep: &Deployment) -> Option<AnalysisPolicy> {
    match policy.for_scope(&dep.repo, &dep.environment) {
        Ok(effective) => effective.policy.analysis,
        Err(_) => policy
            .environment(dep.environment.as_str())
            .and_then(|e| e.analysis.clone()),
    }
}

/// When `dep`'s verification began: its window's end less the environment's window.
pub fn verification_started(policy: &Policy, dep: &Deployment) -> Option<Timestamp> {
    let until = dep.verify_until?;
    let window = policy
        .for_scope(&dep.repo, &dep.environment)
        .ok()
        .map(|e| e.verification_window)
        .or_else(|| {
            policy
                .environment(dep.environment.as_str())
                .map(|e| e.verification_window)
        })?;
    until
        .checked_sub(SignedDuration::try_from(window).ok()?)
        .ok()
}

/// The deployment's facts, for a query's `{{placeholders}}`.
pub fn facts(policy: &Policy, dep: &Deployment, started: Timestamp) -> Vec<(&'static str, String)> {
    let repository = dep.repo.to_string();
    let service = policy
        .service_of(&dep.repo)
        .map(str::to_owned)
        .unwrap_or_else(|| repository.rsplit('/').next().unwrap_or_default().to_owned());
    vec![
        ("repository", repository),
        ("service", service),
        ("environment", dep.environment.to_string()),
        ("sha", dep.sha.to_string()),
        ("started_at", started.as_second().to_string()),
    ]
}

/// The slots of `check` due at `now` for a deployment whose verification began at `started`
/// and ends at `until`, with their times.
fn due_slots(
    check: &AnalysisCheck,
    started: Timestamp,
    until: Timestamp,
    now: Timestamp,
) -> Vec<(u32, Timestamp)> {
    let mut out = Vec::new();
    let last = now.min(until);
    let Ok(step) = SignedDuration::try_from(check.interval) else {
        return out;
    };
    let mut at = started;
    for slot in 1u32.. {
        let Ok(next) = at.checked_add(step) else {
            break;
        };
        at = next;
        if at > last {
            break;
        }
        out.push((slot, at));
    }
    out
}

/// One check's samples so far, oldest first, and its verdict.
fn check_verdict(check: &AnalysisCheck, samples: &[&Sample]) -> CheckVerdict {
    check.rule.verdict(samples.iter().map(|s| &s.judgement))
}

/// What [`sample_due`] did: how many samples it wrote, and every sample of the deployment
/// as stored after it, for the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub written: usize,
    pub samples: Vec<Sample>,
}

/// Takes the samples `dep`'s checks are due at `now`. The samples it returns are those read
/// before sampling and those it wrote; when another sweep took a slot first, they are read
/// again, so the verdict is always that of the stored samples.
pub async fn sample_due(
    svc: &Services,
    sources: &Sources,
    dep: &Deployment,
    analysis: &AnalysisPolicy,
    now: Timestamp,
) -> Result<Sampled, ServiceError> {
    let existing = svc.repo.samples(&dep.id).await?;
    let (Some(started), Some(until)) = (verification_started(&svc.policy, dep), dep.verify_until)
    else {
        return Ok(Sampled {
            written: 0,
            samples: existing,
        });
    };
    let facts = facts(&svc.policy, dep, started);
    let facts: Vec<(&str, &str)> = facts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut written = Vec::new();
    let mut lost_a_race = false;
    for check in &analysis.checks {
        let mine: Vec<&Sample> = existing.iter().filter(|s| s.check == check.name).collect();
        let mut taken: Vec<Sample> = Vec::new();
        let done: std::collections::BTreeSet<u32> = mine.iter().map(|s| s.slot).collect();
        let mut baseline: Option<Option<f64>> = None;
        let due: Vec<(u32, Timestamp)> = due_slots(check, started, until, now)
            .into_iter()
            .filter(|(slot, _)| !done.contains(slot))
            .take(MAX_SAMPLES_PER_SWEEP)
            .collect();
        for (slot, at) in due {
            let all: Vec<&Sample> = mine.iter().copied().chain(taken.iter()).collect();
            if !matches!(check_verdict(check, &all), CheckVerdict::Running { .. }) {
                break;
            }
            let sample = take_sample(
                sources,
                check,
                &facts,
                &dep.id,
                slot,
                at,
                started,
                &mut baseline,
            )
            .await;
            if svc
                .repo
                .record_sample(&sample, dep.environment.as_str())
                .await?
            {
                written.push(sample.clone());
            } else {
                lost_a_race = true;
            }
            taken.push(sample);
        }
    }
    let samples = if lost_a_race {
        svc.repo.samples(&dep.id).await?
    } else {
        let mut all = existing;
        all.extend(written.iter().cloned());
        all
    };
    Ok(Sampled {
        written: written.len(),
        samples,
    })
}

/// Evaluates `check` once at `at`, as a deployment whose verification began at `started` and
/// whose facts are `facts` would be sampled (`shipgate analysis run`). Nothing is stored.
pub async fn evaluate_once(
    sources: &Sources,
    check: &AnalysisCheck,
    facts: &[(&str, &str)],
    at: Timestamp,
    started: Timestamp,
) -> Sample {
    take_sample(sources, check, facts, "", 0, at, started, &mut None).await
}

#[allow(clippy::too_many_arguments)]
async fn take_sample(
    sources: &Sources,
    check: &AnalysisCheck,
    facts: &[(&str, &str)],
    deployment_id: &str,
    slot: u32,
    at: Timestamp,
    started: Timestamp,
    baseline: &mut Option<Option<f64>>,
) -> Sample {
    let sample = |value: Option<f64>, base: Option<f64>, judgement: Judgement| Sample {
        deployment_id: deployment_id.to_owned(),
        check: check.name.clone(),
        slot,
        at,
        value,
        baseline: base,
        condition: check.condition.to_string(),
        judgement,
    };
    let inconclusive = |reason: String| Judgement::Inconclusive { reason };
    let source = match sources.get(&check.source) {
        Ok(source) => source,
        Err(why) => return sample(None, None, inconclusive(why)),
    };
    let query = match render_query(&check.query, facts) {
        Ok(q) => q,
        Err(why) => return sample(None, None, inconclusive(why)),
    };
    if let (Some(span), None) = (check.baseline, *baseline) {
        let from = SignedDuration::try_from(span)
            .ok()
            .and_then(|d| started.checked_sub(d).ok())
            .unwrap_or(started);
        let step = check.interval.max(Duration::from_secs(10));
        *baseline = Some(match source.mean_over(&query, from, started, step).await {
            Ok(v) => v,
            Err(e) => return sample(None, None, inconclusive(format!("baseline: {e}"))),
        });
    }
    let base = baseline.flatten();
    match source.value_at(&query, at).await {
        Ok(value) => sample(value, base, check.condition.judge(value, base)),
        Err(e) => sample(None, base, inconclusive(e.to_string())),
    }
}

/// The verdict of `samples` under `analysis`.
pub fn verdict_of(
    analysis: &AnalysisPolicy,
    samples: &[Sample],
    window_ended: bool,
) -> AnalysisVerdict {
    let checks: Vec<(String, CheckVerdict, Option<String>)> = analysis
        .checks
        .iter()
        .map(|check| {
            let mut mine: Vec<&Sample> = samples.iter().filter(|s| s.check == check.name).collect();
            mine.sort_by_key(|s| s.slot);
            let last_inconclusive = mine.iter().rev().find_map(|s| match &s.judgement {
                Judgement::Inconclusive { reason } => Some(reason.clone()),
                _ => None,
            });
            (
                check.name.clone(),
                check_verdict(check, &mine),
                last_inconclusive,
            )
        })
        .collect();
    let verdict = analysis_verdict(&checks, window_ended, analysis.inconclusive);
    // Name the value that failed.
    match verdict {
        AnalysisVerdict::Failed { check, reason } => {
            let last = samples
                .iter()
                .filter(|s| s.check == check && s.judgement == Judgement::Fail)
                .max_by_key(|s| s.slot)
                .map(|s| format!("; last failing sample {}", s.line()))
                .unwrap_or_default();
            AnalysisVerdict::Failed {
                check,
                reason: format!("{reason}{last}"),
            }
        }
        other => other,
    }
}

/// One line per check for people (the Slack message): `error-rate: 3 of 5 passed, 0 failed;
/// last 0.0052 < 0.01: pass`, `p99: failed (2 failures); last 0.41 <= baseline * 1.2 (baseline
/// 0.3): fail`, `errors: waiting for its first sample`.
pub fn check_lines(analysis: &AnalysisPolicy, samples: &[Sample]) -> Vec<String> {
    analysis
        .checks
        .iter()
        .map(|check| {
            let mut mine: Vec<&Sample> = samples.iter().filter(|s| s.check == check.name).collect();
            mine.sort_by_key(|s| s.slot);
            let Some(last) = mine.last() else {
                return format!("{}: waiting for its first sample", check.name);
            };
            let standing = match check_verdict(check, &mine) {
                CheckVerdict::Passed { passes, failures } => {
                    format!("passed ({passes} passed, {failures} failed)")
                }
                CheckVerdict::Failed { passes, failures } => {
                    format!("failed ({failures} failed, {passes} passed)")
                }
                CheckVerdict::Running {
                    passes,
                    failures,
                    inconclusive,
                } => {
                    let mut text =
                        format!("{passes} of {} passed, {failures} failed", check.rule.count);
                    if inconclusive > 0 {
                        text.push_str(&format!(", {inconclusive} inconclusive"));
                    }
                    text
                }
            };
            let last_line = last.line();
            let last_part = last_line
                .strip_prefix(&format!("{}: ", check.name))
                .unwrap_or(&last_line);
            format!("{}: {standing}; last {last_part}", check.name)
        })
        .collect()
}

/// Whether a deployment whose window has ended may succeed under `analysis` (the one
/// [`analysis_of`] gives it): every check passed, or the policy passes undecided checks.
pub async fn passed_at_window_end(
    svc: &Services,
    dep: &Deployment,
    analysis: &AnalysisPolicy,
) -> Result<bool, ServiceError> {
    if dep.state != State::Verifying {
        return Ok(true);
    }
    let samples = svc.repo.samples(&dep.id).await?;
    Ok(verdict_of(analysis, &samples, true) == AnalysisVerdict::Passed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::analysis::{Condition, Inconclusive, SampleRule};

    fn sample(check: &str, slot: u32, value: Option<f64>, judgement: Judgement) -> Sample {
        Sample {
            deployment_id: "dep-1".into(),
            check: check.into(),
            slot,
            at: Timestamp::UNIX_EPOCH,
            value,
            baseline: None,
            condition: "< 0.01".into(),
            judgement,
        }
    }

    fn check(name: &str) -> AnalysisCheck {
        AnalysisCheck {
            name: name.into(),
            source: "prom".into(),
            query: "x".into(),
            condition: Condition::parse("< 0.01").expect("condition"),
            interval: Duration::from_secs(60),
            rule: SampleRule {
                count: 3,
                failure_limit: 0,
            },
            baseline: None,
        }
    }

    #[test]
    fn each_check_says_where_it_stands_and_its_last_value() {
        let analysis = AnalysisPolicy {
            checks: vec![check("errors"), check("latency"), check("saturation")],
            inconclusive: Inconclusive::default(),
            end_early: false,
        };
        let samples = vec![
            // Out of order on purpose: slots decide.
            sample(
                "errors",
                2,
                None,
                Judgement::Inconclusive {
                    reason: "the query returned no value".into(),
                },
            ),
            sample("errors", 1, Some(0.005), Judgement::Pass),
            sample("latency", 1, Some(0.02), Judgement::Fail),
        ];
        assert_eq!(
            check_lines(&analysis, &samples),
            vec![
                "errors: 1 of 3 passed, 0 failed, 1 inconclusive; last inconclusive (the query returned no value)",
                "latency: failed (1 failed, 0 passed); last 0.02 < 0.01: fail",
                "saturation: waiting for its first sample",
            ]
        );
        assert_eq!(
            verdict_of(&analysis, &samples, false),
            AnalysisVerdict::Failed {
                check: "latency".into(),
                reason: "1 of 1 samples failed; last failing sample latency: 0.02 < 0.01: fail"
                    .into()
            }
        );
    }

    #[test]
    fn slots_fall_every_interval_from_the_start_and_stop_at_the_window_end() {
        let start: Timestamp = "2026-12-05T10:00:00Z".parse().expect("ts");
        let until: Timestamp = "2026-12-05T10:05:00Z".parse().expect("ts");
        let at = |m: i64| start.checked_add(SignedDuration::from_mins(m)).expect("ts");
        let c = check("errors");
        assert_eq!(due_slots(&c, start, until, at(0)), vec![]);
        assert_eq!(
            due_slots(&c, start, until, at(2)),
            vec![(1, at(1)), (2, at(2))]
        );
        // Long after the window: its slots only.
        assert_eq!(due_slots(&c, start, until, at(60)).len(), 5);
    }
}
