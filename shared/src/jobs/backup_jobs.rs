//! The `backup` and `restore-drill` jobs: [`TableBackups`] implements [`BackupJobs`] on top of
//! [`jobs::backup`](super::backup), configured either for AWS (S3 objects, KMS data keys,
//! DynamoDB source and scratch tables) or for the embedded backend (a local directory, a local
//! master key file, the SQLite store, throw-away SQLite scratch files).
//!
//! Backups are filed under the table's *logical* name: shipgate's own table is always
//! `shipgate`, whatever the stack called the DynamoDB table. A CloudFormation-generated name
//! changes when the table is replaced and can exceed the 102 characters a backup id leaves for
//! the table, and operators should be able to write `shipgate/latest` on either backend.
//!
//! The CLI builds the same value ([`TableBackups::embedded`] or [`TableBackups::aws`]) and uses
//! [`TableBackups::deps`] and [`TableBackups::source`] for `backup list|verify|restore`, so
//! it reads exactly what the scheduled jobs write.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use aws_config::SdkConfig;
use serde_json::{json, Value};

use super::backup::{self, BackupDeps, DrillReport, PruneReport};
use super::emf::{self, Unit};
use super::tables::{
    DynamoTable, ScanPage, ScratchTable, StoreTable, TableError, TableSink, TableSource,
};
use super::{BackupJobs, JobError, JobName, JobOutcome, MetricSink};
use crate::backup::{s3_client, KmsKeys, LocalDirObjects, LocalKeyFile, Manifest, S3Objects};
use crate::config::{self, ConfigError, Vars};
use crate::domain::policy::{Policy, SHIPGATE_TABLE};
use crate::service::Services;
use crate::store::sqlite::{Durability, SqliteStore};
use crate::store::{ItemStore, StoreError};

/// S3 bucket the backups go to.
pub const BACKUP_BUCKET_VAR: &str = "SHIPGATE_BACKUP_BUCKET";
/// KMS key (id, ARN or alias) that wraps each backup's data key.
pub const KMS_KEY_VAR: &str = "SHIPGATE_KMS_KEY_ID";
/// Prefix of the throw-away tables restore drills create; IAM scopes `CreateTable` and
/// `DeleteTable` to it. Defaults to `{SHIPGATE_TABLE}-scratch-`.
pub const SCRATCH_PREFIX_VAR: &str = "SHIPGATE_SCRATCH_TABLE_PREFIX";
/// The real name of shipgate's own DynamoDB table.
pub const STATE_TABLE_VAR: &str = "SHIPGATE_TABLE";
/// Key prefix of every backup object in the S3 bucket.
pub const S3_PREFIX: &str = "backups";
/// Embedded backend: backup objects live in `DIR/backups/`.
pub const EMBEDDED_BACKUP_DIR: &str = "backups";
/// Embedded backend: the master key file, `DIR/backup.key` (mode 0600).
pub const EMBEDDED_KEY_FILE: &str = "backup.key";
/// Embedded backend: restore drills' temporary SQLite files, `DIR/scratch/`.
pub const EMBEDDED_SCRATCH_DIR: &str = "scratch";

/// DynamoDB's longest table name.
const DYNAMO_MAX_TABLE_NAME: usize = 255;
/// `-` and 8 hex digits after the table name in a scratch table's name.
const SCRATCH_SUFFIX_LEN: usize = 9;

/// Why the backup jobs could not be configured. Raised at cold start, never mid-job.
#[derive(Debug, thiserror::Error)]
pub enum BackupConfigError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the policy's [backups] tables lists {table:?}, which cannot be backed up")]
    Table {
        table: String,
        #[source]
        source: backup::JobError,
    },
    #[error("cannot create the backup directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One table the jobs back up and drill.
#[derive(Clone)]
struct BackedUp {
    /// Reads the table; its `name()` is the logical name backups are filed under.
    source: Arc<dyn TableSource>,
    /// The table's real name where it differs (DynamoDB); scratch tables copy its schema.
    physical: String,
}

/// Makes the empty table a restore drill restores into.
#[derive(Clone)]
enum ScratchFactory {
    /// `DynamoTable::create_like(source, "{prefix}{table}-{short id}")`, deleted on discard.
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        prefix: String,
    },
    /// A fresh SQLite file `{dir}/{table}-{short id}.db`, deleted on discard.
    SqliteDir { dir: PathBuf },
}

