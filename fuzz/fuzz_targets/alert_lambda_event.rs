//! The alert function's Lambda event, dispatched on its shape as `handle_event` does: an SNS
//! event (each record's message through `cloudwatch_alarm`) or an API Gateway HTTP API
//! request turned into the handler's request by `to_http_request`. The handler itself needs
//! a store and is not called.
#![no_main]

use alert_webhook::lambda::{is_sns, to_http_request};
use alert_webhook::payload::cloudwatch_alarm;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::sns::SnsEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if is_sns(&payload) {
        if let Ok(event) = serde_json::from_value::<SnsEvent>(payload) {
            for record in event.records {
                let _ = cloudwatch_alarm(&record.sns.message, &record.sns.message_id);
            }
        }
        return;
    }
    if let Ok(event) = serde_json::from_value::<ApiGatewayV2httpRequest>(payload) {
        let _ = to_http_request(event);
    }
});
