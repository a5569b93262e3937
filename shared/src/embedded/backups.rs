//! Backups of the self-hosted binary: [`TableBackups::embedded`] wires the backup jobs to a
//! local directory of objects, a local master key file, the SQLite store, and throw-away
//! SQLite files for restore drills.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::key_file::LocalKeyFile;
use super::objects::LocalDirObjects;
use super::sqlite::{Durability, SqliteStore};
use crate::backup::operations::BackupDeps;
use crate::backup::tables::{
    ScanPage, ScratchTable, ScratchTables, StoreTable, TableError, TableSink, TableSource,
};
use crate::domain::policy::SHIPGATE_TABLE;
use crate::jobs::backup::{BackedUp, BackupConfigError, TableBackups};
use crate::jobs::MetricSink;
use crate::store::{ItemStore, StoreError};

/// Backup objects live in `DIR/backups/`.
pub const EMBEDDED_BACKUP_DIR: &str = "backups";
/// The master key file, `DIR/backup.key` (mode 0600).
pub const EMBEDDED_KEY_FILE: &str = "backup.key";
/// Restore drills' temporary SQLite files, `DIR/scratch/`.
pub const EMBEDDED_SCRATCH_DIR: &str = "scratch";

impl TableBackups {
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
            scratch: Arc::new(SqliteScratchDir { dir: scratch }),
            metrics: MetricSink::Stdout,
        })
    }
}

/// Restore drills' scratch stores: a fresh SQLite file `{dir}/{table}-{short id}.db`, deleted
/// on discard.
struct SqliteScratchDir {
    dir: PathBuf,
}

#[async_trait]
impl ScratchTables for SqliteScratchDir {
    async fn create(
        &self,
        table: &str,
        _physical: &str,
    ) -> Result<Box<dyn ScratchTable>, TableError> {
        let short = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{table}-{}", &short[..8]);
        Ok(Box::new(
            SqliteScratch::create(self.dir.join(format!("{name}.db")), name).await?,
        ))
    }
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

    async fn clear(&self) -> Result<bool, TableError> {
        self.table()?.clear().await
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

    #[tokio::test]
    async fn sqlite_scratch_files_are_deleted_on_discard_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let factory = SqliteScratchDir {
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
}
