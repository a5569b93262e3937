//! Alertmanager webhook bodies: `alert_webhook::payload::alertmanager`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = alert_webhook::payload::alertmanager(data);
});
