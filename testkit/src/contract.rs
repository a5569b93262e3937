//! The conformance suite every [`ItemStore`] adapter must pass.
//!
//! Each case is an async function taking a fresh, empty store; it panics when the adapter
//! breaks the port's semantics. [`store_contract_tests!`](crate::store_contract_tests)
//! expands to one `#[tokio::test]` per case for an adapter, so the embedded and the DynamoDB
//! adapters are held to exactly the same rules. [`IgnoresVersions`] is a deliberately broken
//! adapter used to show the suite catches what it claims to.

use std::sync::Arc;

use async_trait::async_trait;

use shipgate::store::{Condition, Item, ItemStore, Query, StoreError, Timeline, Write};

const NOW: i64 = 1_800_000_000;

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

fn put(item: Item, condition: Condition) -> Write {
    Write::Put { item, condition }
}

fn is_condition_failed(r: &Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::ConditionFailed { .. }))
}

/// Create-if-absent succeeds once; the second create fails and keeps the first item.
pub async fn create_if_absent_succeeds_once(store: Arc<dyn ItemStore>) {
    let first = store
        .write(put(
            item("P#1", "A", 1, "first"),
            Condition::Absent { now: NOW },
        ))
        .await;
    assert!(first.is_ok(), "first create failed: {first:?}");
    let second = store
        .write(put(
            item("P#1", "A", 1, "second"),
            Condition::Absent { now: NOW },
        ))
        .await;
    assert!(
        is_condition_failed(&second),
        "second create was not refused: {second:?}"
    );
    let got = store.get("P#1", "A").await.ok().flatten().map(|i| i.data);
    assert_eq!(got.as_deref(), Some("first"));
}

/// Many writers race to take one lock: exactly one wins, the others see ConditionFailed.
pub async fn lock_contention_has_one_winner(store: Arc<dyn ItemStore>) {
    let mut tasks = Vec::new();
    for n in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .write(put(
                    item("ENV#prod", "LOCK", 1, &format!("holder-{n}")),
                    Condition::Absent { now: NOW },
                ))
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => wins += 1,
            Ok(Err(StoreError::ConditionFailed { .. })) => {}
            other => panic!("unexpected lock outcome: {other:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one writer must take the lock");
}

/// An update naming a stale version is refused and changes nothing.
pub async fn stale_version_update_is_refused(store: Arc<dyn ItemStore>) {
    store
        .write(put(
            item("D#1", "D", 1, "v1"),
            Condition::Absent { now: NOW },
        ))
        .await
        .expect("create");
    store
        .write(put(item("D#1", "D", 2, "v2"), Condition::Version(1)))
        .await
        .expect("update from v1");
    let stale = store
        .write(put(
            item("D#1", "D", 2, "lost update"),
            Condition::Version(1),
        ))
        .await;
    assert!(
        is_condition_failed(&stale),
        "stale update was not refused: {stale:?}"
    );
    let missing = store
        .write(put(item("D#404", "D", 2, "x"), Condition::Version(1)))
        .await;
    assert!(
        is_condition_failed(&missing),
        "update of a missing item was not refused"
    );
    let got = store.get("D#1", "D").await.expect("get").expect("present");
    assert_eq!((got.version, got.data.as_str()), (2, "v2"));
}

