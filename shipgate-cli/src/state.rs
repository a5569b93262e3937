//! Where an operator command finds shipgate's state: a data directory (`--data DIR`, the
//! SQLite store `shipgate serve` writes) or, in a build with the `aws` feature, a deployed
//! stack (`--stack NAME`, or `--table T` and the options next to it; see [`crate::aws`]).
//! Every operator command reads and writes through the same [`Repo`] either way, so its output
//! and `--json` are the same on both stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shipgate::backup::operations::BackupDeps;
use shipgate::backup::tables::{StoreTable, TableSink};
use shipgate::domain::policy::Policy;
use shipgate::embedded::sqlite::{Durability, SqliteStore};
use shipgate::jobs::backup::TableBackups;
use shipgate::store::Repo;

use crate::data;
use crate::error::CliError;

/// The variable `--data` defaults to.
pub const DATA_DIR_VAR: &str = "SHIPGATE_DATA_DIR";

/// Where the restores `--into NAME` go inside the data directory.
pub const RESTORES_DIR: &str = "restores";

/// The command line's choice of store.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Data directory of `shipgate serve`; the state is `DIR/shipgate.db` [env:
    /// SHIPGATE_DATA_DIR, which an explicit stack or table overrides].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    #[cfg(feature = "aws")]
    #[command(flatten)]
    pub aws: crate::aws::AwsArgs,
}

/// An operator command's store.
pub enum State {
    /// `--data DIR`.
    Embedded { data_dir: PathBuf },
    /// `--stack NAME` or `--table T`.
    #[cfg(feature = "aws")]
    Aws(Box<crate::aws::AwsState>),
}

impl StateArgs {
    /// The store the command line names: `--data` or `--stack`/`--table` (clap refuses
    /// both), else `SHIPGATE_DATA_DIR`. The variable is read here rather than by clap so that
    /// it gives way to an explicit stack or table instead of conflicting with it.
    pub async fn resolve(self) -> Result<State, CliError> {
        #[cfg(feature = "aws")]
        if self.aws.given() {
            return Ok(State::Aws(Box::new(
                crate::aws::AwsState::resolve(self.aws).await?,
            )));
        }
        let from_env = || {
            std::env::var_os(DATA_DIR_VAR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        match self.data.or_else(from_env) {
            Some(data_dir) => Ok(State::Embedded { data_dir }),
            None => Err(CliError::Usage(NO_STATE.to_owned())),
        }
    }
}

#[cfg(feature = "aws")]
const NO_STATE: &str =
    "give --data DIR (or SHIPGATE_DATA_DIR) for shipgate serve's store, or --stack NAME (or --table T) for a stack on AWS";
#[cfg(not(feature = "aws"))]
const NO_STATE: &str = "give --data DIR (or SHIPGATE_DATA_DIR), the directory `shipgate serve` uses (a stack on AWS needs a build with `--features aws`)";

impl State {
    /// The state; on SQLite it must exist (a wrong `--data` must not create an empty store).
    pub fn repo(&self) -> Result<Repo, CliError> {
        match self {
            State::Embedded { data_dir } => data::open_existing(data_dir),
            #[cfg(feature = "aws")]
            State::Aws(aws) => Ok(aws.repo()),
        }
    }

    /// The data directory, on SQLite.
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            State::Embedded { data_dir } => Some(data_dir),
            #[cfg(feature = "aws")]
            State::Aws(_) => None,
        }
    }

    /// The policy: `file` when given; on AWS otherwise the stack's policy parameter.
    pub async fn policy(&self, file: Option<&Path>) -> Result<Policy, CliError> {
        if let Some(file) = file {
            return data::load_policy(file);
        }
        match self {
            State::Embedded { .. } => Err(CliError::Usage(
                "give --policy FILE (or SHIPGATE_POLICY_FILE)".to_owned(),
            )),
            #[cfg(feature = "aws")]
            State::Aws(aws) => aws.policy().await,
        }
    }

