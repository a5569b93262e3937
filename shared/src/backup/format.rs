//! The backup wire format: a streaming writer and a streaming reader (checking a backup against
//! its manifest is [`super::verify`]).
//!
//! ```text
//! stream  = header frame* final-frame
//! header  = "SGBK" | version u8 | chunk_size u32 BE | id_len u8 | backup_id (id_len bytes)
//! frame   = nonce (12) | ciphertext_len u32 BE | ciphertext + GCM tag (16)
//! ```
//!
//! The plaintext of the frames, concatenated, is one zstd stream (level 3) of NDJSON. Each frame
//! seals exactly `chunk_size` bytes of it (the final frame at most that), under AES-256-GCM with a
//! fresh random nonce and associated data `header | chunk index u64 BE | final flag u8`. Binding
//! the whole header means a change to the magic, version, chunk size or backup id fails
//! authentication even where a field still parses; binding the index and the final flag means
//! reordered, dropped or appended chunks are refused. Random 96-bit nonces are safe here because
//! every backup has its own data key and a backup has far fewer than 2^32 chunks.
//!
//! Memory is bounded by one chunk buffer on each side (plus zstd's own window of about 2 MiB at
//! level 3), whatever the size of the backup.

use std::io::{self, BufRead, BufReader, Read, Write};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::BackupError;

/// The first four bytes of every backup stream.
pub const MAGIC: &[u8; 4] = b"SGBK";
/// The version of the stream and manifest format this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Compressed plaintext per chunk unless the caller chooses otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Smaller chunks would spend more on framing than on data.
pub const MIN_CHUNK_SIZE: u32 = 1 << 10;
/// The reader allocates one chunk up front, so the header must not be able to ask for much.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Backup ids end up in object keys and in the header's one-byte length field.
pub const MAX_BACKUP_ID_LEN: usize = 128;
/// Longest record, without its newline, that a backup may hold. DynamoDB caps an item at
/// 400 KB; the cap is far above that and exists so that reading a backup holds a bounded amount
/// of memory per record, whatever the (authenticated) stream says.
pub const MAX_RECORD_LEN: usize = 16 << 20;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const FRAME_HEAD_LEN: usize = NONCE_LEN + 4;
const FIXED_HEADER_LEN: usize = 4 + 1 + 4 + 1;
const ZSTD_LEVEL: i32 = 3;
/// When a chunk fails authentication, indices this far either side of the expected one are tried
/// so that a reordered stream is reported as such rather than as generic tampering. Only the
/// error path pays for it.
const REORDER_SEARCH: u64 = 16;
const LINE_BUFFER: usize = 64 << 10;

/// What a finished backup contains, as measured while writing (or, in [`verify`], reading) it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupStats {
    /// Number of records (NDJSON lines).
    pub items: u64,
    /// Length of the NDJSON, newlines included.
    pub plaintext_bytes: u64,
    /// Lower-case hex SHA-256 of the NDJSON.
    pub plaintext_sha256: String,
    /// Length of the zstd stream, i.e. the plaintext of all chunks.
    pub compressed_bytes: u64,
    /// Length of the whole object: header and frames.
    pub encrypted_bytes: u64,
    /// Number of chunks, the final one included.
    pub chunks: u64,
}

/// What [`verify`] found; equal to the manifest's figures when it returns `Ok`.
pub type VerifyReport = BackupStats;

/// Checks a backup id for use in a header, an encryption context and object keys.
pub fn validate_backup_id(backup_id: &str) -> Result<(), BackupError> {
    let ok_chars = backup_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if backup_id.is_empty() || backup_id.len() > MAX_BACKUP_ID_LEN || !ok_chars {
        return Err(BackupError::InvalidSettings {
            reason: format!(
                "backup id {backup_id:?} must be 1 to {MAX_BACKUP_ID_LEN} characters of A-Z a-z 0-9 - _ ."
            ),
        });
    }
    Ok(())
}

