//! The store contract suite against the embedded SQLite adapter, plus proof that the suite
//! catches a broken adapter.

use std::sync::Arc;

use futures::FutureExt;
use shipgate::embedded::sqlite::{Durability, SqliteStore};
use shipgate::store::ItemStore;
use testkit::contract::{self, IgnoresVersions};

async fn fresh() -> Arc<dyn ItemStore> {
    Arc::new(SqliteStore::in_memory().expect("in-memory sqlite"))
}

testkit::store_contract_tests!(fresh());

/// The same suite on a database file, where reads use their own connection and writes are
/// committed in groups.
mod file_backed {
    use std::sync::Arc;

    use async_trait::async_trait;
    use shipgate::embedded::sqlite::{Durability, SqliteStore};
    use shipgate::store::{Item, ItemStore, Query, StoreError, Write};

    /// A file-backed store that removes its directory when dropped.
    struct FileStore {
        store: SqliteStore,
        _dir: tempfile::TempDir,
    }

    #[async_trait]
    impl ItemStore for FileStore {
        async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
            self.store.get(pk, sk).await
        }
        async fn write(&self, write: Write) -> Result<(), StoreError> {
            self.store.write(write).await
        }
        async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
            self.store.transact(writes).await
        }
        async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError> {
            self.store.query(query).await
        }
        async fn scan(
            &self,
            segment: u32,
            total_segments: u32,
            cursor: Option<String>,
        ) -> Result<(Vec<Item>, Option<String>), StoreError> {
            self.store.scan(segment, total_segments, cursor).await
        }
    }

    async fn fresh() -> Arc<dyn ItemStore> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("state.db"), Durability::Full).expect("open");
        Arc::new(FileStore { store, _dir: dir })
    }

    testkit::store_contract_tests!(fresh());
}

#[tokio::test]
async fn suite_catches_an_adapter_that_ignores_versions() {
    let broken: Arc<dyn ItemStore> =
        Arc::new(IgnoresVersions(SqliteStore::in_memory().expect("sqlite")));
    let outcome = std::panic::AssertUnwindSafe(contract::stale_version_update_is_refused(broken))
        .catch_unwind()
        .await;
    assert!(
        outcome.is_err(),
        "the contract suite accepted a lost-update adapter"
    );
}

#[tokio::test]
async fn file_backed_store_keeps_items_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    {
        let store = SqliteStore::open(&path, Durability::Full).expect("open");
        contract::create_if_absent_succeeds_once(Arc::new(store)).await;
    }
    let reopened = SqliteStore::open(&path, Durability::Full).expect("reopen");
    let item = reopened.get("P#1", "A").await.expect("get").expect("kept");
    assert_eq!(item.data, "first");
}
