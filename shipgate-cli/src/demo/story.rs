//! The story `shipgate demo` tells, played as signed HTTP requests against a real `shipgate`
//! server (the one `shipgate serve` runs) on a throw-away data directory.
//!
//! 1. `c5b1e9a` goes to staging (no approval needed), its window passes: last known good.
//! 2. It is promoted to production: approval requested in Slack; its requester clicks
//!    Approve and is refused (self-approval); two approvers approve; GitHub is told; the
//!    deploy runs, its window passes: production's last known good.
//! 3. `e41f8b3` goes the same way through staging and production approvals, and while it is
//!    being verified a critical Alertmanager alert arrives: shipgate rolls production back
//!    to `c5b1e9a` through a GitHub deployment, pages PagerDuty, and resolves when the alert
//!    does.
//! 4. A second service, `acme/web`, shares staging with `acme/api`: each deploys under its own
//!    lock, and web's next change, asked for while the first is still deploying, waits in
//!    the queue (GitHub is told where it stands) and is approved by the server the moment
//!    the deploy ahead has passed its window, with no sweep.
//! 5. The scheduled jobs: an encrypted backup, a restore drill that must pass, the DORA
//!    report.
//!
//! Every step checks what shipgate answered and what it stored; the first deviation ends the
//! story with what was expected and what was seen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use secrecy::SecretString;
use serde_json::{json, Value};
use shipgate::domain::deployment::{Deployment, State};
use shipgate::domain::{EnvName, RepoName, Scope};
use shipgate::jobs::backup::TableBackups;
use shipgate::jobs::{self, JobContext, JobName, MetricSink};
use shipgate::render::APPROVE_ACTION_ID;
use shipgate::service::Services;
use shipgate::signature::{sign_github, sign_slack};
use shipgate_cli::scheduler::Schedule;
use shipgate_cli::server::{self, RunningServer, ServeConfig};

use super::fakes::{button_value, Fake, Recorded, Service};
use super::payloads::{self, Commit, GhDeployment, Repository, SlackClick};
use super::timeline::{quote, short, Timeline};
use super::DemoError;

/// The GitHub webhook secret the demo's GitHub signs with (also in `events/`).
pub const WEBHOOK_SECRET: &str = "shipgate-demo-webhook-secret";
/// Slack's documented example signing secret (also in `events/slack-approval/`).
pub const SLACK_SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// The bearer token the demo's Alertmanager presents (also in `events/alert-webhook/`).
pub const ALERT_TOKEN: &str = "shipgate-demo-alert-token";
const SLACK_BOT_TOKEN: &str = "xoxb-shipgate-demo-not-a-real-token";
/// Read through the policy's `env:SHIPGATE_PAGERDUTY_ROUTING_KEY_CRITICAL`, like a real routing key.
const PAGERDUTY_KEY_VAR: &str = "SHIPGATE_PAGERDUTY_ROUTING_KEY_CRITICAL";
const PAGERDUTY_ROUTING_KEY: &str = "shipgate-demo-routing-key-critical";
/// The App and installation ids of the samples in `events/github-webhook/`.
const APP_ID: u64 = 913_452;
const INSTALLATION_ID: u64 = 41_732_105;
const OPS_CHANNEL: &str = "C0OPS";
/// The demo GitHub App's private key (see the file's header: demo only).
const DEMO_KEY_FILE: &str = include_str!("demo-github-app-key.pem");

/// How long the story waits for something shipgate does on its own (a Slack post, a page).
const WAIT: Duration = Duration::from_secs(10);
/// Quiet time after which the notifier is taken to have sent everything of a step.
const SETTLE_QUIET: Duration = Duration::from_millis(120);
/// The longest a step waits for the notifier to go quiet.
const SETTLE_MAX: Duration = Duration::from_secs(3);

/// What the demo changes in the example policy, in words and as exact text replacements.
/// The windows shrink so the story fits in seconds (the validator's minimum is 1 s);
/// production rolls back by re-deploying its last known good through a GitHub deployment
/// (the example dispatches a `rollback.yml` workflow, which the demo has no Actions to run).
pub const POLICY_CHANGES: [(&str, &str, &str); 3] = [
    (
        "staging verification_window 10m → 1s",
        "verification_window = \"10m\"",
        "verification_window = \"1s\"",
    ),
    (
        "production verification_window 15m → 4s",
        "verification_window = \"15m\"",
        "verification_window = \"4s\"",
    ),
    (
        "production rollback workflow rollback.yml → redeploy (a GitHub deployment of the last known good sha)",
        "rollback = { method = \"workflow\", workflow = \"rollback.yml\", ref = \"main\" }",
        "rollback = { method = \"redeploy\" }",
    ),
];

/// The example policy with [`POLICY_CHANGES`] applied; each change must apply exactly once.
pub fn demo_policy() -> Result<String, DemoError> {
    let mut text = shipgate::domain::policy::EXAMPLE_POLICY.to_string();
    for (what, from, to) in POLICY_CHANGES {
        let found = text.matches(from).count();
        if found != 1 {
            return Err(DemoError::Policy(format!(
                "cannot apply \"{what}\": the example policy has {found} occurrences of {from}"
            )));
        }
        text = text.replacen(from, to, 1);
    }
    Ok(text)
}

/// The demo App key without its explanatory header.
fn demo_key() -> &'static str {
    DEMO_KEY_FILE
        .find("-----BEGIN")
        .and_then(|i| DEMO_KEY_FILE.get(i..))
        .unwrap_or(DEMO_KEY_FILE)
}

/// A person of the story: their Slack id and GitHub login (as in the policy's identities).
#[derive(Debug, Clone, Copy)]
struct Person {
    slack: &'static str,
    login: &'static str,
}

const OCTOCAT: Person = Person {
    slack: "U024BE7LH",
    login: "octocat",
};
const ALICE: Person = Person {
    slack: "U0APPROV1",
    login: "alice-ops",
};
const BOB: Person = Person {
    slack: "U0APPROV2",
    login: "bob-sre",
};
const CAROL: Person = Person {
    slack: "U0APPROV3",
    login: "carol-lead",
};

/// A commit the story ships.
#[derive(Debug, Clone, Copy)]
struct Version {
    sha: &'static str,
    message: &'static str,
    author: Person,
    /// How long before the story began it was committed (lead time starts there).
    committed_minutes_ago: i64,
}

