//! Data keys for backups: one fresh AES-256 key per backup, stored only wrapped.
//!
//! [`DataKeyProvider`] is the port: `crate::aws::kms::KmsKeys` asks AWS KMS for the key
//! (`GenerateDataKey`) and to unwrap it (`Decrypt`); `crate::embedded::key_file::LocalKeyFile`
//! wraps keys with a master key kept in a local file, for the self-hosted binary and tests. Both bind the wrapped key to an encryption context naming the table and the backup
//! ([`backup_context`]), so a wrapped key copied next to another backup does not unwrap there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::SecretBox;
use sha2::Sha256;

/// Encryption-context entry naming the backed-up table.
pub const CONTEXT_TABLE: &str = "shipgate:table";
/// Encryption-context entry naming the backup.
pub const CONTEXT_BACKUP_ID: &str = "shipgate:backup_id";

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
#[cfg(any(feature = "aws", feature = "embedded"))]
pub(crate) fn take_key(mut bytes: Vec<u8>) -> Option<SecretBox<[u8; 32]>> {
    use secrecy::zeroize::Zeroize;
    let key = (bytes.len() == 32)
        .then(|| SecretBox::init_with_mut(|k: &mut [u8; 32]| k.copy_from_slice(&bytes)));
    bytes.zeroize();
    key
}
