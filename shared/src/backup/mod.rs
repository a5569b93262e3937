//! Encrypted, chunked, streaming backups: the wire format, its manifest, data keys and object
//! storage.
//!
//! A backup is NDJSON (one item per line) → zstd (level 3, streaming) → AES-256-GCM in
//! fixed-size chunks → object storage, in constant memory. Every chunk authenticates the stream
//! header, the backup id, its own index and whether it is the last one, so a reordered,
//! truncated, extended or transplanted stream is refused, not silently restored.
//!
//! - [`format`](mod@format): [`BackupWriter`] and [`BackupReader`].
//! - [`verify`](mod@verify): a backup checked against its manifest.
//! - [`manifest`]: the JSON document stored beside the object (counts, checksum, sizes, the
//!   wrapped data key).
//! - [`keys`]: one fresh data key per backup, wrapped by KMS or by a local master key file.
//! - [`objects`]: the object-store port and the blocking bridges that join the synchronous
//!   format code to its adapters.
//! - [`tables`]: what a backup reads and a restore writes (table source, sink and scratch
//!   ports), and the adapter over shipgate's own item store.
//! - [`operations`]: back a table up, list, verify, restore, prune and drill.
//!
//! The adapters live with their backend: S3 objects, KMS keys and DynamoDB tables in
//! `crate::aws`, a local directory, a key file and SQLite scratch stores in `crate::embedded`.
//! The scheduled `backup` and `restore-drill` jobs are `crate::jobs::backup`.

pub mod format;
pub mod keys;
pub mod manifest;
pub mod objects;
pub mod operations;
pub mod tables;
pub mod verify;

pub use format::{
    BackupReader, BackupStats, BackupWriter, VerifyReport, DEFAULT_CHUNK_SIZE, FORMAT_VERSION,
    MAGIC, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
};
pub use keys::{backup_context, key_check, DataKey, DataKeyProvider, KeyError};
pub use manifest::{KeyInfo, KeyProviderKind, Manifest};
pub use objects::{BackupObjects, ObjectError, ObjectInfo, ObjectVersion, UploadWriter};
pub use verify::verify;

/// Why a backup could not be written, read or verified.
///
/// AES-GCM cannot tell a wrong key from a tampered chunk: both are a tag mismatch. The manifest
/// therefore carries a key check value ([`key_check`]) and [`verify`] compares it before
/// decrypting anything, so a wrong key is reported as [`BackupError::WrongKey`]. Without a
/// manifest, a wrong key shows up as `Tampered { chunk: 0 }`.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("chunk {chunk} failed authentication: the backup was modified or the key is wrong")]
    Tampered { chunk: u64 },
    #[error("the backup is truncated: its final chunk is missing or cut short")]
    Truncated,
    #[error("the backup has data after its final chunk")]
    TrailingData,
    #[error("chunk {found} of the backup appears at position {position}: chunks were reordered")]
    OutOfOrder { position: u64, found: u64 },
    #[error("bad backup header: {reason}")]
    BadHeader { reason: String },
    #[error("the backup belongs to backup id {found:?}, not {expected:?}")]
    WrongBackup { expected: String, found: String },
    #[error("plaintext SHA-256 mismatch: manifest says {expected}, backup has {found}")]
    ChecksumMismatch { expected: String, found: String },
    #[error("item count mismatch: manifest says {expected}, backup has {found}")]
    CountMismatch { expected: u64, found: u64 },
    #[error("{what} mismatch: manifest says {expected}, backup has {found}")]
    SizeMismatch {
        what: &'static str,
        expected: u64,
        found: u64,
    },
    #[error("the data key does not match the key check value in the manifest")]
    WrongKey,
    #[error("invalid backup record: {reason}")]
    BadRecord { reason: String },
    #[error("invalid manifest: {reason}")]
    InvalidManifest { reason: String },
    #[error("invalid backup settings: {reason}")]
    InvalidSettings { reason: String },
    #[error("backup I/O failed")]
    Io(#[source] std::io::Error),
    #[error("invalid JSON in {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("data key error")]
    Key(#[from] KeyError),
}

impl From<std::io::Error> for BackupError {
    /// Format errors raised below a `std::io` layer (the zstd decoder reads through our chunk
    /// source) travel inside an `io::Error`; unwrap them so callers see the real cause.
    fn from(err: std::io::Error) -> Self {
        if !err.get_ref().is_some_and(|e| e.is::<BackupError>()) {
            return BackupError::Io(err);
        }
        let kind = err.kind();
        match err.into_inner().map(|e| e.downcast::<BackupError>()) {
            Some(Ok(inner)) => *inner,
            Some(Err(other)) => BackupError::Io(std::io::Error::new(kind, other)),
            None => BackupError::Io(kind.into()),
        }
    }
}
