//! An [`ItemStore`] that forwards to another and counts each call by kind: the store round
//! trips a use case costs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shipgate::store::{Condition, Item, ItemStore, Query, StoreError, Write};

/// How many calls of each kind reached the store. A single write is counted by what it does
/// (`create` is a put that must not overwrite, `update` a put or check guarded by a version,
/// `put` an unconditional one), a transaction once however many writes it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub get: u64,
    pub create: u64,
    pub update: u64,
    pub put: u64,
    pub delete: u64,
    pub check: u64,
    pub transact: u64,
    pub query: u64,
    pub scan: u64,
}

impl Counts {
    /// Every call, whatever its kind.
    pub fn total(&self) -> u64 {
        self.get
            + self.create
            + self.update
            + self.put
            + self.delete
            + self.check
            + self.transact
            + self.query
            + self.scan
    }

    fn kinds(&self) -> [(&'static str, u64); 9] {
        [
            ("get", self.get),
            ("query", self.query),
            ("scan", self.scan),
            ("create", self.create),
            ("update", self.update),
            ("put", self.put),
            ("delete", self.delete),
            ("check", self.check),
            ("transact", self.transact),
        ]
    }
}

/// `11 round trips: 4 get, 2 transact, …` (kinds with no calls left out).
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} round trips", self.total())?;
        let mut sep = ": ";
        for (kind, n) in self.kinds() {
            if n > 0 {
                write!(f, "{sep}{n} {kind}")?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    get: AtomicU64,
    create: AtomicU64,
    update: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    check: AtomicU64,
    transact: AtomicU64,
    query: AtomicU64,
    scan: AtomicU64,
}

/// Forwards every call to the inner store and counts it.
pub struct CountingStore {
    inner: Arc<dyn ItemStore>,
    counters: Counters,
    calls: Mutex<Vec<String>>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> Self {
        CountingStore {
            inner,
            counters: Counters::default(),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Each call since the last [`take_calls`](Self::take_calls), in order: its kind and the
    /// keys it touched (`get DEP#…/META`, `transact [create LOCK…, update DEP#…]`).
    pub fn take_calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    fn log(&self, call: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Counts {
            get: n(&c.get),
            create: n(&c.create),
            update: n(&c.update),
            put: n(&c.put),
            delete: n(&c.delete),
            check: n(&c.check),
            transact: n(&c.transact),
            query: n(&c.query),
            scan: n(&c.scan),
        }
    }

    /// The counts so far, and zero from here on.
    pub fn take(&self) -> Counts {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.swap(0, Ordering::SeqCst);
        Counts {
            get: n(&c.get),
            create: n(&c.create),
            update: n(&c.update),
            put: n(&c.put),
            delete: n(&c.delete),
            check: n(&c.check),
            transact: n(&c.transact),
            query: n(&c.query),
            scan: n(&c.scan),
        }
    }

    fn count_write(&self, write: &Write) {
        let c = &self.counters;
        let counter = match write_kind(write) {
            "create" => &c.create,
            "update" => &c.update,
            "put" => &c.put,
            "delete" => &c.delete,
            _ => &c.check,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn write_kind(write: &Write) -> &'static str {
    match write {
        Write::Put {
            condition: Condition::Absent { .. },
            ..
        } => "create",
        Write::Put {
            condition: Condition::Version(_),
            ..
        } => "update",
        Write::Put { .. } => "put",
        Write::Delete { .. } => "delete",
        Write::Check { .. } => "check",
    }
}

fn describe(write: &Write) -> String {
    let (pk, sk) = write.key();
    format!("{} {pk}/{sk}", write_kind(write))
}

#[async_trait]
impl ItemStore for CountingStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.counters.get.fetch_add(1, Ordering::SeqCst);
        self.log(format!("get {pk}/{sk}"));
        self.inner.get(pk, sk).await
    }
    async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.count_write(&write);
        self.log(describe(&write));
        self.inner.write(write).await
    }
    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.counters.transact.fetch_add(1, Ordering::SeqCst);
        let parts: Vec<String> = writes.iter().map(describe).collect();
        self.log(format!("transact [{}]", parts.join(", ")));
        self.inner.transact(writes).await
    }
    async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError> {
        self.counters.query.fetch_add(1, Ordering::SeqCst);
        self.log(format!("query {query:?}"));
        self.inner.query(query).await
    }
    async fn scan(
        &self,
        segment: u32,
        total: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        self.counters.scan.fetch_add(1, Ordering::SeqCst);
        self.log(format!("scan {segment}/{total}"));
        self.inner.scan(segment, total, cursor).await
    }
}
