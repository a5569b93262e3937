//! The GitHub webhook parser, `github_webhook::events::parse`. Input: the `X-GitHub-Event`
//! name, a newline, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (event, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    let event = String::from_utf8_lossy(event);
    let _ = github_webhook::events::parse(&event, body);
});
