//! Fault injection on the notifier's outbound side: Slack and PagerDuty answering 500, then
//! 429 with `Retry-After`, then hanging past the client's timeout. A delivery that runs out of
//! attempts must be reported as a retryable failure (so SQS redelivers it), and the redelivery
//! after the service recovers must send exactly once, with PagerDuty's `dedup_key` unchanged.

#[path = "common/notifier.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use notifier::{deliver, Delivered, Notifier, Outcome};
use secrecy::SecretString;
use serde_json::json;
use shipgate::domain::deployment::State;
use shipgate::notify::{Notification, NotificationBody};
use shipgate::outbound::{PagerDuty, PagerDutyAction, RetryPolicy, SlackApi, SlackConfig};
use shipgate::service::Services;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TS: &str = "1741089600.000100";
const INCIDENT: &str = "alertmanager:3f5b2c9e1d7a4086";

/// Three attempts, a `Retry-After: 1` honoured, and a hang cut short.
fn retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_millis(300),
    }
}

fn notifier(fakes: &Fakes, services: Services) -> Notifier {
    let http = reqwest::Client::new();
    let slack = SlackApi::new(
        SlackConfig {
            api_url: fakes.slack.uri(),
            bot_token: SecretString::from(BOT_TOKEN.to_owned()),
        },
        http.clone(),
    )
    .with_policy(retries());
    let pagerduty = PagerDuty::new(fakes.pagerduty_url(), http).with_policy(retries());
    Notifier::new(services)
        .with_slack(Arc::new(slack))
        .with_pagerduty(
            Arc::new(pagerduty),
            Some(SecretString::from(DEFAULT_ROUTING_KEY.to_owned())),
        )
        .with_routing_keys_from(&[(
            "SHIPGATE_PAGERDUTY_ROUTING_KEY_CRITICAL",
            CRITICAL_ROUTING_KEY,
        )])
        .expect("routing keys")
}

/// `api_path` answers 500, then 429 (`Retry-After: 1`), then hangs for 3 s, once each, ahead
/// of whatever else is mounted there: one delivery's three attempts, all failed.
async fn fail_then_rate_limit_then_hang(server: &MockServer, api_path: &str) {
    for (priority, answer) in [
        (
            1,
            ResponseTemplate::new(500).set_body_string("internal error"),
        ),
        (
            2,
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        ),
        (
            3,
            ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
        ),
    ] {
        Mock::given(method("POST"))
            .and(path(api_path))
            .respond_with(answer)
            .with_priority(priority)
            .up_to_n_times(1)
            .mount(server)
            .await;
    }
}

fn incident(status: &str) -> Notification {
    Notification::new(
        now(),
        NotificationBody::Incident {
            incident_id: INCIDENT.into(),
            environment: Some("production".into()),
            severity: "critical".into(),
            title: "HighErrorRate: api 5xx ratio above 5%".into(),
            status: status.into(),
            link: None,
            deployment_id: None,
            repository: None,
            attribution: None,
        },
    )
}

