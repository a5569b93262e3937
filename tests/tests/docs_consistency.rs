//! What the documentation names exists.
//!
//! - Template logical ids: every `…Function` named in README.md, CHANGELOG.md, docs/*.md and
//!   events/**/*.md is a function of `template.yaml`, every `sam local invoke ID` names one,
//!   and a name in backticks that matches a template name (resource, parameter or output) in
//!   all but letter case is spelled as the template spells it.
//! - Sample events: every `events/…json` these files name, and every bare `….json` an events
//!   README names beside it, exists.
//! - `events/env.json` (`sam local invoke --env-vars`): keyed by function logical ids, it lets
//!   each function start without Secrets Manager or SSM, and its secrets are the ones the sample
//!   events are signed with.
//! - The CloudWatch dashboard charts in shipgate's namespace exactly the metrics the code emits
//!   (`shipgate::jobs::emf::METRICS`).
//!
//! The template is read by simple line parsing: the two-space-indented keys under `Resources:`,
//! `Parameters:` and `Outputs:`, and each resource's `Type:`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde_json::Value;
use shipgate::config::{self, AlertSettings, GitHubSettings, SlackApprovalSettings};
use shipgate::domain::policy::Policy;
use shipgate::jobs::emf;
use shipgate::signature::{verify_bearer, verify_github, verify_slack};

const FUNCTION_TYPE: &str = "AWS::Serverless::Function";
const ENV_FILE: &str = "events/env.json";
/// SAM's section of an env-vars file that applies to every function.
const ALL_FUNCTIONS: &str = "Parameters";

fn root() -> PathBuf {
    testkit::workspace_root()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names `template.yaml` defines.
struct Template {
    /// Logical id → `Type`.
    resources: BTreeMap<String, String>,
    /// Parameter and output names.
    others: BTreeSet<String>,
    text: String,
}

impl Template {
    fn load() -> Self {
        let text = read("template.yaml");
        let mut resources = BTreeMap::new();
        let mut others = BTreeSet::new();
        let mut section = String::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.starts_with(|c: char| c.is_ascii_alphabetic()) {
                section = line.split(':').next().unwrap_or_default().to_string();
                current = None;
            } else if let Some(key) = two_space_key(line) {
                current = None;
                match section.as_str() {
                    "Resources" => {
                        resources.insert(key.clone(), String::new());
                        current = Some(key);
                    }
                    "Parameters" | "Outputs" => {
                        others.insert(key);
                    }
                    _ => {}
                }
            } else if let (Some(id), Some(ty)) = (&current, line.strip_prefix("    Type:")) {
                if let Some(t) = resources.get_mut(id).filter(|t| t.is_empty()) {
                    *t = ty.trim().to_string();
                }
            }
        }
        assert!(
            resources.len() > 10 && others.len() > 10,
            "template.yaml: too few names parsed ({} resources, {} parameters and outputs)",
            resources.len(),
            others.len()
        );
        Template {
            resources,
            others,
            text,
        }
    }

    fn functions(&self) -> BTreeSet<&str> {
        self.resources
            .iter()
            .filter(|(_, t)| *t == FUNCTION_TYPE)
            .map(|(id, _)| id.as_str())
            .collect()
    }

    fn is_function(&self, id: &str) -> bool {
        self.resources.get(id).map(String::as_str) == Some(FUNCTION_TYPE)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.resources
            .keys()
            .chain(self.others.iter())
            .map(String::as_str)
    }
}

/// `  Name:` (two spaces, an identifier, a colon, nothing else).
fn two_space_key(line: &str) -> Option<String> {
    let rest = line.strip_prefix("  ")?;
    let key = rest.trim_end().strip_suffix(':')?;
    let ok = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric());
    ok.then(|| key.to_string())
}

/// README.md, CHANGELOG.md, docs/*.md and events/**/*.md, relative to the workspace root.
fn doc_files() -> Vec<String> {
    let mut out = vec!["README.md".to_string()];
    if root().join("CHANGELOG.md").is_file() {
        out.push("CHANGELOG.md".into());
    }
    out.extend(files_under("docs", false));
    out.extend(files_under("events", true));
    out.retain(|f| f.ends_with(".md"));
    out.sort();
    out
}

