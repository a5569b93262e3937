//! The app manifests (`manifests/github-app.json`, `manifests/slack-app.json`) against the code
//! they configure, and `shipgate setup` printing them:
//!
//! - the GitHub App subscribes to exactly the events the webhook parser acts on
//!   (`github_webhook::events::HANDLED_EVENTS`, itself checked against the parser's match), and
//!   asks for exactly the permissions the GitHub client's calls and those events need;
//! - the Slack app asks for exactly `shipgate::outbound::slack::BOT_SCOPES`, which covers every
//!   Web API method the Slack client calls;
//! - `shipgate setup github-app|slack-app --url BASE` prints the checked-in file with only the
//!   base URL filled in, and refuses a bad URL with exit 2.
//!
//! The client and parser are read as source text, so a new call or a new event arm that the
//! tables below do not know fails here until its permission (and the manifest) is settled.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use github_webhook::events::{parse, ParseError, HANDLED_EVENTS};
use serde_json::{json, Value};
use shipgate::outbound::slack::BOT_SCOPES;

const GITHUB_MANIFEST: &str = include_str!("../../manifests/github-app.json");
const SLACK_MANIFEST: &str = include_str!("../../manifests/slack-app.json");
const GITHUB_CLIENT: &str = include_str!("../../shared/src/outbound/github.rs");
const SLACK_CLIENT: &str = include_str!("../../shared/src/outbound/slack.rs");
const WEBHOOK_PARSER: &str = include_str!("../../functions/github-webhook/src/events.rs");

const PLACEHOLDER: &str = "{{BASE_URL}}";
const BASE: &str = "https://deploy.example.com";

/// One call of the GitHub client: the path it builds and the repository permission GitHub
/// requires for it ("Permissions required for GitHub Apps" in GitHub's REST documentation).
struct Call {
    method: &'static str,
    path: &'static str,
    needs: Option<(&'static str, Access)>,
}

/// Every call the GitHub client makes.
const CLIENT_CALLS: &[Call] = &[
    // Exchanged with the App's JWT, not an installation token: no repository permission.
    Call {
        method: "POST",
        path: "/app/installations/{installation_id}/access_tokens",
        needs: None,
    },
    // Review custom deployment protection rules (decide, or only report a status).
    Call {
        method: "POST",
        path: "/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule",
        needs: Some(("deployments", Access::Write)),
    },
    // Create a deployment (rollbacks, rollback drills).
    Call {
        method: "POST",
        path: "/repos/{repo}/deployments",
        needs: Some(("deployments", Access::Write)),
    },
    // Get a workflow run (break-glass title, reconciliation).
    Call {
        method: "GET",
        path: "/repos/{repo}/actions/runs/{run_id}",
        needs: Some(("actions", Access::Read)),
    },
    // List deployment statuses (reconciliation).
    Call {
        method: "GET",
        path: "/repos/{repo}/deployments/{deployment_id}/statuses?per_page=1",
        needs: Some(("deployments", Access::Read)),
    },
    // Get pending deployments for a workflow run (before answering again).
    Call {
        method: "GET",
        path: "/repos/{repo}/actions/runs/{run_id}/pending_deployments",
        needs: Some(("actions", Access::Read)),
    },
    // Create a workflow dispatch event (workflow rollbacks).
    Call {
        method: "POST",
        path: "/repos/{repo}/actions/workflows/{workflow_id_or_file}/dispatches",
        needs: Some(("actions", Access::Write)),
    },
];

/// The permission GitHub requires to subscribe to each event ("Webhook events and payloads").
const EVENT_PERMISSIONS: &[(&str, &str, Access)] = &[
    ("deployment_protection_rule", "deployments", Access::Read),
    ("deployment", "deployments", Access::Read),
    ("deployment_status", "deployments", Access::Read),
    ("workflow_run", "actions", Access::Read),
    ("push", "contents", Access::Read),
];

/// Every Slack Web API method the client calls, with the bot scope it needs (Slack's method
/// reference); `None` for methods that need none.
const SLACK_METHODS: &[(&str, Option<&str>)] = &[
    ("chat.postMessage", Some("chat:write")),
    ("chat.update", Some("chat:write")),
    ("chat.postEphemeral", Some("chat:write")),
    ("views.open", None),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Read,
    Write,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

fn json(label: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{label} is not JSON: {e}"))
}

fn strings(label: &str, value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{label} is not an array: {value}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{label} holds a non-string: {v}"))
                .to_owned()
        })
        .collect()
}