impl ScratchFactory {
    async fn create(
        &self,
        table: &str,
        physical: &str,
    ) -> Result<Box<dyn ScratchTable>, TableError> {
        let short = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{table}-{}", &short[..8]);
        match self {
            ScratchFactory::Dynamo { client, prefix } => {
                let target = format!("{prefix}{name}");
                let created = DynamoTable::create_like(client.clone(), physical, &target).await?;
                Ok(Box::new(created))
            }
            ScratchFactory::SqliteDir { dir } => Ok(Box::new(
                SqliteScratch::create(dir.join(format!("{name}.db")), name).await?,
            )),
        }
    }
}

/// The backup and restore-drill jobs over a fixed set of tables.
pub struct TableBackups {
    deps: BackupDeps,
    tables: Vec<BackedUp>,
    scratch: ScratchFactory,
    metrics: MetricSink,
}

impl std::fmt::Debug for TableBackups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBackups")
            .field("deps", &self.deps)
            .field("tables", &self.tables())
            .finish_non_exhaustive()
    }
}

impl TableBackups {
    /// Backups on AWS: objects in the S3 bucket `SHIPGATE_BACKUP_BUCKET` under `backups/`,
    /// data keys from the KMS key `SHIPGATE_KMS_KEY_ID`, shipgate's table (`SHIPGATE_TABLE`)
    /// filed as `shipgate` plus every other table of the policy's `[backups] tables` under its
    /// own name, and drill scratch tables named `{SHIPGATE_SCRATCH_TABLE_PREFIX}{table}-{id}`.
    ///
    /// Builds clients only; nothing is called until a job runs.
    pub fn aws(
        sdk: &SdkConfig,
        vars: &dyn Vars,
        policy: &Policy,
    ) -> Result<Self, BackupConfigError> {
        let bucket = config::required(vars, BACKUP_BUCKET_VAR)?;
        let key_id = config::required(vars, KMS_KEY_VAR)?;
        let state_table = config::required(vars, STATE_TABLE_VAR)?;
        let prefix = config::optional(vars, SCRATCH_PREFIX_VAR)
            .unwrap_or_else(|| format!("{state_table}-scratch-"));
        check_scratch_prefix(&prefix)?;

        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let deps = BackupDeps::new(
            Arc::new(S3Objects::new(s3_client(sdk), bucket)),
            Arc::new(KmsKeys::new(aws_sdk_kms::Client::new(sdk), key_id)),
            S3_PREFIX,
        );
        let mut tables = vec![BackedUp {
            source: Arc::new(Renamed {
                name: SHIPGATE_TABLE.to_owned(),
                inner: Arc::new(DynamoTable::new(dynamo.clone(), state_table.clone())),
            }),
            physical: state_table.clone(),
        }];
        for table in &policy.backups().tables {
            // Listing the real name of shipgate's table as well would back it up twice.
            if table == SHIPGATE_TABLE || *table == state_table {
                continue;
            }
            backup::validate_table_name(table).map_err(|source| BackupConfigError::Table {
                table: table.clone(),
                source,
            })?;
            tables.push(BackedUp {
                source: Arc::new(DynamoTable::new(dynamo.clone(), table.clone())),
                physical: table.clone(),
            });
        }
        Ok(TableBackups {
            deps,
            tables,
            scratch: ScratchFactory::Dynamo {
                client: dynamo,
                prefix,
            },
            metrics: MetricSink::Stdout,
        })
    }

