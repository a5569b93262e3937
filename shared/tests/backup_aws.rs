//! Backups against AWS APIs: KMS data keys with encryption context, and S3 multipart upload,
//! streaming read, verify, list and delete.
//!
//! Needs the emulator: `make test` starts moto and exports `AWS_ENDPOINT_URL` and test
//! credentials. Every test uses its own bucket or key, so tests run in parallel.

use std::io::Read;
use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt;
use rand::RngCore;
use secrecy::ExposeSecret;
use shipgate::aws::s3::s3_client;
use shipgate::aws::KmsKeys;
use shipgate::aws::S3Objects;
use shipgate::backup::{
    backup_context, key_check, verify, BackupObjects, BackupReader, BackupWriter, DataKeyProvider,
    KeyError, KeyInfo, KeyProviderKind, Manifest, ObjectError, UploadWriter,
};

/// AWS configuration for the emulator. Fails loudly without one: a test that silently passed
/// would hide a broken adapter.
async fn emulator() -> aws_config::SdkConfig {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "backup AWS tests: needs the emulator: run make test \
         (or start moto and export AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)"
    );
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

async fn fresh_bucket(config: &aws_config::SdkConfig) -> S3Objects {
    let bucket = format!("shipgate-backup-test-{}", uuid::Uuid::new_v4());
    let client = s3_client(config);
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the test bucket");
    S3Objects::new(client, bucket)
}

async fn fresh_kms_key(config: &aws_config::SdkConfig) -> KmsKeys {
    let client = aws_sdk_kms::Client::new(config);
    let created = client
        .create_key()
        .description("shipgate backup test")
        .send()
        .await
        .expect("create a KMS key");
    let key_id = created.key_metadata().unwrap().key_id().to_owned();
    KmsKeys::new(client, key_id)
}

