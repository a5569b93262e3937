//! Black-box tests of notification delivery against fake Slack and PagerDuty servers that
//! check the exact requests made.

#[path = "common/notifier.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use notifier::{deliver, DeliverError, Delivered, Failure, Outcome};
use serde_json::json;
use shipgate::domain::deployment::{Approval, SlackRef, State};
use shipgate::notify::{DeploymentSummary, Notification, NotificationBody};
use shipgate::outbound::PagerDutyAction;
use shipgate::render;
use shipgate::service::update_deployment;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const TS: &str = "1741089600.000100";

fn rendered(dep: &shipgate::domain::deployment::Deployment) -> render::SlackMessage {
    render::deployment_message(
        &DeploymentSummary::from(dep),
        render::DEFAULT_GITHUB_WEB_URL,
    )
}

fn action_ids(blocks: &serde_json::Value) -> Vec<String> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            format!(
                "{}={}",
                e["action_id"].as_str().unwrap_or(""),
                e["value"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn approve(services: &shipgate::service::Services, id: &str, who: &str, decide: bool) {
    update_deployment(services, id, |dep| {
        dep.approvals.push(Approval {
            approver: who.into(),
            at: now(),
        });
        if decide {
            dep.state = State::Approved;
        }
        Some(Vec::new())
    })
    .await
    .expect("update")
    .expect("deployment exists");
}

#[tokio::test]
async fn approval_request_is_posted_then_progress_and_decision_update_the_same_message() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    slack_updates_ok(&fakes.slack).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-approval")).await;

    // 1. Approval requested: a new message with the buttons and "0 of 2".
    let requested = Notification::deployment(now(), &dep, "approval_requested");
    let delivered = deliver(&app, &requested).await.expect("delivered");
    assert_eq!(
        delivered,
        Delivered::Sent(vec![Outcome::SlackPosted {
            channel: "C0PRODUCTION".into(),
            ts: TS.into()
        }])
    );
    let stored = services
        .repo
        .get_deployment("dep-approval")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        stored.slack,
        Some(SlackRef {
            channel: "C0PRODUCTION".into(),
            ts: TS.into()
        })
    );

    // 2. One approval: the same message, updated, "1 of 2".
    approve(&services, "dep-approval", "U0APPROV1", false).await;
    let progress_dep = services
        .repo
        .get_deployment("dep-approval")
        .await
        .expect("read")
        .expect("exists");
    deliver(
        &app,
        &Notification::deployment(now(), &progress_dep, "approval_progress"),
    )
    .await
    .expect("delivered");

    // 3. Second approval decides it: updated again, "approved by …", no buttons.
    approve(&services, "dep-approval", "U0APPROV2", true).await;
    let approved_dep = services
        .repo
        .get_deployment("dep-approval")
        .await
        .expect("read")
        .expect("exists");
    let delivered = deliver(
        &app,
        &Notification::deployment(now(), &approved_dep, "approved"),
    )
    .await
    .expect("delivered");
    assert_eq!(
        delivered,
        Delivered::Sent(vec![Outcome::SlackUpdated {
            channel: "C0PRODUCTION".into(),
            ts: TS.into()
        }])
    );

    let requests = fakes.slack_requests().await;
    assert_eq!(requests.len(), 3);

    assert_slack_call(&requests[0], "chat.postMessage");
    let first = rendered(&dep);
    assert_eq!(
        body(&requests[0]),
        json!({"channel": "C0PRODUCTION", "text": first.text, "blocks": first.blocks})
    );
    assert!(body(&requests[0])["text"]
        .as_str()
        .unwrap_or("")
        .ends_with("0 of 2 approvals"));
    assert!(body(&requests[0])["blocks"]
        .to_string()
        .contains("*Approvals*\\n0 of 2"));
    assert_eq!(
        action_ids(&body(&requests[0])["blocks"]),
        vec![
            "shipgate_approve=dep-approval:8c1e4f2a9b7d43e6a0f5c2d1b8e7a694",
            "shipgate_reject=dep-approval:8c1e4f2a9b7d43e6a0f5c2d1b8e7a694"
        ]
    );

    assert_slack_call(&requests[1], "chat.update");
    let second = rendered(&progress_dep);
    assert_eq!(
        body(&requests[1]),
        json!({"channel": "C0PRODUCTION", "ts": TS, "text": second.text, "blocks": second.blocks})
    );
    assert!(body(&requests[1])["blocks"]
        .to_string()
        .contains("*Approvals*\\n1 of 2"));

    assert_slack_call(&requests[2], "chat.update");
    let third = body(&requests[2]);
    assert_eq!(third["channel"], "C0PRODUCTION");
    assert_eq!(third["ts"], TS);
    assert!(third["blocks"]
        .to_string()
        .contains("Approved by <@U0APPROV1>, <@U0APPROV2>"));
    assert!(action_ids(&third["blocks"]).is_empty());
    // Buttons carry the id and nonce only: no token anywhere in what Slack receives.
    for request in &requests {
        assert!(!String::from_utf8_lossy(&request.body).contains(BOT_TOKEN));
    }
}

