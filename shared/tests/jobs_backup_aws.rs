//! Backup jobs against AWS APIs: a DynamoDB table of every attribute type backed up with KMS
//! data keys into S3, restored into a table created with `create_like`, and a restore drill
//! on a scratch DynamoDB table.
//!
//! Needs the emulator: `make test` starts moto and exports `AWS_ENDPOINT_URL` and test
//! credentials. Every test uses its own tables, bucket and key, so tests run in parallel.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, PutRequest, ScalarAttributeType, WriteRequest,
};
use shipgate::aws::dynamodb::table::{item_to_json, DynamoTable};
use shipgate::aws::s3::s3_client;
use shipgate::aws::KmsKeys;
use shipgate::aws::S3Objects;
use shipgate::backup::operations::{self as backup, BackupDeps, JobError};
use shipgate::backup::tables::{ScratchTable, TableError, TableSink};
use shipgate::backup::{KeyError, Manifest};

const ITEMS: usize = 10_000;

/// AWS configuration for the emulator. Fails loudly without one: a test that silently passed
/// would hide a broken adapter.
async fn emulator() -> aws_config::SdkConfig {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "backup job AWS tests: needs the emulator: run make test \
         (or start moto and export AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)"
    );
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

async fn fresh_deps(config: &aws_config::SdkConfig) -> BackupDeps {
    let bucket = format!("shipgate-jobs-test-{}", uuid::Uuid::new_v4());
    let s3 = s3_client(config);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the test bucket");
    let kms = aws_sdk_kms::Client::new(config);
    let key = kms
        .create_key()
        .description("shipgate backup job test")
        .send()
        .await
        .expect("create a KMS key");
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    BackupDeps::new(
        Arc::new(S3Objects::new(s3, bucket)),
        Arc::new(KmsKeys::new(kms, key_id)),
        "backups",
    )
}

/// A table keyed `pk` (S) + `sk` (N) with a GSI on `owner` (S), on-demand billing.
async fn create_source_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    let attr = |name: &str, t| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(t)
            .build()
            .unwrap()
    };
    let key = |name: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::N))
        .attribute_definitions(attr("owner", ScalarAttributeType::S))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by-owner")
                .key_schema(key("owner", KeyType::Hash))
                .key_schema(key("sk", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create the source table");
}

/// Item `i`, using every attribute type across the table.
fn mixed_item(i: usize) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("item#{}", i / 4)),
        ),
        ("sk".to_owned(), AttributeValue::N((i % 4).to_string())),
        (
            "owner".to_owned(),
            AttributeValue::S(format!("team-{}", i % 13)),
        ),
        (
            "note".to_owned(),
            AttributeValue::S(format!("line one\nline \"two\" é {i}")),
        ),
        ("amount".to_owned(), AttributeValue::N(format!("{}.25", i))),
        (
            "blob".to_owned(),
            AttributeValue::B(Blob::new(vec![(i % 256) as u8, 0, 255, 10])),
        ),
        ("active".to_owned(), AttributeValue::Bool(i % 2 == 0)),
    ]);
    if i % 5 == 0 {
        item.insert("gone".to_owned(), AttributeValue::Null(true));
    }
    item.insert(
        "list".to_owned(),
        AttributeValue::L(vec![
            AttributeValue::S("a".into()),
            AttributeValue::N(i.to_string()),
            AttributeValue::M(HashMap::from([(
                "deep".to_owned(),
                AttributeValue::Bool(true),
            )])),
        ]),
    );
    item.insert(
        "map".to_owned(),
        AttributeValue::M(HashMap::from([
            ("k".to_owned(), AttributeValue::S("v".into())),
            (
                "nested".to_owned(),
                AttributeValue::L(vec![AttributeValue::Null(true)]),
            ),
        ])),
    );
    item.insert(
        "tags".to_owned(),
        AttributeValue::Ss(vec!["red".into(), format!("t{}", i % 3)]),
    );
    item.insert(
        "scores".to_owned(),
        AttributeValue::Ns(vec!["1".into(), format!("{}", 100 + i % 7)]),
    );
    item.insert(
        "blobs".to_owned(),
        AttributeValue::Bs(vec![
            Blob::new(vec![1, 2]),
            Blob::new(vec![(i % 200) as u8 + 3]),
        ]),
    );
    item
}

/// Seeds with the raw client, independently of the code under test.
async fn seed(client: &aws_sdk_dynamodb::Client, table: &str) {
    let items: Vec<_> = (0..ITEMS).map(mixed_item).collect();
    for batch in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = batch
            .iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item.clone()))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        while !requests.is_empty() {
            let out = client
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .expect("seed the source table");
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
        }
    }
}