    /// Backups of the self-hosted binary's store: objects in `DIR/backups/`, the master key in
    /// `DIR/backup.key` (created with mode 0600 on the first backup), the one table `shipgate`
    /// over `store`, and drill scratch stores as temporary SQLite files in `DIR/scratch/`
    /// (mode 0700: a restored store is plaintext), each deleted when its drill ends.
    pub fn embedded(data_dir: &Path, store: Arc<dyn ItemStore>) -> Result<Self, BackupConfigError> {
        let objects = data_dir.join(EMBEDDED_BACKUP_DIR);
        std::fs::create_dir_all(&objects).map_err(|source| BackupConfigError::Dir {
            path: objects.clone(),
            source,
        })?;
        let scratch = data_dir.join(EMBEDDED_SCRATCH_DIR);
        private_dir(&scratch).map_err(|source| BackupConfigError::Dir {
            path: scratch.clone(),
            source,
        })?;
        let deps = BackupDeps::new(
            Arc::new(LocalDirObjects::new(objects)),
            Arc::new(LocalKeyFile::new(data_dir.join(EMBEDDED_KEY_FILE))),
            "",
        );
        Ok(TableBackups {
            deps,
            tables: vec![BackedUp {
                source: Arc::new(StoreTable::new(SHIPGATE_TABLE, store)),
                physical: SHIPGATE_TABLE.to_owned(),
            }],
            scratch: ScratchFactory::SqliteDir { dir: scratch },
            metrics: MetricSink::Stdout,
        })
    }

    /// Where per-table figures (items backed up, RPO, RTO) go; standard output by default.
    pub fn with_metrics(mut self, metrics: MetricSink) -> Self {
        self.metrics = metrics;
        self
    }

    /// Object storage, keys and prefix: what `backup list|verify|restore` need.
    pub fn deps(&self) -> &BackupDeps {
        &self.deps
    }

    /// The logical names of the tables backed up, shipgate's own first.
    pub fn tables(&self) -> Vec<&str> {
        self.tables.iter().map(|t| t.source.name()).collect()
    }

    /// The source of `table`, by logical name (`shipgate`) or by real table name.
    pub fn source(&self, table: &str) -> Option<Arc<dyn TableSource>> {
        self.find(table).map(|t| Arc::clone(&t.source))
    }

    /// The real name of `table` (on AWS, `SHIPGATE_TABLE` for `shipgate`): what a restore
    /// target is created like.
    pub fn physical_table(&self, table: &str) -> Option<&str> {
        self.find(table).map(|t| t.physical.as_str())
    }

    fn find(&self, table: &str) -> Option<&BackedUp> {
        self.tables
            .iter()
            .find(|t| t.source.name() == table || t.physical == table)
    }

    fn emit(&self, svc: &Services, table: &str, metric: &str, unit: Unit, value: f64) {
        self.metrics.emit(emf::line(
            svc.now(),
            &[("Table", table)],
            metric,
            unit,
            value,
        ));
    }
}

fn check_scratch_prefix(prefix: &str) -> Result<(), ConfigError> {
    let longest = DYNAMO_MAX_TABLE_NAME - backup::MAX_TABLE_NAME_LEN - SCRATCH_SUFFIX_LEN;
    let valid_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if prefix.len() > longest || !prefix.bytes().all(valid_char) {
        return Err(ConfigError::Invalid {
            var: SCRATCH_PREFIX_VAR.to_owned(),
            reason: format!(
                "use at most {longest} characters of A-Z a-z 0-9 - _ . (DynamoDB table names)"
            ),
        });
    }
    Ok(())
}

/// Creates `dir` (and its parents) readable by the owner only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // `mode` applies only to directories it creates.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cause = e.source();
    }
    line
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An age for people: `45s`, `12m05s`, `3h12m`, `2d04h`.
fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A duration measured in seconds: `4.2s` below a minute, then `2m05s`.
fn elapsed(seconds: f64) -> String {
    if seconds < 59.95 {
        format!("{seconds:.1}s")
    } else {
        // Whole seconds are precise enough past a minute.
        age(seconds.round() as i64)
    }
}

fn items(n: u64) -> String {
    format!("{} item{}", thousands(n), if n == 1 { "" } else { "s" })
}

fn manifest_details(m: &Manifest) -> Value {
    json!({
        "table": m.source,
        "backup_id": m.backup_id,
        "created_at": m.created_at,
        "items": m.items,
        "plaintext_bytes": m.plaintext_bytes,
        "compressed_bytes": m.compressed_bytes,
        "encrypted_bytes": m.encrypted_bytes,
        "plaintext_sha256": m.plaintext_sha256,
    })
}

fn prune_details(report: &PruneReport) -> Value {
    json!({
        "deleted": report.deleted,
        "orphans_deleted": report.orphans_deleted,
        "kept": report.kept.len(),
        "unreadable": report.unreadable,
        "tables_without_good_backup": report.tables_without_good_backup,
    })
}

