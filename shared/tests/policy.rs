//! The policy file: parsing, error positions, ref globs, durations, the gate decision, and the
//! scopes of many repositories (`repos`, overrides, the effective policy).

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use shipgate::domain::ids::{EnvName, RepoName};
use shipgate::domain::policy::{
    evaluate, evaluate_for, evaluate_in_scope, parse_duration, ref_matches, repo_matches, Decision,
    GateFacts, GateKind, GateRequest, NotGoverned, Policy, PolicyError, PolicyLoadError,
    RollbackMethod, Rule, Severity, Source, EXAMPLE_POLICY,
};

const SHA: &str = "abc1234def5678abc1234def5678abc1234def56";

fn parse(text: &str) -> Policy {
    match Policy::parse("policy.toml", text) {
        Ok(policy) => policy,
        Err(errors) => panic!("policy should parse, got:\n{errors}"),
    }
}

fn errors(text: &str) -> Vec<PolicyError> {
    match Policy::parse("policy.toml", text) {
        Ok(_) => panic!("policy should not parse:\n{text}"),
        Err(errors) => errors.0,
    }
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("test timestamp")
}

fn request(env: &str, git_ref: &str) -> GateRequest {
    GateRequest {
        environment: env.to_owned(),
        git_ref: git_ref.to_owned(),
        sha: SHA.to_owned(),
        requester_login: "octocat".to_owned(),
        kind: GateKind::Deploy,
        break_glass_reason: None,
    }
}

fn promoted() -> GateFacts {
    GateFacts {
        succeeded_in: BTreeSet::from(["staging".to_owned()]),
        ..GateFacts::default()
    }
}

