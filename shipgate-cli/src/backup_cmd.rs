//! `shipgate backup list|verify|restore`: the encrypted backups the `backup` job writes to
//! `DATA/backups/`, with their master key `DATA/backup.key`.
//!
//! `verify` reads a whole backup and checks everything (data key, every chunk's
//! authentication, order and final flag, item count, SHA-256, sizes) without writing; it
//! exits 1 naming the specific problem. `restore` verifies first too and writes nothing
//! unless the backup is sound. Its `--into` names a new SQLite store: a bare name `T` means
//! `DATA/restores/T.db`, anything containing `/` is a path. A non-empty target is refused
//! unless `--force` (then items with the same keys are overwritten).
//!
//! Progress bars go to stderr while a terminal is watching.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use shipgate::backup::operations::{self as backup, RestorePhase};
use shipgate::backup::tables::StoreTable;
use shipgate::embedded::sqlite::{Durability, SqliteStore};
use shipgate::jobs::backup::TableBackups;
use shipgate_cli::data;
use shipgate_cli::error::CliError;

use crate::progress::Progress;

/// Where `--into NAME` restores go inside the data directory.
pub const RESTORES_DIR: &str = "restores";

fn backups(data_dir: &Path) -> Result<TableBackups, CliError> {
    let repo = data::open_existing(data_dir)?;
    TableBackups::embedded(data_dir, Arc::clone(repo.store())).map_err(CliError::Backups)
}

fn print(line: impl std::fmt::Display) -> Result<(), CliError> {
    writeln!(std::io::stdout().lock(), "{line}").map_err(CliError::Output)
}

fn json_line(value: &impl serde::Serialize) -> Result<(), CliError> {
    let line = serde_json::to_string(value).map_err(|e| CliError::Output(e.into()))?;
    print(line)
}

/// `backup list`: newest first, one line (or JSON object) per backup.
pub async fn list(data_dir: &Path, table: Option<&str>, json: bool) -> Result<(), CliError> {
    let tb = backups(data_dir)?;
    let manifests = backup::list(tb.deps(), table)
        .await
        .map_err(CliError::Backup)?;
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
pub async fn verify(data_dir: &Path, reference: &str, json: bool) -> Result<(), CliError> {
    let tb = backups(data_dir)?;
    let manifest = backup::resolve(tb.deps(), reference)
        .await
        .map_err(CliError::Backup)?;
    let bar = Progress::bytes(manifest.encrypted_bytes, "verifying");
    let on_progress = |n: u64| bar.set(n);
    let report = backup::verify(tb.deps(), &manifest.backup_id, Some(&on_progress))
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

/// Where `--into` points: a path when it contains `/`, else `DATA/restores/NAME.db`.
pub fn restore_target(data_dir: &Path, into: &str) -> Result<PathBuf, CliError> {
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

/// `backup restore REF --into T [--force]`.
pub async fn restore(
    data_dir: &Path,
    reference: &str,
    into: &str,
    force: bool,
    json: bool,
) -> Result<(), CliError> {
    let tb = backups(data_dir)?;
    let target = restore_target(data_dir, into)?;
    let manifest = backup::resolve(tb.deps(), reference)
        .await
        .map_err(CliError::Backup)?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        // A restored store is plaintext: keep the directory private.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CliError::DataDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let store = SqliteStore::open(&target, Durability::Full).map_err(|source| CliError::Store {
        path: target.clone(),
        source,
    })?;
    let name = target
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| into.to_string());
    let sink = StoreTable::new(name, Arc::new(store));

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
        tb.deps(),
        &manifest.backup_id,
        &sink,
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
            "target": target.display().to_string(),
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
        target.display(),
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
    fn a_bare_name_restores_into_the_restores_directory_and_a_path_is_taken_as_is() {
        let data = Path::new("/srv/shipgate");
        assert_eq!(
            restore_target(data, "t1").expect("name"),
            PathBuf::from("/srv/shipgate/restores/t1.db")
        );
        assert_eq!(
            restore_target(data, "./copy.db").expect("path"),
            PathBuf::from("./copy.db")
        );
        assert!(matches!(
            restore_target(data, ".."),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            restore_target(data, "a b"),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
