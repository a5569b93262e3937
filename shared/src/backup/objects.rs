//! Where backup objects live: a small object-store port, its S3 and local-directory adapters,
//! and [`UploadWriter`], which lets the synchronous [`BackupWriter`](super::BackupWriter) feed
//! an asynchronous upload.
//!
//! Why a bridge rather than an async format: the format is CPU work (zstd, AES, SHA-256) on a
//! byte stream, which `std::io` expresses simply and which belongs on a blocking thread anyway.
//! The bridge is a bounded channel of 1 MiB pieces between that thread and an upload task; a
//! full channel blocks the writer, so memory stays flat (a few pieces plus one S3 part) however
//! large the backup, and a slow upload slows the backup instead of buffering it.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// S3's floor for every part but the last.
pub const S3_MIN_PART_SIZE: usize = 5 << 20;
/// Part size used by [`S3Objects`] unless changed: 8 MiB × 10,000 parts ≈ 78 GiB per object.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
const S3_MAX_PARTS: i32 = 10_000;
/// Manifests and the like; larger objects go through `get`.
pub const MAX_SMALL_OBJECT: usize = 16 << 20;
const PIECE_SIZE: usize = 1 << 20;
const PIECES_IN_FLIGHT: usize = 2;
const TMP_PREFIX: &str = ".shipgate-tmp-";

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
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

/// A blocking reader over pieces pumped from an async body by a task.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Backup objects in one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Objects {
    client: aws_sdk_s3::Client,
    bucket: String,
    part_size: usize,
}

fn s3_err<E>(operation: &'static str, key: &str, e: E) -> ObjectError
where
    aws_sdk_s3::Error: From<E>,
{
    ObjectError::S3 {
        operation,
        key: key.to_owned(),
        source: Box::new(aws_sdk_s3::Error::from(e)),
    }
}

/// Reads pieces into `part` until it holds `part_size` bytes; `true` when the stream ended.
async fn fill_part(
    key: &str,
    pieces: &mut BoxStream<'static, io::Result<Bytes>>,
    part: &mut BytesMut,
    part_size: usize,
) -> Result<bool, ObjectError> {
    while part.len() < part_size {
        match pieces.next().await {
            Some(Ok(bytes)) => part.extend_from_slice(&bytes),
            Some(Err(source)) => {
                return Err(ObjectError::Source {
                    key: key.to_owned(),
                    source,
                })
            }
            None => return Ok(true),
        }
    }
    Ok(false)
}

impl S3Objects {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Objects {
            client,
            bucket: bucket.into(),
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Builds the client from the default AWS configuration. With an endpoint override
    /// (`AWS_ENDPOINT_URL`, an emulator or S3-compatible store) it uses path-style addressing,
    /// since virtual-host buckets need DNS such endpoints rarely have.
    pub async fn from_env(bucket: impl Into<String>) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(s3_client(&config), bucket)
    }

    /// Sets the multipart part size (at least 5 MiB, S3's minimum).
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size.max(S3_MIN_PART_SIZE);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        pieces: &mut BoxStream<'static, io::Result<Bytes>>,
        mut part: BytesMut,
        mut ended: bool,
    ) -> Result<u64, ObjectError> {
        let mut completed = Vec::new();
        let mut total = 0u64;
        let mut number = 0i32;
        loop {
            // An empty trailing part happens when the data ends exactly on a part boundary.
            if !part.is_empty() || number == 0 {
                number += 1;
                if number > S3_MAX_PARTS {
                    return Err(ObjectError::TooManyParts {
                        key: key.to_owned(),
                    });
                }
                total += part.len() as u64;
                let body = part.split().freeze();
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
                    .body(body.into())
                    .send()
                    .await
                    .map_err(|e| s3_err("UploadPart", key, e))?;
                completed.push(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag)
                        .set_checksum_crc32(out.checksum_crc32)
                        .build(),
                );
            }
            if ended {
                break;
            }
            ended = fill_part(key, pieces, &mut part, self.part_size).await?;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_err("CompleteMultipartUpload", key, e))?;
        Ok(total)
    }
}

