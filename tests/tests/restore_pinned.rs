//! Restores write what they verified: the writing pass reads exactly the version of the backup
//! object that the verification pass read, on S3 (its `VersionId`, or its `ETag` as
//! `If-Match`) and in the self-hosted binary's directory store (the file's identity). An object
//! replaced between the two passes makes the restore fail naming the object, and nothing is
//! written; a read that fails part-way through the writing pass leaves no partial restore.
//!
//! The replacement is arranged through a `BackupObjects` wrapper that acts just before the
//! second time the backup object is opened (the writing pass). The S3 tests need the emulator:
//! `make test` starts moto and exports `AWS_ENDPOINT_URL` and test credentials; each test uses
//! its own bucket.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use jiff::Timestamp;
use secrecy::ExposeSecret;
use shipgate::aws::s3::s3_client;
use shipgate::aws::S3Objects;
use shipgate::backup::operations::{self as backup, BackupDeps, JobError};
use shipgate::backup::tables::{StoreTable, TableSink};
use shipgate::backup::{
    BackupObjects, BackupWriter, Manifest, ObjectError, ObjectInfo, ObjectVersion, MIN_CHUNK_SIZE,
};
use shipgate::embedded::{Durability, LocalDirObjects, LocalKeyFile, SqliteStore};
use shipgate::store::{Condition, Item, Write};

const PREFIX: &str = "backups";
const ITEMS: usize = 4000;

// ---------------------------------------------------------------------------------------------
// A store that acts just before the writing pass opens the backup object

type Action = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// What happens when the backup object is opened the second time.
enum Hook {
    None,
    /// Runs before the open (replaces the object, deletes a version).
    Before(Action),
    /// The read fails with a connection reset after this many bytes.
    FailAfter(usize),
}

struct SecondOpen {
    inner: Arc<dyn BackupObjects>,
    opens: AtomicUsize,
    hook: Mutex<Hook>,
}

impl SecondOpen {
    fn new(inner: Arc<dyn BackupObjects>) -> Arc<Self> {
        Arc::new(SecondOpen {
            inner,
            opens: AtomicUsize::new(0),
            hook: Mutex::new(Hook::None),
        })
    }

    fn set(&self, hook: Hook) {
        *self.hook.lock().expect("hook") = hook;
    }

    /// Runs the hook on the second open of a backup stream object; returns how many bytes the
    /// read may deliver before failing, if it is to fail.
    async fn before_open(&self, key: &str) -> Option<usize> {
        if !key.ends_with(".sgbk") || self.opens.fetch_add(1, Ordering::SeqCst) != 1 {
            return None;
        }
        let hook = std::mem::replace(&mut *self.hook.lock().expect("hook"), Hook::None);
        match hook {
            Hook::None => None,
            Hook::Before(action) => {
                action().await;
                None
            }
            Hook::FailAfter(n) => Some(n),
        }
    }
}

/// A read that fails after `left` bytes.
struct FailingRead {
    inner: Box<dyn Read + Send>,
    left: usize,
}

impl Read for FailingRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            ));
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        self.left -= n;
        Ok(n)
    }
}

fn failing(reader: Box<dyn Read + Send>, fail_after: Option<usize>) -> Box<dyn Read + Send> {
    match fail_after {
        Some(left) => Box::new(FailingRead {
            inner: reader,
            left,
        }),
        None => reader,
    }
}

#[async_trait]
impl BackupObjects for SecondOpen {
    async fn put_stream(
        &self,
        key: &str,
        pieces: BoxStream<'static, io::Result<Bytes>>,
    ) -> Result<u64, ObjectError> {
        self.inner.put_stream(key, pieces).await
    }

    async fn put_small(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.inner.put_small(key, bytes).await
    }

