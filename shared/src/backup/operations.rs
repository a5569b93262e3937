//! Backup jobs: back a table up, list, verify, restore, prune and drill — the operations the CLI
//! and the scheduled-jobs function run on top of the [backup format](crate::backup).
//!
//! Objects live under `{prefix}/{table}/`: `{backup_id}.sgbk` (the encrypted stream) and
//! `{backup_id}.manifest.json`. A backup id is `{table}.{YYYYMMDDTHHMMSSZ}-{8 hex}`: the format
//! allows only `A-Z a-z 0-9 - _ .` in ids (they go into the stream header and the KMS encryption
//! context), so the table is joined with a dot; operators may also write `{table}/{stamp}`
//! (see [`BackupRef`]).
//!
//! Memory stays flat however large the table: the scan feeds a bounded channel, the format
//! writer seals fixed-size chunks into an [`UploadWriter`] on a blocking thread, and restores
//! read the object back record by record. Restores read every backup twice: a full verification
//! pass that writes nothing and records which version of the object it read, then the writing
//! pass, which reads exactly that version or writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backup::{
    backup_context, key_check, BackupError, BackupObjects, BackupReader, BackupStats, BackupWriter,
    DataKeyProvider, KeyError, KeyInfo, KeyProviderKind, Manifest, ObjectError, ObjectVersion,
    UploadWriter, DEFAULT_CHUNK_SIZE,
};
use crate::domain::policy::BackupsPolicy;

use super::tables::{ScratchTable, TableError, TableSink, TableSource};

/// Parallel scan segments unless [`BackupDeps::scan_segments`] says otherwise.
pub const DEFAULT_SCAN_SEGMENTS: u32 = 4;
/// Scan pages queued between the scanners and the writer thread: the bound on buffered records.
const PAGES_IN_FLIGHT: usize = 4;
/// Records per `write_batch` call during a restore (sinks split further as their API needs).
const RESTORE_BATCH: usize = 100;
const BATCHES_IN_FLIGHT: usize = 2;
const PROGRESS_TICK: Duration = Duration::from_millis(200);
const MANIFEST_SUFFIX: &str = ".manifest.json";
const OBJECT_SUFFIX: &str = ".sgbk";
/// `.` + `YYYYMMDDTHHMMSSZ` + `-` + 8 hex digits.
const ID_SUFFIX_LEN: usize = 1 + 16 + 1 + 8;
/// Table names must leave room for the suffix in the format's 128-byte id.
pub const MAX_TABLE_NAME_LEN: usize = crate::backup::format::MAX_BACKUP_ID_LEN - ID_SUFFIX_LEN;
const SECONDS_PER_DAY: i64 = 86_400;

/// A progress callback: called with a running count (items, or bytes where documented).
pub type Progress<'a> = Option<&'a (dyn Fn(u64) + Send + Sync)>;

/// What the backup jobs need: where objects go and who makes data keys.
#[derive(Clone)]
pub struct BackupDeps {
    pub objects: Arc<dyn BackupObjects>,
    pub keys: Arc<dyn DataKeyProvider>,
    /// Key prefix of every object, without a trailing slash (`backups`); may be empty.
    pub prefix: String,
    /// Compressed bytes per encrypted chunk ([`DEFAULT_CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// Parallel scan segments ([`DEFAULT_SCAN_SEGMENTS`]).
    pub scan_segments: u32,
}

impl std::fmt::Debug for BackupDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupDeps")
            .field("keys", &self.keys.provider())
            .field("prefix", &self.prefix)
            .field("chunk_size", &self.chunk_size)
            .field("scan_segments", &self.scan_segments)
            .finish_non_exhaustive()
    }
}

impl BackupDeps {
    pub fn new(
        objects: Arc<dyn BackupObjects>,
        keys: Arc<dyn DataKeyProvider>,
        prefix: impl Into<String>,
    ) -> Self {
        BackupDeps {
            objects,
            keys,
            prefix: prefix.into().trim_matches('/').to_owned(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            scan_segments: DEFAULT_SCAN_SEGMENTS,
        }
    }

    pub fn with_chunk_size(mut self, chunk_size: u32) -> Self {
        self.chunk_size = chunk_size;
        self
    }

    pub fn with_scan_segments(mut self, segments: u32) -> Self {
        self.scan_segments = segments.max(1);
        self
    }

    fn prefix_dir(&self) -> String {
        let prefix = self.prefix.trim_matches('/');
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        }
    }

    fn table_dir(&self, table: &str) -> String {
        format!("{}{table}/", self.prefix_dir())
    }

    /// Object key of a backup's encrypted stream.
    pub fn object_key(&self, table: &str, backup_id: &str) -> String {
        format!("{}{backup_id}{OBJECT_SUFFIX}", self.table_dir(table))
    }

    /// Object key of a backup's manifest.
    pub fn manifest_key(&self, table: &str, backup_id: &str) -> String {
        format!("{}{backup_id}{MANIFEST_SUFFIX}", self.table_dir(table))
    }
}

