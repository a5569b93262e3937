//! Judging a deployment by its metrics while it verifies: a check's condition, the samples it
//! takes, and the verdicts they add up to. Pure: no I/O, no clock. The sources that produce the
//! values (Prometheus, CloudWatch) are outbound adapters; the loop that runs the checks is a use
//! case.
//!
//! A check takes a sample every `interval` while the deployment verifies. A sample is a value
//! the condition holds for (a pass), one it does not hold for (a failure), or no value at all
//! (inconclusive: the query returned nothing or NaN, or the source could not be asked). Once
//! `count` samples have been judged with at most `failure_limit` failures, the check passes;
//! at `failure_limit + 1` failures it fails. Inconclusive samples count for neither: what they
//! mean when the window ends is the analysis's [`Inconclusive`] rule.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = ">")]
    Above,
    #[serde(rename = ">=")]
    AtLeast,
}

impl Comparison {
    fn symbol(self) -> &'static str {
        match self {
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
        }
    }

    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Comparison::Below => value < limit,
            Comparison::AtMost => value <= limit,
            Comparison::Above => value > limit,
            Comparison::AtLeast => value >= limit,
        }
    }
}

/// What a value is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Threshold {
    /// A number: `< 0.01`.
    Absolute(f64),
    /// The baseline times a factor: `<= baseline * 1.2`.
    BaselineTimes(f64),
    /// The baseline plus an amount: `< baseline + 0.005`.
    BaselinePlus(f64),
}

/// A check's condition: the values a healthy deployment gives, e.g. `< 0.01` or
/// `<= baseline * 1.2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub comparison: Comparison,
    pub threshold: Threshold,
}

/// How a sample came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Judgement {
    /// The condition holds for the value.
    Pass,
    /// It does not.
    Fail,
    /// There is nothing to judge; `reason` says why.
    Inconclusive { reason: String },
}

impl Condition {
    /// Parses `OP NUMBER`, `OP baseline * NUMBER` or `OP baseline + NUMBER` (`-` for a
    /// negative amount), with `OP` one of `<`, `<=`, `>`, `>=`.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let text = text.trim();
        let (comparison, rest) = if let Some(rest) = text.strip_prefix("<=") {
            (Comparison::AtMost, rest)
        } else if let Some(rest) = text.strip_prefix(">=") {
            (Comparison::AtLeast, rest)
        } else if let Some(rest) = text.strip_prefix('<') {
            (Comparison::Below, rest)
        } else if let Some(rest) = text.strip_prefix('>') {
            (Comparison::Above, rest)
        } else {
            return Err(format!(
                "{text:?}: start with <, <=, > or >=, e.g. \"< 0.01\" or \"<= baseline * 1.2\""
            ));
        };
        let rest = rest.trim();
        let threshold = match rest.strip_prefix("baseline") {
            None => Threshold::Absolute(number(rest)?),
            Some(after) => {
                let after = after.trim();
                if let Some(factor) = after.strip_prefix('*') {
                    let factor = number(factor.trim())?;
                    if factor < 0.0 {
                        return Err(format!("{text:?}: the factor must not be negative"));
                    }
                    Threshold::BaselineTimes(factor)
                } else if let Some(amount) = after.strip_prefix('+') {
                    Threshold::BaselinePlus(number(amount.trim())?)
                } else if let Some(amount) = after.strip_prefix('-') {
                    Threshold::BaselinePlus(-number(amount.trim())?)
                } else {
                    return Err(format!(
                        "{text:?}: after baseline write * FACTOR or + AMOUNT, e.g. \"<= baseline * 1.2\""
                    ));
                }
            }
        };
        Ok(Condition {
            comparison,
            threshold,
        })
    }

    /// Whether the condition compares with a baseline.
    pub fn needs_baseline(&self) -> bool {
        !matches!(self.threshold, Threshold::Absolute(_))
    }

    /// The limit the value is compared with, given the baseline; `None` when a relative
    /// condition has no baseline to be relative to.
    pub fn limit(&self, baseline: Option<f64>) -> Option<f64> {
        match self.threshold {
            Threshold::Absolute(n) => Some(n),
            Threshold::BaselineTimes(f) => baseline.map(|b| b * f),
            Threshold::BaselinePlus(d) => baseline.map(|b| b + d),
        }
    }

    /// Judges one value. A missing or non-finite value, and a relative condition without a
    /// finite baseline, are inconclusive.
    pub fn judge(&self, value: Option<f64>, baseline: Option<f64>) -> Judgement {
        let Some(value) = value else {
            return inconclusive("the query returned no value");
        };
        if !value.is_finite() {
            return inconclusive(&format!("the query returned {value}"));
        }
        let baseline = baseline.filter(|b| b.is_finite());
        let Some(limit) = self.limit(baseline) else {
            return inconclusive("no baseline: the query returned no value before the deploy");
        };
        if self.comparison.holds(value, limit) {
            Judgement::Pass
        } else {
            Judgement::Fail
        }
    }
}

