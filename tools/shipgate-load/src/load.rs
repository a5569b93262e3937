//! `shipgate-load`: drives a running server with signed, mixed webhooks from many concurrent
//! clients, then checks from the store that nothing was lost, doubled or raced.
//!
//! The traffic is what a busy installation sees, built from the sample events in `events/`:
//! GitHub `deployment_protection_rule` requests for many environments and shas (each with its
//! own delivery id), the `deployment_status` progress of the deployments that were let
//! through (in progress, then success or failure), exact redeliveries of a share of those
//! deliveries sent at the same time as the original (they must be deduplicated), and bursts
//! of Alertmanager notifications for a critical alert in an environment whose deployment is
//! verifying (several at once per incident, some identical, some repeats with a newer
//! `endsAt`), followed by the rollback deployment's statuses and the alert's resolution.
//! Slack clicks are not part of the mix: every environment of the load policy needs no
//! approval.
//!
//! It stops after `--count` requests or `--duration`, whichever comes first, and reports
//! throughput and latency (from sending a request to reading its whole answer). Then, from
//! the store:
//!
//! - every accepted protection-rule delivery made exactly one deployment record, and no
//!   delivery (original or redelivery) was processed twice;
//! - redeliveries changed nothing (no `status_ignored` audit lines, incident notification
//!   counts equal the distinct notifications);
//! - at most one deployment held each environment's lock: sampled during the run on a
//!   separate read connection (each sample is one SQLite statement, so one snapshot), and
//!   at the end (the lock's holder is a deployment in a lock-holding state);
//! - exactly one rollback per incident that called for one.
//!
//! `--spawn` starts `shipgate serve` in-process ([`shipgate_cli::server::start`]) on
//! 127.0.0.1:0 with a temporary data directory and the load policy ([`load_policy`]), with the
//! sweeper every [`SPAWN_SWEEPER_EVERY`] so verification windows close, and no GitHub App,
//! Slack or PagerDuty: nothing leaves the machine. A rollback an alert starts there is
//! therefore recorded as started and then failed ("rollback could not be started: no GitHub
//! App is configured"), its lock freed; the load still plays GitHub's part, sending the
//! rollback deployment's statuses, which such a server ignores (it created no rollback
//! deployment). `--target` drives a server started elsewhere, on loopback only; run it with
//! `--print-policy`'s policy.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{json, Value};
use shipgate::domain::deployment::State;
use shipgate::embedded::sqlite::{Durability, SqliteStore};
use shipgate::jobs::JobName;
use shipgate::signature::sign_github;
use shipgate::store::{Repo, RepoError};
use shipgate_cli::data::{self, SyncMode};
use shipgate_cli::error::CliError;
use shipgate_cli::logging::{self, LogFormat};
use shipgate_cli::runtime;
use shipgate_cli::scheduler::Schedule;
use shipgate_cli::server::{self, ServeConfig};

/// How often the spawned server's sweeper runs (closes verification windows).
pub const SPAWN_SWEEPER_EVERY: Duration = Duration::from_secs(2);
/// Share of GitHub deliveries that are also redelivered, in percent.
const REDELIVER_PERCENT: u64 = 10;
/// Share of deployments whose `success` is followed by a critical alert, in percent.
const ALERT_PERCENT: u64 = 80;
/// Share of started deployments that fail instead of succeeding, in percent.
const FAIL_PERCENT: u64 = 25;
/// The notifications of one incident sent at once: variant 0 three times (identical, so two
/// are duplicates), then three repeats with a later `endsAt` (each a new notification).
const ALERT_VARIANTS: [u32; 6] = [0, 0, 0, 1, 2, 3];
/// How often the lock sampler reads every environment.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How far back the sampler looks for lock holders; holders in this load live a few
/// seconds at most, and the final check covers every deployment.
const SAMPLE_LOOKBACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(20);
/// One request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const REPO: &str = "acme/api";

/// `shipgate-load` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The server to drive, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long, value_name = "URL", conflicts_with = "spawn", required_unless_present_any = ["spawn", "print_policy"])]
    pub target: Option<String>,
    /// Start `shipgate serve` in-process on 127.0.0.1 (temporary data, the load policy) and
    /// drive it.
    #[arg(long)]
    pub spawn: bool,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Stop after this many requests...
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Environments of the load policy (`load-00`, `load-01`...).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub environments: u32,
    /// With `--spawn`: how hard the spawned server's commits wait for the disk (as `serve
    /// --sync`).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SyncMode::Full, requires = "spawn")]
    pub sync: SyncMode,
    /// The target server's data directory, read to check correctness (with `--target`;
    /// without it only throughput and latency are reported).
    #[arg(long, value_name = "DIR", conflicts_with = "spawn")]
    pub data: Option<PathBuf>,
    /// The target's GitHub webhook secret.
    #[arg(
        long,
        value_name = "SECRET",
        env = "SHIPGATE_GITHUB_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub github_webhook_secret: Option<SecretString>,
    /// The target's alert bearer token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SHIPGATE_ALERT_TOKEN",
        hide_env_values = true
    )]
    pub alert_token: Option<SecretString>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print the load policy (for `shipgate serve --policy` with `--target`) and exit.
    #[arg(long)]
    pub print_policy: bool,
}

/// Why the load could not run (failed checks are a report, not an error).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot create the temporary data directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shipgate server: {0}")]
    Server(#[source] CliError),
    #[error("cannot open the store: {0}")]
    Store(#[source] CliError),
    #[error("reading the store: {0}")]
    Repo(#[source] RepoError),
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("sample event {name} is not usable: {reason}")]
    Template { name: &'static str, reason: String },
    #[error("the target did not answer GET /healthz: {0}")]
    Unreachable(String),
}

impl LoadError {
    fn exit_code(&self) -> u8 {
        match self {
            LoadError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the load; returns the exit code (0: every check passed; 1: a check failed or the
/// load could not run; 2: usage).
pub fn run(args: &LoadArgs) -> u8 {
    if args.print_policy {
        print!("{}", load_policy(args.environments));
        return 0;
    }
    // The report is the output; the server's request log would drown it (RUST_LOG overrides).
    logging::init(LogFormat::Text, "off");
    let result = runtime().map_err(LoadError::Server).and_then(|rt| {
        let out = rt.block_on(load(args));
        rt.shutdown_timeout(Duration::from_secs(2));
        out
    });
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("shipgate load: cannot print the report: {e}");
                        return 1;
                    }
                }
            } else {
                print!("{}", report.render());
            }
            if report.passed() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("shipgate load: {e}");
            e.exit_code()
        }
    }
}

/// The policy the load runs on: `n` environments that need no approval, verify for one
/// second and roll back on critical alerts by re-deploying the last known good sha.
pub fn load_policy(n: u32) -> String {
    let mut text = String::from(
        "# The policy `shipgate load` runs on: environments that need no approval (so every\n\
         # request that finds its environment free goes through), verify for one second, and\n\
         # roll back on critical alerts. The alerts' service is the deploying repository's.\n\
         \n[services]\napi = \"acme/api\"\n",
    );
    for name in environment_names(n) {
        text.push_str(&format!(
            "\n[environments.{name}]\nallowed_refs = [\"main\"]\napprovals_required = 0\n\
             verification_window = \"1s\"\nrollback_on = [\"critical\"]\n\
             rollback = {{ method = \"redeploy\" }}\n"
        ));
    }
    text
}

fn environment_names(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("load-{i:02}")).collect()
}

