//! Many deployments of three repositories through one environment, with GitHub's deliveries
//! lost, duplicated and sent twice at once at random, the process restarted in the middle of
//! a delivery or a sweep (the handler dropped where it stands, as `kill -9` leaves it; the
//! real binary's `kill -9` is in `shipgate.rs`), critical alerts in some verification
//! windows, and the sweeper running now and then. Whatever the mix, once GitHub has nothing
//! left running:
//!
//! - every lock is free (no deployment still holds one, none waits in a queue);
//! - no run got two answers;
//! - no scope's last known good is a deployment a critical incident was blamed on.
//!
//! Each seed is deterministic (xorshift); a failure names its seed.

#[path = "common/alert_webhook.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::{alertmanager, Harness, INSTALLATION_ID};
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

const REPOS: [(&str, &str); 3] = [
    ("acme/api", "api"),
    ("acme/web", "web"),
    ("acme/ops", "ops"),
];
const RUNS: u64 = 24;
/// Percent of deliveries (and sweeps) the process dies in the middle of.
const RESTARTS: u64 = 8;
/// How many times the process restarted in one play, and how many of those cut work short.
#[derive(Debug, Default, Clone, Copy)]
struct Restarts {
    restarted: usize,
    cut: usize,
}

const POLICY: &str = r#"
[services]
api = "acme/api"
web = "acme/web"
ops = "acme/ops"

[environments.staging]
approvals_required = 0
verification_window = "5m"
deploy_timeout = "30m"
queue_wait = "6h"
rollback_on = ["critical"]
rollback = { method = "redeploy" }
"#;