/// Why a backup job failed. Messages name backups and tables, never item contents or keys.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid backup reference {reference:?}: {reason}")]
    BadReference {
        reference: String,
        reason: &'static str,
    },
    #[error(
        "table name {table:?} cannot be backed up: use 1 to {MAX_TABLE_NAME_LEN} characters of \
         A-Z a-z 0-9 - _ ."
    )]
    BadTableName { table: String },
    #[error("no backup matches {reference:?}")]
    NotFound { reference: String },
    #[error("none of the {tried} backups of table {table} passed verification")]
    NoGoodBackup {
        table: String,
        tried: usize,
        /// Why the newest one failed.
        #[source]
        newest: Box<JobError>,
    },
    #[error(
        "restore target {table} is not empty; restore into an empty table, or force it to \
         overwrite items with the same keys"
    )]
    TargetNotEmpty { table: String },
    #[error("restore of backup {backup} refused before writing anything")]
    RestoreRefused {
        /// The backup id, or the reference given when it did not resolve.
        backup: String,
        #[source]
        source: Box<JobError>,
    },
    #[error("the data key of backup {backup_id} could not be generated or unwrapped")]
    Key {
        backup_id: String,
        #[source]
        source: KeyError,
    },
    #[error("backup {backup_id} failed verification")]
    Verification {
        backup_id: String,
        #[source]
        source: BackupError,
    },
    #[error("writing backup {backup_id} failed")]
    Write {
        backup_id: String,
        #[source]
        source: BackupError,
    },
    #[error("the scan of {table} failed before the backup was complete; nothing was stored")]
    Aborted { table: String },
    #[error("manifest {key} is unusable")]
    Manifest {
        key: String,
        #[source]
        source: BackupError,
    },
    /// The writing pass found the backup object replaced or removed since the verification
    /// pass read it ([`ObjectError::Changed`]); it read nothing from it.
    #[error(transparent)]
    ChangedAfterVerification(ObjectError),
    #[error("reading backup {backup_id} failed during the writing pass")]
    Read {
        backup_id: String,
        #[source]
        source: BackupError,
    },
    #[error(
        "restore of backup {backup_id} into {target} failed after {written} items were written; \
         {left}"
    )]
    RestoreFailed {
        backup_id: String,
        target: String,
        /// Items written in complete batches before the failure.
        written: u64,
        /// What the failed restore left in the target.
        left: PartialRestore,
        #[source]
        source: Box<JobError>,
    },
    #[error("backup object storage failed")]
    Objects(#[from] ObjectError),
    #[error("table access failed")]
    Table(#[from] TableError),
    #[error("a background task of the backup job failed")]
    Task(#[from] tokio::task::JoinError),
}

/// What a restore whose writing pass failed left in its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialRestore {
    /// The target was empty before the restore, and what was written was deleted again.
    Removed,
    /// The target holds part of the backup (a forced restore, or a target that cannot be
    /// emptied, or emptying it failed).
    Left,
}

impl std::fmt::Display for PartialRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PartialRestore::Removed => "they were deleted again and the target is empty",
            PartialRestore::Left => {
                "the target holds a partial restore: do not use it; delete it, or empty it \
                 before restoring again"
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Backup ids and references

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Checks that `table` can be part of a backup id and an object key.
pub fn validate_table_name(table: &str) -> Result<(), JobError> {
    if table.is_empty() || table.len() > MAX_TABLE_NAME_LEN || !table.bytes().all(is_id_char) {
        return Err(JobError::BadTableName {
            table: table.to_owned(),
        });
    }
    Ok(())
}

fn is_stamp(stamp: &[u8]) -> bool {
    // YYYYMMDDTHHMMSSZ-xxxxxxxx
    stamp.len() == ID_SUFFIX_LEN - 1
        && stamp[..8].iter().all(u8::is_ascii_digit)
        && stamp[8] == b'T'
        && stamp[9..15].iter().all(u8::is_ascii_digit)
        && stamp[15] == b'Z'
        && stamp[16] == b'-'
        && stamp[17..]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits a backup id into its table and its `{stamp}-{short}` suffix.
pub fn split_backup_id(backup_id: &str) -> Option<(&str, &str)> {
    let bytes = backup_id.as_bytes();
    if !backup_id.is_ascii() || bytes.len() <= ID_SUFFIX_LEN {
        return None;
    }
    let at = bytes.len() - ID_SUFFIX_LEN;
    if bytes[at] != b'.' || !is_stamp(&bytes[at + 1..]) {
        return None;
    }
    let table = &backup_id[..at];
    validate_table_name(table).ok()?;
    Some((table, &backup_id[at + 1..]))
}

/// When the id says the backup was taken (second precision).
pub fn backup_id_time(backup_id: &str) -> Option<Timestamp> {
    let (_, suffix) = split_backup_id(backup_id)?;
    jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", &suffix[..16])
        .ok()?
        .to_datetime()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// A new backup id for `table` at `now`.
pub fn new_backup_id(table: &str, now: Timestamp) -> Result<String, JobError> {
    validate_table_name(table)?;
    let short = uuid::Uuid::new_v4().simple().to_string();
    Ok(format!(
        "{table}.{}-{}",
        now.strftime("%Y%m%dT%H%M%SZ"),
        &short[..8]
    ))
}

/// Which backup an operator means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupRef {
    /// `latest`: the newest backup of any table.
    Latest,
    /// `{table}/latest`: the newest backup of one table.
    LatestOf(String),
    /// `{table}.{stamp}-{short}`, or the same written `{table}/{stamp}-{short}`.
    Id(String),
}

impl BackupRef {
    pub fn parse(reference: &str) -> Result<BackupRef, JobError> {
        let bad = |reason| JobError::BadReference {
            reference: reference.to_owned(),
            reason,
        };
        let reference = reference.trim();
        if reference == "latest" {
            return Ok(BackupRef::Latest);
        }
        if let Some(table) = reference.strip_suffix("/latest") {
            validate_table_name(table).map_err(|_| bad("the table name is invalid"))?;
            return Ok(BackupRef::LatestOf(table.to_owned()));
        }
        let id = match reference.split_once('/') {
            Some((table, suffix)) => format!("{table}.{suffix}"),
            None => reference.to_owned(),
        };
        if split_backup_id(&id).is_none() {
            return Err(bad(
                "expected `latest`, `TABLE/latest` or a backup id like \
                 `TABLE.20250102T030405Z-1a2b3c4d`",
            ));
        }
        Ok(BackupRef::Id(id))
    }
}

// ---------------------------------------------------------------------------------------------
// Backup

enum Page {
    Records(Vec<String>),
    /// Every scan finished: the writer may seal the final chunk.
    End,
}

fn provider_kind(provider: &str) -> KeyProviderKind {
    if provider == "kms" {
        KeyProviderKind::Kms
    } else {
        KeyProviderKind::Local
    }
}

/// Backs `source` up: a fresh data key, a parallel scan streamed through the format writer into
/// the object store, then the manifest beside the object. `progress` receives the number of
/// items scanned so far. Nothing is stored if any step fails.
pub async fn backup_table(
    deps: &BackupDeps,
    source: &dyn TableSource,
    now: Timestamp,
    progress: Progress<'_>,
) -> Result<Manifest, JobError> {
    let table = source.name().to_owned();
    let backup_id = new_backup_id(&table, now)?;
    let context = backup_context(&table, &backup_id);
    let data_key = deps
        .keys
        .generate(&context)
        .await
        .map_err(|source| JobError::Key {
            backup_id: backup_id.clone(),
            source,
        })?;
    let key_info = KeyInfo {
        provider: provider_kind(deps.keys.provider()),
        key_id: data_key.key_id.clone(),
        wrapped_key_b64: base64::engine::general_purpose::STANDARD.encode(&data_key.wrapped),
        encryption_context: context,
        key_check: key_check(data_key.plaintext.expose_secret()),
    };

    let object_key = deps.object_key(&table, &backup_id);
    let upload = UploadWriter::start(Arc::clone(&deps.objects), object_key);
    let (tx, rx) = mpsc::channel::<Page>(PAGES_IN_FLIGHT);
    let writer = {
        let (key, id, chunk_size) = (data_key.plaintext, backup_id.clone(), deps.chunk_size);
        let table = table.clone();
        tokio::task::spawn_blocking(move || write_stream(upload, &key, &id, &table, chunk_size, rx))
    };

    let scanned = AtomicU64::new(0);
    let segments = deps.scan_segments.max(1);
    let scans = futures::future::try_join_all(
        (0..segments).map(|segment| scan_into(source, segment, segments, &tx, &scanned, progress)),
    )
    .await;
    match scans {
        Ok(_) => {
            // The writer may have failed meanwhile; its own error is the one to report.
            let _ = tx.send(Page::End).await;
            drop(tx);
        }
        Err(ScanStop::WriterGone) => {
            drop(tx);
            writer.await??;
            // A writer that stopped without an error did so because of the scan: unreachable
            // in practice, reported rather than assumed.
            return Err(JobError::Aborted { table });
        }
        Err(ScanStop::Table(e)) => {
            // Dropping every sender without `End` makes the writer abandon the upload.
            drop(tx);
            let _ = writer.await;
            return Err(e.into());
        }
    }
    let stats = writer.await??;

    let manifest = Manifest::new(&backup_id, &table, now, deps.chunk_size, &stats, key_info);
    let manifest_key = deps.manifest_key(&table, &backup_id);
    let json = manifest.to_json().map_err(|source| JobError::Manifest {
        key: manifest_key.clone(),
        source,
    })?;
    deps.objects
        .put_small(&manifest_key, bytes::Bytes::from(json))
        .await?;
    tracing::info!(
        table = %table,
        backup_id = %backup_id,
        items = stats.items,
        encrypted_bytes = stats.encrypted_bytes,
        "backup written"
    );
    Ok(manifest)
}

enum ScanStop {
    Table(TableError),
    WriterGone,
}

async fn scan_into(
    source: &dyn TableSource,
    segment: u32,
    total: u32,
    tx: &mpsc::Sender<Page>,
    scanned: &AtomicU64,
    progress: Progress<'_>,
) -> Result<(), ScanStop> {
    let mut cursor = None;
    loop {
        let (records, next) = source
            .scan_segment(segment, total, cursor)
            .await
            .map_err(ScanStop::Table)?;
        let n = records.len() as u64;
        if n > 0 {
            tx.send(Page::Records(records))
                .await
                .map_err(|_| ScanStop::WriterGone)?;
            let total_scanned = scanned.fetch_add(n, Ordering::Relaxed) + n;
            if let Some(progress) = progress {
                progress(total_scanned);
            }
        }
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// The blocking half of a backup: records in, sealed chunks out to the upload.
fn write_stream(
    mut upload: UploadWriter,
    key: &SecretBox<[u8; 32]>,
    backup_id: &str,
    table: &str,
    chunk_size: u32,
    mut rx: mpsc::Receiver<Page>,
) -> Result<BackupStats, JobError> {
    let write_err = |source| JobError::Write {
        backup_id: backup_id.to_owned(),
        source,
    };
    let mut writer =
        BackupWriter::with_chunk_size(&mut upload, key.expose_secret(), backup_id, chunk_size)
            .map_err(write_err)?;
    loop {
        match rx.blocking_recv() {
            Some(Page::Records(records)) => {
                for record in records {
                    writer.write_record(record.as_bytes()).map_err(write_err)?;
                }
            }
            Some(Page::End) => break,
            // Dropping the writer and the upload unfinished stores nothing.
            None => {
                return Err(JobError::Aborted {
                    table: table.to_owned(),
                })
            }
        }
    }
    let stats = writer.finish().map_err(write_err)?;
    upload.finish()?;
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// Catalogue

/// What the object store holds under the prefix.
struct Catalog {
    /// Newest first.
    manifests: Vec<Manifest>,
    /// Manifest keys that could not be read or parsed, or that contradict their key.
    unreadable: Vec<String>,
    /// `(table, backup_id, key)` of every stream object.
    objects: Vec<(String, String, String)>,
}

fn newest_first(manifests: &mut [Manifest]) {
    manifests.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.backup_id.cmp(&a.backup_id))
    });
}

/// Splits `{prefix}/{table}/{id}{suffix}` into table and id.
fn parse_key<'k>(deps: &BackupDeps, key: &'k str, suffix: &str) -> Option<(&'k str, &'k str)> {
    let rest = key.strip_prefix(&deps.prefix_dir())?;
    let (table, file) = rest.split_once('/')?;
    let id = file.strip_suffix(suffix)?;
    let (id_table, _) = split_backup_id(id)?;
    (id_table == table).then_some((table, id))
}

async fn catalog(deps: &BackupDeps, table: Option<&str>) -> Result<Catalog, JobError> {
    let listing_prefix = match table {
        Some(table) => {
            validate_table_name(table)?;
            deps.table_dir(table)
        }
        None => deps.prefix_dir(),
    };
    let listed = deps.objects.list(&listing_prefix).await?;
    let mut found = Catalog {
        manifests: Vec::new(),
        unreadable: Vec::new(),
        objects: Vec::new(),
    };
    for object in listed {
        if let Some((table, id)) = parse_key(deps, &object.key, OBJECT_SUFFIX) {
            found
                .objects
                .push((table.to_owned(), id.to_owned(), object.key.clone()));
            continue;
        }
        let Some((_, id)) = parse_key(deps, &object.key, MANIFEST_SUFFIX) else {
            continue;
        };
        match load_manifest_at(deps, &object.key, id).await {
            Ok(manifest) => found.manifests.push(manifest),
            Err(JobError::Objects(e)) if !matches!(e, ObjectError::NotFound { .. }) => {
                return Err(JobError::Objects(e))
            }
            Err(e) => {
                tracing::warn!(key = %object.key, error = %e, "skipping an unusable backup manifest");
                found.unreadable.push(object.key);
            }
        }
    }
    newest_first(&mut found.manifests);
    Ok(found)
}

async fn load_manifest_at(
    deps: &BackupDeps,
    key: &str,
    backup_id: &str,
) -> Result<Manifest, JobError> {
    let bytes = deps.objects.get_small(key).await?;
    let invalid = |reason: String| JobError::Manifest {
        key: key.to_owned(),
        source: BackupError::InvalidManifest { reason },
    };
    let manifest = Manifest::parse(&bytes).map_err(|source| JobError::Manifest {
        key: key.to_owned(),
        source,
    })?;
    if manifest.backup_id != backup_id {
        return Err(invalid(format!(
            "it names backup {:?} but is stored as {backup_id:?}",
            manifest.backup_id
        )));
    }
    match split_backup_id(backup_id) {
        Some((table, _)) if table == manifest.source => Ok(manifest),
        _ => Err(invalid(format!(
            "its source table {:?} does not match its backup id",
            manifest.source
        ))),
    }
}

/// The manifests of `table` (or of every table), newest first. Unusable manifests are logged
/// and left out.
pub async fn list(deps: &BackupDeps, table: Option<&str>) -> Result<Vec<Manifest>, JobError> {
    Ok(catalog(deps, table).await?.manifests)
}

/// The newest backup of `table` (or of any table).
pub async fn latest(deps: &BackupDeps, table: Option<&str>) -> Result<Option<Manifest>, JobError> {
    Ok(list(deps, table).await?.into_iter().next())
}

/// The manifest `reference` (see [`BackupRef`]) points at.
pub async fn resolve(deps: &BackupDeps, reference: &str) -> Result<Manifest, JobError> {
    let not_found = || JobError::NotFound {
        reference: reference.to_owned(),
    };
    match BackupRef::parse(reference)? {
        BackupRef::Latest => latest(deps, None).await?.ok_or_else(not_found),
        BackupRef::LatestOf(table) => latest(deps, Some(&table)).await?.ok_or_else(not_found),
        BackupRef::Id(id) => {
            let (table, _) = split_backup_id(&id).ok_or_else(not_found)?;
            match load_manifest_at(deps, &deps.manifest_key(table, &id), &id).await {
                Err(JobError::Objects(ObjectError::NotFound { .. })) => Err(not_found()),
                other => other,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verify

/// A backup that passed verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub manifest: Manifest,
    /// What was read; equal to the manifest's figures.
    pub stats: BackupStats,
}

async fn unwrap_key(
    deps: &BackupDeps,
    manifest: &Manifest,
) -> Result<Arc<SecretBox<[u8; 32]>>, JobError> {
    let wrapped = manifest
        .key
        .wrapped_key()
        .map_err(|source| JobError::Manifest {
            key: deps.manifest_key(&manifest.source, &manifest.backup_id),
            source,
        })?;
    let key = deps
        .keys
        .unwrap(
            &wrapped,
            &manifest.key.key_id,
            &manifest.key.encryption_context,
        )
        .await
        .map_err(|source| JobError::Key {
            backup_id: manifest.backup_id.clone(),
            source,
        })?;
    Ok(Arc::new(key))
}

/// Counts the bytes read through it, for progress reports.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Awaits a blocking task, reporting `counter` to `progress` while it runs.
async fn with_progress<T>(
    handle: JoinHandle<T>,
    counter: &AtomicU64,
    progress: Progress<'_>,
) -> Result<T, tokio::task::JoinError> {
    tokio::pin!(handle);
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    loop {
        tokio::select! {
            result = &mut handle => {
                if let Some(progress) = progress {
                    progress(counter.load(Ordering::Relaxed));
                }
                return result;
            }
            _ = tick.tick() => {
                if let Some(progress) = progress {
                    progress(counter.load(Ordering::Relaxed));
                }
            }
        }
    }
}

/// The full verification pass over the stored object; writes nothing. Returns what it found
/// and the version of the object it read, for the writing pass to read again.
async fn verify_object(
    deps: &BackupDeps,
    manifest: &Manifest,
    key: &Arc<SecretBox<[u8; 32]>>,
    progress: Progress<'_>,
) -> Result<(BackupStats, ObjectVersion), JobError> {
    let (reader, version) = deps
        .objects
        .get_pinned(&deps.object_key(&manifest.source, &manifest.backup_id))
        .await?;
    let counter = Arc::new(AtomicU64::new(0));
    let reader = Counting {
        inner: reader,
        count: Arc::clone(&counter),
    };
    let (key, task_manifest) = (Arc::clone(key), manifest.clone());
    let handle = tokio::task::spawn_blocking(move || {
        crate::backup::verify(
            reader,
            key.expose_secret(),
            &task_manifest.backup_id,
            &task_manifest,
        )
    });
    let stats = with_progress(handle, &counter, progress)
        .await?
        .map_err(|source| JobError::Verification {
            backup_id: manifest.backup_id.clone(),
            source,
        })?;
    Ok((stats, version))
}

/// Opens the object for the writing pass at exactly the version the verification pass read.
async fn open_verified(
    deps: &BackupDeps,
    manifest: &Manifest,
    version: &ObjectVersion,
) -> Result<Box<dyn Read + Send>, JobError> {
    let key = deps.object_key(&manifest.source, &manifest.backup_id);
    if *version == ObjectVersion::Unknown {
        tracing::warn!(key = %key, "the object store cannot pin versions; the writing pass reads the object unpinned");
    }
    deps.objects
        .get_exact(&key, version)
        .await
        .map_err(|e| match e {
            ObjectError::Changed { .. } => JobError::ChangedAfterVerification(e),
            other => JobError::Objects(other),
        })
}

/// Unwraps the data key with the manifest's encryption context and checks every chunk (its
/// authenticity, order and the final flag), every record, the SHA-256, the item count and the
/// sizes, writing nothing. `reference` is anything [`BackupRef`] accepts. `progress` receives
/// the encrypted bytes read so far (out of `manifest.encrypted_bytes`).
pub async fn verify(
    deps: &BackupDeps,
    reference: &str,
    progress: Progress<'_>,
) -> Result<VerifyReport, JobError> {
    let manifest = resolve(deps, reference).await?;
    let key = unwrap_key(deps, &manifest).await?;
    let (stats, _) = verify_object(deps, &manifest, &key, progress).await?;
    Ok(VerifyReport { manifest, stats })
}

// ---------------------------------------------------------------------------------------------
// Restore

/// An order-independent digest of a set of records: the sum modulo 2^256 of their SHA-256
/// values. A scan returns records in any order, so a restore drill compares this (not the
/// stream's SHA-256) between the backup and the restored table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ContentDigest([u64; 4]);

impl ContentDigest {
    fn add(&mut self, record: &[u8]) {
        let hash = Sha256::digest(record);
        let mut carry = false;
        // Limb 3 holds the least significant 8 bytes (big-endian digest).
        for limb in (0..4).rev() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&hash[limb * 8..limb * 8 + 8]);
            let (sum, c1) = self.0[limb].overflowing_add(u64::from_be_bytes(word));
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            self.0[limb] = sum;
            carry = c1 || c2;
        }
    }

    fn hex(&self) -> String {
        self.0.iter().map(|limb| format!("{limb:016x}")).collect()
    }
}

/// Number of records in a table and the order-independent digest of their serialised form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableDigest {
    pub items: u64,
    /// 64 hex digits; equal for two tables exactly when they hold the same records (up to
    /// SHA-256 collisions).
    pub digest: String,
}

/// Scans `source` (one segment) and digests its records.
pub async fn table_digest(source: &dyn TableSource) -> Result<TableDigest, JobError> {
    let mut digest = ContentDigest::default();
    let mut items = 0u64;
    let mut cursor = None;
    loop {
        let (records, next) = source.scan_segment(0, 1, cursor).await?;
        for record in &records {
            digest.add(record.as_bytes());
        }
        items += records.len() as u64;
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(TableDigest {
        items,
        digest: digest.hex(),
    })
}

/// Which half of a restore a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestorePhase {
    /// The verification pass; the count is encrypted bytes read.
    Verifying,
    /// The writing pass; the count is items written.
    Writing,
}

/// A restore progress callback.
pub type RestoreProgress<'a> = Option<&'a (dyn Fn(RestorePhase, u64) + Send + Sync)>;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub source: String,
    pub target: String,
    pub items: u64,
    /// Order-independent digest of the records written (see [`TableDigest`]).
    pub content_digest: String,
    /// The target was not empty and `force` let the restore write into it.
    pub forced: bool,
    pub verify_time: Duration,
    pub write_time: Duration,
}

/// Restores a backup into `sink`: resolves `reference`, refuses a non-empty sink unless
/// `force`, unwraps the key, verifies the whole backup (first pass, writes nothing, records
/// which version of the object it read), then reads exactly that version again and writes it
/// in batches (second pass).
///
/// Any failure before the second pass writes anything (missing or bad manifest, wrong key or
/// encryption context, tampered, truncated or reordered chunks, count or checksum mismatch,
/// non-empty target, or an object replaced or removed since it was verified:
/// [`JobError::ChangedAfterVerification`]) is [`JobError::RestoreRefused`] and nothing was
/// written.
///
/// A failure during the second pass (a read or a write failing part-way) is
/// [`JobError::RestoreFailed`]. When the target was empty before the restore, what was written
/// is deleted again ([`TableSink::clear`]) and the error says so ([`PartialRestore::Removed`]);
/// otherwise (forced, or a target that cannot be emptied) it says that the target holds a
/// partial restore.
pub async fn restore(
    deps: &BackupDeps,
    reference: &str,
    sink: &dyn TableSink,
    force: bool,
    progress: RestoreProgress<'_>,
) -> Result<RestoreReport, JobError> {
    let manifest = resolve(deps, reference)
        .await
        .map_err(|source| JobError::RestoreRefused {
            backup: reference.to_owned(),
            source: Box::new(source),
        })?;
    let refused = |source: JobError| JobError::RestoreRefused {
        backup: manifest.backup_id.clone(),
        source: Box::new(source),
    };
    let started = Instant::now();
    let forced = if sink.is_empty().await.map_err(|e| refused(e.into()))? {
        false
    } else if force {
        true
    } else {
        return Err(refused(JobError::TargetNotEmpty {
            table: sink.name().to_owned(),
        }));
    };
    let key = unwrap_key(deps, &manifest).await.map_err(refused)?;
    let verify_progress = progress.map(|p| move |n| p(RestorePhase::Verifying, n));
    let (_, version) = verify_object(
        deps,
        &manifest,
        &key,
        verify_progress
            .as_ref()
            .map(|p| p as &(dyn Fn(u64) + Send + Sync)),
    )
    .await
    .map_err(refused)?;
    let verify_time = started.elapsed();

    let started = Instant::now();
    let reader = open_verified(deps, &manifest, &version)
        .await
        .map_err(refused)?;
    let write_progress = progress.map(|p| move |n| p(RestorePhase::Writing, n));
    let written = write_pass(
        &manifest,
        &key,
        reader,
        sink,
        write_progress
            .as_ref()
            .map(|p| p as &(dyn Fn(u64) + Send + Sync)),
    )
    .await;
    let (items, digest) = match written {
        Ok(done) => done,
        Err(failed) => return Err(undo_partial(&manifest, sink, forced, failed).await),
    };
    tracing::info!(
        backup_id = %manifest.backup_id,
        target = %sink.name(),
        items,
        forced,
        "backup restored"
    );
    Ok(RestoreReport {
        backup_id: manifest.backup_id.clone(),
        source: manifest.source.clone(),
        target: sink.name().to_owned(),
        items,
        content_digest: digest.hex(),
        forced,
        verify_time,
        write_time: started.elapsed(),
    })
}

/// A writing pass that stopped part-way.
struct WriteFailed {
    /// Items written in complete batches.
    written: u64,
    error: JobError,
}

/// After a failed writing pass: empties a target that was empty before the restore, and says
/// what is left.
async fn undo_partial(
    manifest: &Manifest,
    sink: &dyn TableSink,
    forced: bool,
    failed: WriteFailed,
) -> JobError {
    let left = if forced {
        PartialRestore::Left
    } else {
        match sink.clear().await {
            Ok(true) => PartialRestore::Removed,
            Ok(false) => PartialRestore::Left,
            Err(e) => {
                tracing::error!(target = %sink.name(), error = %error_chain(&e), "could not delete a partial restore");
                PartialRestore::Left
            }
        }
    };
    tracing::error!(
        backup_id = %manifest.backup_id,
        target = %sink.name(),
        written = failed.written,
        left = %left,
        error = %error_chain(&failed.error),
        "restore failed during the writing pass"
    );
    JobError::RestoreFailed {
        backup_id: manifest.backup_id.clone(),
        target: sink.name().to_owned(),
        written: failed.written,
        left,
        source: Box::new(failed.error),
    }
}

/// The second pass: read records back from `reader` (the verified version of the object) and
/// hand them to the sink in batches.
async fn write_pass(
    manifest: &Manifest,
    key: &Arc<SecretBox<[u8; 32]>>,
    reader: Box<dyn Read + Send>,
    sink: &dyn TableSink,
    progress: Progress<'_>,
) -> Result<(u64, ContentDigest), WriteFailed> {
    let (tx, mut rx) = mpsc::channel::<Vec<String>>(BATCHES_IN_FLIGHT);
    let (key, task_manifest) = (Arc::clone(key), manifest.clone());
    let reader_task =
        tokio::task::spawn_blocking(move || read_stream(reader, &key, &task_manifest, tx));

    let mut written = 0u64;
    let mut sink_result = Ok(());
    while let Some(batch) = rx.recv().await {
        let n = batch.len() as u64;
        if let Err(e) = sink.write_batch(batch).await {
            sink_result = Err(e);
            break;
        }
        written += n;
        if let Some(progress) = progress {
            progress(written);
        }
    }
    // Stops the reader (its next send fails) if the sink gave up.
    drop(rx);
    let failed = |error| WriteFailed { written, error };
    let read = reader_task.await.map_err(|e| failed(e.into()))?;
    sink_result.map_err(|e| failed(e.into()))?;
    match read {
        Ok(digest) => Ok((written, digest)),
        Err(ReadStop::Format(source)) => Err(failed(JobError::Read {
            backup_id: manifest.backup_id.clone(),
            source,
        })),
        Err(ReadStop::SinkGone) => Err(failed(JobError::Aborted {
            table: sink.name().to_owned(),
        })),
    }
}

enum ReadStop {
    Format(BackupError),
    SinkGone,
}

/// The blocking half of the second pass. The stream is the version verified moments ago; it is
/// authenticated again chunk by chunk and its totals are checked once more at the end, so a
/// stream that still differs (a store that cannot pin versions, a file rewritten in place) is
/// detected, and the restore fails.
fn read_stream(
    reader: Box<dyn Read + Send>,
    key: &SecretBox<[u8; 32]>,
    manifest: &Manifest,
    tx: mpsc::Sender<Vec<String>>,
) -> Result<ContentDigest, ReadStop> {
    let mut backup = BackupReader::new(reader, key.expose_secret(), &manifest.backup_id)
        .map_err(ReadStop::Format)?;
    let mut digest = ContentDigest::default();
    let mut record = Vec::new();
    let mut batch = Vec::with_capacity(RESTORE_BATCH);
    loop {
        let more = backup.read_record(&mut record).map_err(ReadStop::Format)?;
        if more {
            digest.add(&record);
            let line = String::from_utf8(std::mem::take(&mut record)).map_err(|_| {
                ReadStop::Format(BackupError::BadRecord {
                    reason: "a record is not UTF-8".to_owned(),
                })
            })?;
            batch.push(line);
        }
        if batch.len() == RESTORE_BATCH || (!more && !batch.is_empty()) {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(RESTORE_BATCH));
            tx.blocking_send(full).map_err(|_| ReadStop::SinkGone)?;
        }
        if !more {
            break;
        }
    }
    let stats = backup.stats();
    if stats.items != manifest.items {
        return Err(ReadStop::Format(BackupError::CountMismatch {
            expected: manifest.items,
            found: stats.items,
        }));
    }
    if stats.plaintext_sha256 != manifest.plaintext_sha256 {
        return Err(ReadStop::Format(BackupError::ChecksumMismatch {
            expected: manifest.plaintext_sha256.clone(),
            found: stats.plaintext_sha256,
        }));
    }
    Ok(digest)
}

