//! The store migration on the committed version-0 store (`tests/data/store-v0/`, a whole
//! `shipgate demo` written by the environment-keyed layout): loaded into a fresh SQLite store,
//! migrated, read back through the repository; run twice, and again after a simulated crash.

use std::sync::Arc;

use jiff::Timestamp;
use shipgate::domain::deployment::EnvironmentHeads;
use shipgate::embedded::sqlite::SqliteStore;
use shipgate::store::migrate::{migrate, schema_version, SCHEMA_VERSION};
use shipgate::store::{Condition, Item, ItemStore, Repo, Write};

const REPO: &str = "acme/api";

fn v0_items() -> Vec<Item> {
    let path = testkit::workspace_root().join("shared/tests/data/store-v0/demo.items.ndjson");
    let text = std::fs::read_to_string(&path).expect("the v0 fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an item"))
        .collect()
}

async fn load(items: &[Item]) -> (Repo, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::in_memory().expect("sqlite"));
    for item in items {
        store
            .write(Write::Put {
                item: item.clone(),
                condition: Condition::None,
            })
            .await
            .expect("load");
    }
    (Repo::new(store.clone()), store)
}

async fn everything(store: &SqliteStore) -> Vec<Item> {
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = store.scan(0, 1, cursor).await.expect("scan");
        items.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    items.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
    items
}

fn v0_heads(items: &[Item], env: &str) -> EnvironmentHeads {
    let item = items
        .iter()
        .find(|i| i.pk == format!("ENV#{env}") && i.sk == "HEADS")
        .expect("v0 heads");
    serde_json::from_str(&item.data).expect("heads")
}

#[tokio::test]
async fn the_v0_demo_store_migrates_to_scoped_keys_and_reads_right_twice_over() {
    let items = v0_items();
    let (repo, store) = load(&items).await;
    assert_eq!(schema_version(&repo).await.unwrap(), 0);

    let report = migrate(&repo).await.unwrap();
    assert_eq!(
        (report.from_version, report.to_version),
        (0, SCHEMA_VERSION)
    );
    assert_eq!(report.moved, 2, "{report:?}");
    assert!(report.kept.is_empty(), "{report:?}");
    assert_eq!(schema_version(&repo).await.unwrap(), SCHEMA_VERSION);

    for env in ["staging", "production"] {
        let scope = testkit::scope(REPO, env);
        let before = v0_heads(&items, env);
        let after = repo.heads(&scope).await.unwrap();
        assert_eq!(after.current, before.current, "{env}");
        assert_eq!(after.last_known_good, before.last_known_good, "{env}");
        assert_eq!(after.repo.as_ref().map(|r| r.as_str()), Some(REPO));
        assert_eq!(repo.lock_holder(&scope).await.unwrap(), None);
        let repos = repo.repositories_in(env).await.unwrap();
        assert_eq!(repos.iter().map(|r| r.as_str()).collect::<Vec<_>>(), [REPO]);
        assert!(store
            .get(&format!("ENV#{env}"), "HEADS")
            .await
            .unwrap()
            .is_none());
        // The environment timelines are untouched: history and status read as before.
        let deployments = repo
            .deployments_in(env, Timestamp::UNIX_EPOCH, Timestamp::MAX, false, None)
            .await
            .unwrap();
        assert!(!deployments.is_empty(), "{env}");
        assert!(!repo
            .audit_for_environment(env, Timestamp::UNIX_EPOCH, Timestamp::MAX, None)
            .await
            .unwrap()
            .is_empty());
    }

    // Twice: nothing more to do, nothing changes.
    let once = everything(&store).await;
    let again = migrate(&repo).await.unwrap();
    assert_eq!((again.from_version, again.moved, again.dropped), (1, 0, 0));
    assert_eq!(everything(&store).await, once);
}

#[tokio::test]
async fn a_migration_that_crashed_halfway_finishes_on_the_next_run() {
    let items = v0_items();
    let (repo, store) = load(&items).await;
    migrate(&repo).await.unwrap();
    let done = everything(&store).await;

    // As if the run had crashed after writing the scoped heads and before deleting the old
    // ones and recording the version.
    let old = items
        .iter()
        .find(|i| i.pk == "ENV#staging" && i.sk == "HEADS")
        .unwrap()
        .clone();
    store
        .write(Write::Put {
            item: old,
            condition: Condition::None,
        })
        .await
        .unwrap();
    store
        .write(Write::Delete {
            pk: "META#schema".into(),
            sk: "version".into(),
            condition: Condition::None,
        })
        .await
        .unwrap();

    let report = migrate(&repo).await.unwrap();
    assert_eq!(report.from_version, 0);
    assert_eq!(everything(&store).await, done);
}