/// Accepts `http://` URLs whose host is a loopback address or `localhost`.
pub fn loopback_base(target: &str) -> Result<String, LoadError> {
    let url = reqwest::Url::parse(target)
        .map_err(|e| LoadError::Usage(format!("--target {target}: not a URL ({e})")))?;
    if url.scheme() != "http" {
        return Err(LoadError::Usage(format!(
            "--target {target}: only http:// is supported"
        )));
    }
    let host = url.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(LoadError::Usage(format!(
            "--target {target}: only loopback targets (127.0.0.0/8, [::1], localhost) may be loaded"
        )));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| LoadError::Usage(format!("--target {target}: no port")))?;
    Ok(format!("http://{host}:{port}"))
}

// ── templates ────────────────────────────────────────────────────────────────────────────

const PROTECTION_RULE: &str =
    include_str!("../../../events/github-webhook/apigw-deployment-protection-rule-production.json");
const DEPLOYMENT_STATUS: &str =
    include_str!("../../../events/github-webhook/apigw-deployment-status-success.json");
const ALERTMANAGER: &str =
    include_str!("../../../events/alert-webhook/apigw-alertmanager-firing.json");

/// The values a rendered request varies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Env,
    Sha,
    Run,
    GhDeployment,
    State,
    Payload,
    Fingerprint,
    Status,
    StartsAt,
    EndsAt,
}

impl Slot {
    const ALL: [Slot; 10] = [
        Slot::Env,
        Slot::Sha,
        Slot::Run,
        Slot::GhDeployment,
        Slot::State,
        Slot::Payload,
        Slot::Fingerprint,
        Slot::Status,
        Slot::StartsAt,
        Slot::EndsAt,
    ];

    fn token(self) -> &'static str {
        match self {
            Slot::Env => "@@env@@",
            Slot::Sha => "@@sha@@",
            Slot::Run => "@@run@@",
            Slot::GhDeployment => "@@gh@@",
            Slot::State => "@@state@@",
            Slot::Payload => "@@payload@@",
            Slot::Fingerprint => "@@fp@@",
            Slot::Status => "@@status@@",
            Slot::StartsAt => "@@starts@@",
            Slot::EndsAt => "@@ends@@",
        }
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Slot(Slot),
}

/// A sample event serialised once, with slots where each request's values go, so a request
/// costs a concatenation instead of a JSON tree copy.
#[derive(Debug, Clone)]
struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// `raw` slots (numbers, objects) lose the quotes their placeholder string had.
    fn build(v: &Value, raw: &[Slot]) -> Template {
        let mut text = v.to_string();
        for slot in raw {
            text = text.replace(&format!("\"{}\"", slot.token()), slot.token());
        }
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        loop {
            let next = Slot::ALL
                .iter()
                .filter_map(|s| rest.find(s.token()).map(|at| (at, *s)))
                .min_by_key(|(at, _)| *at);
            match next {
                Some((at, slot)) => {
                    pieces.push(Piece::Text(rest[..at].to_string()));
                    pieces.push(Piece::Slot(slot));
                    rest = &rest[at + slot.token().len()..];
                }
                None => {
                    pieces.push(Piece::Text(rest.to_string()));
                    break;
                }
            }
        }
        Template { pieces }
    }

    /// Values must be JSON-safe as they are (ids, hex, names, timestamps, JSON for raw slots).
    fn render(&self, value: impl Fn(Slot) -> String) -> Bytes {
        let mut out = String::with_capacity(4096);
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Slot(s) => out.push_str(&value(*s)),
            }
        }
        Bytes::from(out)
    }
}

fn sample(name: &'static str, text: &str) -> Result<Value, LoadError> {
    let bad = |reason: String| LoadError::Template { name, reason };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    match v.get("body") {
        Some(Value::String(body)) => serde_json::from_str(body).map_err(|e| bad(e.to_string())),
        _ => Ok(v),
    }
}

fn set(v: &mut Value, pointer: &str, value: Value) -> Result<(), LoadError> {
    let slot = v.pointer_mut(pointer).ok_or_else(|| LoadError::Template {
        name: "sample",
        reason: format!("no {pointer}"),
    })?;
    *slot = value;
    Ok(())
}

fn tok(s: Slot) -> Value {
    Value::String(s.token().to_string())
}

struct Templates {
    gate: Template,
    status: Template,
    rollback_status: Template,
    alert: Template,
}

impl Templates {
    fn build() -> Result<Templates, LoadError> {
        let mut gate = sample("deployment_protection_rule", PROTECTION_RULE)?;
        set(&mut gate, "/environment", tok(Slot::Env))?;
        set(&mut gate, "/sha", tok(Slot::Sha))?;
        set(
            &mut gate,
            "/deployment_callback_url",
            json!(format!(
                "https://api.github.com/repos/{REPO}/actions/runs/{}/deployment_protection_rule",
                Slot::Run.token()
            )),
        )?;
        set(&mut gate, "/deployment/id", tok(Slot::GhDeployment))?;
        set(&mut gate, "/deployment/sha", tok(Slot::Sha))?;
        set(&mut gate, "/deployment/environment", tok(Slot::Env))?;
        set(
            &mut gate,
            "/deployment/original_environment",
            tok(Slot::Env),
        )?;

        let mut status = sample("deployment_status", DEPLOYMENT_STATUS)?;
        set(&mut status, "/deployment_status/state", tok(Slot::State))?;
        set(
            &mut status,
            "/deployment_status/environment",
            tok(Slot::Env),
        )?;
        set(
            &mut status,
            "/deployment_status/description",
            json!(format!("{} via load", Slot::State.token())),
        )?;
        set(&mut status, "/deployment/id", tok(Slot::GhDeployment))?;
        set(&mut status, "/deployment/sha", tok(Slot::Sha))?;
        set(&mut status, "/deployment/environment", tok(Slot::Env))?;
        set(
            &mut status,
            "/deployment/original_environment",
            tok(Slot::Env),
        )?;
        set(&mut status, "/deployment/payload", tok(Slot::Payload))?;
        let mut rollback_status = status.clone();
        set(&mut status, "/workflow_run/id", tok(Slot::Run))?;
        set(&mut rollback_status, "/workflow_run", Value::Null)?;

        let mut alert = sample("alertmanager", ALERTMANAGER)?;
        set(&mut alert, "/status", tok(Slot::Status))?;
        set(&mut alert, "/alerts/0/status", tok(Slot::Status))?;
        set(&mut alert, "/alerts/0/labels/env", tok(Slot::Env))?;
        set(&mut alert, "/commonLabels/env", tok(Slot::Env))?;
        set(&mut alert, "/alerts/0/fingerprint", tok(Slot::Fingerprint))?;
        set(&mut alert, "/alerts/0/startsAt", tok(Slot::StartsAt))?;
        set(&mut alert, "/alerts/0/endsAt", tok(Slot::EndsAt))?;

        let raw = [Slot::GhDeployment, Slot::Run, Slot::Payload];
        Ok(Templates {
            gate: Template::build(&gate, &raw),
            status: Template::build(&status, &raw),
            rollback_status: Template::build(&rollback_status, &raw),
            alert: Template::build(&alert, &raw),
        })
    }
}

