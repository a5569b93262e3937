//! Backup objects in S3 ([`S3Objects`]): multipart uploads of fixed-size parts fed by the
//! backup writer's pieces, ranged streaming reads, and path-style addressing for emulators and
//! S3-compatible stores.

use std::io::{self, Read};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::backup::objects::{
    BackupObjects, ObjectError, ObjectInfo, DEFAULT_PART_SIZE, MAX_SMALL_OBJECT, S3_MAX_PARTS,
    S3_MIN_PART_SIZE,
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
        Ok(Box::new(ChannelReader::new(rx)))
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
