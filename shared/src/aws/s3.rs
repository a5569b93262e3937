//! Backup objects in S3 ([`S3Objects`]): multipart uploads of fixed-size parts fed by the
//! backup writer's pieces, streaming reads, reads pinned to the version an earlier read saw
//! (its `VersionId` in a versioned bucket, else its `ETag` sent as `If-Match`), and path-style
//! addressing for emulators and S3-compatible stores.

use std::io::{self, Read};

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::backup::objects::{
    BackupObjects, ObjectError, ObjectInfo, ObjectVersion, DEFAULT_PART_SIZE, MAX_SMALL_OBJECT,
    S3_MAX_PARTS, S3_MIN_PART_SIZE,
};

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
        let config = crate::aws::sdk_config().await;
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
        Ok(body_reader(out))
    }

    async fn get_pinned(
        &self,
        key: &str,
    ) -> Result<(Box<dyn Read + Send>, ObjectVersion), ObjectError> {
        let out = self.get_object(key).await?;
        let version = version_of(out.version_id(), out.e_tag());
        Ok((body_reader(out), version))
    }

    async fn get_exact(
        &self,
        key: &str,
        version: &ObjectVersion,
    ) -> Result<Box<dyn Read + Send>, ObjectError> {
        let request = self.client.get_object().bucket(&self.bucket).key(key);
        let request = match version {
            ObjectVersion::VersionId(id) => request.version_id(id),
            ObjectVersion::ETag(tag) => request.if_match(tag),
            ObjectVersion::Unknown => return self.get(key).await,
            ObjectVersion::File { .. } => {
                return Err(ObjectError::VersionUnsupported {
                    key: key.to_owned(),
                })
            }
        };
        let changed = |reason| ObjectError::Changed {
            key: key.to_owned(),
            verified: Box::new(version.clone()),
            reason,
        };
        let out = request.send().await.map_err(|e| {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let code = e.as_service_error().and_then(|s| s.code());
            match changed_reason(code, status) {
                Some(reason) => changed(reason),
                None => s3_err("GetObject", key, e),
            }
        })?;
        // A store that ignores the condition would otherwise hand back another version.
        let same = match version {
            ObjectVersion::VersionId(id) => out.version_id() == Some(id.as_str()),
            ObjectVersion::ETag(tag) => out.e_tag() == Some(tag.as_str()),
            _ => false,
        };
        if !same {
            return Err(changed("the store returned a different version"));
        }
        Ok(body_reader(out))
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

/// The identity of what a GetObject returned: its version id in a versioned bucket (`null`
/// names the unversioned copy, which a later write replaces in place), else its ETag.
fn version_of(version_id: Option<&str>, e_tag: Option<&str>) -> ObjectVersion {
    match (version_id, e_tag) {
        (Some(id), _) if !id.is_empty() && id != "null" => ObjectVersion::VersionId(id.to_owned()),
        (_, Some(tag)) if !tag.is_empty() => ObjectVersion::ETag(tag.to_owned()),
        _ => ObjectVersion::Unknown,
    }
}

/// Why a pinned GetObject failed, when the cause is that the object is no longer the version
/// asked for.
fn changed_reason(code: Option<&str>, status: Option<u16>) -> Option<&'static str> {
    match (code, status) {
        (Some("PreconditionFailed"), _) | (_, Some(412)) => {
            Some("it was replaced (S3 answered 412 PreconditionFailed)")
        }
        (Some("NoSuchVersion"), _) => Some("the verified version no longer exists"),
        (Some("NoSuchKey"), _) => Some("it was removed"),
        _ => None,
    }
}

/// Streams a GetObject body through a task into a blocking reader.
fn body_reader(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Box<dyn Read + Send> {
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
    Box::new(ChannelReader::new(rx))
}

/// A blocking reader over pieces pumped from an async body by a task.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_id_pins_a_versioned_object_and_an_etag_an_unversioned_one() {
        assert_eq!(
            version_of(Some("3HL4kqtJlcpXroDTDmJ"), Some("\"abc\"")),
            ObjectVersion::VersionId("3HL4kqtJlcpXroDTDmJ".into())
        );
        // `null` is the unversioned copy: overwriting it keeps the id, so the ETag pins it.
        assert_eq!(
            version_of(Some("null"), Some("\"abc\"")),
            ObjectVersion::ETag("\"abc\"".into())
        );
        assert_eq!(
            version_of(None, Some("\"abc-2\"")),
            ObjectVersion::ETag("\"abc-2\"".into())
        );
        assert_eq!(version_of(None, None), ObjectVersion::Unknown);
    }

    #[test]
    fn failed_preconditions_and_missing_versions_mean_the_object_changed() {
        assert!(changed_reason(Some("PreconditionFailed"), Some(412)).is_some());
        assert!(changed_reason(None, Some(412)).is_some());
        assert!(changed_reason(Some("NoSuchVersion"), Some(404)).is_some());
        assert!(changed_reason(Some("NoSuchKey"), Some(404)).is_some());
        assert_eq!(changed_reason(Some("AccessDenied"), Some(403)), None);
        assert_eq!(changed_reason(Some("InternalError"), Some(500)), None);
        assert_eq!(changed_reason(None, None), None);
    }

    #[test]
    fn the_changed_error_names_the_key_and_the_verified_version() {
        let err = ObjectError::Changed {
            key: "backups/shipgate/b.sgbk".into(),
            verified: Box::new(version_of(None, Some("\"abc\""))),
            reason: "it was replaced (S3 answered 412 PreconditionFailed)",
        };
        assert_eq!(
            err.to_string(),
            "object backups/shipgate/b.sgbk changed after verification: it was replaced \
             (S3 answered 412 PreconditionFailed) (verified: ETag \"abc\")"
        );
    }
}
