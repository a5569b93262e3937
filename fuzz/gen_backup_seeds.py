#!/usr/bin/env python3
"""Writes the seed corpora of the backup_reader and backup_sealed fuzz targets.

The objects follow the format in shared/src/backup/format.rs, sealed with the fuzz targets'
fixed key ([7; 32]) and backup id ("fuzz-backup"). Needs python3-cryptography and the zstd CLI.
Run from fuzz/: python3 gen_backup_seeds.py
"""

import os
import struct
import subprocess

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY = bytes([7] * 32)
BACKUP_ID = b"fuzz-backup"
CHUNK = 1024


def header(chunk_size=CHUNK):
    return b"SGBK" + bytes([1]) + struct.pack(">I", chunk_size) + bytes([len(BACKUP_ID)]) + BACKUP_ID


def seal(compressed, chunk_size=CHUNK):
    h = header(chunk_size)
    chunks = [compressed[i:i + chunk_size] for i in range(0, len(compressed), chunk_size)] or [b""]
    out = bytearray(h)
    for i, chunk in enumerate(chunks):
        aad = h + struct.pack(">Q", i) + bytes([i == len(chunks) - 1])
        nonce = bytes([i % 256] * 12)
        sealed = AESGCM(KEY).encrypt(nonce, chunk, aad)  # ciphertext || tag
        out += nonce + struct.pack(">I", len(sealed)) + sealed
    return bytes(out)


def zstd(data, level=3):
    return subprocess.run(["zstd", "-q", f"-{level}", "-c"], input=data, check=True,
                          capture_output=True).stdout


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


small = b'{"pk":"DEP#1","sk":"META","state":"approved"}\n{"pk":"DEP#2","sk":"META"}\n'
many = b"".join(b'{"pk":"DEP#%d","sk":"EVENT#%05d","payload":"%s"}\n' % (i, i, os.urandom(24).hex().encode())
                for i in range(60))

reader = "seeds/backup_reader"
write(reader, "two-records", seal(zstd(small)))
write(reader, "two-chunks", seal(zstd(many)))
write(reader, "empty-backup", seal(zstd(b"")))
write(reader, "header-only", header())
write(reader, "truncated-frame", seal(zstd(many))[:700])

sealed = "seeds/backup_sealed"
write(sealed, "ndjson-two-records", b"\x01" + small)
write(sealed, "ndjson-no-trailing-newline", b"\x01" + small.rstrip(b"\n"))
write(sealed, "ndjson-empty-lines", b"\x01\n\n{}\n")
write(sealed, "zstd-two-records", b"\x00" + zstd(small))
write(sealed, "zstd-many-records", b"\x00" + zstd(many, 19))
write(sealed, "zstd-two-frames", b"\x00" + zstd(small) + zstd(b'{"x":1}\n'))