const V1: Version = Version {
    sha: "c5b1e9a27f4d83b06e2a9d1c7f3b5e8a0d4c6b2f",
    message: "Add /healthz endpoint",
    author: ALICE,
    committed_minutes_ago: 190,
};
const V2: Version = Version {
    sha: "e41f8b3d92a7c05e6b1d4f8a3c9e2b7d05a6f1c8",
    message: "Switch payments to the new HTTP client",
    author: OCTOCAT,
    committed_minutes_ago: 42,
};
const V3: Version = Version {
    sha: "9a4e1c7b3d5f2e8a0c6b4d2f1e3a5c7b9d0e2f41",
    message: "Retry payment webhooks with backoff",
    author: BOB,
    committed_minutes_ago: 12,
};
/// acme/web's changes.
const W1: Version = Version {
    sha: "c0ffee1b2a3d4e5f60718293a4b5c6d7e8f90a1b",
    message: "Dark mode for the checkout page",
    author: CAROL,
    committed_minutes_ago: 30,
};
const W2: Version = Version {
    sha: "c0ffee2d4e6f8a0b1c3d5e7f9a2b4c6d8e0f1a2b",
    message: "Fix the dark mode contrast on buttons",
    author: CAROL,
    committed_minutes_ago: 8,
};
const PARENT: &str = "7d2c0e91b4a85f3e6d1c9b0a2f4e7d8c1b3a5f60";

/// One gated deployment as the story follows it.
#[derive(Debug, Clone)]
struct Gated {
    id: String,
    repo: Repository,
    environment: &'static str,
    version: Version,
    run_id: u64,
    /// The GitHub deployment the waiting job belongs to.
    github_deployment: u64,
    requester: Person,
}

/// A Slack approval message as the fake Slack received it.
#[derive(Debug, Clone)]
struct ApprovalMessage {
    channel: String,
    ts: String,
    text: String,
    value: String,
}

/// Everything the story runs against.
struct Stage {
    tl: Timeline,
    http: reqwest::Client,
    base: String,
    services: Services,
    jobs: JobContext,
    github: Fake,
    slack: Fake,
    pagerduty: Fake,
    repo: Repository,
    deliveries: u64,
    clicks: u64,
    next_github_deployment: u64,
    checks: usize,
}

/// How the story went, when it ended as expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Expectations checked along the way.
    pub checks: usize,
    /// Requests shipgate made to each fake.
    pub github_calls: usize,
    pub slack_calls: usize,
    pub pagerduty_calls: usize,
}

/// Runs the story in `data_dir`; `Ok` only when it ended as expected.
pub async fn play(tl: &Timeline, data_dir: &Path) -> Result<Summary, DemoError> {
    let github = Fake::start(Service::GitHub, tl.clone())
        .await
        .map_err(DemoError::Fake)?;
    let slack = Fake::start(Service::Slack, tl.clone())
        .await
        .map_err(DemoError::Fake)?;
    let pagerduty = Fake::start(Service::PagerDuty, tl.clone())
        .await
        .map_err(DemoError::Fake)?;

    let policy_file = data_dir.join("policy.toml");
    std::fs::write(&policy_file, demo_policy()?).map_err(|source| DemoError::Write {
        path: policy_file.clone(),
        source,
    })?;
    let vars = server_vars(&github, &slack, &pagerduty);
    let cfg = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_path_buf(),
        policy_file: policy_file.clone(),
        vars: Arc::new(vars),
        // The story runs the jobs itself, when the story needs them; nothing else may run
        // meanwhile (the health probes would call example.com).
        schedule: Schedule::none(),
        durability: shipgate::embedded::sqlite::Durability::Full,
        dashboard: None,
    };
    let running = server::start(cfg).await.map_err(DemoError::Server)?;
    let backups = TableBackups::embedded(data_dir, Arc::clone(running.services.repo.store()))
        .map_err(DemoError::Backups)?
        .with_metrics(MetricSink::Off);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(DemoError::Http)?;
    let jobs = JobContext::new(running.services.clone(), http.clone())
        .with_backups(Arc::new(backups))
        .with_metrics(MetricSink::Off);

    banner(
        tl,
        &running,
        data_dir,
        &policy_file,
        &github,
        &slack,
        &pagerduty,
    );

    let mut stage = Stage {
        tl: tl.clone(),
        http,
        base: format!("http://{}", running.addr),
        services: running.services.clone(),
        jobs,
        github,
        slack,
        pagerduty,
        repo: Repository {
            owner: "acme".into(),
            name: "api".into(),
        },
        deliveries: 0,
        clicks: 0,
        next_github_deployment: 1_523_680_411,
        checks: 0,
    };
    let result = stage.tell().await;
    tl.release();
    let Stage {
        services,
        jobs,
        github,
        slack,
        pagerduty,
        checks,
        ..
    } = stage;
    // Our copies hold senders of the notifier's channel; it drains once they are gone.
    drop(services);
    drop(jobs);
    let stopped = running.stop().await;
    let summary = Summary {
        checks,
        github_calls: github.count(),
        slack_calls: slack.count(),
        pagerduty_calls: pagerduty.count(),
    };
    github.stop().await;
    slack.stop().await;
    pagerduty.stop().await;
    result?;
    stopped.map_err(DemoError::Server)?;
    Ok(summary)
}

