//! How long each dashboard page takes to read and render on a store of 10,000 deployments:
//! 50 repositories in two environments (100 deployments per scope, each with its audit log),
//! 400 incidents with two episodes each, a rollback in every tenth deployment, the backup and
//! drill results, and a quarter of kept DORA weeks per environment. The store is real SQLite
//! in a file (as `shipgate serve` keeps it). Each sample is one whole page: the store reads
//! plus the HTML, as a request to the dashboard does them, without the socket.
//!
//! Run: `cargo bench -p shipgate --bench dashboard`. The target is under 100 ms per page.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use shipgate::dashboard::html::Site;
use shipgate::dashboard::View;
use shipgate::domain::deployment::{AuditEvent, Deployment, Head};
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::{Durability, SqliteStore};
use shipgate::jobs::{self, JobContext, JobName, MetricSink};
use shipgate::service::incidents::AlertSignal;
use shipgate::service::{incidents, Services};
use shipgate::store::Repo;
use testkit::{ManualClock, RecordingPublisher};

const REPOS: usize = 50;
const PER_SCOPE: usize = 100;
const ENVIRONMENTS: [&str; 2] = ["staging", "production"];

fn policy() -> Policy {
    let mut text = String::from("[services]\n");
    for r in 0..REPOS {
        text.push_str(&format!("svc{r} = \"acme/svc{r}\"\n"));
    }
    text.push_str(
        "[identities]\nU0APPROV1 = \"alice\"\n\n[environments.staging]\nverification_window = \"15m\"\n\n[environments.production]\npromotion_from = [\"staging\"]\napprovals_required = 1\napprovers = [\"U0APPROV1\"]\nverification_window = \"15m\"\n",
    );
    Policy::parse("bench.toml", &text).expect("policy")
}

fn sha(n: usize) -> String {
    format!("{n:040x}")
}

struct Seeded {
    svc: Services,
    deployment_id: String,
    _dir: tempfile::TempDir,
}