fn validate_chunk_size(chunk_size: u32) -> bool {
    (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
}

fn encode_header(chunk_size: u32, backup_id: &str) -> Vec<u8> {
    let mut header = Vec::with_capacity(FIXED_HEADER_LEN + backup_id.len());
    header.extend_from_slice(MAGIC);
    header.push(FORMAT_VERSION);
    header.extend_from_slice(&chunk_size.to_be_bytes());
    // validate_backup_id caps the length well below 256.
    header.push(backup_id.len() as u8);
    header.extend_from_slice(backup_id.as_bytes());
    header
}

/// Associated data of one chunk: the header followed by the chunk's index and final flag. The
/// buffer keeps nine spare bytes at its end that are rewritten for every chunk.
struct ChunkAad(Vec<u8>);

impl ChunkAad {
    fn new(header: &[u8]) -> Self {
        let mut aad = Vec::with_capacity(header.len() + 9);
        aad.extend_from_slice(header);
        aad.extend_from_slice(&[0; 9]);
        ChunkAad(aad)
    }

    fn for_chunk(&mut self, index: u64, final_chunk: bool) -> &[u8] {
        let at = self.0.len() - 9;
        self.0[at..at + 8].copy_from_slice(&index.to_be_bytes());
        self.0[at + 8] = u8::from(final_chunk);
        &self.0
    }
}

/// Receives the zstd output, cuts it into chunks and writes sealed frames.
struct ChunkSink<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    aad: ChunkAad,
    buf: Vec<u8>,
    chunk_size: usize,
    index: u64,
    compressed_bytes: u64,
    encrypted_bytes: u64,
}

impl<W: Write> ChunkSink<W> {
    fn seal(&mut self, final_chunk: bool) -> io::Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = self.aad.for_chunk(self.index, final_chunk);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut self.buf)
            .map_err(|_| io::Error::other("AES-GCM refused to seal a chunk"))?;
        let ct_len = self.buf.len() + TAG_LEN;
        // chunk_size <= MAX_CHUNK_SIZE, so this always fits.
        let ct_len_field = u32::try_from(ct_len).map_err(io::Error::other)?;
        self.inner.write_all(&nonce)?;
        self.inner.write_all(&ct_len_field.to_be_bytes())?;
        self.inner.write_all(&self.buf)?;
        self.inner.write_all(&tag)?;
        self.compressed_bytes += self.buf.len() as u64;
        self.encrypted_bytes += (FRAME_HEAD_LEN + ct_len) as u64;
        self.index += 1;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for ChunkSink<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full buffer is sealed only once more data arrives, so that `finish` can always mark
        // the last non-empty chunk final instead of appending an empty one.
        if self.buf.len() == self.chunk_size {
            self.seal(false)?;
        }
        let n = data.len().min(self.chunk_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Sealing a partial chunk here would break the fixed chunk size; only the inner writer is
        // flushed.
        self.inner.flush()
    }
}

/// Writes one backup stream: records in, sealed chunks out.
///
/// To get the inner writer back after [`finish`](Self::finish) (an upload to complete, say),
/// pass `&mut W`.
pub struct BackupWriter<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, ChunkSink<W>>,
    hasher: Sha256,
    items: u64,
    plaintext_bytes: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup with [`DEFAULT_CHUNK_SIZE`] chunks; writes the header at once.
    pub fn new(inner: W, key: &[u8; 32], backup_id: &str) -> Result<Self, BackupError> {
        Self::with_chunk_size(inner, key, backup_id, DEFAULT_CHUNK_SIZE)
    }

    /// Starts a backup whose chunks hold `chunk_size` bytes of compressed plaintext.
    pub fn with_chunk_size(
        mut inner: W,
        key: &[u8; 32],
        backup_id: &str,
        chunk_size: u32,
    ) -> Result<Self, BackupError> {
        validate_backup_id(backup_id)?;
        if !validate_chunk_size(chunk_size) {
            return Err(BackupError::InvalidSettings {
                reason: format!(
                    "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
                ),
            });
        }
        let header = encode_header(chunk_size, backup_id);
        inner.write_all(&header).map_err(BackupError::Io)?;
        let chunk_size = chunk_size as usize;
        let sink = ChunkSink {
            inner,
            cipher: Aes256Gcm::new(key.into()),
            aad: ChunkAad::new(&header),
            buf: Vec::with_capacity(chunk_size),
            chunk_size,
            index: 0,
            compressed_bytes: 0,
            encrypted_bytes: header.len() as u64,
        };
        let encoder =
            zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL).map_err(BackupError::Io)?;
        Ok(BackupWriter {
            encoder,
            hasher: Sha256::new(),
            items: 0,
            plaintext_bytes: 0,
        })
    }

    /// Appends one record: a JSON document on one line, given without its newline.
    ///
    /// After an error the backup is unusable: drop the writer, which abandons the upload.
    pub fn write_record(&mut self, record: &[u8]) -> Result<(), BackupError> {
        if record.contains(&b'\n') {
            return Err(BackupError::BadRecord {
                reason: format!("record {} contains a newline", self.items),
            });
        }
        if record.len() > MAX_RECORD_LEN {
            return Err(BackupError::BadRecord {
                reason: format!(
                    "record {} is {} bytes, more than the {MAX_RECORD_LEN} a backup holds",
                    self.items,
                    record.len()
                ),
            });
        }
        self.encoder.write_all(record)?;
        self.encoder.write_all(b"\n")?;
        self.hasher.update(record);
        self.hasher.update(b"\n");
        self.items += 1;
        self.plaintext_bytes += record.len() as u64 + 1;
        Ok(())
    }

    /// Records written so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Capacity of the chunk buffer: what the writer holds besides zstd's fixed state.
    pub fn buffered_capacity(&self) -> usize {
        self.encoder.get_ref().buf.capacity()
    }

    /// Flushes zstd, seals the final chunk and flushes the inner writer.
    pub fn finish(self) -> Result<BackupStats, BackupError> {
        let mut sink = self.encoder.finish()?;
        sink.seal(true)?;
        sink.inner.flush()?;
        Ok(BackupStats {
            items: self.items,
            plaintext_bytes: self.plaintext_bytes,
            plaintext_sha256: hex::encode(self.hasher.finalize()),
            compressed_bytes: sink.compressed_bytes,
            encrypted_bytes: sink.encrypted_bytes,
            chunks: sink.index,
        })
    }
}