fn inconclusive(reason: &str) -> Judgement {
    Judgement::Inconclusive {
        reason: reason.to_owned(),
    }
}

fn number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => Err(format!("{text:?} is not a number")),
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.comparison.symbol();
        match self.threshold {
            Threshold::Absolute(n) => write!(f, "{op} {n}"),
            Threshold::BaselineTimes(x) => write!(f, "{op} baseline * {x}"),
            Threshold::BaselinePlus(d) if d < 0.0 => write!(f, "{op} baseline - {}", -d),
            Threshold::BaselinePlus(d) => write!(f, "{op} baseline + {d}"),
        }
    }
}

/// How many samples a check takes and how many may fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRule {
    /// Judged samples (passes and failures) that make a verdict.
    pub count: u32,
    /// Failures tolerated; one more fails the check.
    pub failure_limit: u32,
}

/// Where a check stands after its samples so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum CheckVerdict {
    /// More samples are needed.
    Running {
        passes: u32,
        failures: u32,
        inconclusive: u32,
    },
    /// `count` samples judged with at most `failure_limit` failures.
    Passed { passes: u32, failures: u32 },
    /// More than `failure_limit` failures.
    Failed { passes: u32, failures: u32 },
}

impl SampleRule {
    /// The verdict of samples judged so far, oldest first. Judging stops at the first verdict:
    /// samples after it change nothing.
    pub fn verdict<'a>(&self, judgements: impl IntoIterator<Item = &'a Judgement>) -> CheckVerdict {
        let (mut passes, mut failures, mut inconclusive) = (0u32, 0u32, 0u32);
        for j in judgements {
            match j {
                Judgement::Pass => passes += 1,
                Judgement::Fail => failures += 1,
                Judgement::Inconclusive { .. } => inconclusive += 1,
            }
            if failures > self.failure_limit {
                return CheckVerdict::Failed { passes, failures };
            }
            if passes + failures >= self.count {
                return CheckVerdict::Passed { passes, failures };
            }
        }
        CheckVerdict::Running {
            passes,
            failures,
            inconclusive,
        }
    }
}

/// What an analysis that could not decide means once the verification window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// Keep the deployment verifying until its window ends, then fail it with the reason
    /// (the default: a deploy nobody could judge is not a good one).
    #[default]
    FailAtWindowEnd,
    /// Let the window decide, as without analysis: it passes when it ends quietly.
    PassAtWindowEnd,
}

/// What the analysis of a deployment says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalysisVerdict {
    /// Keep verifying.
    Continue,
    /// Every check passed.
    Passed,
    /// `check` failed; roll back.
    Failed { check: String, reason: String },
    /// The window ended with checks undecided, and the policy fails such a deployment.
    Undecided { reason: String },
}

