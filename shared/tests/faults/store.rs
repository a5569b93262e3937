//! A fault-injecting [`ItemStore`]: the real adapter underneath, with a script of failures on
//! top, so tests can break the state store on exactly the call they mean to.
//!
//! Three faults cover what a real backend does to a caller:
//! - [`Fault::Fail`]: the call fails and nothing reaches the store (a throttled or refused call);
//! - [`Fault::TimeOut`]: the call waits, then fails without reaching the store (a request that
//!   never arrived before the SDK gave up);
//! - [`Fault::LandThenFail`]: the write is applied, then the caller is told it failed (the
//!   answer was lost on the way back). This is the case idempotency keys must survive.
//!
//! Faults come from [`Rule`]s ("the 2nd transaction touching `DEP#…`") or from a seeded chaos
//! mode that picks faults at random with a fixed seed, so a failing run replays exactly.
//!
//! Included by `shared/tests/faults.rs` (`#[path]`).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shipgate::store::{Item, ItemStore, Query, StoreError, Write};

/// The kind of store call a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Write,
    Transact,
    Query,
    Scan,
}

impl Op {
    fn writes(self) -> bool {
        matches!(self, Op::Write | Op::Transact)
    }
}

/// What an injected fault does to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails at once; the store is not touched.
    Fail,
    /// Waits this long, then fails as a timeout; the store is not touched.
    TimeOut(Duration),
    /// The store applies the call, then the caller sees a failure.
    LandThenFail,
}

/// One scripted fault: calls of `op` whose keys start with `key_prefix` are counted, and the
/// `nth` of them (1-based) and the `times - 1` after it get `fault`.
#[derive(Debug, Clone)]
pub struct Rule {
    op: Op,
    key_prefix: String,
    nth: usize,
    times: usize,
    fault: Fault,
    seen: usize,
}

impl Rule {
    /// The `nth` call of `op` (any key) gets `fault`.
    pub fn nth(op: Op, nth: usize, fault: Fault) -> Rule {
        Rule {
            op,
            key_prefix: String::new(),
            nth: nth.max(1),
            times: 1,
            fault,
            seen: 0,
        }
    }

    /// Only calls touching a key (`pk/sk`) that starts with `prefix` count.
    pub fn on_keys(mut self, prefix: &str) -> Rule {
        self.key_prefix = prefix.to_string();
        self
    }

    /// `times` consecutive matching calls get the fault (from the `nth` on).
    pub fn times(mut self, times: usize) -> Rule {
        self.times = times;
        self
    }

    fn matches(&self, op: Op, keys: &[String]) -> bool {
        op == self.op && keys.iter().any(|k| k.starts_with(&self.key_prefix))
    }
}

/// One call the store saw, with the fault it got (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    pub keys: Vec<String>,
    pub fault: Option<Fault>,
}

struct Chaos {
    rng: StdRng,
    /// Chance per call, in thousandths, that a call gets a fault.
    per_mille: u32,
}

#[derive(Default)]
struct Script {
    rules: Vec<Rule>,
    chaos: Option<Chaos>,
    log: Vec<Call>,
}

/// The wrapper. Cheap to clone; clones share the script and the log.
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ItemStore>,
    script: Arc<Mutex<Script>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> FaultyStore {
        FaultyStore {
            inner,
            script: Arc::new(Mutex::new(Script::default())),
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a scripted fault. Counting starts with the next call.
    pub fn add(&self, rule: Rule) {
        self.script().rules.push(rule);
    }

    /// Drops every scripted fault and turns chaos off: the store behaves from now on.
    pub fn heal(&self) {
        let mut s = self.script();
        s.rules.clear();
        s.chaos = None;
    }

    /// From now on each call has a `per_mille`/1000 chance of a random fault, drawn from a
    /// generator seeded with `seed`.
    pub fn chaos(&self, seed: u64, per_mille: u32) {
        self.script().chaos = Some(Chaos {
            rng: StdRng::seed_from_u64(seed),
            per_mille,
        });
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.script().log.clone()
    }

    /// The calls that got a fault.
    pub fn faults(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.fault.is_some())
            .collect()
    }

    fn decide(&self, op: Op, keys: Vec<String>) -> Option<Fault> {
        let mut s = self.script();
        let mut fault = None;
        for rule in s.rules.iter_mut() {
            if !rule.matches(op, &keys) {
                continue;
            }
            rule.seen += 1;
            if fault.is_none() && rule.seen >= rule.nth && rule.seen < rule.nth + rule.times {
                fault = Some(rule.fault);
            }
        }
        if fault.is_none() {
            if let Some(chaos) = s.chaos.as_mut() {
                if chaos.rng.gen_range(0..1000) < chaos.per_mille {
                    fault = Some(match chaos.rng.gen_range(0..3) {
                        0 => Fault::Fail,
                        1 => Fault::TimeOut(Duration::from_millis(1)),
                        _ if op.writes() => Fault::LandThenFail,
                        _ => Fault::Fail,
                    });
                }
            }
        }
        s.log.push(Call { op, keys, fault });
        fault
    }
}

fn injected(what: &str) -> StoreError {
    StoreError::Backend {
        message: format!("injected fault: {what}"),
        source: None,
    }
}

/// Runs `call` under `fault`: fails before it, after it, or not at all.
async fn under<T>(
    fault: Option<Fault>,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match fault {
        None => call.await,
        Some(Fault::Fail) => Err(injected("request failed")),
        Some(Fault::TimeOut(after)) => {
            tokio::time::sleep(after).await;
            Err(injected("request timed out"))
        }
        Some(Fault::LandThenFail) => {
            call.await?;
            Err(injected("response lost after the write was applied"))
        }
    }
}

fn key(pk: &str, sk: &str) -> String {
    format!("{pk}/{sk}")
}

#[async_trait]
impl ItemStore for FaultyStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let fault = self.decide(Op::Get, vec![key(pk, sk)]);
        under(fault, self.inner.get(pk, sk)).await
    }

    async fn write(&self, write: Write) -> Result<(), StoreError> {
        let (pk, sk) = write.key();
        let fault = self.decide(Op::Write, vec![key(pk, sk)]);
        under(fault, self.inner.write(write)).await
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let keys = writes
            .iter()
            .map(|w| {
                let (pk, sk) = w.key();
                key(pk, sk)
            })
            .collect();
        let fault = self.decide(Op::Transact, keys);
        under(fault, self.inner.transact(writes)).await
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError> {
        let k = match &query {
            Query::Partition { pk, sk_prefix, .. } => key(pk, sk_prefix),
            Query::Timeline { pk, from, .. } => key(pk, from),
        };
        let fault = self.decide(Op::Query, vec![k]);
        under(fault, self.inner.query(query)).await
    }

    async fn scan(
        &self,
        segment: u32,
        total_segments: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let fault = self.decide(Op::Scan, vec![format!("scan/{segment}")]);
        under(fault, self.inner.scan(segment, total_segments, cursor)).await
    }
}
