//! Notifications through SNS ([`SnsPublisher`]): one message per notification, its `kind` as a
//! message attribute so subscriptions can filter (the notifier's queue takes deployments,
//! incidents and jobs; scheduled-jobs takes pre-deploy backup requests).

use async_trait::async_trait;

use crate::notify::{Notification, NotificationBody, PublishError, Publisher};

/// SNS: one message per notification, `kind` as a message attribute for filter policies.
pub struct SnsPublisher {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsPublisher {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsPublisher {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

fn kind_of(body: &NotificationBody) -> &'static str {
    match body {
        NotificationBody::Deployment { .. } => "deployment",
        NotificationBody::Incident { .. } => "incident",
        NotificationBody::Job { .. } => "job",
        NotificationBody::PreDeployBackup { .. } => "pre_deploy_backup",
    }
}

#[async_trait]
impl Publisher for SnsPublisher {
    async fn publish(&self, n: &Notification) -> Result<(), PublishError> {
        let message = serde_json::to_string(n).map_err(|e| PublishError::Failed {
            message: "serialising notification".into(),
            source: Some(Box::new(e)),
        })?;
        let attr = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(kind_of(&n.body))
            .build()
            .map_err(|e| PublishError::Failed {
                message: "building attribute".into(),
                source: Some(Box::new(e)),
            })?;
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(message)
            .message_attributes("kind", attr)
            .send()
            .await
            .map_err(|e| PublishError::Failed {
                message: "sns publish".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(())
    }
}