#[tokio::test]
async fn a_notification_delivered_twice_is_sent_once() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-twice")).await;
    let n = Notification::deployment(now(), &dep, "approval_requested");

    assert!(matches!(deliver(&app, &n).await, Ok(Delivered::Sent(_))));
    assert_eq!(
        deliver(&app, &n).await.expect("second"),
        Delivered::Duplicate
    );
    assert_eq!(fakes.slack_requests().await.len(), 1);
}

#[tokio::test]
async fn an_older_notification_arriving_late_renders_the_current_state() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    slack_updates_ok(&fakes.slack).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-late")).await;
    let requested = Notification::deployment(now(), &dep, "approval_requested");
    approve(&services, "dep-late", "U0APPROV1", false).await;
    approve(&services, "dep-late", "U0APPROV2", true).await;

    deliver(&app, &requested).await.expect("delivered");
    let posted = body(&fakes.slack_requests().await[0]);
    assert!(
        action_ids(&posted["blocks"]).is_empty(),
        "no buttons on an approved deployment"
    );
    assert!(posted["blocks"].to_string().contains("Approved by"));
}

#[tokio::test]
async fn slack_rate_limit_is_waited_out_and_the_message_sent_once() {
    let fakes = Fakes::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fakes.slack)
        .await;
    slack_posts_ok(&fakes.slack, TS).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-429")).await;

    let started = Instant::now();
    let delivered = deliver(
        &app,
        &Notification::deployment(now(), &dep, "approval_requested"),
    )
    .await
    .expect("delivered after the wait");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert!(
        matches!(delivered, Delivered::Sent(ref o) if matches!(o[..], [Outcome::SlackPosted { .. }]))
    );
    let requests = fakes.slack_requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        body(&requests[0]),
        body(&requests[1]),
        "the same message, retried"
    );
    let stored = services
        .repo
        .get_deployment("dep-429")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.slack.map(|s| s.ts), Some(TS.to_owned()));
}

#[tokio::test]
async fn concurrent_first_notifications_for_one_deployment_post_one_message() {
    let fakes = Fakes::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(300))
                .set_body_json(json!({"ok": true, "channel": "C0PRODUCTION", "ts": TS})),
        )
        .mount(&fakes.slack)
        .await;
    slack_updates_ok(&fakes.slack).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-race")).await;
    let a = Notification::deployment(now(), &dep, "approval_requested");
    let b = Notification::deployment(now(), &dep, "approval_progress");

    let (ra, rb) = tokio::join!(deliver(&app, &a), deliver(&app, &b));
    let (won, lost) = match (ra, rb) {
        (Ok(won), Err(lost)) => ((won, &a), (lost, &b)),
        (Err(lost), Ok(won)) => ((won, &b), (lost, &a)),
        other => panic!("expected one post and one retryable loser, got {other:?}"),
    };
    assert!(
        matches!(won.0, Delivered::Sent(ref o) if matches!(o[..], [Outcome::SlackPosted { .. }]))
    );
    assert!(
        matches!(
            lost.0,
            DeliverError::Retryable(Failure::PostInProgress { .. })
        ),
        "{:?}",
        lost.0
    );

    // SQS redelivers the loser later: it finds the reference and updates the message.
    let redelivered = deliver(&app, lost.1).await.expect("redelivery");
    assert_eq!(
        redelivered,
        Delivered::Sent(vec![Outcome::SlackUpdated {
            channel: "C0PRODUCTION".into(),
            ts: TS.into()
        }])
    );
    let paths: Vec<String> = fakes
        .slack_requests()
        .await
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, vec!["/chat.postMessage", "/chat.update"]);
}

