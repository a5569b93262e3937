//! The dashboard's pages on states the demo does not end in, built through the public routes:
//! a request waiting for approvals (who approved, who still may, when it expires), a request
//! queued behind it, an open incident, and a repository's own DORA figures. The pages are read
//! as the dashboard serves them ([`shipgate::dashboard::View`]); the browser test covers the
//! rest in Chromium.

#[path = "common/alert_webhook.rs"]
mod common;
#[path = "common/serve.rs"]
mod serve;

use common::{alertmanager, protection_rule, Harness, ALERT_TOKEN, REPO};
use serde_json::json;
use serve::page_text as text;
use shipgate::dashboard::html::Site;
use shipgate::dashboard::View;
use shipgate::jobs::{self, JobContext, JobName, MetricSink};

const POLICY: &str = r#"
[identities]
U0APPROV1 = "alice-ops"
U0APPROV2 = "bob-sre"
U0OCTOCAT = "octocat"

[services]
api = "octo-org/shop"

[environments.production]
approvals_required = 2
approvers = ["U0APPROV1", "U0APPROV2", "U0OCTOCAT"]
approval_ttl = "4h"
verification_window = "30m"
"#;

const SHA_1: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_2: &str = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[tokio::test]
async fn the_overview_shows_who_approved_who_still_may_the_expiry_the_queue_and_open_incidents() {
    let h = Harness::build(POLICY, 201, ALERT_TOKEN).await;
    // octocat asks for SHA_1: two approvals needed, none yet; octocat may not approve their own.
    let first = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule("production", SHA_1, 701),
        )
        .await;
    assert_eq!(first.str("decision"), "awaiting_approval", "{first:?}");
    // A second run for the same scope waits in the queue behind it.
    h.advance_mins(1);
    let second = h
        .deliver(
            "deployment_protection_rule",
            &protection_rule("production", SHA_2, 702),
        )
        .await;
    assert_eq!(second.str("decision"), "queued", "{second:?}");
    // And an alert is open for the repository.
    let reply = h
        .post_alert(
            "/webhooks/alertmanager",
            &alertmanager(
                "firing",
                "fp-open",
                json!({ "alertname": "ApiLatency", "env": "production", "service": "api", "severity": "warning" }),
                h.now(),
                None,
            ),
        )
        .await;
    assert_eq!(reply.count("opened"), 1, "{reply:?}");

    let svc = h.services();
    let view = View {
        repo: &svc.repo,
        policy: &svc.policy,
        now: h.now(),
        site: Site::Live,
        signed_in: None,
        github_web: "https://github.com",
    };
    let overview = view.overview().await.expect("overview");
    let shown = text(&overview);
    assert!(shown.contains(REPO), "{shown}");
    assert!(shown.contains("awaiting approval 1111111"), "{shown}");
    assert!(
        shown.contains(
            "0 of 2 approvals; may approve: alice-ops, bob-sre; expires 2025-06-02 14:00 UTC"
        ),
        "the requester is not among who may approve: {shown}"
    );
    assert!(
        shown.contains("2222222 waiting since 2025-06-02 10:01 UTC"),
        "{shown}"
    );
    assert!(
        shown.contains("warning API 5xx ratio above 5% since"),
        "{shown}"
    );
    // Nothing has gone out yet: nothing runs, nothing is known good.
    assert!(shown.contains("nothing yet"), "{shown}");
    // The deployment links lead to its page, which names its approvals the same way.
    let id = first.str("deployment_id");
    assert!(overview.contains(&format!("href=\"/deployments/{id}\"")));
    let page = view
        .deployment(id)
        .await
        .expect("page")
        .expect("the deployment exists");
    let timeline = text(&page);
    assert!(timeline.contains("request_approval"), "{timeline}");
    assert!(
        timeline.contains("Approvals 0 of 2 approvals"),
        "{timeline}"
    );
}

#[tokio::test]
async fn the_dora_page_charts_one_repository_and_links_each() {
    let policy = r#"
[services]
api = "octo-org/shop"

[environments.production]
verification_window = "10m"
"#;
    let h = Harness::build(policy, 201, ALERT_TOKEN).await;
    let dep = h.deploy("production", SHA_1, 801, 9801).await;
    h.advance_mins(11);
    shipgate::service::lifecycle::finish_verification(h.services(), &dep)
        .await
        .expect("finish");
    let ctx =
        JobContext::new(h.services().clone(), reqwest::Client::new()).with_metrics(MetricSink::Off);
    assert!(jobs::run(&ctx, JobName::DoraReport).await.expect("dora").ok);
    let svc = h.services();
    let view = View {
        repo: &svc.repo,
        policy: &svc.policy,
        now: h.now(),
        site: Site::Live,
        signed_in: Some("alice"),
        github_web: "https://github.com",
    };
    let page = view.dora(None).await.expect("dora");
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 4);
    assert!(page.contains("data-series=\"deployments\" data-week=\"2025-06-01\" data-value=\"1\""));
    assert!(page.contains("signed in as alice"));
    // Only one repository deployed, so its figures are the roll-up's and there are no
    // per-repository reports to link; asking for another repository shows none.
    let other = view.dora(Some("octo-org/other")).await.expect("dora");
    assert!(text(&other).contains("No figures kept yet for this scope."));
}