// ── the traffic ──────────────────────────────────────────────────────────────────────────

/// A deployment the server let through, as the load follows it.
#[derive(Debug)]
struct Dep {
    id: String,
    env: String,
    run: u64,
    gh: u64,
    sha: String,
}

/// What a GitHub delivery is, and so what follows its answer.
#[derive(Debug)]
enum Step {
    Gate {
        env: String,
        run: u64,
        /// The GitHub deployment of the waiting job.
        gh: u64,
        sha: String,
    },
    Status {
        dep: Arc<Dep>,
        state: &'static str,
    },
    RollbackStatus {
        dep: Arc<Dep>,
        state: &'static str,
    },
}

impl Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::Gate { .. } => "protection_rule",
            Step::Status { .. } => "deployment_status",
            Step::RollbackStatus { .. } => "rollback_status",
        }
    }
}

/// One GitHub delivery; redeliveries share it (same id, same bytes).
#[derive(Debug)]
struct Delivery {
    id: String,
    event: &'static str,
    body: Bytes,
    signature: String,
    step: Step,
}

/// One incident's burst of notifications.
#[derive(Debug)]
struct IncidentCtx {
    fingerprint: String,
    dep: Arc<Dep>,
    starts_at: Timestamp,
    pending: AtomicI64,
}

#[derive(Debug)]
enum Job {
    Github {
        delivery: Arc<Delivery>,
        copy: bool,
    },
    Alert {
        incident: Arc<IncidentCtx>,
        variant: u32,
    },
    Resolve {
        incident: Arc<IncidentCtx>,
    },
}

/// What was seen of one delivery id.
#[derive(Debug, Default, Clone)]
struct DeliverySeen {
    kind: &'static str,
    sent: u32,
    fresh: u32,
    duplicate: u32,
    failed: u32,
    /// Gate answers: the deployment the server named.
    deployment: Option<String>,
    run: Option<u64>,
}

#[derive(Debug, Default, Clone)]
struct IncidentSeen {
    env: String,
    deployment: String,
    answered: u32,
    failed: u32,
    /// Notifications ingested as new (not duplicates).
    fresh: u32,
    /// Distinct `endsAt` variants answered fresh.
    variants: HashSet<u32>,
    rollbacks_started: u64,
    /// Some answer's rollback outcome says this incident called for a rollback.
    called_for_rollback: bool,
}

#[derive(Debug, Default)]
struct Tracking {
    deliveries: HashMap<String, DeliverySeen>,
    incidents: HashMap<String, IncidentSeen>,
}

/// One answered (or failed) request.
#[derive(Debug, Clone, Copy)]
struct Sample {
    kind: &'static str,
    /// HTTP status, or 0 when the request failed without one.
    status: u16,
    micros: u64,
}

struct Shared {
    http: reqwest::Client,
    base: String,
    secret: SecretString,
    alert_auth: String,
    templates: Templates,
    envs: Vec<String>,
    queue: Mutex<VecDeque<Job>>,
    remaining: AtomicI64,
    deadline: Instant,
    stop: AtomicBool,
    next_id: AtomicU64,
    nonce: u64,
    tracking: Mutex<Tracking>,
    /// Requests answered "being processed" (409) or 5xx and sent again.
    resent: AtomicU64,
    /// Every HTTP exchange, first sends and resends alike: microseconds from sending to the
    /// whole answer, the server's latency without the senders' backoff.
    exchanges: Mutex<Vec<u64>>,
}

/// How often a request answered 409 or 5xx is sent again, as GitHub's redelivery, Slack's
/// retries and Alertmanager's retries would: the first answer for an event whose copy is
/// still being processed is "try again", never "done".
const RESENDS: u32 = 6;

/// A small, fast, deterministic-enough generator for the traffic mix (not for secrets).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes one request from the budget; false once the count or the time is used up.
    fn admit(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        if self.remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn push(&self, job: Job) {
        lock(&self.queue).push_back(job);
    }

    fn delivery(&self, step: Step) -> Arc<Delivery> {
        let id = self.id();
        let delivery_id = format!(
            "{:08x}-10ad-11f0-8000-{:012x}",
            self.nonce & 0xffff_ffff,
            id
        );
        let t = &self.templates;
        let (event, body) = match &step {
            Step::Gate { env, run, gh, sha } => {
                let body = t.gate.render(|s| match s {
                    Slot::Env => env.clone(),
                    Slot::Sha => sha.clone(),
                    Slot::Run => run.to_string(),
                    Slot::GhDeployment => gh.to_string(),
                    _ => String::new(),
                });
                ("deployment_protection_rule", body)
            }
            Step::Status { dep, state } => {
                let body = t.status.render(|s| match s {
                    Slot::Env => dep.env.clone(),
                    Slot::Sha => dep.sha.clone(),
                    Slot::Run => dep.run.to_string(),
                    Slot::GhDeployment => dep.gh.to_string(),
                    Slot::State => (*state).to_string(),
                    Slot::Payload => "{}".to_string(),
                    _ => String::new(),
                });
                ("deployment_status", body)
            }
            Step::RollbackStatus { dep, state } => {
                // The rollback's GitHub deployment: one id per rolled-back deployment.
                let gh = dep.gh + 7_000_000_000;
                let body = t.rollback_status.render(|s| match s {
                    Slot::Env => dep.env.clone(),
                    Slot::Sha => dep.sha.clone(),
                    Slot::GhDeployment => gh.to_string(),
                    Slot::State => (*state).to_string(),
                    Slot::Payload => json!({ "shipgate_rollback_of": dep.id }).to_string(),
                    _ => String::new(),
                });
                ("deployment_status", body)
            }
        };
        let signature = sign_github(&self.secret, &body);
        Arc::new(Delivery {
            id: delivery_id,
            event,
            body,
            signature,
            step,
        })
    }

    /// Queues a delivery, and with [`REDELIVER_PERCENT`] an exact redelivery right behind
    /// it, so the two usually race on different clients.
    fn send_github(&self, step: Step, rng: &mut Rng) {
        let delivery = self.delivery(step);
        let redeliver = rng.percent(REDELIVER_PERCENT);
        let mut q = lock(&self.queue);
        q.push_back(Job::Github {
            delivery: Arc::clone(&delivery),
            copy: false,
        });
        if redeliver {
            q.push_back(Job::Github {
                delivery,
                copy: true,
            });
        }
    }

    fn alert_body(&self, incident: &IncidentCtx, status: &str, variant: u32) -> Bytes {
        let ends = if status == "resolved" {
            Timestamp::now().to_string()
        } else {
            // Alertmanager moves a firing alert's endsAt forward on every repeat.
            let minutes = 4 + i64::from(variant);
            incident
                .starts_at
                .checked_add(jiff::SignedDuration::from_mins(minutes))
                .unwrap_or(incident.starts_at)
                .to_string()
        };
        self.templates.alert.render(|s| match s {
            Slot::Env => incident.dep.env.clone(),
            Slot::Fingerprint => incident.fingerprint.clone(),
            Slot::Status => status.to_string(),
            Slot::StartsAt => incident.starts_at.to_string(),
            Slot::EndsAt => ends.clone(),
            _ => String::new(),
        })
    }
}

