//! The backup format without AWS: round trips, every kind of tampering, the memory bound, the
//! local key file and the local-directory object store.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use secrecy::ExposeSecret;
use shipgate::backup::format::MAX_BACKUP_ID_LEN;
use shipgate::backup::keys::{CONTEXT_BACKUP_ID, CONTEXT_TABLE};
use shipgate::backup::{
    backup_context, key_check, verify, BackupError, BackupObjects, BackupReader, BackupStats,
    BackupWriter, DataKeyProvider, KeyError, KeyInfo, KeyProviderKind, Manifest, ObjectError,
    UploadWriter, DEFAULT_CHUNK_SIZE,
};
use shipgate::embedded::LocalDirObjects;
use shipgate::embedded::LocalKeyFile;

const KEY: [u8; 32] = [7; 32];
const ID: &str = "bk-0001";
const SMALL_CHUNK: u32 = 1024;

fn record(i: usize) -> Vec<u8> {
    // Varying, only partly compressible content so that small chunk sizes give many chunks.
    let noise = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        r#"{{"pk":"deployment#{i}","sk":"v{}","noise":"{noise:x}"}}"#,
        i % 7
    )
    .into_bytes()
}

fn write_backup(n: usize, chunk_size: u32) -> (Vec<u8>, BackupStats) {
    let mut out = Vec::new();
    let mut writer = BackupWriter::with_chunk_size(&mut out, &KEY, ID, chunk_size).unwrap();
    for i in 0..n {
        writer.write_record(&record(i)).unwrap();
    }
    let stats = writer.finish().unwrap();
    (out, stats)
}

fn manifest_for(stats: &BackupStats, key: &[u8; 32], chunk_size: u32) -> Manifest {
    Manifest::new(
        ID,
        "shipgate",
        "2025-01-02T03:04:05Z".parse().unwrap(),
        chunk_size,
        stats,
        KeyInfo {
            provider: KeyProviderKind::Local,
            key_id: "local:0011223344556677".to_owned(),
            wrapped_key_b64: "AAECAw==".to_owned(),
            encryption_context: backup_context("shipgate", ID),
            key_check: key_check(key),
        },
    )
}

fn read_all(bytes: &[u8], key: &[u8; 32], id: &str) -> Result<Vec<Vec<u8>>, BackupError> {
    BackupReader::new(Cursor::new(bytes), key, id)?.collect()
}

fn header_len() -> usize {
    10 + ID.len()
}

/// Byte ranges of each frame (nonce, length, ciphertext and tag).
fn frames(bytes: &[u8]) -> Vec<Range<usize>> {
    let mut at = header_len();
    let mut found = Vec::new();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 12..at + 16].try_into().unwrap()) as usize;
        found.push(at..at + 16 + len);
        at += 16 + len;
    }
    found
}

/// A multi-chunk backup with its manifest.
fn sample() -> (Vec<u8>, Manifest) {
    let (bytes, stats) = write_backup(2_000, SMALL_CHUNK);
    assert!(
        stats.chunks >= 4,
        "want several chunks, got {}",
        stats.chunks
    );
    let manifest = manifest_for(&stats, &KEY, SMALL_CHUNK);
    (bytes, manifest)
}