/// xorshift64*: deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// True with probability `p` percent.
    fn chance(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// What GitHub knows about one run.
#[derive(Debug, Clone)]
struct Run {
    repo: &'static str,
    service: &'static str,
    sha: String,
    succeeds: bool,
    /// Executed: its deployment was created and ran to its end (as GitHub sees it).
    done: bool,
}

fn protection_rule(run_id: u64, run: &Run) -> Value {
    json!({
        "action": "requested",
        "environment": "staging",
        "event": "push",
        "ref": "main",
        "sha": run.sha,
        "deployment_callback_url": format!("https://api.github.com/repos/{}/actions/runs/{run_id}/deployment_protection_rule", run.repo),
        "installation": { "id": INSTALLATION_ID },
        "sender": { "login": "octocat" },
        "repository": { "full_name": run.repo },
    })
}

fn created(run_id: u64, run: &Run) -> Value {
    json!({
        "action": "created",
        "deployment": { "id": run_id + 100_000, "sha": run.sha, "ref": "main", "environment": "staging", "payload": {} },
        "repository": { "full_name": run.repo },
        "workflow_run": { "id": run_id },
    })
}

fn status(run_id: u64, run: &Run, state: &str) -> Value {
    json!({
        "action": "created",
        "deployment_status": { "state": state, "environment": "staging" },
        "deployment": { "id": run_id + 100_000, "sha": run.sha, "ref": "main", "environment": "staging", "payload": {} },
        "repository": { "full_name": run.repo },
        "workflow_run": { "id": run_id },
    })
}

/// Delivers `body` `times` times (0 = lost), the first two at once when `together`. Now and
/// then the process dies in the middle of the last one and starts again.
async fn deliver(
    h: &mut Harness,
    rng: &mut Rng,
    restarts: &mut Restarts,
    event: &str,
    body: &Value,
    times: u32,
    together: bool,
) {
    if times >= 2 && together {
        futures::future::join(h.deliver(event, body), h.deliver(event, body)).await;
        for _ in 2..times {
            h.deliver(event, body).await;
        }
    } else {
        for _ in 1..times {
            h.deliver(event, body).await;
        }
        if times >= 1 {
            if rng.chance(RESTARTS) {
                let polls = 1 + (rng.next() % 6) as u32;
                if h.deliver_cut(event, body, polls).await.is_none() {
                    restarts.cut += 1;
                }
                h.restart();
                restarts.restarted += 1;
            } else {
                h.deliver(event, body).await;
            }
        }
    }
}

fn times(rng: &mut Rng) -> (u32, bool) {
    if rng.chance(20) {
        (0, false)
    } else if rng.chance(15) {
        (2, rng.chance(50))
    } else {
        (1, false)
    }
}

/// The runs GitHub has been told to go ahead with (`approved`), from its fake's calls.
async fn approved_runs(h: &Harness) -> BTreeSet<u64> {
    h.github_calls("/deployment_protection_rule")
        .await
        .into_iter()
        .filter_map(|r| {
            let body: Value = serde_json::from_slice(&r.body).ok()?;
            (body["state"] == "approved").then_some(())?;
            run_of(r.url.path())
        })
        .collect()
}

/// GitHub runs run `run_id`'s deployment to its end; the deliveries about it may be lost.
async fn execute(h: &mut Harness, rng: &mut Rng, restarts: &mut Restarts, run_id: u64, run: &Run) {
    let gh = run_id + 100_000;
    let final_state = if run.succeeds { "success" } else { "failure" };
    let conclusion = if run.succeeds { "success" } else { "failure" };
    // What GitHub answers when asked afterwards.
    Mock::given(method("GET"))
        .and(path(format!(
            "/repos/{}/deployments/{gh}/statuses",
            run.repo
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{ "state": final_state }])))
        .mount(&h.github)
        .await;
    h.github_says_run(run.repo, run_id, "Deploy", "completed", Some(conclusion))
        .await;
    let (n, together) = times(rng);
    deliver(
        h,
        rng,
        restarts,
        "deployment",
        &created(run_id, run),
        n,
        together,
    )
    .await;
    let (n, together) = times(rng);
    deliver(
        h,
        rng,
        restarts,
        "deployment_status",
        &status(run_id, run, "in_progress"),
        n,
        together,
    )
    .await;
    let (n, together) = times(rng);
    deliver(
        h,
        rng,
        restarts,
        "deployment_status",
        &status(run_id, run, final_state),
        n,
        together,
    )
    .await;
    // Some good deploys draw a critical alert inside their window.
    if run.succeeds && rng.chance(25) {
        h.advance_mins(1);
        let labels = json!({ "alertname": "HighErrorRate", "env": "staging", "service": run.service, "severity": "critical" });
        let fingerprint = format!("fp-{run_id}");
        let firing = alertmanager("firing", &fingerprint, labels.clone(), h.now(), None);
        h.post_alert("/webhooks/alertmanager", &firing).await;
        finish_rollbacks(h).await;
        h.advance_mins(1);
        let resolved = alertmanager("resolved", &fingerprint, labels, h.now(), Some(h.now()));
        h.post_alert("/webhooks/alertmanager", &resolved).await;
    }
}

/// Rollback deployments shipgate created finish (delivered reliably).
async fn finish_rollbacks(h: &Harness) {
    for dep in h
        .repo
        .active_deployments("staging", h.now(), 30)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.state == State::RollingBack)
    {
        let Some(rb) = dep.rollback.clone() else {
            continue;
        };
        let Some(gh) = rb.github_deployment_id else {
            continue;
        };
        let body = json!({
            "action": "created",
            "deployment_status": { "state": "success", "environment": "staging" },
            "deployment": { "id": gh, "sha": rb.target_sha, "ref": rb.target_sha, "environment": "staging", "payload": { "shipgate_rollback_of": dep.id } },
            "repository": { "full_name": dep.repo.as_str() },
        });
        h.deliver("deployment_status", &body).await;
    }
}

