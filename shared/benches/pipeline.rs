//! Criterion benchmarks of the shared hot paths: request signatures and the backup pipeline.
//!
//! - `signature`: `verify_github` over the 30 KiB delivery the GitHub inbound bench uses,
//!   `verify_slack` over a 1.6 KB click, `verify_bearer` (checks per second).
//! - `backup_write`: NDJSON records → zstd level 3 → AES-256-GCM 1 MiB chunks, through the real
//!   `BackupWriter` into `io::sink()` (so only CPU is measured), on the calling thread — one
//!   core. Throughput is NDJSON bytes in, so MB/s compares directly with `gzip < file`.
//! - `backup_restore`: the same backup read back. `decrypt+zstd+sha256` is `BackupReader`
//!   record by record (tags, order and final chunk checked, plaintext hashed);
//!   `verify` is the restore's verification pass (`backup::verify`: the above plus every record
//!   parsed as JSON and all counts compared with the manifest). MB/s of NDJSON out.
//!
//! The data is `support/items.rs`: 32 MiB of records shaped like shipgate's own table.
//!
//! Run: `cargo bench -p shipgate --bench pipeline` (add a filter, e.g. `-- backup_write`).

#[path = "support/items.rs"]
mod items;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use secrecy::SecretString;
use shipgate::backup::{
    key_check, verify, BackupReader, BackupWriter, KeyInfo, KeyProviderKind, Manifest,
    DEFAULT_CHUNK_SIZE,
};
use shipgate::signature::{sign_github, sign_slack, verify_bearer, verify_github, verify_slack};

const BACKUP_BYTES: usize = 32 << 20;
const BACKUP_ID: &str = "shipgate.20260602T100000Z-0badc0de";
const KEY: [u8; 32] = [0x42; 32];

fn signatures(c: &mut Criterion) {
    let secret = SecretString::from("shipgate-bench-webhook-secret".to_string());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench/data/deployment_protection_rule.30k.json"
    );
    let github_body = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let github_sig = sign_github(&secret, &github_body);
    let slack_body = vec![b'x'; 1644];
    let ts = 1_748_858_400;
    let ts_header = ts.to_string();
    let slack_sig = sign_slack(&secret, ts, &slack_body);
    let bearer = "Bearer shipgate-bench-webhook-secret";

    let mut group = c.benchmark_group("signature");
    group.throughput(Throughput::Elements(1));
    group.bench_function("github_hmac/30KiB", |b| {
        b.iter(|| verify_github(&secret, black_box(&github_body), Some(&github_sig)))
    });
    group.bench_function("slack_hmac/1.6KB", |b| {
        b.iter(|| {
            verify_slack(
                &secret,
                black_box(&slack_body),
                Some(&ts_header),
                Some(&slack_sig),
                ts,
            )
        })
    });
    group.bench_function("bearer", |b| {
        b.iter(|| verify_bearer(&secret, Some(black_box(bearer))))
    });
    group.finish();
}

/// Feeds every line of `ndjson` to a fresh writer over `out`.
fn write_backup<W: io::Write>(ndjson: &[u8], out: W) -> shipgate::backup::BackupStats {
    let mut writer = BackupWriter::new(out, &KEY, BACKUP_ID).expect("writer starts");
    for line in ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        writer.write_record(line).expect("record is written");
    }
    writer.finish().expect("backup finishes")
}

fn manifest_for(stats: &shipgate::backup::BackupStats) -> Manifest {
    let key = KeyInfo {
        provider: KeyProviderKind::Local,
        key_id: "local:bench".to_string(),
        wrapped_key_b64: "AA==".to_string(),
        encryption_context: BTreeMap::from([
            ("shipgate:table".to_string(), "shipgate".to_string()),
            ("shipgate:backup_id".to_string(), BACKUP_ID.to_string()),
        ]),
        key_check: key_check(&KEY),
    };
    let created_at = "2026-06-02T10:00:00Z".parse().expect("timestamp");
    Manifest::new(
        BACKUP_ID,
        "shipgate",
        created_at,
        DEFAULT_CHUNK_SIZE,
        stats,
        key,
    )
}

fn backup(c: &mut Criterion) {
    let ndjson = items::ndjson(BACKUP_BYTES, 7);
    let mut encrypted = Vec::new();
    let stats = write_backup(&ndjson, &mut encrypted);
    let manifest = manifest_for(&stats);
    // The restore benches must read a backup that verifies, or they time an early error.
    verify(&encrypted[..], &KEY, BACKUP_ID, &manifest).expect("backup verifies");
    eprintln!(
        "backup data: {} records, {} B NDJSON -> {} B zstd ({:.2}x) -> {} B encrypted, {} chunks",
        stats.items,
        stats.plaintext_bytes,
        stats.compressed_bytes,
        stats.plaintext_bytes as f64 / stats.compressed_bytes as f64,
        stats.encrypted_bytes,
        stats.chunks
    );

    let mut group = c.benchmark_group("backup_write");
    group.throughput(Throughput::Bytes(stats.plaintext_bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("ndjson_zstd3_aes256gcm", |b| {
        b.iter(|| write_backup(black_box(&ndjson), io::sink()))
    });
    group.finish();

    let mut group = c.benchmark_group("backup_restore");
    group.throughput(Throughput::Bytes(stats.plaintext_bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("decrypt+zstd+sha256", |b| {
        b.iter(|| {
            let mut reader =
                BackupReader::new(black_box(&encrypted[..]), &KEY, BACKUP_ID).expect("header");
            let mut record = Vec::new();
            while reader.read_record(&mut record).expect("record") {}
            reader.stats()
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| verify(black_box(&encrypted[..]), &KEY, BACKUP_ID, &manifest).expect("verifies"))
    });
    group.finish();
}

criterion_group!(benches, signatures, backup);
criterion_main!(benches);