fn reject_of(decision: &Decision) -> (Rule, &str) {
    match decision {
        Decision::Reject { rule, message, .. } => (*rule, message.as_str()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Parsing

#[test]
fn example_policy_parses_and_exposes_its_settings() {
    let policy = Policy::parse("policy.example.toml", EXAMPLE_POLICY).expect("example parses");
    let staging = policy.environment("staging").expect("staging");
    let production = policy.environment("production").expect("production");
    assert_eq!(staging.approvals_required, 0);
    assert!(staging.rollback_drill);
    assert_eq!(production.approvals_required, 2);
    assert_eq!(production.approvers.len(), 3);
    assert!(production.prevent_self_approval);
    assert_eq!(production.promotion_from, vec!["staging".to_owned()]);
    assert!(production.break_glass.allowed);
    assert_eq!(production.approval_ttl, Duration::from_secs(4 * 3600));
    assert_eq!(
        production.rollback,
        RollbackMethod::Workflow {
            workflow: "rollback.yml".to_owned(),
            git_ref: Some("main".to_owned())
        }
    );
    assert_eq!(policy.slack_user_login("U024BE7LH"), Some("octocat"));
    assert_eq!(policy.github_login_slack_id("OctoCat"), Some("U024BE7LH"));
    assert_eq!(policy.github_login_slack_id("nobody"), None);
    assert_eq!(policy.canonical_severity("PAGE"), Some(Severity::Critical));
    assert_eq!(policy.canonical_severity("p1"), Some(Severity::Critical));
    assert_eq!(policy.canonical_severity("error"), Some(Severity::Warning));
    assert_eq!(policy.canonical_severity("whatever"), None);
    assert_eq!(policy.environment_labels(), ["env", "environment"]);
    assert_eq!(policy.service_labels(), ["service", "app"]);
    assert_eq!(policy.severity_label(), "severity");
    assert_eq!(
        policy
            .notifications()
            .pagerduty_routing_key_var(Severity::Critical),
        Some("SHIPGATE_PAGERDUTY_ROUTING_KEY_CRITICAL")
    );
    assert_eq!(
        policy
            .notifications()
            .pagerduty_routing_key_var(Severity::Info),
        None
    );
    assert_eq!(policy.backups().tables, vec!["shipgate".to_owned()]);
    assert_eq!(policy.probes().len(), 2);
    assert_eq!(policy.probes()[1].expect_status, 200);
}

#[test]
fn example_policy_lets_the_demo_deploy_to_production_at_any_hour() {
    let policy = Policy::example().expect("example parses");
    // Every hour of a week, including both DST switches of 2026 in Berlin.
    let mut now = at("2026-03-23T00:30:00Z");
    for _ in 0..(24 * 7) {
        for instant in [now, now + jiff::SignedDuration::from_hours(24 * 7 * 31)] {
            let decision = evaluate_for(
                &policy,
                &request("production", "main"),
                &promoted(),
                instant,
            );
            assert!(
                matches!(
                    decision,
                    Decision::NeedsApproval {
                        required: 2,
                        break_glass: false,
                        ..
                    }
                ),
                "{instant}: {decision:?}"
            );
        }
        now += jiff::SignedDuration::from_hours(1);
    }
}

#[test]
fn minimal_policy_gets_documented_defaults() {
    let policy = parse("[environments.dev]\n");
    let dev = policy.environment("dev").expect("dev");
    assert_eq!(dev.allowed_refs, None);
    assert_eq!(dev.approvals_required, 0);
    assert!(dev.prevent_self_approval);
    assert!(!dev.require_reject_reason);
    assert_eq!(dev.approval_ttl, Duration::from_secs(4 * 3600));
    assert_eq!(dev.verification_window, Duration::from_secs(15 * 60));
    assert_eq!(dev.queue_wait, Duration::from_secs(3600));
    assert_eq!(dev.deploy_timeout, Duration::from_secs(3600));
    assert!(dev.block_on_critical_incident);
    assert_eq!(dev.rollback_on, vec![Severity::Critical]);
    assert_eq!(dev.rollback, RollbackMethod::Redeploy);
    assert!(!dev.break_glass.allowed);
    assert_eq!(dev.break_glass.extra_approvals, 1);
    assert!(dev.break_glass.require_reason);
    assert_eq!(policy.backups().schedule, "rate(1 day)");
    assert_eq!(policy.backups().retention_days, 90);
    assert_eq!(policy.backups().keep_daily, 7);
    assert_eq!(policy.canonical_severity("warn"), Some(Severity::Warning));
}

#[test]
fn backups_always_include_the_shipgate_table() {
    let policy = parse("[backups]\ntables = [\"orders\"]\n[environments.dev]\n");
    assert_eq!(
        policy.backups().tables,
        vec!["shipgate".to_owned(), "orders".to_owned()]
    );
}

#[test]
fn severity_serialises_lowercase() {
    assert_eq!(
        serde_json::to_string(&Severity::Critical).expect("json"),
        "\"critical\""
    );
    let parsed: Severity = serde_json::from_str("\"warning\"").expect("json");
    assert_eq!(parsed, Severity::Warning);
}

/// Case name, policy text, expected (line, column), field, and a part of the message.
type ErrorCase = (
    &'static str,
    &'static str,
    (usize, usize),
    &'static str,
    &'static str,
);

/// One invalid policy per row: the first error's line, column and field, and a message part.
#[test]
fn each_validation_error_names_line_column_and_field() {
    let cases: &[ErrorCase] = &[
        (
            "unknown top-level key",
            "colour = 1\n[environments.dev]\n",
            (1, 1),
            "colour",
            "unknown key",
        ),
        (
            "unknown environment key",
            "[environments.dev]\nallowed_ref = [\"main\"]\n",
            (2, 1),
            "environments.dev.allowed_ref",
            "unknown key; expected one of: allowed_refs,",
        ),
        (
            "a queue wait GitHub would not honour",
            "[environments.dev]\nqueue_wait = \"31d\"\n",
            (2, 14),
            "environments.dev.queue_wait",
            "must be at most 30d: GitHub stops waiting for a protection rule's answer after 30 days",
        ),
        (
            "wrong type",
            "[environments.dev]\napprovals_required = \"two\"\n",
            (2, 22),
            "environments.dev.approvals_required",
            "expected an integer, found a string",
        ),
        (
            "more approvals than approvers",
            "[identities]\nU024BE7LH = \"octocat\"\n\n[environments.production]\napprovers = [\"U024BE7LH\"]\napprovals_required = 2\n",
            (6, 22),
            "environments.production.approvals_required",
            "needs 2 approvals but only 1 approver is listed",
        ),
        (
            "approver that is not a Slack id",
            "[environments.dev]\napprovers = [\"U024BE7LH\", \"octocat\"]\nprevent_self_approval = false\n",
            (2, 27),
            "environments.dev.approvers[1]",
            "does not look like a Slack user id",
        ),
        (
            "approver without identity while self-approval is prevented",
            "[environments.dev]\napprovers = [\"U024BE7LH\"]\napprovals_required = 1\n",
            (2, 14),
            "environments.dev.approvers[0]",
            "approver U024BE7LH has no GitHub login in [identities]",
        ),
        (
            "unknown promotion source",
            "[environments.production]\npromotion_from = [\"stagin\"]\n",
            (2, 19),
            "environments.production.promotion_from[0]",
            "unknown environment \"stagin\"",
        ),
        (
            "promotion cycle",
            "[environments.a]\npromotion_from = [\"b\"]\n[environments.b]\npromotion_from = [\"a\"]\n",
            (2, 19),
            "environments.a.promotion_from[0]",
            "promotion cycle: a <- b <- a",
        ),
        (
            "self promotion",
            "[environments.a]\npromotion_from = [\"a\"]\n",
            (2, 19),
            "environments.a.promotion_from[0]",
            "cannot promote from itself",
        ),
        (
            "bad duration",
            "[environments.dev]\napproval_ttl = \"4 hours\"\n",
            (2, 16),
            "environments.dev.approval_ttl",
            "invalid duration \"4 hours\"",
        ),
        (
            "bad glob",
            "[environments.dev]\nallowed_refs = [\"main\", \"rel**\"]\n",
            (2, 25),
            "environments.dev.allowed_refs[1]",
            "`**` must be a whole path segment",
        ),
        (
            "empty allowed_refs",
            "[environments.dev]\nallowed_refs = []\n",
            (2, 16),
            "environments.dev.allowed_refs",
            "allows no ref at all",
        ),
        (
            "bad time zone",
            "[[environments.dev.windows]]\ndays = [\"mon\"]\nstart = \"09:00\"\nend = \"17:00\"\ntimezone = \"Europe/Berlim\"\n",
            (5, 12),
            "environments.dev.windows[0].timezone",
            "unknown time zone \"Europe/Berlim\"",
        ),
        (
            "window ending before it starts",
            "[[environments.dev.windows]]\ndays = [\"mon\"]\nstart = \"22:00\"\nend = \"06:00\"\n",
            (4, 7),
            "environments.dev.windows[0].end",
            "write an overnight window as two windows",
        ),
        (
            "unknown weekday",
            "[[environments.dev.windows]]\ndays = [\"mon\", \"funday\"]\nstart = \"09:00\"\nend = \"17:00\"\n",
            (2, 16),
            "environments.dev.windows[0].days[1]",
            "unknown weekday \"funday\"",
        ),
        (
            "invalid time of day",
            "[[environments.dev.windows]]\ndays = [\"mon\"]\nstart = \"9am\"\nend = \"17:00\"\n",
            (3, 9),
            "environments.dev.windows[0].start",
            "invalid time \"9am\"",
        ),
        (
            "missing window key",
            "[[environments.dev.windows]]\ndays = [\"mon\"]\nend = \"17:00\"\n",
            (1, 1),
            "environments.dev.windows[0].start",
            "is required",
        ),
        (
            "freeze ending before it starts",
            "[[environments.dev.freezes]]\nfrom = \"2027-01-04\"\nto = 2026-12-21\nreason = \"x\"\n",
            (3, 6),
            "environments.dev.freezes[0].to",
            "ends on 2026-12-21, before it starts on 2027-01-04",
        ),
        (
            "non-canonical rollback severity",
            "[environments.dev]\nrollback_on = [\"critical\", \"page\"]\n",
            (2, 28),
            "environments.dev.rollback_on[1]",
            "unknown severity \"page\"",
        ),
        (
            "workflow rollback without workflow",
            "[environments.dev]\nrollback = { method = \"workflow\", ref = \"main\" }\n",
            (2, 12),
            "environments.dev.rollback.workflow",
            "needs the workflow file",
        ),
        (
            "unknown rollback method",
            "[environments.dev]\nrollback = { method = \"revert\" }\n",
            (2, 23),
            "environments.dev.rollback.method",
            "unknown rollback method \"revert\"",
        ),
        (
            "duplicate probe names",
            "[environments.dev]\n[[probes]]\nname = \"api\"\nurl = \"https://a.example/h\"\nenvironment = \"dev\"\n[[probes]]\nname = \"api\"\nurl = \"https://b.example/h\"\nenvironment = \"dev\"\n",
            (7, 8),
            "probes[1].name",
            "duplicate probe name \"api\"",
        ),
        (
            "probe for an unknown environment",
            "[environments.dev]\n[[probes]]\nname = \"api\"\nurl = \"https://a.example/h\"\nenvironment = \"prod\"\n",
            (5, 15),
            "probes[0].environment",
            "unknown environment \"prod\"",
        ),
        (
            "no environment at all",
            "[backups]\nretention_days = 30\n",
            (1, 1),
            "environments",
            "at least one [environments.<name>] table is required",
        ),
        (
            "inline PagerDuty key",
            "[notifications]\npagerduty_routing_keys = { critical = \"R0123456789abcdef0123456789abcd\" }\n[environments.dev]\n",
            (2, 39),
            "notifications.pagerduty_routing_keys.critical",
            "routing keys are secrets",
        ),
        (
            "PagerDuty key from a variable outside the prefix",
            "[notifications]\npagerduty_routing_keys = { critical = \"env:SHIPGATE_SLACK_BOT_TOKEN\" }\n[environments.dev]\n",
            (2, 39),
            "notifications.pagerduty_routing_keys.critical",
            "a routing key variable must be named SHIPGATE_PAGERDUTY_ROUTING_KEY_<SUFFIX> (e.g. \"env:SHIPGATE_PAGERDUTY_ROUTING_KEY_CRITICAL\"), so the policy cannot name another secret",
        ),
        (
            "PagerDuty key from the bare prefix",
            "[notifications]\npagerduty_routing_keys = { critical = \"env:SHIPGATE_PAGERDUTY_ROUTING_KEY_\" }\n[environments.dev]\n",
            (2, 39),
            "notifications.pagerduty_routing_keys.critical",
            "a routing key variable must be named SHIPGATE_PAGERDUTY_ROUTING_KEY_<SUFFIX>",
        ),
        (
            "break-glass needing more approvers than listed",
            "[identities]\nU024BE7LH = \"octocat\"\n[environments.prod]\napprovers = [\"U024BE7LH\"]\napprovals_required = 1\nbreak_glass = { allowed = true, extra_approvals = 1 }\n",
            (6, 51),
            "environments.prod.break_glass.extra_approvals",
            "break-glass needs 2 approvals (1 + 1 extra) but only 1 approver is listed",
        ),
        (
            "rollback drill on the last promotion stage",
            "[environments.staging]\n[environments.production]\npromotion_from = [\"staging\"]\nrollback_drill = true\n",
            (4, 18),
            "environments.production.rollback_drill",
            "rollback drills are for staging-like environments",
        ),
        (
            "pre-deploy backup of a table that is not backed up",
            "[environments.dev]\npre_deploy_backups = [\"orders\"]\n",
            (2, 23),
            "environments.dev.pre_deploy_backups[0]",
            "not listed in backups.tables",
        ),
        (
            "bad backup schedule",
            "[backups]\nschedule = \"daily\"\n[environments.dev]\n",
            (2, 12),
            "backups.schedule",
            "invalid schedule \"daily\"",
        ),
        (
            "TOML syntax error",
            "[environments.dev]\napprovals_required = \n",
            (2, 22),
            "",
            "invalid string",
        ),
    ];
    for (name, text, (line, column), field, message) in cases {
        let errors = errors(text);
        let first = &errors[0];
        assert_eq!(
            (
                first.file.as_str(),
                first.line,
                first.column,
                first.field.as_str()
            ),
            ("policy.toml", *line, *column, *field),
            "{name}: {errors:?}"
        );
        assert!(
            first.message.contains(message),
            "{name}: {:?}",
            first.message
        );
    }
}

#[test]
fn inline_routing_key_is_never_echoed_in_the_error() {
    let secret = "R0123456789abcdef0123456789abcd";
    let text = format!(
        "[notifications]\npagerduty_routing_keys = {{ critical = \"{secret}\" }}\n[environments.dev]\n"
    );
    let rendered = Policy::parse("policy.toml", &text)
        .expect_err("inline key is rejected")
        .to_string();
    assert!(!rendered.contains(secret), "{rendered}");
}

#[test]
fn all_errors_are_collected_in_file_order() {
    let text = "\
bogus = true
[environments.production]
approvals_required = 3
approval_ttl = \"soon\"
promotion_from = [\"qa\"]

[[environments.production.windows]]
days = [\"someday\"]
start = \"09:00\"
end = \"17:00\"

[[probes]]
name = \"api\"
url = \"ftp://example.com\"
environment = \"production\"
";
    let errors = errors(text);
    let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        found,
        vec![
            (1, "bogus"),
            (3, "environments.production.approvals_required"),
            (4, "environments.production.approval_ttl"),
            (5, "environments.production.promotion_from[0]"),
            (8, "environments.production.windows[0].days[0]"),
            (14, "probes[0].url"),
        ]
    );
    let rendered = Policy::parse("policy.toml", text)
        .expect_err("invalid")
        .to_string();
    assert_eq!(rendered.lines().count(), 6);
    assert!(
        rendered.starts_with("policy.toml:1:1: bogus: unknown key"),
        "{rendered}"
    );
    assert!(rendered.contains(
        "policy.toml:3:22: environments.production.approvals_required: needs 3 approvals but only 0 approvers are listed"
    ), "{rendered}");
}

#[test]
fn load_labels_errors_with_the_path_and_reports_missing_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, "[environments.dev]\napprovals_required = -1\n").expect("write");
    match Policy::load(&path) {
        Err(PolicyLoadError::Invalid(errors)) => {
            assert_eq!(errors.0[0].file, path.display().to_string());
            assert_eq!((errors.0[0].line, errors.0[0].column), (2, 22));
        }
        other => panic!("expected invalid policy, got {other:?}"),
    }
    std::fs::write(&path, EXAMPLE_POLICY).expect("write");
    assert!(Policy::load(&path).is_ok());
    let missing = dir.path().join("nope.toml");
    assert!(matches!(
        Policy::load(&missing),
        Err(PolicyLoadError::Read { .. })
    ));
}

// ------------------------------------------------------------------------------------------
// Globs and durations

#[test]
fn ref_globs_match_like_the_documentation_says() {
    let cases = [
        ("main", "main", true),
        ("main", "refs/heads/main", true),
        ("main", "refs/tags/main", false),
        ("main", "mainline", false),
        ("release/*", "release/1.2", true),
        ("release/*", "refs/heads/release/1.2", true),
        ("release/*", "release/1/2", false),
        ("release/**", "release/1/2", true),
        ("release/**", "release", false),
        ("release/**/hotfix", "release/hotfix", true),
        ("release/**/hotfix", "release/1/2/hotfix", true),
        ("release/**/hotfix", "release/1/2/other", false),
        ("refs/tags/v*", "refs/tags/v1.2.3", true),
        ("refs/tags/v*", "v1.2.3", false),
        ("refs/tags/v*", "refs/heads/v1.2.3", false),
        ("refs/tags/v*.*.*", "refs/tags/v1.2.3", true),
        ("refs/tags/v*.*.*", "refs/tags/v1.2", false),
        ("*", "feature", true),
        ("*", "feature/x", false),
        ("**", "feature/x", true),
        ("feat*/x", "feature/x", true),
        ("*-hotfix", "prod-hotfix", true),
        ("*-hotfix", "prod-hotfix-2", false),
        ("refs/**", "refs/pull/1/merge", true),
    ];
    for (pattern, git_ref, expected) in cases {
        assert_eq!(
            ref_matches(pattern, git_ref),
            expected,
            "{pattern} vs {git_ref}"
        );
    }
}

#[test]
fn durations_parse_largest_unit_first() {
    let good = [
        ("30s", 30),
        ("15m", 900),
        ("4h", 14_400),
        ("1d", 86_400),
        ("1h30m", 5_400),
        ("1d2h3m4s", 93_784),
        ("0s", 0),
    ];
    for (text, seconds) in good {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_secs(seconds)),
            "{text}"
        );
    }
    for bad in [
        "",
        "4",
        "h",
        "30m1h",
        "1h1h",
        "4x",
        "-1s",
        "1.5h",
        "4 h",
        "99999999999999999999s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
}

// ------------------------------------------------------------------------------------------
// Decisions

const GATED: &str = r#"
[identities]
U024BE7LH = "octocat"
U0APPROV1 = "alice"
U0APPROV2 = "bob"
U0APPROV3 = "carol"

[environments.staging]
allowed_refs = ["main", "refs/tags/v*"]

[environments.production]
allowed_refs = ["main", "refs/tags/v*"]
promotion_from = ["staging"]
approvals_required = 2
approvers = ["U0APPROV1", "U0APPROV2", "U0APPROV3"]

[[environments.production.windows]]
days = ["mon", "tue", "wed", "thu"]
start = "09:00"
end = "17:00"
timezone = "Europe/Berlin"

[[environments.production.freezes]]
from = "2026-12-21"
to = "2027-01-04"
timezone = "UTC"
reason = "year-end freeze"

[environments.production.break_glass]
allowed = true
extra_approvals = 1
require_reason = true

[environments.locked_down]
block_on_critical_incident = true

[[environments.locked_down.freezes]]
from = "2026-12-21"
to = "2027-01-04"
reason = "year-end freeze"
"#;

/// A Wednesday afternoon in Berlin, inside production's window and outside any freeze.
const OPEN: &str = "2026-06-10T12:00:00Z";

#[test]
fn staging_deploys_from_main_are_approved_at_once() {
    let policy = parse(GATED);
    let decision = evaluate_for(
        &policy,
        &request("staging", "main"),
        &GateFacts::default(),
        at(OPEN),
    );
    assert!(decision.is_approved(), "{decision:?}");
    let rules: Vec<Rule> = decision.checks().iter().map(|c| c.rule).collect();
    assert_eq!(
        rules,
        vec![
            Rule::AllowedRef,
            Rule::Promotion,
            Rule::Lock,
            Rule::Freeze,
            Rule::DeployWindow,
            Rule::Incident,
            Rule::Approvals
        ]
    );
    assert!(decision.checks().iter().all(|c| c.passed));
}

#[test]
fn production_deploy_of_a_promoted_sha_waits_for_two_approvals() {
    let policy = parse(GATED);
    let decision = evaluate_for(
        &policy,
        &request("production", "refs/tags/v1.4.0"),
        &promoted(),
        at(OPEN),
    );
    assert!(
        matches!(
            decision,
            Decision::NeedsApproval {
                required: 2,
                break_glass: false,
                ..
            }
        ),
        "{decision:?}"
    );
}

#[test]
fn refs_outside_allowed_refs_are_rejected() {
    let policy = parse(GATED);
    let decision = evaluate_for(
        &policy,
        &request("staging", "feature/x"),
        &GateFacts::default(),
        at(OPEN),
    );
    let (rule, message) = reject_of(&decision);
    assert_eq!(rule, Rule::AllowedRef);
    assert_eq!(
        message,
        "ref feature/x is not allowed in staging (allowed_refs: main, refs/tags/v*)"
    );
}

#[test]
fn sha_that_has_not_succeeded_in_staging_is_rejected_for_production() {
    let policy = parse(GATED);
    let decision = evaluate_for(
        &policy,
        &request("production", "main"),
        &GateFacts::default(),
        at(OPEN),
    );
    let (rule, message) = reject_of(&decision);
    assert_eq!(rule, Rule::Promotion);
    assert_eq!(
        message,
        "sha abc1234 has not succeeded in staging (required by promotion_from)"
    );
}

#[test]
fn environment_locked_by_another_deployment_is_rejected_with_the_holder() {
    let policy = parse(GATED);
    let facts = GateFacts {
        lock_holder: Some("dep-42".to_owned()),
        ..promoted()
    };
    for kind in [GateKind::Deploy, GateKind::Rollback] {
        let req = GateRequest {
            kind,
            ..request("production", "main")
        };
        let decision = evaluate_for(&policy, &req, &facts, at(OPEN));
        let (rule, message) = reject_of(&decision);
        assert_eq!(rule, Rule::Lock);
        assert!(message.contains("dep-42"), "{message}");
    }
}

#[test]
fn deploy_window_is_evaluated_in_its_time_zone_across_dst() {
    let policy = parse(GATED);
    // Berlin leaves CET (UTC+1) for CEST (UTC+2) on Sunday 2026-03-29.
    let cases = [
        ("2026-03-26T07:59:00Z", false), // thu 08:59 CET
        ("2026-03-26T08:00:00Z", true),  // thu 09:00 CET
        ("2026-03-26T15:59:00Z", true),  // thu 16:59 CET
        ("2026-03-26T16:00:00Z", false), // thu 17:00 CET
        ("2026-03-30T06:59:00Z", false), // mon 08:59 CEST
        ("2026-03-30T07:00:00Z", true),  // mon 09:00 CEST
        ("2026-03-30T14:59:00Z", true),  // mon 16:59 CEST
        ("2026-03-30T15:00:00Z", false), // mon 17:00 CEST
        ("2026-03-27T10:00:00Z", false), // fri: not a window day
        ("2026-11-02T07:30:00Z", false), // mon 08:30 CET, after the October switch
        ("2026-11-02T08:30:00Z", true),  // mon 09:30 CET
    ];
    for (instant, open) in cases {
        let decision = evaluate_for(
            &policy,
            &request("production", "main"),
            &promoted(),
            at(instant),
        );
        if open {
            assert!(
                matches!(decision, Decision::NeedsApproval { .. }),
                "{instant}: {decision:?}"
            );
        } else {
            assert_eq!(reject_of(&decision).0, Rule::DeployWindow, "{instant}");
        }
    }
}

#[test]
fn window_weekday_is_the_local_weekday() {
    let policy = parse(
        "[[environments.tokyo.windows]]\ndays = [\"mon\"]\nstart = \"09:00\"\nend = \"17:00\"\ntimezone = \"Asia/Tokyo\"\n",
    );
    // Sunday 23:30 UTC is Monday 08:30 in Tokyo; an hour later the window is open.
    let closed = evaluate_for(
        &policy,
        &request("tokyo", "main"),
        &GateFacts::default(),
        at("2026-03-29T23:30:00Z"),
    );
    assert_eq!(
        reject_of(&closed).1,
        "outside deploy window: tokyo deploys mon 09:00-17:00 Asia/Tokyo (now mon 08:30)"
    );
    let open = evaluate_for(
        &policy,
        &request("tokyo", "main"),
        &GateFacts::default(),
        at("2026-03-30T00:30:00Z"),
    );
    assert!(open.is_approved(), "{open:?}");
}

#[test]
fn outside_window_message_names_the_window_and_local_time() {
    let policy = parse(GATED);
    // Friday 17:02 UTC is 18:02 in Berlin (CET).
    let decision = evaluate_for(
        &policy,
        &request("production", "main"),
        &promoted(),
        at("2026-03-27T17:02:00Z"),
    );
    let (rule, message) = reject_of(&decision);
    assert_eq!(rule, Rule::DeployWindow);
    assert_eq!(
        message,
        "outside deploy window: production deploys mon-thu 09:00-17:00 Europe/Berlin (now fri 18:02); \
         break-glass is allowed in production: request it with a reason (needs 1 extra approval)"
    );
}

#[test]
fn freeze_dates_are_inclusive_in_the_freeze_time_zone() {
    let policy = parse(GATED);
    let cases = [
        ("2026-12-20T23:59:59Z", false),
        ("2026-12-21T00:00:00Z", true),
        ("2027-01-04T23:59:59Z", true),
        ("2027-01-05T00:00:00Z", false),
    ];
    for (instant, frozen) in cases {
        let decision = evaluate_for(
            &policy,
            &request("locked_down", "main"),
            &GateFacts::default(),
            at(instant),
        );
        if frozen {
            let (rule, message) = reject_of(&decision);
            assert_eq!(rule, Rule::Freeze, "{instant}");
            assert_eq!(
                message,
                "freeze \"year-end freeze\" 2026-12-21..2027-01-04 (UTC) is in effect"
            );
        } else {
            assert!(decision.is_approved(), "{instant}: {decision:?}");
        }
    }
    let auckland = parse(
        "[[environments.nz.freezes]]\nfrom = 2026-12-21\nto = 2026-12-21\ntimezone = \"Pacific/Auckland\"\nreason = \"launch\"\n",
    );
    // 11:00 UTC on the 20th is already midnight of the 21st in Auckland (UTC+13).
    let before = evaluate_for(
        &auckland,
        &request("nz", "main"),
        &GateFacts::default(),
        at("2026-12-20T10:59:00Z"),
    );
    assert!(before.is_approved());
    let during = evaluate_for(
        &auckland,
        &request("nz", "main"),
        &GateFacts::default(),
        at("2026-12-20T11:00:00Z"),
    );
    assert_eq!(reject_of(&during).0, Rule::Freeze);
}

/// Case name, now, facts, break-glass reason, and the required approvals or the rejection.
type BreakGlassCase<'a> = (
    &'static str,
    Timestamp,
    &'a GateFacts,
    Option<&'static str>,
    Result<u32, (Rule, &'static str)>,
);

#[test]
fn freeze_and_incident_blocks_follow_the_break_glass_rules() {
    let policy = parse(GATED);
    let frozen = at("2026-12-22T12:00:00Z"); // a Tuesday, inside the window
    let incident = GateFacts {
        open_critical_incidents: vec!["inc-7".to_owned()],
        ..promoted()
    };
    let clear = promoted();
    let with_reason = |reason: Option<&str>| GateRequest {
        break_glass_reason: reason.map(str::to_owned),
        ..request("production", "main")
    };
    let cases: Vec<BreakGlassCase<'_>> = vec![
        (
            "freeze, no reason",
            frozen,
            &clear,
            None,
            Err((Rule::Freeze, "break-glass is allowed in production")),
        ),
        (
            "freeze, reason",
            frozen,
            &clear,
            Some("payments down"),
            Ok(3),
        ),
        (
            "freeze, blank reason",
            frozen,
            &clear,
            Some("  "),
            Err((Rule::Freeze, "break-glass needs a reason")),
        ),
        (
            "incident, no reason",
            at(OPEN),
            &incident,
            None,
            Err((
                Rule::Incident,
                "critical incident inc-7 is open in production",
            )),
        ),
        (
            "incident, reason",
            at(OPEN),
            &incident,
            Some("the fix for inc-7"),
            Ok(3),
        ),
    ];
    for (name, now, facts, reason, expected) in cases {
        let decision = evaluate_for(&policy, &with_reason(reason), facts, now);
        match expected {
            Ok(required) => assert!(
                matches!(decision, Decision::NeedsApproval { required: r, break_glass: true, .. } if r == required),
                "{name}: {decision:?}"
            ),
            Err((rule, text)) => {
                let (got, message) = reject_of(&decision);
                assert_eq!(got, rule, "{name}");
                assert!(message.contains(text), "{name}: {message}");
            }
        }
    }
}

