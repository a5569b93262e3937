//! The manifest stored beside each backup object: what the backup should contain (count,
//! checksum, sizes) and how to get its data key back (the wrapped key and its context).
//!
//! The manifest is not itself authenticated; [`verify`](super::verify) compares the stream
//! against it, and the stream is authenticated, so a manifest that lies about the content makes
//! verification fail rather than pass.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::format::{
    validate_backup_id, BackupStats, FORMAT_VERSION, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
};
use super::keys::{CONTEXT_BACKUP_ID, CONTEXT_TABLE};
use super::BackupError;

/// Who wrapped the data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderKind {
    Kms,
    Local,
}

/// How to recover the backup's data key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyInfo {
    pub provider: KeyProviderKind,
    pub key_id: String,
    pub wrapped_key_b64: String,
    pub encryption_context: BTreeMap<String, String>,
    /// See [`key_check`](super::keys::key_check).
    pub key_check: String,
}

impl KeyInfo {
    /// The wrapped data key, decoded.
    pub fn wrapped_key(&self) -> Result<Vec<u8>, BackupError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.wrapped_key_b64)
            .map_err(|e| invalid(format!("key.wrapped_key_b64 is not base64: {e}")))
    }
}

/// The manifest of one backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub format_version: u8,
    pub backup_id: String,
    /// The table that was backed up.
    pub source: String,
    pub created_at: jiff::Timestamp,
    pub items: u64,
    pub plaintext_sha256: String,
    pub plaintext_bytes: u64,
    pub compressed_bytes: u64,
    pub encrypted_bytes: u64,
    pub chunk_size: u32,
    pub chunks: u64,
    pub key: KeyInfo,
}

fn invalid(reason: impl Into<String>) -> BackupError {
    BackupError::InvalidManifest {
        reason: reason.into(),
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// The manifest of a backup just written with `chunk_size`-byte chunks.
    pub fn new(
        backup_id: &str,
        source: &str,
        created_at: jiff::Timestamp,
        chunk_size: u32,
        stats: &BackupStats,
        key: KeyInfo,
    ) -> Self {
        Manifest {
            format_version: FORMAT_VERSION,
            backup_id: backup_id.to_owned(),
            source: source.to_owned(),
            created_at,
            items: stats.items,
            plaintext_sha256: stats.plaintext_sha256.clone(),
            plaintext_bytes: stats.plaintext_bytes,
            compressed_bytes: stats.compressed_bytes,
            encrypted_bytes: stats.encrypted_bytes,
            chunk_size,
            chunks: stats.chunks,
            key,
        }
    }

    /// Parses and validates a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BackupError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let manifest: Manifest =
            serde_path_to_error::deserialize(&mut de).map_err(|e| BackupError::Json {
                what: format!("manifest at `{}`", e.path()),
                source: e.into_inner(),
            })?;
        de.end().map_err(|source| BackupError::Json {
            what: "manifest (trailing characters)".to_owned(),
            source,
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), BackupError> {
        if self.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            )));
        }
        validate_backup_id(&self.backup_id).map_err(|e| invalid(e.to_string()))?;
        if self.source.trim().is_empty() {
            return Err(invalid("source is empty"));
        }
        if !is_lower_hex(&self.plaintext_sha256, 64) {
            return Err(invalid("plaintext_sha256 is not 64 lower-case hex digits"));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(invalid(format!(
                "chunk_size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        if self.chunks == 0 {
            return Err(invalid("chunks is 0; every backup has a final chunk"));
        }
        if self.key.key_id.is_empty() {
            return Err(invalid("key.key_id is empty"));
        }
        if self.key.wrapped_key()?.is_empty() {
            return Err(invalid("key.wrapped_key_b64 is empty"));
        }
        if !is_lower_hex(&self.key.key_check, 32) {
            return Err(invalid("key.key_check is not 32 lower-case hex digits"));
        }
        let ctx = &self.key.encryption_context;
        if ctx.get(CONTEXT_TABLE) != Some(&self.source) {
            return Err(invalid(format!(
                "key.encryption_context[{CONTEXT_TABLE:?}] does not name the source table"
            )));
        }
        if ctx.get(CONTEXT_BACKUP_ID) != Some(&self.backup_id) {
            return Err(invalid(format!(
                "key.encryption_context[{CONTEXT_BACKUP_ID:?}] does not name the backup id"
            )));
        }
        Ok(())
    }

    /// Pretty JSON, as stored beside the object.
    pub fn to_json(&self) -> Result<Vec<u8>, BackupError> {
        serde_json::to_vec_pretty(self).map_err(|source| BackupError::Json {
            what: "manifest".to_owned(),
            source,
        })
    }
}