#[test]
fn round_trips_an_empty_backup_with_exactly_one_final_chunk() {
    let (bytes, stats) = write_backup(0, DEFAULT_CHUNK_SIZE);
    assert_eq!(stats.items, 0);
    assert_eq!(stats.plaintext_bytes, 0);
    assert_eq!(stats.chunks, 1);
    assert_eq!(
        stats.plaintext_sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(stats.encrypted_bytes, bytes.len() as u64);
    assert_eq!(frames(&bytes).len(), 1);
    assert!(read_all(&bytes, &KEY, ID).unwrap().is_empty());
    let report = verify(
        Cursor::new(&bytes),
        &KEY,
        ID,
        &manifest_for(&stats, &KEY, DEFAULT_CHUNK_SIZE),
    )
    .unwrap();
    assert_eq!(report, stats);
}

#[test]
fn round_trips_a_single_record() {
    let (bytes, stats) = write_backup(1, DEFAULT_CHUNK_SIZE);
    assert_eq!(stats.items, 1);
    assert_eq!(stats.chunks, 1);
    assert_eq!(stats.plaintext_bytes, record(0).len() as u64 + 1);
    assert_eq!(read_all(&bytes, &KEY, ID).unwrap(), vec![record(0)]);
    verify(
        Cursor::new(&bytes),
        &KEY,
        ID,
        &manifest_for(&stats, &KEY, DEFAULT_CHUNK_SIZE),
    )
    .unwrap();
}

#[test]
fn round_trips_100_000_records_across_many_chunks() {
    let (bytes, stats) = write_backup(100_000, 16 * 1024);
    assert_eq!(stats.items, 100_000);
    assert!(stats.chunks > 10, "got {} chunks", stats.chunks);
    assert_eq!(stats.encrypted_bytes, bytes.len() as u64);
    assert_eq!(frames(&bytes).len() as u64, stats.chunks);

    let mut reader = BackupReader::new(Cursor::new(&bytes), &KEY, ID).unwrap();
    let mut line = Vec::new();
    let mut i = 0;
    while reader.read_record(&mut line).unwrap() {
        assert_eq!(line, record(i), "record {i}");
        i += 1;
    }
    assert_eq!(i, 100_000);
    assert_eq!(reader.stats(), stats);

    let report = verify(
        Cursor::new(&bytes),
        &KEY,
        ID,
        &manifest_for(&stats, &KEY, 16 * 1024),
    )
    .unwrap();
    assert_eq!(report, stats);
}

#[test]
fn refuses_a_flipped_byte_in_a_chunk_ciphertext() {
    let (mut bytes, manifest) = sample();
    let second = frames(&bytes)[1].clone();
    bytes[second.start + 16 + 100] ^= 0x01;
    let err = verify(Cursor::new(&bytes), &KEY, ID, &manifest).unwrap_err();
    assert!(matches!(err, BackupError::Tampered { chunk: 1 }), "{err:?}");
}

#[test]
fn refuses_a_flipped_byte_in_a_chunk_tag() {
    let (mut bytes, manifest) = sample();
    let last = frames(&bytes).last().unwrap().clone();
    bytes[last.end - 1] ^= 0x80;
    let err = verify(Cursor::new(&bytes), &KEY, ID, &manifest).unwrap_err();
    assert!(
        matches!(err, BackupError::Tampered { chunk } if chunk == manifest.chunks - 1),
        "{err:?}"
    );
}

#[test]
fn refuses_a_flipped_byte_in_a_chunk_nonce_or_length() {
    let (bytes, manifest) = sample();
    let first = frames(&bytes)[0].clone();
    for offset in [0, 11, 12, 15] {
        let mut bad = bytes.clone();
        bad[first.start + offset] ^= 0x01;
        let err = verify(Cursor::new(&bad), &KEY, ID, &manifest).unwrap_err();
        assert!(
            matches!(err, BackupError::Tampered { chunk: 0 }),
            "offset {offset}: {err:?}"
        );
    }
}

#[test]
fn refuses_a_flipped_byte_in_the_header() {
    let (bytes, manifest) = sample();
    // Magic, version and each byte of the chunk size.
    for at in 0..9 {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let err = verify(Cursor::new(&bad), &KEY, ID, &manifest).unwrap_err();
        assert!(
            matches!(err, BackupError::BadHeader { .. }),
            "byte {at}: {err:?}"
        );
    }
    // The backup id length and the backup id itself.
    for at in 9..header_len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let err = verify(Cursor::new(&bad), &KEY, ID, &manifest).unwrap_err();
        assert!(
            matches!(
                err,
                BackupError::WrongBackup { .. } | BackupError::BadHeader { .. }
            ),
            "byte {at}: {err:?}"
        );
    }
}

#[test]
fn refuses_a_header_chunk_size_change_even_without_a_manifest() {
    let (mut bytes, _) = sample();
    // 1024 → 1025: still a valid size, but the header is authenticated with every chunk.
    bytes[8] ^= 0x01;
    let err = read_all(&bytes, &KEY, ID).unwrap_err();
    assert!(matches!(err, BackupError::Tampered { chunk: 0 }), "{err:?}");
}