/// The final answer's status and JSON (`Null` when it is not JSON), and the time from the first
/// attempt to it. A 409 or 5xx answer is sent again after a short backoff, up to [`RESENDS`]
/// times, and counted in `shared.resent`.
async fn post(
    shared: &Shared,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, Value, Duration) {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(5);
    let mut attempt = 0;
    loop {
        let mut req = shared
            .http
            .post(format!("{}{path}", shared.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let sent = Instant::now();
        let result = match req.body(body.clone()).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(b) => (status, serde_json::from_slice(&b).unwrap_or(Value::Null)),
                    Err(_) => (0, Value::Null),
                }
            }
            Err(_) => (0, Value::Null),
        };
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        lock(&shared.exchanges).push(micros);
        let again = result.0 == 409 || result.0 >= 500;
        if !again || attempt >= RESENDS {
            return (result.0, result.1, started.elapsed());
        }
        attempt += 1;
        shared.resent.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
    }
}

/// Posts an Alertmanager notification the way Alertmanager does (its user agent, the bearer token).
async fn post_alert(shared: &Shared, body: Bytes) -> (u16, Value, Duration) {
    post(
        shared,
        "/webhooks/alertmanager",
        &[
            ("user-agent", "Alertmanager/0.27.0"),
            ("authorization", &shared.alert_auth),
        ],
        body,
    )
    .await
}

async fn client(shared: Arc<Shared>, seed: u64) -> Vec<Sample> {
    let mut rng = Rng(seed);
    let mut samples = Vec::new();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let job = lock(&shared.queue).pop_front();
        let job = match job {
            Some(job) => job,
            None => {
                let env = shared.envs[(rng.next() % shared.envs.len() as u64) as usize].clone();
                let id = shared.id();
                let step = Step::Gate {
                    env,
                    run: shared.nonce.wrapping_add(id) % 90_000_000_000 + 10_000_000_000,
                    gh: shared.nonce.wrapping_add(id) % 9_000_000_000 + 1_000_000_000,
                    sha: format!("{:016x}{:016x}{:08x}", rng.next(), rng.next(), id as u32),
                };
                shared.send_github(step, &mut rng);
                continue;
            }
        };
        if !shared.admit() {
            break;
        }
        match job {
            Job::Github { delivery, copy } => {
                let (status, answer, took) = post(
                    &shared,
                    "/webhooks/github",
                    &[
                        ("user-agent", "GitHub-Hookshot/shipgate-load"),
                        ("x-github-event", delivery.event),
                        ("x-github-delivery", &delivery.id),
                        ("x-github-hook-installation-target-type", "integration"),
                        ("x-hub-signature-256", &delivery.signature),
                    ],
                    delivery.body.clone(),
                )
                .await;
                samples.push(Sample {
                    kind: if copy {
                        "redelivery"
                    } else {
                        delivery.step.kind()
                    },
                    status,
                    micros: took.as_micros() as u64,
                });
                on_github_answer(&shared, &delivery, status, &answer, &mut rng);
            }
            Job::Alert { incident, variant } => {
                let body = shared.alert_body(&incident, "firing", variant);
                let (status, answer, took) = post_alert(&shared, body).await;
                samples.push(Sample {
                    kind: "alert",
                    status,
                    micros: took.as_micros() as u64,
                });
                on_alert_answer(&shared, &incident, variant, status, &answer, &mut rng);
            }
            Job::Resolve { incident } => {
                let body = shared.alert_body(&incident, "resolved", 0);
                let (status, _, took) = post_alert(&shared, body).await;
                samples.push(Sample {
                    kind: "alert_resolved",
                    status,
                    micros: took.as_micros() as u64,
                });
            }
        }
    }
    samples
}

fn on_github_answer(
    shared: &Shared,
    delivery: &Delivery,
    status: u16,
    answer: &Value,
    rng: &mut Rng,
) {
    let ok = (200..300).contains(&status);
    let duplicate = ok && answer["duplicate"] == true;
    let fresh = ok && !duplicate;
    {
        let mut t = lock(&shared.tracking);
        let seen = t.deliveries.entry(delivery.id.clone()).or_default();
        seen.kind = delivery.step.kind();
        seen.sent += 1;
        if fresh {
            seen.fresh += 1;
        } else if duplicate {
            seen.duplicate += 1;
        } else {
            seen.failed += 1;
        }
        if let Step::Gate { run, .. } = &delivery.step {
            seen.run = Some(*run);
            if fresh {
                seen.deployment = answer["deployment_id"].as_str().map(str::to_string);
            }
        }
    }
    // Only the copy that was processed moves the story on; its duplicate changes nothing.
    if !fresh {
        return;
    }
    match &delivery.step {
        Step::Gate { env, run, gh, sha } => {
            if answer["decision"] != "approved" {
                return;
            }
            let Some(id) = answer["deployment_id"].as_str() else {
                return;
            };
            let dep = Arc::new(Dep {
                id: id.to_string(),
                env: env.clone(),
                run: *run,
                gh: *gh,
                sha: sha.clone(),
            });
            shared.send_github(
                Step::Status {
                    dep,
                    state: "in_progress",
                },
                rng,
            );
        }
        Step::Status { dep, state } => match *state {
            "in_progress" => {
                let next = if rng.percent(FAIL_PERCENT) {
                    "failure"
                } else {
                    "success"
                };
                shared.send_github(
                    Step::Status {
                        dep: Arc::clone(dep),
                        state: next,
                    },
                    rng,
                );
            }
            "success" if answer["state"] == "verifying" && rng.percent(ALERT_PERCENT) => {
                let incident = Arc::new(IncidentCtx {
                    fingerprint: format!("{:016x}", rng.next()),
                    dep: Arc::clone(dep),
                    starts_at: Timestamp::now()
                        .checked_sub(jiff::SignedDuration::from_secs(30))
                        .unwrap_or_else(|_| Timestamp::now()),
                    pending: AtomicI64::new(ALERT_VARIANTS.len() as i64),
                });
                {
                    let mut t = lock(&shared.tracking);
                    let seen = t
                        .incidents
                        .entry(incident_id(&incident.fingerprint))
                        .or_default();
                    seen.env = dep.env.clone();
                    seen.deployment = dep.id.clone();
                }
                let mut q = lock(&shared.queue);
                for variant in ALERT_VARIANTS {
                    q.push_back(Job::Alert {
                        incident: Arc::clone(&incident),
                        variant,
                    });
                }
            }
            _ => {}
        },
        Step::RollbackStatus { dep, state } => {
            if *state == "in_progress" {
                shared.send_github(
                    Step::RollbackStatus {
                        dep: Arc::clone(dep),
                        state: "success",
                    },
                    rng,
                );
            }
        }
    }
}

/// Whether a deployment an incident rolled back is where a rollback leaves it: rolling back,
/// rolled back, or, on a server without a GitHub App (the spawned one), failed at once with
/// the server saying the rollback could not be started (its lock freed).
fn ended_as_a_rollback(d: &shipgate::domain::deployment::Deployment) -> bool {
    match d.state {
        State::RollingBack | State::RolledBack => true,
        State::Failed => d
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("rollback could not be started")),
        _ => false,
    }
}

fn incident_id(fingerprint: &str) -> String {
    format!("alertmanager:{fingerprint}")
}

