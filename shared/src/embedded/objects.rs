//! Backup objects as files under one directory ([`LocalDirObjects`]), for the self-hosted
//! binary and tests.

use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::backup::objects::{
    BackupObjects, ObjectError, ObjectInfo, ObjectVersion, MAX_SMALL_OBJECT,
};

/// Names of objects being written; they are renamed into place once complete.
const TMP_PREFIX: &str = ".shipgate-tmp-";

/// Backup objects as files under one directory; keys with `/` become subdirectories.
///
/// Writes go to a temporary file in the target directory and are renamed into place once
/// synced, so a reader never sees half an object, and a replaced object is a new inode.
/// A file's version ([`ObjectVersion::File`]) is its device, inode, length, and modification
/// and change times; pinned reads compare it when they open the file and again at its end.
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

/// The version of an open file (see [`LocalDirObjects`]).
fn file_version(file: &std::fs::File) -> io::Result<ObjectVersion> {
    let meta = file.metadata()?;
    let nanos = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
    Ok(ObjectVersion::File {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
    })
}

/// A file read that fails at its end if the file was modified while it was being read (a
/// replacement by rename does not affect an open file; writing into it does).
struct PinnedFile {
    file: std::fs::File,
    key: String,
    version: ObjectVersion,
}

impl Read for PinnedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && !buf.is_empty() && file_version(&self.file)? != self.version {
            return Err(io::Error::other(format!(
                "backup object {} was modified while it was being read",
                self.key
            )));
        }
        Ok(n)
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

    async fn get_pinned(
        &self,
        key: &str,
    ) -> Result<(Box<dyn Read + Send>, ObjectVersion), ObjectError> {
        let path = self.path_of(key)?;
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ObjectError::NotFound {
                    key: key.to_owned(),
                })
            }
            Err(e) => return Err(Self::io_err(&path, e)),
        };
        let version = file_version(&file).map_err(|e| Self::io_err(&path, e))?;
        let reader = PinnedFile {
            file,
            key: key.to_owned(),
            version: version.clone(),
        };
        Ok((Box::new(reader), version))
    }

    async fn get_exact(
        &self,
        key: &str,
        version: &ObjectVersion,
    ) -> Result<Box<dyn Read + Send>, ObjectError> {
        match version {
            ObjectVersion::File { .. } => {}
            ObjectVersion::Unknown => return self.get(key).await,
            _ => {
                return Err(ObjectError::VersionUnsupported {
                    key: key.to_owned(),
                })
            }
        }
        let changed = |reason| ObjectError::Changed {
            key: key.to_owned(),
            verified: Box::new(version.clone()),
            reason,
        };
        let path = self.path_of(key)?;
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed("it was removed")),
            Err(e) => return Err(Self::io_err(&path, e)),
        };
        let found = file_version(&file).map_err(|e| Self::io_err(&path, e))?;
        if found != *version {
            return Err(changed("it was replaced or modified"));
        }
        Ok(Box::new(PinnedFile {
            file,
            key: key.to_owned(),
            version: found,
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "backups/shipgate/b.sgbk";

    fn read_all(mut reader: Box<dyn Read + Send>) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok(data)
    }

    async fn stored(bytes: &'static [u8]) -> (tempfile::TempDir, LocalDirObjects) {
        let dir = tempfile::tempdir().unwrap();
        let objects = LocalDirObjects::new(dir.path());
        objects
            .put_small(KEY, Bytes::from_static(bytes))
            .await
            .unwrap();
        (dir, objects)
    }

    fn changed_reason(err: ObjectError) -> &'static str {
        assert!(
            err.to_string()
                .starts_with(&format!("object {KEY} changed after verification: ")),
            "{err}"
        );
        match err {
            ObjectError::Changed { reason, .. } => reason,
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_pinned_read_reads_the_verified_file_again() {
        let (_dir, objects) = stored(b"first").await;
        let (reader, version) = objects.get_pinned(KEY).await.unwrap();
        assert!(
            matches!(version, ObjectVersion::File { len: 5, .. }),
            "{version:?}"
        );
        assert_eq!(read_all(reader).unwrap(), b"first");
        let again = objects.get_exact(KEY, &version).await.unwrap();
        assert_eq!(read_all(again).unwrap(), b"first");
    }

    #[tokio::test]
    async fn a_replaced_or_removed_file_is_refused_at_open() {
        let (_dir, objects) = stored(b"first").await;
        let (_, version) = objects.get_pinned(KEY).await.unwrap();
        // Same length, so only the inode tells the files apart.
        objects
            .put_small(KEY, Bytes::from_static(b"other"))
            .await
            .unwrap();
        let err = objects.get_exact(KEY, &version).await.err().unwrap();
        assert_eq!(changed_reason(err), "it was replaced or modified");

        objects.delete(KEY).await.unwrap();
        let err = objects.get_exact(KEY, &version).await.err().unwrap();
        assert_eq!(changed_reason(err), "it was removed");
    }

    #[tokio::test]
    async fn a_file_rewritten_in_place_is_refused_at_open() {
        let (dir, objects) = stored(b"first").await;
        let (_, version) = objects.get_pinned(KEY).await.unwrap();
        std::fs::write(dir.path().join(KEY), b"first, and more").unwrap();
        let err = objects.get_exact(KEY, &version).await.err().unwrap();
        assert_eq!(changed_reason(err), "it was replaced or modified");
    }

    #[tokio::test]
    async fn a_file_written_to_while_being_read_fails_at_its_end() {
        let (dir, objects) = stored(b"first").await;
        let (mut reader, _) = objects.get_pinned(KEY).await.unwrap();
        let mut head = [0u8; 2];
        reader.read_exact(&mut head).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(KEY))
            .unwrap();
        io::Write::write_all(&mut file, b" appended").unwrap();
        let err = read_all(reader).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "backup object {KEY} was modified while it was being read"
            )),
            "{err}"
        );
    }

    #[tokio::test]
    async fn versions_of_other_stores_are_not_read_and_unknown_ones_read_unpinned() {
        let (_dir, objects) = stored(b"first").await;
        let err = objects
            .get_exact(KEY, &ObjectVersion::ETag("\"abc\"".into()))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, ObjectError::VersionUnsupported { .. }),
            "{err:?}"
        );
        let reader = objects
            .get_exact(KEY, &ObjectVersion::Unknown)
            .await
            .unwrap();
        assert_eq!(read_all(reader).unwrap(), b"first");
    }
}
