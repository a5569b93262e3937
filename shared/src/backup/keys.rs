//! Data keys for backups: one fresh AES-256 key per backup, stored only wrapped.
//!
//! [`KmsKeys`] asks AWS KMS for the key (`GenerateDataKey`) and to unwrap it (`Decrypt`);
//! [`LocalKeyFile`] wraps keys with a master key kept in a local file, for the self-hosted binary
//! and tests. Both bind the wrapped key to an encryption context naming the table and the backup
//! ([`backup_context`]), so a wrapped key copied next to another backup does not unwrap there.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

/// Encryption-context entry naming the backed-up table.
pub const CONTEXT_TABLE: &str = "shipgate:table";
/// Encryption-context entry naming the backup.
pub const CONTEXT_BACKUP_ID: &str = "shipgate:backup_id";

const LOCAL_WRAP_VERSION: u8 = 1;
const LOCAL_WRAP_AAD_PREFIX: &[u8] = b"shipgate local key wrap v1\0";
const LOCAL_WRAPPED_LEN: usize = 1 + 12 + 32 + 16;

/// The encryption context every backup key is bound to.
pub fn backup_context(table: &str, backup_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CONTEXT_TABLE.to_owned(), table.to_owned()),
        (CONTEXT_BACKUP_ID.to_owned(), backup_id.to_owned()),
    ])
}

type HmacSha256 = Hmac<Sha256>;

/// Key check value stored in the manifest: the first 16 bytes of
/// HMAC-SHA256(data key, "shipgate key check"), in hex. It tells a wrong key from a tampered
/// backup (AES-GCM alone cannot) without revealing anything usable about the key.
pub fn key_check(key: &[u8; 32]) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(b"shipgate key check");
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// Compares `key`'s check value with `expected` in constant time.
pub fn key_check_matches(key: &[u8; 32], expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    let actual = key_check(key);
    actual.len() == expected.len() && bool::from(actual.as_bytes().ct_eq(expected.as_bytes()))
}

/// A freshly generated data key.
#[derive(Debug)]
pub struct DataKey {
    /// The key itself; zeroed on drop and redacted in `Debug`.
    pub plaintext: SecretBox<[u8; 32]>,
    /// The key as wrapped by the provider; goes into the manifest.
    pub wrapped: Vec<u8>,
    /// Which master key wrapped it (a KMS key ARN, or `local:<fingerprint>`).
    pub key_id: String,
}

/// Why a data key could not be generated or unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("KMS {operation} failed")]
    Kms {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("KMS {operation} returned no usable {field}")]
    KmsResponse {
        operation: &'static str,
        field: &'static str,
    },
    #[error(
        "the wrapped data key was refused: wrong encryption context, wrong master key or a \
         modified wrapped key"
    )]
    UnwrapRefused,
    #[error("the wrapped data key belongs to master key {wrapped_by}, not {available}")]
    WrongMasterKey {
        wrapped_by: String,
        available: String,
    },
    #[error("key file {path}: {reason}")]
    BadKeyFile { path: PathBuf, reason: String },
    #[error("key file {path}")]
    KeyFileIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Generates and unwraps per-backup data keys.
#[async_trait]
pub trait DataKeyProvider: Send + Sync {
    /// `"kms"` or `"local"`, as recorded in the manifest.
    fn provider(&self) -> &'static str;

    /// A fresh data key bound to `context`.
    async fn generate(&self, context: &BTreeMap<String, String>) -> Result<DataKey, KeyError>;

    /// The plaintext of `wrapped`; fails unless `context` is the one it was generated with.
    async fn unwrap(
        &self,
        wrapped: &[u8],
        key_id: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<SecretBox<[u8; 32]>, KeyError>;
}

/// Moves a key out of a buffer the SDK handed us, zeroing the buffer.
fn take_key(mut bytes: Vec<u8>) -> Option<SecretBox<[u8; 32]>> {
    let key = (bytes.len() == 32)
        .then(|| SecretBox::init_with_mut(|k: &mut [u8; 32]| k.copy_from_slice(&bytes)));
    bytes.zeroize();
    key
}

/// Data keys from AWS KMS.
#[derive(Debug, Clone)]
pub struct KmsKeys {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsKeys {
    /// `key_id` is the KMS key (id, ARN or alias) that wraps the data keys.
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        KmsKeys {
            client,
            key_id: key_id.into(),
        }
    }

    /// Builds the client from the default AWS configuration (which honours `AWS_ENDPOINT_URL`).
    pub async fn from_env(key_id: impl Into<String>) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(aws_sdk_kms::Client::new(&config), key_id)
    }
}

fn kms_context(context: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[async_trait]
impl DataKeyProvider for KmsKeys {
    fn provider(&self) -> &'static str {
        "kms"
    }

    async fn generate(&self, context: &BTreeMap<String, String>) -> Result<DataKey, KeyError> {
        const OP: &str = "GenerateDataKey";
        let mut out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(Some(kms_context(context)))
            .send()
            .await
            .map_err(|e| KeyError::Kms {
                operation: OP,
                source: Box::new(aws_sdk_kms::Error::from(e)),
            })?;
        let missing = |field| KeyError::KmsResponse {
            operation: OP,
            field,
        };
        let plaintext = out
            .plaintext
            .take()
            .and_then(|b| take_key(b.into_inner()))
            .ok_or_else(|| missing("Plaintext"))?;
        let wrapped = out
            .ciphertext_blob
            .take()
            .map(|b| b.into_inner())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| missing("CiphertextBlob"))?;
        let key_id = out.key_id.take().ok_or_else(|| missing("KeyId"))?;
        Ok(DataKey {
            plaintext,
            wrapped,
            key_id,
        })
    }

    async fn unwrap(
        &self,
        wrapped: &[u8],
        key_id: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<SecretBox<[u8; 32]>, KeyError> {
        const OP: &str = "Decrypt";
        let mut out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped))
            .set_encryption_context(Some(kms_context(context)))
            .send()
            .await
            .map_err(|e| {
                let e = aws_sdk_kms::Error::from(e);
                if matches!(e, aws_sdk_kms::Error::InvalidCiphertextException(_)) {
                    // KMS's answer to a wrong encryption context or a modified blob.
                    KeyError::UnwrapRefused
                } else {
                    KeyError::Kms {
                        operation: OP,
                        source: Box::new(e),
                    }
                }
            })?;
        out.plaintext
            .take()
            .and_then(|b| take_key(b.into_inner()))
            .ok_or(KeyError::KmsResponse {
                operation: OP,
                field: "Plaintext",
            })
    }
}

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
