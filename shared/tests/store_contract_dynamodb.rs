//! The store contract suite against the DynamoDB adapter, plus DynamoDB-specific cases
//! (exact range boundaries, pagination, cancellation reasons, table bootstrap).
//!
//! Needs a DynamoDB endpoint: `make test` starts moto and exports `AWS_ENDPOINT_URL` and test
//! credentials. Every test gets its own freshly created table, so tests run in parallel.

use std::collections::HashSet;
use std::sync::Arc;

use shipgate::aws::dynamodb::DynamoStore;
use shipgate::store::{Condition, Item, ItemStore, Query, StoreError, Timeline, Write};

const NOW: i64 = 1_800_000_000;

/// A store on a new, uniquely named table. Fails loudly without an endpoint: a DynamoDB test
/// that silently passes would hide a broken adapter.
async fn fresh_table() -> DynamoStore {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "DynamoDB store tests: needs the emulator: run make test \
         (or start moto and export AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)"
    );
    let table = format!("shipgate-test-{}", uuid::Uuid::new_v4());
    let store = DynamoStore::from_env(table).await;
    store
        .create_table_if_missing()
        .await
        .expect("create the test table");
    store
}

async fn fresh() -> Arc<dyn ItemStore> {
    Arc::new(fresh_table().await)
}

testkit::store_contract_tests!(fresh());

fn item(pk: &str, sk: &str, version: u64, data: &str) -> Item {
    Item {
        pk: pk.into(),
        sk: sk.into(),
        version,
        expires_at: None,
        timeline: None,
        data: data.into(),
    }
}

fn on_timeline(pk: &str, tl_sk: &str) -> Item {
    let mut it = item(pk, "D", 1, tl_sk);
    it.timeline = Some(Timeline {
        pk: "TL".into(),
        sk: tl_sk.into(),
    });
    it
}

fn put(item: Item, condition: Condition) -> Write {
    Write::Put { item, condition }
}

fn timeline(from: &str, to: &str, descending: bool, limit: Option<usize>) -> Query {
    Query::Timeline {
        pk: "TL".into(),
        from: from.into(),
        to: to.into(),
        descending,
        limit,
    }
}

fn data(items: Vec<Item>) -> Vec<String> {
    items.into_iter().map(|i| i.data).collect()
}

#[tokio::test]
async fn item_round_trips_every_attribute() {
    let store = fresh_table().await;
    let mut full = item("D#1", "D", 7, r#"{"data":"reserved word as payload"}"#);
    full.expires_at = Some(NOW + 5);
    full.timeline = Some(Timeline {
        pk: "ENV#prod".into(),
        sk: "0001".into(),
    });
    store
        .write(put(full.clone(), Condition::None))
        .await
        .expect("put");
    store
        .write(put(item("D#2", "D", u64::MAX, ""), Condition::None))
        .await
        .expect("put");

    assert_eq!(store.get("D#1", "D").await.expect("get"), Some(full));
    let bare = store.get("D#2", "D").await.expect("get").expect("present");
    assert_eq!(
        (
            bare.version,
            bare.data.as_str(),
            bare.expires_at,
            bare.timeline
        ),
        (u64::MAX, "", None, None)
    );
    assert_eq!(store.get("D#3", "D").await.expect("get"), None);
}

#[tokio::test]
async fn expired_item_counts_as_absent_from_the_second_it_expires() {
    let store = fresh_table().await;
    let mut claim = item("IDEM#1", "IDEM", 1, "first");
    claim.expires_at = Some(NOW);
    store
        .write(put(claim, Condition::Absent { now: NOW - 10 }))
        .await
        .expect("claim");

    let early = store
        .write(put(
            item("IDEM#1", "IDEM", 1, "early"),
            Condition::Absent { now: NOW - 1 },
        ))
        .await;
    assert!(
        matches!(&early, Err(StoreError::ConditionFailed { key }) if key == "IDEM#1/IDEM"),
        "a live item must block create-if-absent: {early:?}"
    );
    store
        .write(put(
            item("IDEM#1", "IDEM", 1, "reclaimed"),
            Condition::Absent { now: NOW },
        ))
        .await
        .expect("expiry at exactly `now` counts as absent, like Item::is_expired");
    let got = store
        .get("IDEM#1", "IDEM")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.data, "reclaimed");
}