#[tokio::test]
async fn a_slack_outage_fails_the_delivery_for_redelivery_and_the_message_is_posted_once() {
    let fakes = Fakes::start().await;
    fail_then_rate_limit_then_hang(&fakes.slack, "/chat.postMessage").await;
    slack_posts_ok(&fakes.slack, TS).await;
    slack_updates_ok(&fakes.slack).await;
    let services = services();
    let app = notifier(&fakes, services.clone());
    let dep = store_deployment(&services, awaiting_deployment("dep-outage")).await;
    let n = Notification::deployment(now(), &dep, "approval_requested");

    let started = std::time::Instant::now();
    let err = deliver(&app, &n).await.expect_err("every attempt failed");
    assert!(!err.is_permanent(), "SQS must redeliver: {err}");
    // 500, a 1 s Retry-After, and a hang cut at the 300 ms timeout: bounded, not 3 s.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fakes.slack_requests().await.len(), 3);
    let stored = services
        .repo
        .get_deployment("dep-outage")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        stored.slack, None,
        "no message reference from a failed post"
    );

    // Slack is back: SQS's redelivery posts, later copies are duplicates.
    let again = deliver(&app, &n).await.expect("redelivery");
    assert_eq!(
        again,
        Delivered::Sent(vec![Outcome::SlackPosted {
            channel: "C0PRODUCTION".into(),
            ts: TS.into()
        }])
    );
    assert_eq!(
        deliver(&app, &n).await.expect("third"),
        Delivered::Duplicate
    );

    let requests = fakes.slack_requests().await;
    assert_eq!(requests.len(), 4, "three failed attempts and one post");
    for r in &requests {
        assert_slack_call(r, "chat.postMessage");
        assert_eq!(body(r)["channel"], "C0PRODUCTION");
    }
    let stored = services
        .repo
        .get_deployment("dep-outage")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.slack.map(|s| s.ts).as_deref(), Some(TS));

    // The next notification about the deployment edits that message instead of posting.
    let next = Notification::deployment(now(), &stored_after(&services).await, "approval_progress");
    let updated = deliver(&app, &next).await.expect("update");
    assert!(
        matches!(&updated, Delivered::Sent(o) if matches!(o[..], [Outcome::SlackUpdated { .. }])),
        "{updated:?}"
    );
    let requests = fakes.slack_requests().await;
    assert_eq!(requests.len(), 5);
    assert_slack_call(&requests[4], "chat.update");
    assert_eq!(body(&requests[4])["ts"], TS);
}

async fn stored_after(services: &Services) -> shipgate::domain::deployment::Deployment {
    services
        .repo
        .get_deployment("dep-outage")
        .await
        .expect("read")
        .expect("stored")
}

#[tokio::test]
async fn a_pagerduty_outage_retries_only_the_page_and_keeps_its_dedup_key() {
    let fakes = Fakes::start().await;
    slack_posts_ok(&fakes.slack, TS).await;
    fail_then_rate_limit_then_hang(&fakes.pagerduty, "/v2/enqueue").await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(pagerduty_accepted(INCIDENT))
        .mount(&fakes.pagerduty)
        .await;
    let services = services();
    let app = notifier(&fakes, services.clone());
    let mut dep = awaiting_deployment("dep-inc");
    dep.state = State::Verifying;
    store_deployment(&services, dep).await;
    let opened = incident("open");

    let err = deliver(&app, &opened).await.expect_err("PagerDuty is down");
    assert!(!err.is_permanent(), "SQS must redeliver: {err}");
    assert_eq!(fakes.slack_requests().await.len(), 1, "Slack got its post");
    assert_eq!(fakes.pagerduty_requests().await.len(), 3);

    let again = deliver(&app, &opened).await.expect("redelivery");
    assert_eq!(
        again,
        Delivered::Sent(vec![
            Outcome::AlreadySent {
                step: "slack".into()
            },
            Outcome::PagerDuty {
                action: PagerDutyAction::Trigger,
                dedup_key: INCIDENT.into()
            },
        ])
    );
    assert_eq!(
        deliver(&app, &opened).await.expect("third"),
        Delivered::Duplicate
    );
    deliver(&app, &incident("resolved"))
        .await
        .expect("resolved");

    assert_eq!(
        fakes.slack_requests().await.len(),
        2,
        "one post per notification, none repeated"
    );
    let pages = fakes.pagerduty_requests().await;
    assert_eq!(
        pages.len(),
        5,
        "three failed triggers, one accepted, one resolve"
    );
    for page in &pages {
        assert_pagerduty_call(page);
        let b = body(page);
        assert_eq!(b["dedup_key"], INCIDENT, "the dedup key never changes");
        assert_eq!(b["routing_key"], CRITICAL_ROUTING_KEY);
    }
    let actions: Vec<String> = pages
        .iter()
        .map(|p| {
            body(p)["event_action"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        actions,
        ["trigger", "trigger", "trigger", "trigger", "resolve"]
    );
    // Every trigger attempt is the same event, so PagerDuty folds repeats into one alert.
    let first = body(&pages[0]);
    assert!(pages[1..4].iter().all(|p| body(p) == first));
}