/// Every item of a table, in canonical DynamoDB JSON.
async fn canonical_items(client: &aws_sdk_dynamodb::Client, table: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut pages = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for item in page.expect("scan").items() {
            out.insert(item_to_json(item).unwrap().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_table_backs_up_with_kms_to_s3_and_restores_into_a_table_created_like_it() {
    let config = emulator().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let deps = fresh_deps(&config).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let source_name = format!("jobs-src-{}", &run[..12]);
    create_source_table(&client, &source_name).await;
    seed(&client, &source_name).await;
    let expected = canonical_items(&client, &source_name).await;
    assert_eq!(expected.len(), ITEMS);

    let source = DynamoTable::new(client.clone(), &source_name);
    let now = jiff::Timestamp::now();
    let manifest = backup::backup_table(&deps, &source, now, None)
        .await
        .unwrap();
    assert_eq!(manifest.items, ITEMS as u64);
    assert_eq!(
        manifest.key.provider,
        shipgate::backup::KeyProviderKind::Kms
    );
    assert_eq!(
        backup::list(&deps, Some(&source_name)).await.unwrap(),
        vec![manifest.clone()]
    );

    let target_name = format!("jobs-dst-{}", &run[..12]);
    let target = DynamoTable::create_like(client.clone(), &source_name, &target_name)
        .await
        .unwrap();
    let described = client
        .describe_table()
        .table_name(&target_name)
        .send()
        .await
        .unwrap();
    let table = described.table().unwrap();
    assert_eq!(table.key_schema().len(), 2);
    assert_eq!(
        table.global_secondary_indexes()[0].index_name(),
        Some("by-owner")
    );
    assert_eq!(
        table.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );

    let report = backup::restore(&deps, &manifest.backup_id, &target, false, None)
        .await
        .unwrap();
    assert_eq!(report.items, ITEMS as u64);
    assert_eq!(canonical_items(&client, &target_name).await, expected);

    // A second restore into the now non-empty table is refused.
    let err = backup::restore(&deps, &manifest.backup_id, &target, false, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JobError::RestoreRefused { source, .. } if matches!(**source, JobError::TargetNotEmpty { .. })),
        "{err:?}"
    );

    // A drill into a scratch table created like the source, dropped afterwards.
    let scratch_name = format!("jobs-drill-{}", &run[..12]);
    let drill_client = client.clone();
    let drill_source = source_name.clone();
    let drill_scratch = scratch_name.clone();
    let drill = backup::restore_drill(
        &deps,
        &source_name,
        move |_manifest: Manifest| async move {
            let scratch =
                DynamoTable::create_like(drill_client, &drill_source, &drill_scratch).await?;
            Ok::<Box<dyn ScratchTable>, TableError>(Box::new(scratch))
        },
        now + jiff::SignedDuration::from_secs(600),
    )
    .await
    .unwrap();
    assert!(drill.ok, "{drill:?}");
    assert_eq!(drill.restored_items, ITEMS as u64);
    assert!(drill.sha256_ok);
    assert_eq!(drill.rpo_seconds, 600);
    assert!(drill.scratch_discarded);
    let gone = client
        .describe_table()
        .table_name(&scratch_name)
        .send()
        .await;
    assert!(gone.is_err(), "the scratch table was deleted");

    for name in [&source_name, &target_name] {
        DynamoTable::new(client.clone(), name.as_str())
            .delete_table()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn restore_refuses_a_kms_backup_whose_encryption_context_was_edited() {
    let config = emulator().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let deps = fresh_deps(&config).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let source_name = format!("jobs-ctx-{}", &run[..12]);
    create_source_table(&client, &source_name).await;
    let source = DynamoTable::new(client.clone(), &source_name);
    source
        .write_batch(
            (0..40)
                .map(|i| item_to_json(&mixed_item(i)).unwrap().to_string())
                .collect(),
        )
        .await
        .unwrap();
    let manifest = backup::backup_table(&deps, &source, jiff::Timestamp::now(), None)
        .await
        .unwrap();
    assert_eq!(manifest.items, 40);

    let mut edited = manifest.clone();
    edited
        .key
        .encryption_context
        .insert("shipgate:environment".into(), "production".into());
    deps.objects
        .put_small(
            &deps.manifest_key(&manifest.source, &manifest.backup_id),
            edited.to_json().unwrap().into(),
        )
        .await
        .unwrap();

    let target = DynamoTable::create_like(
        client.clone(),
        &source_name,
        &format!("jobs-ctx-dst-{}", &run[..12]),
    )
    .await
    .unwrap();
    let err = backup::restore(&deps, &manifest.backup_id, &target, false, None)
        .await
        .unwrap_err();
    let JobError::RestoreRefused { source: cause, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            **cause,
            JobError::Key {
                source: KeyError::UnwrapRefused,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(target.is_empty().await.unwrap(), "nothing was written");
    assert_eq!(target.count().await.unwrap(), 0);

    target.delete_table().await.unwrap();
    source.delete_table().await.unwrap();
}

#[tokio::test]
async fn a_dynamodb_restore_target_can_be_emptied_again() {
    let config = emulator().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("jobs-clear-{}", &run[..12]);
    create_source_table(&client, &name).await;
    seed(&client, &name).await;
    let table = DynamoTable::new(client.clone(), &name);
    assert_eq!(table.count().await.unwrap(), ITEMS as u64);

    // What a restore whose writing pass failed part-way calls on a target that was empty.
    assert!(
        table.clear().await.unwrap(),
        "a DynamoDB table can be emptied"
    );
    assert_eq!(table.count().await.unwrap(), 0);
    assert!(table.is_empty().await.unwrap());
}
