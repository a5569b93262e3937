//! Where backup objects live: a small object-store port (its S3 adapter is `crate::aws::s3`,
//! its local-directory adapter `crate::embedded::objects`), and [`UploadWriter`], which lets the synchronous [`BackupWriter`](super::BackupWriter) feed
//! an asynchronous upload.
//!
//! Why a bridge rather than an async format: the format is CPU work (zstd, AES, SHA-256) on a
//! byte stream, which `std::io` expresses simply and which belongs on a blocking thread anyway.
//! The bridge is a bounded channel of 1 MiB pieces between that thread and an upload task; a
//! full channel blocks the writer, so memory stays flat (a few pieces plus one S3 part) however
//! large the backup, and a slow upload slows the backup instead of buffering it.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// S3's floor for every part but the last.
pub const S3_MIN_PART_SIZE: usize = 5 << 20;
/// Part size used by [`S3Objects`] unless changed: 8 MiB × 10,000 parts ≈ 78 GiB per object.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
pub(crate) const S3_MAX_PARTS: i32 = 10_000;
/// Manifests and the like; larger objects go through `get`.
pub const MAX_SMALL_OBJECT: usize = 16 << 20;
const PIECE_SIZE: usize = 1 << 20;
const PIECES_IN_FLIGHT: usize = 2;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// Which stored version of an object a read saw, so that a later read can ask for exactly it.
///
/// A restore records it during its verification pass and hands it back for the writing pass
/// ([`BackupObjects::get_exact`]), so that what is written is what was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectVersion {
    /// An S3 object version (`VersionId`, in a versioned bucket): immutable once written.
    VersionId(String),
    /// An S3 `ETag` (in an unversioned bucket): later reads send it as `If-Match`.
    ETag(String),
    /// A file: device and inode (a replaced file is a new inode), length, and the modification
    /// and change times in nanoseconds.
    File {
        dev: u64,
        ino: u64,
        len: u64,
        mtime_ns: i128,
        ctime_ns: i128,
    },
    /// The store cannot name versions; reads of it are not pinned.
    Unknown,
}

impl std::fmt::Display for ObjectVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectVersion::VersionId(id) => write!(f, "version id {id}"),
            ObjectVersion::ETag(tag) => write!(f, "ETag {tag}"),
            ObjectVersion::File { ino, len, .. } => {
                write!(f, "file inode {ino} of {len} bytes")
            }
            ObjectVersion::Unknown => f.write_str("an unversioned read"),
        }
    }
}

/// Why an object operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("object {key} is larger than {limit} bytes")]
    TooLarge { key: String, limit: usize },
    #[error("S3 {operation} on {key} failed")]
    S3 {
        operation: &'static str,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the upload of {key} needs more than {S3_MAX_PARTS} parts; raise the part size")]
    TooManyParts { key: String },
    #[error("the data being uploaded to {key} failed")]
    Source {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("object store I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the upload task ended without a result")]
    UploadTaskLost,
    #[error("object {key} changed after verification: {reason} (verified: {verified})")]
    Changed {
        key: String,
        /// The version the verification pass read.
        verified: Box<ObjectVersion>,
        reason: &'static str,
    },
    #[error("this object store cannot read object {key} at a given version")]
    VersionUnsupported { key: String },
}

/// The object-store port used by backups and restores.
///
/// `get` returns a blocking reader: read it from a blocking thread
/// (`tokio::task::spawn_blocking`), never directly on the async runtime.
#[async_trait]
pub trait BackupObjects: Send + Sync {
    /// Stores `key` from a stream of byte pieces of any size; the object appears only if the
    /// stream ends without an error item (otherwise nothing is stored). Returns the byte count.
    async fn put_stream(
        &self,
        key: &str,
        pieces: BoxStream<'static, io::Result<Bytes>>,
    ) -> Result<u64, ObjectError>;

