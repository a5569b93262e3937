//! `shipgate policy check`, `shipgate policy example` and `shipgate policy explain`: validate a
//! policy file before it is deployed, print the commented example to start one from, and show
//! the rules one (repository, environment) gets and where each came from.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use shipgate::domain::ids::RepoName;
use shipgate::domain::policy::{
    EffectivePolicy, EnvironmentPolicy, Policy, RollbackMethod, Source, EXAMPLE_POLICY,
};
use shipgate_cli::error::CliError;

/// Reads the policy text and the label its errors carry; `None` or `-` is stdin.
fn read_source(file: Option<&Path>) -> Result<(String, String), CliError> {
    let stdin = match file {
        None => true,
        Some(p) => p.as_os_str() == "-",
    };
    if stdin {
        if file.is_none() && std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "give a policy FILE, or `-` to read it from stdin".into(),
            ));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| CliError::Read {
                path: "<stdin>".into(),
                source,
            })?;
        return Ok(("<stdin>".into(), text));
    }
    let path = file.unwrap_or(Path::new("-"));
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((path.display().to_string(), text))
}

/// Validates a policy: prints a summary (exit 0) or every problem, one per line (exit 1).
pub fn check(file: Option<&Path>) -> Result<(), CliError> {
    let (label, text) = read_source(file)?;
    check_text(label, &text)
}

/// Validates policy `text` read from `label` (a file, stdin, or a stack's parameter).
pub fn check_text(label: String, text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match Policy::parse(&label, text) {
        Ok(policy) => {
            write!(out, "{}", summary(&label, &policy)).map_err(CliError::Output)?;
            Ok(())
        }
        Err(errors) => {
            // Findings are the command's output (like a linter's), so they go to stdout.
            writeln!(out, "{errors}").map_err(CliError::Output)?;
            Err(CliError::PolicyCheckFailed {
                file: label,
                count: errors.errors().len(),
            })
        }
    }
}

/// Prints the effective rules for `repo` in `environment` (exit 0), or why no section governs
/// them (exit 1).
pub fn explain(file: &Path, repo: &str, environment: &str, json: bool) -> Result<(), CliError> {
    let repo_name = RepoName::parse(repo)
        .map_err(|e| CliError::Usage(format!("{repo:?} is not a repository (owner/name): {e}")))?;
    let (label, text) = read_source(Some(file))?;
    let policy = Policy::parse(&label, &text).map_err(CliError::Policy)?;
    let mut out = std::io::stdout().lock();
    match policy.for_scope_str(&repo_name, environment) {
        Ok(effective) => {
            let text = if json {
                format!("{}\n", explain_json(environment, &effective))
            } else {
                explain_text(environment, &effective)
            };
            out.write_all(text.as_bytes()).map_err(CliError::Output)
        }
        Err(why) => {
            let text = if json {
                serde_json::json!({
                    "repo": repo_name.as_str(),
                    "environment": environment,
                    "governed": false,
                    "reason": why.to_string(),
                })
                .to_string()
            } else {
                why.to_string()
            };
            writeln!(out, "{text}").map_err(CliError::Output)?;
            Err(CliError::NotGoverned {
                repo: repo_name.to_string(),
                environment: environment.to_owned(),
            })
        }
    }
}

/// The text form of `policy explain`: a heading, then one `key = value  # source` line per key.
pub fn explain_text(environment: &str, effective: &EffectivePolicy) -> String {
    let governs = match &effective.repos {
        Some(repos) => format!("repos = [{}]", quoted(repos)),
        None => "every repository".to_owned(),
    };
    let mut s = format!(
        "{} in {environment}: [environments.{environment}] at {} ({governs})\n",
        effective.repo, effective.section
    );
    let lines: Vec<(String, String)> = effective
        .sources
        .iter()
        .map(|(key, source)| {
            (
                format!("{key} = {}", value_of(effective, key)),
                source.to_string(),
            )
        })
        .collect();
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (line, source) in lines {
        s.push_str(&format!("  {line:<width$}  # {source}\n"));
    }
    s
}