/// The set of `items`, failing on a duplicate.
fn set_of<S: AsRef<str>>(label: &str, items: &[S]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for item in items {
        assert!(
            set.insert(item.as_ref().to_owned()),
            "{label} lists {:?} twice",
            item.as_ref()
        );
    }
    set
}

/// The code lines of a source file: comments and the unit-test module left out.
fn code_lines(source: &str) -> impl Iterator<Item = &str> {
    let end = source.find("#[cfg(test)]").unwrap_or(source.len());
    source[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
}

/// The string literals on one line of Rust (no raw strings in the files read here).
fn literals(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        literal.push(escaped);
                    }
                }
                '"' => break,
                other => literal.push(other),
            }
        }
        found.push(literal);
    }
    found
}

#[test]
fn both_manifests_are_json_with_the_base_url_placeholder() {
    let github = json("manifests/github-app.json", GITHUB_MANIFEST);
    assert_eq!(github["name"], "shipgate");
    assert_eq!(
        github["public"], false,
        "only installable on the owner's account"
    );
    assert_eq!(github["url"], PLACEHOLDER);
    assert_eq!(
        github["hook_attributes"],
        json!({"url": format!("{PLACEHOLDER}/webhooks/github"), "active": true})
    );
    assert_eq!(github["redirect_url"], format!("{PLACEHOLDER}/healthz"));

    let slack = json("manifests/slack-app.json", SLACK_MANIFEST);
    assert_eq!(slack["display_information"]["name"], "shipgate");
    assert!(slack["features"]["bot_user"]["display_name"].is_string());
    assert_eq!(
        slack["settings"]["interactivity"],
        json!({"is_enabled": true, "request_url": format!("{PLACEHOLDER}/webhooks/slack")})
    );
    assert_eq!(slack["settings"]["socket_mode_enabled"], false);
    assert_eq!(slack["settings"]["org_deploy_enabled"], false);
    // Slack's limits on the fields shown to users.
    let name = slack["display_information"]["name"].as_str().unwrap_or("");
    let description = slack["display_information"]["description"]
        .as_str()
        .unwrap_or("");
    assert!((1..=35).contains(&name.chars().count()), "{name:?}");
    assert!(description.chars().count() <= 140, "{description:?}");
}

#[test]
fn handled_events_are_the_parser_s_match_arms_and_nothing_else() {
    let body = WEBHOOK_PARSER
        .split_once("pub fn parse(")
        .map(|(_, rest)| rest)
        .expect("events.rs has `pub fn parse(`");
    let arms: Vec<String> = code_lines(body)
        .filter_map(|l| {
            let (head, _) = l.trim().split_once(" =>")?;
            let name = head.strip_prefix('"')?.strip_suffix('"')?;
            Some(name.to_owned())
        })
        .collect();
    let mut expected = set_of("HANDLED_EVENTS", HANDLED_EVENTS);
    expected.insert("ping".to_owned());
    assert_eq!(set_of("parse's match", &arms), expected);
}

