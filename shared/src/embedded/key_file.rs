//! Backup data keys wrapped by a master key in a local file ([`LocalKeyFile`]), for the
//! self-hosted binary and tests.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use crate::backup::keys::{take_key, DataKey, DataKeyProvider, KeyError};

type HmacSha256 = Hmac<Sha256>;

const LOCAL_WRAP_VERSION: u8 = 1;
const LOCAL_WRAP_AAD_PREFIX: &[u8] = b"shipgate local key wrap v1\0";
const LOCAL_WRAPPED_LEN: usize = 1 + 12 + 32 + 16;

/// Data keys wrapped by a 32-byte master key kept in a local file (mode 0600), created on the
/// first `generate`.
///
/// Wrapped key = `version 1 | nonce (12) | AES-256-GCM(master, data key) + tag`, with the
/// canonical encoding of the encryption context as associated data. The key id is
/// `local:` followed by a fingerprint of the master key, so a key wrapped under another master
/// key is reported as such.
#[derive(Debug, Clone)]
pub struct LocalKeyFile {
    path: PathBuf,
}

impl LocalKeyFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalKeyFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self, source: std::io::Error) -> KeyError {
        KeyError::KeyFileIo {
            path: self.path.clone(),
            source,
        }
    }

    fn bad(&self, reason: impl Into<String>) -> KeyError {
        KeyError::BadKeyFile {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Reads the master key, refusing a file others could read.
    fn load(&self) -> Result<SecretBox<[u8; 32]>, KeyError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.io_err(e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(self.bad(format!(
                "permissions {mode:o} let others read the master key; expected 600"
            )));
        }
        let bytes = std::fs::read(&self.path).map_err(|e| self.io_err(e))?;
        take_key(bytes).ok_or_else(|| self.bad("a master key file holds exactly 32 bytes"))
    }

    /// Reads the master key, creating it first if the file does not exist. Creation writes a
    /// temporary file and hard-links it into place, which fails rather than overwrites when
    /// another process got there first; the loser then reads the winner's key.
    fn load_or_create(&self) -> Result<SecretBox<[u8; 32]>, KeyError> {
        match self.load() {
            Err(KeyError::KeyFileIo { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let key = SecretBox::init_with_mut(|k: &mut [u8; 32]| rand::rngs::OsRng.fill_bytes(k));
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| self.io_err(e))?;
        }
        let tmp = dir.join(format!(".shipgate-key-{}.tmp", uuid::Uuid::new_v4()));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(key.expose_secret())?;
            file.sync_all()?;
            std::fs::hard_link(&tmp, &self.path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.load(),
            Err(e) => Err(self.io_err(e)),
        }
    }
}

fn local_key_id(master: &[u8; 32]) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master).expect("HMAC accepts any key length");
    mac.update(b"shipgate local key id");
    format!("local:{}", hex::encode(&mac.finalize().into_bytes()[..8]))
}

/// Length-prefixed, sorted (BTreeMap order) encoding: unambiguous, so two different contexts
/// never produce the same associated data.
fn canonical_context(context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = LOCAL_WRAP_AAD_PREFIX.to_vec();
    for (k, v) in context {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

#[async_trait]
impl DataKeyProvider for LocalKeyFile {
    fn provider(&self) -> &'static str {
        "local"
    }

    async fn generate(&self, context: &BTreeMap<String, String>) -> Result<DataKey, KeyError> {
        let master = self.load_or_create()?;
        let plaintext =
            SecretBox::init_with_mut(|k: &mut [u8; 32]| rand::rngs::OsRng.fill_bytes(k));
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = canonical_context(context);
        let sealed = Aes256Gcm::new(master.expose_secret().into())
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.expose_secret(),
                    aad: &aad,
                },
            )
            .map_err(|_| self.bad("AES-GCM refused to wrap the data key"))?;
        let mut wrapped = Vec::with_capacity(LOCAL_WRAPPED_LEN);
        wrapped.push(LOCAL_WRAP_VERSION);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(DataKey {
            plaintext,
            wrapped,
            key_id: local_key_id(master.expose_secret()),
        })
    }

    async fn unwrap(
        &self,
        wrapped: &[u8],
        key_id: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<SecretBox<[u8; 32]>, KeyError> {
        // Never create a master key here: a new one could not unwrap anything.
        let master = self.load()?;
        let available = local_key_id(master.expose_secret());
        if key_id != available {
            return Err(KeyError::WrongMasterKey {
                wrapped_by: key_id.to_owned(),
                available,
            });
        }
        if wrapped.len() != LOCAL_WRAPPED_LEN || wrapped[0] != LOCAL_WRAP_VERSION {
            return Err(KeyError::UnwrapRefused);
        }
        let aad = canonical_context(context);
        let plain = Aes256Gcm::new(master.expose_secret().into())
            .decrypt(
                Nonce::from_slice(&wrapped[1..13]),
                Payload {
                    msg: &wrapped[13..],
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::UnwrapRefused)?;
        take_key(plain).ok_or(KeyError::UnwrapRefused)
    }
}