/// Sweeps; returns how many deployments it reconciled with GitHub or timed out. Now and
/// then the process dies in the middle of it and starts again.
async fn sweep(h: &mut Harness, rng: &mut Rng, restarts: &mut Restarts) -> usize {
    if rng.chance(RESTARTS) {
        let polls = 1 + (rng.next() % 10) as u32;
        if common::run_cut(
            shipgate::jobs::sweeper::sweep(
                h.services(),
                &shipgate::service::analysis::Sources::default(),
            ),
            polls,
        )
        .await
        .is_none()
        {
            restarts.cut += 1;
        }
        h.restart();
        restarts.restarted += 1;
        return 0;
    }
    let report = shipgate::jobs::sweeper::sweep(
        h.services(),
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert!(report.errors.is_empty(), "{report:?}");
    report.reconciled.len() + report.deploys_timed_out.len()
}

/// GitHub's side of the protection rule: a run waits on staging until it has an answer, and
/// `pending_deployments` says so.
async fn mount_protection_rules(h: &Harness) {
    let answered: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let record = answered.clone();
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/repos/acme/[a-z]+/actions/runs/[0-9]+/deployment_protection_rule$",
        ))
        .respond_with(move |r: &wiremock::Request| {
            let decided = serde_json::from_slice::<Value>(&r.body)
                .map(|b| b.get("state").is_some())
                .unwrap_or(false);
            if let (true, Some(run)) = (decided, run_of(r.url.path())) {
                record.lock().unwrap().insert(run);
            }
            ResponseTemplate::new(204)
        })
        .with_priority(1)
        .mount(&h.github)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/repos/acme/[a-z]+/actions/runs/[0-9]+/pending_deployments$",
        ))
        .respond_with(move |r: &wiremock::Request| {
            let waiting = run_of(r.url.path())
                .map(|run| !answered.lock().unwrap().contains(&run))
                .unwrap_or(false);
            let body = if waiting {
                json!([{ "environment": { "id": 1, "name": "staging" }, "wait_timer": 0, "current_user_can_approve": false, "reviewers": [] }])
            } else {
                json!([])
            };
            ResponseTemplate::new(200).set_body_json(body)
        })
        .mount(&h.github)
        .await;
}

fn run_of(path: &str) -> Option<u64> {
    path.split("/runs/").nth(1)?.split('/').next()?.parse().ok()
}