#[test]
fn blocks_without_break_glass_are_plain_rejections() {
    let policy = parse(GATED);
    let req = GateRequest {
        break_glass_reason: Some("please".to_owned()),
        ..request("locked_down", "main")
    };
    let facts = GateFacts {
        open_critical_incidents: vec!["inc-1".to_owned(), "inc-2".to_owned()],
        ..GateFacts::default()
    };
    let decision = evaluate_for(&policy, &req, &facts, at(OPEN));
    let (rule, message) = reject_of(&decision);
    assert_eq!(rule, Rule::Incident);
    assert_eq!(
        message,
        "2 critical incidents are open in locked_down (inc-1, inc-2)"
    );
}

#[test]
fn incidents_do_not_block_when_the_environment_opts_out() {
    let policy = parse("[environments.dev]\nblock_on_critical_incident = false\n");
    let facts = GateFacts {
        open_critical_incidents: vec!["inc-1".to_owned()],
        ..GateFacts::default()
    };
    assert!(evaluate_for(&policy, &request("dev", "main"), &facts, at(OPEN)).is_approved());
}

#[test]
fn break_glass_reason_is_ignored_when_nothing_blocks() {
    let policy = parse(GATED);
    let req = GateRequest {
        break_glass_reason: Some("just because".to_owned()),
        ..request("production", "main")
    };
    let decision = evaluate_for(&policy, &req, &promoted(), at(OPEN));
    assert!(
        matches!(
            decision,
            Decision::NeedsApproval {
                required: 2,
                break_glass: false,
                ..
            }
        ),
        "{decision:?}"
    );
}

