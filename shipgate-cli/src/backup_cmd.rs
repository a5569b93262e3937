//! `shipgate backup list|verify|restore`: the encrypted backups the `backup` job writes, with
//! `--data DIR` in `DIR/backups/` under the master key `DIR/backup.key`, with `--stack NAME`
//! in the stack's S3 bucket under its KMS key.
//!
//! `verify` reads a whole backup and checks everything (data key, every chunk's
//! authentication, order and final flag, item count, SHA-256, sizes) without writing; it
//! exits 1 naming the specific problem. `restore` verifies first too and writes nothing
//! unless the backup is sound. Its `--into` names a new store: on SQLite a bare name `T`
//! means `DATA/restores/T.db`, anything containing `/` is a path, and a non-empty target is
//! refused unless `--force` (then items with the same keys are overwritten); on AWS `T` is a
//! new DynamoDB table, created like the backup's source table once the backup is verified,
//! and an existing table is refused unless `--force`.
//!
//! Progress bars go to stderr while a terminal is watching.

use std::io::Write;

use serde_json::json;
use shipgate::backup::operations::{self as backup, RestorePhase};
use shipgate_cli::error::CliError;
use shipgate_cli::state::State;

use crate::progress::Progress;

fn print(line: impl std::fmt::Display) -> Result<(), CliError> {
    writeln!(std::io::stdout().lock(), "{line}").map_err(CliError::Output)
}

fn json_line(value: &impl serde::Serialize) -> Result<(), CliError> {
    let line = serde_json::to_string(value).map_err(|e| CliError::Output(e.into()))?;
    print(line)
}

/// `backup list`: newest first, one line (or JSON object) per backup.
pub async fn list(state: &State, table: Option<&str>, json: bool) -> Result<(), CliError> {
    let deps = state.backup_deps()?;
    let manifests = backup::list(&deps, table).await.map_err(CliError::Backup)?;
    if json {
        for m in &manifests {
            json_line(m)?;
        }
        return Ok(());
    }
    if manifests.is_empty() {
        return print("no backups yet (`shipgate job backup` makes one)");
    }
    print(format_args!(
        "{:<44} {:<21} {:>8} {:>12}",
        "BACKUP", "CREATED", "ITEMS", "SIZE"
    ))?;
    for m in &manifests {
        print(format_args!(
            "{:<44} {:<21} {:>8} {:>12}",
            m.backup_id,
            m.created_at.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
            m.items,
            human_bytes(m.encrypted_bytes)
        ))?;
    }
    Ok(())
}

/// `backup verify REF`: everything checked, nothing written.
pub async fn verify(state: &State, reference: &str, json: bool) -> Result<(), CliError> {
    let deps = state.backup_deps()?;
    let manifest = backup::resolve(&deps, reference)
        .await
        .map_err(CliError::Backup)?;
    let bar = Progress::bytes(manifest.encrypted_bytes, "verifying");
    let on_progress = |n: u64| bar.set(n);
    let report = backup::verify(&deps, &manifest.backup_id, Some(&on_progress))
        .await
        .map_err(CliError::Backup);
    bar.finish();
    let report = report?;
    if json {
        return json_line(&json!({
            "backup_id": report.manifest.backup_id,
            "ok": true,
            "items": report.stats.items,
            "chunks": report.stats.chunks,
            "encrypted_bytes": report.stats.encrypted_bytes,
            "plaintext_sha256": report.stats.plaintext_sha256,
        }));
    }
    print(format_args!(
        "{}: ok ({} items, {} chunks, {}; SHA-256 {})",
        report.manifest.backup_id,
        report.stats.items,
        report.stats.chunks,
        human_bytes(report.stats.encrypted_bytes),
        report.stats.plaintext_sha256
    ))
}

/// `backup restore REF --into T [--force]`.
pub async fn restore(
    state: &State,
    reference: &str,
    into: &str,
    force: bool,
    json: bool,
) -> Result<(), CliError> {
    let deps = state.backup_deps()?;
    let manifest = backup::resolve(&deps, reference)
        .await
        .map_err(CliError::Backup)?;
    let (sink, target) = state.restore_target(&manifest.source, into, force).await?;

    let bar = Progress::bytes(manifest.encrypted_bytes, "verifying");
    let items = manifest.items;
    let writing = std::sync::atomic::AtomicBool::new(false);
    let on_progress = |phase: RestorePhase, n: u64| {
        if phase == RestorePhase::Writing
            && !writing.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            bar.switch_to_items(items, "restoring");
        }
        bar.set(n);
    };
    let report = backup::restore(
        &deps,
        &manifest.backup_id,
        sink.as_ref(),
        force,
        Some(&on_progress),
    )
    .await
    .map_err(CliError::Backup);
    bar.finish();
    let report = report?;
    if json {
        return json_line(&json!({
            "backup_id": report.backup_id,
            "source": report.source,
            "target": target,
            "items": report.items,
            "content_digest": report.content_digest,
            "forced": report.forced,
            "verify_seconds": report.verify_time.as_secs_f64(),
            "write_seconds": report.write_time.as_secs_f64(),
        }));
    }
    print(format_args!(
        "restored {} ({} items) into {}{} in {:.1}s (verified in {:.1}s)",
        report.backup_id,
        report.items,
        target,
        if report.forced {
            ", overwriting items with the same keys"
        } else {
            ""
        },
        report.write_time.as_secs_f64(),
        report.verify_time.as_secs_f64()
    ))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