#[tokio::test]
async fn environments_without_a_slack_channel_are_skipped_without_a_request() {
    let fakes = Fakes::start().await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let mut dep = awaiting_deployment("dep-dev");
    dep.environment = "dev".parse().unwrap();
    let dep = store_deployment(&services, dep).await;

    let delivered = deliver(
        &app,
        &Notification::deployment(now(), &dep, "approval_requested"),
    )
    .await
    .expect("delivered");
    assert!(
        matches!(delivered, Delivered::Sent(ref o) if matches!(o[..], [Outcome::Skipped { target: "slack", .. }]))
    );
    assert!(fakes.slack_requests().await.is_empty());
}

#[tokio::test]
async fn a_slack_failure_releases_the_claim_so_the_redelivery_posts() {
    let fakes = Fakes::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&fakes.slack)
        .await;
    slack_posts_ok(&fakes.slack, TS).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-503")).await;
    let n = Notification::deployment(now(), &dep, "approval_requested");

    let err = deliver(&app, &n).await.expect_err("Slack is down");
    assert!(!err.is_permanent(), "{err}");
    let again = deliver(&app, &n).await.expect("redelivery");
    assert!(
        matches!(again, Delivered::Sent(ref o) if matches!(o[..], [Outcome::SlackPosted { .. }]))
    );
    assert_eq!(fakes.slack_requests().await.len(), 4);
}

fn incident(status: &str) -> Notification {
    Notification::new(
        now(),
        NotificationBody::Incident {
            incident_id: "alertmanager:3f5b2c9e1d7a4086".into(),
            environment: Some("production".into()),
            severity: "critical".into(),
            title: "HighErrorRate: api 5xx ratio above 5%".into(),
            status: status.into(),
            link: Some("http://prometheus.example.com:9090/graph?g0.expr=x".into()),
            deployment_id: Some("dep-inc".into()),
            repository: None,
            attribution: None,
        },
    )
}

#[tokio::test]
async fn incident_open_triggers_pagerduty_and_resolve_resolves_the_same_dedup_key() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(pagerduty_accepted("alertmanager:3f5b2c9e1d7a4086"))
        .mount(&fakes.pagerduty)
        .await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let mut dep = awaiting_deployment("dep-inc");
    dep.state = State::Verifying;
    store_deployment(&services, dep).await;

    let opened = deliver(&app, &incident("open")).await.expect("opened");
    assert_eq!(
        opened,
        Delivered::Sent(vec![
            Outcome::SlackPosted {
                channel: "C0PRODUCTION".into(),
                ts: TS.into()
            },
            Outcome::PagerDuty {
                action: PagerDutyAction::Trigger,
                dedup_key: "alertmanager:3f5b2c9e1d7a4086".into()
            },
        ])
    );
    deliver(&app, &incident("resolved"))
        .await
        .expect("resolved");

    let pd = fakes.pagerduty_requests().await;
    assert_eq!(pd.len(), 2);
    assert_pagerduty_call(&pd[0]);
    assert_eq!(
        body(&pd[0]),
        json!({
            "routing_key": CRITICAL_ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": "alertmanager:3f5b2c9e1d7a4086",
            "payload": {
                "summary": "HighErrorRate: api 5xx ratio above 5%",
                "source": "shipgate",
                "severity": "critical",
                "group": "production",
                "custom_details": {
                    "incident_id": "alertmanager:3f5b2c9e1d7a4086",
                    "status": "open",
                    "environment": "production",
                    "deployment_id": "dep-inc"
                }
            },
            "links": [
                {"href": "http://prometheus.example.com:9090/graph?g0.expr=x", "text": "Alert"},
                {
                    "href": "https://github.com/acme/shop/commit/6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                    "text": "Deployment dep-inc (acme/shop@6113728 to production)"
                }
            ]
        })
    );
    assert_pagerduty_call(&pd[1]);
    assert_eq!(
        body(&pd[1]),
        json!({
            "routing_key": CRITICAL_ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": "alertmanager:3f5b2c9e1d7a4086"
        })
    );

    let slack = fakes.slack_requests().await;
    assert_eq!(slack.len(), 2);
    assert_slack_call(&slack[0], "chat.postMessage");
    assert_eq!(body(&slack[0])["channel"], "C0PRODUCTION");
    assert!(body(&slack[1])["blocks"]
        .to_string()
        .contains("Incident resolved in production"));
}

