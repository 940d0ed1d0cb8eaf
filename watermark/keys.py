"""Watermark keys: which bits a miner must embed in a round, and the projection that reads them.

docs/watermark.md: the bits for miner ``m`` in round ``r`` come from SHA-256(seed_r ‖ address_m),
and the projection matrix X is generated deterministically from the same material, so a validator
can rebuild both from public chain data and the miner's address alone. Paper §IV-C.1 uses one bit
per hash bit (256 bits); longer keys extend the digest in counter mode (see ``_bit_stream``).

Matrices (Uchida et al. 2017, §3.3):

- ``direct`` — row i is one-hot: bit i reads a single coordinate of the mean kernel (the paper's
  choice);
- ``diff``   — row i is +1 at one coordinate and -1 at another: bit i reads a difference;
- ``random`` — i.i.d. Gaussian rows: every bit reads every coordinate.

Every row is scaled to Euclidean norm ``gain`` so that the three matrices ask for the same
weight-space margin (logit(threshold) / gain) along each row, and the 0.9999 confidence of the
paper is reachable without blowing the layer up (an unscaled one-hot row would need a mean kernel
coordinate of logit(0.9999) ≈ 9.2, far outside any trained conv's range).

Determinism across machines: the matrix generator is numpy's ``PCG64`` bit generator seeded with a
256-bit integer taken from a domain-separated SHA-256; PCG64's stream is fixed by its spec. The
Gaussian entries come from ``Generator.standard_normal`` and the coordinate choice from
``Generator.permutation``, both of which numpy keeps stable except for bug fixes; the golden-digest
test in tests/watermark pins the bytes so such a change cannot slip through silently. Matrices
are produced in float64.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from watermark.errors import WatermarkError

MatrixType = Literal["direct", "diff", "random"]
MATRIX_TYPES: tuple[MatrixType, ...] = ("direct", "diff", "random")

# Defaults, measured with bench/watermark.py (see its docstring for the numbers):
# - "diff" made the attacker work longest (removal 15.9, overwrite 15.9 epochs after a 12-epoch
#   honest run, vs 1.5 epochs to embed: 10.6x) and costs the least accuracy (-0.08 Dice points).
#   "direct" is second (removal 13.8, overwrite 13.1 vs 2.1 to embed: 6.5x; -0.24 Dice points).
#   "diff" needs 2·n_bits coordinates per output channel (512 for 256 bits), so the demo model
#   is unet2d depth 2, base width 16 (bottom conv 64·9 = 576). "random" loses: its rows are not
#   orthogonal, so Adam's per-coordinate steps make the bits fight; it embeds slowest and falls
#   in about 4.4 epochs.
# - gain 1000: an AdamW step at lr 1e-3 moves a margin by at most about gain·lr = 1 logit, so a
#   miner reaches logit(0.9999) ≈ 9.2 in 15-20 steps. Attacks speed up by the same factor, so
#   the gain sets the speed, not the embed/remove ratio.
DEFAULT_MATRIX: MatrixType = "diff"
DEFAULT_N_BITS = 256
MAX_N_BITS = 4096
DEFAULT_GAIN = 1000.0

_MATRIX_DOMAIN = b"dlbc/watermark/matrix/v1"
_EXTEND_DOMAIN = b"dlbc/watermark/bits/v1"


@dataclass(frozen=True, slots=True)
class WatermarkKey:
    """Everything a validator needs to look for one miner's watermark in one round.

    The key is public (paper §IV-C.3): robustness comes from how far the embedding pushes the
    weights, not from secrecy.
    """

    seed: bytes
    """seed_r: hash of the block that started the round (docs/rounds.md, docs/watermark.md)."""
    miner_address: bytes
    """20-byte account address of the miner (first 20 bytes of SHA-256(pubkey))."""
    layer: str
    """State-dict name of the weight tensor that carries the watermark."""
    n_bits: int = DEFAULT_N_BITS
    """Number of watermark bits T (paper: 256)."""
    matrix: MatrixType = DEFAULT_MATRIX
    """Projection family: "direct", "diff" or "random"."""
    gain: float = DEFAULT_GAIN
    """Euclidean norm of every row of X; sets the weight-space margin logit(threshold)/gain."""

    @property
    def digest(self) -> bytes:
        """SHA-256(seed_r ‖ address_m): the root of the bits and of the matrix
        (docs/watermark.md)."""
        return hashlib.sha256(self.seed + self.miner_address).digest()

    def bits(self) -> npt.NDArray[np.uint8]:
        """The T watermark bits, MSB-first from the digest (paper §IV-C.1: bit i = hash bit i)."""
        return _bits(self.digest, self.n_bits)

    def projection(self, m: int) -> npt.NDArray[np.float64]:
        """X of shape (T, m) for a layer whose mean kernel has m coordinates (read-only array)."""
        return _projection(self.digest, self.matrix, self.n_bits, m, self.gain)


def derive_key(
    seed_r: bytes,
    miner_address: bytes,
    *,
    layer: str,
    n_bits: int = DEFAULT_N_BITS,
    matrix: str = DEFAULT_MATRIX,
    gain: float = DEFAULT_GAIN,
) -> WatermarkKey:
    """Build and validate the key of ``miner_address`` for the round seeded by ``seed_r``."""
    # Verify the inputs; a bad key is the caller's fault, so say which field.
    if not isinstance(seed_r, bytes) or not seed_r:
        raise WatermarkError("seed_r must be non-empty bytes")
    if not isinstance(miner_address, bytes) or len(miner_address) != 20:
        raise WatermarkError("miner_address must be the 20-byte account address")
    if not isinstance(layer, str) or not layer:
        raise WatermarkError("layer must be a non-empty state-dict name")
    # The cap bounds X (n_bits x m float64) to a few hundred MB even for the widest layer.
    if not isinstance(n_bits, int) or isinstance(n_bits, bool) or not 1 <= n_bits <= MAX_N_BITS:
        raise WatermarkError(f"n_bits must be an integer in [1, {MAX_N_BITS}], got {n_bits!r}")
    if matrix not in MATRIX_TYPES:
        raise WatermarkError(f"matrix must be one of {MATRIX_TYPES}, got {matrix!r}")
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 < gain < np.inf:
        raise WatermarkError(f"gain must be a positive finite number, got {gain!r}")
    matrix_t: MatrixType = matrix  # type: ignore[assignment,unused-ignore]  # checked above
    return WatermarkKey(seed_r, miner_address, layer, n_bits, matrix_t, float(gain))


def _bit_stream(digest: bytes, n_bytes: int) -> bytes:
    """digest ‖ SHA-256(domain ‖ digest ‖ 1) ‖ SHA-256(domain ‖ digest ‖ 2) ‖ …, cut to n_bytes.

    The first 256 bits are the hash itself, as in the paper; the counter blocks only extend it.
    """
    out = bytearray(digest)
    counter = 1
    while len(out) < n_bytes:
        out += hashlib.sha256(_EXTEND_DOMAIN + digest + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:n_bytes])


@functools.lru_cache(maxsize=256)
def _bits(digest: bytes, n_bits: int) -> npt.NDArray[np.uint8]:
    raw = np.frombuffer(_bit_stream(digest, (n_bits + 7) // 8), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="big")[:n_bits].copy()
    bits.setflags(write=False)
    return bits


def _matrix_rng(digest: bytes, matrix: str, n_bits: int, m: int) -> np.random.Generator:
    material = b"|".join(
        [_MATRIX_DOMAIN, digest, matrix.encode(), str(n_bits).encode(), str(m).encode()]
    )
    seed = int.from_bytes(hashlib.sha256(material).digest(), "big")
    return np.random.Generator(np.random.PCG64(seed))


@functools.lru_cache(maxsize=64)
def _projection(
    digest: bytes, matrix: str, n_bits: int, m: int, gain: float
) -> npt.NDArray[np.float64]:
    """Generate X (T, m); cached because detection over many keys is one product per key."""
    if m < 1:
        raise WatermarkError(f"layer has no coordinates to carry a watermark (m={m})")
    rng = _matrix_rng(digest, matrix, n_bits, m)
    x = np.zeros((n_bits, m), dtype=np.float64)
    rows = np.arange(n_bits)
    if matrix == "direct":
        # Distinct coordinates per bit, so no two bits fight over one weight (Uchida §3.3).
        if n_bits > m:
            raise WatermarkError(
                f"direct matrix needs n_bits <= layer coordinates ({n_bits} > {m})"
            )
        x[rows, rng.permutation(m)[:n_bits]] = gain
    elif matrix == "diff":
        if 2 * n_bits > m:
            raise WatermarkError(
                f"diff matrix needs 2*n_bits <= layer coordinates ({2 * n_bits} > {m})"
            )
        idx = rng.permutation(m)[: 2 * n_bits]
        x[rows, idx[:n_bits]] = gain / np.sqrt(2.0)
        x[rows, idx[n_bits:]] = -gain / np.sqrt(2.0)
    elif matrix == "random":
        x = rng.standard_normal((n_bits, m))
        x *= gain / np.linalg.norm(x, axis=1, keepdims=True)
    else:
        raise WatermarkError(f"unknown matrix type {matrix!r}")
    x.setflags(write=False)
    return x