#[test]
fn refuses_a_backup_whose_final_chunk_was_dropped() {
    let (bytes, manifest) = sample();
    let last = frames(&bytes).last().unwrap().clone();
    let err = verify(Cursor::new(&bytes[..last.start]), &KEY, ID, &manifest).unwrap_err();
    assert!(matches!(err, BackupError::Truncated), "{err:?}");
    let err = read_all(&bytes[..last.start], &KEY, ID).unwrap_err();
    assert!(matches!(err, BackupError::Truncated), "{err:?}");
}

#[test]
fn refuses_a_backup_cut_mid_chunk() {
    let (bytes, manifest) = sample();
    let fs = frames(&bytes);
    let cuts = [
        fs[1].start + 5,            // inside a frame head
        fs[1].start + 16 + 10,      // inside a ciphertext
        fs.last().unwrap().end - 1, // inside the final tag
        header_len(),               // no chunk at all
    ];
    for cut in cuts {
        let err = verify(Cursor::new(&bytes[..cut]), &KEY, ID, &manifest).unwrap_err();
        assert!(matches!(err, BackupError::Truncated), "cut {cut}: {err:?}");
    }
}

#[test]
fn refuses_a_stream_shorter_than_its_header() {
    let (bytes, manifest) = sample();
    for cut in [0, 3, header_len() - 1] {
        let err = verify(Cursor::new(&bytes[..cut]), &KEY, ID, &manifest).unwrap_err();
        assert!(
            matches!(err, BackupError::BadHeader { .. }),
            "cut {cut}: {err:?}"
        );
    }
}

#[test]
fn refuses_two_swapped_chunks_as_out_of_order() {
    let (bytes, manifest) = sample();
    let fs = frames(&bytes);
    let mut swapped = bytes[..fs[1].start].to_vec();
    swapped.extend_from_slice(&bytes[fs[2].clone()]);
    swapped.extend_from_slice(&bytes[fs[1].clone()]);
    swapped.extend_from_slice(&bytes[fs[3].start..]);
    assert_eq!(swapped.len(), bytes.len());
    let err = verify(Cursor::new(&swapped), &KEY, ID, &manifest).unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::OutOfOrder {
                position: 1,
                found: 2
            }
        ),
        "{err:?}"
    );
}

#[test]
fn refuses_data_appended_after_the_final_chunk() {
    let (bytes, manifest) = sample();
    let fs = frames(&bytes);
    let mut one_byte = bytes.clone();
    one_byte.push(0);
    let mut whole_frame = bytes.clone();
    whole_frame.extend_from_slice(&bytes[fs[1].clone()]);
    let mut frame_head = bytes.clone();
    frame_head.extend_from_slice(&bytes[fs[1].start..fs[1].start + 16]);
    for bad in [one_byte, whole_frame, frame_head] {
        let err = verify(Cursor::new(&bad), &KEY, ID, &manifest).unwrap_err();
        assert!(matches!(err, BackupError::TrailingData), "{err:?}");
    }
}

#[test]
fn reports_a_wrong_data_key_as_wrong_key_through_the_key_check() {
    let (bytes, manifest) = sample();
    let wrong = [8u8; 32];
    let err = verify(Cursor::new(&bytes), &wrong, ID, &manifest).unwrap_err();
    assert!(matches!(err, BackupError::WrongKey), "{err:?}");
    // Without the manifest's key check, GCM cannot tell a wrong key from tampering.
    let err = read_all(&bytes, &wrong, ID).unwrap_err();
    assert!(matches!(err, BackupError::Tampered { chunk: 0 }), "{err:?}");
}

#[test]
fn refuses_a_backup_read_under_another_backup_id() {
    let (bytes, manifest) = sample();
    let err = read_all(&bytes, &KEY, "bk-0002").unwrap_err();
    assert!(
        matches!(&err, BackupError::WrongBackup { expected, found } if expected == "bk-0002" && found == ID),
        "{err:?}"
    );
    let err = verify(Cursor::new(&bytes), &KEY, "bk-0002", &manifest).unwrap_err();
    assert!(matches!(err, BackupError::WrongBackup { .. }), "{err:?}");
}