    /// Stores a small object (a manifest) in one request.
    async fn put_small(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError>;

    /// Streams an object.
    async fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, ObjectError>;

    /// Streams an object and says which version of it the stream reads. Stores that cannot
    /// name versions return [`ObjectVersion::Unknown`].
    async fn get_pinned(
        &self,
        key: &str,
    ) -> Result<(Box<dyn Read + Send>, ObjectVersion), ObjectError> {
        Ok((self.get(key).await?, ObjectVersion::Unknown))
    }

    /// Streams exactly `version` of an object, as returned by [`get_pinned`](Self::get_pinned).
    /// When the store no longer holds that version (the object was replaced or removed) this
    /// fails with [`ObjectError::Changed`] before returning any byte.
    async fn get_exact(
        &self,
        key: &str,
        version: &ObjectVersion,
    ) -> Result<Box<dyn Read + Send>, ObjectError> {
        match version {
            ObjectVersion::Unknown => self.get(key).await,
            _ => Err(ObjectError::VersionUnsupported {
                key: key.to_owned(),
            }),
        }
    }

    /// Reads a small object whole; refuses objects over [`MAX_SMALL_OBJECT`].
    async fn get_small(&self, key: &str) -> Result<Bytes, ObjectError>;

    /// Objects whose key starts with `prefix`, ordered by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError>;

    /// Removes an object; removing a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;
}

enum Piece {
    Data(Bytes),
    End,
}

/// A blocking [`io::Write`] that uploads what is written to it through
/// [`BackupObjects::put_stream`].
///
/// Create it inside a Tokio runtime, write to it from a blocking thread, then call
/// [`finish`](Self::finish). Dropping it without `finish` abandons the upload: no object is
/// stored.
pub struct UploadWriter {
    key: String,
    tx: Option<mpsc::Sender<Piece>>,
    buf: Vec<u8>,
    result: Option<oneshot::Receiver<Result<u64, ObjectError>>>,
}

impl UploadWriter {
    /// Starts the upload task. Panics outside a Tokio runtime, like `tokio::spawn`.
    pub fn start(objects: Arc<dyn BackupObjects>, key: impl Into<String>) -> Self {
        let key = key.into();
        let (tx, rx) = mpsc::channel::<Piece>(PIECES_IN_FLIGHT);
        let (result_tx, result_rx) = oneshot::channel();
        let task_key = key.clone();
        // The writer side signals a clean end with `Piece::End`; a channel closed without it
        // means the writer was dropped or failed, which must not complete the upload.
        let pieces = futures::stream::unfold(Some(rx), |state| async move {
            let mut rx = state?;
            match rx.recv().await {
                Some(Piece::Data(bytes)) => Some((Ok(bytes), Some(rx))),
                Some(Piece::End) => None,
                None => Some((
                    Err(io::Error::other(
                        "the backup writer stopped before finishing",
                    )),
                    None,
                )),
            }
        })
        .boxed();
        tokio::spawn(async move {
            let result = objects.put_stream(&task_key, pieces).await;
            let _ = result_tx.send(result);
        });
        UploadWriter {
            key,
            tx: Some(tx),
            buf: Vec::with_capacity(PIECE_SIZE),
            result: Some(result_rx),
        }
    }

    /// The upload failed; collect its error for the writer's caller.
    fn upload_error(&mut self) -> ObjectError {
        self.tx = None;
        match self.result.take().map(|rx| rx.blocking_recv()) {
            Some(Ok(Err(e))) => e,
            Some(Ok(Ok(_))) => ObjectError::Source {
                key: self.key.clone(),
                source: io::Error::other("the upload ended before the data did"),
            },
            _ => ObjectError::UploadTaskLost,
        }
    }

    fn send(&mut self, piece: Piece) -> Result<(), ObjectError> {
        let sent = match &self.tx {
            Some(tx) => tx.blocking_send(piece).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.upload_error())
        }
    }

    fn send_buffer(&mut self) -> Result<(), ObjectError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE_SIZE));
        self.send(Piece::Data(Bytes::from(full)))
    }

    /// Sends what is buffered, completes the upload and returns the object's size.
    pub fn finish(mut self) -> Result<u64, ObjectError> {
        self.send_buffer()?;
        self.send(Piece::End)?;
        self.tx = None;
        match self.result.take().map(|rx| rx.blocking_recv()) {
            Some(Ok(result)) => result,
            _ => Err(ObjectError::UploadTaskLost),
        }
    }
}

impl io::Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIECE_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE_SIZE {
            self.send_buffer().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Pieces are sent when full; sending a short one would not make anything more durable.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with only the required methods: one object, `k`.
    struct Plain;

    #[async_trait]
    impl BackupObjects for Plain {
        async fn put_stream(
            &self,
            _key: &str,
            _pieces: BoxStream<'static, io::Result<Bytes>>,
        ) -> Result<u64, ObjectError> {
            Ok(0)
        }
        async fn put_small(&self, _key: &str, _bytes: Bytes) -> Result<(), ObjectError> {
            Ok(())
        }
        async fn get(&self, _key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
            Ok(Box::new(io::Cursor::new(b"data".to_vec())))
        }
        async fn get_small(&self, _key: &str) -> Result<Bytes, ObjectError> {
            Ok(Bytes::from_static(b"data"))
        }
        async fn list(&self, _prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _key: &str) -> Result<(), ObjectError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_store_without_versions_reads_unpinned_and_refuses_other_stores_versions() {
        let (mut reader, version) = Plain.get_pinned("k").await.unwrap();
        assert_eq!(version, ObjectVersion::Unknown);
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"data");
        assert!(Plain.get_exact("k", &ObjectVersion::Unknown).await.is_ok());
        let err = Plain
            .get_exact("k", &ObjectVersion::VersionId("v1".into()))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, ObjectError::VersionUnsupported { ref key } if key == "k"),
            "{err:?}"
        );
    }

    #[test]
    fn versions_read_naturally_in_messages() {
        assert_eq!(
            ObjectVersion::VersionId("3HL4kqt".into()).to_string(),
            "version id 3HL4kqt"
        );
        assert_eq!(
            ObjectVersion::ETag("\"abc\"".into()).to_string(),
            "ETag \"abc\""
        );
        let file = ObjectVersion::File {
            dev: 1,
            ino: 42,
            len: 9,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        assert_eq!(file.to_string(), "file inode 42 of 9 bytes");
    }
}
