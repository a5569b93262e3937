//! Backup manifests: `Manifest::parse`, and a parsed manifest must survive its own round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipgate::backup::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::parse(data) {
        let _ = manifest.key.wrapped_key();
        let json = manifest.to_json().expect("a parsed manifest serialises");
        let again = Manifest::parse(&json).expect("a serialised manifest parses");
        assert_eq!(again, manifest);
    }
});
