//! Deterministic NDJSON that looks like a backup of shipgate's own table.
//!
//! Shared (by `#[path]`) between `benches/pipeline.rs` and `examples/backup_file.rs`, so the
//! criterion figures and the `scripts/bench/backup-baselines.sh` comparison compress the same
//! kind of data. Lines are `Item` records as `StoreTable` backs them up
//! (`{"data":"<escaped JSON>","pk":…,"sk":…,"version":…}`), in the proportions a busy
//! installation accumulates: for every deployment record, its audit trail, environment index
//! entries, delivery-id claims, sha facts, and now and then an incident.
//!
//! Randomness is a SplitMix64 stream seeded by the caller: the same seed gives the same bytes
//! on every platform and with every version of the `rand` crate.

use serde_json::{json, Value};

const REPOS: [&str; 6] = [
    "acme/api",
    "acme/web",
    "acme/payments",
    "acme/search-indexer",
    "octo-org/hello-world",
    "octo-org/billing-service",
];
const ENVS: [&str; 3] = ["staging", "production", "qa"];
const USERS: [&str; 5] = [
    "octocat",
    "alice-ops",
    "bob-sre",
    "carol-lead",
    "dependabot[bot]",
];
const APPROVERS: [&str; 3] = ["U0APPROV1", "U0APPROV2", "U0APPROV3"];
const STATES: [&str; 6] = [
    "succeeded",
    "succeeded",
    "succeeded",
    "failed",
    "rolled_back",
    "rejected",
];
const ACTIONS: [(&str, &str); 6] = [
    ("requested", "acme/api refs/heads/main (6dcb09b) via push"),
    ("approval_recorded", "1 of 2"),
    ("approve", "approved by U0APPROV1, U0APPROV2"),
    (
        "start_deploy",
        "in_progress Deployment started by GitHub Actions",
    ),
    (
        "begin_verification",
        "success Deployed; verification window 15m",
    ),
    (
        "pass_verification",
        "verification window passed without critical alerts",
    ),
];

/// SplitMix64: tiny, fast and fully specified, so the data never changes under our feet.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits + 16);
        while s.len() < digits {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(digits);
        s
    }
}

/// Endless stream of table records; one deployment (with everything around it) at a time.
pub struct ItemGen {
    rng: Rng,
    /// Milliseconds since the epoch of the current deployment; grows by minutes per deploy.
    at_ms: i64,
    pending: Vec<String>,
}

impl ItemGen {
    pub fn new(seed: u64) -> Self {
        ItemGen {
            rng: Rng::new(seed),
            at_ms: 1_748_858_400_000,
            pending: Vec::new(),
        }
    }

    /// The next record (one JSON document, no newline).
    pub fn next_record(&mut self) -> String {
        if self.pending.is_empty() {
            self.deployment();
            self.pending.reverse();
        }
        self.pending.pop().unwrap_or_default()
    }

    fn push(
        &mut self,
        pk: String,
        sk: String,
        version: u64,
        extra: Option<(&str, Value)>,
        data: &Value,
    ) {
        let mut item = json!({
            "pk": pk,
            "sk": sk,
            "version": version,
            "data": data.to_string(),
        });
        if let (Some((key, value)), Some(obj)) = (extra, item.as_object_mut()) {
            obj.insert(key.to_string(), value);
        }
        self.pending.push(item.to_string());
    }

