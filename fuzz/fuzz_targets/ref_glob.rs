//! `allowed_refs` globs against git refs: `ref_matches`, plus the policy's duration and time of
//! day parsers. Input: pattern, a newline, then the ref. Slow inputs show up as timeouts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipgate::domain::policy::{parse_duration, ref_matches, TimeOfDay};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, git_ref) = text.split_once('\n').unwrap_or((text, "main"));
    let _ = ref_matches(pattern, git_ref);
    let _ = parse_duration(pattern);
    let _ = TimeOfDay::parse(pattern);
});
