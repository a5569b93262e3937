//! The embedded adapter of the state port: one SQLite file in WAL mode.
//!
//! Used by the self-hosted `shipgate` binary and by fast tests. It keeps the semantics of the
//! DynamoDB adapter exactly (the contract suite runs against both): conditions are evaluated
//! and writes applied inside one `BEGIN IMMEDIATE` transaction, so a write either happens with
//! its condition true or not at all.
//!
//! Reads are a few indexed statements, so they run on the async worker that awaits them
//! rather than being handed to a blocking thread and back: on a busy server those hand-offs
//! cost more than the statements. Waiting for a connection is an async lock, so a worker never
//! blocks on another task's call. Commits wait for the disk, so they run on a blocking thread.
//!
//! **Group commit.** SQLite allows one writer at a time, and with `synchronous=FULL` each
//! commit waits for the disk, so committing every write on its own caps throughput at the
//! disk's sync rate. Writes are therefore queued, and whichever task holds the write
//! connection next commits everything queued so far in one transaction: each queued write (or
//! transaction) runs inside its own `SAVEPOINT`, so a failed condition undoes only that write,
//! and nobody is answered before the `COMMIT` that holds their write has returned. Under light
//! load a batch is one write, exactly as before; under heavy load one sync covers many events,
//! and every acknowledged write is still on disk.
//!
//! **Reads** of a database file use a few read-only connections of their own: in WAL mode a
//! reader sees the last committed state and does not wait for a writer's sync. An in-memory
//! database has a single connection for both.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::store::item::{
    Condition, Item, ItemStore, Query, StoreError, Timeline, Write, MAX_TRANSACTION_ITEMS,
};

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a committed event survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a crash of shipgate, may lose the last commits on
    /// power loss. Faster; WAL keeps the file consistent either way.
    Normal,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    v INTEGER NOT NULL,
    expires_at INTEGER,
    tl_pk TEXT,
    tl_sk TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_timeline ON items (tl_pk, tl_sk) WHERE tl_pk IS NOT NULL;
";

/// Items per scan page.
const SCAN_PAGE: usize = 1000;

/// Most queued writes committed in one transaction: bounds how long a batch holds the lock.
const MAX_BATCH: usize = 256;

/// Read connections of a database file.
const READERS: usize = 4;

/// Pragmas of every connection to a file: wait for a lock rather than fail at once, and keep
/// statement journals (savepoints) in memory rather than in short-lived temporary files.
const CONNECTION_PRAGMAS: &str = "PRAGMA busy_timeout=5000; PRAGMA temp_store=MEMORY;";

/// One queued write or transaction and where its outcome goes.
struct Job {
    writes: Vec<Write>,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

struct Shared {
    writer: Arc<tokio::sync::Mutex<Connection>>,
    /// Read-only connections of a database file; empty reads through `writer`.
    readers: Vec<tokio::sync::Mutex<Connection>>,
    next_reader: AtomicUsize,
    queue: Mutex<Vec<Job>>,
}

/// The SQLite-backed [`ItemStore`].
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn db_err(context: &str, e: rusqlite::Error) -> StoreError {
    StoreError::backend(format!("sqlite: {context}"), e)
}

/// Creates the database file with mode 0600 when missing, and takes group and other bits off
/// it and its WAL files when present.
fn private_files(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |op: &'static str| {
        move |e: std::io::Error| StoreError::backend(format!("{op} {}", path.display()), e)
    };
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io("create"))?;
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    for file in [path.to_path_buf(), wal.into(), shm.into()] {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(io("restrict"))?;
        }
    }
    Ok(())
}

