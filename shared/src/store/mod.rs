//! State storage.
//!
//! [`ItemStore`] is the port: a small key/item store with the conditional-write semantics
//! shipgate relies on (create-if-absent, update-if-version-matches, all-or-nothing
//! transactions, expiring items, per-partition and timeline queries). Two adapters implement
//! it — `crate::aws::dynamodb::DynamoStore` for AWS and `crate::embedded::sqlite::SqliteStore`
//! for the self-hosted binary — and one contract suite (in the `testkit` crate) holds both to
//! the same rules.

pub mod item;
pub mod migrate;
pub mod repo;

pub use item::{
    Condition, Item, ItemStore, Query, StoreError, Timeline, Write, MAX_TRANSACTION_ITEMS,
};
pub use repo::{Claim, Created, Repo, RepoError, CLAIM_LEASE};