// ---------------------------------------------------------------------------------------------
// Prune

/// Why prune keeps a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Younger than `retention_days`.
    Retention,
    /// The newest backup of its UTC day, and that day is one of the `keep_daily` most recent
    /// days that have a backup of the table.
    Daily,
    /// The newest backup of its table that passes verification.
    NewestGood,
    /// Newer than the newest good backup (kept for inspection; it failed verification or could
    /// not be checked).
    NewerThanNewestGood,
}

/// The retention rules alone, for one table's manifests sorted newest first: the reasons to
/// keep each (empty = delete). See [`prune`] for the verification rules on top.
pub fn retention_reasons(
    newest_first: &[Manifest],
    policy: &BackupsPolicy,
    now: Timestamp,
) -> Vec<BTreeSet<KeepReason>> {
    let retention = i64::from(policy.retention_days) * SECONDS_PER_DAY;
    let mut days_seen = BTreeSet::new();
    newest_first
        .iter()
        .map(|manifest| {
            let mut reasons = BTreeSet::new();
            if now.as_second() - manifest.created_at.as_second() < retention {
                reasons.insert(KeepReason::Retention);
            }
            let day = manifest.created_at.to_zoned(jiff::tz::TimeZone::UTC).date();
            // Newest first, so the first backup met on a day is that day's newest.
            if !days_seen.contains(&day) {
                days_seen.insert(day);
                if days_seen.len() <= policy.keep_daily as usize {
                    reasons.insert(KeepReason::Daily);
                }
            }
            reasons
        })
        .collect()
}