    /// The environments a listing looks at: `--env E` alone, else every environment of the
    /// policy (`--policy FILE`, or on AWS the stack's parameter); on SQLite with neither, a
    /// usage error saying what to give (`verb`: what the command does).
    pub async fn environments(
        &self,
        environment: Option<&str>,
        policy_file: Option<&Path>,
        verb: &str,
    ) -> Result<Vec<String>, CliError> {
        if let Some(env) = environment {
            return Ok(vec![env.to_owned()]);
        }
        if policy_file.is_none() && matches!(self, State::Embedded { .. }) {
            return Err(CliError::Usage(format!(
                "give --env E, or --policy FILE (or SHIPGATE_POLICY_FILE) to {verb} every environment"
            )));
        }
        Ok(self
            .policy(policy_file)
            .await?
            .environments()
            .map(|e| e.name.clone())
            .collect())
    }

    /// Where `backup list|verify|restore` find the backups: `DIR/backups` and `DIR/backup.key`,
    /// or the stack's bucket and KMS key.
    pub fn backup_deps(&self) -> Result<BackupDeps, CliError> {
        match self {
            State::Embedded { data_dir } => {
                let repo = data::open_existing(data_dir)?;
                let backups = TableBackups::embedded(data_dir, Arc::clone(repo.store()))
                    .map_err(CliError::Backups)?;
                Ok(backups.deps().clone())
            }
            #[cfg(feature = "aws")]
            State::Aws(aws) => aws.backup_deps(),
        }
    }

    /// `backup restore --into T`: on SQLite a new store (`T` names `DIR/restores/T.db`, a
    /// value with `/` is a path); on AWS a new DynamoDB table `T` like the backup's `source`
    /// table, or an existing one with `force`. Returns the target and how to name it. (On
    /// SQLite a non-empty target is refused by the restore itself unless `force`.)
    #[cfg_attr(not(feature = "aws"), allow(unused_variables))]
    pub async fn restore_target(
        &self,
        source: &str,
        into: &str,
        force: bool,
    ) -> Result<(Box<dyn TableSink>, String), CliError> {
        match self {
            State::Embedded { data_dir } => {
                let path = restore_path(data_dir, into)?;
                let sink = open_restore_file(&path, into)?;
                Ok((sink, path.display().to_string()))
            }
            #[cfg(feature = "aws")]
            State::Aws(aws) => {
                let sink = aws.restore_target(source, into, force).await?;
                Ok((sink, format!("DynamoDB table {into}")))
            }
        }
    }
}

/// Where `--into` points on SQLite: a path when it contains `/`, else `DATA/restores/NAME.db`.
pub fn restore_path(data_dir: &Path, into: &str) -> Result<PathBuf, CliError> {
    if into.contains('/') {
        return Ok(PathBuf::from(into));
    }
    let valid = !into.is_empty()
        && into != "."
        && into != ".."
        && into
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(CliError::Usage(format!(
            "--into {into:?}: use a name of A-Z a-z 0-9 - _ . (restored to {}/NAME.db) or a path containing /",
            data_dir.join(RESTORES_DIR).display()
        )));
    }
    Ok(data_dir.join(RESTORES_DIR).join(format!("{into}.db")))
}

/// Opens (creating) the SQLite store a restore writes into, in a private directory: a
/// restored store is plaintext.
fn open_restore_file(target: &Path, into: &str) -> Result<Box<dyn TableSink>, CliError> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CliError::DataDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let store = SqliteStore::open(target, Durability::Full).map_err(|source| CliError::Store {
        path: target.to_path_buf(),
        source,
    })?;
    let name = target
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| into.to_string());
    Ok(Box::new(StoreTable::new(name, Arc::new(store))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_restores_into_the_restores_directory_and_a_path_is_taken_as_is() {
        let data = Path::new("/srv/shipgate");
        assert_eq!(
            restore_path(data, "t1").expect("name"),
            PathBuf::from("/srv/shipgate/restores/t1.db")
        );
        assert_eq!(
            restore_path(data, "./copy.db").expect("path"),
            PathBuf::from("./copy.db")
        );
        assert!(matches!(restore_path(data, ".."), Err(CliError::Usage(_))));
        assert!(matches!(restore_path(data, "a b"), Err(CliError::Usage(_))));
    }
}