fn on_alert_answer(
    shared: &Shared,
    incident: &Arc<IncidentCtx>,
    variant: u32,
    status: u16,
    answer: &Value,
    rng: &mut Rng,
) {
    let ok = status == 200;
    {
        let mut t = lock(&shared.tracking);
        let seen = t
            .incidents
            .entry(incident_id(&incident.fingerprint))
            .or_default();
        seen.answered += 1;
        if ok {
            let duplicate = answer["duplicates"].as_u64().unwrap_or(0) > 0;
            if !duplicate {
                seen.fresh += 1;
                seen.variants.insert(variant);
            }
            seen.rollbacks_started += answer["rollbacks_started"].as_u64().unwrap_or(0);
            let outcome = answer
                .pointer("/items/0/rollback/outcome")
                .and_then(Value::as_str)
                .unwrap_or("");
            if matches!(outcome, "started" | "failed" | "already_rolling_back") {
                seen.called_for_rollback = true;
            }
        } else {
            seen.failed += 1;
        }
    }
    if incident.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    // The whole burst is answered: play GitHub carrying out the rollback, if one was
    // started, then let the alert resolve.
    let started = lock(&shared.tracking)
        .incidents
        .get(&incident_id(&incident.fingerprint))
        .is_some_and(|s| s.rollbacks_started > 0);
    if started {
        shared.send_github(
            Step::RollbackStatus {
                dep: Arc::clone(&incident.dep),
                state: "in_progress",
            },
            rng,
        );
    }
    shared.push(Job::Resolve {
        incident: Arc::clone(incident),
    });
}

// ── running it ───────────────────────────────────────────────────────────────────────────

/// Where the load runs and how its store is read.
struct Setup {
    base: String,
    mode: &'static str,
    secret: SecretString,
    alert_token: SecretString,
    /// A separate connection to the server's store, for sampling and the checks.
    reader: Option<Repo>,
    spawned: Option<(server::RunningServer, tempfile::TempDir)>,
}

fn random_secret(seed: u64) -> SecretString {
    let mut rng = Rng(seed);
    SecretString::from(format!("load-{:016x}{:016x}", rng.next(), rng.next()))
}

fn open_reader(db: &Path) -> Result<Repo, LoadError> {
    // Its own connection: the server's stays as busy as it would be without the load tool
    // reading, and a WAL reader never blocks the writer.
    let store = SqliteStore::open(db, Durability::Full).map_err(|source| {
        LoadError::Store(CliError::Store {
            path: db.to_path_buf(),
            source,
        })
    })?;
    Ok(Repo::new(Arc::new(store)))
}

async fn setup(args: &LoadArgs, seed: u64) -> Result<Setup, LoadError> {
    if args.spawn {
        let dir = tempfile::Builder::new()
            .prefix("shipgate-load-")
            .tempdir()
            .map_err(LoadError::TempDir)?;
        let policy_file = dir.path().join("policy.toml");
        std::fs::write(&policy_file, load_policy(args.environments)).map_err(|source| {
            LoadError::Write {
                path: policy_file.clone(),
                source,
            }
        })?;
        let secret = random_secret(seed);
        let alert_token = random_secret(seed ^ 0x5eed);
        let vars: HashMap<String, String> = [
            (
                "SHIPGATE_GITHUB_WEBHOOK_SECRET".to_string(),
                secret.expose_secret().to_string(),
            ),
            (
                shipgate::config::ALERT_TOKEN.to_string(),
                alert_token.expose_secret().to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let mut schedule = Schedule::none();
        schedule.set(JobName::Sweeper, Some(SPAWN_SWEEPER_EVERY));
        let cfg = ServeConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().to_path_buf(),
            policy_file,
            vars: Arc::new(vars),
            schedule,
            durability: args.sync.into(),
            dashboard: None,
        };
        let running = server::start(cfg).await.map_err(LoadError::Server)?;
        let reader = open_reader(&data::db_path(dir.path()))?;
        return Ok(Setup {
            base: format!("http://{}", running.addr),
            mode: "spawned",
            secret,
            alert_token,
            reader: Some(reader),
            spawned: Some((running, dir)),
        });
    }
    let target = args
        .target
        .as_deref()
        .ok_or_else(|| LoadError::Usage("give --target URL or --spawn".into()))?;
    let base = loopback_base(target)?;
    let secret = args.github_webhook_secret.clone().ok_or_else(|| {
        LoadError::Usage(
            "--target needs the server's GitHub webhook secret (--github-webhook-secret or SHIPGATE_GITHUB_WEBHOOK_SECRET)".into(),
        )
    })?;
    let alert_token = args.alert_token.clone().ok_or_else(|| {
        LoadError::Usage(
            "--target needs the server's alert token (--alert-token or SHIPGATE_ALERT_TOKEN)"
                .into(),
        )
    })?;
    let reader = match &args.data {
        Some(dir) => {
            let db = data::db_path(dir);
            if !db.is_file() {
                return Err(LoadError::Store(CliError::NoDatabase { path: db }));
            }
            Some(open_reader(&db)?)
        }
        None => None,
    };
    Ok(Setup {
        base,
        mode: "target",
        secret,
        alert_token,
        reader,
        spawned: None,
    })
}

async fn load(args: &LoadArgs) -> Result<Report, LoadError> {
    let seed = Timestamp::now().as_nanosecond() as u64;
    let templates = Templates::build()?;
    let mut setup = setup(args, seed).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.clients as usize)
        .build()
        .map_err(LoadError::Http)?;
    let health = http
        .get(format!("{}/healthz", setup.base))
        .send()
        .await
        .map_err(|e| LoadError::Unreachable(e.to_string()))?;
    if !health.status().is_success() {
        return Err(LoadError::Unreachable(format!("HTTP {}", health.status())));
    }

    let envs = environment_names(args.environments);
    let shared = Arc::new(Shared {
        http,
        base: setup.base.clone(),
        secret: setup.secret.clone(),
        alert_auth: format!("Bearer {}", setup.alert_token.expose_secret()),
        templates,
        envs: envs.clone(),
        queue: Mutex::new(VecDeque::new()),
        remaining: AtomicI64::new(i64::try_from(args.count).unwrap_or(i64::MAX)),
        deadline: Instant::now() + Duration::from_secs(args.duration),
        stop: AtomicBool::new(false),
        next_id: AtomicU64::new(1),
        nonce: seed % 1_000_000_007,
        tracking: Mutex::new(Tracking::default()),
        resent: AtomicU64::new(0),
        exchanges: Mutex::new(Vec::new()),
    });

    let run_started = Timestamp::now();
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = setup.reader.clone().map(|repo| {
        let stop = Arc::clone(&sampler_stop);
        let envs = envs.clone();
        tokio::spawn(sample_locks(repo, envs, stop))
    });

    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(client(Arc::clone(&shared), seed ^ (u64::from(i) << 32))))
        .collect();
    let mut samples = Vec::new();
    for c in clients {
        if let Ok(s) = c.await {
            samples.extend(s);
        }
    }
    let elapsed = started.elapsed();
    sampler_stop.store(true, Ordering::Relaxed);
    let lock_samples = match sampler {
        Some(handle) => handle.await.ok(),
        None => None,
    };
    // A spawned server stops before the store is checked, so the checks read a store at rest;
    // its data directory stays until they are done.
    let data_dir = match setup.spawned.take() {
        Some((running, dir)) => {
            running.stop().await.map_err(LoadError::Server)?;
            Some(dir)
        }
        None => None,
    };

    let tracking = std::mem::take(&mut *lock(&shared.tracking));
    let mut report = Report::new(&setup, args, elapsed, &samples);
    let mut exchanges = std::mem::take(&mut *lock(&shared.exchanges));
    report.exchanges = exchanges.len() as u64;
    report.exchanges_per_sec = per_sec(exchanges.len(), elapsed);
    report.exchange_latency = latency(&mut exchanges);
    let client_checks = client_checks(&tracking);
    report.checks.extend(client_checks);
    match &setup.reader {
        Some(repo) => {
            let store_checks = store_checks(repo, &envs, run_started, &tracking, lock_samples)
                .await
                .map_err(LoadError::Repo)?;
            report.checks.extend(store_checks);
        }
        None => report.notes.push(
            "store checks skipped: give --data DIR (the server's data directory) to run them"
                .into(),
        ),
    }
    let resent = shared.resent.load(Ordering::Relaxed);
    if resent > 0 {
        report.notes.push(format!(
            "{resent} answers were 409 or 5xx (an event whose copy was still being processed) and were sent again, as the senders would"
        ));
    }
    report.finish();
    drop(data_dir);
    Ok(report)
}

