//! What the backup fuzz targets share: the fixed key and backup id, a manifest that passes
//! the key check, and a sealer that builds valid encrypted objects around any compressed data.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use shipgate::backup::{
    backup_context, key_check, BackupStats, KeyInfo, KeyProviderKind, Manifest, FORMAT_VERSION,
    MAGIC,
};

/// The data key every fuzzed backup is read with.
pub const KEY: [u8; 32] = [7; 32];
/// The backup id every fuzzed header must name.
pub const BACKUP_ID: &str = "fuzz-backup";

/// A manifest for [`BACKUP_ID`] whose key check matches [`KEY`], so `verify` gets past its
/// early checks and reads the stream.
pub fn manifest_for(chunk_size: u32) -> Manifest {
    let stats = BackupStats {
        items: 1,
        plaintext_bytes: 3,
        plaintext_sha256: "0".repeat(64),
        compressed_bytes: 12,
        encrypted_bytes: 60,
        chunks: 1,
    };
    let key = KeyInfo {
        provider: KeyProviderKind::Local,
        key_id: "fuzz".into(),
        wrapped_key_b64: "AAAA".into(),
        encryption_context: backup_context("fuzz-table", BACKUP_ID),
        key_check: key_check(&KEY),
    };
    Manifest::new(
        BACKUP_ID,
        "fuzz-table",
        jiff::Timestamp::UNIX_EPOCH,
        chunk_size,
        &stats,
        key,
    )
}

/// The stream header the format defines for [`BACKUP_ID`].
pub fn header(chunk_size: u32) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.push(FORMAT_VERSION);
    header.extend_from_slice(&chunk_size.to_be_bytes());
    header.push(BACKUP_ID.len() as u8);
    header.extend_from_slice(BACKUP_ID.as_bytes());
    header
}

/// Seals `compressed` into a complete backup object, as the writer would after compressing.
pub fn seal(compressed: &[u8], chunk_size: u32) -> Vec<u8> {
    let header = header(chunk_size);
    let cipher = Aes256Gcm::new(&KEY.into());
    let mut chunks: Vec<&[u8]> = compressed.chunks(chunk_size as usize).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    let mut out = header.clone();
    for (index, chunk) in chunks.into_iter().enumerate() {
        let mut aad = header.clone();
        aad.extend_from_slice(&(index as u64).to_be_bytes());
        aad.push(u8::from(index == last));
        let nonce = [index as u8; 12];
        let mut buf = chunk.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut buf)
            .expect("AES-GCM seals any chunk of this size");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&((buf.len() + tag.len()) as u32).to_be_bytes());
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
    }
    out
}
