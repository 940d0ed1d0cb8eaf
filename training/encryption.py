"""AES-256-GCM encryption of training data in fixed-size authenticated chunks, streaming.

docs/artifacts.md / paper Sec. IV-A: a publisher uploads its training set encrypted, commits to the
key with SHA-256(key) in the task spec, and releases the key on chain when the task is selected; the
test set is handled the same way with its own key. A data set may be larger than memory, so the
file is processed chunk by chunk, and every chunk is authenticated before any plaintext is
released (decrypt_file writes to a temporary file and renames it only after the last chunk
verified).

File format (all integers big-endian)::

    header  = magic "DLBCGCM1" (8 B) | chunk_size u32 (4 B) | salt (20 random bytes)   = 32 B
    chunk_i = AES-256-GCM(subkey, nonce_i, plaintext_i, aad=header) = ciphertext_i | tag (16 B)

    subkey  = HKDF-SHA256(ikm=key, salt=salt, info="dlbc/aes-256-gcm-chunks/v1", 32 B)
    nonce_i = i as 11 bytes | final_i (1 byte: 0x01 for the last chunk, 0x00 otherwise)

Every chunk but the last holds exactly `chunk_size` plaintext bytes; the last holds 0..chunk_size
(0 only for an empty plaintext, which is one empty final chunk). Why each part is there:

* tampering with any ciphertext or tag byte fails that chunk's GCM tag;
* tampering with the header fails every tag (the header is the AAD of every chunk) — the chunk
  size cannot be changed to re-slice the stream;
* reordering or duplicating chunks fails: chunk i only verifies under nonce i;
* truncation at a chunk boundary fails: the new last chunk was sealed with final=0 but is opened
  with final=1 (the STREAM construction of Hoang, Reyhanitabar, Rogaway, Vizár 2015);
* appending data after the real last chunk fails the same way in reverse;
* the random per-file salt gives every file its own subkey, so reusing a key for two files never
  reuses a (key, nonce) pair, which would break GCM.

The key commitment put on chain is SHA-256(key) (`key_commitment`).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from abci_app.fsutil import atomic_writer

if TYPE_CHECKING:
    from training.data import ArrayDataset

MAGIC = b"DLBCGCM1"
HEADER_SIZE = 32
TAG_SIZE = 16
KEY_SIZE = 32
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1 << 10
MAX_CHUNK_SIZE = 64 << 20
_INFO = b"dlbc/aes-256-gcm-chunks/v1"


class DecryptionError(ValueError):
    """Ciphertext that is not exactly what the key's holder produced; no plaintext is released."""


def generate_key() -> bytes:
    """A fresh random 32-byte AES-256 key."""
    return os.urandom(KEY_SIZE)


def key_commitment(key: bytes) -> str:
    """SHA-256(key) as lowercase hex: the commitment a task spec carries (docs/transactions.md)."""
    _check_key(key)
    return hashlib.sha256(key).hexdigest()


def verify_key(key: bytes, commitment: str) -> bool:
    """Whether `key` opens `commitment` (constant-time comparison)."""
    return len(key) == KEY_SIZE and hmac.compare_digest(
        hashlib.sha256(key).hexdigest(), commitment.lower()
    )


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        raise ValueError(f"AES-256 key must be {KEY_SIZE} bytes")


