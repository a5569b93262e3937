//! The gate decision: may this deployment (or rollback) go ahead, and with how many approvals?
//!
//! Every rule is evaluated so the caller can show the whole checklist; the outcome is decided
//! in a fixed order (see `docs/policy.md`): hard rules reject outright, freezes, windows and
//! incident blocks can be passed through break-glass, and approvals come last.

use std::collections::BTreeSet;
use std::fmt;

use jiff::civil::Weekday;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::ids::{short_sha, RepoName};

use super::{ref_matches, DeployWindow, EnvironmentPolicy, Freeze, NotGoverned, Policy};

/// What is asked of the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRequest {
    pub environment: String,
    /// Fully qualified (`refs/tags/v1.2.3`) or a bare branch name (`main`).
    pub git_ref: String,
    pub sha: String,
    pub requester_login: String,
    pub kind: GateKind,
    /// Present when the requester invokes break-glass.
    pub break_glass_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    Deploy,
    Rollback,
}

/// What the store knows that the decision depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateFacts {
    /// Environments in which this sha has succeeded.
    pub succeeded_in: BTreeSet<String>,
    /// Ids of open critical incidents in the environment.
    pub open_critical_incidents: Vec<String>,
    /// The deployment holding the environment lock, when it is not the one being evaluated.
    pub lock_holder: Option<String>,
}

/// The rules, in the order they decide the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    UnknownEnvironment,
    /// The environment is defined, but its section's `repos` leave the repository out.
    NotGoverned,
    AllowedRef,
    Promotion,
    Lock,
    Freeze,
    DeployWindow,
    Incident,
    Approvals,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::UnknownEnvironment => "unknown_environment",
            Rule::NotGoverned => "not_governed",
            Rule::AllowedRef => "allowed_ref",
            Rule::Promotion => "promotion",
            Rule::Lock => "lock",
            Rule::Freeze => "freeze",
            Rule::DeployWindow => "deploy_window",
            Rule::Incident => "incident",
            Rule::Approvals => "approvals",
        }
    }

    /// Rules that break-glass can override.
    fn is_breakable(self) -> bool {
        matches!(self, Rule::Freeze | Rule::DeployWindow | Rule::Incident)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's verdict, for the checklist shown to approvers and written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub rule: Rule,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    Approve {
        checks: Vec<Check>,
    },
    Reject {
        rule: Rule,
        message: String,
        checks: Vec<Check>,
    },
    NeedsApproval {
        required: u32,
        break_glass: bool,
        checks: Vec<Check>,
    },
}

impl Decision {
    pub fn checks(&self) -> &[Check] {
        match self {
            Decision::Approve { checks }
            | Decision::Reject { checks, .. }
            | Decision::NeedsApproval { checks, .. } => checks,
        }
    }

    pub fn is_approved(&self) -> bool {
        matches!(self, Decision::Approve { .. })
    }

    pub fn is_rejected(&self) -> bool {
        matches!(self, Decision::Reject { .. })
    }
}

/// Like [`evaluate`], but looks the environment up first: an environment the policy does not
/// define is never approved.
pub fn evaluate_for(
    policy: &Policy,
    request: &GateRequest,
    facts: &GateFacts,
    now: Timestamp,
) -> Decision {
    match policy.environment(&request.environment) {
        Some(env) => evaluate(env, request, facts, now),
        None => {
            let message = format!(
                "environment {:?} is not defined in the policy; nothing deploys there",
                request.environment
            );
            Decision::Reject {
                rule: Rule::UnknownEnvironment,
                checks: vec![Check {
                    rule: Rule::UnknownEnvironment,
                    passed: false,
                    detail: message.clone(),
                }],
                message,
            }
        }
    }
}

/// Like [`evaluate`], for a request from `repo`: the rules are the scope's
/// ([`Policy::for_scope`]), and a repository no section governs is never approved.
pub fn evaluate_in_scope(
    policy: &Policy,
    repo: &RepoName,
    request: &GateRequest,
    facts: &GateFacts,
    now: Timestamp,
) -> Decision {
    match policy.for_scope_str(repo, &request.environment) {
        Ok(effective) => evaluate(&effective, request, facts, now),
        Err(why) => {
            let rule = match why {
                NotGoverned::UnknownEnvironment { .. } => Rule::UnknownEnvironment,
                NotGoverned::RepoNotListed { .. } => Rule::NotGoverned,
            };
            let message = why.to_string();
            Decision::Reject {
                rule,
                checks: vec![Check {
                    rule,
                    passed: false,
                    detail: message.clone(),
                }],
                message,
            }
        }
    }
}