/// Plays one seed; returns how often the process restarted and cut work short.
async fn play(mut h: Harness, seed: u64) -> Restarts {
    mount_protection_rules(&h).await;
    let mut restarts = Restarts::default();
    // Rollback deployments shipgate asks GitHub for.
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(900_000));
    let ids = next_id.clone();
    Mock::given(method("POST"))
        .and(path_regex(r"^/repos/acme/[a-z]+/deployments$"))
        .respond_with(move |_: &wiremock::Request| {
            let id = ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ResponseTemplate::new(201).set_body_json(json!({ "id": id }))
        })
        .mount(&h.github)
        .await;

    let mut rng = Rng(seed);
    let mut reconciled = 0;
    let mut runs: BTreeMap<u64, Run> = BTreeMap::new();
    for i in 0..RUNS {
        let (repo, service) = REPOS[(rng.next() % 3) as usize];
        runs.insert(
            1000 + i,
            Run {
                repo,
                service,
                sha: format!("{:040x}", 0xabc0_0000 + i),
                succeeds: rng.chance(80),
                done: false,
            },
        );
    }
    let ids: Vec<u64> = runs.keys().copied().collect();
    for (step, run_id) in ids.iter().enumerate() {
        h.advance_mins(1);
        let run = runs[run_id].clone();
        // GitHub asks once per run; a redelivery by hand, or two jobs, may ask again at once.
        let body = protection_rule(*run_id, &run);
        if rng.chance(15) {
            deliver(
                &mut h,
                &mut rng,
                &mut restarts,
                "deployment_protection_rule",
                &body,
                2,
                true,
            )
            .await;
        } else {
            deliver(
                &mut h,
                &mut rng,
                &mut restarts,
                "deployment_protection_rule",
                &body,
                1,
                false,
            )
            .await;
        }
        // GitHub runs what it was told to run.
        for approved in approved_runs(&h).await {
            let Some(run) = runs.get_mut(&approved) else {
                continue;
            };
            if run.done {
                continue;
            }
            run.done = true;
            let run = run.clone();
            execute(&mut h, &mut rng, &mut restarts, approved, &run).await;
        }
        if step % 3 == 2 {
            h.advance_mins(6);
            reconciled += sweep(&mut h, &mut rng, &mut restarts).await;
        }
    }
    // Time passes; the sweeper reconciles, times out, closes windows and serves queues, and
    // GitHub runs whatever it is told to, until nothing is left.
    for _ in 0..40 {
        h.advance_mins(16);
        reconciled += sweep(&mut h, &mut rng, &mut restarts).await;
        finish_rollbacks(&h).await;
        let mut ran = false;
        for approved in approved_runs(&h).await {
            let Some(run) = runs.get_mut(&approved) else {
                continue;
            };
            if run.done {
                continue;
            }
            run.done = true;
            ran = true;
            let run = run.clone();
            execute(&mut h, &mut rng, &mut restarts, approved, &run).await;
        }
        let open = h
            .repo
            .active_deployments("staging", h.now(), 30)
            .await
            .unwrap();
        if !ran && open.is_empty() {
            break;
        }
    }

    // What the mix did, for the log (`--nocapture`).
    let all = h
        .repo
        .deployments_in(
            "staging",
            jiff::Timestamp::UNIX_EPOCH,
            jiff::Timestamp::MAX,
            false,
            None,
        )
        .await
        .unwrap();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for d in &all {
        *states.entry(d.state.to_string()).or_default() += 1;
    }
    println!(
        "seed {seed:#x}: {} runs, {} deployment records {states:?}, {reconciled} reconciled with GitHub by the sweeper, {} restarts ({} cut work short)",
        runs.len(),
        all.len(),
        restarts.restarted,
        restarts.cut
    );

    // Every lock free, nothing left in flight or queued.
    let open = h
        .repo
        .active_deployments("staging", h.now(), 30)
        .await
        .unwrap();
    assert!(open.is_empty(), "seed {seed}: still open: {open:?}");
    for (repo, _) in REPOS {
        let scope = testkit::scope(repo, "staging");
        assert_eq!(
            h.repo.lock_holder(&scope).await.unwrap(),
            None,
            "seed {seed}: {repo}"
        );
        assert!(
            h.repo.queue(&scope).await.unwrap().is_empty(),
            "seed {seed}: {repo}"
        );
    }
    // No run answered twice.
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for r in h.github_calls("/deployment_protection_rule").await {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        if body.get("state").is_some() {
            *answers.entry(r.url.path().to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = answers.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "seed {seed}: answered twice: {twice:?}");
    // No last known good a critical incident was blamed on.
    let incidents = h
        .repo
        .incidents_in("staging", jiff::Timestamp::UNIX_EPOCH, jiff::Timestamp::MAX)
        .await
        .unwrap();
    for (repo, _) in REPOS {
        let heads = h
            .repo
            .heads(&testkit::scope(repo, "staging"))
            .await
            .unwrap();
        if let Some(good) = heads.last_known_good {
            let blamed: Vec<_> = incidents
                .iter()
                .filter(|i| i.caused_by_deployment.as_deref() == Some(good.deployment_id.as_str()))
                .map(|i| i.id.clone())
                .collect();
            assert!(
                blamed.is_empty(),
                "seed {seed}: {repo}'s last known good {} had {blamed:?}",
                good.deployment_id
            );
        }
    }
    restarts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_and_concurrent_deliveries_leave_nothing_stuck_doubled_or_wrongly_good() {
    let mut cut = 0;
    for seed in [0x5EED_0001u64, 0x5EED_0002, 0x5EED_0003, 0x5EED_0004] {
        cut += play(Harness::build(POLICY, 201, common::ALERT_TOKEN).await, seed)
            .await
            .cut;
    }
    // The restarts must have interrupted something, or they test nothing.
    assert!(cut > 0, "no restart cut a delivery or a sweep short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_dynamodb() {
    let store = common::dynamodb_store().await;
    let restarts = play(
        Harness::build_on(POLICY, 201, common::ALERT_TOKEN, Some(store)).await,
        0x5EED_0005,
    )
    .await;
    assert!(restarts.cut > 0, "no restart cut work short: {restarts:?}");
}
