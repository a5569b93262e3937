//! Streams an NDJSON file through shipgate's real backup writer (or verifier), for
//! `scripts/bench/backup-baselines.sh` to compare with `gzip | openssl` and `zstd | openssl`.
//!
//! ```text
//! backup_file gen OUT --mb N [--seed S]        deterministic table-like NDJSON (benches/support)
//! backup_file write IN OUT --key-dir DIR       IN -> OUT (+ OUT.manifest.json); OUT may be /dev/null
//! backup_file verify OBJ --key-dir DIR         the restore's verification pass over OBJ
//! ```
//!
//! `write` and `verify` run on one thread, read and write through 1 MiB buffers, and print one
//! `key=value` line: bytes (NDJSON), seconds, MB/s (10^6 bytes), and the backup's sizes. The data
//! key comes from a local master key file in `--key-dir` (created on first use, mode 600), as
//! `shipgate backup` does without KMS; the manifest is written beside OUT so `verify` can check
//! the object against it. Build it in release: `cargo build --release -p shipgate --example
//! backup_file`.

#[allow(dead_code)]
#[path = "../benches/support/items.rs"]
mod items;

use std::error::Error;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use secrecy::ExposeSecret;
use shipgate::backup::{
    backup_context, key_check, verify, BackupWriter, DataKeyProvider, KeyInfo, KeyProviderKind,
    Manifest, DEFAULT_CHUNK_SIZE,
};
use shipgate::embedded::LocalKeyFile;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const BUFFER: usize = 1 << 20;
const TABLE: &str = "shipgate";
const BACKUP_ID: &str = "shipgate.20260602T100000Z-0badc0de";

fn usage() -> Box<dyn Error> {
    "usage: backup_file gen OUT --mb N [--seed S] | write IN OUT --key-dir DIR | verify OBJ --key-dir DIR"
        .into()
}

/// Positional arguments and `--name value` options.
struct Args {
    positional: Vec<String>,
    options: Vec<(String, String)>,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.strip_prefix("--") {
                Some(name) => {
                    let value = it.next().ok_or_else(usage)?;
                    options.push((name.to_string(), value));
                }
                None => positional.push(arg),
            }
        }
        Ok(Args {
            positional,
            options,
        })
    }

    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.option(name)
            .ok_or_else(|| format!("--{name} is required").into())
    }
}

fn manifest_path(object: &Path) -> PathBuf {
    let mut name = object.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

fn keys(args: &Args) -> Result<LocalKeyFile> {
    Ok(LocalKeyFile::new(
        Path::new(args.required("key-dir")?).join("master.key"),
    ))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().build()?)
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

fn generate(args: &Args) -> Result<()> {
    let [out] = args.positional.as_slice() else {
        return Err(usage());
    };
    let mb: u64 = args.required("mb")?.parse()?;
    let seed: u64 = args.option("seed").unwrap_or("1").parse()?;
    let target = mb * 1_000_000;
    let mut file = BufWriter::with_capacity(BUFFER, File::create(out)?);
    let mut records = items::ItemGen::new(seed);
    let (mut written, mut lines) = (0u64, 0u64);
    while written < target {
        let record = records.next_record();
        file.write_all(record.as_bytes())?;
        file.write_all(b"\n")?;
        written += record.len() as u64 + 1;
        lines += 1;
    }
    file.flush()?;
    println!("bytes={written} lines={lines} seed={seed}");
    Ok(())
}

fn write(args: &Args) -> Result<()> {
    let [input, output] = args.positional.as_slice() else {
        return Err(usage());
    };
    let provider = keys(args)?;
    let context = backup_context(TABLE, BACKUP_ID);
    let data_key = runtime()?.block_on(provider.generate(&context))?;
    let key = data_key.plaintext.expose_secret();

    let started = Instant::now();
    let mut reader = BufReader::with_capacity(BUFFER, File::open(input)?);
    let out = BufWriter::with_capacity(BUFFER, File::create(output)?);
    let mut writer = BackupWriter::with_chunk_size(out, key, BACKUP_ID, DEFAULT_CHUNK_SIZE)?;
    let mut line = Vec::with_capacity(64 << 10);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if !line.is_empty() {
            writer.write_record(&line)?;
        }
    }
    let stats = writer.finish()?;
    let seconds = started.elapsed().as_secs_f64();

    let info = KeyInfo {
        provider: KeyProviderKind::Local,
        key_id: data_key.key_id.clone(),
        wrapped_key_b64: base64::engine::general_purpose::STANDARD.encode(&data_key.wrapped),
        encryption_context: context,
        key_check: key_check(key),
    };
    let manifest = Manifest::new(
        BACKUP_ID,
        TABLE,
        jiff::Timestamp::now(),
        DEFAULT_CHUNK_SIZE,
        &stats,
        info,
    );
    if output != "/dev/null" {
        std::fs::write(manifest_path(Path::new(output)), manifest.to_json()?)?;
    }
    println!(
        "bytes={} seconds={seconds:.3} mb_per_s={:.1} items={} compressed_bytes={} encrypted_bytes={} chunks={}",
        stats.plaintext_bytes,
        mb_per_s(stats.plaintext_bytes, seconds),
        stats.items,
        stats.compressed_bytes,
        stats.encrypted_bytes,
        stats.chunks
    );
    Ok(())
}

fn verify_object(args: &Args) -> Result<()> {
    let [object] = args.positional.as_slice() else {
        return Err(usage());
    };
    let object = Path::new(object);
    let manifest = Manifest::parse(&std::fs::read(manifest_path(object))?)?;
    let provider = keys(args)?;
    let key = runtime()?.block_on(provider.unwrap(
        &manifest.key.wrapped_key()?,
        &manifest.key.key_id,
        &manifest.key.encryption_context,
    ))?;

    let started = Instant::now();
    let reader = BufReader::with_capacity(BUFFER, File::open(object)?);
    let report = verify(reader, key.expose_secret(), &manifest.backup_id, &manifest)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "bytes={} seconds={seconds:.3} mb_per_s={:.1} items={} encrypted_bytes={}",
        report.plaintext_bytes,
        mb_per_s(report.plaintext_bytes, seconds),
        report.items,
        report.encrypted_bytes
    );
    Ok(())
}

fn main() -> Result<()> {
    let mut args = Args::parse()?;
    if args.positional.is_empty() {
        return Err(usage());
    }
    let command = args.positional.remove(0);
    match command.as_str() {
        "gen" => generate(&args),
        "write" => write(&args),
        "verify" => verify_object(&args),
        _ => Err(usage()),
    }
}