#[tokio::test]
async fn kms_data_key_unwraps_only_with_its_encryption_context() {
    let config = emulator().await;
    let kms = fresh_kms_key(&config).await;
    let context = backup_context("shipgate", "bk-kms-1");

    let key = kms.generate(&context).await.unwrap();
    assert_eq!(kms.provider(), "kms");
    assert!(!key.wrapped.is_empty());
    assert_ne!(key.wrapped.as_slice(), key.plaintext.expose_secret());

    let unwrapped = kms
        .unwrap(&key.wrapped, &key.key_id, &context)
        .await
        .unwrap();
    assert_eq!(unwrapped.expose_secret(), key.plaintext.expose_secret());

    let other = kms.generate(&context).await.unwrap();
    assert_ne!(
        other.plaintext.expose_secret(),
        key.plaintext.expose_secret()
    );

    for wrong in [
        backup_context("shipgate", "bk-kms-2"),
        backup_context("other-table", "bk-kms-1"),
    ] {
        let err = kms
            .unwrap(&key.wrapped, &key.key_id, &wrong)
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::UnwrapRefused), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_multipart_backup_streams_back_and_verifies() {
    let config = emulator().await;
    let objects = fresh_bucket(&config).await;
    let kms = fresh_kms_key(&config).await;
    let backup_id = format!("bk-{}", uuid::Uuid::new_v4());
    let context = backup_context("shipgate", &backup_id);
    let data_key = kms.generate(&context).await.unwrap();
    let key = *data_key.plaintext.expose_secret();
    let store: Arc<dyn BackupObjects> = Arc::new(objects.clone());

    // Random base64 barely compresses, so 15 MB of records give more than 10 MiB encrypted:
    // at least two 8 MiB parts.
    let object_key = format!("backups/shipgate/{backup_id}.sgbk");
    let upload = UploadWriter::start(store.clone(), object_key.clone());
    let id = backup_id.clone();
    let (stats, uploaded) = tokio::task::spawn_blocking(move || {
        let mut upload = upload;
        let mut writer = BackupWriter::new(&mut upload, &key, &id).unwrap();
        let mut noise = [0u8; 750];
        for i in 0..20_000 {
            rand::thread_rng().fill_bytes(&mut noise);
            let b64 = base64::engine::general_purpose::STANDARD.encode(noise);
            let record = format!(r#"{{"pk":"item#{i}","blob":"{b64}"}}"#);
            writer.write_record(record.as_bytes()).unwrap();
        }
        let stats = writer.finish().unwrap();
        (stats, upload.finish().unwrap())
    })
    .await
    .unwrap();
    assert!(stats.encrypted_bytes > 10 << 20, "{stats:?}");
    assert_eq!(uploaded, stats.encrypted_bytes);

    // Multipart objects have an ETag of the form "<md5 of md5s>-<part count>".
    let head = objects
        .client()
        .head_object()
        .bucket(objects.bucket())
        .key(&object_key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(stats.encrypted_bytes as i64));
    let etag = head.e_tag().unwrap().trim_matches('"').to_owned();
    assert!(
        etag.ends_with("-2"),
        "expected a two-part upload, ETag {etag}"
    );

    let manifest = Manifest::new(
        &backup_id,
        "shipgate",
        jiff::Timestamp::now(),
        shipgate::backup::DEFAULT_CHUNK_SIZE,
        &stats,
        KeyInfo {
            provider: KeyProviderKind::Kms,
            key_id: data_key.key_id.clone(),
            wrapped_key_b64: base64::engine::general_purpose::STANDARD.encode(&data_key.wrapped),
            encryption_context: context.clone(),
            key_check: key_check(&key),
        },
    );
    let manifest_key = format!("backups/shipgate/{backup_id}.manifest.json");
    store
        .put_small(&manifest_key, manifest.to_json().unwrap().into())
        .await
        .unwrap();

    // Restore side: manifest and key from the store and KMS, object streamed from S3.
    let manifest = Manifest::parse(&store.get_small(&manifest_key).await.unwrap()).unwrap();
    let restored_key = *kms
        .unwrap(
            &manifest.key.wrapped_key().unwrap(),
            &manifest.key.key_id,
            &manifest.key.encryption_context,
        )
        .await
        .unwrap()
        .expose_secret();
    let reader = store.get(&object_key).await.unwrap();
    let id = backup_id.clone();
    let expected = manifest.clone();
    let report = tokio::task::spawn_blocking(move || verify(reader, &restored_key, &id, &expected))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report, stats);

    let reader = store.get(&object_key).await.unwrap();
    let id = backup_id.clone();
    let first_keys = tokio::task::spawn_blocking(move || {
        let mut backup = BackupReader::new(reader, &restored_key, &id).unwrap();
        let mut pks = Vec::new();
        let mut record = Vec::new();
        while backup.read_record(&mut record).unwrap() {
            let value: serde_json::Value = serde_json::from_slice(&record).unwrap();
            pks.push(value["pk"].as_str().unwrap().to_owned());
        }
        pks
    })
    .await
    .unwrap();
    assert_eq!(first_keys.len(), 20_000);
    assert_eq!(first_keys[0], "item#0");
    assert_eq!(first_keys[19_999], "item#19999");
}

#[tokio::test]
async fn s3_upload_whose_source_fails_is_aborted_and_stores_nothing() {
    let config = emulator().await;
    let objects = fresh_bucket(&config).await;
    // Nine 1 MiB pieces (one full part is uploaded, so a multipart upload exists), then the
    // source fails, as a backup writer does when the table scan breaks.
    let mut noise = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut noise);
    let piece = bytes::Bytes::from(noise);
    let mut items: Vec<std::io::Result<bytes::Bytes>> = (0..9).map(|_| Ok(piece.clone())).collect();
    items.push(Err(std::io::Error::other("scan failed")));
    let err = objects
        .put_stream("backups/failed.sgbk", futures::stream::iter(items).boxed())
        .await
        .unwrap_err();
    assert!(matches!(err, ObjectError::Source { .. }), "{err:?}");

    let uploads = objects
        .client()
        .list_multipart_uploads()
        .bucket(objects.bucket())
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "the multipart upload was not aborted"
    );
    assert!(objects.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_lists_by_prefix_and_deletes() {
    let config = emulator().await;
    let objects = fresh_bucket(&config).await;
    for key in ["backups/a/1.sgbk", "backups/a/2.sgbk", "backups/b/1.sgbk"] {
        objects
            .put_small(key, key.as_bytes().to_vec().into())
            .await
            .unwrap();
    }
    let listed = objects.list("backups/a/").await.unwrap();
    let keys: Vec<_> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["backups/a/1.sgbk", "backups/a/2.sgbk"]);
    assert_eq!(listed[0].size, "backups/a/1.sgbk".len() as u64);

    // A small object read through the streaming reader.
    let reader = objects.get("backups/b/1.sgbk").await.unwrap();
    let body = tokio::task::spawn_blocking(move || {
        let mut body = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap();
    assert_eq!(body, "backups/b/1.sgbk");

    objects.delete("backups/a/1.sgbk").await.unwrap();
    let keys: Vec<_> = objects
        .list("backups/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["backups/a/2.sgbk", "backups/b/1.sgbk"]);
    assert!(matches!(
        objects.get("backups/a/1.sgbk").await,
        Err(ObjectError::NotFound { .. })
    ));
    assert!(matches!(
        objects.get_small("backups/a/1.sgbk").await,
        Err(ObjectError::NotFound { .. })
    ));
}
