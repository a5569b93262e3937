//! Backups on AWS: [`TableBackups::aws`] wires the backup jobs to S3 objects, KMS data keys,
//! DynamoDB tables, and DynamoDB scratch tables for restore drills.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;

use super::dynamodb::table::DynamoTable;
use super::kms::KmsKeys;
use super::s3::{s3_client, S3Objects};
use crate::backup::operations::{self as backup, BackupDeps};
use crate::backup::tables::{ScanPage, ScratchTable, ScratchTables, TableError, TableSource};
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
            scratch: Arc::new(DynamoScratchTables {
                client: dynamo,
                prefix,
            }),
            metrics: MetricSink::Stdout,
        })
    }
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