/// Concurrent updates from the same version: exactly one lands.
pub async fn concurrent_updates_from_one_version_have_one_winner(store: Arc<dyn ItemStore>) {
    store
        .write(put(
            item("D#2", "D", 1, "v1"),
            Condition::Absent { now: NOW },
        ))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .write(put(
                    item("D#2", "D", 2, &format!("writer-{n}")),
                    Condition::Version(1),
                ))
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if let Ok(Ok(())) = t.await {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

/// An idempotency key is claimed once; a replay before expiry is refused, after expiry it
/// can be claimed again.
pub async fn idempotency_key_replays_until_expiry(store: Arc<dyn ItemStore>) {
    let mut key = item("IDEM#github#d-1", "IDEM", 1, "{}");
    key.expires_at = Some(NOW + 60);
    store
        .write(put(key.clone(), Condition::Absent { now: NOW }))
        .await
        .expect("first claim");
    let replay = store
        .write(put(key.clone(), Condition::Absent { now: NOW + 59 }))
        .await;
    assert!(
        is_condition_failed(&replay),
        "replay inside the window was accepted"
    );
    let after = store
        .write(put(key.clone(), Condition::Absent { now: NOW + 60 }))
        .await;
    assert!(
        after.is_ok(),
        "an expired key must count as absent: {after:?}"
    );
    let got = store
        .get("IDEM#github#d-1", "IDEM")
        .await
        .expect("get")
        .expect("present");
    assert!(!got.is_expired(NOW + 59) && got.is_expired(NOW + 60));
}

/// A transaction whose last condition fails writes nothing at all.
pub async fn failed_transaction_leaves_nothing_behind(store: Arc<dyn ItemStore>) {
    store
        .write(put(
            item("ENV#prod", "LOCK", 1, "holder"),
            Condition::Absent { now: NOW },
        ))
        .await
        .expect("lock");
    let result = store
        .transact(vec![
            put(
                item("D#9", "D", 1, "new deployment"),
                Condition::Absent { now: NOW },
            ),
            put(
                item("AUDIT#9", "0001", 1, "audit"),
                Condition::Absent { now: NOW },
            ),
            put(
                item("ENV#prod", "LOCK", 1, "intruder"),
                Condition::Absent { now: NOW },
            ),
        ])
        .await;
    assert!(
        is_condition_failed(&result),
        "transaction should fail on the held lock: {result:?}"
    );
    assert!(
        store.get("D#9", "D").await.expect("get").is_none(),
        "half a transaction was written"
    );
    assert!(store.get("AUDIT#9", "0001").await.expect("get").is_none());
    let lock = store
        .get("ENV#prod", "LOCK")
        .await
        .expect("get")
        .expect("lock");
    assert_eq!(lock.data, "holder");
}

/// Concurrent, unrelated writes and transactions decide each on its own: a failed condition
/// in one of them undoes only that one, even when the adapter commits them together.
pub async fn concurrent_writes_fail_alone(store: Arc<dyn ItemStore>) {
    let mut tasks = Vec::new();
    for n in 0..48u32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let pk = format!("B#{n}");
            let outcome = match n % 3 {
                // Succeeds: a fresh item.
                0 => {
                    store
                        .write(put(item(&pk, "A", 1, "ok"), Condition::Absent { now: NOW }))
                        .await
                }
                // Fails: an update of an item that does not exist.
                1 => {
                    store
                        .write(put(item(&pk, "A", 2, "lost"), Condition::Version(1)))
                        .await
                }
                // Fails as a whole: its second write's condition is false.
                _ => {
                    store
                        .transact(vec![
                            put(item(&pk, "A", 1, "half"), Condition::Absent { now: NOW }),
                            put(item(&pk, "B", 2, "half"), Condition::Version(1)),
                        ])
                        .await
                }
            };
            (n, outcome)
        }));
    }
    for t in tasks {
        let (n, outcome) = t.await.expect("task");
        let pk = format!("B#{n}");
        let kept = store.get(&pk, "A").await.expect("get").map(|i| i.data);
        if n % 3 == 0 {
            assert!(outcome.is_ok(), "write {n}: {outcome:?}");
            assert_eq!(kept.as_deref(), Some("ok"), "write {n}");
        } else {
            assert!(is_condition_failed(&outcome), "write {n}: {outcome:?}");
            assert_eq!(kept, None, "write {n} left something behind");
            assert!(store.get(&pk, "B").await.expect("get").is_none());
        }
    }
}

/// Two transactions that each take the lock and write a deployment: one lands whole.
pub async fn lock_and_record_transaction_has_one_winner(store: Arc<dyn ItemStore>) {
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .transact(vec![
                    put(
                        item("ENV#staging", "LOCK", 1, &format!("D#{n}")),
                        Condition::Absent { now: NOW },
                    ),
                    put(
                        item(&format!("D#{n}"), "D", 1, "deployment"),
                        Condition::Absent { now: NOW },
                    ),
                ])
                .await
                .map(|()| n)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => winners.push(n),
            Ok(Err(StoreError::ConditionFailed { .. } | StoreError::Conflict)) => {}
            other => panic!("unexpected transaction outcome: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one transaction must land");
    let lock = store
        .get("ENV#staging", "LOCK")
        .await
        .expect("get")
        .expect("lock");
    assert_eq!(lock.data, format!("D#{}", winners[0]));
    for n in 0..8 {
        let present = store
            .get(&format!("D#{n}"), "D")
            .await
            .expect("get")
            .is_some();
        assert_eq!(
            present,
            n == winners[0],
            "deployment D#{n} present={present}"
        );
    }
}

