//! Arbitrary bytes as an encrypted backup object under a fixed key: `BackupReader` and
//! `verify` must refuse them with an error, never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipgate::backup::{verify, BackupReader};
use shipgate_fuzz::{manifest_for, BACKUP_ID, KEY};

/// More records than any input of the default `-max_len` can hold; a guard against a loop
/// that never ends rather than a limit of the format.
const MAX_RECORDS: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = BackupReader::new(data, &KEY, BACKUP_ID) {
        let mut record = Vec::new();
        for _ in 0..MAX_RECORDS {
            match reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        let _ = reader.stats();
    }
    let _ = verify(data, &KEY, BACKUP_ID, &manifest_for(1024));
});