/// A poisoned queue lock means a panic while pushing or draining; the queue is still a list.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`. The file, and the `-wal` and
    /// `-shm` files beside it, are readable and writable by the owner only (0600), whatever
    /// the umask: SQLite gives the WAL files the database file's mode.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        private_files(path.as_ref())?;
        let writer = Connection::open(path.as_ref()).map_err(|e| db_err("open", e))?;
        let writer = Self::prepare(writer, durability)?;
        // Opened after the writer switched the file to WAL and created the schema.
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(path.as_ref()).map_err(|e| db_err("open reader", e))?;
            reader
                .execute_batch(&format!("{CONNECTION_PRAGMAS} PRAGMA query_only=ON;"))
                .map_err(|e| db_err("reader pragmas", e))?;
            readers.push(reader);
        }
        Ok(Self::from_parts(writer, readers))
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|e| db_err("open", e))?;
        Ok(Self::from_parts(
            Self::prepare(conn, Durability::Normal)?,
            Vec::new(),
        ))
    }

    fn prepare(conn: Connection, durability: Durability) -> Result<Connection, StoreError> {
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "{CONNECTION_PRAGMAS} PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};"
        ))
        .map_err(|e| db_err("pragmas", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| db_err("schema", e))?;
        Ok(conn)
    }

    fn from_parts(writer: Connection, readers: Vec<Connection>) -> Self {
        SqliteStore {
            shared: Arc::new(Shared {
                writer: Arc::new(tokio::sync::Mutex::new(writer)),
                readers: readers.into_iter().map(tokio::sync::Mutex::new).collect(),
                next_reader: AtomicUsize::new(0),
                queue: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs a read on a free read connection, or waits for one.
    async fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let readers = &self.shared.readers;
        if readers.is_empty() {
            return f(&*self.shared.writer.lock().await);
        }
        let start = self.shared.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..readers.len() {
            if let Ok(conn) = readers[(start + i) % readers.len()].try_lock() {
                return f(&conn);
            }
        }
        f(&*readers[start % readers.len()].lock().await)
    }

    /// Queues `writes` as one all-or-nothing unit and waits until a commit has decided it.
    async fn submit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        lock(&self.shared.queue).push(Job { writes, done });
        // A task of its own, so the write is committed promptly even if this caller goes away.
        // The commit itself waits for the disk, so it runs on a blocking thread: an async worker
        // stays free for everything else while the sync is in flight.
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let mut conn = Arc::clone(&shared.writer).lock_owned().await;
            if lock(&shared.queue).is_empty() {
                // Committed by the batch before; nothing to hand to a thread.
                return;
            }
            let committed = tokio::task::spawn_blocking(move || loop {
                let jobs: Vec<Job> = {
                    let mut queue = lock(&shared.queue);
                    let n = queue.len().min(MAX_BATCH);
                    queue.drain(..n).collect()
                };
                if jobs.is_empty() {
                    break;
                }
                commit_batch(&mut conn, jobs);
            })
            .await;
            // A panic in a commit drops the batch's senders: its callers get an error.
            drop(committed);
        });
        outcome
            .await
            .map_err(|e| StoreError::backend("sqlite writer stopped", e))?
    }
}

/// Commits `jobs` in one transaction, each in its own savepoint, then answers each one.
fn commit_batch(conn: &mut Connection, jobs: Vec<Job>) {
    let mut outcomes: Vec<Result<(), StoreError>> = Vec::with_capacity(jobs.len());
    match run_batch(conn, &jobs, &mut outcomes) {
        Ok(()) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                // The caller may have gone away (its future dropped); the write stands.
                let _ = job.done.send(outcome);
            }
        }
        Err(e) => {
            // Nothing of the batch is on disk; every job in it fails with the same cause.
            let message = e.to_string();
            for job in jobs {
                let _ = job.done.send(Err(StoreError::Backend {
                    message: message.clone(),
                    source: None,
                }));
            }
        }
    }
}

fn row_to_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    let version: i64 = row.get(2)?;
    let tl_pk: Option<String> = row.get(4)?;
    let tl_sk: Option<String> = row.get(5)?;
    Ok(Item {
        pk: row.get(0)?,
        sk: row.get(1)?,
        version: u64::try_from(version).unwrap_or_default(),
        expires_at: row.get(3)?,
        timeline: match (tl_pk, tl_sk) {
            (Some(pk), Some(sk)) => Some(Timeline { pk, sk }),
            _ => None,
        },
        data: row.get(6)?,
    })
}

const COLUMNS: &str = "pk, sk, v, expires_at, tl_pk, tl_sk, data";

fn get_in(conn: &Connection, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2"
    ))
    .and_then(|mut stmt| stmt.query_row(params![pk, sk], row_to_item).optional())
    .map_err(|e| db_err("get", e))
}

fn check(existing: Option<&Item>, condition: Condition) -> bool {
    match condition {
        Condition::None => true,
        Condition::Absent { now } => existing.is_none_or(|i| i.is_expired(now)),
        Condition::Version(v) => existing.is_some_and(|i| i.version == v),
    }
}

fn version_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("version {v} out of range")))
}

/// The transaction of [`commit_batch`]: one savepoint per job, one commit for all.
fn run_batch(
    conn: &mut Connection,
    jobs: &[Job],
    outcomes: &mut Vec<Result<(), StoreError>>,
) -> Result<(), StoreError> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_err("begin", e))?;
    for job in jobs {
        let mut savepoint = tx.savepoint().map_err(|e| db_err("savepoint", e))?;
        let outcome = apply(&savepoint, &job.writes);
        if outcome.is_err() {
            savepoint
                .rollback()
                .map_err(|e| db_err("rollback to savepoint", e))?;
        }
        savepoint
            .commit()
            .map_err(|e| db_err("release savepoint", e))?;
        outcomes.push(outcome);
    }
    tx.commit().map_err(|e| db_err("commit", e))
}

