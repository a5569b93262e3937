//! Backup objects as files under one directory ([`LocalDirObjects`]), for the self-hosted
//! binary and tests.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::backup::objects::{BackupObjects, ObjectError, ObjectInfo, MAX_SMALL_OBJECT};

/// Names of objects being written; they are renamed into place once complete.
const TMP_PREFIX: &str = ".shipgate-tmp-";

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
