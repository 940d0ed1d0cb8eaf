"""Chunked AES-256-GCM: round trips, and every tamper / reorder / truncation case fails loudly."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.training.npz_crafting import npz_bomb
from training.data import DataError, make_segmentation_2d
from training.encryption import (
    HEADER_SIZE,
    TAG_SIZE,
    DecryptionError,
    decrypt_bytes,
    decrypt_dataset,
    decrypt_file,
    decrypt_stream,
    encrypt_bytes,
    encrypt_dataset,
    encrypt_file,
    generate_key,
    key_commitment,
    verify_key,
)

CHUNK = 1024
SEALED = CHUNK + TAG_SIZE
KEY = bytes(range(32))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7])
def test_round_trip_sizes(size: int) -> None:
    data = os.urandom(size)
    blob = encrypt_bytes(KEY, data, chunk_size=CHUNK)
    n_chunks = max(1, -(-size // CHUNK))
    assert len(blob) == HEADER_SIZE + size + n_chunks * TAG_SIZE
    assert decrypt_bytes(KEY, blob) == data


def test_same_plaintext_encrypts_differently() -> None:
    data = b"x" * 5000
    assert encrypt_bytes(KEY, data) != encrypt_bytes(KEY, data)  # fresh salt -> fresh subkey


def test_key_commitment_is_sha256() -> None:
    key = generate_key()
    assert len(key) == 32
    assert key_commitment(key) == hashlib.sha256(key).hexdigest()
    assert verify_key(key, key_commitment(key).upper())
    assert not verify_key(KEY, key_commitment(key))
    with pytest.raises(ValueError, match="32 bytes"):
        key_commitment(b"short")


def _blob() -> tuple[bytes, bytes]:
    data = os.urandom(3 * CHUNK + 100)  # chunks 0, 1, 2 full; chunk 3 final with 100 bytes
    return data, encrypt_bytes(KEY, data, chunk_size=CHUNK)


def _chunk(blob: bytes, i: int) -> slice:
    start = HEADER_SIZE + i * SEALED
    return slice(start, min(start + SEALED, len(blob)))


def _flip(blob: bytes, pos: int) -> bytes:
    b = bytearray(blob)
    b[pos] ^= 0x01
    return bytes(b)


def test_invalid_tampered_byte_in_every_chunk() -> None:
    _, blob = _blob()
    for i in range(4):
        s = _chunk(blob, i)
        for pos in (s.start, s.stop - 1):  # first ciphertext byte, last tag byte
            with pytest.raises(DecryptionError, match=f"chunk {i} failed"):
                decrypt_bytes(KEY, _flip(blob, pos))


@pytest.mark.parametrize("pos", [0, 7, 9, 12, 31])  # magic, chunk size, salt
def test_invalid_tampered_header(pos: int) -> None:
    _, blob = _blob()
    with pytest.raises(DecryptionError):
        decrypt_bytes(KEY, _flip(blob, pos))


def test_invalid_reordered_chunks() -> None:
    _, blob = _blob()
    c0, c1 = blob[_chunk(blob, 0)], blob[_chunk(blob, 1)]
    swapped = blob[:HEADER_SIZE] + c1 + c0 + blob[_chunk(blob, 2).start :]
    with pytest.raises(DecryptionError, match="chunk 0 failed"):
        decrypt_bytes(KEY, swapped)
    duplicated = blob[: _chunk(blob, 1).start] + c0 + blob[_chunk(blob, 1).start :]
    with pytest.raises(DecryptionError):
        decrypt_bytes(KEY, duplicated)


def test_invalid_truncated_at_chunk_boundary() -> None:
    _, blob = _blob()
    for i in (1, 2, 3):  # drop the final chunk(s): the new last chunk was sealed as non-final
        with pytest.raises(DecryptionError, match=f"chunk {i - 1} failed"):
            decrypt_bytes(KEY, blob[: _chunk(blob, i).start])
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt_bytes(KEY, blob[:HEADER_SIZE])


def test_invalid_truncated_mid_chunk_and_short_header() -> None:
    _, blob = _blob()
    with pytest.raises(DecryptionError):
        decrypt_bytes(KEY, blob[:-1])
    with pytest.raises(DecryptionError, match="header"):
        decrypt_bytes(KEY, blob[:20])


def test_invalid_appended_data() -> None:
    _, blob = _blob()
    with pytest.raises(DecryptionError, match="chunk 3 failed"):
        decrypt_bytes(KEY, blob + os.urandom(50))
    # a final full-size chunk followed by anything: the final chunk fails as non-final
    full = encrypt_bytes(KEY, os.urandom(2 * CHUNK), chunk_size=CHUNK)
    with pytest.raises(DecryptionError, match="chunk 1 failed"):
        decrypt_bytes(KEY, full + full[-TAG_SIZE:])


def test_invalid_wrong_key() -> None:
    _, blob = _blob()
    with pytest.raises(DecryptionError, match="chunk 0 failed"):
        decrypt_bytes(bytes(32), blob)


class _BoundedReader(io.RawIOBase):
    """A source that records the largest read, to show decryption never slurps the file."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.largest = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        assert n > 0, "decryption must read in bounded pieces"
        self.largest = max(self.largest, n)
        return self._buf.read(n)


def test_streaming_reads_bounded_pieces() -> None:
    data = os.urandom(20 * CHUNK + 3)
    blob = encrypt_bytes(KEY, data, chunk_size=CHUNK)
    src, out = _BoundedReader(blob), io.BytesIO()
    assert decrypt_stream(KEY, src, out) == len(data)
    assert out.getvalue() == data
    assert src.largest <= SEALED


def test_file_round_trip(tmp_path: Path) -> None:
    plain = tmp_path / "data.bin"
    plain.write_bytes(os.urandom(5 * CHUNK + 11))
    enc, dec = tmp_path / "data.enc", tmp_path / "out" / "data.bin"
    size = encrypt_file(KEY, plain, enc, chunk_size=CHUNK)
    assert enc.stat().st_size == size
    assert decrypt_file(KEY, enc, dec) == plain.stat().st_size
    assert dec.read_bytes() == plain.read_bytes()


def test_invalid_decrypt_file_leaves_nothing(tmp_path: Path) -> None:
    enc = tmp_path / "data.enc"
    enc.write_bytes(encrypt_bytes(KEY, os.urandom(4 * CHUNK), chunk_size=CHUNK)[:-5])
    dest = tmp_path / "plain.bin"
    with pytest.raises(DecryptionError):
        decrypt_file(KEY, enc, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.enc"]


def test_dataset_round_trip() -> None:
    d = make_segmentation_2d(3, 16, seed=1)
    back = decrypt_dataset(KEY, encrypt_dataset(KEY, d))
    assert np.array_equal(back.inputs, d.inputs) and np.array_equal(back.targets, d.targets)


def test_invalid_encrypted_npz_bomb_refused_after_decryption() -> None:
    blob = encrypt_bytes(KEY, npz_bomb())  # 0.16 MB ciphertext, 960 MiB once loaded
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="would decode"):
            decrypt_dataset(KEY, blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # the plaintext archive and a zip directory, no arrays


def test_invalid_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        encrypt_bytes(KEY, b"x", chunk_size=10)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=5 * CHUNK), flip=st.integers(min_value=0))
def test_round_trip_and_any_flip_detected(data: bytes, flip: int) -> None:
    blob = encrypt_bytes(KEY, data, chunk_size=CHUNK)
    assert decrypt_bytes(KEY, blob) == data
    with pytest.raises(DecryptionError):
        decrypt_bytes(KEY, _flip(blob, flip % len(blob)))