#[test]
fn rollbacks_bypass_freezes_windows_incidents_and_promotion_but_not_approvals() {
    let policy = parse(GATED);
    let facts = GateFacts {
        open_critical_incidents: vec!["inc-9".to_owned()],
        ..GateFacts::default()
    };
    // Saturday during the freeze: outside the window, frozen, incident open, never promoted.
    let now = at("2026-12-26T22:00:00Z");
    let rollback = |env: &str| GateRequest {
        kind: GateKind::Rollback,
        ..request(env, "feature/not-allowed")
    };
    let production = evaluate_for(&policy, &rollback("production"), &facts, now);
    assert!(
        matches!(
            production,
            Decision::NeedsApproval {
                required: 2,
                break_glass: false,
                ..
            }
        ),
        "{production:?}"
    );
    let locked_down = evaluate_for(&policy, &rollback("locked_down"), &facts, now);
    assert!(locked_down.is_approved(), "{locked_down:?}");
    let deploy = evaluate_for(&policy, &request("locked_down", "main"), &facts, now);
    assert!(deploy.is_rejected());
}

#[test]
fn unknown_environment_is_never_approved() {
    let policy = parse(GATED);
    let decision = evaluate_for(&policy, &request("prod", "main"), &promoted(), at(OPEN));
    let (rule, message) = reject_of(&decision);
    assert_eq!(rule, Rule::UnknownEnvironment);
    assert!(message.contains("\"prod\""), "{message}");
}