/// A Check write guards a transaction without writing.
pub async fn check_condition_guards_a_transaction(store: Arc<dyn ItemStore>) {
    store
        .write(put(
            item("D#3", "D", 4, "v4"),
            Condition::Absent { now: NOW },
        ))
        .await
        .expect("create");
    let guarded = store
        .transact(vec![
            Write::Check {
                pk: "D#3".into(),
                sk: "D".into(),
                condition: Condition::Version(3),
            },
            put(item("X#1", "X", 1, "x"), Condition::None),
        ])
        .await;
    assert!(is_condition_failed(&guarded));
    assert!(store.get("X#1", "X").await.expect("get").is_none());
    store
        .transact(vec![
            Write::Check {
                pk: "D#3".into(),
                sk: "D".into(),
                condition: Condition::Version(4),
            },
            put(item("X#1", "X", 1, "x"), Condition::None),
        ])
        .await
        .expect("guard holds");
    assert!(store.get("X#1", "X").await.expect("get").is_some());
}

/// Two writes on one key in one transaction are refused as invalid, as DynamoDB does.
pub async fn duplicate_keys_in_a_transaction_are_invalid(store: Arc<dyn ItemStore>) {
    let result = store
        .transact(vec![
            put(item("D#4", "D", 1, "a"), Condition::None),
            put(item("D#4", "D", 2, "b"), Condition::None),
        ])
        .await;
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "got {result:?}"
    );
    assert!(store.get("D#4", "D").await.expect("get").is_none());
}

/// Deletes honour their condition.
pub async fn conditional_delete_honours_the_version(store: Arc<dyn ItemStore>) {
    store
        .write(put(
            item("L#1", "LOCK", 3, "x"),
            Condition::Absent { now: NOW },
        ))
        .await
        .expect("create");
    let wrong = store
        .write(Write::Delete {
            pk: "L#1".into(),
            sk: "LOCK".into(),
            condition: Condition::Version(2),
        })
        .await;
    assert!(is_condition_failed(&wrong));
    assert!(store.get("L#1", "LOCK").await.expect("get").is_some());
    store
        .write(Write::Delete {
            pk: "L#1".into(),
            sk: "LOCK".into(),
            condition: Condition::Version(3),
        })
        .await
        .expect("delete");
    assert!(store.get("L#1", "LOCK").await.expect("get").is_none());
}

/// Timeline queries are half-open `[from, to)`, ordered, limited, and per timeline.
pub async fn timeline_query_is_ordered_and_half_open(store: Arc<dyn ItemStore>) {
    for (n, ts) in ["0100", "0200", "0300", "0400", "0500"].iter().enumerate() {
        let mut it = item(&format!("D#t{n}"), "D", 1, ts);
        it.timeline = Some(Timeline {
            pk: "ENV#prod#DEPLOYS".into(),
            sk: format!("{ts}#D#t{n}"),
        });
        store
            .write(put(it, Condition::Absent { now: NOW }))
            .await
            .expect("put");
    }
    let mut other = item("D#other", "D", 1, "0250");
    other.timeline = Some(Timeline {
        pk: "ENV#staging#DEPLOYS".into(),
        sk: "0250#D#other".into(),
    });
    store
        .write(put(other, Condition::Absent { now: NOW }))
        .await
        .expect("put");

    let q = |from: &str, to: &str, descending, limit| Query::Timeline {
        pk: "ENV#prod#DEPLOYS".into(),
        from: from.into(),
        to: to.into(),
        descending,
        limit,
    };
    let data = |items: Vec<Item>| items.into_iter().map(|i| i.data).collect::<Vec<_>>();
    assert_eq!(
        data(
            store
                .query(q("0200", "0400", false, None))
                .await
                .expect("q")
        ),
        ["0200", "0300"]
    );
    assert_eq!(
        data(
            store
                .query(q("0000", "9999", true, Some(2)))
                .await
                .expect("q")
        ),
        ["0500", "0400"]
    );
    // An item exactly on `to` is outside the range; one exactly on `from` is inside.
    let on_bounds = store
        .query(q("0100#D#t0", "0300#D#t2", false, None))
        .await
        .expect("q");
    assert_eq!(data(on_bounds), ["0100", "0200"]);
    let on_bounds_desc = store
        .query(q("0100#D#t0", "0300#D#t2", true, None))
        .await
        .expect("q");
    assert_eq!(data(on_bounds_desc), ["0200", "0100"]);
    assert_eq!(
        data(
            store
                .query(q("0000", "0100", false, None))
                .await
                .expect("q")
        ),
        Vec::<String>::new()
    );
}

