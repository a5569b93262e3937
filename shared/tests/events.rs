//! Every sample event under `events/` (all functions) is what its Lambda trigger delivers:
//! `apigw-*` parse as API Gateway HTTP API (payload 2.0) requests, `sqs-*` as SQS events,
//! `sns-*` as SNS events, and the scheduled-jobs inputs as `{"job": NAME}` objects or
//! EventBridge events naming a job. The GitHub webhook samples carry a valid
//! `X-Hub-Signature-256` for the demo secret. A file that matches no rule fails the test, so
//! a new sample cannot slip in unchecked.

use std::path::{Path, PathBuf};

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sns::SnsEvent;
use aws_lambda_events::sqs::SqsEvent;
use secrecy::SecretString;
use serde_json::Value;
use shipgate::jobs::JobName;
use shipgate::signature::verify_github;

/// The secret the GitHub webhook samples are signed with (named in their README).
const GITHUB_DEMO_SECRET: &str = "shipgate-demo-webhook-secret";

/// The GitHub events shipgate acts on; each must have at least one sample.
const GITHUB_EVENTS: [&str; 6] = [
    "deployment_protection_rule",
    "deployment",
    "deployment_status",
    "workflow_run",
    "push",
    "ping",
];

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// Every file below `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = read(path);
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de)
        .unwrap_or_else(|e| panic!("{}: {} at {}", path.display(), e, e.path()))
}

fn header<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks an HTTP API request; returns the GitHub event name for GitHub samples.
fn check_apigw(path: &Path, function: &str) -> Option<String> {
    let req: ApiGatewayV2httpRequest = parse(path);
    let name = path.display();
    assert_eq!(
        req.version.as_deref(),
        Some("2.0"),
        "{name}: payload version"
    );
    let raw_path = req.raw_path.clone().unwrap_or_default();
    assert!(
        raw_path.starts_with("/webhooks/"),
        "{name}: rawPath {raw_path}"
    );
    assert_eq!(
        req.request_context.http.method,
        http::Method::POST,
        "{name}: method"
    );
    assert!(!req.is_base64_encoded, "{name}: plain-text body expected");
    let body = req.body.clone().unwrap_or_default();
    assert!(!body.is_empty(), "{name}: no body");
    if let Some(len) = header(&req, "content-length") {
        assert_eq!(len, body.len().to_string(), "{name}: content-length");
    }
    if function != "github-webhook" {
        return None;
    }
    assert_eq!(raw_path, "/webhooks/github", "{name}");
    let event = header(&req, "x-github-event")
        .unwrap_or_else(|| panic!("{name}: no x-github-event"))
        .to_string();
    assert!(
        header(&req, "x-github-delivery").is_some_and(|d| !d.is_empty()),
        "{name}: no x-github-delivery"
    );
    verify_github(
        &SecretString::from(GITHUB_DEMO_SECRET),
        body.as_bytes(),
        header(&req, "x-hub-signature-256"),
    )
    .unwrap_or_else(|e| panic!("{name}: signature does not verify: {e}"));
    let payload: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
    check_github_payload(path, &event, &payload);
    Some(event)
}