/// What follows the chunk being decrypted; read ahead because the final flag in a chunk's
/// associated data depends on whether anything comes after it.
enum Lookahead {
    Frame([u8; FRAME_HEAD_LEN]),
    /// Some bytes, but fewer than a frame head.
    Partial,
    End,
}

fn read_lookahead<R: Read>(inner: &mut R) -> Result<Lookahead, BackupError> {
    let mut head = [0u8; FRAME_HEAD_LEN];
    let mut filled = 0;
    while filled < FRAME_HEAD_LEN {
        match inner.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BackupError::Io(e)),
        }
    }
    Ok(match filled {
        0 => Lookahead::End,
        FRAME_HEAD_LEN => Lookahead::Frame(head),
        _ => Lookahead::Partial,
    })
}

/// Reads frames, authenticates and decrypts them in order and serves their plaintext (the zstd
/// stream) to the decoder.
struct ChunkSource<R: Read> {
    inner: R,
    cipher: Aes256Gcm,
    aad: ChunkAad,
    chunk_size: usize,
    /// Holds a chunk's ciphertext, then (decrypted in place) its plaintext.
    buf: Vec<u8>,
    pos: usize,
    next: Lookahead,
    index: u64,
    done: bool,
    failed: bool,
    compressed_bytes: u64,
    encrypted_bytes: u64,
}

impl<R: Read> ChunkSource<R> {
    /// Tries to authenticate and decrypt `buf` as chunk `index`; on failure `buf` is unchanged
    /// (aes-gcm checks the tag before decrypting), so it can be tried again.
    fn try_open(&mut self, nonce: &[u8], tag: &[u8], index: u64, final_chunk: bool) -> bool {
        let aad = self.aad.for_chunk(index, final_chunk);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                &mut self.buf,
                Tag::from_slice(tag),
            )
            .is_ok()
    }

    /// Names what went wrong with a chunk that failed authentication at its expected place.
    fn diagnose(&mut self, nonce: &[u8], tag: &[u8], expected_final: bool) -> BackupError {
        let index = self.index;
        if self.try_open(nonce, tag, index, !expected_final) {
            // Right place, wrong end: either the stream stops after a chunk that was not the
            // last one, or something follows the last one.
            return if expected_final {
                BackupError::Truncated
            } else {
                BackupError::TrailingData
            };
        }
        let from = index.saturating_sub(REORDER_SEARCH);
        for other in from..=index.saturating_add(REORDER_SEARCH) {
            if other == index {
                continue;
            }
            for final_chunk in [false, true] {
                if self.try_open(nonce, tag, other, final_chunk) {
                    return BackupError::OutOfOrder {
                        position: index,
                        found: other,
                    };
                }
            }
        }
        BackupError::Tampered { chunk: index }
    }

    /// Loads the next chunk's plaintext into `buf`; `false` once the final chunk was consumed.
    fn next_chunk(&mut self) -> Result<bool, BackupError> {
        if self.done {
            return Ok(false);
        }
        let head = match self.next {
            Lookahead::Frame(head) => head,
            // The previous chunk authenticated as non-final (or there was none), yet the stream
            // ends here.
            Lookahead::Partial | Lookahead::End => return Err(BackupError::Truncated),
        };
        let (nonce, len) = head.split_at(NONCE_LEN);
        let ct_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if !(TAG_LEN..=self.chunk_size + TAG_LEN).contains(&ct_len) {
            // A length the writer cannot have produced: the length field was modified.
            return Err(BackupError::Tampered { chunk: self.index });
        }
        self.buf.resize(ct_len, 0);
        if let Err(e) = self.inner.read_exact(&mut self.buf) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                BackupError::Truncated
            } else {
                BackupError::Io(e)
            });
        }
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&self.buf[ct_len - TAG_LEN..]);
        self.buf.truncate(ct_len - TAG_LEN);
        self.encrypted_bytes += (FRAME_HEAD_LEN + ct_len) as u64;

        self.next = read_lookahead(&mut self.inner)?;
        let expected_final = matches!(self.next, Lookahead::End);
        if !self.try_open(nonce, &tag, self.index, expected_final) {
            return Err(self.diagnose(nonce, &tag, expected_final));
        }
        self.done = expected_final;
        self.index += 1;
        self.pos = 0;
        self.compressed_bytes += self.buf.len() as u64;
        Ok(true)
    }
}

