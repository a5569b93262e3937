//! The policy file: `Policy::parse`, with every error rendered (error positions index into the
//! text, so rendering is where an off-by-one would panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipgate::domain::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse("policy.toml", text) {
        Ok(policy) => {
            let _ = format!("{policy:?}");
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
});