/// One backup as prune left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeptBackup {
    pub backup_id: String,
    pub reasons: BTreeSet<KeepReason>,
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub kept: Vec<KeptBackup>,
    /// Backups whose manifest and object were deleted.
    pub deleted: Vec<String>,
    /// Stream objects without a manifest, older than the retention, that were deleted.
    pub orphans_deleted: Vec<String>,
    /// Manifests that could not be read; never deleted, for an operator to look at.
    pub unreadable: Vec<String>,
    /// Tables where no backup passed verification, so nothing of theirs was deleted.
    pub tables_without_good_backup: Vec<String>,
}

/// Deletes backups the policy no longer keeps, for every table with backups under the prefix
/// (tables dropped from the policy age out by the same rules).
///
/// A backup is kept when any of the following holds, and deleted (manifest first, then object)
/// otherwise:
/// 1. it is younger than `retention_days` days (`now - created_at < retention_days × 24 h`);
/// 2. it is the newest backup of its UTC day and that day is among the `keep_daily` most recent
///    UTC days on which the table has a backup — however old;
/// 3. it is the newest backup of its table that passes a full [`verify`], or newer than that one.
///
/// Rule 3 costs a verification pass, so it runs only for tables where rules 1–2 would delete
/// something; backups are verified newest first until one passes. If none passes, nothing of
/// that table is deleted. Stream objects whose manifest is missing (a backup interrupted
/// between the two writes) are deleted once their id's timestamp is older than both the
/// retention and one day.
pub async fn prune(
    deps: &BackupDeps,
    policy: &BackupsPolicy,
    now: Timestamp,
) -> Result<PruneReport, JobError> {
    let found = catalog(deps, None).await?;
    let mut report = PruneReport {
        unreadable: found.unreadable.clone(),
        ..PruneReport::default()
    };
    let mut by_table: BTreeMap<String, Vec<Manifest>> = BTreeMap::new();
    for manifest in found.manifests {
        by_table
            .entry(manifest.source.clone())
            .or_default()
            .push(manifest);
    }
    for (table, manifests) in &by_table {
        let mut reasons = retention_reasons(manifests, policy, now);
        if reasons.iter().any(BTreeSet::is_empty) {
            match newest_good(deps, manifests).await {
                Some((index, _)) => {
                    reasons[index].insert(KeepReason::NewestGood);
                    for newer in &mut reasons[..index] {
                        newer.insert(KeepReason::NewerThanNewestGood);
                    }
                }
                None => {
                    tracing::warn!(table = %table, "no backup passes verification; pruning nothing");
                    report.tables_without_good_backup.push(table.clone());
                    for keep in &mut reasons {
                        keep.insert(KeepReason::NewerThanNewestGood);
                    }
                }
            }
        }
        for (manifest, reasons) in manifests.iter().zip(reasons) {
            if reasons.is_empty() {
                let id = &manifest.backup_id;
                deps.objects.delete(&deps.manifest_key(table, id)).await?;
                deps.objects.delete(&deps.object_key(table, id)).await?;
                tracing::info!(backup_id = %id, "backup pruned");
                report.deleted.push(id.clone());
            } else {
                report.kept.push(KeptBackup {
                    backup_id: manifest.backup_id.clone(),
                    reasons,
                });
            }
        }
    }

    let known: BTreeSet<&str> = by_table
        .values()
        .flatten()
        .map(|m| m.backup_id.as_str())
        .chain(
            found
                .unreadable
                .iter()
                .filter_map(|key| parse_key(deps, key, MANIFEST_SUFFIX).map(|(_, id)| id)),
        )
        .collect();
    let orphan_age = (i64::from(policy.retention_days) * SECONDS_PER_DAY).max(SECONDS_PER_DAY);
    for (_, id, key) in &found.objects {
        if known.contains(id.as_str()) {
            continue;
        }
        let old =
            backup_id_time(id).is_some_and(|at| now.as_second() - at.as_second() >= orphan_age);
        if old {
            deps.objects.delete(key).await?;
            report.orphans_deleted.push(id.clone());
        }
    }
    Ok(report)
}