#[test]
fn evaluate_works_on_a_hand_built_environment() {
    let mut env = shipgate::domain::policy::EnvironmentPolicy::with_defaults("dev");
    env.approvals_required = 1;
    env.approvers = vec!["U024BE7LH".to_owned()];
    let decision = evaluate(
        &env,
        &request("dev", "main"),
        &GateFacts::default(),
        at(OPEN),
    );
    assert!(
        matches!(decision, Decision::NeedsApproval { required: 1, .. }),
        "{decision:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Many repositories: `repos`, overrides and the effective policy of a scope

const MANY_REPOS: &str = r#"[identities]
U0000000A = "alice"
U0000000B = "bob"
U0000000C = "carol"

[environments.staging]

[environments.production]
repos = ["acme/*"]
approvals_required = 2
approvers = ["U0000000A", "U0000000B", "U0000000C"]
verification_window = "15m"

[[environments.production.overrides]]
repos = ["acme/payments"]
approvals_required = 3

[[environments.production.overrides]]
repos = ["acme/web*"]
verification_window = "30m"
"#;

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).expect("test repository name")
}

fn env(name: &str) -> EnvName {
    EnvName::parse(name).expect("test environment name")
}

#[test]
fn a_section_without_repos_governs_every_repository() {
    let policy = parse(MANY_REPOS);
    for name in ["acme/api", "other/thing"] {
        let effective = policy
            .for_scope(&repo(name), &env("staging"))
            .expect("staging governs every repository");
        assert_eq!(effective.approvals_required, 0);
        assert_eq!(
            effective.source("approvals_required"),
            Some(&Source::Default)
        );
    }
}

#[test]
fn repos_globs_choose_the_repositories_a_section_governs() {
    let policy = parse(MANY_REPOS);
    let cases = [
        ("acme/api", true),
        ("ACME/Api", true),
        ("acme/payments", true),
        ("other/api", false),
        ("acmeco/api", false),
    ];
    for (name, governed) in cases {
        let result = policy.for_scope(&repo(name), &env("production"));
        assert_eq!(result.is_ok(), governed, "{name}: {result:?}");
    }
    for (pattern, name, want) in [
        ("acme/*", "acme/api", true),
        ("*/api", "acme/api", true),
        ("acme/pay*", "acme/payments", true),
        ("acme/pay*", "acme/web", false),
        ("acme/*", "acme", false),
    ] {
        assert_eq!(repo_matches(pattern, name), want, "{pattern} vs {name}");
    }
}