#[tokio::test]
async fn pagerduty_server_errors_are_retried_until_accepted() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&fakes.pagerduty)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(pagerduty_accepted("alertmanager:3f5b2c9e1d7a4086"))
        .mount(&fakes.pagerduty)
        .await;
    let app = fakes.notifier(services());

    let delivered = deliver(&app, &incident("open")).await.expect("triggered");
    assert!(matches!(
        delivered,
        Delivered::Sent(ref o) if o.contains(&Outcome::PagerDuty {
            action: PagerDutyAction::Trigger,
            dedup_key: "alertmanager:3f5b2c9e1d7a4086".into()
        })
    ));
    let pd = fakes.pagerduty_requests().await;
    assert_eq!(pd.len(), 3);
    assert!(pd.iter().all(|r| body(r) == body(&pd[0])));
    assert_eq!(body(&pd[0])["event_action"], "trigger");
}

#[tokio::test]
async fn a_partly_failed_incident_retries_only_the_failed_destination() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&fakes.pagerduty)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(pagerduty_accepted("alertmanager:3f5b2c9e1d7a4086"))
        .mount(&fakes.pagerduty)
        .await;
    let app = fakes.notifier(services());
    let n = incident("open");

    let err = deliver(&app, &n).await.expect_err("PagerDuty is down");
    assert!(
        matches!(err, DeliverError::Retryable(Failure::Outbound { .. })),
        "{err}"
    );
    let again = deliver(&app, &n).await.expect("redelivery");
    assert_eq!(
        again,
        Delivered::Sent(vec![
            Outcome::AlreadySent {
                step: "slack".into()
            },
            Outcome::PagerDuty {
                action: PagerDutyAction::Trigger,
                dedup_key: "alertmanager:3f5b2c9e1d7a4086".into()
            },
        ])
    );
    assert_eq!(
        fakes.slack_requests().await.len(),
        1,
        "Slack was not posted twice"
    );
    assert_eq!(fakes.pagerduty_requests().await.len(), 4);
}

#[tokio::test]
async fn warning_incidents_use_the_default_routing_key_and_severity() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(pagerduty_accepted("grafana:x"))
        .mount(&fakes.pagerduty)
        .await;
    let app = fakes.notifier(services());
    let n = Notification::new(
        now(),
        NotificationBody::Incident {
            incident_id: "grafana:x".into(),
            environment: None,
            severity: "warning".into(),
            title: "Disk filling up".into(),
            status: "open".into(),
            link: None,
            deployment_id: None,
            repository: None,
            attribution: None,
        },
    );
    let delivered = deliver(&app, &n).await.expect("delivered");
    // No environment and no ops channel: nothing to post to in Slack.
    assert!(
        matches!(delivered, Delivered::Sent(ref o) if matches!(o[0], Outcome::Skipped { target: "slack", .. }))
    );
    let pd = fakes.pagerduty_requests().await;
    assert_eq!(body(&pd[0])["routing_key"], DEFAULT_ROUTING_KEY);
    assert_eq!(body(&pd[0])["payload"]["severity"], "warning");
    assert!(body(&pd[0]).get("links").is_none());
}