/// An S3 client from `config`, path-style when an endpoint override is configured.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(config);
    if config.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

#[async_trait]
impl BackupObjects for S3Objects {
    async fn put_stream(
        &self,
        key: &str,
        mut pieces: BoxStream<'static, io::Result<Bytes>>,
    ) -> Result<u64, ObjectError> {
        let mut part = BytesMut::with_capacity(self.part_size);
        let ended = fill_part(key, &mut pieces, &mut part, self.part_size).await?;
        if ended {
            // Smaller than one part: a multipart upload would only add requests.
            let len = part.len() as u64;
            self.put_small(key, part.freeze()).await?;
            return Ok(len);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            // Named explicitly so that the upload, every part and the completion agree on one
            // algorithm; S3 refuses parts whose checksum type differs from the upload's.
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| s3_err("CreateMultipartUpload", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| ObjectError::S3 {
                operation: "CreateMultipartUpload",
                key: key.to_owned(),
                source: "no UploadId in the response".into(),
            })?
            .to_owned();
        let result = self
            .upload_parts(key, &upload_id, &mut pieces, part, false)
            .await;
        if result.is_err() {
            // Parts of an unfinished upload are billed until aborted. If this abort fails too
            // (or the task is cancelled before reaching it), the bucket's
            // AbortIncompleteMultipartUpload lifecycle rule is the backstop.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(key, error = %aws_sdk_s3::Error::from(e), "abort of failed multipart upload failed");
            }
        }
        result
    }

    async fn put_small(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| s3_err("PutObject", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
        let out = self.get_object(key).await?;
        let expected = out.content_length().and_then(|n| u64::try_from(n).ok());
        let mut body = out.body;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut seen = 0u64;
            loop {
                let item = match body.next().await {
                    Some(Ok(bytes)) => {
                        seen += bytes.len() as u64;
                        Ok(bytes)
                    }
                    Some(Err(e)) => Err(io::Error::other(e)),
                    None => {
                        // A connection closed early looks like a clean end to the body stream.
                        if expected.is_some_and(|n| n != seen) {
                            let _ = tx
                                .send(Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "the object body ended early",
                                )))
                                .await;
                        }
                        return;
                    }
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Box::new(ChannelReader {
            rx,
            current: Bytes::new(),
        }))
    }

    async fn get_small(&self, key: &str) -> Result<Bytes, ObjectError> {
        let out = self.get_object(key).await?;
        if out
            .content_length()
            .is_some_and(|n| n > MAX_SMALL_OBJECT as i64)
        {
            return Err(ObjectError::TooLarge {
                key: key.to_owned(),
                limit: MAX_SMALL_OBJECT,
            });
        }
        let data = out.body.collect().await.map_err(|e| ObjectError::S3 {
            operation: "GetObject",
            key: key.to_owned(),
            source: Box::new(e),
        })?;
        Ok(data.into_bytes())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_err("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    found.push(ObjectInfo {
                        key: key.to_owned(),
                        size: object
                            .size()
                            .and_then(|s| u64::try_from(s).ok())
                            .unwrap_or(0),
                    });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_err("DeleteObject", key, e))?;
        Ok(())
    }
}

impl S3Objects {
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, ObjectError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    ObjectError::NotFound {
                        key: key.to_owned(),
                    }
                } else {
                    s3_err("GetObject", key, e)
                }
            })
    }
}

/// Backup objects as files under one directory; keys with `/` become subdirectories.
///
/// Writes go to a temporary file in the target directory and are renamed into place once
/// synced, so a reader never sees half an object.
#[derive(Debug, Clone)]
pub struct LocalDirObjects {
    root: PathBuf,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

impl LocalDirObjects {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDirObjects { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, ObjectError> {
        let invalid = |reason| ObjectError::InvalidKey {
            key: key.to_owned(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("empty"));
        }
        if key.contains(['\\', '\0']) {
            return Err(invalid("contains a backslash or NUL"));
        }
        let mut path = self.root.clone();
        for segment in key.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(invalid("has an empty, `.` or `..` segment"));
            }
            if segment.starts_with(TMP_PREFIX) {
                return Err(invalid("uses the temporary-file prefix"));
            }
            path.push(segment);
        }
        Ok(path)
    }