fn files_under(dir: &str, recursive: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        let abs = root().join(&d);
        for entry in std::fs::read_dir(&abs).unwrap_or_else(|e| panic!("{}: {e}", abs.display())) {
            let name = entry.expect("dir entry").file_name();
            let rel = d.join(name);
            if root().join(&rel).is_dir() {
                if recursive {
                    stack.push(rel);
                }
            } else {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Identifier-like tokens of a line (letters, digits, `_`).
fn identifiers(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty())
}

/// Inline code spans outside fenced blocks (a span may wrap onto the next line), with the line
/// each starts on.
fn code_spans(text: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let prose: Vec<&str> = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                ""
            } else if fenced {
                ""
            } else {
                line
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut line = 1;
    for (i, part) in prose.join("\n").split('`').enumerate() {
        if i % 2 == 1 {
            out.push((line, part.replace('\n', " ")));
        }
        line += part.matches('\n').count();
    }
    out
}

fn is_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The word after each `marker` in `line` (quotes stripped).
fn words_after<'a>(line: &'a str, marker: &str) -> Vec<&'a str> {
    line.match_indices(marker)
        .filter_map(|(i, _)| line[i + marker.len()..].split_whitespace().next())
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'' || c == '`'))
        .collect()
}

#[test]
fn template_logical_ids_named_in_the_docs_exist() {
    let template = Template::load();
    let functions = template.functions();
    assert_eq!(
        functions.len(),
        5,
        "template.yaml: expected five functions, parsed {functions:?}"
    );
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in doc_files() {
        let text = read(&file);
        for (n, line) in text.lines().enumerate() {
            let at = format!("{file}:{}", n + 1);
            for word in identifiers(line) {
                let named_function = word.len() > "Function".len()
                    && word.ends_with("Function")
                    && word.starts_with(|c: char| c.is_ascii_uppercase());
                if named_function {
                    seen.insert(word.to_string());
                    if !template.is_function(word) {
                        problems.push(format!(
                            "{at}: `{word}` is not a function of template.yaml (its functions: {functions:?})"
                        ));
                    }
                }
            }
            for id in words_after(line, "sam local invoke ") {
                if is_identifier(id) && !template.is_function(id) {
                    problems.push(format!(
                        "{at}: `sam local invoke {id}` names no function of template.yaml"
                    ));
                }
            }
            for id in words_after(line, "--logical-resource-id ") {
                if is_identifier(id) && !template.resources.contains_key(id) {
                    problems.push(format!(
                        "{at}: `--logical-resource-id {id}` names no resource of template.yaml"
                    ));
                }
            }
        }
        for (n, span) in code_spans(&text) {
            if !is_identifier(&span) || template.names().any(|name| name == span) {
                continue;
            }
            if let Some(name) = template
                .names()
                .find(|name| name.eq_ignore_ascii_case(&span))
            {
                problems.push(format!(
                    "{file}:{n}: `{span}` is spelled `{name}` in template.yaml"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the docs name template logical ids that do not exist:\n{}",
        problems.join("\n")
    );
    assert!(
        seen.len() >= 5,
        "the docs name only {seen:?}: every function should be named somewhere"
    );
}

/// `….json` tokens of a line.
fn json_paths(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| c.is_whitespace() || "`|()[],;:\"'<>".contains(c))
        .map(|t| t.trim_end_matches('.'))
        .filter(|t| t.ends_with(".json") && !t.contains(['*', '{', '…']))
}

#[test]
fn every_sample_event_file_the_docs_name_exists() {
    let top_dirs: BTreeSet<String> = std::fs::read_dir(root())
        .expect("workspace root")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let dir = Path::new(&file).parent().unwrap_or(Path::new(""));
        let in_events = file.starts_with("events/");
        for (n, line) in read(&file).lines().enumerate() {
            for token in json_paths(line) {
                let from_root = token
                    .split('/')
                    .next()
                    .is_some_and(|first| token.contains('/') && top_dirs.contains(first));
                let path = if from_root && !token.starts_with("target/") {
                    PathBuf::from(token)
                } else if in_events
                    && (!token.contains('/')
                        || token
                            .split('/')
                            .next()
                            .is_some_and(|first| root().join(dir).join(first).is_dir()))
                {
                    // Beside the README, or in a folder beside it.
                    dir.join(token)
                } else {
                    continue;
                };
                checked += 1;
                if !root().join(&path).is_file() {
                    problems.push(format!(
                        "{file}:{}: `{token}` ({}) does not exist",
                        n + 1,
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the docs name files that do not exist:\n{}",
        problems.join("\n")
    );
    assert!(
        checked >= 20,
        "only {checked} sample event names found in the docs"
    );
}

/// `events/env.json`: function logical id (or `Parameters`, for every function) → variables.
fn env_file() -> BTreeMap<String, BTreeMap<String, String>> {
    let value: Value = serde_json::from_str(&read(ENV_FILE))
        .unwrap_or_else(|e| panic!("{ENV_FILE} is not JSON: {e}"));
    let Value::Object(sections) = value else {
        panic!("{ENV_FILE}: expected an object keyed by function logical id");
    };
    sections
        .into_iter()
        .map(|(key, vars)| {
            let Value::Object(vars) = vars else {
                panic!("{ENV_FILE}: `{key}` is not an object of variables");
            };
            let vars = vars
                .into_iter()
                .map(|(name, v)| match v {
                    Value::String(s) => (name, s),
                    other => panic!("{ENV_FILE}: {key}.{name} is {other}, not a string"),
                })
                .collect();
            (key, vars)
        })
        .collect()
}

/// The variables `sam local invoke FUNCTION --env-vars events/env.json` gives `function`
/// (`Parameters`, then the function's own section).
fn env_for(
    env: &BTreeMap<String, BTreeMap<String, String>>,
    function: &str,
) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = HashMap::new();
    for section in [ALL_FUNCTIONS, function] {
        if let Some(section) = env.get(section) {
            vars.extend(section.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    vars
}

/// An API Gateway sample event: its headers (lower-case names) and body.
fn sample(path: &str) -> (HashMap<String, String>, String) {
    let event: Value = serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let headers = event["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("{path}: no headers"))
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let body = event["body"].as_str().unwrap_or_default().to_string();
    (headers, body)
}

fn secret(vars: &HashMap<String, String>, name: &str) -> SecretString {
    SecretString::from(
        vars.get(name)
            .unwrap_or_else(|| panic!("{ENV_FILE}: {name} is not set"))
            .clone(),
    )
}

#[test]
fn the_env_vars_file_names_functions_and_lets_each_start_without_secrets_manager_or_ssm() {
    let template = Template::load();
    let env = env_file();
    for key in env.keys() {
        assert!(
            key == ALL_FUNCTIONS || template.is_function(key),
            "{ENV_FILE}: `{key}` is not a function of template.yaml (its functions: {:?})",
            template.functions()
        );
    }
    // Every SHIPGATE_SECRETS_* the template sets is empty here, so no secret is fetched.
    let secret_vars: BTreeSet<&str> = template
        .text
        .lines()
        .filter_map(|l| l.trim_start().split(':').next())
        .filter(|k| k.starts_with("SHIPGATE_SECRETS_"))
        .collect();
    assert!(
        !secret_vars.is_empty(),
        "template.yaml sets no SHIPGATE_SECRETS_* variable"
    );
    for function in template.functions() {
        assert!(
            env.contains_key(function),
            "{ENV_FILE}: no section for {function}"
        );
        let vars = env_for(&env, function);
        for name in &secret_vars {
            assert_eq!(
                vars.get(*name).map(String::as_str),
                Some(""),
                "{ENV_FILE}: {function} must set {name} to \"\" so no Secrets Manager secret is read"
            );
        }
        assert_eq!(
            vars.get(config::POLICY_PARAMETER_VAR).map(String::as_str),
            Some(""),
            "{ENV_FILE}: {function} must set {} to \"\" so SSM is not read",
            config::POLICY_PARAMETER_VAR
        );
        let policy = vars
            .get(config::POLICY_VAR)
            .unwrap_or_else(|| panic!("{ENV_FILE}: {function} has no {}", config::POLICY_VAR));
        Policy::parse(ENV_FILE, policy)
            .unwrap_or_else(|e| panic!("{ENV_FILE}: {function}'s policy is invalid: {e}"));
        for name in [config::STATE_TABLE_VAR, config::TOPIC_ARN_VAR] {
            assert!(
                config::optional(&vars, name).is_some(),
                "{ENV_FILE}: {function} needs {name}"
            );
        }
    }

    let github = env_for(&env, "GithubWebhookFunction");
    GitHubSettings::from_vars(&github).expect("the GitHub webhook function's settings");
    let slack = env_for(&env, "SlackApprovalFunction");
    let settings = SlackApprovalSettings::from_vars(&slack).expect("the Slack function's settings");
    let alert = env_for(&env, "AlertWebhookFunction");
    AlertSettings::from_vars(&alert).expect("the alert function's settings");

    // The secrets are the ones the sample events are signed with.
    let webhook_secret = secret(&github, GitHubSettings::WEBHOOK_SECRET);
    let mut github_samples = 0;
    for file in files_under("events/github-webhook", false) {
        if file.ends_with(".json") {
            let (headers, body) = sample(&file);
            let signature = headers.get("x-hub-signature-256").map(String::as_str);
            verify_github(&webhook_secret, body.as_bytes(), signature)
                .unwrap_or_else(|e| panic!("{file}: not signed with {ENV_FILE}'s secret: {e}"));
            github_samples += 1;
        }
    }
    assert!(github_samples >= 5, "only {github_samples} GitHub samples");

    let (headers, body) = sample("events/slack-approval/apigw-block-actions-approve.json");
    let timestamp = headers
        .get("x-slack-request-timestamp")
        .expect("timestamp header");
    let now: i64 = timestamp.parse().expect("numeric timestamp");
    verify_slack(
        &settings.signing_secret,
        body.as_bytes(),
        Some(timestamp),
        headers.get("x-slack-signature").map(String::as_str),
        now,
    )
    .expect("the Slack sample is signed with the env file's signing secret");
    let payload: Value = serde_urlencoded::from_str::<HashMap<String, String>>(&body)
        .ok()
        .and_then(|form| serde_json::from_str(form.get("payload")?).ok())
        .expect("the Slack sample's payload");
    assert_eq!(payload["team"]["id"], settings.team_id.as_str());
    assert_eq!(
        payload["api_app_id"].as_str(),
        settings.app_id.as_deref(),
        "the Slack sample's app"
    );

    let token = secret(&alert, config::ALERT_TOKEN);
    for file in files_under("events/alert-webhook", false) {
        if file.ends_with(".json") && file.contains("/apigw-") {
            let (headers, _) = sample(&file);
            verify_bearer(&token, headers.get("authorization").map(String::as_str))
                .unwrap_or_else(|e| panic!("{file}: not the env file's alert token: {e}"));
        }
    }
}

/// The JSON of the `AWS::CloudWatch::Dashboard`'s `DashboardBody` (a `!Sub |` block).
fn dashboard_body(template: &Template) -> Value {
    let (id, _) = template
        .resources
        .iter()
        .find(|(_, t)| *t == "AWS::CloudWatch::Dashboard")
        .expect("template.yaml has a dashboard");
    let mut lines = template.text.lines();
    lines
        .by_ref()
        .find(|l| *l == format!("  {id}:"))
        .expect("the dashboard's key");
    let header = lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("DashboardBody:"))
        .expect("DashboardBody");
    assert!(
        header.trim_end().ends_with('|'),
        "DashboardBody is expected as a block scalar: {header}"
    );
    let indent = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect();
    serde_json::from_str(&body.join("\n"))
        .unwrap_or_else(|e| panic!("the dashboard body is not JSON: {e}"))
}

/// Metric names in shipgate's namespace that the dashboard charts: `[NAMESPACE, NAME, …]`
/// rows (with CloudWatch's `"."`/`"..."` shorthands) and `SEARCH('{NAMESPACE,…}
/// MetricName="NAME" …')` expressions.
fn charted_metrics(body: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let schema = format!("{{{},", emf::NAMESPACE);
    let widgets = body["widgets"].as_array().expect("widgets");
    for widget in widgets {
        let Some(rows) = widget["properties"]["metrics"].as_array() else {
            continue;
        };
        let mut previous: Vec<Value> = Vec::new();
        for row in rows {
            let row = row.as_array().expect("a metrics row is an array");
            if let Some(expression) = row.first().and_then(|v| v["expression"].as_str()) {
                if expression.contains(&schema) {
                    for part in expression.split("MetricName=\"").skip(1) {
                        let name = part.split('"').next().unwrap_or_default();
                        out.insert(name.to_string());
                    }
                }
                continue;
            }
            // `["...", X]`: the previous row with its last value replaced by X; `"."` at a
            // position: the previous row's value there.
            let full: Vec<Value> = if row.first().and_then(Value::as_str) == Some("...") {
                let rest = &row[1..];
                let keep = previous.len().saturating_sub(rest.len());
                previous[..keep].iter().chain(rest).cloned().collect()
            } else {
                row.iter()
                    .enumerate()
                    .map(|(i, v)| match v.as_str() {
                        Some(".") => previous.get(i).cloned().unwrap_or(Value::Null),
                        _ => v.clone(),
                    })
                    .collect()
            };
            if full.first().and_then(Value::as_str) == Some(emf::NAMESPACE) {
                if let Some(name) = full.get(1).and_then(Value::as_str) {
                    out.insert(name.to_string());
                }
            }
            previous = full;
        }
    }
    out
}

#[test]
fn the_dashboard_charts_the_metrics_shipgate_emits() {
    let template = Template::load();
    let body = dashboard_body(&template);
    let charted = charted_metrics(&body);
    let emitted: BTreeSet<String> = emf::METRICS.iter().map(|m| m.to_string()).collect();
    let unknown: Vec<&String> = charted.difference(&emitted).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard charts {unknown:?} in namespace {:?}, which the code does not emit (it emits {emitted:?})",
        emf::NAMESPACE
    );
    let uncharted: Vec<&String> = emitted.difference(&charted).collect();
    assert!(
        uncharted.is_empty(),
        "the code emits {uncharted:?}, which the dashboard does not chart"
    );
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped, spaces
/// as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside fenced blocks; repeats get `-1`, `-2`…).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if fenced || !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug = anchor(&line[hashes..]);
        let n = seen.entry(slug.clone()).or_default();
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

#[test]
fn relative_links_in_the_docs_point_at_files_and_headings_that_exist() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = read(&file);
        let dir = Path::new(&file).parent().unwrap_or(Path::new(""));
        for (n, line) in text.lines().enumerate() {
            for part in line.split("](").skip(1) {
                let Some(target) = part.split(')').next().filter(|t| !t.contains(' ')) else {
                    continue;
                };
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
                let rel = if path.is_empty() {
                    PathBuf::from(&file)
                } else {
                    dir.join(path)
                };
                let abs = root().join(&rel);
                if !abs.exists() {
                    problems.push(format!("{file}:{}: ({target}) does not exist", n + 1));
                } else if !fragment.is_empty() && rel.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&abs).unwrap_or_default();
                    if !anchors(&target_text).contains(fragment) {
                        problems.push(format!(
                            "{file}:{}: ({target}) names no heading of {}",
                            n + 1,
                            rel.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links in the docs:\n{}",
        problems.join("\n")
    );
    assert!(checked >= 20, "only {checked} relative links found");
}

#[test]
fn the_systemd_unit_in_operations_md_is_the_example_file() {
    let unit = read("examples/self-hosted/shipgate.service");
    let docs = read("docs/operations.md");
    let section = docs
        .split("### Running it as a service")
        .nth(1)
        .expect("docs/operations.md has \"Running it as a service\"");
    let shown = section
        .split("```ini\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section shows the unit in an ini block");
    assert_eq!(
        shown, unit,
        "the unit in docs/operations.md differs from examples/self-hosted/shipgate.service"
    );
    for file in ["Caddyfile", "nginx.conf", "shipgate.service"] {
        assert!(
            section.contains(&format!("(../examples/self-hosted/{file})")),
            "docs/operations.md does not link examples/self-hosted/{file}"
        );
    }
}