impl<R: Read> BufRead for ChunkSource<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.failed {
            return Err(io::Error::other("the backup stream already failed"));
        }
        while self.pos == self.buf.len() {
            match self.next_chunk() {
                Ok(true) => {}
                Ok(false) => return Ok(&[]),
                Err(e) => {
                    self.failed = true;
                    self.buf.clear();
                    self.pos = 0;
                    return Err(io::Error::other(e));
                }
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.buf.len());
    }
}

impl<R: Read> Read for ChunkSource<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Parsed stream header.
struct Header {
    bytes: Vec<u8>,
    chunk_size: u32,
}

pub(crate) fn bad_header(reason: impl Into<String>) -> BackupError {
    BackupError::BadHeader {
        reason: reason.into(),
    }
}

fn read_header<R: Read>(inner: &mut R, backup_id: &str) -> Result<Header, BackupError> {
    let short = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad_header("the stream is shorter than a header")
        } else {
            BackupError::Io(e)
        }
    };
    let mut fixed = [0u8; FIXED_HEADER_LEN];
    inner.read_exact(&mut fixed).map_err(short)?;
    if &fixed[..4] != MAGIC {
        return Err(bad_header("not a shipgate backup (magic bytes differ)"));
    }
    if fixed[4] != FORMAT_VERSION {
        return Err(bad_header(format!(
            "unsupported format version {} (this build reads {FORMAT_VERSION})",
            fixed[4]
        )));
    }
    let chunk_size = u32::from_be_bytes([fixed[5], fixed[6], fixed[7], fixed[8]]);
    if !validate_chunk_size(chunk_size) {
        return Err(bad_header(format!(
            "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        )));
    }
    let id_len = usize::from(fixed[9]);
    if id_len == 0 || id_len > MAX_BACKUP_ID_LEN {
        return Err(bad_header(format!("backup id length {id_len} is invalid")));
    }
    let mut id = vec![0u8; id_len];
    inner.read_exact(&mut id).map_err(short)?;
    if id != backup_id.as_bytes() {
        return Err(BackupError::WrongBackup {
            expected: backup_id.to_owned(),
            found: String::from_utf8_lossy(&id).into_owned(),
        });
    }
    let mut bytes = fixed.to_vec();
    bytes.extend_from_slice(&id);
    Ok(Header { bytes, chunk_size })
}

/// Reads one backup stream back: chunks are authenticated in order as they are reached and
/// records are yielded one by one.
///
/// Records come out before later chunks have been checked, so a restore must run [`verify`]
/// over the whole object first and only then read it again to write anything.
pub struct BackupReader<R: Read> {
    lines: BufReader<zstd::stream::read::Decoder<'static, ChunkSource<R>>>,
    chunk_size: u32,
    hasher: Sha256,
    pub(crate) items: u64,
    plaintext_bytes: u64,
    failed: bool,
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the header; the header must name `backup_id`.
    pub fn new(mut inner: R, key: &[u8; 32], backup_id: &str) -> Result<Self, BackupError> {
        let header = read_header(&mut inner, backup_id)?;
        let next = read_lookahead(&mut inner)?;
        let chunk_size = header.chunk_size as usize;
        let source = ChunkSource {
            inner,
            cipher: Aes256Gcm::new(key.into()),
            aad: ChunkAad::new(&header.bytes),
            chunk_size,
            buf: Vec::with_capacity(chunk_size + TAG_LEN),
            pos: 0,
            next,
            index: 0,
            done: false,
            failed: false,
            compressed_bytes: 0,
            encrypted_bytes: header.bytes.len() as u64,
        };
        let decoder = zstd::stream::read::Decoder::with_buffer(source).map_err(BackupError::Io)?;
        Ok(BackupReader {
            lines: BufReader::with_capacity(LINE_BUFFER, decoder),
            chunk_size: header.chunk_size,
            hasher: Sha256::new(),
            items: 0,
            plaintext_bytes: 0,
            failed: false,
        })
    }

    /// The chunk size recorded in the header.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Reads the next record (without its newline) into `record`, reusing its allocation.
    /// Returns `false` at the end of the backup.
    pub fn read_record(&mut self, record: &mut Vec<u8>) -> Result<bool, BackupError> {
        record.clear();
        if self.failed {
            return Err(BackupError::Io(io::Error::other(
                "the backup stream already failed",
            )));
        }
        let result = self.read_line(record);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn read_line(&mut self, record: &mut Vec<u8>) -> Result<bool, BackupError> {
        // One byte more than the longest record and its newline tells "too long" from "last".
        let limit = MAX_RECORD_LEN as u64 + 2;
        let n = (&mut self.lines).take(limit).read_until(b'\n', record)?;
        if n == 0 {
            return Ok(false);
        }
        if record.len() > MAX_RECORD_LEN + 1 {
            return Err(BackupError::BadRecord {
                reason: format!(
                    "record {} is longer than the {MAX_RECORD_LEN} bytes a backup holds",
                    self.items
                ),
            });
        }
        if record.last() != Some(&b'\n') {
            return Err(BackupError::BadRecord {
                reason: format!("record {} is not terminated by a newline", self.items),
            });
        }
        self.hasher.update(&record[..]);
        self.items += 1;
        self.plaintext_bytes += n as u64;
        record.pop();
        Ok(true)
    }

    /// What was read so far; the figures for the whole backup once `read_record` returned
    /// `false`.
    pub fn stats(&self) -> BackupStats {
        let source = self.lines.get_ref().get_ref();
        BackupStats {
            items: self.items,
            plaintext_bytes: self.plaintext_bytes,
            plaintext_sha256: hex::encode(self.hasher.clone().finalize()),
            compressed_bytes: source.compressed_bytes,
            encrypted_bytes: source.encrypted_bytes,
            chunks: source.index,
        }
    }

    /// Capacity of the chunk buffer: what the reader holds besides zstd's window and a line.
    pub fn buffered_capacity(&self) -> usize {
        self.lines.get_ref().get_ref().buf.capacity()
    }
}

impl<R: Read> Iterator for BackupReader<R> {
    type Item = Result<Vec<u8>, BackupError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut record = Vec::new();
        match self.read_record(&mut record) {
            Ok(true) => Some(Ok(record)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn read_all(bytes: &[u8]) -> Result<Vec<usize>, BackupError> {
        let mut reader = BackupReader::new(bytes, &KEY, "b1")?;
        let mut record = Vec::new();
        let mut lengths = Vec::new();
        while reader.read_record(&mut record)? {
            lengths.push(record.len());
        }
        Ok(lengths)
    }

    #[test]
    fn writer_refuses_a_record_longer_than_the_cap() {
        let mut writer = BackupWriter::new(Vec::new(), &KEY, "b1").unwrap();
        let err = writer
            .write_record(&vec![b'a'; MAX_RECORD_LEN + 1])
            .unwrap_err();
        assert!(
            matches!(&err, BackupError::BadRecord { reason } if reason.contains("more than")),
            "{err:?}"
        );
    }

    #[test]
    fn reader_reads_a_record_exactly_at_the_cap() {
        let mut bytes = Vec::new();
        let mut writer = BackupWriter::new(&mut bytes, &KEY, "b1").unwrap();
        writer.write_record(&vec![b'a'; MAX_RECORD_LEN]).unwrap();
        writer.write_record(b"{}").unwrap();
        writer.finish().unwrap();
        assert_eq!(read_all(&bytes).unwrap(), vec![MAX_RECORD_LEN, 2]);
    }

    #[test]
    fn reader_stops_at_an_authenticated_record_longer_than_the_cap() {
        // The writer refuses such a record, so write the plaintext past it: this is a stream
        // sealed with the right key, which is the only way to reach the reader's line splitting.
        for overshoot in [1usize, 2, 4096] {
            let mut writer = BackupWriter::new(Vec::new(), &KEY, "b1").unwrap();
            let mut line = vec![b'a'; MAX_RECORD_LEN + overshoot];
            line.push(b'\n');
            writer.encoder.write_all(&line).unwrap();
            let mut sink = writer.encoder.finish().unwrap();
            sink.seal(true).unwrap();
            let err = read_all(&sink.inner).unwrap_err();
            assert!(
                matches!(&err, BackupError::BadRecord { reason } if reason.contains("longer than")),
                "overshoot {overshoot}: {err:?}"
            );
        }
    }
}