#[test]
fn an_override_applies_to_its_repositories_and_the_rest_keep_the_section() {
    let policy = parse(MANY_REPOS);
    let payments = policy
        .for_scope(&repo("acme/payments"), &env("production"))
        .expect("governed");
    assert_eq!(payments.approvals_required, 3);
    assert_eq!(payments.verification_window, Duration::from_secs(15 * 60));
    match payments.source("approvals_required") {
        Some(Source::Override { at, repos, key }) => {
            assert_eq!(at.to_string(), "policy.toml:14:1");
            assert_eq!(key.to_string(), "policy.toml:16:22");
            assert_eq!(repos, &vec!["acme/payments".to_owned()]);
        }
        other => panic!("expected an override, got {other:?}"),
    }
    assert_eq!(
        payments
            .source("verification_window")
            .map(ToString::to_string),
        Some("policy.toml:12:23".to_owned())
    );

    let web = policy
        .for_scope(&repo("acme/web"), &env("production"))
        .expect("governed");
    assert_eq!(web.approvals_required, 2);
    assert_eq!(web.verification_window, Duration::from_secs(30 * 60));
    assert_eq!(
        web.source("approvals_required").map(ToString::to_string),
        Some("policy.toml:10:22".to_owned())
    );
    assert_eq!(web.section.to_string(), "policy.toml:8:1");
    // The section itself is unchanged for environment-wide uses.
    let section = policy.environment("production").expect("production");
    assert_eq!(section.approvals_required, 2);
}

#[test]
fn a_repository_no_section_governs_is_rejected_with_the_reason() {
    let policy = parse(MANY_REPOS);
    let why = policy
        .for_scope(&repo("other/api"), &env("production"))
        .expect_err("not governed");
    assert!(matches!(why, NotGoverned::RepoNotListed { .. }), "{why:?}");
    assert_eq!(
        why.to_string(),
        "no policy section governs other/api in \"production\": [environments.production] at policy.toml:8:1 governs only repos = [\"acme/*\"]"
    );
    let decision = evaluate_in_scope(
        &policy,
        &repo("other/api"),
        &request("production", "main"),
        &promoted(),
        at("2026-03-02T10:00:00Z"),
    );
    let (rule, message) = reject_of(&decision);
    assert_eq!(rule, Rule::NotGoverned);
    assert!(
        message.contains("no policy section governs other/api"),
        "{message}"
    );

    let unknown = evaluate_in_scope(
        &policy,
        &repo("acme/api"),
        &request("qa", "main"),
        &promoted(),
        at("2026-03-02T10:00:00Z"),
    );
    assert_eq!(reject_of(&unknown).0, Rule::UnknownEnvironment);
}

#[test]
fn the_gate_decision_uses_the_repositorys_override() {
    let policy = parse(MANY_REPOS);
    let now = at("2026-03-02T10:00:00Z");
    let required = |name: &str| match evaluate_in_scope(
        &policy,
        &repo(name),
        &request("production", "main"),
        &promoted(),
        now,
    ) {
        Decision::NeedsApproval { required, .. } => required,
        other => panic!("expected approvals for {name}, got {other:?}"),
    };
    assert_eq!(required("acme/payments"), 3);
    assert_eq!(required("acme/web"), 2);
}

fn one_error(text: &str) -> String {
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    found[0].to_string()
}

#[test]
fn override_and_repos_problems_are_reported_with_their_position() {
    let base = "[identities]\nU0000000A = \"alice\"\nU0000000B = \"bob\"\n\n[environments.production]\nrepos = [\"acme/*\"]\napprovers = [\"U0000000A\", \"U0000000B\"]\n";
    let cases: &[(&str, &str)] = &[
        (
            "[environments.production]\nrepos = [\"acme\"]\n",
            "policy.toml:2:10: environments.production.repos[0]: repository pattern \"acme\" is not of the form owner/name; use `owner/name` with `*` as the only wildcard, e.g. \"acme/payments\" or \"acme/*\"",
        ),
        (
            "[environments.production]\nrepos = [\"acme/a/b\"]\n",
            "policy.toml:2:10: environments.production.repos[0]: repository pattern \"acme/a/b\" has more than one '/'; use `owner/name` with `*` as the only wildcard, e.g. \"acme/payments\" or \"acme/*\"",
        ),
        (
            "[environments.production]\nrepos = []\n",
            "policy.toml:2:9: environments.production.repos: an empty list governs no repository; remove the key to govern every repository",
        ),
        (
            "[[environments.production.overrides]]\nrepos = [\"acme/pay?\"]\napprovals_required = 0\n",
            "policy.toml:2:10: environments.production.overrides[0].repos[0]: invalid character '?' in the name of repository pattern \"acme/pay?\" (names are letters, digits, '-', '.' and '_'); use `owner/name` with `*` as the only wildcard, e.g. \"acme/payments\" or \"acme/*\"",
        ),
        (
            "[[environments.production.overrides]]\napprovals_required = 0\n",
            "policy.toml:1:1: environments.production.overrides[0].repos: is required",
        ),
        (
            "[[environments.production.overrides]]\nrepos = [\"acme/web\"]\nslack_channel = \"#web\"\napprovals_required = 0\n",
            "policy.toml:3:1: environments.production.overrides[0].slack_channel: slack_channel cannot be overridden per repository: an environment's notifications go to one channel; an override may set: allowed_refs, approvals_required, approvers, rollback_requesters, prevent_self_approval, require_reject_reason, approval_ttl, verification_window, queue_wait, deploy_timeout, block_on_critical_incident, rollback_on, rollback_alerts, rollback, pre_deploy_backups, windows, freezes, break_glass, analysis",
        ),
        (
            "[[environments.production.overrides]]\nrepos = [\"acme/web\"]\n",
            "policy.toml:1:1: environments.production.overrides[0]: an override sets no key; give it one of: allowed_refs, approvals_required, approvers, rollback_requesters, prevent_self_approval, require_reject_reason, approval_ttl, verification_window, queue_wait, deploy_timeout, block_on_critical_incident, rollback_on, rollback_alerts, rollback, pre_deploy_backups, windows, freezes, break_glass, analysis",
        ),
        (
            "[[environments.production.overrides]]\nrepos = [\"other/web\"]\napprovals_required = 1\n",
            "policy.toml:2:10: environments.production.overrides[0].repos[0]: \"other/web\" matches no repository the section governs (repos = [\"acme/*\"])",
        ),
        (
            "[[environments.production.overrides]]\nrepos = [\"acme/payments\"]\napprovals_required = 3\n",
            "policy.toml:3:22: environments.production.overrides[0].approvals_required: needs 3 approvals but only 2 approvers are listed",
        ),
        (
            "[[environments.production.overrides]]\nrepos = [\"acme/payments\"]\napprovals_required = 1\n\n[[environments.production.overrides]]\nrepos = [\"acme/pay*\"]\napprovals_required = 2\n",
            "policy.toml:7:22: environments.production.overrides[1].approvals_required: conflicting overrides: approvals_required is also set at policy.toml:3:22 by the override for \"acme/payments\", and a repository can match both \"acme/payments\" and \"acme/pay*\"; set each key in at most one override per repository",
        ),
    ];
    let base_lines = base.lines().count();
    for (extra, want) in cases {
        let text = if extra.starts_with("[environments.production]") {
            (*extra).to_owned()
        } else {
            format!("{base}\n{extra}")
        };
        let got = one_error(&text);
        // Positions in the cases are relative to the appended text.
        let want = if extra.starts_with("[environments.production]") {
            (*want).to_owned()
        } else {
            shift_line(want, base_lines + 1)
        };
        assert_eq!(got, want, "for:\n{text}");
    }
}

