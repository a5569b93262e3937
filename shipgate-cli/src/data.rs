//! The data directory and the policy file, as every command opens them.
//!
//! Layout of the data directory: `shipgate.db` (the SQLite state, WAL mode, so also
//! `shipgate.db-wal` and `shipgate.db-shm` while it is open).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shipgate::domain::policy::{Policy, PolicyLoadError};
use shipgate::embedded::sqlite::{Durability, SqliteStore};
use shipgate::store::Repo;

use crate::error::CliError;

/// The state file's name inside the data directory.
pub(crate) const DB_FILE: &str = "shipgate.db";

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Opens the state for the server, creating the directory and the database when missing.
/// `--sync`: how hard each commit of the embedded store waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// `synchronous=FULL`: an answered event survives a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: an answered event survives a crash of shipgate; the last commits
    /// before a power loss may be lost (the database stays consistent).
    Normal,
}

impl SyncMode {
    /// What a report says about the store.
    pub fn describe(self) -> &'static str {
        match self {
            SyncMode::Full => {
                "SQLite, WAL, synchronous=FULL, group commit (every event on disk before its answer)"
            }
            SyncMode::Normal => {
                "SQLite, WAL, synchronous=NORMAL, group commit (every event committed before its answer; the last ones may be lost on power loss)"
            }
        }
    }
}

impl From<SyncMode> for Durability {
    fn from(mode: SyncMode) -> Self {
        match mode {
            SyncMode::Full => Durability::Full,
            SyncMode::Normal => Durability::Normal,
        }
    }
}

/// Creates the data directory (mode 0700, whatever the umask) when missing, refuses one that
/// others can write, and opens the state in it (the database files are private: see
/// [`SqliteStore::open`]).
pub(crate) fn create_or_open(data_dir: &Path, durability: Durability) -> Result<Repo, CliError> {
    private_dir(data_dir)?;
    open_path(db_path(data_dir), durability)
}

/// Makes `dir` (and missing parents) with mode 0700; an existing directory that group or
/// others may write is refused.
pub(crate) fn private_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| CliError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        // The umask can only take bits away; set the mode exactly all the same.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        return Ok(());
    }
    let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(CliError::DataDirWritableByOthers {
            path: dir.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

/// Opens existing state for the operator commands; a wrong `--data` must not silently
/// create an empty database and report "nothing happened".
pub fn open_existing(data_dir: &Path) -> Result<Repo, CliError> {
    let path = db_path(data_dir);
    if !path.is_file() {
        return Err(CliError::NoDatabase { path });
    }
    open_path(path, Durability::Full)
}

fn open_path(path: PathBuf, durability: Durability) -> Result<Repo, CliError> {
    let store =
        SqliteStore::open(&path, durability).map_err(|source| CliError::Store { path, source })?;
    Ok(Repo::new(Arc::new(store)))
}

/// Loads and validates the policy; errors carry every `FILE:LINE:COLUMN` problem.
pub fn load_policy(path: &Path) -> Result<Policy, CliError> {
    Policy::load(path).map_err(|e| match e {
        PolicyLoadError::Read { path, source } => CliError::Read { path, source },
        PolicyLoadError::Invalid(errors) => CliError::Policy(errors),
    })
}