/// The newest backup in `newest_first` that passes verification, with its index; the errors of
/// the newer ones that failed go to the log.
async fn newest_good(deps: &BackupDeps, newest_first: &[Manifest]) -> Option<(usize, BackupStats)> {
    for (index, manifest) in newest_first.iter().enumerate() {
        match verify_manifest(deps, manifest).await {
            Ok(stats) => return Some((index, stats)),
            Err(e) => {
                tracing::warn!(backup_id = %manifest.backup_id, error = %e, "backup failed verification")
            }
        }
    }
    None
}

async fn verify_manifest(deps: &BackupDeps, manifest: &Manifest) -> Result<BackupStats, JobError> {
    let key = unwrap_key(deps, manifest).await?;
    Ok(verify_object(deps, manifest, &key, None).await?.0)
}

// ---------------------------------------------------------------------------------------------
// Restore drill

/// A backup a drill skipped because it failed verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadBackup {
    pub backup_id: String,
    /// The error and its causes, one line.
    pub error: String,
}

/// What a restore drill found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrillReport {
    pub table: String,
    /// The newest backup that passed verification: the one restored.
    pub backup_id: String,
    pub backup_created_at: Timestamp,
    /// Items according to the manifest.
    pub items: u64,
    /// Items the scratch table held after the restore.
    pub restored_items: u64,
    /// The backup's SHA-256 matched its manifest, and the scratch table's content digest
    /// matched the backup's.
    pub sha256_ok: bool,
    /// Recovery point: `now - created_at` of the newest good backup, in seconds.
    pub rpo_seconds: i64,
    /// Recovery time: verifying the backup, creating the scratch table and restoring into it.
    pub rto_seconds: f64,
    /// Newer backups that failed verification.
    pub bad_backups: Vec<BadBackup>,
    pub scratch_table: String,
    pub scratch_discarded: bool,
    /// Counts and digests match and no newer backup was bad.
    pub ok: bool,
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cause = e.source();
    }
    line
}

