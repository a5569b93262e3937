//! The migration on AWS: the committed version-0 store (`shared/tests/data/store-v0/`, a whole
//! `shipgate demo` written by the environment-keyed layout) loaded into a DynamoDB table on
//! moto, moved by the scheduled-jobs function's `migrate` job, and by the sweeper when nobody
//! invoked that job.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::json;
use shipgate::aws::dynamodb::DynamoStore;
use shipgate::domain::deployment::EnvironmentHeads;
use shipgate::domain::policy::Policy;
use shipgate::jobs::{JobContext, MetricSink};
use shipgate::outbound::http_client;
use shipgate::service::Services;
use shipgate::store::migrate::{schema_version, SCHEMA_VERSION};
use shipgate::store::{Condition, Item, ItemStore, Repo, Write};
use testkit::{ManualClock, RecordingPublisher};

const REPO: &str = "acme/api";

fn v0_items() -> Vec<Item> {
    let path = testkit::workspace_root().join("shared/tests/data/store-v0/demo.items.ndjson");
    let text = std::fs::read_to_string(&path).expect("the v0 fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an item"))
        .collect()
}

/// A fresh table on the emulator holding the v0 store, and a job context over it.
async fn v0_table() -> (JobContext, Arc<DynamoStore>) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "needs the DynamoDB emulator: run make test (it starts moto and exports AWS_ENDPOINT_URL)"
    );
    let store =
        Arc::new(DynamoStore::from_env(format!("shipgate-test-{}", uuid::Uuid::new_v4())).await);
    store.create_table_if_missing().await.expect("table");
    for item in v0_items() {
        store
            .write(Write::Put {
                item,
                condition: Condition::None,
            })
            .await
            .expect("load");
    }
    let policy = std::fs::read_to_string(
        testkit::workspace_root().join("shared/tests/data/store-v0/demo.policy.toml"),
    )
    .expect("policy");
    let services = Services {
        repo: Repo::new(store.clone()),
        policy: Arc::new(Policy::parse("demo.policy.toml", &policy).expect("policy")),
        github: None,
        publisher: Arc::new(RecordingPublisher::default()),
        clock: Arc::new(ManualClock::new(Timestamp::now())),
        policy_source: None,
    };
    let ctx =
        JobContext::new(services, http_client().expect("http")).with_metrics(MetricSink::memory());
    (ctx, store)
}

fn v0_heads(env: &str) -> EnvironmentHeads {
    let item = v0_items()
        .into_iter()
        .find(|i| i.pk == format!("ENV#{env}") && i.sk == "HEADS")
        .expect("v0 heads");
    serde_json::from_str(&item.data).expect("heads")
}

async fn assert_migrated(repo: &Repo, store: &DynamoStore) {
    assert_eq!(schema_version(repo).await.unwrap(), SCHEMA_VERSION);
    for env in ["staging", "production"] {
        let scope = testkit::scope(REPO, env);
        let heads = repo.heads(&scope).await.unwrap();
        assert_eq!(heads.current, v0_heads(env).current, "{env}");
        assert_eq!(
            heads.last_known_good,
            v0_heads(env).last_known_good,
            "{env}"
        );
        let repos = repo.repositories_in(env).await.unwrap();
        assert_eq!(repos.iter().map(|r| r.as_str()).collect::<Vec<_>>(), [REPO]);
        assert!(store
            .get(&format!("ENV#{env}"), "HEADS")
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test]
async fn the_migrate_job_moves_a_v0_table_once_and_then_has_nothing_to_do() {
    let (ctx, store) = v0_table().await;
    let repo = ctx.services.repo.clone();
    assert_eq!(schema_version(&repo).await.unwrap(), 0);

    let first = scheduled_jobs::handle(&ctx, &json!({"job": "migrate"}), Some("req-1"))
        .await
        .expect("migrate");
    assert!(first.ok, "{first:?}");
    assert_eq!(
        first.summary,
        "schema version 0 -> 1: 2 records moved, 0 dropped, 2 repository index entries"
    );
    assert_migrated(&repo, &store).await;

    // Invoked again (another request): nothing to do.
    let second = scheduled_jobs::handle(&ctx, &json!({"job": "migrate"}), Some("req-2"))
        .await
        .expect("migrate");
    assert_eq!(second.summary, "schema version 1: nothing to do");
    assert_migrated(&repo, &store).await;
}

#[tokio::test]
async fn a_sweep_migrates_a_table_nobody_migrated_and_only_once() {
    let (ctx, store) = v0_table().await;
    let repo = ctx.services.repo.clone();
    let report = shipgate::jobs::sweeper::sweep(
        &ctx.services,
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(
        report.migrated.as_deref(),
        Some("schema version 0 -> 1: 2 records moved, 0 dropped, 2 repository index entries"),
        "{report:?}"
    );
    assert_migrated(&repo, &store).await;
    let again = shipgate::jobs::sweeper::sweep(
        &ctx.services,
        &shipgate::service::analysis::Sources::default(),
    )
    .await;
    assert_eq!(again.migrated, None, "{again:?}");
}