#[test]
fn refuses_a_manifest_whose_item_count_differs() {
    let (bytes, mut manifest) = sample();
    manifest.items += 1;
    let err = verify(Cursor::new(&bytes), &KEY, ID, &manifest).unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::CountMismatch {
                expected: 2001,
                found: 2000
            }
        ),
        "{err:?}"
    );
}

#[test]
fn refuses_a_manifest_whose_checksum_differs() {
    let (bytes, mut manifest) = sample();
    manifest.plaintext_sha256 = "0".repeat(64);
    let err = verify(Cursor::new(&bytes), &KEY, ID, &manifest).unwrap_err();
    assert!(
        matches!(err, BackupError::ChecksumMismatch { .. }),
        "{err:?}"
    );
}

#[test]
fn refuses_a_manifest_whose_sizes_differ() {
    let (bytes, manifest) = sample();
    let mut m = manifest.clone();
    m.encrypted_bytes -= 1;
    let err = verify(Cursor::new(&bytes), &KEY, ID, &m).unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::SizeMismatch {
                what: "encrypted size",
                ..
            }
        ),
        "{err:?}"
    );
    let mut m = manifest;
    m.chunks += 1;
    let err = verify(Cursor::new(&bytes), &KEY, ID, &m).unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::SizeMismatch {
                what: "chunk count",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn verify_refuses_records_that_are_not_json() {
    let mut out = Vec::new();
    let mut writer = BackupWriter::new(&mut out, &KEY, ID).unwrap();
    writer.write_record(br#"{"ok":true}"#).unwrap();
    writer.write_record(b"not json").unwrap();
    let stats = writer.finish().unwrap();
    let err = verify(
        Cursor::new(&out),
        &KEY,
        ID,
        &manifest_for(&stats, &KEY, DEFAULT_CHUNK_SIZE),
    )
    .unwrap_err();
    assert!(
        matches!(&err, BackupError::Json { what, .. } if what == "record 1"),
        "{err:?}"
    );
}

#[test]
fn writer_refuses_a_record_containing_a_newline() {
    let mut writer = BackupWriter::new(Vec::new(), &KEY, ID).unwrap();
    let err = writer.write_record(b"{}\n{}").unwrap_err();
    assert!(matches!(err, BackupError::BadRecord { .. }), "{err:?}");
}

#[test]
fn writer_refuses_unusable_backup_ids_and_chunk_sizes() {
    for id in ["", "a/b", "with space", &"x".repeat(MAX_BACKUP_ID_LEN + 1)] {
        assert!(
            matches!(
                BackupWriter::new(Vec::new(), &KEY, id),
                Err(BackupError::InvalidSettings { .. })
            ),
            "{id:?}"
        );
    }
    for size in [0, 1023, 64 * 1024 * 1024 + 1] {
        assert!(matches!(
            BackupWriter::with_chunk_size(Vec::new(), &KEY, ID, size),
            Err(BackupError::InvalidSettings { .. })
        ));
    }
}

#[test]
fn writer_and_reader_hold_at_most_two_chunks_for_50_mb_of_input() {
    let chunk = DEFAULT_CHUNK_SIZE as usize;
    let mut out = Vec::new();
    let mut writer = BackupWriter::new(&mut out, &KEY, ID).unwrap();
    let mut written = 0usize;
    let mut i = 0usize;
    // Hex of a multiplicative hash: compresses, but not to nothing, so many chunks are sealed.
    let mut line = String::new();
    while written < 50_000_000 {
        line.clear();
        line.push_str(r#"{"pk":"item","data":""#);
        for j in 0..16u64 {
            let v = (i as u64 * 16 + j).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            line.push_str(&format!("{:016x}", v >> 8));
        }
        line.push_str(r#""}"#);
        writer.write_record(line.as_bytes()).unwrap();
        written += line.len() + 1;
        i += 1;
        if i % 10_000 == 0 {
            assert!(writer.buffered_capacity() <= 2 * chunk);
        }
    }
    assert!(writer.buffered_capacity() <= 2 * chunk);
    let stats = writer.finish().unwrap();
    assert!(stats.plaintext_bytes >= 50_000_000);
    assert!(stats.chunks >= 5, "only {} chunks", stats.chunks);

    let mut reader = BackupReader::new(Cursor::new(&out), &KEY, ID).unwrap();
    let mut record = Vec::new();
    let mut n = 0u64;
    while reader.read_record(&mut record).unwrap() {
        n += 1;
        if n % 10_000 == 0 {
            assert!(reader.buffered_capacity() <= 2 * chunk);
        }
    }
    assert_eq!(n, stats.items);
    assert_eq!(reader.stats(), stats);
}

#[test]
fn manifest_survives_json_round_trip_and_validation() {
    let (_, manifest) = sample();
    let json = manifest.to_json().unwrap();
    assert_eq!(Manifest::parse(&json).unwrap(), manifest);
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(value["created_at"], "2025-01-02T03:04:05Z");
    assert_eq!(value["key"]["provider"], "local");
}

#[test]
fn manifest_parse_refuses_bad_versions_and_fields() {
    let (_, manifest) = sample();
    let mut m = manifest.clone();
    m.format_version = 2;
    let err = Manifest::parse(&m.to_json().unwrap()).unwrap_err();
    assert!(
        matches!(err, BackupError::InvalidManifest { .. }),
        "{err:?}"
    );

    let mut m = manifest.clone();
    m.key
        .encryption_context
        .insert(CONTEXT_TABLE.to_owned(), "other-table".to_owned());
    let err = Manifest::parse(&m.to_json().unwrap()).unwrap_err();
    assert!(
        matches!(err, BackupError::InvalidManifest { .. }),
        "{err:?}"
    );

    let mut m = manifest.clone();
    m.key.encryption_context.remove(CONTEXT_BACKUP_ID);
    assert!(Manifest::parse(&m.to_json().unwrap()).is_err());

    let mut m = manifest.clone();
    m.plaintext_sha256 = "xyz".to_owned();
    assert!(Manifest::parse(&m.to_json().unwrap()).is_err());

    let mut value: serde_json::Value =
        serde_json::from_slice(&manifest.to_json().unwrap()).unwrap();
    value["items"] = serde_json::json!("many");
    let err = Manifest::parse(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(
        matches!(&err, BackupError::Json { what, .. } if what.contains("items")),
        "{err:?}"
    );
}

#[tokio::test]
async fn local_key_file_is_created_with_0600_and_unwraps_only_in_its_context() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys").join("master.key");
    let keys = LocalKeyFile::new(&path);
    let context = backup_context("shipgate", ID);

    let key = keys.generate(&context).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    assert!(key.key_id.starts_with("local:"));
    assert!(!format!("{key:?}").contains(&hex::encode(key.plaintext.expose_secret())));

    let again = keys
        .unwrap(&key.wrapped, &key.key_id, &context)
        .await
        .unwrap();
    assert_eq!(again.expose_secret(), key.plaintext.expose_secret());

    // A second key from the same file differs and reuses the master key.
    let second = keys.generate(&context).await.unwrap();
    assert_ne!(
        second.plaintext.expose_secret(),
        key.plaintext.expose_secret()
    );
    assert_eq!(second.key_id, key.key_id);

    for wrong in [
        backup_context("shipgate", "bk-0002"),
        backup_context("other-table", ID),
        BTreeMap::new(),
    ] {
        let err = keys
            .unwrap(&key.wrapped, &key.key_id, &wrong)
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::UnwrapRefused), "{err:?}");
    }
    let mut modified = key.wrapped.clone();
    modified[20] ^= 1;
    let err = keys
        .unwrap(&modified, &key.key_id, &context)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::UnwrapRefused), "{err:?}");
}