    async fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
        let fail_after = self.before_open(key).await;
        Ok(failing(self.inner.get(key).await?, fail_after))
    }

    async fn get_pinned(
        &self,
        key: &str,
    ) -> Result<(Box<dyn Read + Send>, ObjectVersion), ObjectError> {
        let fail_after = self.before_open(key).await;
        let (reader, version) = self.inner.get_pinned(key).await?;
        Ok((failing(reader, fail_after), version))
    }

    async fn get_exact(
        &self,
        key: &str,
        version: &ObjectVersion,
    ) -> Result<Box<dyn Read + Send>, ObjectError> {
        let fail_after = self.before_open(key).await;
        Ok(failing(
            self.inner.get_exact(key, version).await?,
            fail_after,
        ))
    }

    async fn get_small(&self, key: &str) -> Result<Bytes, ObjectError> {
        self.inner.get_small(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.inner.delete(key).await
    }
}

// ---------------------------------------------------------------------------------------------
// Tables and backups

fn item(i: usize, data: &str) -> Item {
    // Noise that barely compresses, so that a backup spans many chunks.
    let noise: String = (0..4u64)
        .map(|k| {
            format!(
                "{:016x}",
                (i as u64 * 4 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            )
        })
        .collect();
    Item {
        pk: format!("DEP#{i:05}"),
        sk: "V#001".into(),
        version: 1,
        expires_at: None,
        timeline: None,
        data: format!(r#"{{"n":{i},"what":"{data}","noise":"{noise}"}}"#),
    }
}

fn table(dir: &Path, file: &str) -> StoreTable {
    let store = SqliteStore::open(dir.join(file), Durability::Normal).expect("open a store");
    StoreTable::new("shipgate", Arc::new(store))
}

async fn all_items(table: &StoreTable) -> Vec<Item> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let (items, next) = table.store().scan(0, 1, cursor).await.expect("scan");
        out.extend(items);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
    out
}

/// Backs up `ITEMS` items from a source of its own.
async fn backed_up(deps: &BackupDeps, dir: &Path) -> (Manifest, Vec<Item>) {
    let source = table(dir, "source.db");
    let writes: Vec<Write> = (0..ITEMS)
        .map(|i| Write::Put {
            item: item(i, "original"),
            condition: Condition::None,
        })
        .collect();
    for batch in writes.chunks(100) {
        source
            .store()
            .transact(batch.to_vec())
            .await
            .expect("fill the source");
    }
    let manifest = backup::backup_table(deps, &source, Timestamp::now(), None)
        .await
        .expect("backup");
    assert!(manifest.chunks > 4, "{manifest:?}");
    (manifest, all_items(&source).await)
}

/// Another stream for the same backup id under the same data key, holding other records:
/// every chunk authenticates, so only the object's identity tells it from the original.
async fn forged(deps: &BackupDeps, manifest: &Manifest) -> Bytes {
    let wrapped = manifest.key.wrapped_key().expect("wrapped key");
    let key = deps
        .keys
        .unwrap(
            &wrapped,
            &manifest.key.key_id,
            &manifest.key.encryption_context,
        )
        .await
        .expect("unwrap the data key");
    let mut out = Vec::new();
    let mut writer = BackupWriter::with_chunk_size(
        &mut out,
        key.expose_secret(),
        &manifest.backup_id,
        manifest.chunk_size,
    )
    .expect("writer");
    for i in 0..ITEMS {
        let record = serde_json::to_string(&item(i, "forged")).expect("record");
        writer.write_record(record.as_bytes()).expect("write");
    }
    writer.finish().expect("finish");
    Bytes::from(out)
}

fn replace_with(objects: Arc<dyn BackupObjects>, key: String, bytes: Bytes) -> Action {
    Box::new(move || {
        Box::pin(async move {
            objects
                .put_small(&key, bytes)
                .await
                .expect("replace the backup object");
        })
    })
}

fn chain(err: &JobError) -> String {
    let mut line = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(e) = cause {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cause = e.source();
    }
    line
}

/// The restore was refused before writing, because the object changed after verification.
fn assert_changed_refusal(err: &JobError, manifest: &Manifest, object_key: &str) {
    let line = chain(err);
    assert!(
        line.starts_with(&format!(
            "restore of backup {} refused before writing anything: object {object_key} changed \
             after verification: ",
            manifest.backup_id
        )),
        "{line}"
    );
    let JobError::RestoreRefused { source, .. } = err else {
        panic!("expected a refusal, got {err:?}")
    };
    assert!(
        matches!(**source, JobError::ChangedAfterVerification(_)),
        "{source:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// S3

struct S3Fixture {
    dir: tempfile::TempDir,
    s3: S3Objects,
    objects: Arc<SecondOpen>,
    deps: BackupDeps,
}

async fn s3_fixture(versioned: bool) -> S3Fixture {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "restore_pinned: needs the S3 emulator: run make test (or start moto and export \
             AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)"
        )
    });
    let sdk = shipgate::aws::sdk_config().await;
    let bucket = format!("shipgate-restore-pinned-{}", uuid::Uuid::new_v4());
    let client = s3_client(&sdk);
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the test bucket");
    if versioned {
        // The emulator takes the request unsigned; this crate does not name S3 SDK types.
        let url = format!("{}/{bucket}?versioning", endpoint.trim_end_matches('/'));
        let resp = reqwest::Client::new()
            .put(url)
            .body(
                r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#,
            )
            .send()
            .await
            .expect("enable versioning");
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
    }
    let s3 = S3Objects::new(client, bucket);
    let objects = SecondOpen::new(Arc::new(s3.clone()));
    let dir = tempfile::tempdir().expect("tempdir");
    let deps = BackupDeps::new(
        objects.clone(),
        Arc::new(LocalKeyFile::new(dir.path().join("master.key"))),
        PREFIX,
    )
    .with_chunk_size(MIN_CHUNK_SIZE);
    S3Fixture {
        dir,
        s3,
        objects,
        deps,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_replaced_after_verification_is_refused_and_nothing_is_written() {
    let fx = s3_fixture(false).await;
    let (manifest, _) = backed_up(&fx.deps, fx.dir.path()).await;
    let key = fx.deps.object_key("shipgate", &manifest.backup_id);
    let replacement = forged(&fx.deps, &manifest).await;
    fx.objects.set(Hook::Before(replace_with(
        Arc::new(fx.s3.clone()),
        key.clone(),
        replacement,
    )));
    let target = table(fx.dir.path(), "target.db");

    let err = backup::restore(&fx.deps, &manifest.backup_id, &target, false, None)
        .await
        .expect_err("the object changed after verification");
    assert_changed_refusal(&err, &manifest, &key);
    assert!(
        chain(&err)
            .contains("it was replaced (S3 answered 412 PreconditionFailed) (verified: ETag"),
        "{}",
        chain(&err)
    );
    assert_eq!(target.count().await.expect("count"), 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_versioned_object_replaced_after_verification_restores_the_verified_version() {
    let fx = s3_fixture(true).await;
    let (manifest, original) = backed_up(&fx.deps, fx.dir.path()).await;
    let key = fx.deps.object_key("shipgate", &manifest.backup_id);
    let replacement = forged(&fx.deps, &manifest).await;
    fx.objects.set(Hook::Before(replace_with(
        Arc::new(fx.s3.clone()),
        key.clone(),
        replacement,
    )));
    let target = table(fx.dir.path(), "target.db");

    let report = backup::restore(&fx.deps, &manifest.backup_id, &target, false, None)
        .await
        .expect("the verified version still exists");
    assert_eq!(report.items, ITEMS as u64);
    assert_eq!(all_items(&target).await, original, "the verified records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_versioned_object_whose_verified_version_was_deleted_is_refused_and_nothing_is_written()
{
    let fx = s3_fixture(true).await;
    let (manifest, _) = backed_up(&fx.deps, fx.dir.path()).await;
    let key = fx.deps.object_key("shipgate", &manifest.backup_id);
    let head = fx
        .s3
        .client()
        .head_object()
        .bucket(fx.s3.bucket())
        .key(&key)
        .send()
        .await
        .expect("head");
    let verified = head.version_id().expect("a versioned object").to_owned();
    let replacement = forged(&fx.deps, &manifest).await;
    let (s3, object_key) = (fx.s3.clone(), key.clone());
    fx.objects.set(Hook::Before(Box::new(move || {
        Box::pin(async move {
            s3.put_small(&object_key, replacement)
                .await
                .expect("replace");
            s3.client()
                .delete_object()
                .bucket(s3.bucket())
                .key(&object_key)
                .version_id(&verified)
                .send()
                .await
                .expect("delete the verified version");
        })
    })));
    let target = table(fx.dir.path(), "target.db");

    let err = backup::restore(&fx.deps, &manifest.backup_id, &target, false, None)
        .await
        .expect_err("the verified version is gone");
    assert_changed_refusal(&err, &manifest, &key);
    assert!(
        chain(&err).contains("the verified version no longer exists (verified: version id"),
        "{}",
        chain(&err)
    );
    assert_eq!(target.count().await.expect("count"), 0, "nothing written");
}

// ---------------------------------------------------------------------------------------------
// The directory store

struct DirFixture {
    dir: tempfile::TempDir,
    local: LocalDirObjects,
    objects: Arc<SecondOpen>,
    deps: BackupDeps,
}

fn dir_fixture() -> DirFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalDirObjects::new(dir.path().join("backups"));
    let objects = SecondOpen::new(Arc::new(local.clone()));
    let deps = BackupDeps::new(
        objects.clone(),
        Arc::new(LocalKeyFile::new(dir.path().join("backup.key"))),
        "",
    )
    .with_chunk_size(MIN_CHUNK_SIZE);
    DirFixture {
        dir,
        local,
        objects,
        deps,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_object_replaced_after_verification_is_refused_and_nothing_is_written() {
    let fx = dir_fixture();
    let (manifest, _) = backed_up(&fx.deps, fx.dir.path()).await;
    let key = fx.deps.object_key("shipgate", &manifest.backup_id);
    let replacement = forged(&fx.deps, &manifest).await;
    fx.objects.set(Hook::Before(replace_with(
        Arc::new(fx.local.clone()),
        key.clone(),
        replacement,
    )));
    let target = table(fx.dir.path(), "target.db");

    let err = backup::restore(&fx.deps, &manifest.backup_id, &target, false, None)
        .await
        .expect_err("the object changed after verification");
    assert_changed_refusal(&err, &manifest, &key);
    assert!(
        chain(&err).contains("it was replaced or modified (verified: file inode"),
        "{}",
        chain(&err)
    );
    assert_eq!(target.count().await.expect("count"), 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_read_failing_part_way_through_the_writing_pass_leaves_no_partial_restore() {
    let fx = dir_fixture();
    let (manifest, original) = backed_up(&fx.deps, fx.dir.path()).await;
    fx.objects.set(Hook::FailAfter(
        usize::try_from(manifest.encrypted_bytes * 3 / 4).expect("size"),
    ));
    let target = table(fx.dir.path(), "target.db");

    let err = backup::restore(&fx.deps, &manifest.backup_id, &target, false, None)
        .await
        .expect_err("the read failed");
    let line = chain(&err);
    assert!(
        line.starts_with(&format!(
            "restore of backup {} into shipgate failed after ",
            manifest.backup_id
        )) && line.contains(
            " items were written; they were deleted again and the target is empty: reading \
             backup"
        ) && line.contains("connection reset by peer"),
        "{line}"
    );
    let JobError::RestoreFailed { written, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(*written > 0, "the read failed after some batches: {line}");
    assert_eq!(
        target.count().await.expect("count"),
        0,
        "no partial restore"
    );

    // The same backup restores into the same target once the read succeeds.
    let report = backup::restore(&fx.deps, &manifest.backup_id, &target, false, None)
        .await
        .expect("restore");
    assert_eq!(report.items, ITEMS as u64);
    assert_eq!(all_items(&target).await, original);
}
