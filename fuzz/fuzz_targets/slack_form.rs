//! Slack's interactivity request body as it arrives (`application/x-www-form-urlencoded`,
//! JSON in the `payload` field): `slack_approval::interaction::parse_form`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = slack_approval::interaction::parse_form(data);
});
