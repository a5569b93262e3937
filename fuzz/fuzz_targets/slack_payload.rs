//! The JSON inside Slack's `payload` form field: `slack_approval::interaction::parse_payload`,
//! and `split_value` on the input as text. Reaching the JSON through the form would make the
//! fuzzer URL-encode everything it tries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slack_approval::interaction::{parse_payload, split_value};

fuzz_target!(|data: &[u8]| {
    let _ = parse_payload(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = split_value(text, "fuzz");
    }
});
