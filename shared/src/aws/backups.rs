//! Backups on AWS: [`TableBackups::aws`] wires the backup jobs to S3 objects, KMS data keys,
//! DynamoDB tables, and DynamoDB scratch tables for restore drills.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;

use super::dynamodb::table::DynamoTable;
use super::kms::KmsKeys;
use super::s3::{s3_client, S3Objects};
use crate::backup::operations::{self as backup, BackupDeps};
use crate::backup::tables::{
    ScanPage, ScratchTable, ScratchTables, TableError, TableSink, TableSource,
};
use crate::config::{
    self, ConfigError, Vars, BACKUP_BUCKET_VAR, KMS_KEY_VAR, SCRATCH_PREFIX_VAR, STATE_TABLE_VAR,
};
use crate::domain::policy::{Policy, SHIPGATE_TABLE};
use crate::jobs::backup::{BackedUp, BackupConfigError, TableBackups};
use crate::jobs::MetricSink;

/// Key prefix of every backup object in the S3 bucket.
pub const S3_PREFIX: &str = "backups";
/// DynamoDB's longest table name.
const DYNAMO_MAX_TABLE_NAME: usize = 255;
/// `-` and 8 hex digits after the table name in a scratch table's name.
const SCRATCH_SUFFIX_LEN: usize = 9;

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
        let deps = backup_deps(sdk, bucket, key_id);
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
            scratch: Arc::new(DynamoScratchTables {
                client: dynamo,
                prefix,
            }),
            metrics: MetricSink::Stdout,
        })
    }
}

/// The backups in S3 bucket `bucket` under `backups/`, with data keys from KMS key `key_id`:
/// what the jobs write and what `shipgate backup list|verify|restore` read on AWS.
pub fn backup_deps(sdk: &SdkConfig, bucket: String, key_id: String) -> BackupDeps {
    BackupDeps::new(
        Arc::new(S3Objects::new(s3_client(sdk), bucket)),
        Arc::new(KmsKeys::new(aws_sdk_kms::Client::new(sdk), key_id)),
        S3_PREFIX,
    )
}

/// Restore drills' scratch tables: `DynamoTable::create_like(source,
/// "{prefix}{table}-{short id}")`, deleted on discard.
struct DynamoScratchTables {
    client: aws_sdk_dynamodb::Client,
    prefix: String,
}

#[async_trait]
impl ScratchTables for DynamoScratchTables {
    async fn create(
        &self,
        table: &str,
        physical: &str,
    ) -> Result<Box<dyn ScratchTable>, TableError> {
        let short = uuid::Uuid::new_v4().simple().to_string();
        let target = format!("{}{table}-{}", self.prefix, &short[..8]);
        let created = DynamoTable::create_like(self.client.clone(), physical, &target).await?;
        Ok(Box::new(created))
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

/// Where `shipgate backup restore --into TABLE` writes on AWS.
#[derive(Debug, thiserror::Error)]
pub enum RestoreTargetError {
    #[error("--into {0:?}: a DynamoDB table name is 3 to 255 characters of A-Z a-z 0-9 - _ .")]
    Name(String),
    #[error(
        "DynamoDB table {0} exists; --force restores into it, overwriting items with the same keys"
    )]
    Exists(String),
    #[error(transparent)]
    Table(#[from] TableError),
}

/// The restore target `target`: an existing table only with `force`; otherwise a new table
/// with the schema of `like`, created only when the restore writes its first batch, after
/// the backup has been verified, so a refused restore leaves no table behind.
pub async fn restore_target(
    sdk: &SdkConfig,
    like: &str,
    target: &str,
    force: bool,
) -> Result<Box<dyn TableSink>, RestoreTargetError> {
    let valid_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !(3..=DYNAMO_MAX_TABLE_NAME).contains(&target.len()) || !target.bytes().all(valid_char) {
        return Err(RestoreTargetError::Name(target.to_owned()));
    }
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let existing = DynamoTable::new(client.clone(), target);
    if existing.exists().await? {
        return if force {
            Ok(Box::new(existing))
        } else {
            Err(RestoreTargetError::Exists(target.to_owned()))
        };
    }
    Ok(Box::new(CreatedOnWrite {
        client,
        like: like.to_owned(),
        name: target.to_owned(),
        table: tokio::sync::OnceCell::new(),
    }))
}

/// A DynamoDB table that does not exist yet: created like `like` on the first write, and
/// deleted again by `clear` (a restore clears only a target it found empty, after a failed
/// writing pass).
struct CreatedOnWrite {
    client: aws_sdk_dynamodb::Client,
    like: String,
    name: String,
    table: tokio::sync::OnceCell<DynamoTable>,
}

impl CreatedOnWrite {
    async fn table(&self) -> Result<&DynamoTable, TableError> {
        self.table
            .get_or_try_init(|| {
                DynamoTable::create_like(self.client.clone(), &self.like, &self.name)
            })
            .await
    }
}

#[async_trait]
impl TableSink for CreatedOnWrite {
    fn name(&self) -> &str {
        &self.name
    }

    async fn is_empty(&self) -> Result<bool, TableError> {
        match self.table.get() {
            Some(table) => table.is_empty().await,
            None => Ok(true),
        }
    }

    async fn write_batch(&self, records: Vec<String>) -> Result<(), TableError> {
        self.table().await?.write_batch(records).await
    }

    async fn count(&self) -> Result<u64, TableError> {
        match self.table.get() {
            Some(table) => table.count().await,
            None => Ok(0),
        }
    }

    async fn clear(&self) -> Result<bool, TableError> {
        if let Some(table) = self.table.get() {
            table.delete_table().await?;
        }
        Ok(true)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_prefixes_must_be_dynamodb_table_name_characters_with_room_for_the_table() {
        assert!(check_scratch_prefix("prod-stack-scratch-").is_ok());
        assert!(check_scratch_prefix("").is_ok());
        assert!(check_scratch_prefix("bad prefix/").is_err());
        assert!(check_scratch_prefix(&"p".repeat(200)).is_err());
    }
}
