//! What a backup reads from and a restore writes to: the ports [`TableSource`], [`TableSink`],
//! [`ScratchTable`] and [`ScratchTables`], and [`StoreTable`], which adapts any shipgate
//! [`ItemStore`] to them. DynamoDB tables are adapted in `crate::aws::dynamodb::table`.
//!
//! Records travel as JSON documents on one line (NDJSON lines without the newline). A
//! [`StoreTable`] record is a shipgate [`Item`]. Every adapter serialises canonically (object
//! keys and set members sorted), so the same item always gives the same line: restore drills
//! compare content checksums across tables, which only works if serialisation is canonical.

use std::time::Duration;

use async_trait::async_trait;

use crate::store::{Condition, Item, ItemStore, StoreError, Write, MAX_TRANSACTION_ITEMS};

/// Attempts at writing a batch's unprocessed items before giving up.
pub(crate) const UNPROCESSED_ATTEMPTS: u32 = 10;
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(50);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
pub(crate) const TABLE_WAIT: Duration = Duration::from_secs(300);

/// Why a table could not be read or written. Messages never contain item contents.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("item store of table {table}")]
    Store {
        table: String,
        #[source]
        source: StoreError,
    },
    #[error("DynamoDB {operation} on table {table} failed")]
    Dynamo {
        operation: &'static str,
        table: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("record {index} of a batch for table {table} is not a valid {expected}: {reason}")]
    BadRecord {
        table: String,
        index: usize,
        expected: &'static str,
        reason: String,
    },
    #[error("malformed scan cursor for table {table}")]
    BadCursor { table: String },
    #[error("DynamoDB left {items} items of a batch for table {table} unprocessed after {UNPROCESSED_ATTEMPTS} attempts")]
    Unprocessed { table: String, items: usize },
    #[error("table {table} did not become {state} within {TABLE_WAIT:?}")]
    Timeout { table: String, state: &'static str },
    #[error("table {table}: {reason}")]
    Schema { table: String, reason: String },
}

/// One page of a segment scan: records (JSON, one line each) and the cursor of the next page,
/// `None` when the segment is done.
pub type ScanPage = (Vec<String>, Option<String>);

/// A table a backup reads.
#[async_trait]
pub trait TableSource: Send + Sync {
    /// The table's name; it goes into the backup id, the manifest and the encryption context.
    fn name(&self) -> &str;

    /// One page of segment `segment` of `total` (a parallel scan); start with `cursor = None`
    /// and pass the returned cursor back until it is `None`. Pages may be empty.
    async fn scan_segment(
        &self,
        segment: u32,
        total: u32,
        cursor: Option<String>,
    ) -> Result<ScanPage, TableError>;
}

/// A table a restore writes.
#[async_trait]
pub trait TableSink: Send + Sync {
    fn name(&self) -> &str;

    /// True when the table holds no records; a restore refuses a non-empty target unless forced.
    async fn is_empty(&self) -> Result<bool, TableError>;

    /// Writes records as produced by the matching [`TableSource`], unconditionally (a record
    /// whose key exists replaces it). Every record is parsed before any is written, so a batch
    /// with a bad record writes nothing.
    async fn write_batch(&self, records: Vec<String>) -> Result<(), TableError>;

    /// Number of records in the table (a full scan).
    async fn count(&self) -> Result<u64, TableError>;

    /// Deletes every record. A restore calls it only on a target that was empty when it
    /// started, after its writing pass failed, so that no partial restore is left behind.
    /// `Ok(false)`: this table cannot do that (the restore then reports a partial restore).
    async fn clear(&self) -> Result<bool, TableError> {
        Ok(false)
    }
}

/// A table a restore drill creates, restores into, reads back and throws away.
#[async_trait]
pub trait ScratchTable: TableSink + TableSource {
    /// Removes the table (or, where a table cannot be dropped, everything in it).
    async fn discard(&self) -> Result<(), TableError>;
}

/// Makes the empty tables restore drills restore into.
#[async_trait]
pub trait ScratchTables: Send + Sync {
    /// A new, empty table like `physical` (the real name of the table backed up as `table`),
    /// named after `table` and a fresh short id.
    async fn create(
        &self,
        table: &str,
        physical: &str,
    ) -> Result<Box<dyn ScratchTable>, TableError>;
}

// ---------------------------------------------------------------------------------------------
// The embedded item store

/// A backup source and restore target over any [`ItemStore`]; records are JSON [`Item`]s.
#[derive(Clone)]
pub struct StoreTable {
    name: String,
    store: std::sync::Arc<dyn ItemStore>,
}