/// Why a drill that ran to the end did not pass, for the summary.
fn drill_problems(r: &DrillReport) -> Vec<String> {
    let mut problems = Vec::new();
    if !r.bad_backups.is_empty() {
        problems.push(format!(
            "{} newer backup{} failed verification (newest: {})",
            r.bad_backups.len(),
            if r.bad_backups.len() == 1 { "" } else { "s" },
            r.bad_backups[0].error
        ));
    }
    if r.restored_items != r.items {
        problems.push(format!(
            "restored {} of {}",
            thousands(r.restored_items),
            items(r.items)
        ));
    }
    if !r.sha256_ok {
        problems.push("the restored content does not match the backup".to_owned());
    }
    if problems.is_empty() && !r.ok {
        problems.push("the drill did not pass".to_owned());
    }
    problems
}

#[async_trait]
impl BackupJobs for TableBackups {
    /// Backs up every table (all of them even when one fails), then prunes with the policy's
    /// retention. A table that could not be backed up fails the job naming the table; nothing
    /// is pruned then. A prune failure, or a table prune found no verifiable backup of, makes
    /// the outcome not ok.
    async fn backup(&self, svc: &Services) -> Result<JobOutcome, JobError> {
        let now = svc.now();
        let mut manifests = Vec::new();
        let mut failures = Vec::new();
        for table in &self.tables {
            let name = table.source.name();
            match backup::backup_table(&self.deps, table.source.as_ref(), now, None).await {
                Ok(manifest) => {
                    self.emit(svc, name, "BackupItems", Unit::Count, manifest.items as f64);
                    manifests.push(manifest);
                }
                Err(e) => {
                    tracing::error!(table = %name, error = %error_chain(&e), "table backup failed");
                    failures.push((name.to_owned(), e));
                }
            }
        }
        let done: Vec<String> = manifests
            .iter()
            .map(|m| format!("{} {}", m.source, items(m.items)))
            .collect();

        if !failures.is_empty() {
            let mut message = failures
                .iter()
                .map(|(table, e)| format!("table {table}: {}", error_chain(e)))
                .collect::<Vec<_>>()
                .join("; ");
            if !done.is_empty() {
                message.push_str(&format!(" (backed up: {})", done.join(", ")));
            }
            let (_, first) = failures.swap_remove(0);
            return Err(JobError::Failed {
                job: JobName::Backup,
                message,
                source: Some(Box::new(first)),
            });
        }

        let tables = format!(
            "backed up {} table{}: {}",
            manifests.len(),
            if manifests.len() == 1 { "" } else { "s" },
            done.join(", ")
        );
        let backups: Vec<Value> = manifests.iter().map(manifest_details).collect();
        let outcome = match backup::prune(&self.deps, svc.policy.backups(), now).await {
            Ok(report) => {
                let pruned = report.deleted.len() + report.orphans_deleted.len();
                let mut summary = format!("{tables}; pruned {pruned}");
                if !report.unreadable.is_empty() {
                    summary.push_str(&format!(
                        "; {} unreadable manifest(s) left alone",
                        report.unreadable.len()
                    ));
                }
                let details = json!({ "backups": backups, "prune": prune_details(&report) });
                if report.tables_without_good_backup.is_empty() {
                    JobOutcome::ok(summary, details)
                } else {
                    summary.push_str(&format!(
                        "; no backup of {} passes verification",
                        report.tables_without_good_backup.join(", ")
                    ));
                    JobOutcome::failed(summary, details)
                }
            }
            Err(e) => {
                let chain = error_chain(&e);
                tracing::error!(error = %chain, "pruning backups failed");
                JobOutcome::failed(
                    format!("{tables}; prune failed: {chain}"),
                    json!({ "backups": backups, "prune": { "error": chain } }),
                )
            }
        };
        Ok(outcome.announced())
    }