#[tokio::test]
async fn expired_items_are_still_returned_by_get_and_query() {
    let store = fresh_table().await;
    let mut old = item("P", "OLD", 1, "old");
    old.expires_at = Some(NOW - 100);
    store.write(put(old, Condition::None)).await.expect("put");

    let got = store
        .get("P", "OLD")
        .await
        .expect("get")
        .expect("still there");
    assert!(got.is_expired(NOW));
    let listed = store
        .query(Query::Partition {
            pk: "P".into(),
            sk_prefix: String::new(),
            descending: false,
            limit: None,
        })
        .await
        .expect("query");
    assert_eq!(data(listed), ["old"]);
}

#[tokio::test]
async fn absent_condition_on_delete_and_check_treats_expired_as_absent() {
    let store = fresh_table().await;
    let mut lock = item("L", "LOCK", 1, "holder");
    lock.expires_at = Some(NOW + 30);
    store.write(put(lock, Condition::None)).await.expect("put");

    let absent = |now| Write::Check {
        pk: "L".into(),
        sk: "LOCK".into(),
        condition: Condition::Absent { now },
    };
    assert!(matches!(
        store.write(absent(NOW)).await,
        Err(StoreError::ConditionFailed { .. })
    ));
    store
        .write(absent(NOW + 30))
        .await
        .expect("expired lock is absent to a check");
    store
        .write(Write::Delete {
            pk: "L".into(),
            sk: "LOCK".into(),
            condition: Condition::Absent { now: NOW + 30 },
        })
        .await
        .expect("deleting an expired item under Absent");
    assert_eq!(store.get("L", "LOCK").await.expect("get"), None);
}

#[tokio::test]
async fn lone_check_reports_the_version_it_finds() {
    let store = fresh_table().await;
    store
        .write(put(item("D", "D", 3, "x"), Condition::None))
        .await
        .expect("put");
    let check = |condition| Write::Check {
        pk: "D".into(),
        sk: "D".into(),
        condition,
    };

    store
        .write(check(Condition::Version(3)))
        .await
        .expect("matching version");
    store
        .write(check(Condition::None))
        .await
        .expect("unconditional check");
    let stale = store.write(check(Condition::Version(2))).await;
    assert!(
        matches!(&stale, Err(StoreError::ConditionFailed { key }) if key == "D/D"),
        "{stale:?}"
    );
    let missing = store
        .write(Write::Check {
            pk: "X".into(),
            sk: "X".into(),
            condition: Condition::Version(1),
        })
        .await;
    assert!(matches!(missing, Err(StoreError::ConditionFailed { .. })));
}

#[tokio::test]
async fn cancelled_transaction_names_the_first_failed_key_and_writes_nothing() {
    let store = fresh_table().await;
    store
        .write(put(item("B", "B", 5, "b"), Condition::None))
        .await
        .expect("put");
    store
        .write(put(item("C", "C", 1, "c"), Condition::None))
        .await
        .expect("put");

    let result = store
        .transact(vec![
            put(item("A", "A", 1, "a"), Condition::Absent { now: NOW }),
            Write::Delete {
                pk: "C".into(),
                sk: "C".into(),
                condition: Condition::Version(1),
            },
            put(item("B", "B", 6, "b2"), Condition::Version(4)),
            Write::Check {
                pk: "Z".into(),
                sk: "Z".into(),
                condition: Condition::Version(1),
            },
        ])
        .await;
    assert!(
        matches!(&result, Err(StoreError::ConditionFailed { key }) if key == "B/B"),
        "expected the stale version on B/B to be named: {result:?}"
    );
    assert_eq!(store.get("A", "A").await.expect("get"), None);
    assert!(
        store.get("C", "C").await.expect("get").is_some(),
        "the delete must be rolled back"
    );
    assert_eq!(
        store.get("B", "B").await.expect("get").map(|i| i.version),
        Some(5)
    );
}