impl std::fmt::Debug for StoreTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTable")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl StoreTable {
    /// `name` is what backups of this store are filed under (usually `shipgate`).
    pub fn new(name: impl Into<String>, store: std::sync::Arc<dyn ItemStore>) -> Self {
        StoreTable {
            name: name.into(),
            store,
        }
    }

    pub fn store(&self) -> &std::sync::Arc<dyn ItemStore> {
        &self.store
    }

    fn store_err(&self, source: StoreError) -> TableError {
        TableError::Store {
            table: self.name.clone(),
            source,
        }
    }

    /// Visits every item, page by page (one segment).
    async fn for_each_page(
        &self,
        mut visit: impl FnMut(Vec<Item>) -> bool + Send,
    ) -> Result<(), TableError> {
        let mut cursor = None;
        loop {
            let (items, next) = self
                .store
                .scan(0, 1, cursor)
                .await
                .map_err(|e| self.store_err(e))?;
            if !visit(items) {
                return Ok(());
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Writes in transactions of at most [`MAX_TRANSACTION_ITEMS`], retrying conflicts.
    async fn transact_all(&self, writes: Vec<Write>) -> Result<(), TableError> {
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            let batch: Vec<Write> = writes.by_ref().take(MAX_TRANSACTION_ITEMS).collect();
            let mut delay = BACKOFF_START;
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.store.transact(batch.clone()).await {
                    Ok(()) => break,
                    Err(e) if matches!(e, StoreError::Conflict) && attempt < 5 => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(BACKOFF_MAX);
                    }
                    Err(e) => return Err(self.store_err(e)),
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl TableSource for StoreTable {
    fn name(&self) -> &str {
        &self.name
    }

    async fn scan_segment(
        &self,
        segment: u32,
        total: u32,
        cursor: Option<String>,
    ) -> Result<ScanPage, TableError> {
        let (items, next) = self
            .store
            .scan(segment, total, cursor)
            .await
            .map_err(|e| self.store_err(e))?;
        let records = items
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TableError::BadRecord {
                table: self.name.clone(),
                index: 0,
                expected: "item",
                reason: format!("cannot serialise an item: {e}"),
            })?;
        Ok((records, next))
    }
}

#[async_trait]
impl TableSink for StoreTable {
    fn name(&self) -> &str {
        &self.name
    }

    async fn is_empty(&self) -> Result<bool, TableError> {
        let mut empty = true;
        self.for_each_page(|items| {
            empty = items.is_empty();
            // A page may be empty while later ones are not (filtered segments); keep going.
            empty
        })
        .await?;
        Ok(empty)
    }

    async fn write_batch(&self, records: Vec<String>) -> Result<(), TableError> {
        let writes = records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                serde_json::from_str::<Item>(record)
                    .map(|item| Write::Put {
                        item,
                        condition: Condition::None,
                    })
                    .map_err(|e| TableError::BadRecord {
                        table: self.name.clone(),
                        index,
                        expected: "shipgate item",
                        // serde_json's message names the position and the expected field, not
                        // the content.
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.transact_all(writes).await
    }

    async fn count(&self) -> Result<u64, TableError> {
        let mut count = 0u64;
        self.for_each_page(|items| {
            count += items.len() as u64;
            true
        })
        .await?;
        Ok(count)
    }

    async fn clear(&self) -> Result<bool, TableError> {
        // Deleting the items of a page does not move the cursor, which is the page's last key.
        let mut cursor = None;
        loop {
            let (items, next) = self
                .store
                .scan(0, 1, cursor)
                .await
                .map_err(|e| self.store_err(e))?;
            let deletes = items
                .into_iter()
                .map(|item| Write::Delete {
                    pk: item.pk,
                    sk: item.sk,
                    condition: Condition::None,
                })
                .collect();
            self.transact_all(deletes).await?;
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(true),
            }
        }
    }
}

#[async_trait]
impl ScratchTable for StoreTable {
    /// An item store cannot be dropped through the port, so this deletes every item.
    async fn discard(&self) -> Result<(), TableError> {
        self.clear().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink with only the required methods.
    struct Plain;

    #[async_trait]
    impl TableSink for Plain {
        fn name(&self) -> &str {
            "plain"
        }
        async fn is_empty(&self) -> Result<bool, TableError> {
            Ok(true)
        }
        async fn write_batch(&self, _records: Vec<String>) -> Result<(), TableError> {
            Ok(())
        }
        async fn count(&self) -> Result<u64, TableError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_sink_that_cannot_be_emptied_says_so() {
        assert!(!Plain.clear().await.unwrap());
    }

    #[cfg(feature = "embedded")]
    #[tokio::test]
    async fn clearing_a_store_table_deletes_every_page_of_items() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::embedded::SqliteStore::open(
            dir.path().join("t.db"),
            crate::embedded::Durability::Normal,
        )
        .unwrap();
        let table = StoreTable::new("t", std::sync::Arc::new(store));
        // More than one scan page.
        let records: Vec<String> = (0..2500)
            .map(|i| format!(r#"{{"pk":"P#{i:05}","sk":"S","version":1,"data":"{{}}"}}"#))
            .collect();
        for batch in records.chunks(500) {
            table.write_batch(batch.to_vec()).await.unwrap();
        }
        assert_eq!(table.count().await.unwrap(), 2500);
        assert!(table.clear().await.unwrap());
        assert_eq!(table.count().await.unwrap(), 0);
        assert!(table.is_empty().await.unwrap());
    }
}