/// The JSON form of `policy explain`.
pub fn explain_json(environment: &str, effective: &EffectivePolicy) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = effective
        .sources
        .iter()
        .map(|(key, source)| {
            let (kind, at, repos) = match source {
                Source::Default => ("default", None, None),
                Source::Section(at) => ("section", Some(at.to_string()), None),
                Source::Override { key, repos, .. } => {
                    ("override", Some(key.to_string()), Some(repos.clone()))
                }
            };
            serde_json::json!({
                "key": key,
                "value": value_of(effective, key),
                "source": kind,
                "at": at,
                "override_repos": repos,
            })
        })
        .collect();
    serde_json::json!({
        "repo": effective.repo.as_str(),
        "environment": environment,
        "governed": true,
        "section": effective.section.to_string(),
        "repos": effective.repos,
        "rules": rules,
    })
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One key's effective value, written the way the policy file writes it.
fn value_of(env: &EnvironmentPolicy, key: &str) -> String {
    let severities = |list: &[shipgate::domain::policy::Severity]| {
        let names: Vec<String> = list.iter().map(|s| s.as_str().to_owned()).collect();
        format!("[{}]", quoted(&names))
    };
    match key {
        "allowed_refs" => match &env.allowed_refs {
            Some(refs) => format!("[{}]", quoted(refs)),
            None => "(any ref)".to_owned(),
        },
        "promotion_from" => format!("[{}]", quoted(&env.promotion_from)),
        "approvals_required" => env.approvals_required.to_string(),
        "approvers" => format!("[{}]", quoted(&env.approvers)),
        "rollback_requesters" => format!("[{}]", quoted(&env.rollback_requesters)),
        "prevent_self_approval" => env.prevent_self_approval.to_string(),
        "require_reject_reason" => env.require_reject_reason.to_string(),
        "approval_ttl" => format!("{:?}", human(env.approval_ttl)),
        "verification_window" => format!("{:?}", human(env.verification_window)),
        "queue_wait" => format!("{:?}", human(env.queue_wait)),
        "deploy_timeout" => format!("{:?}", human(env.deploy_timeout)),
        "block_on_critical_incident" => env.block_on_critical_incident.to_string(),
        "rollback_on" => severities(&env.rollback_on),
        "rollback_alerts" => format!("{:?}", env.rollback_alerts.as_str()),
        "production" => match env.production {
            Some(b) => b.to_string(),
            None => "(production unless another environment promotes from it)".to_owned(),
        },
        "rollback" => match &env.rollback {
            RollbackMethod::Redeploy => "{ method = \"redeploy\" }".to_owned(),
            RollbackMethod::Workflow { workflow, git_ref } => match git_ref {
                Some(r) => {
                    format!("{{ method = \"workflow\", workflow = {workflow:?}, ref = {r:?} }}")
                }
                None => format!("{{ method = \"workflow\", workflow = {workflow:?} }}"),
            },
        },
        "pre_deploy_backups" => format!("[{}]", quoted(&env.pre_deploy_backups)),
        "slack_channel" => match &env.slack_channel {
            Some(c) => format!("{c:?}"),
            None => "(none)".to_owned(),
        },
        "rollback_drill" => env.rollback_drill.to_string(),
        "windows" => {
            let windows: Vec<String> = env
                .windows
                .iter()
                .map(|w| {
                    let days: Vec<String> = w
                        .days
                        .iter()
                        .map(|d| {
                            format!("{d:?}")
                                .chars()
                                .take(3)
                                .collect::<String>()
                                .to_lowercase()
                        })
                        .collect();
                    format!(
                        "{} {}-{} {}",
                        days.join(","),
                        w.start,
                        w.end,
                        w.timezone_name
                    )
                })
                .collect();
            format!("[{}]", quoted(&windows))
        }
        "freezes" => {
            let freezes: Vec<String> = env
                .freezes
                .iter()
                .map(|f| format!("{} to {} {}: {}", f.from, f.to, f.timezone_name, f.reason))
                .collect();
            format!("[{}]", quoted(&freezes))
        }
        "break_glass" => format!(
            "{{ allowed = {}, extra_approvals = {}, require_reason = {} }}",
            env.break_glass.allowed,
            env.break_glass.extra_approvals,
            env.break_glass.require_reason
        ),
        _ => String::new(),
    }
}

/// Prints the example policy.
pub fn example() -> Result<(), CliError> {
    std::io::stdout()
        .lock()
        .write_all(EXAMPLE_POLICY.as_bytes())
        .map_err(CliError::Output)
}

/// The human summary `policy check` prints for a valid policy.
pub fn summary(label: &str, policy: &Policy) -> String {
    let envs: Vec<&EnvironmentPolicy> = policy.environments().collect();
    let mut s = format!(
        "{label}: ok, {} environment{}\n",
        envs.len(),
        if envs.len() == 1 { "" } else { "s" }
    );
    for env in envs {
        let mut line = describe(env);
        if let Some(repos) = policy.section_repos(&env.name) {
            line.push_str(&format!("; repos {}", repos.join(", ")));
        }
        let overrides = policy.override_repos(&env.name);
        if !overrides.is_empty() {
            let each: Vec<String> = overrides.iter().map(|r| r.join(", ")).collect();
            line.push_str(&format!(
                "; {} for {}",
                plural(overrides.len(), "override"),
                each.join("; ")
            ));
        }
        s.push_str(&format!("  {}: {line}\n", env.name));
    }
    s
}

