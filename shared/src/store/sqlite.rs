//! The embedded adapter of the state port: one SQLite file in WAL mode.
//!
//! Used by the self-hosted `shipgate` binary and by fast tests. It keeps the semantics of the
//! DynamoDB adapter exactly (the contract suite runs against both): conditions are evaluated
//! and writes applied inside one `BEGIN IMMEDIATE` transaction, so a write either happens with
//! its condition true or not at all.
//!
//! SQLite is synchronous; every call runs on tokio's blocking pool behind one connection
//! mutex. One writer at a time is what SQLite allows anyway, and the critical sections are
//! short (a handful of indexed statements).

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::item::{
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

/// The SQLite-backed [`ItemStore`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn db_err(context: &str, e: rusqlite::Error) -> StoreError {
    StoreError::backend(format!("sqlite: {context}"), e)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let conn = Connection::open(path.as_ref()).map_err(|e| db_err("open", e))?;
        Self::init(conn, durability)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|e| db_err("open", e))?;
        Self::init(conn, Durability::Normal)
    }

    fn init(conn: Connection, durability: Durability) -> Result<Self, StoreError> {
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000;"
        ))
        .map_err(|e| db_err("pragmas", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| db_err("schema", e))?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-call; the SQLite transaction it held was rolled
            // back when its guard dropped, so the connection itself is still consistent.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::backend("sqlite worker", e))?
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
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2"),
        params![pk, sk],
        row_to_item,
    )
    .optional()
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

/// Checks and applies `writes` on an open transaction; the caller commits or drops it.
fn apply(tx: &rusqlite::Transaction<'_>, writes: &[Write]) -> Result<(), StoreError> {
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
                tx.execute(
                    &format!("INSERT OR REPLACE INTO items ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                    params![
                        item.pk,
                        item.sk,
                        version_i64(item.version)?,
                        item.expires_at,
                        item.timeline.as_ref().map(|t| &t.pk),
                        item.timeline.as_ref().map(|t| &t.sk),
                        item.data,
                    ],
                )
                .map_err(|e| db_err("put", e))?;
            }
            Write::Delete { pk, sk, .. } => {
                tx.execute(
                    "DELETE FROM items WHERE pk = ?1 AND sk = ?2",
                    params![pk, sk],
                )
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
        let (pk, sk) = (pk.to_owned(), sk.to_owned());
        self.with_conn(move |c| get_in(c, &pk, &sk)).await
    }

    async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| db_err("begin", e))?;
            apply(&tx, std::slice::from_ref(&write))?;
            tx.commit().map_err(|e| db_err("commit", e))
        })
        .await
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        validate_transaction(&writes)?;
        self.with_conn(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| db_err("begin", e))?;
            apply(&tx, &writes)?;
            tx.commit().map_err(|e| db_err("commit", e))
        })
        .await
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError> {
        self.with_conn(move |c| {
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
        self.with_conn(move |c| {
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