/// Checks and applies `writes` on an open transaction; the caller commits or rolls back.
fn apply(tx: &Connection, writes: &[Write]) -> Result<(), StoreError> {
    for w in writes {
        let (pk, sk) = w.key();
        let condition = match w {
            Write::Put { condition, .. }
            | Write::Delete { condition, .. }
            | Write::Check { condition, .. } => *condition,
        };
        let existing = get_in(tx, pk, sk)?;
        if !check(existing.as_ref(), condition) {
            return Err(StoreError::ConditionFailed {
                key: format!("{pk}/{sk}"),
            });
        }
    }
    for w in writes {
        match w {
            Write::Put { item, .. } => {
                let version = version_i64(item.version)?;
                tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO items ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        item.pk,
                        item.sk,
                        version,
                        item.expires_at,
                        item.timeline.as_ref().map(|t| &t.pk),
                        item.timeline.as_ref().map(|t| &t.sk),
                        item.data,
                    ])
                })
                .map_err(|e| db_err("put", e))?;
            }
            Write::Delete { pk, sk, .. } => {
                tx.prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")
                    .and_then(|mut stmt| stmt.execute(params![pk, sk]))
                    .map_err(|e| db_err("delete", e))?;
            }
            Write::Check { .. } => {}
        }
    }
    Ok(())
}

/// Rejects transactions DynamoDB would reject, so both adapters fail the same way.
pub(crate) fn validate_transaction(writes: &[Write]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Err(StoreError::Invalid("empty transaction".into()));
    }
    if writes.len() > MAX_TRANSACTION_ITEMS {
        return Err(StoreError::Invalid(format!(
            "{} writes in one transaction (at most {MAX_TRANSACTION_ITEMS})",
            writes.len()
        )));
    }
    let mut keys = std::collections::HashSet::new();
    for w in writes {
        if !keys.insert(w.key()) {
            let (pk, sk) = w.key();
            return Err(StoreError::Invalid(format!(
                "two writes address {pk}/{sk} in one transaction"
            )));
        }
    }
    Ok(())
}

/// Stable segment of a partition key, so a scan's segments are disjoint and complete.
pub(crate) fn segment_of(pk: &str, total_segments: u32) -> u32 {
    // FNV-1a: tiny, stable across processes and versions (unlike std's SipHash seed).
    let mut h: u32 = 0x811c_9dc5;
    for b in pk.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % total_segments.max(1)
}

#[async_trait]
impl ItemStore for SqliteStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.read(|c| get_in(c, pk, sk)).await
    }

    async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.submit(vec![write]).await
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        validate_transaction(&writes)?;
        self.submit(writes).await
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError> {
        self.read(move |c| {
            let (sql, args, limit): (String, Vec<String>, Option<usize>) = match query {
                Query::Partition {
                    pk,
                    sk_prefix,
                    descending,
                    limit,
                } => {
                    let order = if descending { "DESC" } else { "ASC" };
                    // substr() instead of LIKE: sort keys may contain % and _.
                    (
                        format!(
                            "SELECT {COLUMNS} FROM items WHERE pk = ?1 AND substr(sk, 1, length(?2)) = ?2 ORDER BY sk {order}"
                        ),
                        vec![pk, sk_prefix],
                        limit,
                    )
                }
                Query::Timeline {
                    pk,
                    from,
                    to,
                    descending,
                    limit,
                } => {
                    let order = if descending { "DESC" } else { "ASC" };
                    (
                        format!(
                            "SELECT {COLUMNS} FROM items WHERE tl_pk = ?1 AND tl_sk >= ?2 AND tl_sk < ?3 ORDER BY tl_sk {order}"
                        ),
                        vec![pk, from, to],
                        limit,
                    )
                }
            };
            let mut stmt = c.prepare_cached(&sql).map_err(|e| db_err("query", e))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), row_to_item)
                .map_err(|e| db_err("query", e))?;
            let mut out = Vec::new();
            for row in rows {
                if limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
                out.push(row.map_err(|e| db_err("query row", e))?);
            }
            Ok(out)
        })
        .await
    }

    async fn scan(
        &self,
        segment: u32,
        total_segments: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        if total_segments == 0 || segment >= total_segments {
            return Err(StoreError::Invalid(format!(
                "segment {segment} of {total_segments}"
            )));
        }
        let after: Option<(String, String)> = match cursor {
            Some(c) => Some(
                serde_json::from_str(&c)
                    .map_err(|_| StoreError::Invalid("malformed scan cursor".into()))?,
            ),
            None => None,
        };
        self.read(move |c| {
            let (apk, ask) = after.unwrap_or_default();
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM items WHERE (pk, sk) > (?1, ?2) ORDER BY pk, sk LIMIT ?3"
                ))
                .map_err(|e| db_err("scan", e))?;
            let mut out = Vec::new();
            let mut last: Option<(String, String)> = None;
            let mut seen = 0usize;
            let rows = stmt
                .query_map(params![apk, ask, SCAN_PAGE as i64], row_to_item)
                .map_err(|e| db_err("scan", e))?;
            for row in rows {
                let item = row.map_err(|e| db_err("scan row", e))?;
                seen += 1;
                last = Some((item.pk.clone(), item.sk.clone()));
                if segment_of(&item.pk, total_segments) == segment {
                    out.push(item);
                }
            }
            let next = if seen == SCAN_PAGE {
                last.map(|k| serde_json::to_string(&k))
                    .transpose()
                    .map_err(|e| StoreError::backend("scan cursor", e))?
            } else {
                None
            };
            Ok((out, next))
        })
        .await
    }
}