/// Combines the checks' verdicts (`(name, verdict, last inconclusive reason)`): any failed
/// check fails the analysis; all passed pass it; otherwise it continues, unless the window has
/// ended, when `rule` decides.
pub fn analysis_verdict(
    checks: &[(String, CheckVerdict, Option<String>)],
    window_ended: bool,
    rule: Inconclusive,
) -> AnalysisVerdict {
    for (name, verdict, _) in checks {
        if let CheckVerdict::Failed { passes, failures } = verdict {
            return AnalysisVerdict::Failed {
                check: name.clone(),
                reason: format!("{failures} of {} samples failed", passes + failures),
            };
        }
    }
    let undecided: Vec<String> = checks
        .iter()
        .filter(|(_, v, _)| !matches!(v, CheckVerdict::Passed { .. }))
        .map(|(name, _, why)| match why {
            Some(why) => format!("{name} ({why})"),
            None => format!("{name} (too few samples)"),
        })
        .collect();
    if undecided.is_empty() {
        return AnalysisVerdict::Passed;
    }
    if !window_ended {
        return AnalysisVerdict::Continue;
    }
    match rule {
        Inconclusive::FailAtWindowEnd => AnalysisVerdict::Undecided {
            reason: format!(
                "the verification window ended before analysis could judge: {}",
                undecided.join(", ")
            ),
        },
        Inconclusive::PassAtWindowEnd => AnalysisVerdict::Passed,
    }
}

/// One sample of one check of one deployment: what the query gave at the sample's time, what
/// it was compared with, and how it came out. Slot `k` is taken `k` intervals after
/// verification began; a slot is sampled once (the store refuses a second sample of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub deployment_id: String,
    pub check: String,
    pub slot: u32,
    /// The time the query was evaluated at (the slot's time).
    pub at: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The condition as written, e.g. `< 0.01`.
    pub condition: String,
    #[serde(flatten)]
    pub judgement: Judgement,
}

impl Sample {
    /// `error-rate: 0.0052 < 0.01: pass`, `p99: 0.41 <= baseline * 1.2 (0.3): fail`,
    /// `error-rate: inconclusive (the query returned no value)`.
    pub fn line(&self) -> String {
        let value = |v: f64| format!("{}", (v * 10_000.0).round() / 10_000.0);
        match (&self.judgement, self.value) {
            (Judgement::Inconclusive { reason }, _) => {
                format!("{}: inconclusive ({reason})", self.check)
            }
            (_, None) => format!("{}: inconclusive (no value)", self.check),
            (judgement, Some(v)) => {
                let base = self
                    .baseline
                    .map(|b| format!(" (baseline {})", value(b)))
                    .unwrap_or_default();
                let verdict = if *judgement == Judgement::Pass {
                    "pass"
                } else {
                    "fail"
                };
                format!(
                    "{}: {} {}{base}: {verdict}",
                    self.check,
                    value(v),
                    self.condition
                )
            }
        }
    }
}

/// Puts the deployment's facts into a query: `{{repository}}`, `{{service}}`,
/// `{{environment}}`, `{{sha}}`, `{{started_at}}` (Unix seconds). Values are escaped for a
/// double- or single-quoted string literal (backslash, quotes), so a fact cannot end the
/// literal it is written in. An unknown `{{name}}` is an error naming it.
pub fn render_query(template: &str, facts: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("a {{ without its }}".to_owned());
        };
        let name = after[..end].trim();
        let Some((_, value)) = facts.iter().find(|(k, _)| *k == name) else {
            let known: Vec<&str> = facts.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "unknown placeholder {{{{{name}}}}} (known: {})",
                known.join(", ")
            ));
        };
        for c in value.chars() {
            if matches!(c, '\\' | '"' | '\'') {
                out.push('\\');
            }
            out.push(c);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a CloudWatch check's query: a JSON list of metric data queries as
/// `aws cloudwatch get-metric-data --metric-data-queries` takes them, each with an `Id` and
/// either a `MetricStat` (`Metric`, `Period` in seconds, `Stat`) or an `Expression`, exactly one
/// of which returns data (`ReturnData` is true unless false). Returns the longest `Period`
/// (60 when only expressions name none).
pub fn check_cloudwatch_queries(text: &str) -> Result<i64, String> {
    use serde_json::Value;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!("a CloudWatch query is a JSON list of metric data queries, as `aws cloudwatch get-metric-data --metric-data-queries` takes: {e}")
    })?;
    let Some(items) = value.as_array() else {
        return Err("a CloudWatch query is a JSON list of metric data queries".into());
    };
    if items.is_empty() {
        return Err("the list of metric data queries is empty".into());
    }
    let mut period = 0i64;
    let mut returning = 0;
    for item in items {
        let Some(id) = item.get("Id").and_then(Value::as_str) else {
            return Err("every metric data query needs an \"Id\"".into());
        };
        returning += usize::from(
            item.get("ReturnData")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        );
        let positive = |p: Option<i64>| match p {
            Some(p) if p > 0 && p <= i64::from(i32::MAX) => Ok(Some(p)),
            Some(p) => Err(format!(
                "{id}: Period {p} is not a positive number of seconds"
            )),
            None => Ok(None),
        };
        if let Some(p) = positive(item.get("Period").and_then(Value::as_i64))? {
            period = period.max(p);
        }
        match (
            item.get("MetricStat"),
            item.get("Expression").and_then(Value::as_str),
        ) {
            (Some(stat), None) => {
                if stat.get("Metric").and_then(Value::as_object).is_none() {
                    return Err(format!("{id}: MetricStat needs a Metric"));
                }
                let Some(p) = positive(stat.get("Period").and_then(Value::as_i64))? else {
                    return Err(format!("{id}: MetricStat needs a Period (seconds)"));
                };
                period = period.max(p);
                if stat.get("Stat").and_then(Value::as_str).is_none() {
                    return Err(format!(
                        "{id}: MetricStat needs a Stat (Sum, Average, p99...)"
                    ));
                }
            }
            (None, Some(_)) => {}
            _ => return Err(format!("{id}: give either MetricStat or Expression")),
        }
    }
    if returning != 1 {
        return Err(format!(
            "exactly one metric data query must return data (ReturnData is true unless false); {returning} do"
        ));
    }
    Ok(if period > 0 { period } else { 60 })
}