#[tokio::test]
async fn transaction_rejects_duplicates_and_oversize_before_calling_dynamodb() {
    let store = fresh_table().await;
    let duplicate = store
        .transact(vec![
            put(item("K", "K", 1, "x"), Condition::None),
            Write::Check {
                pk: "K".into(),
                sk: "K".into(),
                condition: Condition::None,
            },
        ])
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Invalid(_))),
        "{duplicate:?}"
    );

    let oversize: Vec<_> = (0..101)
        .map(|i| put(item(&format!("K#{i}"), "K", 1, "x"), Condition::None))
        .collect();
    let result = store.transact(oversize).await;
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    let nothing = store.scan(0, 1, None).await.expect("scan").0;
    assert!(
        nothing.is_empty(),
        "a rejected transaction wrote {} items",
        nothing.len()
    );

    let hundred: Vec<_> = (0..100)
        .map(|i| put(item(&format!("K#{i}"), "K", 1, "x"), Condition::None))
        .collect();
    store
        .transact(hundred)
        .await
        .expect("exactly 100 writes is allowed");
    store
        .transact(Vec::new())
        .await
        .expect("an empty transaction is a no-op");
}

#[tokio::test]
async fn transaction_applies_puts_deletes_and_checks_together() {
    let store = fresh_table().await;
    store
        .write(put(item("OLD", "O", 2, "old"), Condition::None))
        .await
        .expect("put");
    store
        .write(put(item("GUARD", "G", 9, "g"), Condition::None))
        .await
        .expect("put");
    store
        .transact(vec![
            put(item("NEW", "N", 1, "new"), Condition::Absent { now: NOW }),
            Write::Delete {
                pk: "OLD".into(),
                sk: "O".into(),
                condition: Condition::Version(2),
            },
            Write::Check {
                pk: "GUARD".into(),
                sk: "G".into(),
                condition: Condition::Version(9),
            },
            Write::Check {
                pk: "ANY".into(),
                sk: "A".into(),
                condition: Condition::None,
            },
        ])
        .await
        .expect("transaction");
    assert_eq!(
        store.get("NEW", "N").await.expect("get").map(|i| i.data),
        Some("new".into())
    );
    assert_eq!(store.get("OLD", "O").await.expect("get"), None);
    assert_eq!(
        store.get("ANY", "A").await.expect("get"),
        None,
        "a check must not write"
    );
}

#[tokio::test]
async fn timeline_range_excludes_items_exactly_on_the_upper_bound() {
    let store = fresh_table().await;
    for (n, ts) in ["0100", "0200", "0200", "0300", "0300", "0300", "0400"]
        .iter()
        .enumerate()
    {
        store
            .write(put(on_timeline(&format!("D#{n}"), ts), Condition::None))
            .await
            .expect("put");
    }
    store
        .write(put(item("NO-TIMELINE", "D", 1, "none"), Condition::None))
        .await
        .expect("put");

    assert_eq!(
        data(
            store
                .query(timeline("0200", "0300", false, None))
                .await
                .expect("q")
        ),
        ["0200", "0200"]
    );
    assert_eq!(
        data(
            store
                .query(timeline("0200", "0300", true, None))
                .await
                .expect("q")
        ),
        ["0200", "0200"]
    );
    assert_eq!(
        data(
            store
                .query(timeline("0100", "0400", true, Some(4)))
                .await
                .expect("q")
        ),
        ["0300", "0300", "0300", "0200"]
    );
    assert_eq!(
        data(
            store
                .query(timeline("", "0200", false, None))
                .await
                .expect("q")
        ),
        ["0100"]
    );
    assert_eq!(
        data(
            store
                .query(timeline("0300", "0301", false, None))
                .await
                .expect("q")
        ),
        ["0300", "0300", "0300"]
    );
    assert!(store
        .query(timeline("0300", "0300", false, None))
        .await
        .expect("q")
        .is_empty());
    assert!(store
        .query(timeline("0400", "0100", false, None))
        .await
        .expect("q")
        .is_empty());
    assert!(store
        .query(timeline("0000", "9999", false, Some(0)))
        .await
        .expect("q")
        .is_empty());
}