#[tokio::test]
async fn local_key_file_refuses_another_master_key_and_open_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalKeyFile::new(dir.path().join("a.key"));
    let second = LocalKeyFile::new(dir.path().join("b.key"));
    let context = backup_context("shipgate", ID);
    let key = first.generate(&context).await.unwrap();
    second.generate(&context).await.unwrap();
    let err = second
        .unwrap(&key.wrapped, &key.key_id, &context)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err:?}");

    std::fs::set_permissions(first.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = first
        .unwrap(&key.wrapped, &key.key_id, &context)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::BadKeyFile { .. }), "{err:?}");

    // Unwrapping never creates a master key.
    let missing = LocalKeyFile::new(dir.path().join("missing.key"));
    let err = missing
        .unwrap(&key.wrapped, &key.key_id, &context)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::KeyFileIo { .. }), "{err:?}");
    assert!(!missing.path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_up_to_a_local_directory_and_verifies_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn BackupObjects> = Arc::new(LocalDirObjects::new(dir.path()));
    let keys = LocalKeyFile::new(dir.path().join("master.key"));
    let context = backup_context("shipgate", ID);
    let data_key = keys.generate(&context).await.unwrap();

    let object_key = format!("backups/shipgate/{ID}.sgbk");
    let upload = UploadWriter::start(objects.clone(), object_key.clone());
    let key = *data_key.plaintext.expose_secret();
    let (stats, size) = tokio::task::spawn_blocking(move || {
        let mut upload = upload;
        let mut writer = BackupWriter::with_chunk_size(&mut upload, &key, ID, 4096).unwrap();
        for i in 0..20_000 {
            writer.write_record(&record(i)).unwrap();
        }
        let stats = writer.finish().unwrap();
        (stats, upload.finish().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(size, stats.encrypted_bytes);

    let manifest = Manifest::new(
        ID,
        "shipgate",
        jiff::Timestamp::now(),
        4096,
        &stats,
        KeyInfo {
            provider: KeyProviderKind::Local,
            key_id: data_key.key_id.clone(),
            wrapped_key_b64: base64_encode(&data_key.wrapped),
            encryption_context: context.clone(),
            key_check: key_check(&key),
        },
    );
    let manifest_key = format!("backups/shipgate/{ID}.manifest.json");
    objects
        .put_small(&manifest_key, manifest.to_json().unwrap().into())
        .await
        .unwrap();

    // Restore side: everything comes from the store and the key file.
    let manifest = Manifest::parse(&objects.get_small(&manifest_key).await.unwrap()).unwrap();
    let unwrapped = keys
        .unwrap(
            &manifest.key.wrapped_key().unwrap(),
            &manifest.key.key_id,
            &manifest.key.encryption_context,
        )
        .await
        .unwrap();
    let unwrapped = *unwrapped.expose_secret();
    let reader = objects.get(&object_key).await.unwrap();
    let report = tokio::task::spawn_blocking(move || verify(reader, &unwrapped, ID, &manifest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report, stats);

    let listed = objects.list("backups/shipgate/").await.unwrap();
    let keys_listed: Vec<_> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys_listed, [manifest_key.as_str(), object_key.as_str()]);
    assert_eq!(listed[1].size, stats.encrypted_bytes);
    assert!(objects.list("backups/other").await.unwrap().is_empty());

    objects.delete(&object_key).await.unwrap();
    objects.delete(&object_key).await.unwrap();
    assert!(matches!(
        objects.get(&object_key).await,
        Err(ObjectError::NotFound { .. })
    ));
    assert_eq!(objects.list("backups/").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn BackupObjects> = Arc::new(LocalDirObjects::new(dir.path()));
    let upload = UploadWriter::start(objects.clone(), "backups/abandoned.sgbk");
    tokio::task::spawn_blocking(move || {
        let mut upload = upload;
        let mut writer = BackupWriter::with_chunk_size(&mut upload, &KEY, ID, 1024).unwrap();
        for i in 0..20_000 {
            writer.write_record(&record(i)).unwrap();
        }
        // Dropped without finish: a failed backup.
    })
    .await
    .unwrap();
    // The upload task notices the missing end marker and removes its temporary file.
    for _ in 0..100 {
        if std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .count()
            == 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(objects.list("").await.unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn local_directory_refuses_keys_that_escape_it() {
    let dir = tempfile::tempdir().unwrap();
    let objects = LocalDirObjects::new(dir.path());
    for key in ["", "../x", "a//b", "/abs", "a/./b", "a\\b"] {
        let err = objects.put_small(key, "x".into()).await.unwrap_err();
        assert!(
            matches!(err, ObjectError::InvalidKey { .. }),
            "{key:?}: {err:?}"
        );
    }
    assert!(matches!(
        objects.list("../").await,
        Err(ObjectError::InvalidKey { .. })
    ));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
