//! The `backup` and `restore-drill` jobs: [`TableBackups`] implements [`BackupJobs`] on top of
//! the [backup operations](crate::backup::operations), over object storage, data keys, tables
//! and scratch tables that the backend's wiring gives it: `TableBackups::aws` (S3 objects, KMS
//! data keys, DynamoDB source and scratch tables, in `crate::aws::backups`) or
//! `TableBackups::embedded` (a local directory, a local master key file, the SQLite store,
//! throw-away SQLite scratch files, in `crate::embedded::backups`).
//!
//! Backups are filed under the table's *logical* name: shipgate's own table is always
//! `shipgate`, whatever the stack called the DynamoDB table. A CloudFormation-generated name
//! changes when the table is replaced and can exceed the 102 characters a backup id leaves for
//! the table, and operators should be able to write `shipgate/latest` on either backend.
//!
//! The CLI builds the same value and uses [`TableBackups::deps`] and [`TableBackups::source`]
//! for `backup list|verify|restore`, so it reads exactly what the scheduled jobs write.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::emf::{self, Unit};
use super::{BackupJobs, JobError, JobName, JobOutcome, MetricSink};
use crate::backup::operations::{
    self as backup, error_chain, BackupDeps, DrillReport, PruneReport,
};
use crate::backup::tables::{ScratchTables, TableSource};
use crate::backup::Manifest;
use crate::config::ConfigError;
use crate::service::Services;

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
pub(crate) struct BackedUp {
    /// Reads the table; its `name()` is the logical name backups are filed under.
    pub(crate) source: Arc<dyn TableSource>,
    /// The table's real name where it differs (DynamoDB); scratch tables copy its schema.
    pub(crate) physical: String,
}

/// The backup and restore-drill jobs over a fixed set of tables.
pub struct TableBackups {
    pub(crate) deps: BackupDeps,
    pub(crate) tables: Vec<BackedUp>,
    pub(crate) scratch: Arc<dyn ScratchTables>,
    pub(crate) metrics: MetricSink,
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
}