    /// Backs up each named table in turn, stopping at the first failure (a deployment waits
    /// on all of them, so one failure fails the attempt).
    async fn backup_tables(
        &self,
        svc: &Services,
        tables: &[String],
    ) -> Result<Vec<Manifest>, JobError> {
        let now = svc.now();
        let mut manifests = Vec::with_capacity(tables.len());
        for name in tables {
            let table = self.find(name).ok_or_else(|| JobError::Failed {
                job: JobName::Backup,
                message: format!(
                    "table {name} is not one of the backed-up tables ({})",
                    self.tables().join(", ")
                ),
                source: None,
            })?;
            let manifest = backup::backup_table(&self.deps, table.source.as_ref(), now, None)
                .await
                .map_err(|e| JobError::Failed {
                    job: JobName::Backup,
                    message: format!("table {name}: {}", error_chain(&e)),
                    source: Some(Box::new(e)),
                })?;
            self.emit(svc, name, "BackupItems", Unit::Count, manifest.items as f64);
            manifests.push(manifest);
        }
        Ok(manifests)
    }

    /// Drills every table into a fresh scratch table; the outcome is ok only if every drill
    /// ran to the end and passed. Per table the details carry the drill report (RPO, RTO,
    /// counts, digests) or the error that stopped it.
    async fn restore_drill(&self, svc: &Services) -> Result<JobOutcome, JobError> {
        let now = svc.now();
        let mut all_ok = true;
        let mut parts = Vec::new();
        let mut tables = Vec::new();
        for table in &self.tables {
            let name = table.source.name();
            let scratch = &self.scratch;
            let drilled = backup::restore_drill(
                &self.deps,
                name,
                |_| scratch.create(name, &table.physical),
                now,
            )
            .await;
            match drilled {
                Ok(report) => {
                    self.emit(
                        svc,
                        name,
                        "RestoreDrillRPO",
                        Unit::Seconds,
                        report.rpo_seconds as f64,
                    );
                    self.emit(
                        svc,
                        name,
                        "RestoreDrillRTO",
                        Unit::Seconds,
                        report.rto_seconds,
                    );
                    let mut part = format!(
                        "{name} {}, RPO {}, RTO {}",
                        items(report.items),
                        age(report.rpo_seconds),
                        elapsed(report.rto_seconds)
                    );
                    if !report.ok {
                        all_ok = false;
                        part.push_str(&format!(
                            " — FAILED: {}",
                            drill_problems(&report).join(", ")
                        ));
                    }
                    if !report.scratch_discarded {
                        part.push_str(&format!(
                            " (scratch table {} was left behind)",
                            report.scratch_table
                        ));
                    }
                    parts.push(part);
                    tables.push(serde_json::to_value(&report).unwrap_or_else(
                        |e| json!({ "table": name, "ok": report.ok, "error": e.to_string() }),
                    ));
                }
                Err(e) => {
                    all_ok = false;
                    let chain = error_chain(&e);
                    tracing::error!(table = %name, error = %chain, "restore drill could not run");
                    parts.push(format!("{name} FAILED: {chain}"));
                    tables.push(json!({ "table": name, "ok": false, "error": chain }));
                }
            }
        }
        let details = json!({ "tables": tables });
        let outcome = if all_ok {
            JobOutcome::ok(
                format!("restore drill passed: {}", parts.join("; ")),
                details,
            )
        } else {
            JobOutcome::failed(
                format!("restore drill failed: {}", parts.join("; ")),
                details,
            )
        };
        Ok(outcome.announced())
    }
}

// ---------------------------------------------------------------------------------------------
// Sources and scratch tables

/// A source filed under another name than the table's own (shipgate's DynamoDB table).
struct Renamed {
    name: String,
    inner: Arc<dyn TableSource>,
}

#[async_trait]
impl TableSource for Renamed {
    fn name(&self) -> &str {
        &self.name
    }

    async fn scan_segment(
        &self,
        segment: u32,
        total: u32,
        cursor: Option<String>,
    ) -> Result<ScanPage, TableError> {
        self.inner.scan_segment(segment, total, cursor).await
    }
}

/// A drill's scratch store: a [`StoreTable`] over its own SQLite file, which
/// [`discard`](ScratchTable::discard) closes and deletes (with its WAL files). Dropped without
/// a discard, it deletes the file too.
struct SqliteScratch {
    name: String,
    path: PathBuf,
    /// `None` once discarded: the connection must be closed before the file goes.
    table: Mutex<Option<StoreTable>>,
}