async fn seed() -> Seeded {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(dir.path().join("shipgate.db"), Durability::Normal).expect("sqlite");
    let repo = Repo::new(Arc::new(store));
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().expect("time");
    let now = start + SignedDuration::from_hours(24 * 90);
    let clock = ManualClock::new(start);
    let svc = Services {
        repo: repo.clone(),
        policy: Arc::new(policy()),
        github: None,
        publisher: Arc::new(RecordingPublisher::default()),
        clock: Arc::new(clock.clone()),
        policy_source: None,
    };
    let mut n = 0usize;
    let mut some_id = String::new();
    // Spread over 90 days: one deployment per scope every 21.6 hours.
    for i in 0..PER_SCOPE {
        for env in ENVIRONMENTS {
            for r in 0..REPOS {
                n += 1;
                let at = start
                    + SignedDuration::from_mins((i * 24 * 60 * 90 / PER_SCOPE) as i64 + r as i64);
                let rolled_back = n % 10 == 0;
                let state = if rolled_back {
                    "rolled_back"
                } else {
                    "succeeded"
                };
                let id = format!("dep-{n:06}");
                let mut value = json!({
                    "id": id, "repo": format!("acme/svc{r}"), "environment": env,
                    "git_ref": "refs/heads/main", "sha": sha(n), "requester": "octocat",
                    "kind": "deploy", "state": state, "version": 0,
                    "created_at": at, "updated_at": at, "run_id": n,
                    "approvals_required": 1,
                    "approvals": [{ "approver": "U0APPROV1", "at": at + SignedDuration::from_mins(3) }],
                    "verify_until": at + SignedDuration::from_mins(25),
                    "finished_at": at + SignedDuration::from_mins(25),
                });
                if rolled_back {
                    value["rollback"] = json!({
                        "target_sha": sha(n - 1), "reason": "critical alert during the verification window",
                        "started_by": "alert:alertmanager:x", "started_at": at + SignedDuration::from_mins(12),
                        "finished_at": at + SignedDuration::from_mins(15),
                    });
                }
                let mut dep: Deployment = serde_json::from_value(value).expect("deployment");
                let events: Vec<AuditEvent> = [
                    "requested",
                    "request_approval",
                    "approval_recorded",
                    "approve",
                    "github_answered",
                    "start_deploy",
                    "begin_verification",
                    "pass_verification",
                ]
                .iter()
                .enumerate()
                .map(|(k, what)| AuditEvent {
                    at: at + SignedDuration::from_mins(k as i64),
                    deployment_id: id.clone(),
                    environment: env.to_string(),
                    actor: "github".into(),
                    what: (*what).into(),
                    from: None,
                    to: None,
                    why: "seeded for the benchmark".into(),
                })
                .collect();
                repo.create_deployment(&mut dep, &events, at)
                    .await
                    .expect("create");
                if i + 1 == PER_SCOPE {
                    let head = Head {
                        sha: sha(n),
                        git_ref: "refs/heads/main".into(),
                        deployment_id: id.clone(),
                        at,
                        verify_until: None,
                    };
                    repo.set_head(&dep.scope(), head, true).await.expect("head");
                    some_id = id.clone();
                }
            }
        }
    }
    // 400 incidents in production, each firing twice (two episodes), the last quarter.
    for k in 0..400usize {
        let began = start + SignedDuration::from_hours((k * 5) as i64);
        clock.set(began);
        for (offset, status) in [
            (0, "firing"),
            (10, "resolved"),
            (30, "firing"),
            (45, "resolved"),
        ] {
            let t = began + SignedDuration::from_mins(offset);
            clock.set(t);
            let labels = [
                ("alertname", "HighErrorRate".to_string()),
                ("env", "production".to_string()),
                ("service", format!("svc{}", k % REPOS)),
                ("severity", "warning".to_string()),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b))
            .collect();
            let signal = AlertSignal {
                source: "alertmanager".into(),
                fingerprint: format!("fp{k:04}"),
                status: if status == "firing" {
                    shipgate::service::incidents::AlertStatus::Firing
                } else {
                    shipgate::service::incidents::AlertStatus::Resolved
                },
                labels,
                annotations: Default::default(),
                starts_at: Some(if offset < 30 {
                    began
                } else {
                    began + SignedDuration::from_mins(30)
                }),
                ends_at: (status == "resolved").then_some(t),
                link: None,
                delivery_key: None,
            };
            incidents::ingest(&svc, vec![signal]).await.expect("alert");
        }
    }
    clock.set(now);
    // The scheduled jobs' results, and a quarter of DORA weeks (each a copy of this week's).
    let ctx = JobContext::new(svc.clone(), reqwest::Client::new()).with_metrics(MetricSink::Off);
    jobs::run(&ctx, JobName::DoraReport).await.expect("dora");
    for env in ENVIRONMENTS {
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let weeks = repo
            .dora_weeks(env, today - jiff::Span::new().days(14))
            .await
            .expect("weeks");
        if let Some(latest) = weeks.last() {
            for w in 2..14 {
                let day = latest.day - jiff::Span::new().days(7 * w);
                repo.put_dora_week(env, day, &latest.reports)
                    .await
                    .expect("week");
            }
        }
    }
    Seeded {
        svc,
        deployment_id: some_id,
        _dir: dir,
    }
}

fn pages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seeded = rt.block_on(seed());
    let svc = &seeded.svc;
    let view = View {
        repo: &svc.repo,
        policy: &svc.policy,
        now: svc.now(),
        site: Site::Live,
        signed_in: None,
        github_web: "https://github.com",
    };
    // What is measured is a real page: the deployment exists and every environment charts.
    let page = rt
        .block_on(view.deployment(&seeded.deployment_id))
        .expect("page")
        .expect("the deployment's page");
    assert!(page.contains("begin_verification"));
    let dora = rt.block_on(view.dora(None)).expect("page");
    assert_eq!(dora.matches("<svg class=\"chart\"").count(), 8);
    let mut group = c.benchmark_group("dashboard/10k_deployments");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    group.bench_function("overview", |b| {
        b.iter(|| black_box(rt.block_on(view.overview()).expect("page").len()))
    });
    group.bench_function("deployment", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(view.deployment(&seeded.deployment_id))
                    .expect("page")
                    .map(|p| p.len()),
            )
        })
    });
    group.bench_function("incidents", |b| {
        b.iter(|| black_box(rt.block_on(view.incidents()).expect("page").len()))
    });
    group.bench_function("backups", |b| {
        b.iter(|| black_box(rt.block_on(view.backups()).expect("page").len()))
    });
    group.bench_function("dora", |b| {
        b.iter(|| black_box(rt.block_on(view.dora(None)).expect("page").len()))
    });
    group.bench_function("dora/one_repository", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(view.dora(Some("acme/svc7")))
                    .expect("page")
                    .len(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