#[test]
fn every_handled_event_parses_and_others_are_unused() {
    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const AT: &str = "2026-03-02T10:00:00Z";
    let repository = json!({"full_name": "acme/api"});
    let deployment =
        json!({"id": 7, "sha": SHA, "ref": "refs/heads/main", "environment": "production"});
    for &event in HANDLED_EVENTS {
        let payload = match event {
            "deployment_protection_rule" => json!({
                "action": "requested",
                "environment": "production",
                "event": "push",
                "ref": "refs/heads/main",
                "sha": SHA,
                "deployment_callback_url": "https://api.github.com/repos/acme/api/actions/runs/42/deployment_protection_rule",
                "installation": {"id": 7},
                "sender": {"login": "octocat"},
                "repository": repository,
            }),
            "deployment" => json!({
                "action": "created",
                "deployment": deployment,
                "repository": repository,
            }),
            "deployment_status" => json!({
                "action": "created",
                "deployment_status": {"state": "success"},
                "deployment": deployment,
                "repository": repository,
            }),
            "workflow_run" => json!({
                "action": "completed",
                "workflow_run": {"id": 42, "head_sha": SHA, "conclusion": "success", "updated_at": AT},
                "repository": repository,
            }),
            "push" => json!({
                "commits": [{"id": SHA, "timestamp": AT}],
                "repository": repository,
            }),
            other => panic!("HANDLED_EVENTS names {other:?}: add a sample payload here"),
        };
        if let Err(e) = parse(event, payload.to_string().as_bytes()) {
            panic!("{event}: {e}");
        }
    }
    for event in ["issues", "check_run", "installation", "release"] {
        assert!(
            matches!(
                parse(event, br#"{"action":"created"}"#),
                Err(ParseError::Unused { .. })
            ),
            "{event} should be unused"
        );
    }
}

#[test]
fn the_github_app_subscribes_to_exactly_the_handled_events() {
    let manifest = json("manifests/github-app.json", GITHUB_MANIFEST);
    let events = strings("default_events", &manifest["default_events"]);
    assert_eq!(
        set_of("default_events", &events),
        set_of("HANDLED_EVENTS", HANDLED_EVENTS)
    );
}

#[test]
fn the_github_app_asks_for_exactly_what_the_client_and_the_events_need() {
    // Every path the client builds is in CLIENT_CALLS, and nothing else is.
    let built: Vec<String> = code_lines(GITHUB_CLIENT)
        .filter(|l| l.contains("format!(\"/"))
        .flat_map(literals)
        .filter(|s| s.starts_with('/'))
        .collect();
    let known: Vec<&str> = CLIENT_CALLS.iter().map(|call| call.path).collect();
    assert_eq!(
        set_of("the client's paths", &built),
        set_of("CLIENT_CALLS", &known),
        "a GitHub call was added or removed: settle its permission in CLIENT_CALLS and the manifest"
    );

    let mut needed: BTreeMap<String, Access> = BTreeMap::new();
    let mut need = |permission: &str, access: Access| {
        let entry = needed.entry(permission.to_owned()).or_insert(access);
        *entry = (*entry).max(access);
    };
    for call in CLIENT_CALLS {
        if let Some((name, access)) = call.needs {
            assert!(
                call.method == "GET" || access == Access::Write,
                "{} {} changes something: it needs write access",
                call.method,
                call.path
            );
            need(name, access);
        }
    }
    for &event in HANDLED_EVENTS {
        let (_, name, access) = EVENT_PERMISSIONS
            .iter()
            .find(|(e, _, _)| *e == event)
            .unwrap_or_else(|| panic!("EVENT_PERMISSIONS has no entry for {event:?}"));
        need(name, *access);
    }
    // Every GitHub App has it; the manifest names it so the whole set is written down.
    need("metadata", Access::Read);

    let manifest = json("manifests/github-app.json", GITHUB_MANIFEST);
    let asked: BTreeMap<String, String> =
        serde_json::from_value(manifest["default_permissions"].clone())
            .unwrap_or_else(|e| panic!("default_permissions is not a map of strings: {e}"));
    let needed: BTreeMap<String, String> = needed
        .into_iter()
        .map(|(name, access)| (name, access.as_str().to_owned()))
        .collect();
    assert_eq!(asked, needed);
    assert_eq!(
        asked,
        BTreeMap::from([
            ("actions".to_owned(), "write".to_owned()),
            ("contents".to_owned(), "read".to_owned()),
            ("deployments".to_owned(), "write".to_owned()),
            ("metadata".to_owned(), "read".to_owned()),
        ]),
        "the README's GitHub App section lists these"
    );
}

#[test]
fn the_slack_app_asks_for_exactly_the_bot_scopes_the_client_needs() {
    let manifest = json("manifests/slack-app.json", SLACK_MANIFEST);
    let scopes = strings(
        "oauth_config.scopes.bot",
        &manifest["oauth_config"]["scopes"]["bot"],
    );
    assert_eq!(
        set_of("oauth_config.scopes.bot", &scopes),
        set_of("BOT_SCOPES", BOT_SCOPES)
    );
    assert!(
        manifest["oauth_config"]["scopes"].get("user").is_none(),
        "shipgate acts as its bot only"
    );

    // Every Web API method the client names (`chat.postMessage`, …) is in SLACK_METHODS.
    let called: Vec<String> = code_lines(SLACK_CLIENT)
        .flat_map(literals)
        .filter(|s| {
            s.split_once('.').is_some_and(|(family, method)| {
                !family.is_empty()
                    && family.chars().all(|c| c.is_ascii_lowercase())
                    && !method.is_empty()
                    && method.chars().all(|c| c.is_ascii_alphabetic())
            })
        })
        .collect();
    let known: Vec<&str> = SLACK_METHODS.iter().map(|(m, _)| *m).collect();
    assert_eq!(
        set_of("the client's methods", &called),
        set_of("SLACK_METHODS", &known),
        "a Slack method was added or removed: settle its scope in SLACK_METHODS and BOT_SCOPES"
    );
    let needed: BTreeSet<String> = SLACK_METHODS
        .iter()
        .filter_map(|(_, scope)| scope.map(str::to_owned))
        .collect();
    assert_eq!(needed, set_of("BOT_SCOPES", BOT_SCOPES));
}

fn setup(app: &str, url: &str) -> Output {
    let mut cmd = Command::new(testkit::shipgate_binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("SHIPGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(["setup", app, "--url", url])
        .output()
        .expect("run shipgate setup")
}

fn printed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("the manifest is UTF-8")
}

#[test]
fn setup_github_app_prints_the_manifest_with_the_webhook_url() {
    let text = printed(&setup("github-app", BASE));
    assert_eq!(
        text,
        GITHUB_MANIFEST.replace(PLACEHOLDER, BASE),
        "not the checked-in manifest with the base URL filled in \
         (after an edit of manifests/ alone, rebuild: cargo build -p shipgate-cli)"
    );
    let manifest = json("setup github-app's output", &text);
    assert_eq!(
        manifest["hook_attributes"]["url"],
        "https://deploy.example.com/webhooks/github"
    );
    assert_eq!(manifest["url"], BASE);
    assert_eq!(
        manifest["redirect_url"],
        "https://deploy.example.com/healthz"
    );
}

#[test]
fn setup_slack_app_prints_the_manifest_with_the_interactivity_url() {
    let text = printed(&setup("slack-app", BASE));
    assert_eq!(
        text,
        SLACK_MANIFEST.replace(PLACEHOLDER, BASE),
        "not the checked-in manifest with the base URL filled in \
         (after an edit of manifests/ alone, rebuild: cargo build -p shipgate-cli)"
    );
    let manifest = json("setup slack-app's output", &text);
    assert_eq!(
        manifest["settings"]["interactivity"]["request_url"],
        "https://deploy.example.com/webhooks/slack"
    );
}

#[test]
fn setup_takes_a_stack_output_and_loopback_http() {
    let api = "https://abc123.execute-api.eu-west-1.amazonaws.com";
    let text = printed(&setup("github-app", &format!("{api}/webhooks/github")));
    let manifest = json("setup github-app's output", &text);
    assert_eq!(
        manifest["hook_attributes"]["url"],
        format!("{api}/webhooks/github")
    );

    let out = setup("slack-app", "http://127.0.0.1:8080/");
    let manifest = json("setup slack-app's output", &printed(&out));
    assert_eq!(
        manifest["settings"]["interactivity"]["request_url"],
        "http://127.0.0.1:8080/webhooks/slack"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: ") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
fn setup_refuses_a_bad_url_with_exit_2() {
    for (app, url) in [
        ("github-app", "deploy.example.com"),
        ("github-app", "http://deploy.example.com"),
        ("slack-app", "ftp://deploy.example.com"),
        ("slack-app", "https://deploy.example.com/?x=1"),
        ("github-app", ""),
    ] {
        let out = setup(app, url);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{app} --url {url:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{app} --url {url:?} printed something"
        );
        assert!(
            stderr.contains(&format!("shipgate setup {app}: --url")),
            "{app} --url {url:?}: {stderr}"
        );
    }
}
