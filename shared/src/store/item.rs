//! The item-store port and its value types.
//!
//! An [`Item`] is addressed by a partition key and a sort key, carries an optimistic-concurrency
//! `version`, an optional expiry (unix seconds; expired items behave as absent), an optional
//! timeline key pair (a secondary index ordered by time) and an opaque JSON `data` payload.

use async_trait::async_trait;

/// Secondary "timeline" index key: items sharing `pk` are ordered by `sk`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timeline {
    pub pk: String,
    pub sk: String,
}

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    /// Optimistic-concurrency version; the adapter stores what it is given.
    pub version: u64,
    /// Unix seconds after which the item counts as absent (DynamoDB TTL semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// JSON document owned by the typed layer.
    pub data: String,
}

impl Item {
    /// True when the item has an expiry at or before `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// The condition a write must satisfy; when it does not, the write (or the whole
/// transaction) fails with [`StoreError::ConditionFailed`] and nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Unconditional.
    None,
    /// No item exists under the key, or the existing one expired at or before `now`.
    Absent { now: i64 },
    /// An item exists under the key with exactly this version.
    Version(u64),
}

/// One write, alone or as part of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        item: Item,
        condition: Condition,
    },
    Delete {
        pk: String,
        sk: String,
        condition: Condition,
    },
    /// Writes nothing; only asserts the condition (inside a transaction).
    Check {
        pk: String,
        sk: String,
        condition: Condition,
    },
}

impl Write {
    pub fn key(&self) -> (&str, &str) {
        match self {
            Write::Put { item, .. } => (&item.pk, &item.sk),
            Write::Delete { pk, sk, .. } | Write::Check { pk, sk, .. } => (pk, sk),
        }
    }
}

/// A read of many items, ordered by sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Items of one partition whose sort key starts with `sk_prefix`.
    Partition {
        pk: String,
        sk_prefix: String,
        descending: bool,
        limit: Option<usize>,
    },
    /// Items on one timeline with `from <= timeline.sk < to`.
    Timeline {
        pk: String,
        from: String,
        to: String,
        descending: bool,
        limit: Option<usize>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A condition did not hold; `key` names the first offending item (`pk/sk`).
    #[error("condition failed for {key}")]
    ConditionFailed { key: String },
    /// The transaction conflicted with another one in flight; safe to retry.
    #[error("transaction conflict, retry")]
    Conflict,
    /// The request was malformed (too many items in a transaction, duplicate keys...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend failed; the message is safe to log (no item contents).
    #[error("storage backend error: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    pub fn backend(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// True when retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Conflict | StoreError::Backend { .. })
    }
}

/// The most writes one transaction may hold (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// The state port.
#[async_trait]
pub trait ItemStore: Send + Sync {
    /// Reads one item, expired or not (callers decide what expiry means to them).
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError>;

    /// Applies one conditional write.
    async fn write(&self, write: Write) -> Result<(), StoreError>;

    /// Applies every write or none; each write's condition is checked against the state
    /// before the transaction. Two writes may not address the same key.
    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError>;

    /// Reads many items in sort-key order.
    async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError>;

    /// Reads one page of one segment of a full scan (for backups). `segment < total_segments`;
    /// pass the returned cursor back until it is `None`.
    async fn scan(
        &self,
        segment: u32,
        total_segments: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError>;
}