/// Adds `by` to the line of a `policy.toml:LINE:COL:` message and of the positions it names.
fn shift_line(message: &str, by: usize) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find("policy.toml:") {
        out.push_str(&rest[..i + "policy.toml:".len()]);
        rest = &rest[i + "policy.toml:".len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let line: usize = rest[..digits].parse().expect("a line number");
        out.push_str(&(line + by).to_string());
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[test]
fn overrides_of_different_keys_or_disjoint_repositories_combine() {
    let text = r#"[identities]
U0000000A = "alice"
U0000000B = "bob"
U0000000C = "carol"

[environments.production]
approvers = ["U0000000A", "U0000000B", "U0000000C"]
approvals_required = 1

[[environments.production.overrides]]
repos = ["acme/*"]
verification_window = "1h"

[[environments.production.overrides]]
repos = ["acme/payments"]
approvals_required = 3

[[environments.production.overrides]]
repos = ["other/*"]
approvals_required = 2
"#;
    let policy = parse(text);
    let payments = policy
        .for_scope(&repo("acme/payments"), &env("production"))
        .expect("governed");
    assert_eq!(payments.approvals_required, 3);
    assert_eq!(payments.verification_window, Duration::from_secs(3600));
    let other = policy
        .for_scope(&repo("other/api"), &env("production"))
        .expect("governed");
    assert_eq!(other.approvals_required, 2);
    assert_eq!(other.verification_window, Duration::from_secs(15 * 60));
}

#[test]
fn overrides_that_combine_for_a_named_repository_must_leave_enough_approvers() {
    let text = r#"[identities]
U0000000A = "alice"
U0000000B = "bob"
U0000000C = "carol"

[environments.production]
approvers = ["U0000000A", "U0000000B", "U0000000C"]
approvals_required = 1

[[environments.production.overrides]]
repos = ["acme/*"]
approvers = ["U0000000A", "U0000000B"]

[[environments.production.overrides]]
repos = ["acme/payments"]
approvals_required = 3
"#;
    assert_eq!(
        one_error(text),
        "policy.toml:14:1: environments.production.overrides[1]: for acme/payments the overrides at policy.toml:10:1 and policy.toml:14:1 combine to need 3 approvals but only 2 approvers are listed"
    );
}

#[test]
fn an_override_of_rollback_on_counts_for_alerts_that_know_only_the_environment() {
    let text = r#"[environments.production]
rollback_on = ["critical"]

[[environments.production.overrides]]
repos = ["acme/payments"]
rollback_on = ["critical", "warning"]
"#;
    let policy = parse(text);
    assert!(policy.rolls_back_on_in_some_scope("production", Severity::Warning));
    assert!(!policy.rolls_back_on_in_some_scope("production", Severity::Info));
    assert!(!policy.rolls_back_on_in_some_scope("qa", Severity::Critical));
    let api = policy
        .for_scope(&repo("acme/api"), &env("production"))
        .expect("governed");
    assert!(!api.rolls_back_on(Severity::Warning));
    let payments = policy
        .for_scope(&repo("acme/payments"), &env("production"))
        .expect("governed");
    assert!(payments.rolls_back_on(Severity::Warning));
}

#[test]
fn services_map_alert_services_to_repositories_and_report_bad_entries_with_their_position() {
    let text = "[services]\napi = \"acme/api\"\n\n[environments.production]\n";
    let policy = Policy::parse("policy.toml", text).expect("valid");
    assert_eq!(
        policy.repository_for_service("api").map(String::from),
        Some("acme/api".to_string())
    );
    // No default owner: a service that is not listed maps to no repository.
    assert_eq!(policy.repository_for_service("web"), None);

    let with_owner = "[alerts]\ndefault_owner = \"acme\"\n\n[services]\napi = \"acme/api-server\"\n\n[environments.production]\n";
    let policy = Policy::parse("policy.toml", with_owner).expect("valid");
    assert_eq!(
        policy.repository_for_service("api").map(String::from),
        Some("acme/api-server".to_string()),
        "a listed service wins over the default owner"
    );
    assert_eq!(
        policy.repository_for_service("web").map(String::from),
        Some("acme/web".to_string())
    );

    let bad = one_error("[services]\napi = \"api\"\n\n[environments.production]\n");
    assert!(
        bad.starts_with("policy.toml:2:7: services.api: \"api\" is not a repository (owner/name)"),
        "{bad}"
    );
    let bad_owner = one_error("[alerts]\ndefault_owner = \"ac me\"\n\n[environments.production]\n");
    assert!(
        bad_owner
            .starts_with("policy.toml:2:17: alerts.default_owner: \"ac me\" is not a GitHub owner"),
        "{bad_owner}"
    );
}

// ------------------------------------------------------------------------------------------
// Analysis: sources and checks

const ANALYSIS: &str = r#"
[analysis.sources.prom]
type = "prometheus"
url = "https://prometheus.example.com"
bearer_token_var = "SHIPGATE_ANALYSIS_PROM_TOKEN"

[analysis.sources.thanos]
type = "prometheus"
url = "http://thanos.internal:10902/"
basic_user = "shipgate"
basic_password_var = "SHIPGATE_ANALYSIS_THANOS_PASSWORD"

[environments.production]
verification_window = "15m"

[environments.production.analysis]
inconclusive = "pass"
end_early = true

[[environments.production.analysis.checks]]
name = "error-rate"
source = "prom"
query = 'sum(rate(http_requests_total{service="{{service}}",code=~"5.."}[1m])) / sum(rate(http_requests_total{service="{{service}}"}[1m]))'
condition = "< 0.01"
count = 5
failure_limit = 1

[[environments.production.analysis.checks]]
name = "p99"
source = "thanos"
query = 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{service="{{service}}"}[5m])))'
condition = "<= baseline * 1.2"
baseline = "1h"
interval = "2m"
count = 3
"#;

#[test]
fn analysis_sources_and_checks_parse_with_their_defaults() {
    use shipgate::domain::analysis::{Comparison, Inconclusive, SampleRule, Threshold};
    use shipgate::domain::policy::{MetricSourceSpec, PrometheusAuthSpec};
    let policy = parse(ANALYSIS);
    assert_eq!(
        policy.analysis_sources().get("thanos"),
        Some(&MetricSourceSpec::Prometheus {
            url: "http://thanos.internal:10902/".into(),
            auth: PrometheusAuthSpec::Basic {
                user: "shipgate".into(),
                password_var: "SHIPGATE_ANALYSIS_THANOS_PASSWORD".into()
            }
        })
    );
    let analysis = policy
        .environment("production")
        .and_then(|e| e.analysis.clone())
        .expect("analysis");
    assert_eq!(analysis.inconclusive, Inconclusive::PassAtWindowEnd);
    assert!(analysis.end_early);
    let errors = &analysis.checks[0];
    assert_eq!(errors.interval, Duration::from_secs(60));
    assert_eq!(
        errors.rule,
        SampleRule {
            count: 5,
            failure_limit: 1
        }
    );
    assert_eq!(errors.condition.comparison, Comparison::Below);
    assert_eq!(errors.baseline, None);
    let p99 = &analysis.checks[1];
    assert_eq!(p99.condition.threshold, Threshold::BaselineTimes(1.2));
    assert_eq!(p99.baseline, Some(Duration::from_secs(3600)));
    assert_eq!(p99.rule.failure_limit, 0);
    // An environment without [analysis] has none.
    let plain = parse("[environments.staging]\n");
    assert_eq!(
        plain
            .environment("staging")
            .and_then(|e| e.analysis.clone()),
        None
    );
}

