//! Every AWS adapter, behind the `aws` cargo feature (and the Lambda runtime behind `lambda`).
//!
//! - [`dynamodb`]: the state store ([`DynamoStore`], an [`ItemStore`](crate::store::ItemStore))
//!   and, in [`dynamodb::table`], backups of any DynamoDB table.
//! - [`s3`]: backup objects in S3. [`kms`]: backup data keys from KMS.
//! - [`sns`]: the notification publisher.
//! - [`cloudwatch`]: CloudWatch `GetMetricData` as a metric source for analysis.
//! - [`backups`]: `TableBackups::aws`, the backup jobs wired to the above.
//! - [`bootstrap`]: a function's cold start: Secrets Manager and SSM, the policy, the services.
//! - [`lambda`]: the Lambda runtime adapter and CloudWatch logging.
//!
//! Nothing outside this module names an AWS SDK type; the rest of the crate sees only the
//! ports these implement.

pub mod backups;
pub mod bootstrap;
pub mod cloudwatch;
pub mod dynamodb;
pub mod kms;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod s3;
pub mod sns;

pub use dynamodb::DynamoStore;
pub use kms::KmsKeys;
pub use s3::S3Objects;
pub use sns::SnsPublisher;

/// The AWS SDK configuration from the standard chain (honours `AWS_ENDPOINT_URL` for
/// emulators). Load it once per process.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}
