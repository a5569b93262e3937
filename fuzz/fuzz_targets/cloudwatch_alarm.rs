//! The `Message` of an SNS record carrying a CloudWatch alarm:
//! `alert_webhook::payload::cloudwatch_alarm`, and the helpers it exposes.
#![no_main]

use alert_webhook::payload::{cloudwatch_alarm, key_value_pairs, parse_time};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = cloudwatch_alarm(&text, "fuzz-message-id");
    let _ = key_value_pairs(&text);
    let _ = parse_time(Some(&text), "fuzz");
});
