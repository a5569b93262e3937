//! Backup data keys from AWS KMS ([`KmsKeys`]): `GenerateDataKey` and `Decrypt`, bound to the
//! backup's encryption context.

use std::collections::BTreeMap;

use async_trait::async_trait;
use secrecy::SecretBox;

use crate::backup::keys::{take_key, DataKey, DataKeyProvider, KeyError};

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
        let config = crate::aws::sdk_config().await;
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