def _subkey(key: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=_INFO)
    return AESGCM(hkdf.derive(bytes(key)))


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _read_full(src: IO[bytes], n: int) -> bytes:
    """Read exactly `n` bytes, or fewer only at end of stream."""
    parts: list[bytes] = []
    remaining = n
    while remaining:
        part = src.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def encrypt_stream(
    key: bytes, src: IO[bytes], dst: IO[bytes], *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> int:
    """Encrypt `src` to `dst` in the chunked format; returns the number of bytes written."""
    _check_key(key)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    salt = os.urandom(20)
    header = MAGIC + chunk_size.to_bytes(4, "big") + salt
    aead = _subkey(key, salt)
    dst.write(header)
    written = HEADER_SIZE
    index = 0
    current = _read_full(src, chunk_size)
    while True:
        # Read one chunk ahead: the last chunk must be sealed with final=1.
        following = _read_full(src, chunk_size) if len(current) == chunk_size else b""
        final = not following
        sealed = aead.encrypt(_nonce(index, final), current, header)
        dst.write(sealed)
        written += len(sealed)
        if final:
            return written
        current = following
        index += 1


def decrypt_stream(key: bytes, src: IO[bytes], dst: IO[bytes]) -> int:
    """Decrypt `src` to `dst`, verifying every chunk; returns the plaintext length.

    `dst` receives each chunk's plaintext only after that chunk verified, but a later chunk can
    still fail: callers that must not expose a partial result write to a temporary (as
    `decrypt_file` and `decrypt_bytes` do).
    """
    _check_key(key)
    header = _read_full(src, HEADER_SIZE)
    if len(header) < HEADER_SIZE or header[:8] != MAGIC:
        raise DecryptionError("not a DLBC encrypted file (bad magic or short header)")
    chunk_size = int.from_bytes(header[8:12], "big")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptionError(f"bad chunk size {chunk_size} in header")
    aead = _subkey(key, header[12:32])
    sealed_size = chunk_size + TAG_SIZE
    index = 0
    total = 0
    current = _read_full(src, sealed_size)
    while True:
        if len(current) < TAG_SIZE:
            raise DecryptionError(f"truncated ciphertext at chunk {index}")
        following = _read_full(src, sealed_size) if len(current) == sealed_size else b""
        final = not following
        try:
            plain = aead.decrypt(_nonce(index, final), current, header)
        except InvalidTag:
            raise DecryptionError(
                f"chunk {index} failed authentication (wrong key, tampered, reordered or "
                "truncated ciphertext)"
            ) from None
        dst.write(plain)
        total += len(plain)
        if final:
            return total
        current = following
        index += 1


def encrypt_file(
    key: bytes, src: str | Path, dest: str | Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> int:
    """Encrypt file `src` to `dest` (atomically); returns the ciphertext size in bytes."""
    with open(src, "rb") as fin, atomic_writer(dest, durable=False) as fout:
        return encrypt_stream(key, fin, fout, chunk_size=chunk_size)


def decrypt_file(key: bytes, src: str | Path, dest: str | Path) -> int:
    """Decrypt `src` to `dest`; `dest` appears only if every chunk verified. Returns its size."""
    with open(src, "rb") as fin, atomic_writer(dest, durable=False) as fout:
        return decrypt_stream(key, fin, fout)


def encrypt_bytes(key: bytes, data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """In-memory `encrypt_stream` (for .npz blobs that fit in memory)."""
    out = io.BytesIO()
    encrypt_stream(key, io.BytesIO(data), out, chunk_size=chunk_size)
    return out.getvalue()


def decrypt_bytes(key: bytes, blob: bytes) -> bytes:
    """In-memory `decrypt_stream`; raises DecryptionError and returns nothing on any failure."""
    out = io.BytesIO()
    decrypt_stream(key, io.BytesIO(blob), out)
    return out.getvalue()


def encrypt_dataset(
    key: bytes, dataset: ArrayDataset, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> bytes:
    """A data set serialised as `.npz` (training.data layout) and encrypted."""
    return encrypt_bytes(key, dataset.to_npz_bytes(), chunk_size=chunk_size)


def decrypt_dataset(key: bytes, blob: bytes, *, num_classes: int | None = None,
                    max_decoded_bytes: int | None = None) -> ArrayDataset:
    """Decrypt an encrypted `.npz` blob and load it with `training.data.load_npz`.

    The loaded arrays are capped by `load_npz`: at most `MAX_EXPANSION` times the archive
    (so about that many times the task's declared `data_size_bytes`) and at most
    `max_decoded_bytes` (default `DEFAULT_MAX_NPZ_BYTES`), checked before anything inflates.
    """
    from training.data import DEFAULT_MAX_NPZ_BYTES, load_npz

    return load_npz(decrypt_bytes(key, blob), num_classes=num_classes,
                    max_bytes=DEFAULT_MAX_NPZ_BYTES if max_decoded_bytes is None
                    else max_decoded_bytes)