    fn io_err(path: &Path, source: io::Error) -> ObjectError {
        ObjectError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Creates a temporary file beside `path`.
    fn create_tmp(path: &Path) -> io::Result<(PathBuf, std::fs::File)> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok((tmp, file))
    }

    fn commit(tmp: &Path, file: std::fs::File, path: &Path) -> io::Result<()> {
        file.sync_all()?;
        drop(file);
        std::fs::rename(tmp, path)?;
        // Make the rename itself durable.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[async_trait]
impl BackupObjects for LocalDirObjects {
    async fn put_stream(
        &self,
        key: &str,
        mut pieces: BoxStream<'static, io::Result<Bytes>>,
    ) -> Result<u64, ObjectError> {
        let path = self.path_of(key)?;
        let target = path.clone();
        let (tmp, mut file) = blocking(move || Self::create_tmp(&target))
            .await
            .map_err(|e| Self::io_err(&path, e))?;
        let mut total = 0u64;
        let result: Result<std::fs::File, ObjectError> = async {
            while let Some(piece) = pieces.next().await {
                let bytes = piece.map_err(|source| ObjectError::Source {
                    key: key.to_owned(),
                    source,
                })?;
                total += bytes.len() as u64;
                file = blocking(move || {
                    use std::io::Write;
                    file.write_all(&bytes)?;
                    Ok(file)
                })
                .await
                .map_err(|e| Self::io_err(&tmp, e))?;
            }
            Ok(file)
        }
        .await;
        let committed = match result {
            Ok(file) => {
                let (tmp, target) = (tmp.clone(), path.clone());
                blocking(move || Self::commit(&tmp, file, &target))
                    .await
                    .map_err(|e| Self::io_err(&path, e))
            }
            Err(e) => Err(e),
        };
        if committed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        committed.map(|()| total)
    }

    async fn put_small(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        let piece: io::Result<Bytes> = Ok(bytes);
        self.put_stream(key, futures::stream::iter([piece]).boxed())
            .await
            .map(|_| ())
    }

    async fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
        let path = self.path_of(key)?;
        match std::fs::File::open(&path) {
            Ok(file) => Ok(Box::new(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ObjectError::NotFound {
                key: key.to_owned(),
            }),
            Err(e) => Err(Self::io_err(&path, e)),
        }
    }

    async fn get_small(&self, key: &str) -> Result<Bytes, ObjectError> {
        let reader = self.get(key).await?;
        let path = self.path_of(key)?;
        let data = blocking(move || {
            let mut data = Vec::new();
            reader
                .take(MAX_SMALL_OBJECT as u64 + 1)
                .read_to_end(&mut data)?;
            Ok(data)
        })
        .await
        .map_err(|e| Self::io_err(&path, e))?;
        if data.len() > MAX_SMALL_OBJECT {
            return Err(ObjectError::TooLarge {
                key: key.to_owned(),
                limit: MAX_SMALL_OBJECT,
            });
        }
        Ok(Bytes::from(data))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        if prefix.split('/').any(|segment| segment == "..") {
            return Err(ObjectError::InvalidKey {
                key: prefix.to_owned(),
                reason: "has a `..` segment",
            });
        }
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut found = Vec::new();
            // Only the directory named by the prefix's complete segments can hold matches.
            let start = match prefix.rfind('/') {
                Some(at) => root.join(&prefix[..at]),
                None => root.clone(),
            };
            let mut dirs = vec![start];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with(TMP_PREFIX) {
                        continue;
                    }
                    let meta = entry.metadata()?;
                    let path = entry.path();
                    if meta.is_dir() {
                        dirs.push(path);
                        continue;
                    }
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    if key.starts_with(&prefix) {
                        found.push(ObjectInfo {
                            key,
                            size: meta.len(),
                        });
                    }
                }
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
        .map_err(|e| Self::io_err(&self.root, e))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io_err(&path, e)),
        }
    }
}