#[tokio::test]
async fn job_results_go_to_the_ops_channel_and_page_when_asked() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(pagerduty_accepted("shipgate-job-backup"))
        .mount(&fakes.pagerduty)
        .await;
    let app = fakes
        .notifier(services())
        .with_ops_channel(Some("C0OPS".into()));
    let n = Notification::new(
        now(),
        NotificationBody::Job {
            job: "backup".into(),
            ok: false,
            summary: "backup of shipgate failed: KMS unavailable".into(),
            details: json!({"table": "shipgate"}),
            page: true,
        },
    );
    deliver(&app, &n).await.expect("delivered");

    let slack = fakes.slack_requests().await;
    assert_eq!(slack.len(), 1);
    assert_slack_call(&slack[0], "chat.postMessage");
    let expected = render::job_message(
        "backup",
        false,
        "backup of shipgate failed: KMS unavailable",
        &json!({"table": "shipgate"}),
    );
    assert_eq!(
        body(&slack[0]),
        json!({"channel": "C0OPS", "text": expected.text, "blocks": expected.blocks})
    );
    let pd = fakes.pagerduty_requests().await;
    assert_eq!(pd.len(), 1);
    assert_pagerduty_call(&pd[0]);
    assert_eq!(
        body(&pd[0]),
        json!({
            "routing_key": CRITICAL_ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": "shipgate-job-backup",
            "payload": {
                "summary": "shipgate backup failed: backup of shipgate failed: KMS unavailable",
                "source": "shipgate",
                "severity": "critical",
                "component": "backup",
                "class": "scheduled-job",
                "custom_details": {"table": "shipgate"}
            }
        })
    );
}

#[tokio::test]
async fn job_results_without_an_ops_channel_go_to_every_environment_channel() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    let app = fakes.notifier(services());
    let n = Notification::new(
        now(),
        NotificationBody::Job {
            job: "dora-report".into(),
            ok: true,
            summary: "weekly DORA report".into(),
            details: serde_json::Value::Null,
            page: false,
        },
    );
    deliver(&app, &n).await.expect("delivered");
    let mut channels: Vec<String> = fakes
        .slack_requests()
        .await
        .iter()
        .map(|r| body(r)["channel"].as_str().unwrap_or("").to_owned())
        .collect();
    channels.sort();
    assert_eq!(channels, vec!["C0PRODUCTION", "C0STAGING"]);
    assert!(fakes.pagerduty_requests().await.is_empty());
}

#[tokio::test]
async fn a_queued_deployment_is_posted_with_its_place_in_line_and_updated_as_it_moves() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    slack_updates_ok(&fakes.slack).await;
    let services = services();
    let app = fakes.notifier(services.clone());
    let mut dep = awaiting_deployment("dep-queued");
    dep.state = State::Queued;
    dep.approvals_required = 0;
    dep.approval_expires_at = None;
    dep.queued = Some(shipgate::domain::deployment::QueueTicket {
        since: now(),
        until: "2025-03-04T13:00:00Z".parse().unwrap(),
        behind: "dep-ahead".into(),
    });
    let dep = store_deployment(&services, dep).await;
    let spot = |position| shipgate::notify::QueueSpot {
        position,
        behind: "dep-ahead".into(),
        until: "2025-03-04T13:00:00Z".parse().unwrap(),
    };

    deliver(&app, &Notification::queued(now(), &dep, spot(2)))
        .await
        .expect("delivered");
    deliver(&app, &Notification::queued(now(), &dep, spot(1)))
        .await
        .expect("delivered");

    let requests = fakes.slack_requests().await;
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_slack_call(&requests[0], "chat.postMessage");
    assert_slack_call(&requests[1], "chat.update");
    let (first, second) = (body(&requests[0]), body(&requests[1]));
    assert_eq!(first["channel"], json!("C0PRODUCTION"));
    let line = |b: &serde_json::Value| {
        b["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|block| block["text"]["text"].as_str())
            .find(|t| t.contains("in line"))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        line(&first),
        "2nd in line behind deployment `dep-ahead`; waits until <!date^1741093200^{date_short_pretty} at {time}|2025-03-04T13:00:00Z>, then gives up"
    );
    assert!(line(&second).starts_with("1st in line behind deployment `dep-ahead`"));
    assert_eq!(second["ts"], json!(TS));
    assert!(
        action_ids(&first["blocks"]).is_empty(),
        "no buttons while queued"
    );
}