/// Decides a gate request against one environment's policy at `now`.
pub fn evaluate(
    env: &EnvironmentPolicy,
    request: &GateRequest,
    facts: &GateFacts,
    now: Timestamp,
) -> Decision {
    let rollback = request.kind == GateKind::Rollback;
    let mut checks = Vec::new();
    let mut push = |rule, result: Result<String, String>| match result {
        Ok(detail) => checks.push(Check {
            rule,
            passed: true,
            detail,
        }),
        Err(detail) => checks.push(Check {
            rule,
            passed: false,
            detail,
        }),
    };
    // A rollback returns the environment to a sha shipgate itself picked (the last known good
    // one, or the policy's rollback workflow), so only the lock and approvals apply to it:
    // rolling back must stay possible during freezes, outside windows and during incidents.
    let skipped = || Ok("not checked for rollbacks".to_owned());
    push(
        Rule::AllowedRef,
        if rollback {
            skipped()
        } else {
            check_ref(env, request)
        },
    );
    push(
        Rule::Promotion,
        if rollback {
            skipped()
        } else {
            check_promotion(env, request, facts)
        },
    );
    push(Rule::Lock, check_lock(env, facts));
    push(
        Rule::Freeze,
        if rollback {
            skipped()
        } else {
            check_freezes(env, now)
        },
    );
    push(
        Rule::DeployWindow,
        if rollback {
            skipped()
        } else {
            check_windows(env, now)
        },
    );
    push(
        Rule::Incident,
        if rollback {
            skipped()
        } else {
            check_incidents(env, facts)
        },
    );

    let failed = checks.iter().find(|c| !c.passed).cloned();
    let mut break_glass = false;
    if let Some(first) = failed {
        if !first.rule.is_breakable() {
            return reject(first.rule, first.detail, checks, None);
        }
        let reason = request.break_glass_reason.as_deref().map(str::trim);
        let bg = &env.break_glass;
        match reason {
            Some(reason) if bg.allowed && !(bg.require_reason && reason.is_empty()) => {
                break_glass = true;
            }
            Some(_) if bg.allowed => {
                let message = format!("{}; break-glass needs a reason", first.detail);
                return reject(first.rule, message, checks, None);
            }
            _ => {
                let hint = bg.allowed.then(|| break_glass_hint(env));
                return reject(first.rule, first.detail, checks, hint);
            }
        }
    }

    let required = if break_glass {
        env.approvals_required + env.break_glass.extra_approvals
    } else {
        env.approvals_required
    };
    let detail = approvals_detail(env, required, break_glass);
    if required == 0 {
        checks.push(Check {
            rule: Rule::Approvals,
            passed: true,
            detail,
        });
        return Decision::Approve { checks };
    }
    checks.push(Check {
        rule: Rule::Approvals,
        passed: false,
        detail,
    });
    Decision::NeedsApproval {
        required,
        break_glass,
        checks,
    }
}

fn reject(rule: Rule, message: String, checks: Vec<Check>, hint: Option<String>) -> Decision {
    let message = match hint {
        Some(hint) => format!("{message}; {hint}"),
        None => message,
    };
    Decision::Reject {
        rule,
        message,
        checks,
    }
}

fn break_glass_hint(env: &EnvironmentPolicy) -> String {
    let extra = env.break_glass.extra_approvals;
    let reason = if env.break_glass.require_reason {
        "with a reason "
    } else {
        ""
    };
    format!(
        "break-glass is allowed in {}: request it {reason}(needs {extra} extra approval{})",
        env.name,
        if extra == 1 { "" } else { "s" }
    )
}

fn approvals_detail(env: &EnvironmentPolicy, required: u32, break_glass: bool) -> String {
    if required == 0 {
        return "no approval required".to_owned();
    }
    let mut detail = format!(
        "needs {required} approval{} from {}",
        if required == 1 { "" } else { "s" },
        env.approvers.join(", ")
    );
    if break_glass {
        detail.push_str(&format!(
            " ({} + {} for break-glass)",
            env.approvals_required, env.break_glass.extra_approvals
        ));
    }
    if env.prevent_self_approval {
        detail.push_str("; the requester cannot approve");
    }
    detail
}

fn check_ref(env: &EnvironmentPolicy, request: &GateRequest) -> Result<String, String> {
    let Some(patterns) = &env.allowed_refs else {
        return Ok("any ref is allowed (allowed_refs not set)".to_owned());
    };
    match patterns.iter().find(|p| ref_matches(p, &request.git_ref)) {
        Some(pattern) => Ok(format!("ref {} matches {pattern:?}", request.git_ref)),
        None => Err(format!(
            "ref {} is not allowed in {} (allowed_refs: {})",
            request.git_ref,
            env.name,
            patterns.join(", ")
        )),
    }
}