fn server_vars(github: &Fake, slack: &Fake, pagerduty: &Fake) -> HashMap<String, String> {
    let pairs = [
        ("SHIPGATE_GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
        ("SHIPGATE_GITHUB_APP_ID", APP_ID.to_string()),
        ("SHIPGATE_GITHUB_PRIVATE_KEY", demo_key().to_string()),
        ("SHIPGATE_GITHUB_API_URL", github.base_url()),
        (
            "SHIPGATE_SLACK_SIGNING_SECRET",
            SLACK_SIGNING_SECRET.to_string(),
        ),
        ("SHIPGATE_SLACK_BOT_TOKEN", SLACK_BOT_TOKEN.to_string()),
        // The workspace and app of the sample click in events/slack-approval.
        ("SHIPGATE_SLACK_TEAM_ID", "T0TEAM0001".to_string()),
        ("SHIPGATE_SLACK_APP_ID", "A0SHIPGATE1".to_string()),
        (
            "SHIPGATE_SLACK_API_URL",
            format!("{}/api", slack.base_url()),
        ),
        ("SHIPGATE_SLACK_OPS_CHANNEL", OPS_CHANNEL.to_string()),
        ("SHIPGATE_ALERT_TOKEN", ALERT_TOKEN.to_string()),
        (PAGERDUTY_KEY_VAR, PAGERDUTY_ROUTING_KEY.to_string()),
        (
            "SHIPGATE_PAGERDUTY_URL",
            format!("{}/v2/enqueue", pagerduty.base_url()),
        ),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn banner(
    tl: &Timeline,
    running: &RunningServer,
    data_dir: &Path,
    policy_file: &Path,
    github: &Fake,
    slack: &Fake,
    pagerduty: &Fake,
) {
    tl.headline("shipgate demo: a day of deploys, from staging to a production rollback");
    tl.plain(&format!(
        "  shipgate   http://{}  (data {})",
        running.addr,
        data_dir.display()
    ));
    tl.plain(&format!(
        "  policy     {} = the example policy (`shipgate policy example`) with:",
        policy_file.display()
    ));
    for (what, _, _) in POLICY_CHANGES {
        tl.plain(&format!("               - {what}"));
    }
    tl.plain(&format!(
        "  fakes      github {}  slack {}  pagerduty {}",
        github.base_url(),
        slack.base_url(),
        pagerduty.base_url()
    ));
    tl.plain("  people     octocat (U024BE7LH), alice-ops (U0APPROV1), bob-sre and carol-lead ship acme/api and acme/web; alice-ops, bob-sre, carol-lead approve production");
}

/// What a step saw, when it was not what the story expected.
fn unexpected(
    what: impl Into<String>,
    expected: impl Into<String>,
    seen: impl Into<String>,
) -> DemoError {
    DemoError::Unexpected {
        what: what.into(),
        expected: expected.into(),
        seen: seen.into(),
    }
}

impl Stage {
    async fn tell(&mut self) -> Result<(), DemoError> {
        self.chapter("GitHub App installed: the webhook says hello")
            .await;
        let ping = payloads::ping(APP_ID).map_err(DemoError::Template)?;
        let (status, body) = self
            .github_event("ping", &ping, "ping (App webhook set up)", |_, b| {
                str_field(b, "message")
            })
            .await?;
        self.expect(
            "ping answered",
            "200 pong",
            &format!("{status} {}", str_field(&body, "message")),
            status == 200 && str_field(&body, "message") == "pong",
        )?;

        self.chapter("c5b1e9a \"Add /healthz endpoint\" is merged and goes to staging")
            .await;
        self.push(&[V1]).await?;
        let v1_staging = self.gate("staging", V1, 7001, ALICE).await?;
        self.expect_decision(&v1_staging, State::Approved).await?;
        self.wait_review(7001, "approved").await?;
        self.deploy(&v1_staging).await?;
        self.pass_window(&v1_staging).await?;

        self.chapter("c5b1e9a is promoted to production: two approvals needed")
            .await;
        let v1_prod = self.gate("production", V1, 7002, ALICE).await?;
        self.expect_decision(&v1_prod, State::AwaitingApproval)
            .await?;
        let message = self.approval_message(&v1_prod).await?;
        self.click_approve(&v1_prod, &message, ALICE, Click::RefusedSelfApproval)
            .await?;
        self.click_approve(&v1_prod, &message, BOB, Click::Counted(1))
            .await?;
        self.click_approve(&v1_prod, &message, CAROL, Click::Approves)
            .await?;
        self.wait_review(7002, "approved").await?;
        self.deploy(&v1_prod).await?;
        self.pass_window(&v1_prod).await?;
        self.expect_last_known_good("production", V1).await?;

        self.chapter("e41f8b3 \"Switch payments to the new HTTP client\" follows the same path")
            .await;
        self.push(&[V2]).await?;
        let v2_staging = self.gate("staging", V2, 7003, OCTOCAT).await?;
        self.expect_decision(&v2_staging, State::Approved).await?;
        self.wait_review(7003, "approved").await?;
        self.deploy(&v2_staging).await?;
        self.pass_window(&v2_staging).await?;
        let v2_prod = self.gate("production", V2, 7004, OCTOCAT).await?;
        self.expect_decision(&v2_prod, State::AwaitingApproval)
            .await?;
        let message = self.approval_message(&v2_prod).await?;
        self.click_approve(&v2_prod, &message, ALICE, Click::Counted(1))
            .await?;
        self.click_approve(&v2_prod, &message, BOB, Click::Approves)
            .await?;
        self.wait_review(7004, "approved").await?;
        self.deploy(&v2_prod).await?;

        self.chapter("Inside the 4 s verification window, production starts failing")
            .await;
        let started = Timestamp::now();
        self.rollback(&v2_prod, started).await?;

        self.chapter("acme/web shares staging with acme/api; a deploy waits its turn in the queue")
            .await;
        self.two_services_and_the_queue().await?;

        self.chapter("The scheduled jobs: backup, restore drill, DORA report")
            .await;
        self.backup_and_drill().await?;
        self.dora().await?;
        Ok(())
    }

    /// Chapter 4: acme/web deploys to staging beside acme/api, and web's second change waits
    /// for its first.
    async fn two_services_and_the_queue(&mut self) -> Result<(), DemoError> {
        let web = Repository {
            owner: "acme".into(),
            name: "web".into(),
        };
        self.push_to(&web, &[W1, W2]).await?;
        self.push(&[V3]).await?;
        let w1 = self.gate_for(&web, "staging", W1, 7101, CAROL).await?;
        self.expect_decision(&w1, State::Approved).await?;
        self.wait_review(7101, "approved").await?;
        self.start_deploy(&w1).await?;

        // api's staging is its own scope: web's deploy does not hold it up.
        let v3 = self.gate("staging", V3, 7102, BOB).await?;
        self.expect_decision(&v3, State::Approved).await?;
        self.wait_review(7102, "approved").await?;

        // web's next change arrives while its first is still deploying: it waits.
        let w2 = self.gate_for(&web, "staging", W2, 7103, CAROL).await?;
        let queued = self.expect_state(&w2, State::Queued).await?;
        let behind = queued.queued.map(|t| t.behind).unwrap_or_default();
        self.expect(
            "web's second change waits behind",
            &w1.id,
            &behind,
            behind == w1.id,
        )?;
        self.wait_status_comment(7103, "shipgate: queued behind deployment")
            .await?;

        // The first one succeeds; the moment its 1 s window ends, the server's queue timer
        // closes it and lets the next in line go (the story runs no sweeper here).
        self.finish_deploy(&w1).await?;
        self.tl.note(
            "… web's staging window passes; at its end shipgate takes the next request out of the queue",
        );
        self.wait_review(7103, "approved").await?;
        self.expect_decision(&w1, State::Succeeded).await?;
        self.expect_decision(&w2, State::Approved).await?;
        self.tl.check(&format!(
            "{} went when {} had passed its window: one deployment at a time per repository",
            short(W2.sha),
            short(W1.sha)
        ));

        self.deploy(&w2).await?;
        self.deploy(&v3).await?;
        self.pass_window(&w2).await?;
        self.pass_window(&v3).await?;
        for (g, v) in [(&w2, W2), (&v3, V3)] {
            let scope = match (
                RepoName::parse(&g.repo.full_name()),
                EnvName::parse("staging"),
            ) {
                (Ok(repo), Ok(env)) => Scope::new(repo, env),
                _ => return Err(DemoError::Policy("the demo scopes".into())),
            };
            let lkg = self
                .services
                .repo
                .heads(&scope)
                .await
                .map_err(DemoError::Repo)?
                .last_known_good
                .map(|h| h.sha)
                .unwrap_or_default();
            self.expect(
                &format!("{} staging last known good", g.repo.full_name()),
                short(v.sha),
                short(&lkg),
                lkg == v.sha,
            )?;
        }
        self.tl.check(&format!(
            "staging: acme/api at {}, acme/web at {}, each its own last known good",
            short(V3.sha),
            short(W2.sha)
        ));
        Ok(())
    }

    /// Waits for GitHub to get a status comment (no decision) on `run_id` starting `prefix`.
    async fn wait_status_comment(&mut self, run_id: u64, prefix: &str) -> Result<(), DemoError> {
        let path_end = format!("/actions/runs/{run_id}/deployment_protection_rule");
        let seen = self
            .github
            .wait_for(WAIT, |reqs| {
                reqs.iter()
                    .filter(|r| r.path.ends_with(&path_end) && r.body.get("state").is_none())
                    .find_map(|r| {
                        r.body
                            .get("comment")
                            .and_then(Value::as_str)
                            .filter(|c| c.starts_with(prefix))
                            .map(str::to_string)
                    })
            })
            .await;
        self.expect(
            &format!("GitHub's status comment on run {run_id}"),
            prefix,
            seen.as_deref().unwrap_or("nothing within 10 s"),
            seen.is_some(),
        )
    }

    // ── checks ──────────────────────────────────────────────────────────────────────────

    fn expect(
        &mut self,
        what: &str,
        expected: &str,
        seen: &str,
        ok: bool,
    ) -> Result<(), DemoError> {
        if ok {
            self.checks += 1;
            Ok(())
        } else {
            Err(unexpected(what, expected, seen))
        }
    }

    async fn deployment(&self, id: &str) -> Result<Deployment, DemoError> {
        self.services
            .repo
            .get_deployment(id)
            .await
            .map_err(DemoError::Repo)?
            .ok_or_else(|| unexpected(format!("deployment {id}"), "stored", "missing"))
    }

    async fn expect_state(&mut self, g: &Gated, state: State) -> Result<Deployment, DemoError> {
        let dep = self.deployment(&g.id).await?;
        self.expect(
            &format!("{} {} state", g.environment, short(g.version.sha)),
            state.as_str(),
            dep.state.as_str(),
            dep.state == state,
        )?;
        Ok(dep)
    }

    async fn expect_decision(&mut self, g: &Gated, state: State) -> Result<(), DemoError> {
        self.expect_state(g, state).await.map(drop)
    }

    /// The demo repository's scope in `env`.
    fn scope(&self, env: &str) -> Result<Scope, DemoError> {
        let repo = RepoName::parse(&self.repo.full_name());
        let env = EnvName::parse(env);
        match (repo, env) {
            (Ok(repo), Ok(env)) => Ok(Scope::new(repo, env)),
            (Err(e), _) | (_, Err(e)) => Err(DemoError::Policy(format!("the demo scope: {e}"))),
        }
    }

    async fn expect_last_known_good(&mut self, env: &str, v: Version) -> Result<(), DemoError> {
        let scope = self.scope(env)?;
        let heads = self
            .services
            .repo
            .heads(&scope)
            .await
            .map_err(DemoError::Repo)?;
        let lkg = heads.last_known_good.map(|h| h.sha).unwrap_or_default();
        self.expect(
            &format!("{env} last known good"),
            short(v.sha),
            if lkg.is_empty() { "none" } else { short(&lkg) },
            lkg == v.sha,
        )?;
        self.tl
            .check(&format!("{env} last known good is now {}", short(v.sha)));
        Ok(())
    }

    // ── talking to shipgate ────────────────────────────────────────────────────────────

    /// A chapter heading, once the previous chapter's notifications are out.
    async fn chapter(&self, title: &str) {
        self.settle().await;
        self.tl.section(title);
    }

    /// Waits until the fakes have heard nothing new for a moment: the notifier has sent what
    /// the last step caused, so the timeline reads in order.
    async fn settle(&self) {
        self.settle_within(SETTLE_MAX).await;
    }

    /// [`Stage::settle`], giving up after `max`.
    async fn settle_within(&self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        let mut last = self.fake_requests();
        let mut quiet_since = tokio::time::Instant::now();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.fake_requests();
            if now != last {
                last = now;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= SETTLE_QUIET {
                return;
            }
        }
    }

    fn fake_requests(&self) -> usize {
        self.github.count() + self.slack.count() + self.pagerduty.count()
    }

    /// Sends `payload` as GitHub delivers webhook `event`, signed; prints `what` and the
    /// result `describe` reads from the answer.
    async fn github_event(
        &mut self,
        event: &str,
        payload: &Value,
        what: &str,
        describe: impl Fn(u16, &Value) -> String,
    ) -> Result<(u16, Value), DemoError> {
        self.settle().await;
        self.deliveries += 1;
        let delivery = format!(
            "d3m0{:04}-5a1e-11f0-8000-{:012x}",
            self.deliveries, self.deliveries
        );
        let body = serde_json::to_vec(payload).map_err(DemoError::Json)?;
        let secret = SecretString::from(WEBHOOK_SECRET);
        let ex = self.tl.begin();
        let sent = self
            .http
            .post(format!("{}/webhooks/github", self.base))
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/shipgate-demo")
            .header("x-github-event", event)
            .header("x-github-delivery", &delivery)
            .header("x-github-hook-installation-target-type", "integration")
            .header("x-hub-signature-256", sign_github(&secret, &body))
            .body(body)
            .send()
            .await;
        let (status, answer) = match read(sent).await {
            Ok(r) => r,
            Err(e) => {
                self.tl.release();
                return Err(e);
            }
        };
        let result = describe(status, &answer);
        self.tl
            .finish(ex, "github", "shipgate", what, Some(&result));
        if !(200..300).contains(&status) {
            return Err(unexpected(
                format!("{event} delivery"),
                "a 2xx answer",
                format!("{status} {answer}"),
            ));
        }
        Ok((status, answer))
    }

    async fn push(&mut self, versions: &[Version]) -> Result<(), DemoError> {
        let repo = self.repo.clone();
        self.push_to(&repo, versions).await
    }

    async fn push_to(&mut self, repo: &Repository, versions: &[Version]) -> Result<(), DemoError> {
        let now = Timestamp::now();
        let commits: Vec<Commit<'_>> = versions
            .iter()
            .map(|v| Commit {
                sha: v.sha,
                message: v.message,
                at: now
                    .checked_sub(SignedDuration::from_mins(v.committed_minutes_ago))
                    .unwrap_or(now),
                author: v.author.login,
            })
            .collect();
        let payload =
            payloads::push(repo, "main", PARENT, &commits).map_err(DemoError::Template)?;
        let what = versions
            .iter()
            .map(|v| {
                format!(
                    "push {} main {} by {}, committed {} min ago",
                    repo.name,
                    short(v.sha),
                    v.author.login,
                    v.committed_minutes_ago
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        self.github_event("push", &payload, &what, |_, b| {
            format!("recorded ({} commit, lead time starts)", b["commits"])
        })
        .await
        .map(drop)
    }

    async fn gate(
        &mut self,
        environment: &'static str,
        version: Version,
        run_id: u64,
        requester: Person,
    ) -> Result<Gated, DemoError> {
        let repo = self.repo.clone();
        self.gate_for(&repo, environment, version, run_id, requester)
            .await
    }

    async fn gate_for(
        &mut self,
        repo: &Repository,
        environment: &'static str,
        version: Version,
        run_id: u64,
        requester: Person,
    ) -> Result<Gated, DemoError> {
        let github_deployment = self.next_github_deployment;
        self.next_github_deployment += 1;
        let payload = payloads::protection_rule(
            repo,
            environment,
            "refs/heads/main",
            version.sha,
            run_id,
            github_deployment,
            INSTALLATION_ID,
            requester.login,
        )
        .map_err(DemoError::Template)?;
        let what = format!(
            "deployment_protection_rule {} {environment} {} (run {run_id}, by {})",
            repo.name,
            short(version.sha),
            requester.login
        );
        let (_, answer) = self
            .github_event("deployment_protection_rule", &payload, &what, |_, b| {
                let decision = str_field(b, "decision");
                match b.get("approvals_required").and_then(Value::as_u64) {
                    Some(n) => format!("{decision} (needs {n})"),
                    None if decision == "queued" => format!(
                        "{decision} ({} in line behind {})",
                        shipgate::render::ordinal(
                            b.get("position")
                                .and_then(Value::as_u64)
                                .and_then(|p| u32::try_from(p).ok())
                                .unwrap_or(0)
                        ),
                        str_field(b, "behind")
                    ),
                    None if decision == "rejected" => {
                        format!("{decision}: {}", str_field(b, "reason"))
                    }
                    None => decision,
                }
            })
            .await?;
        let id = str_field(&answer, "deployment_id");
        if id.is_empty() {
            return Err(unexpected(
                "protection rule answer",
                "a deployment id",
                answer.to_string(),
            ));
        }
        Ok(Gated {
            id,
            repo: repo.clone(),
            environment,
            version,
            run_id,
            github_deployment,
            requester,
        })
    }

    /// Waits for GitHub to be told `decision` for `run_id`.
    async fn wait_review(&mut self, run_id: u64, decision: &str) -> Result<(), DemoError> {
        let path_end = format!("/actions/runs/{run_id}/deployment_protection_rule");
        let seen = self
            .github
            .wait_for(WAIT, |reqs| {
                reqs.iter()
                    .filter(|r| r.path.ends_with(&path_end))
                    .find_map(|r| {
                        r.body
                            .get("state")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
            })
            .await;
        self.expect(
            &format!("GitHub's answer for run {run_id}"),
            decision,
            seen.as_deref().unwrap_or("nothing within 10 s"),
            seen.as_deref() == Some(decision),
        )
    }

    /// GitHub Actions runs the job: `deployment` created, `in_progress`, `success`.
    async fn deploy(&mut self, g: &Gated) -> Result<(), DemoError> {
        self.start_deploy(g).await?;
        self.finish_deploy(g).await
    }

    /// The job starts: `deployment` created, `in_progress`. The deployment holds its lock.
    async fn start_deploy(&mut self, g: &Gated) -> Result<(), DemoError> {
        self.deploy_steps(g, &[("in_progress", State::Deploying)], true)
            .await
    }

    /// The job reports `success`: the verification window opens.
    async fn finish_deploy(&mut self, g: &Gated) -> Result<(), DemoError> {
        self.deploy_steps(g, &[("success", State::Verifying)], false)
            .await
    }

    async fn deploy_steps(
        &mut self,
        g: &Gated,
        statuses: &[(&str, State)],
        create: bool,
    ) -> Result<(), DemoError> {
        let gh_id = g.github_deployment;
        let repo = g.repo.clone();
        let dep = GhDeployment {
            repo: &repo,
            environment: g.environment,
            git_ref: "main",
            sha: g.version.sha,
            run_id: Some(g.run_id),
            id: gh_id,
            payload: json!({}),
            creator: "github-actions[bot]",
        };
        if create {
            let created = payloads::deployment_created(&dep).map_err(DemoError::Template)?;
            self.github_event(
                "deployment",
                &created,
                &format!(
                    "deployment {gh_id} created for run {} ({})",
                    g.run_id, g.environment
                ),
                |_, b| lifecycle_result(b, "linked"),
            )
            .await?;
        }
        for &(state, expect) in statuses {
            let status = payloads::deployment_status(&dep, state, &format!("{state} via Actions"))
                .map_err(DemoError::Template)?;
            self.github_event(
                "deployment_status",
                &status,
                &format!(
                    "deployment_status {state} ({} {} {})",
                    g.repo.name,
                    g.environment,
                    short(g.version.sha)
                ),
                |_, b| lifecycle_result(b, ""),
            )
            .await?;
            self.expect_decision(g, expect).await?;
        }
        Ok(())
    }

    /// Lets the verification window pass, then runs the sweeper as the schedule would.
    async fn pass_window(&mut self, g: &Gated) -> Result<(), DemoError> {
        let dep = self.deployment(&g.id).await?;
        let until = dep
            .verify_until
            .ok_or_else(|| unexpected("verification window", "an end time", "none"))?;
        let left = until.duration_since(Timestamp::now());
        let wait = Duration::try_from(left).unwrap_or_default() + Duration::from_millis(50);
        self.settle().await;
        self.tl.note(&format!(
            "… {} verification window passes quietly ({:.1} s)",
            g.environment,
            wait.as_secs_f64()
        ));
        tokio::time::sleep(wait).await;
        let report = self.job(JobName::Sweeper).await?;
        self.expect("sweeper", "ok", &report.summary, report.ok)?;
        self.expect_decision(g, State::Succeeded).await
    }

    /// Runs a job in-process, as the scheduler does, and prints its summary.
    async fn job(&mut self, job: JobName) -> Result<jobs::JobReport, DemoError> {
        self.settle().await;
        let ex = self.tl.begin();
        let result = jobs::run(&self.jobs, job).await;
        match result {
            Ok(report) => {
                let verdict = if report.ok { "ok" } else { "failed" };
                // A one-line summary goes on the job's line; longer ones below it.
                let mut lines = report.summary.lines();
                let what = match (lines.next(), lines.next()) {
                    (Some(only), None) => format!("{job}: {only}"),
                    _ => job.to_string(),
                };
                self.tl
                    .finish(ex, "scheduler", "shipgate", &what, Some(verdict));
                if report.summary.lines().nth(1).is_some() {
                    for line in report.summary.lines() {
                        self.tl.note(line);
                    }
                }
                Ok(report)
            }
            Err(e) => {
                self.tl.release();
                Err(DemoError::Job(e))
            }
        }
    }

    // ── Slack ──────────────────────────────────────────────────────────────────────────

    /// The approval request the notifier posted for `g`, with its Approve button.
    async fn approval_message(&mut self, g: &Gated) -> Result<ApprovalMessage, DemoError> {
        let prefix = format!("{}:", g.id);
        let found = self
            .slack
            .wait_for(WAIT, |reqs: &[Recorded]| {
                reqs.iter().rev().find_map(|r| {
                    if !(r.path.ends_with("/chat.postMessage") || r.path.ends_with("/chat.update"))
                    {
                        return None;
                    }
                    let value = button_value(r.body.get("blocks")?, APPROVE_ACTION_ID)?;
                    if !value.starts_with(&prefix) {
                        return None;
                    }
                    Some(ApprovalMessage {
                        channel: str_field(&r.answer, "channel"),
                        ts: str_field(&r.answer, "ts"),
                        text: str_field(&r.body, "text"),
                        value,
                    })
                })
            })
            .await;
        let message = found.ok_or_else(|| {
            unexpected(
                format!(
                    "Slack approval request for {} {}",
                    g.environment,
                    short(g.version.sha)
                ),
                "a message with an Approve button",
                "none within 10 s",
            )
        })?;
        self.checks += 1;
        Ok(message)
    }

    async fn click_approve(
        &mut self,
        g: &Gated,
        message: &ApprovalMessage,
        who: Person,
        expect: Click,
    ) -> Result<(), DemoError> {
        self.settle().await;
        self.clicks += 1;
        let n = self.clicks;
        let response_url = format!(
            "{}/actions/T0TEAM0001/{}/{}",
            self.slack.base_url(),
            who.slack,
            n
        );
        let now = Timestamp::now();
        let action_ts = format!("{}.{:06}", now.as_second(), now.subsec_microsecond());
        let interaction = payloads::slack_click(&SlackClick {
            action_id: APPROVE_ACTION_ID,
            value: &message.value,
            user_id: who.slack,
            user_name: who.login,
            channel: &message.channel,
            message_ts: &message.ts,
            message_text: &message.text,
            response_url: &response_url,
            action_ts: &action_ts,
        })
        .map_err(DemoError::Template)?;
        let body = payloads::slack_form(&interaction);
        let timestamp = now.as_second();
        let secret = SecretString::from(SLACK_SIGNING_SECRET);
        let signature = sign_slack(&secret, timestamp, body.as_bytes());
        let ex = self.tl.begin();
        let sent = self
            .http
            .post(format!("{}/webhooks/slack", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .body(body)
            .send()
            .await;
        let (status, answer) = match read(sent).await {
            Ok(r) => r,
            Err(e) => {
                self.tl.release();
                return Err(e);
            }
        };
        // What the clicker was told (the handler answers the response_url before it returns).
        let path = format!("/actions/T0TEAM0001/{}/{n}", who.slack);
        let told = self
            .slack
            .requests()
            .iter()
            .find(|r| r.path == path)
            .map(|r| str_field(&r.body, "text"))
            .unwrap_or_default();
        let dep = match self.deployment(&g.id).await {
            Ok(d) => d,
            Err(e) => {
                self.tl.release();
                return Err(e);
            }
        };
        let result = if told.starts_with("Not counted") {
            format!(
                "refused: {}",
                told.trim_start_matches("Not counted: ")
                    .trim_end_matches('.')
            )
        } else if dep.state == State::AwaitingApproval {
            format!(
                "progress {} of {}",
                dep.approvals.len(),
                dep.approvals_required
            )
        } else {
            dep.state.as_str().to_string()
        };
        self.tl.finish(
            ex,
            "slack",
            "shipgate",
            &format!(
                "{} ({}) clicks Approve on {} {}",
                who.login,
                who.slack,
                g.environment,
                short(g.version.sha)
            ),
            Some(&result),
        );
        self.expect(
            "Slack click answer",
            "200",
            &format!("{status} {answer}"),
            status == 200,
        )?;
        match expect {
            Click::RefusedSelfApproval => {
                self.expect(
                    &format!("{}'s own approval", who.login),
                    "refused as self-approval, nothing counted",
                    &format!(
                        "told {}, {} approvals, {}",
                        quote(&told),
                        dep.approvals.len(),
                        dep.state
                    ),
                    told.contains("you triggered this deployment")
                        && dep.approvals.is_empty()
                        && dep.state == State::AwaitingApproval
                        && g.requester.login == who.login,
                )?;
                self.tl.check(&format!(
                    "{} triggered this deploy, so their approval was refused and not counted",
                    who.login
                ));
            }
            Click::Counted(n) => self.expect(
                &format!("{}'s approval", who.login),
                &format!("awaiting_approval with {n} approval(s)"),
                &format!("{} with {}", dep.state, dep.approvals.len()),
                dep.state == State::AwaitingApproval && dep.approvals.len() == n,
            )?,
            Click::Approves => self.expect(
                &format!("{}'s approval", who.login),
                "approved",
                dep.state.as_str(),
                dep.state == State::Approved,
            )?,
        }
        Ok(())
    }

    // ── the bad deploy ─────────────────────────────────────────────────────────────────

    async fn rollback(&mut self, g: &Gated, started: Timestamp) -> Result<(), DemoError> {
        let dep = self.deployment(&g.id).await?;
        self.expect(
            "v2 in its verification window",
            "verifying",
            dep.state.as_str(),
            dep.in_verification_window(Timestamp::now()),
        )?;
        let firing =
            payloads::alertmanager("firing", started, None).map_err(DemoError::Template)?;
        let title = payloads::alert_title(&firing);
        // The window closes on its own: the notifier gets a moment to finish the previous
        // step, never so long that the alert would arrive after the window.
        let left = dep
            .verify_until
            .map(|u| Duration::try_from(u.duration_since(Timestamp::now())).unwrap_or_default())
            .unwrap_or_default();
        self.settle_within(
            left.saturating_sub(Duration::from_millis(1500))
                .min(SETTLE_MAX),
        )
        .await;
        let (_, answer) = self
            .alert(&firing, &format!("firing {title}"), &g.id, |b, state| {
                format!(
                    "{state} (incident opened; {} rollback to {} started)",
                    b["rollbacks_started"].as_u64().unwrap_or(0),
                    short(V1.sha)
                )
            })
            .await?;
        self.expect(
            "alert answer",
            "1 incident opened, 1 rollback started",
            &answer.to_string(),
            answer["opened"] == 1 && answer["rollbacks_started"] == 1,
        )?;
        let dep = self.expect_state(g, State::RollingBack).await?;

        // shipgate asked GitHub for a deployment of the last known good sha.
        let of = g.id.clone();
        let created = self
            .github
            .wait_for(WAIT, |reqs| {
                reqs.iter().find_map(|r| {
                    (r.path.ends_with("/deployments")
                        && r.body
                            .pointer("/payload/shipgate_rollback_of")
                            .and_then(Value::as_str)
                            == Some(of.as_str()))
                    .then(|| (r.body.clone(), r.answer.clone()))
                })
            })
            .await;
        let Some((request, answer)) = created else {
            return Err(unexpected(
                "rollback deployment",
                format!(
                    "POST /repos/{}/deployments for {}",
                    self.repo.full_name(),
                    short(V1.sha)
                ),
                "no such request within 10 s",
            ));
        };
        let target = str_field(&request, "ref");
        self.expect(
            "rollback target",
            V1.sha,
            &target,
            target == V1.sha && request["environment"] == "production",
        )?;
        let rollback_gh = answer["id"].as_u64().unwrap_or_default();
        self.expect(
            "stored rollback deployment",
            &rollback_gh.to_string(),
            &format!(
                "{:?}",
                dep.rollback.as_ref().and_then(|r| r.github_deployment_id)
            ),
            rollback_gh != 0,
        )?;
        let incident = self
            .pagerduty
            .wait_for(WAIT, |reqs| {
                reqs.iter()
                    .find(|r| r.body["event_action"] == "trigger")
                    .map(|r| str_field(&r.body, "dedup_key"))
            })
            .await;
        let Some(dedup_key) = incident else {
            return Err(unexpected(
                "PagerDuty page",
                "a trigger event",
                "none within 10 s",
            ));
        };
        self.checks += 1;

        // GitHub Actions carries out the rollback deployment shipgate created.
        let repo = self.repo.clone();
        let rb = GhDeployment {
            repo: &repo,
            environment: "production",
            git_ref: V1.sha,
            sha: V1.sha,
            run_id: None,
            id: rollback_gh,
            payload: request["payload"].clone(),
            creator: "shipgate-demo[bot]",
        };
        let created = payloads::deployment_created(&rb).map_err(DemoError::Template)?;
        self.github_event(
            "deployment",
            &created,
            &format!(
                "deployment {rollback_gh} created (the rollback, {})",
                short(V1.sha)
            ),
            |_, b| lifecycle_result(b, "linked"),
        )
        .await?;
        for state in ["in_progress", "success"] {
            let status = payloads::deployment_status(&rb, state, &format!("rollback {state}"))
                .map_err(DemoError::Template)?;
            self.github_event(
                "deployment_status",
                &status,
                &format!("deployment_status {state} (rollback deployment {rollback_gh})"),
                |_, b| lifecycle_result(b, ""),
            )
            .await?;
        }
        self.expect_state(g, State::RolledBack).await?;
        let scope = self.scope("production")?;
        let heads = self
            .services
            .repo
            .heads(&scope)
            .await
            .map_err(DemoError::Repo)?;
        let current = heads.current.map(|h| h.sha).unwrap_or_default();
        self.expect(
            "production after the rollback",
            V1.sha,
            &current,
            current == V1.sha,
        )?;
        self.tl.check(&format!(
            "production runs {} again; {} is rolled back",
            short(V1.sha),
            short(g.version.sha)
        ));

        // The alert clears.
        self.settle().await;
        let resolved_at = Timestamp::now();
        let resolved = payloads::alertmanager("resolved", started, Some(resolved_at))
            .map_err(DemoError::Template)?;
        let (_, answer) = self
            .alert(&resolved, &format!("resolved {title}"), &g.id, |b, _| {
                if b["resolved"] == 1 {
                    "resolved (incident closed)".to_string()
                } else {
                    format!("{b}")
                }
            })
            .await?;
        self.expect(
            "alert resolution",
            "1 resolved",
            &answer.to_string(),
            answer["resolved"] == 1,
        )?;
        let key = dedup_key.clone();
        let resolve = self
            .pagerduty
            .wait_for(WAIT, |reqs| {
                reqs.iter()
                    .find(|r| {
                        r.body["event_action"] == "resolve"
                            && str_field(&r.body, "dedup_key") == key
                    })
                    .map(|_| ())
            })
            .await;
        self.expect(
            "PagerDuty resolve",
            &format!("resolve with dedup_key {dedup_key}"),
            "none within 10 s",
            resolve.is_some(),
        )?;
        self.settle().await;
        self.tl.check(&format!(
            "PagerDuty incident {dedup_key} was triggered and resolved with the same dedup_key"
        ));
        Ok(())
    }

    /// Sends an Alertmanager notification; `describe` reads the answer and the state of
    /// deployment `watch` afterwards.
    async fn alert(
        &mut self,
        payload: &Value,
        what: &str,
        watch: &str,
        describe: impl Fn(&Value, State) -> String,
    ) -> Result<(u16, Value), DemoError> {
        let body = serde_json::to_vec(payload).map_err(DemoError::Json)?;
        let ex = self.tl.begin();
        let sent = self
            .http
            .post(format!("{}/webhooks/alertmanager", self.base))
            .header("content-type", "application/json")
            .header("user-agent", "Alertmanager/0.27.0")
            .header("authorization", format!("Bearer {ALERT_TOKEN}"))
            .body(body)
            .send()
            .await;
        let (status, answer) = match read(sent).await {
            Ok(r) => r,
            Err(e) => {
                self.tl.release();
                return Err(e);
            }
        };
        let state = match self.deployment(watch).await {
            Ok(d) => d.state,
            Err(e) => {
                self.tl.release();
                return Err(e);
            }
        };
        let result = if status == 200 {
            describe(&answer, state)
        } else {
            format!("HTTP {status}")
        };
        self.tl
            .finish(ex, "alertmanager", "shipgate", what, Some(&result));
        if status != 200 {
            return Err(unexpected(
                "alert delivery",
                "200",
                format!("{status} {answer}"),
            ));
        }
        Ok((status, answer))
    }

    // ── jobs ───────────────────────────────────────────────────────────────────────────

    async fn backup_and_drill(&mut self) -> Result<(), DemoError> {
        let backup = self.job(JobName::Backup).await?;
        self.expect("backup", "ok", &backup.summary, backup.ok)?;
        let items = backup
            .details
            .pointer("/backups/0/items")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        self.expect(
            "backup item count",
            "more than 0",
            &items.to_string(),
            items > 0,
        )?;
        self.tl.check(&format!(
            "encrypted backup of {items} items written to backups/ (key in backup.key)"
        ));
        let drill = self.job(JobName::RestoreDrill).await?;
        self.expect(
            "restore drill",
            "passed",
            &drill.summary,
            drill.ok && drill.summary.starts_with("restore drill passed"),
        )?;
        self.tl.check(
            "restore drill passed: the backup decrypted, verified and restored with matching item count and digest",
        );
        Ok(())
    }

    async fn dora(&mut self) -> Result<(), DemoError> {
        let report = self.job(JobName::DoraReport).await?;
        self.expect("dora-report", "ok", &report.summary, report.ok)?;
        let production = report
            .details
            .get("reports")
            .and_then(Value::as_array)
            // Every window (7, 30, 90 days) holds the whole story; the first will do.
            .and_then(|all| all.iter().find(|r| r["environment"] == "production"))
            .cloned()
            .unwrap_or(Value::Null);
        let deployments = production["deployments"].as_u64().unwrap_or(0);
        self.expect(
            "production deployments in the DORA report",
            "2",
            &deployments.to_string(),
            deployments == 2,
        )?;
        self.settle().await;
        Ok(())
    }
}

/// What a click is expected to do.
#[derive(Debug, Clone, Copy)]
enum Click {
    RefusedSelfApproval,
    Counted(usize),
    Approves,
}

async fn read(sent: Result<reqwest::Response, reqwest::Error>) -> Result<(u16, Value), DemoError> {
    let resp = sent.map_err(DemoError::Http)?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(DemoError::Http)?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, body))
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// The state a lifecycle answer reports (`{"state": …, "changed": …}`).
fn lifecycle_result(b: &Value, unchanged: &str) -> String {
    let state = str_field(b, "state");
    match b.get("changed").and_then(Value::as_bool) {
        Some(true) => state,
        Some(false) if !unchanged.is_empty() => format!("{unchanged} ({state})"),
        Some(false) => format!("{state} (unchanged)"),
        None => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_policy_is_the_example_with_short_windows_and_redeploy() {
        let text = demo_policy().expect("changes apply");
        let policy =
            shipgate::domain::policy::Policy::parse("demo.toml", &text).expect("valid policy");
        let staging = policy.environment("staging").expect("staging");
        let production = policy.environment("production").expect("production");
        assert_eq!(staging.verification_window, Duration::from_secs(1));
        assert_eq!(production.verification_window, Duration::from_secs(4));
        assert_eq!(
            production.rollback,
            shipgate::domain::policy::RollbackMethod::Redeploy
        );
        assert_eq!(production.approvals_required, 2);
        assert!(production.prevent_self_approval);
    }

    #[test]
    fn the_story_people_match_the_policy_identities() {
        let policy = shipgate::domain::policy::Policy::example().expect("example");
        for p in [OCTOCAT, ALICE, BOB, CAROL] {
            assert_eq!(
                policy.identities().get(p.slack).map(String::as_str),
                Some(p.login),
                "{p:?}"
            );
        }
        let production = policy.environment("production").expect("production");
        for p in [ALICE, BOB, CAROL] {
            assert!(production.approvers.iter().any(|a| a == p.slack), "{p:?}");
        }
    }

    #[test]
    fn the_demo_key_is_an_rsa_key_the_github_client_accepts() {
        assert!(demo_key().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let cfg = shipgate::outbound::github::GitHubAppConfig::new(
            APP_ID,
            SecretString::from(demo_key()),
        );
        let client = reqwest::Client::new();
        assert!(shipgate::outbound::github::GitHubApp::new(cfg, client).is_ok());
    }
}
