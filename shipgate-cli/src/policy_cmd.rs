//! `shipgate policy check` and `shipgate policy example`: validate a policy file before it is
//! deployed, and print the commented example to start one from.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use shipgate::domain::policy::{EnvironmentPolicy, Policy, RollbackMethod, EXAMPLE_POLICY};
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
    let mut out = std::io::stdout().lock();
    match Policy::parse(&label, &text) {
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
        s.push_str(&format!("  {}: {}\n", env.name, describe(env)));
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
}
