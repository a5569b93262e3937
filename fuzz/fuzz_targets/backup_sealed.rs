//! The layers under the encryption: the input is sealed into valid chunks with the fixed key,
//! so the zstd decoder and the record reader see arbitrary data. An even first byte makes the
//! rest the compressed stream itself; an odd one makes it NDJSON that is compressed first, and
//! then the records read back must be exactly its lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipgate::backup::{verify, BackupError, BackupReader, MIN_CHUNK_SIZE};
use shipgate_fuzz::{manifest_for, seal, BACKUP_ID, KEY};

const MAX_RECORDS: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let ndjson = mode % 2 == 1;
    let compressed = if ndjson {
        zstd::encode_all(body, 1).expect("compressing in memory cannot fail")
    } else {
        body.to_vec()
    };
    let object = seal(&compressed, MIN_CHUNK_SIZE);

    let mut reader =
        BackupReader::new(&object[..], &KEY, BACKUP_ID).expect("a sealed header is accepted");
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut outcome = Ok(false);
    for _ in 0..MAX_RECORDS {
        outcome = reader.read_record(&mut record);
        match outcome {
            Ok(true) => records.push(record.clone()),
            Ok(false) | Err(_) => break,
        }
    }
    if ndjson {
        if body.is_empty() || body.ends_with(b"\n") {
            assert!(matches!(outcome, Ok(false)), "{outcome:?}");
            let lines: Vec<&[u8]> = body[..body.len().saturating_sub(1)]
                .split(|&b| b == b'\n')
                .collect();
            if !body.is_empty() {
                assert_eq!(records.len(), lines.len());
                assert!(records.iter().zip(&lines).all(|(r, l)| r == l));
            }
        } else {
            assert!(
                matches!(outcome, Err(BackupError::BadRecord { .. })),
                "{outcome:?}"
            );
        }
    }
    let _ = verify(&object[..], &KEY, BACKUP_ID, &manifest_for(MIN_CHUNK_SIZE));
});