fn describe(env: &EnvironmentPolicy) -> String {
    let mut parts = Vec::new();
    parts.push(match &env.allowed_refs {
        Some(refs) => format!("refs {}", refs.join(", ")),
        None => "any ref".to_string(),
    });
    if !env.promotion_from.is_empty() {
        parts.push(format!(
            "after success in {}",
            env.promotion_from.join(", ")
        ));
    }
    if env.approvals_required == 0 {
        parts.push("no approval".to_string());
    } else {
        parts.push(format!(
            "{} of {} approvers (ttl {})",
            env.approvals_required,
            env.approvers.len(),
            human(env.approval_ttl)
        ));
    }
    if !env.windows.is_empty() {
        parts.push(plural(env.windows.len(), "deploy window"));
    }
    if !env.freezes.is_empty() {
        parts.push(plural(env.freezes.len(), "freeze"));
    }
    if env.break_glass.allowed {
        parts.push("break-glass allowed".to_string());
    }
    parts.push(format!("verify {}", human(env.verification_window)));
    if let Some(analysis) = &env.analysis {
        let names: Vec<&str> = analysis.checks.iter().map(|c| c.name.as_str()).collect();
        parts.push(format!(
            "analysis: {} ({})",
            plural(names.len(), "check"),
            names.join(", ")
        ));
    }
    parts.push(match &env.rollback {
        RollbackMethod::Redeploy => "rollback by redeploy".to_string(),
        RollbackMethod::Workflow { workflow, .. } => format!("rollback by workflow {workflow}"),
    });
    parts.join("; ")
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `1h30m`-style text, the policy's own duration format.
pub fn human(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut s = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            s.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_the_policy_format() {
        assert_eq!(human(Duration::from_secs(0)), "0s");
        assert_eq!(human(Duration::from_secs(15 * 60)), "15m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(86_400 + 1)), "1d1s");
    }

    #[test]
    fn example_summary_names_every_environment_and_its_approvals() {
        let policy = Policy::example().expect("example policy is valid");
        let text = summary("example.toml", &policy);
        assert!(
            text.starts_with("example.toml: ok, 2 environments\n"),
            "{text}"
        );
        assert!(
            text.contains("  production: refs main, refs/tags/v*; after success in staging; 2 of 3 approvers (ttl 4h)"),
            "{text}"
        );
        assert!(
            text.contains("  staging: refs main, refs/tags/v*; no approval"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_names_a_sections_repos_and_its_overrides() {
        let text = "[environments.production]\nrepos = [\"acme/*\"]\n\n[[environments.production.overrides]]\nrepos = [\"acme/payments\", \"acme/billing\"]\nverification_window = \"1h\"\n";
        let policy = Policy::parse("p.toml", text).expect("valid policy");
        assert!(
            summary("p.toml", &policy)
                .ends_with("; repos acme/*; 1 override for acme/payments, acme/billing\n"),
            "{}",
            summary("p.toml", &policy)
        );
    }

    #[test]
    fn explain_shows_the_example_override_for_payments_and_the_section_elsewhere() {
        let policy = Policy::example().expect("example policy is valid");
        let explain = |repo: &str| {
            let repo = RepoName::parse(repo).expect("repository name");
            let effective = policy
                .for_scope_str(&repo, "production")
                .expect("production governs every repository");
            explain_text("production", &effective)
        };
        let payments = explain("acme/payments");
        assert!(
            payments.starts_with(
                "acme/payments in production: [environments.production] at policy.example.toml:"
            ),
            "{payments}"
        );
        assert!(payments.contains("(every repository)"), "{payments}");
        let approvals = payments
            .lines()
            .find(|l| l.trim_start().starts_with("approvals_required = "))
            .unwrap_or_default();
        assert!(approvals.contains("approvals_required = 3"), "{payments}");
        assert!(
            approvals.ends_with("(override for acme/payments)"),
            "{payments}"
        );
        let api = explain("acme/api");
        assert!(api.contains("approvals_required = 2"), "{api}");
        assert!(!api.contains("override"), "{api}");
    }
}