fn check_promotion(
    env: &EnvironmentPolicy,
    request: &GateRequest,
    facts: &GateFacts,
) -> Result<String, String> {
    let sha = short_sha(&request.sha);
    if env.promotion_from.is_empty() {
        return Ok("no promotion required".to_owned());
    }
    let missing: Vec<&str> = env
        .promotion_from
        .iter()
        .filter(|e| !facts.succeeded_in.contains(*e))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(format!(
            "sha {sha} has succeeded in {}",
            env.promotion_from.join(", ")
        ))
    } else {
        Err(format!(
            "sha {sha} has not succeeded in {} (required by promotion_from)",
            missing.join(", ")
        ))
    }
}

fn check_lock(env: &EnvironmentPolicy, facts: &GateFacts) -> Result<String, String> {
    match &facts.lock_holder {
        None => Ok(format!("{} is not locked", env.name)),
        Some(holder) => Err(format!(
            "{} is locked by deployment {holder}; wait for it to finish",
            env.name
        )),
    }
}

fn check_freezes(env: &EnvironmentPolicy, now: Timestamp) -> Result<String, String> {
    match env.freezes.iter().find(|f| freeze_active(f, now)) {
        Some(freeze) => Err(format!(
            "freeze {:?} {}..{} ({}) is in effect",
            freeze.reason, freeze.from, freeze.to, freeze.timezone_name
        )),
        None if env.freezes.is_empty() => Ok("no freezes".to_owned()),
        None => Ok("no freeze in effect".to_owned()),
    }
}

fn freeze_active(freeze: &Freeze, now: Timestamp) -> bool {
    let today = now.to_zoned(freeze.timezone.clone()).date();
    freeze.from <= today && today <= freeze.to
}

fn check_windows(env: &EnvironmentPolicy, now: Timestamp) -> Result<String, String> {
    if env.windows.is_empty() {
        return Ok("no deploy windows: deploys allowed at any time".to_owned());
    }
    if let Some(window) = env.windows.iter().find(|w| window_open(w, now)) {
        return Ok(format!("inside deploy window {}", describe_window(window)));
    }
    let described: Vec<String> = env
        .windows
        .iter()
        .map(|w| {
            let local = now.to_zoned(w.timezone.clone());
            format!(
                "{} (now {} {:02}:{:02})",
                describe_window(w),
                day_name(local.weekday()),
                local.hour(),
                local.minute()
            )
        })
        .collect();
    Err(format!(
        "outside deploy window: {} deploys {}",
        env.name,
        described.join(" or ")
    ))
}

fn window_open(window: &DeployWindow, now: Timestamp) -> bool {
    let local = now.to_zoned(window.timezone.clone());
    let minute =
        u16::try_from(local.hour()).unwrap_or(0) * 60 + u16::try_from(local.minute()).unwrap_or(0);
    window.days.contains(&local.weekday())
        && window.start.minutes() <= minute
        && minute < window.end.minutes()
}

fn describe_window(window: &DeployWindow) -> String {
    format!(
        "{} {}-{} {}",
        describe_days(&window.days),
        window.start,
        window.end,
        window.timezone_name
    )
}

/// `mon-thu`, `mon,wed,fri`, `mon-wed,sat`: runs of consecutive days are collapsed.
fn describe_days(days: &[Weekday]) -> String {
    let mut offsets: Vec<i8> = days.iter().map(|d| d.to_monday_zero_offset()).collect();
    offsets.sort_unstable();
    offsets.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < offsets.len() {
        let start = offsets[i];
        let mut end = start;
        while i + 1 < offsets.len() && offsets[i + 1] == end + 1 {
            i += 1;
            end = offsets[i];
        }
        let name = |o: i8| day_name(Weekday::from_monday_zero_offset(o).unwrap_or(Weekday::Monday));
        parts.push(match end - start {
            0 => name(start).to_owned(),
            1 => format!("{},{}", name(start), name(end)),
            _ => format!("{}-{}", name(start), name(end)),
        });
        i += 1;
    }
    parts.join(",")
}

fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

fn check_incidents(env: &EnvironmentPolicy, facts: &GateFacts) -> Result<String, String> {
    let open = &facts.open_critical_incidents;
    if !env.block_on_critical_incident {
        return Ok("critical incidents do not block deploys here".to_owned());
    }
    match open.as_slice() {
        [] => Ok("no open critical incident".to_owned()),
        [one] => Err(format!("critical incident {one} is open in {}", env.name)),
        many => Err(format!(
            "{} critical incidents are open in {} ({})",
            many.len(),
            env.name,
            many.join(", ")
        )),
    }
}