impl SqliteScratch {
    async fn create(path: PathBuf, name: String) -> Result<Self, TableError> {
        let open_at = path.clone();
        let store =
            tokio::task::spawn_blocking(move || SqliteStore::open(open_at, Durability::Normal))
                .await
                .map_err(|e| StoreError::backend("opening the scratch database", e))
                .and_then(|opened| opened)
                .map_err(|source| TableError::Store {
                    table: name.clone(),
                    source,
                })?;
        let table = StoreTable::new(name.clone(), Arc::new(store));
        Ok(SqliteScratch {
            name,
            path,
            table: Mutex::new(Some(table)),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Option<StoreTable>> {
        // A poisoning panic cannot leave an `Option` half-written.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self) -> Result<StoreTable, TableError> {
        self.slot().clone().ok_or_else(|| TableError::Schema {
            table: self.name.clone(),
            reason: "the scratch table was already discarded".to_owned(),
        })
    }

    fn remove_files(path: &Path) -> std::io::Result<()> {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for SqliteScratch {
    fn drop(&mut self) {
        let table = self
            .table
            .get_mut()
            .map(Option::take)
            .unwrap_or_else(|p| p.into_inner().take());
        if table.is_some() {
            drop(table);
            if let Err(e) = Self::remove_files(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not delete a scratch database");
            }
        }
    }
}

#[async_trait]
impl TableSource for SqliteScratch {
    fn name(&self) -> &str {
        &self.name
    }

    async fn scan_segment(
        &self,
        segment: u32,
        total: u32,
        cursor: Option<String>,
    ) -> Result<ScanPage, TableError> {
        self.table()?.scan_segment(segment, total, cursor).await
    }
}

#[async_trait]
impl TableSink for SqliteScratch {
    fn name(&self) -> &str {
        &self.name
    }

    async fn is_empty(&self) -> Result<bool, TableError> {
        self.table()?.is_empty().await
    }

    async fn write_batch(&self, records: Vec<String>) -> Result<(), TableError> {
        self.table()?.write_batch(records).await
    }

    async fn count(&self) -> Result<u64, TableError> {
        self.table()?.count().await
    }
}

#[async_trait]
impl ScratchTable for SqliteScratch {
    async fn discard(&self) -> Result<(), TableError> {
        let table = self.slot().take();
        let path = self.path.clone();
        // Closing SQLite checkpoints the WAL: blocking work.
        let removed = tokio::task::spawn_blocking(move || {
            drop(table);
            Self::remove_files(&path)
        })
        .await;
        let failed = match removed {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => StoreError::backend(
                format!("deleting the scratch database {}", self.path.display()),
                e,
            ),
            Err(e) => StoreError::backend("the scratch cleanup task", e),
        };
        Err(TableError::Store {
            table: self.name.clone(),
            source: failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_read_naturally() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234), "1,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(items(1), "1 item");
        assert_eq!(items(1_234), "1,234 items");
        assert_eq!(age(45), "45s");
        assert_eq!(age(12 * 60 + 5), "12m05s");
        assert_eq!(age(3 * 3600 + 12 * 60 + 59), "3h12m");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2d04h");
        assert_eq!(age(-3), "0s");
        assert_eq!(elapsed(4.21), "4.2s");
        assert_eq!(elapsed(125.4), "2m05s");
    }

    #[tokio::test]
    async fn sqlite_scratch_files_are_deleted_on_discard_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let factory = ScratchFactory::SqliteDir {
            dir: dir.path().to_owned(),
        };
        let record = r#"{"pk":"A","sk":"B","version":1,"data":"{}"}"#.to_owned();

        let discarded = factory.create("shipgate", "shipgate").await.unwrap();
        discarded.write_batch(vec![record.clone()]).await.unwrap();
        assert_eq!(discarded.count().await.unwrap(), 1);
        assert_ne!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        discarded.discard().await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(
            discarded.count().await.is_err(),
            "a discarded scratch table is gone"
        );
        discarded.discard().await.unwrap();

        let dropped = factory.create("shipgate", "shipgate").await.unwrap();
        dropped.write_batch(vec![record]).await.unwrap();
        drop(dropped);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn scratch_prefixes_must_be_dynamodb_table_name_characters_with_room_for_the_table() {
        assert!(check_scratch_prefix("prod-stack-scratch-").is_ok());
        assert!(check_scratch_prefix("").is_ok());
        assert!(check_scratch_prefix("bad prefix/").is_err());
        assert!(check_scratch_prefix(&"p".repeat(200)).is_err());
    }
}