/// The fields shipgate reads from each GitHub event are there.
fn check_github_payload(path: &Path, event: &str, p: &Value) {
    let name = path.display();
    if event != "ping" {
        assert!(
            p["repository"]["full_name"].is_string(),
            "{name}: repository.full_name"
        );
    }
    match event {
        "deployment_protection_rule" => {
            let url = p["deployment_callback_url"].as_str().unwrap_or_default();
            let run = url
                .strip_prefix("https://api.github.com/repos/")
                .and_then(|rest| rest.split_once("/actions/runs/"))
                .and_then(|(_, rest)| rest.strip_suffix("/deployment_protection_rule"));
            assert!(
                run.is_some_and(|id| id.parse::<u64>().is_ok()),
                "{name}: callback URL {url}"
            );
            assert!(
                p["sha"].as_str().is_some_and(|s| s.len() == 40),
                "{name}: sha"
            );
            assert!(p["ref"].is_string(), "{name}: ref");
            assert!(p["environment"].is_string(), "{name}: environment");
            assert!(p["installation"]["id"].is_u64(), "{name}: installation id");
        }
        "deployment" | "deployment_status" => {
            assert!(p["deployment"]["id"].is_u64(), "{name}: deployment.id");
            assert!(p["deployment"]["sha"].is_string(), "{name}: deployment.sha");
            if event == "deployment_status" {
                assert!(
                    p["deployment_status"]["state"].is_string(),
                    "{name}: deployment_status.state"
                );
            }
        }
        "workflow_run" => {
            assert!(
                p["workflow_run"]["head_sha"].is_string(),
                "{name}: head_sha"
            );
            assert!(
                p["workflow_run"]["updated_at"].is_string(),
                "{name}: updated_at"
            );
        }
        "push" => {
            assert!(p["after"].is_string(), "{name}: after");
            assert!(p["commits"].is_array(), "{name}: commits");
        }
        "ping" => assert!(p["zen"].is_string(), "{name}: zen"),
        other => panic!("{name}: shipgate does not handle {other:?} events"),
    }
}

/// `{"job": NAME, ...}` or an EventBridge event whose `detail` names the job.
fn check_schedule_input(path: &Path) {
    let value: Value = parse(path);
    let job = if value.get("detail-type").is_some() {
        let event: EventBridgeEvent<Value> = parse(path);
        assert_eq!(event.source, "aws.events", "{}", path.display());
        event.detail["job"].as_str().map(str::to_string)
    } else {
        value["job"].as_str().map(str::to_string)
    };
    let job = job.unwrap_or_else(|| panic!("{}: no job name", path.display()));
    job.parse::<JobName>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn every_sample_event_parses_as_its_trigger_delivers_it() {
    let root = events_dir();
    let mut unmatched = Vec::new();
    let mut github_events = Vec::new();
    let mut checked = 0;
    for path in files(&root) {
        let rel = path.strip_prefix(&root).expect("under events/");
        let function = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .to_string();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_string();
        // Documentation, and the variables `sam local invoke --env-vars` reads.
        if file.ends_with(".md") || rel == std::path::Path::new("env.json") {
            continue;
        }
        if !file.ends_with(".json") {
            unmatched.push(rel.display().to_string());
            continue;
        }
        if file.starts_with("apigw-") {
            if let Some(event) = check_apigw(&path, &function) {
                github_events.push(event);
            }
        } else if file.starts_with("sqs-") {
            let event: SqsEvent = parse(&path);
            assert!(!event.records.is_empty(), "{}: no records", path.display());
        } else if file.starts_with("sns-") {
            let event: SnsEvent = parse(&path);
            assert!(!event.records.is_empty(), "{}: no records", path.display());
        } else if function == "scheduled-jobs" {
            check_schedule_input(&path);
        } else {
            unmatched.push(rel.display().to_string());
            continue;
        }
        checked += 1;
    }
    assert!(
        unmatched.is_empty(),
        "sample events that match no rule (name them apigw-*, sqs-*, sns-*, or put schedule inputs under scheduled-jobs/): {unmatched:?}"
    );
    assert!(
        checked >= 20,
        "only {checked} samples found under {}",
        root.display()
    );
    for event in GITHUB_EVENTS {
        assert!(
            github_events.iter().any(|e| e == event),
            "no events/github-webhook sample of {event}"
        );
    }
}

#[test]
fn a_changed_github_sample_body_no_longer_verifies() {
    let path = events_dir().join("github-webhook/apigw-ping.json");
    let req: ApiGatewayV2httpRequest = parse(&path);
    let body = req
        .body
        .clone()
        .unwrap_or_default()
        .replace("Design", "design");
    assert!(verify_github(
        &SecretString::from(GITHUB_DEMO_SECRET),
        body.as_bytes(),
        header(&req, "x-hub-signature-256"),
    )
    .is_err());
}