    fn stamp(ms: i64) -> String {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    fn deployment(&mut self) {
        let rng = &mut self.rng;
        self.at_ms += 60_000 * (1 + rng.below(90) as i64);
        let at = self.at_ms;
        let id = format!("dep-{}", rng.hex(32));
        let repo = rng.pick(&REPOS);
        let env = rng.pick(&ENVS);
        let sha = rng.hex(40);
        let requester = rng.pick(&USERS);
        let state = rng.pick(&STATES);
        let run_id = 9_000_000_000 + rng.below(999_999_999) as u64;
        let gh_id = 1_500_000_000 + rng.below(99_999_999) as u64;
        let approvals: Vec<Value> = (0..rng.below(3))
            .map(|i| json!({"approver": APPROVERS[i], "at": Self::stamp(at + 60_000 * (i as i64 + 1))}))
            .collect();
        let nonce = rng.hex(32);
        let version = 4 + rng.below(5) as u64;
        let ms_key = format!("{at:013}");
        let approvals_required = if env == "production" { 2 } else { 0 };
        let dep = json!({
            "id": id,
            "repo": repo,
            "environment": env,
            "git_ref": "refs/heads/main",
            "sha": sha,
            "requester": requester,
            "kind": "deploy",
            "state": state,
            "version": version,
            "created_at": Self::stamp(at),
            "updated_at": Self::stamp(at + 1_200_000),
            "run_id": run_id,
            "installation_id": 41_732_105,
            "github_deployment_id": gh_id,
            "approvals_required": approvals_required,
            "approvals": approvals,
            "verify_until": Self::stamp(at + 1_500_000),
            "deploy_started_at": Self::stamp(at + 300_000),
            "finished_at": Self::stamp(at + 1_500_000),
            "callback": "answered",
            "slack": {"channel": "C0PRODUCTION", "ts": format!("{}.{:06}", at / 1000, at % 1_000_000)},
            "button_nonce": nonce,
            "checks": [
                format!("ref refs/heads/main is allowed in {env}"),
                "succeeded in staging".to_string(),
                format!("{env} is not locked"),
                "no freeze in effect".to_string(),
                "inside deploy window mon-sun 00:00-24:00 Europe/Berlin".to_string(),
                "no open critical incident".to_string(),
            ],
        });
        self.push(format!("DEP#{id}"), "DEP".into(), version, None, &dep);
        self.push(
            format!("ENV#{env}#DEPLOYS"),
            format!("{ms_key}#{id}"),
            0,
            Some((
                "timeline",
                json!({"pk": format!("TL#{env}"), "sk": format!("{ms_key}#{id}")}),
            )),
            &json!({"id": id, "sha": sha, "state": state}),
        );
        self.push(
            format!("RUN#{run_id}"),
            format!("ENV#{env}"),
            0,
            None,
            &json!({"deployment_id": id}),
        );
        self.push(
            format!("GHDEP#{gh_id}"),
            "MAP".into(),
            0,
            None,
            &json!({"deployment_id": id}),
        );
        let events = 3 + self.rng.below(ACTIONS.len() - 2);
        for (n, (action, detail)) in ACTIONS.iter().take(events).enumerate() {
            let t = at + 60_000 * n as i64;
            let actor = if action.starts_with("approv") {
                format!("slack:{}", APPROVERS[n % APPROVERS.len()])
            } else if n == 0 {
                format!("github:{requester}")
            } else {
                "system".to_string()
            };
            let event_id = self.rng.hex(32);
            let event = json!({
                "deployment_id": id,
                "environment": env,
                "at": Self::stamp(t),
                "actor": actor,
                "action": action,
                "detail": detail,
            });
            self.push(
                format!("AUDIT#{id}"),
                format!("{t:013}#{event_id}"),
                0,
                None,
                &event,
            );
        }
        for _ in 0..2 {
            let delivery = self.rng.hex(32);
            self.push(
                format!("IDEM#github#{delivery}"),
                "IDEM".into(),
                0,
                Some(("expires_at", json!(at / 1000 + 7 * 86_400))),
                &json!({"claimed_at": Self::stamp(at)}),
            );
        }
        self.push(
            format!("SHA#{repo}@{sha}"),
            format!("ENV#{env}"),
            0,
            None,
            &json!({"state": state, "at": Self::stamp(at + 1_500_000), "deployment_id": id}),
        );
        if self.rng.below(8) == 0 {
            let fp = self.rng.hex(16);
            self.push(
                format!("INC#alertmanager:{fp}"),
                "INC".into(),
                2,
                None,
                &json!({
                    "id": format!("alertmanager:{fp}"),
                    "source": "alertmanager",
                    "fingerprint": fp,
                    "status": "resolved",
                    "environment": env,
                    "service": "api",
                    "severity": "critical",
                    "title": "ApiHighErrorRate: 5xx ratio above 5% for 5 minutes",
                    "labels": {"alertname": "ApiHighErrorRate", "env": env, "service": "api", "severity": "critical"},
                    "opened_at": Self::stamp(at + 600_000),
                    "resolved_at": Self::stamp(at + 2_400_000),
                    "caused_by_deployment": id,
                }),
            );
        }
    }
}

/// At least `bytes` bytes of NDJSON (whole lines, each ending in `\n`).
pub fn ndjson(bytes: usize, seed: u64) -> Vec<u8> {
    let mut records = ItemGen::new(seed);
    let mut out = Vec::with_capacity(bytes + 4096);
    while out.len() < bytes {
        out.extend_from_slice(records.next_record().as_bytes());
        out.push(b'\n');
    }
    out
}