/// Partition queries return one partition's items with the sort-key prefix, in order.
pub async fn partition_query_filters_by_prefix(store: Arc<dyn ItemStore>) {
    for sk in ["AUDIT#0002", "AUDIT#0001", "DEP", "AUDIT#0003", "AUDIT_%"] {
        store
            .write(put(item("D#5", sk, 1, sk), Condition::None))
            .await
            .expect("put");
    }
    store
        .write(put(item("D#6", "AUDIT#0001", 1, "other"), Condition::None))
        .await
        .expect("put");
    let got = store
        .query(Query::Partition {
            pk: "D#5".into(),
            sk_prefix: "AUDIT#".into(),
            descending: false,
            limit: None,
        })
        .await
        .expect("query");
    let sks: Vec<_> = got.iter().map(|i| i.sk.as_str()).collect();
    assert_eq!(sks, ["AUDIT#0001", "AUDIT#0002", "AUDIT#0003"]);
    let last = store
        .query(Query::Partition {
            pk: "D#5".into(),
            sk_prefix: "AUDIT#".into(),
            descending: true,
            limit: Some(1),
        })
        .await
        .expect("query");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].sk, "AUDIT#0003");
}

/// A segmented scan sees every item exactly once.
pub async fn segmented_scan_sees_every_item_once(store: Arc<dyn ItemStore>) {
    let n = 1_234;
    let writes: Vec<_> = (0..n)
        .map(|i| put(item(&format!("S#{i}"), "S", 1, "x"), Condition::None))
        .collect();
    for chunk in writes.chunks(100) {
        store.transact(chunk.to_vec()).await.expect("bulk put");
    }
    let mut seen = std::collections::HashSet::new();
    let total = 3;
    for segment in 0..total {
        let mut cursor = None;
        loop {
            let (items, next) = store.scan(segment, total, cursor).await.expect("scan");
            for i in items {
                assert!(seen.insert(i.pk.clone()), "{} seen twice", i.pk);
            }
            if next.is_none() {
                break;
            }
            cursor = next;
        }
    }
    assert_eq!(seen.len(), n);
}

/// Runs the whole suite as `#[tokio::test]`s against an adapter.
///
/// ```text
/// testkit::store_contract_tests!(async { std::sync::Arc::new(SqliteStore::in_memory().unwrap()) });
/// ```
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@cases $make;
            create_if_absent_succeeds_once,
            lock_contention_has_one_winner,
            stale_version_update_is_refused,
            concurrent_updates_from_one_version_have_one_winner,
            idempotency_key_replays_until_expiry,
            failed_transaction_leaves_nothing_behind,
            lock_and_record_transaction_has_one_winner,
            check_condition_guards_a_transaction,
            duplicate_keys_in_a_transaction_are_invalid,
            conditional_delete_honours_the_version,
            timeline_query_is_ordered_and_half_open,
            partition_query_filters_by_prefix,
            segmented_scan_sees_every_item_once,
            concurrent_writes_fail_alone,
        );
    };
    (@cases $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store: ::std::sync::Arc<dyn $crate::shipgate::store::ItemStore> = $make.await;
                $crate::contract::$case(store).await;
            }
        )+
    };
}

/// A deliberately broken adapter: it forwards everything but turns version conditions into
/// no conditions (a lost-update bug). The suite must fail against it.
pub struct IgnoresVersions<S>(pub S);

fn drop_version(c: Condition) -> Condition {
    match c {
        Condition::Version(_) => Condition::None,
        other => other,
    }
}

fn strip(w: Write) -> Write {
    match w {
        Write::Put { item, condition } => Write::Put {
            item,
            condition: drop_version(condition),
        },
        Write::Delete { pk, sk, condition } => Write::Delete {
            pk,
            sk,
            condition: drop_version(condition),
        },
        Write::Check { pk, sk, condition } => Write::Check {
            pk,
            sk,
            condition: drop_version(condition),
        },
    }
}

#[async_trait]
impl<S: ItemStore> ItemStore for IgnoresVersions<S> {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.0.get(pk, sk).await
    }
    async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.0.write(strip(write)).await
    }
    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.0
            .transact(writes.into_iter().map(strip).collect())
            .await
    }
    async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError> {
        self.0.query(query).await
    }
    async fn scan(
        &self,
        segment: u32,
        total: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        self.0.scan(segment, total, cursor).await
    }
}