#[tokio::test]
async fn queries_follow_pagination_until_the_limit_is_met() {
    let store = fresh_table().await.with_page_size(3);
    for n in 0..20 {
        let mut it = item("P", &format!("E#{n:03}"), 1, &format!("{n:03}"));
        it.timeline = Some(Timeline {
            pk: "TL".into(),
            sk: format!("{n:03}"),
        });
        store.write(put(it, Condition::None)).await.expect("put");
    }
    let partition = |descending, limit| Query::Partition {
        pk: "P".into(),
        sk_prefix: "E#".into(),
        descending,
        limit,
    };

    let all = data(store.query(partition(false, None)).await.expect("q"));
    let expected: Vec<String> = (0..20).map(|n| format!("{n:03}")).collect();
    assert_eq!(all, expected);
    assert_eq!(
        data(store.query(partition(true, Some(7))).await.expect("q")),
        ["019", "018", "017", "016", "015", "014", "013"]
    );

    let window = data(
        store
            .query(timeline("002", "015", false, None))
            .await
            .expect("q"),
    );
    assert_eq!(window, expected[2..15]);
    let newest = data(
        store
            .query(timeline("000", "015", true, Some(5)))
            .await
            .expect("q"),
    );
    assert_eq!(newest, ["014", "013", "012", "011", "010"]);
}

#[tokio::test]
async fn scan_segments_cover_every_item_exactly_once_across_pages() {
    let store = fresh_table().await.with_page_size(7);
    let mut expected = HashSet::new();
    for batch in 0..3 {
        let writes: Vec<_> = (0..50)
            .map(|i| {
                let pk = format!("S#{batch}-{i}");
                expected.insert(pk.clone());
                put(item(&pk, "S", 1, "x"), Condition::None)
            })
            .collect();
        store.transact(writes).await.expect("bulk put");
    }
    let total = 4;
    let mut seen = HashSet::new();
    let mut pages = 0;
    for segment in 0..total {
        let mut cursor = None;
        loop {
            let (items, next) = store.scan(segment, total, cursor).await.expect("scan");
            pages += 1;
            for it in items {
                assert!(seen.insert(it.pk.clone()), "{} returned twice", it.pk);
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    assert_eq!(seen, expected);
    assert!(
        pages >= 150 / 7,
        "small pages must have produced many cursors, got {pages} pages"
    );
}

#[tokio::test]
async fn scan_rejects_bad_segments_and_malformed_cursors() {
    let store = fresh_table().await;
    assert!(matches!(
        store.scan(2, 2, None).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.scan(0, 0, None).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.scan(0, 1, Some("not a cursor!".into())).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn empty_keys_are_rejected_as_invalid() {
    let store = fresh_table().await;
    let result = store
        .write(put(item("", "S", 1, "x"), Condition::None))
        .await;
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    let mut bad_timeline = item("P", "S", 1, "x");
    bad_timeline.timeline = Some(Timeline {
        pk: "TL".into(),
        sk: String::new(),
    });
    let result = store.write(put(bad_timeline, Condition::None)).await;
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
}

#[tokio::test]
async fn create_table_if_missing_is_idempotent() {
    let store = fresh_table().await;
    store
        .write(put(item("KEEP", "K", 1, "kept"), Condition::None))
        .await
        .expect("put");
    store.create_table_if_missing().await.expect("second call");
    assert_eq!(
        store.get("KEEP", "K").await.expect("get").map(|i| i.data),
        Some("kept".into())
    );
}

#[tokio::test]
async fn missing_table_is_a_backend_error_naming_the_operation_not_the_item() {
    let table = fresh_table().await;
    let store = DynamoStore::new(table.client().clone(), format!("{}-missing", table.table()));
    let err = store
        .write(put(
            item("SECRET-PK", "S", 1, "secret payload"),
            Condition::None,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("PutItem") && message.contains("ResourceNotFoundException"),
        "{message}"
    );
    assert!(
        !message.contains("SECRET") && !message.contains("secret"),
        "{message}"
    );
}