/// Proves that the newest good backup of `table` restores: verifies backups newest first until
/// one passes, asks `make_scratch` for an empty scratch table, restores into it, compares the
/// item count and the content digest with the backup, and discards the scratch table (also when
/// the restore fails).
///
/// `Err` means the drill could not run to the end (no backup, none good, scratch table or
/// restore failure); `Ok` with `ok == false` means it ran and found a problem.
pub async fn restore_drill<F, Fut>(
    deps: &BackupDeps,
    table: &str,
    make_scratch: F,
    now: Timestamp,
) -> Result<DrillReport, JobError>
where
    F: FnOnce(Manifest) -> Fut,
    Fut: Future<Output = Result<Box<dyn ScratchTable>, TableError>>,
{
    let manifests = list(deps, Some(table)).await?;
    if manifests.is_empty() {
        return Err(JobError::NotFound {
            reference: format!("{table}/latest"),
        });
    }
    let mut bad_backups = Vec::new();
    let mut first_error = None;
    let mut chosen = None;
    for manifest in &manifests {
        let started = Instant::now();
        let verified = async {
            let key = unwrap_key(deps, manifest).await?;
            let (_, version) = verify_object(deps, manifest, &key, None).await?;
            Ok::<_, JobError>((key, version))
        }
        .await;
        match verified {
            Ok((key, version)) => {
                chosen = Some((manifest, key, version, started));
                break;
            }
            Err(e) => {
                bad_backups.push(BadBackup {
                    backup_id: manifest.backup_id.clone(),
                    error: error_chain(&e),
                });
                first_error.get_or_insert(e);
            }
        }
    }
    let Some((manifest, key, version, started)) = chosen else {
        return Err(JobError::NoGoodBackup {
            table: table.to_owned(),
            tried: manifests.len(),
            newest: Box::new(first_error.unwrap_or(JobError::NotFound {
                reference: format!("{table}/latest"),
            })),
        });
    };

    let scratch = make_scratch(manifest.clone()).await?;
    let restored = async {
        if !scratch.is_empty().await? {
            return Err(JobError::TargetNotEmpty {
                table: TableSink::name(scratch.as_ref()).to_owned(),
            });
        }
        let reader = open_verified(deps, manifest, &version).await?;
        let (written, digest) = write_pass(manifest, &key, reader, scratch.as_ref(), None)
            .await
            .map_err(|failed| failed.error)?;
        let rto = started.elapsed();
        // One scan gives both the count and the digest.
        let found = table_digest(scratch.as_ref()).await?;
        Ok((written, digest, rto, found))
    }
    .await;
    let scratch_table = TableSink::name(scratch.as_ref()).to_owned();
    let scratch_discarded = match scratch.discard().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(table = %scratch_table, error = %error_chain(&e), "the drill's scratch table could not be discarded");
            false
        }
    };
    let (written, digest, rto, found) = restored?;

    let sha256_ok = found.digest == digest.hex();
    let count = found.items;
    let count_ok = count == manifest.items && written == manifest.items;
    let ok = sha256_ok && count_ok && bad_backups.is_empty();
    let report = DrillReport {
        table: table.to_owned(),
        backup_id: manifest.backup_id.clone(),
        backup_created_at: manifest.created_at,
        items: manifest.items,
        restored_items: count,
        sha256_ok,
        rpo_seconds: now.as_second() - manifest.created_at.as_second(),
        rto_seconds: rto.as_secs_f64(),
        bad_backups,
        scratch_table,
        scratch_discarded,
        ok,
    };
    tracing::info!(
        table = %report.table,
        backup_id = %report.backup_id,
        ok = report.ok,
        rpo_seconds = report.rpo_seconds,
        rto_seconds = report.rto_seconds,
        "restore drill finished"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn manifest_at(created: &str) -> Manifest {
        let id = new_backup_id("shipgate", ts(created)).unwrap();
        Manifest {
            format_version: crate::backup::FORMAT_VERSION,
            backup_id: id.clone(),
            source: "shipgate".into(),
            created_at: ts(created),
            items: 0,
            plaintext_sha256: "0".repeat(64),
            plaintext_bytes: 0,
            compressed_bytes: 0,
            encrypted_bytes: 0,
            chunk_size: DEFAULT_CHUNK_SIZE,
            chunks: 1,
            key: KeyInfo {
                provider: KeyProviderKind::Local,
                key_id: "local:00".into(),
                wrapped_key_b64: "AA==".into(),
                encryption_context: backup_context("shipgate", &id),
                key_check: "0".repeat(32),
            },
        }
    }

    #[test]
    fn backup_ids_carry_table_and_time_and_parse_back() {
        let at = ts("2025-01-02T03:04:05Z");
        let id = new_backup_id("ship.gate-1", at).unwrap();
        assert!(id.starts_with("ship.gate-1.20250102T030405Z-"), "{id}");
        crate::backup::format::validate_backup_id(&id).unwrap();
        let (table, _) = split_backup_id(&id).unwrap();
        assert_eq!(table, "ship.gate-1");
        assert_eq!(backup_id_time(&id), Some(at));
        assert!(split_backup_id("shipgate.2025-01-02").is_none());
        assert!(new_backup_id("bad/name", at).is_err());
        assert!(new_backup_id(&"t".repeat(MAX_TABLE_NAME_LEN + 1), at).is_err());
    }

    #[test]
    fn backup_references_accept_latest_table_latest_and_both_id_spellings() {
        assert_eq!(BackupRef::parse("latest").unwrap(), BackupRef::Latest);
        assert_eq!(
            BackupRef::parse("shipgate/latest").unwrap(),
            BackupRef::LatestOf("shipgate".into())
        );
        let id = "shipgate.20250102T030405Z-0123abcd";
        assert_eq!(BackupRef::parse(id).unwrap(), BackupRef::Id(id.into()));
        assert_eq!(
            BackupRef::parse("shipgate/20250102T030405Z-0123abcd").unwrap(),
            BackupRef::Id(id.into())
        );
        for bad in ["", "newest", "shipgate/2025", "a/b/latest", "../x/latest"] {
            assert!(BackupRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retention_keeps_young_backups_and_the_newest_of_recent_days() {
        let policy = BackupsPolicy {
            retention_days: 2,
            keep_daily: 3,
            ..BackupsPolicy::default()
        };
        let now = ts("2025-03-10T12:00:00Z");
        let manifests: Vec<Manifest> = [
            "2025-03-10T06:00:00Z", // young
            "2025-03-09T18:00:00Z", // young, older on the same day as the next
            "2025-03-09T06:00:00Z", // young
            "2025-03-07T23:00:00Z", // newest of the 3rd day: daily
            "2025-03-07T01:00:00Z", // same day, older: delete
            "2025-03-01T01:00:00Z", // 4th day: delete
        ]
        .iter()
        .map(|s| manifest_at(s))
        .collect();
        let reasons = retention_reasons(&manifests, &policy, now);
        use KeepReason::*;
        let expect: Vec<BTreeSet<KeepReason>> = vec![
            [Retention, Daily].into(),
            [Retention, Daily].into(),
            [Retention].into(),
            [Daily].into(),
            [].into(),
            [].into(),
        ];
        assert_eq!(reasons, expect);
    }

    #[test]
    fn retention_with_no_recent_backups_still_keeps_the_last_daily_ones() {
        let policy = BackupsPolicy {
            retention_days: 1,
            keep_daily: 1,
            ..BackupsPolicy::default()
        };
        let now = ts("2026-01-01T00:00:00Z");
        let manifests: Vec<Manifest> = ["2025-01-02T00:00:00Z", "2025-01-01T00:00:00Z"]
            .iter()
            .map(|s| manifest_at(s))
            .collect();
        let reasons = retention_reasons(&manifests, &policy, now);
        assert_eq!(reasons[0], [KeepReason::Daily].into());
        assert!(reasons[1].is_empty());
    }

    #[test]
    fn content_digest_ignores_order_but_not_content() {
        let mut a = ContentDigest::default();
        let mut b = ContentDigest::default();
        for r in ["x", "y", "z"] {
            a.add(r.as_bytes());
        }
        for r in ["z", "x", "y"] {
            b.add(r.as_bytes());
        }
        assert_eq!(a, b);
        let mut c = ContentDigest::default();
        for r in ["x", "y", "y"] {
            c.add(r.as_bytes());
        }
        assert_ne!(a, c);
        assert_eq!(a.hex().len(), 64);
    }

    #[test]
    fn a_partial_restore_is_described_for_the_operator() {
        let err = JobError::RestoreFailed {
            backup_id: "shipgate.20250102T030405Z-1a2b3c4d".into(),
            target: "recovered".into(),
            written: 200,
            left: PartialRestore::Removed,
            source: Box::new(JobError::Aborted {
                table: "recovered".into(),
            }),
        };
        assert_eq!(
            err.to_string(),
            "restore of backup shipgate.20250102T030405Z-1a2b3c4d into recovered failed after \
             200 items were written; they were deleted again and the target is empty"
        );
        assert!(PartialRestore::Left
            .to_string()
            .starts_with("the target holds a partial restore"));
    }

    /// Restores over the embedded backend with a hook on the writing pass's read.
    #[cfg(feature = "embedded")]
    mod pinned {
        use std::io;
        use std::sync::Mutex;

        use async_trait::async_trait;
        use bytes::Bytes;
        use futures::stream::BoxStream;

        use super::super::*;
        use crate::backup::tables::StoreTable;
        use crate::backup::{ObjectInfo, MIN_CHUNK_SIZE};
        use crate::embedded::{Durability, LocalDirObjects, LocalKeyFile, SqliteStore};
        use crate::store::{Condition, Item, Write};

        /// What the writing pass's read meets.
        enum Hook {
            None,
            /// The object is replaced by these bytes just before the writing pass opens it.
            Replace(Bytes),
            /// The read fails after this many bytes.
            FailAfter(usize),
        }

        struct Hooked {
            inner: LocalDirObjects,
            hook: Mutex<Hook>,
        }

        struct FailingRead {
            inner: Box<dyn Read + Send>,
            left: usize,
        }

        impl Read for FailingRead {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.left == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "connection reset",
                    ));
                }
                let n = buf.len().min(self.left);
                let n = self.inner.read(&mut buf[..n])?;
                self.left -= n;
                Ok(n)
            }
        }

        #[async_trait]
        impl BackupObjects for Hooked {
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
                self.inner.get(key).await
            }
            async fn get_pinned(
                &self,
                key: &str,
            ) -> Result<(Box<dyn Read + Send>, ObjectVersion), ObjectError> {
                self.inner.get_pinned(key).await
            }
            async fn get_exact(
                &self,
                key: &str,
                version: &ObjectVersion,
            ) -> Result<Box<dyn Read + Send>, ObjectError> {
                let hook = std::mem::replace(&mut *self.hook.lock().unwrap(), Hook::None);
                match hook {
                    Hook::None => self.inner.get_exact(key, version).await,
                    Hook::Replace(bytes) => {
                        self.inner.put_small(key, bytes).await?;
                        self.inner.get_exact(key, version).await
                    }
                    Hook::FailAfter(left) => Ok(Box::new(FailingRead {
                        inner: self.inner.get_exact(key, version).await?,
                        left,
                    })),
                }
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

        struct Fixture {
            dir: tempfile::TempDir,
            objects: Arc<Hooked>,
            deps: BackupDeps,
        }

        fn item(i: usize) -> Item {
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
                sk: "V".into(),
                version: 1,
                expires_at: None,
                timeline: None,
                data: format!(r#"{{"n":{i},"noise":"{noise}"}}"#),
            }
        }

        impl Fixture {
            fn new() -> Self {
                let dir = tempfile::tempdir().unwrap();
                let objects = Arc::new(Hooked {
                    inner: LocalDirObjects::new(dir.path().join("objects")),
                    hook: Mutex::new(Hook::None),
                });
                let deps = BackupDeps::new(
                    objects.clone(),
                    Arc::new(LocalKeyFile::new(dir.path().join("master.key"))),
                    "backups",
                )
                .with_chunk_size(MIN_CHUNK_SIZE);
                Fixture { dir, objects, deps }
            }

            fn table(&self, file: &str) -> StoreTable {
                let store =
                    SqliteStore::open(self.dir.path().join(file), Durability::Normal).unwrap();
                StoreTable::new("shipgate", Arc::new(store))
            }

            /// A backup of items `range` from a source of its own.
            async fn backup(&self, file: &str, range: std::ops::Range<usize>) -> Manifest {
                let source = self.table(file);
                let writes: Vec<Write> = range
                    .map(|i| Write::Put {
                        item: item(i),
                        condition: Condition::None,
                    })
                    .collect();
                for batch in writes.chunks(100) {
                    source.store().transact(batch.to_vec()).await.unwrap();
                }
                backup_table(&self.deps, &source, Timestamp::now(), None)
                    .await
                    .unwrap()
            }

            fn object_bytes(&self, manifest: &Manifest) -> Bytes {
                let key = self.deps.object_key(&manifest.source, &manifest.backup_id);
                Bytes::from(std::fs::read(self.dir.path().join("objects").join(key)).unwrap())
            }

            fn hook(&self, hook: Hook) {
                *self.objects.hook.lock().unwrap() = hook;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_object_replaced_after_verification_is_refused_and_nothing_is_written() {
            let fx = Fixture::new();
            let manifest = fx.backup("a.db", 0..300).await;
            let other = fx.backup("b.db", 1000..1300).await;
            fx.hook(Hook::Replace(fx.object_bytes(&other)));
            let target = fx.table("target.db");

            let err = restore(&fx.deps, &manifest.backup_id, &target, false, None)
                .await
                .unwrap_err();
            let chain = error_chain(&err);
            let key = fx.deps.object_key("shipgate", &manifest.backup_id);
            assert!(
                chain.starts_with(&format!(
                    "restore of backup {} refused before writing anything: object {key} \
                     changed after verification: it was replaced or modified",
                    manifest.backup_id
                )),
                "{chain}"
            );
            let JobError::RestoreRefused { source, .. } = err else {
                unreachable!()
            };
            assert!(
                matches!(*source, JobError::ChangedAfterVerification(_)),
                "{source:?}"
            );
            assert_eq!(target.count().await.unwrap(), 0);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_read_failing_part_way_leaves_the_empty_target_empty() {
            let fx = Fixture::new();
            let manifest = fx.backup("a.db", 0..2000).await;
            fx.hook(Hook::FailAfter(manifest.encrypted_bytes as usize * 3 / 4));
            let target = fx.table("target.db");

            let err = restore(&fx.deps, &manifest.backup_id, &target, false, None)
                .await
                .unwrap_err();
            let JobError::RestoreFailed {
                written,
                left,
                source,
                ..
            } = &err
            else {
                panic!("{err:?}")
            };
            assert!(*written > 0, "the failure came after some batches");
            assert_eq!(*left, PartialRestore::Removed);
            assert!(matches!(**source, JobError::Read { .. }), "{source:?}");
            assert!(
                error_chain(&err).contains(
                    "items were written; they were deleted again and the target is empty: \
                     reading backup"
                ),
                "{}",
                error_chain(&err)
            );
            assert_eq!(target.count().await.unwrap(), 0);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_forced_restore_failing_part_way_says_what_it_left() {
            let fx = Fixture::new();
            let manifest = fx.backup("a.db", 0..2000).await;
            fx.hook(Hook::FailAfter(manifest.encrypted_bytes as usize * 3 / 4));
            let target = fx.table("target.db");
            let mut own = item(99_999);
            own.pk = "OWN".into();
            target
                .store()
                .transact(vec![Write::Put {
                    item: own,
                    condition: Condition::None,
                }])
                .await
                .unwrap();

            let err = restore(&fx.deps, &manifest.backup_id, &target, true, None)
                .await
                .unwrap_err();
            let JobError::RestoreFailed { written, left, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(*left, PartialRestore::Left);
            assert!(err
                .to_string()
                .contains("the target holds a partial restore"));
            // A forced restore never deletes what was there.
            assert_eq!(target.count().await.unwrap(), written + 1);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_drill_refuses_an_object_replaced_after_verification() {
            let fx = Fixture::new();
            let manifest = fx.backup("a.db", 0..300).await;
            let other = fx.backup("b.db", 1000..1300).await;
            // The drill restores the newest backup: make the one it picks be replaced.
            let newest = list(&fx.deps, Some("shipgate")).await.unwrap().remove(0);
            let (picked, replacement) = if newest.backup_id == manifest.backup_id {
                (manifest, other)
            } else {
                (other, manifest)
            };
            fx.hook(Hook::Replace(fx.object_bytes(&replacement)));
            let scratch = fx.table("scratch.db");
            let probe = scratch.clone();

            let err = restore_drill(
                &fx.deps,
                "shipgate",
                |_| async move { Ok(Box::new(scratch) as Box<dyn ScratchTable>) },
                Timestamp::now(),
            )
            .await
            .unwrap_err();
            assert!(
                matches!(err, JobError::ChangedAfterVerification(_)),
                "{err:?}"
            );
            assert!(error_chain(&err).contains(&picked.backup_id), "{err}");
            assert_eq!(probe.count().await.unwrap(), 0);
        }
    }
}