/// The placeholders [`render_query`] knows.
pub const PLACEHOLDERS: &[&str] = &["repository", "service", "environment", "sha", "started_at"];

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> Condition {
        Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn conditions_parse_absolute_and_relative_thresholds_and_print_back() {
        assert_eq!(
            c("< 0.01"),
            Condition {
                comparison: Comparison::Below,
                threshold: Threshold::Absolute(0.01)
            }
        );
        assert_eq!(c("<=baseline*1.2").threshold, Threshold::BaselineTimes(1.2));
        assert_eq!(
            c(">= baseline - 5").threshold,
            Threshold::BaselinePlus(-5.0)
        );
        for text in [
            "< 0.01",
            "<= baseline * 1.2",
            "> baseline + 0.5",
            ">= baseline - 5",
        ] {
            assert_eq!(c(text).to_string(), text);
        }
        for bad in [
            "0.01",
            "= 1",
            "< abc",
            "< baseline",
            "< baseline / 2",
            "< baseline * -1",
            "< inf",
            "< NaN",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn a_value_is_judged_against_the_limit_and_a_missing_value_is_inconclusive() {
        assert_eq!(c("< 0.01").judge(Some(0.005), None), Judgement::Pass);
        assert_eq!(c("< 0.01").judge(Some(0.01), None), Judgement::Fail);
        assert_eq!(c("<= 0.01").judge(Some(0.01), None), Judgement::Pass);
        assert_eq!(c("> 0.99").judge(Some(0.98), None), Judgement::Fail);
        assert!(matches!(
            c("< 0.01").judge(None, None),
            Judgement::Inconclusive { .. }
        ));
        assert!(matches!(
            c("< 0.01").judge(Some(f64::NAN), None),
            Judgement::Inconclusive { .. }
        ));
    }

    #[test]
    fn relative_thresholds_scale_with_the_baseline_and_need_one() {
        // p99 at most 20% above the hour before the deploy.
        let rule = c("<= baseline * 1.2");
        assert_eq!(rule.judge(Some(0.30), Some(0.25)), Judgement::Pass);
        assert_eq!(rule.judge(Some(0.31), Some(0.25)), Judgement::Fail);
        // The same rule serves a service ten times slower.
        assert_eq!(rule.judge(Some(3.0), Some(2.5)), Judgement::Pass);
        assert_eq!(
            rule.judge(Some(0.3), None),
            Judgement::Inconclusive {
                reason: "no baseline: the query returned no value before the deploy".into()
            }
        );
        assert!(matches!(
            rule.judge(Some(0.3), Some(f64::INFINITY)),
            Judgement::Inconclusive { .. }
        ));
        assert_eq!(
            c("< baseline + 0.005").judge(Some(0.016), Some(0.01)),
            Judgement::Fail
        );
        assert_eq!(
            c("< baseline + 0.005").judge(Some(0.014), Some(0.01)),
            Judgement::Pass
        );
    }

    fn judged(pattern: &str) -> Vec<Judgement> {
        pattern
            .chars()
            .map(|ch| match ch {
                'p' => Judgement::Pass,
                'f' => Judgement::Fail,
                _ => inconclusive("no data"),
            })
            .collect()
    }

    #[test]
    fn a_check_passes_after_count_judged_samples_and_fails_past_its_failure_limit() {
        let rule = SampleRule {
            count: 5,
            failure_limit: 1,
        };
        assert_eq!(
            rule.verdict(&judged("ppppp")),
            CheckVerdict::Passed {
                passes: 5,
                failures: 0
            }
        );
        assert_eq!(
            rule.verdict(&judged("pfppp")),
            CheckVerdict::Passed {
                passes: 4,
                failures: 1
            }
        );
        assert_eq!(
            rule.verdict(&judged("pfpf")),
            CheckVerdict::Failed {
                passes: 2,
                failures: 2
            }
        );
        // Inconclusive samples count for neither side.
        assert_eq!(
            rule.verdict(&judged("p??pp")),
            CheckVerdict::Running {
                passes: 3,
                failures: 0,
                inconclusive: 2
            }
        );
        // Samples after the verdict change nothing.
        assert_eq!(
            rule.verdict(&judged("pppppfff")),
            CheckVerdict::Passed {
                passes: 5,
                failures: 0
            }
        );
    }

    #[test]
    fn the_analysis_fails_on_any_failed_check_and_an_undecided_one_waits_for_the_window() {
        let passed = CheckVerdict::Passed {
            passes: 5,
            failures: 0,
        };
        let running = CheckVerdict::Running {
            passes: 1,
            failures: 0,
            inconclusive: 3,
        };
        let failed = CheckVerdict::Failed {
            passes: 1,
            failures: 2,
        };
        let checks =
            |list: &[(&str, &CheckVerdict)]| -> Vec<(String, CheckVerdict, Option<String>)> {
                list.iter()
                    .map(|(n, v)| (n.to_string(), (*v).clone(), Some("source down".to_string())))
                    .collect()
            };
        let rule = Inconclusive::default();
        assert_eq!(
            analysis_verdict(
                &checks(&[("errors", &passed), ("latency", &failed)]),
                false,
                rule
            ),
            AnalysisVerdict::Failed {
                check: "latency".into(),
                reason: "2 of 3 samples failed".into()
            }
        );
        assert_eq!(
            analysis_verdict(
                &checks(&[("errors", &passed), ("latency", &passed)]),
                false,
                rule
            ),
            AnalysisVerdict::Passed
        );
        assert_eq!(
            analysis_verdict(
                &checks(&[("errors", &passed), ("latency", &running)]),
                false,
                rule
            ),
            AnalysisVerdict::Continue
        );
        assert_eq!(
            analysis_verdict(&checks(&[("errors", &passed), ("latency", &running)]), true, rule),
            AnalysisVerdict::Undecided {
                reason: "the verification window ended before analysis could judge: latency (source down)".into()
            }
        );
        assert_eq!(
            analysis_verdict(
                &checks(&[("latency", &running)]),
                true,
                Inconclusive::PassAtWindowEnd
            ),
            AnalysisVerdict::Passed
        );
    }

    #[test]
    fn facts_go_into_queries_escaped_and_unknown_placeholders_are_named() {
        let facts = [
            ("service", "api"),
            ("environment", "production"),
            ("sha", "abc\"}"),
        ];
        assert_eq!(
            render_query(
                r#"rate(x{service="{{service}}",env="{{ environment }}"}[1m])"#,
                &facts
            )
            .unwrap(),
            r#"rate(x{service="api",env="production"}[1m])"#
        );
        assert_eq!(
            render_query(r#"x{sha="{{sha}}"}"#, &facts).unwrap(),
            r#"x{sha="abc\"}"}"#
        );
        let err = render_query("x{{team}}", &facts).unwrap_err();
        assert!(err.contains("unknown placeholder {{team}}"), "{err}");
        assert!(render_query("x{{service", &facts).is_err());
    }
}