/// What the lock sampler saw.
#[derive(Debug, Default, Clone, Serialize)]
struct LockSamples {
    rounds: u64,
    /// The most deployments seen holding one environment's lock in one snapshot.
    max_holders: usize,
    /// `environment: ids` for every snapshot with more than one holder.
    violations: Vec<String>,
    errors: u64,
}

async fn sample_locks(repo: Repo, envs: Vec<String>, stop: Arc<AtomicBool>) -> LockSamples {
    let mut seen = LockSamples::default();
    while !stop.load(Ordering::Relaxed) {
        let now = Timestamp::now();
        let from = now.checked_sub(SAMPLE_LOOKBACK).unwrap_or(now);
        for env in &envs {
            // One query is one SQLite statement: one consistent snapshot of the environment.
            match repo
                .deployments_in(env, from, Timestamp::MAX, false, None)
                .await
            {
                Ok(deps) => {
                    // Locks are per repository in the environment.
                    let mut by_scope: HashMap<shipgate::domain::Scope, Vec<&str>> = HashMap::new();
                    for d in deps.iter().filter(|d| d.state.holds_lock()) {
                        by_scope.entry(d.scope()).or_default().push(d.id.as_str());
                    }
                    for (scope, holders) in &by_scope {
                        seen.max_holders = seen.max_holders.max(holders.len());
                        if holders.len() > 1 && seen.violations.len() < 20 {
                            seen.violations
                                .push(format!("{scope}: {}", holders.join(", ")));
                        }
                    }
                }
                Err(_) => seen.errors += 1,
            }
        }
        seen.rounds += 1;
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    seen
}

// ── checks ───────────────────────────────────────────────────────────────────────────────

/// One correctness check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

fn check(name: &'static str, problems: &[String], ok_detail: String) -> Check {
    if problems.is_empty() {
        Check {
            name,
            passed: true,
            detail: ok_detail,
        }
    } else {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        let more = problems.len().saturating_sub(shown.len());
        let mut detail = format!("{} problem(s): {}", problems.len(), shown.join("; "));
        if more > 0 {
            detail.push_str(&format!("; and {more} more"));
        }
        Check {
            name,
            passed: false,
            detail,
        }
    }
}

/// Checks on the answers alone: each delivery processed once, each rollback started once.
fn client_checks(t: &Tracking) -> Vec<Check> {
    let mut problems = Vec::new();
    let (mut deliveries, mut redelivered, mut duplicates) = (0u64, 0u64, 0u64);
    for (id, d) in &t.deliveries {
        deliveries += 1;
        if d.sent > 1 {
            redelivered += 1;
        }
        duplicates += u64::from(d.duplicate);
        if d.fresh > 1 {
            problems.push(format!(
                "delivery {id} ({}) processed {} times",
                d.kind, d.fresh
            ));
        }
        // Every copy answered 2xx: exactly one was processed, the others were duplicates.
        if d.failed == 0 && d.fresh != 1 {
            problems.push(format!(
                "delivery {id} ({}): {} processed, {} duplicates of {} sent",
                d.kind, d.fresh, d.duplicate, d.sent
            ));
        }
    }
    let deliveries_check = check(
        "each delivery processed exactly once",
        &problems,
        format!(
            "{deliveries} GitHub deliveries, {redelivered} redelivered; {duplicates} redeliveries answered as duplicates"
        ),
    );

    let mut problems = Vec::new();
    let mut called = 0u64;
    for (id, inc) in &t.incidents {
        if inc.rollbacks_started > 1 {
            problems.push(format!(
                "incident {id}: {} notifications each started a rollback",
                inc.rollbacks_started
            ));
        }
        if inc.called_for_rollback {
            called += 1;
            if inc.rollbacks_started != 1 && inc.failed == 0 {
                problems.push(format!(
                    "incident {id} called for a rollback and {} were started",
                    inc.rollbacks_started
                ));
            }
        }
    }
    let rollback_check = check(
        "each incident's notifications started at most one rollback",
        &problems,
        format!(
            "{} incidents, {called} called for a rollback, each started by exactly one of its {} notifications",
            t.incidents.len(),
            ALERT_VARIANTS.len()
        ),
    );
    vec![deliveries_check, rollback_check]
}

/// Checks against what the store holds after the run.
async fn store_checks(
    repo: &Repo,
    envs: &[String],
    run_started: Timestamp,
    t: &Tracking,
    samples: Option<LockSamples>,
) -> Result<Vec<Check>, RepoError> {
    let from = run_started
        .checked_sub(jiff::SignedDuration::from_secs(5))
        .unwrap_or(run_started);
    // This run's gate requests, by run id (unique to the run).
    let gates: HashMap<u64, &DeliverySeen> = t
        .deliveries
        .values()
        .filter_map(|d| d.run.map(|r| (r, d)))
        .collect();
    let mut deployments = Vec::new();
    let mut audit = Vec::new();
    let mut locks = BTreeMap::new();
    for env in envs {
        deployments.extend(
            repo.deployments_in(env, from, Timestamp::MAX, false, None)
                .await?
                .into_iter()
                .filter(|d| d.run_id.is_some_and(|r| gates.contains_key(&r))),
        );
        audit.extend(
            repo.audit_for_environment(env, from, Timestamp::MAX, None)
                .await?,
        );
        // Locks are per scope: every repository that deployed to the environment.
        for name in repo.repositories_in(env).await? {
            if let Ok(env_name) = shipgate::domain::EnvName::parse(env) {
                let scope = shipgate::domain::Scope::new(name, env_name);
                let holder = repo.lock_holder(&scope).await?;
                locks.insert(scope, holder);
            }
        }
    }
    let ours: HashSet<&str> = deployments.iter().map(|d| d.id.as_str()).collect();
    let mut checks = Vec::new();

    // 1. Every accepted protection-rule delivery recorded exactly once.
    let mut problems = Vec::new();
    let mut by_run: HashMap<u64, Vec<&str>> = HashMap::new();
    for d in &deployments {
        if let Some(run) = d.run_id {
            by_run.entry(run).or_default().push(&d.id);
        }
    }
    let mut accepted = 0u64;
    for (run, seen) in &gates {
        let stored = by_run.get(run).map_or(&[][..], Vec::as_slice);
        if seen.fresh == 1 {
            accepted += 1;
            match (stored, seen.deployment.as_deref()) {
                ([one], Some(answered)) if *one == answered => {}
                _ => problems.push(format!(
                    "run {run}: answered {:?}, stored {stored:?}",
                    seen.deployment
                )),
            }
        } else if stored.len() > 1 {
            problems.push(format!("run {run}: {} deployments stored", stored.len()));
        }
    }
    checks.push(check(
        "every accepted delivery recorded exactly once",
        &problems,
        format!(
            "{accepted} protection-rule deliveries accepted, {} deployments stored for them",
            deployments.len()
        ),
    ));

    // 2. Redeliveries changed nothing.
    let mut problems = Vec::new();
    let ignored = audit
        .iter()
        .filter(|e| e.what == "status_ignored" && ours.contains(e.deployment_id.as_str()))
        .count();
    if ignored > 0 {
        problems.push(format!(
            "{ignored} deployment statuses were applied to a deployment twice (status_ignored)"
        ));
    }
    let mut incidents_checked = 0u64;
    for (id, seen) in &t.incidents {
        if seen.failed > 0 || seen.answered == 0 {
            continue;
        }
        let Some(inc) = repo.get_incident(id).await? else {
            problems.push(format!("incident {id} was answered but not stored"));
            continue;
        };
        incidents_checked += 1;
        if u64::from(inc.notifications) != seen.variants.len() as u64 {
            problems.push(format!(
                "incident {id}: {} notifications recorded for {} distinct ones sent",
                inc.notifications,
                seen.variants.len()
            ));
        }
    }
    checks.push(check(
        "redeliveries changed nothing",
        &problems,
        format!(
            "no status applied twice; {incidents_checked} incidents count only their distinct notifications"
        ),
    ));

    // 3. At most one lock holder per scope (repository and environment).
    let mut problems = Vec::new();
    let mut holding: HashMap<shipgate::domain::Scope, Vec<&str>> = HashMap::new();
    for d in &deployments {
        if d.state.holds_lock() {
            holding.entry(d.scope()).or_default().push(&d.id);
        }
    }
    for (env, holders) in &holding {
        if holders.len() > 1 {
            problems.push(format!(
                "{env}: {} deployments hold the lock: {holders:?}",
                holders.len()
            ));
        }
    }
    let mut held = 0;
    for (env, holder) in &locks {
        let Some(holder) = holder else { continue };
        held += 1;
        match repo.get_deployment(holder).await? {
            Some(d) if d.state.holds_lock() => {}
            // The server may still be running (its sweeper, or a `--target` server): the
            // deployment may have finished, releasing the lock in the same commit, between the
            // two reads. Only a lock that still names it after this read is a problem.
            Some(_) if repo.lock_holder(env).await?.as_deref() != Some(holder.as_str()) => {}
            Some(d) => problems.push(format!(
                "{env}: the lock is held by {holder}, which is {}",
                d.state
            )),
            None => problems.push(format!(
                "{env}: the lock names {holder}, which does not exist"
            )),
        }
        if let Some(holders) = holding.get(env) {
            if holders.iter().any(|h| h != holder) {
                problems.push(format!(
                    "{env}: lock names {holder}, {holders:?} hold it by state"
                ));
            }
        }
    }
    let sampled = match &samples {
        Some(s) => {
            for v in &s.violations {
                problems.push(format!("sampled during the run: {v}"));
            }
            format!(
                "{} snapshots of {} environments during the run, at most {} holder",
                s.rounds,
                envs.len(),
                s.max_holders
            )
        }
        None => "not sampled during the run".into(),
    };
    checks.push(check(
        "at most one lock holder per environment",
        &problems,
        format!("{sampled}; at the end {held} locks held, each by a deployment still in progress"),
    ));

    // 4. Exactly one rollback per incident that called for one.
    let mut problems = Vec::new();
    let mut starts: HashMap<&str, usize> = HashMap::new();
    for e in &audit {
        if e.what == "start_rollback" && ours.contains(e.deployment_id.as_str()) {
            *starts.entry(e.deployment_id.as_str()).or_default() += 1;
        }
    }
    for (dep, n) in &starts {
        if *n > 1 {
            problems.push(format!("deployment {dep} started {n} rollbacks"));
        }
    }
    let by_id: HashMap<&str, &shipgate::domain::deployment::Deployment> =
        deployments.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut called = 0u64;
    for (id, seen) in &t.incidents {
        if !seen.called_for_rollback {
            continue;
        }
        called += 1;
        let n = starts.get(seen.deployment.as_str()).copied().unwrap_or(0);
        if n != 1 {
            problems.push(format!(
                "incident {id} ({}): {n} rollbacks of {}",
                seen.env, seen.deployment
            ));
            continue;
        }
        let started_by = by_id
            .get(seen.deployment.as_str())
            .and_then(|d| d.rollback.as_ref())
            .map(|r| r.started_by.clone())
            .unwrap_or_default();
        if started_by != format!("alert:{id}") {
            problems.push(format!(
                "incident {id}: the rollback of {} was started by {started_by:?}",
                seen.deployment
            ));
        }
        if let Some(d) = by_id.get(seen.deployment.as_str()) {
            if !ended_as_a_rollback(d) {
                problems.push(format!(
                    "deployment {} rolled back but is {}",
                    d.id, d.state
                ));
            }
        }
    }
    checks.push(check(
        "exactly one rollback per incident that called for one",
        &problems,
        format!(
            "{called} incidents called for a rollback; {} deployments rolled back, each once, by its incident",
            starts.len()
        ),
    ));
    Ok(checks)
}

// ── the report ───────────────────────────────────────────────────────────────────────────

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Percentiles by nearest rank over a sorted slice.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn per_sec(count: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn latency(micros: &mut [u64]) -> Latency {
    micros.sort_unstable();
    let ms = |v: u64| v as f64 / 1000.0;
    Latency {
        p50_ms: ms(percentile(micros, 50.0)),
        p90_ms: ms(percentile(micros, 90.0)),
        p99_ms: ms(percentile(micros, 99.0)),
        max_ms: ms(micros.last().copied().unwrap_or(0)),
    }
}

/// Everything `shipgate-load` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: &'static str,
    pub store: &'static str,
    pub clients: u32,
    pub environments: u32,
    pub requests: u64,
    pub elapsed_secs: f64,
    pub throughput_per_sec: f64,
    /// From an event's first send to its final answer, resends and their backoff included.
    pub latency: Latency,
    /// HTTP exchanges, resends included; each one a signed request the server checked.
    pub exchanges: u64,
    pub exchanges_per_sec: f64,
    /// From sending one exchange to reading its whole answer: the server's own latency.
    pub exchange_latency: Latency,
    /// HTTP status → requests; `error` for requests that got no answer.
    pub by_status: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    pub passed: bool,
}

impl Report {
    fn new(setup: &Setup, args: &LoadArgs, elapsed: Duration, samples: &[Sample]) -> Report {
        let mut by_status = BTreeMap::new();
        let mut by_kind = BTreeMap::new();
        let mut micros = Vec::with_capacity(samples.len());
        for s in samples {
            let key = if s.status == 0 {
                "error".to_string()
            } else {
                s.status.to_string()
            };
            *by_status.entry(key).or_insert(0) += 1;
            *by_kind.entry(s.kind).or_insert(0) += 1;
            micros.push(s.micros);
        }
        Report {
            target: setup.base.clone(),
            mode: setup.mode,
            store: match setup.mode {
                "spawned" => args.sync.describe(),
                _ => "the target's own (see its `--sync`)",
            },
            clients: args.clients,
            environments: args.environments,
            requests: samples.len() as u64,
            elapsed_secs: elapsed.as_secs_f64(),
            throughput_per_sec: per_sec(samples.len(), elapsed),
            latency: latency(&mut micros),
            exchanges: 0,
            exchanges_per_sec: 0.0,
            exchange_latency: latency(&mut []),
            by_status,
            by_kind,
            checks: Vec::new(),
            notes: Vec::new(),
            passed: false,
        }
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
            && !self
                .by_status
                .keys()
                .any(|k| k == "error" || k.starts_with('5'))
    }

    fn finish(&mut self) {
        self.passed = self.passed();
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "shipgate load: {} requests from {} clients against {} ({}, {} environments)\n",
            self.requests, self.clients, self.target, self.mode, self.environments
        ));
        out.push_str(&format!("  store       {}\n", self.store));
        out.push_str(&format!(
            "  elapsed     {:.2} s\n  throughput  {:.0} requests/s to a final answer; {:.0} HTTP exchanges/s ({} with resends)\n",
            self.elapsed_secs, self.throughput_per_sec, self.exchanges_per_sec, self.exchanges
        ));
        let line = |l: &Latency| {
            format!(
                "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            )
        };
        out.push_str(&format!(
            "  latency     each exchange: {}\n              to the final answer, resend backoff included: {}\n",
            line(&self.exchange_latency),
            line(&self.latency)
        ));
        let join = |m: Vec<String>| m.join("  ");
        out.push_str(&format!(
            "  by status   {}\n",
            join(
                self.by_status
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect()
            )
        ));
        out.push_str(&format!(
            "  by kind     {}\n",
            join(
                self.by_kind
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect()
            )
        ));
        out.push_str("correctness\n");
        for c in &self.checks {
            let verdict = if c.passed { "PASS" } else { "FAIL" };
            out.push_str(&format!("  {verdict}  {}: {}\n", c.name, c.detail));
        }
        for n in &self.notes {
            out.push_str(&format!("  note  {n}\n"));
        }
        let server_errors: u64 = self
            .by_status
            .iter()
            .filter(|(k, _)| *k == "error" || k.starts_with('5'))
            .map(|(_, v)| *v)
            .sum();
        if server_errors > 0 {
            out.push_str(&format!(
                "  FAIL  {server_errors} requests failed (5xx or no answer)\n"
            ));
        }
        out.push_str(if self.passed() {
            "result: PASS\n"
        } else {
            "result: FAIL\n"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert_eq!(
            loopback_base("http://127.0.0.1:8080").expect("v4"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            loopback_base("http://localhost:9/").expect("name"),
            "http://localhost:9"
        );
        assert!(loopback_base("http://[::1]:8080").is_ok());
        assert!(loopback_base("http://127.8.9.10:80").is_ok());
        for bad in [
            "http://10.0.0.1:8080",
            "http://192.168.1.2:80",
            "http://example.com:8080",
            "https://127.0.0.1:8443",
            "127.0.0.1:8080",
        ] {
            assert!(
                matches!(loopback_base(bad), Err(LoadError::Usage(_))),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn the_load_policy_is_valid_and_lets_every_request_through_the_policy() {
        let text = load_policy(3);
        let policy =
            shipgate::domain::policy::Policy::parse("load.toml", &text).expect("valid policy");
        let names: Vec<&str> = policy.environments().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["load-00", "load-01", "load-02"]);
        for env in policy.environments() {
            assert_eq!(env.approvals_required, 0);
            assert_eq!(env.verification_window, Duration::from_secs(1));
        }
    }

    #[test]
    fn rendered_requests_parse_as_the_handlers_read_them() {
        let t = Templates::build().expect("templates");
        let gate = t.gate.render(|s| match s {
            Slot::Env => "load-03".into(),
            Slot::Sha => "abc123".into(),
            Slot::Run => "4242".into(),
            Slot::GhDeployment => "77".into(),
            _ => String::new(),
        });
        let parsed =
            github_webhook::events::parse("deployment_protection_rule", &gate).expect("gate");
        let github_webhook::events::GitHubEvent::ProtectionRule(req) = parsed else {
            panic!("not a protection rule: {parsed:?}");
        };
        assert_eq!(
            (req.environment.as_str(), req.sha.as_str(), req.run_id),
            ("load-03", "abc123", 4242)
        );

        let rollback = t.rollback_status.render(|s| match s {
            Slot::Env => "load-03".into(),
            Slot::Sha => "abc123".into(),
            Slot::GhDeployment => "99".into(),
            Slot::State => "success".into(),
            Slot::Payload => r#"{"shipgate_rollback_of":"dep-1"}"#.into(),
            _ => String::new(),
        });
        let parsed = github_webhook::events::parse("deployment_status", &rollback).expect("status");
        let github_webhook::events::GitHubEvent::DeploymentStatus(st) = parsed else {
            panic!("not a status: {parsed:?}");
        };
        assert_eq!(st.rollback_of.as_deref(), Some("dep-1"));
        assert_eq!(st.run_id, None);
        assert_eq!(st.github_deployment_id, 99);
        assert_eq!(st.environment, "load-03");

        let alert = t.alert.render(|s| match s {
            Slot::Env => "load-03".into(),
            Slot::Fingerprint => "00ff00ff00ff00ff".into(),
            Slot::Status => "firing".into(),
            Slot::StartsAt => "2026-01-01T00:00:00Z".into(),
            Slot::EndsAt => "2026-01-01T00:05:00Z".into(),
            _ => String::new(),
        });
        let v: Value = serde_json::from_slice(&alert).expect("json");
        assert_eq!(v["alerts"][0]["labels"]["env"], "load-03");
        assert_eq!(v["alerts"][0]["fingerprint"], "00ff00ff00ff00ff");
        assert_eq!(v["alerts"][0]["labels"]["severity"], "critical");
    }

    #[test]
    fn a_rollback_without_a_github_app_ends_failed_and_says_so() {
        let mut d: shipgate::domain::deployment::Deployment = serde_json::from_value(json!({
            "id": "dep-1", "repo": "acme/api", "environment": "load-00",
            "git_ref": "refs/heads/main", "sha": "5a11ab1e", "requester": "octocat",
            "kind": "deploy", "state": "rolling_back", "version": 3,
            "created_at": "2026-12-05T10:00:00Z", "updated_at": "2026-12-05T10:00:00Z",
        }))
        .expect("deployment");
        assert!(ended_as_a_rollback(&d));
        d.state = State::Failed;
        d.reason = Some(
            "rollback could not be started: no GitHub App is configured; roll load-00 back by hand"
                .into(),
        );
        assert!(ended_as_a_rollback(&d));
        d.reason = Some("deployment failed".into());
        assert!(!ended_as_a_rollback(&d));
        d.state = State::Verifying;
        assert!(!ended_as_a_rollback(&d));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50);
        assert_eq!(percentile(&sorted, 99.0), 99);
        assert_eq!(percentile(&sorted, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