#[test]
fn analysis_mistakes_are_reported_where_they_are_written() {
    let text = r#"
[analysis.sources.prom]
type = "prometheus"
url = "prometheus:9090"
bearer_token_var = "GITHUB_TOKEN"

[analysis.sources.cw]
type = "graphite"
url = "https://graphite.example.com"

[environments.production]
verification_window = "5m"

[[environments.production.analysis.checks]]
name = "errors"
source = "nope"
query = 'up{team="{{team}}"}'
condition = "below 1%"

[[environments.production.analysis.checks]]
name = "latency"
source = "prom"
query = "x"
condition = "< baseline * 1.5"
count = 10
failure_limit = 10

[[environments.production.analysis.checks]]
name = "latency"
source = "prom"
query = "x"
condition = "< 2"
baseline = "1h"
"#;
    let found: Vec<String> = errors(text).iter().map(ToString::to_string).collect();
    let expect = [
        "policy.toml:4:7: analysis.sources.prom.url: must be an http:// or https:// URL",
        "policy.toml:5:20: analysis.sources.prom.bearer_token_var: \"GITHUB_TOKEN\": name a variable starting with SHIPGATE_ANALYSIS_ (the policy names where a secret is, never the secret)",
        "policy.toml:8:8: analysis.sources.cw.type: unknown source type \"graphite\" (known: \"prometheus\", \"cloudwatch\")",
        "policy.toml:16:10: environments.production.analysis.checks[0].source: no source \"nope\" in [analysis.sources] (\"cw\", \"prom\")",
        "policy.toml:17:9: environments.production.analysis.checks[0].query: unknown placeholder {{team}} (known: repository, service, environment, sha, started_at)",
        "policy.toml:18:13: environments.production.analysis.checks[0].condition: \"below 1%\": start with <, <=, > or >=, e.g. \"< 0.01\" or \"<= baseline * 1.2\"",
        "policy.toml:24:13: environments.production.analysis.checks[1].condition: a condition relative to the baseline needs baseline = \"1h\" (the span before the deploy it is measured over)",
        "policy.toml:26:17: environments.production.analysis.checks[1].failure_limit: must be below count (10): with as many failures allowed as samples taken, the check cannot fail",
        "policy.toml:25:9: environments.production.analysis.checks[1].count: 10 samples every 1m take 10m, longer than the verification window (5m)",
        "policy.toml:33:12: environments.production.analysis.checks[2].baseline: the condition does not use the baseline; write it as \"<= baseline * 1.2\", or remove baseline",
        "policy.toml:28:1: environments.production.analysis.checks[2]: duplicate check name \"latency\"",
    ];
    for line in expect {
        assert!(
            found.iter().any(|f| f == line),
            "missing:\n{line}\nfound:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));
}

#[test]
fn a_repository_override_replaces_its_analysis_and_others_keep_the_sections() {
    let text = format!(
        "{ANALYSIS}{}",
        r#"
[[environments.production.overrides]]
repos = ["acme/batch"]
[environments.production.overrides.analysis]
[[environments.production.overrides.analysis.checks]]
name = "queue-depth"
source = "prom"
query = 'max(queue_depth{service="{{service}}"})'
condition = "< 1000"
count = 3
"#
    );
    let policy = parse(&text);
    let env = EnvName::parse("production").expect("env");
    let names = |repo: &str| -> Vec<String> {
        let repo = RepoName::parse(repo).expect("repo");
        policy
            .for_scope(&repo, &env)
            .expect("governed")
            .policy
            .analysis
            .map(|a| a.checks.into_iter().map(|c| c.name).collect())
            .unwrap_or_default()
    };
    assert_eq!(names("acme/batch"), vec!["queue-depth"]);
    assert_eq!(names("acme/api"), vec!["error-rate", "p99"]);
    // An override's checks are held to the section's window too.
    let too_long = text.replace("count = 3\n", "count = 30\n");
    let found: Vec<String> = errors(&too_long).iter().map(ToString::to_string).collect();
    assert!(
        found.iter().any(|f| f.contains("overrides[0].analysis.checks[0].count: 30 samples every 1m take 30m, longer than the verification window (15m)")),
        "{}",
        found.join("\n")
    );
}

#[test]
fn cloudwatch_sources_take_metric_data_queries_and_no_url() {
    use shipgate::domain::policy::MetricSourceSpec;
    let ok = r#"
[analysis.sources.cw]
type = "cloudwatch"
region = "eu-west-1"

[environments.production]
[environments.production.analysis]
[[environments.production.analysis.checks]]
name = "5xx"
source = "cw"
query = '''[
  {"Id": "errors", "MetricStat": {"Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": [{"Name": "TargetGroup", "Value": "{{service}}"}]}, "Period": 60, "Stat": "Sum"}, "ReturnData": false},
  {"Id": "requests", "MetricStat": {"Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount", "Dimensions": [{"Name": "TargetGroup", "Value": "{{service}}"}]}, "Period": 60, "Stat": "Sum"}, "ReturnData": false},
  {"Id": "ratio", "Expression": "errors / requests"}
]'''
condition = "< 0.01"
"#;
    let policy = parse(ok);
    assert_eq!(
        policy.analysis_sources().get("cw"),
        Some(&MetricSourceSpec::CloudWatch {
            region: Some("eu-west-1".into())
        })
    );
    let bad = r#"
[analysis.sources.cw]
type = "cloudwatch"
url = "https://monitoring.eu-west-1.amazonaws.com"

[environments.production]
[environments.production.analysis]
[[environments.production.analysis.checks]]
name = "5xx"
source = "cw"
query = '[{"Id": "a", "Expression": "x"}, {"Id": "b", "Expression": "y"}]'
condition = "< 0.01"
"#;
    let found: Vec<String> = errors(bad).iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        vec![
            "policy.toml:4:7: analysis.sources.cw.url: a CloudWatch source uses the function's own AWS credentials; remove it",
            "policy.toml:11:9: environments.production.analysis.checks[0].query: exactly one metric data query must return data (ReturnData is true unless false); 2 do",
        ]
    );
}

#[test]
fn dora_production_rollback_alerts_and_start_tolerance_have_defaults_and_checked_values() {
    use shipgate::domain::policy::RollbackAlerts;
    use std::time::Duration;
    let policy = parse(
        r#"
[alerts]
start_tolerance = "2m"

[environments.staging]

[environments.production]
promotion_from = ["staging"]
rollback_alerts = "any_in_window"

[environments.qa]
production = true

[[environments.production.overrides]]
repos = ["acme/api"]
rollback_alerts = "began_after_deploy"
"#,
    );
    // Production by default when nothing promotes from it; staging is promoted from.
    assert!(policy.is_production("production"));
    assert!(!policy.is_production("staging"));
    assert!(policy.is_production("qa"), "set explicitly");
    assert!(!policy.is_production("nowhere"));
    assert_eq!(policy.alerts().start_tolerance, Duration::from_secs(120));
    let env = |name: &str| policy.environment(name).expect("environment");
    assert_eq!(
        env("production").rollback_alerts,
        RollbackAlerts::AnyInWindow
    );
    assert_eq!(
        env("staging").rollback_alerts,
        RollbackAlerts::BeganAfterDeploy
    );
    let api = policy
        .for_scope(
            &"acme/api".parse().expect("repo"),
            &"production".parse().expect("env"),
        )
        .expect("governed");
    assert_eq!(api.policy.rollback_alerts, RollbackAlerts::BeganAfterDeploy);
    assert_eq!(
        parse("[environments.production]\n")
            .alerts()
            .start_tolerance,
        Duration::from_secs(60)
    );

    assert!(
        one_error("[alerts]\nstart_tolerance = \"2h\"\n[environments.production]\n")
            .contains("start_tolerance: at most \"1h\"")
    );
    assert_eq!(
        one_error("[environments.production]\nrollback_alerts = \"sometimes\"\n"),
        "policy.toml:2:19: environments.production.rollback_alerts: \"sometimes\" is not one of \"began_after_deploy\", \"any_in_window\""
    );
    let refused = errors("[environments.production]\n[[environments.production.overrides]]\nrepos = [\"acme/api\"]\nproduction = false\n");
    assert!(
        refused.iter().any(|e| e.to_string().contains(
            "production cannot be overridden per repository: DORA reports an environment as production or not, for every repository"
        )),
        "{refused:#?}"
    );
}
