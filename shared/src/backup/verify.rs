//! Checking a backup against its manifest: [`verify`] reads the whole stream, one record at
//! a time, and compares what it found with what the manifest promises.

use std::io::Read;

use super::format::{bad_header, BackupReader, VerifyReport};
use super::keys::key_check_matches;
use super::manifest::Manifest;
use super::BackupError;

/// Reads a whole backup and checks it against its manifest, holding one record at a time.
///
/// Checks, in order: the manifest is for `backup_id`; `key` matches the manifest's key check
/// value (so a wrong key is [`BackupError::WrongKey`], not `Tampered`); the header; every chunk's
/// authenticity, order and the final chunk; every record is JSON; then the item count,
/// SHA-256 and sizes against the manifest.
pub fn verify<R: Read>(
    reader: R,
    key: &[u8; 32],
    backup_id: &str,
    manifest: &Manifest,
) -> Result<VerifyReport, BackupError> {
    if manifest.backup_id != backup_id {
        return Err(BackupError::WrongBackup {
            expected: backup_id.to_owned(),
            found: manifest.backup_id.clone(),
        });
    }
    if !key_check_matches(key, &manifest.key.key_check) {
        return Err(BackupError::WrongKey);
    }
    let mut backup = BackupReader::new(reader, key, backup_id)?;
    if backup.chunk_size() != manifest.chunk_size {
        return Err(bad_header(format!(
            "chunk size {} differs from the manifest's {}",
            backup.chunk_size(),
            manifest.chunk_size
        )));
    }
    let mut record = Vec::new();
    while backup.read_record(&mut record)? {
        serde_json::from_slice::<serde::de::IgnoredAny>(&record).map_err(|source| {
            BackupError::Json {
                what: format!("record {}", backup.items - 1),
                source,
            }
        })?;
    }
    let found = backup.stats();
    if found.items != manifest.items {
        return Err(BackupError::CountMismatch {
            expected: manifest.items,
            found: found.items,
        });
    }
    if found.plaintext_sha256 != manifest.plaintext_sha256 {
        return Err(BackupError::ChecksumMismatch {
            expected: manifest.plaintext_sha256.clone(),
            found: found.plaintext_sha256,
        });
    }
    for (what, expected, actual) in [
        (
            "plaintext size",
            manifest.plaintext_bytes,
            found.plaintext_bytes,
        ),
        (
            "compressed size",
            manifest.compressed_bytes,
            found.compressed_bytes,
        ),
        (
            "encrypted size",
            manifest.encrypted_bytes,
            found.encrypted_bytes,
        ),
        ("chunk count", manifest.chunks, found.chunks),
    ] {
        if expected != actual {
            return Err(BackupError::SizeMismatch {
                what,
                expected,
                found: actual,
            });
        }
    }
    Ok(found)
}
