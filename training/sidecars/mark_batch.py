"""Many watermark keys read from one mean kernel at once: the copy defence's projection
(training/sidecars/copy_marks.py, docs/verification.md).

A model is tested against every earlier mark of its architecture, so the cost per model grows with
the chain. One key by one (`watermark.detect_vector`) builds a dense (T, m) matrix per key and
multiplies it: T·m·8 bytes (9 MiB at T = 256, m = 4608) and a product for each of K keys. The
"direct" and "diff" matrices (docs/watermark.md) are sparse, one or two coordinates a bit, so all
K keys are read with one gather of the kernel, `w[idx]` for a (K, T) index matrix, and each key
needs only its T (or 2T) column indices and its T bits: ~2.3 KB at 256 "diff" bits, kept in a
process-wide LRU cache within `KEY_CACHE_BYTES`. The verifier tests the same marks against every
model of a round, so from the second model on no index is generated again. Being elementwise,
the gather also gives every machine the same margins bit for bit, where a BLAS product's
summation order may differ. "random" rows are dense: they are stacked and multiplied in chunks
(`chunk_keys`) and not cached here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from training.sidecars.scheme import WatermarkScheme

#: Byte budget of the cached key indices: ~1.5 KB a key at 256 "diff" bits (uint16 columns, the
#: bits, the entry), so ~45,000 keys: every mark of a 9,000-round chain with 5 reveals a round.
KEY_CACHE_BYTES = 64 << 20
#: Byte budget of the stacked batches (intp, for a fast np.take: ~4.3 KB a "diff" key).
BATCH_CACHE_BYTES = 64 << 20
#: Bytes of temporaries one batch may take (K·T float64 a few times; K·T·m for "random").
BATCH_BYTES = 32 << 20


class KeyRows(NamedTuple):
    """One key's projection in the form the batch needs: its bits, and X's non-zero columns."""

    bits: npt.NDArray[np.uint8]  # (T,)
    idx: npt.NDArray[np.integer[Any]]  # (T,) "direct", (2, T) "diff" (+ then - column), (0,)
    # "random"; uint16 where m allows (a 256-bit "diff" key: 1 KB), else int32
    dense: npt.NDArray[np.float64] | None  # (T, m), "random" only (never cached)

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes + self.idx.nbytes + 300  # + the entry's objects and key, roughly


_CacheKey = tuple[bytes, bytes, str, str, int, int]  # seed, address, layer, matrix, T, m
_cache: OrderedDict[_CacheKey, KeyRows] = OrderedDict()
_cache_bytes = 0
_cache_lock = threading.Lock()


def bits_read(w: npt.NDArray[np.float64], layer: str, keys: Sequence[tuple[bytes, str]],
              scheme: WatermarkScheme) -> npt.NDArray[np.int64]:
    """(K,) how many bits of each (seed, hex miner) key read above the threshold in `w`; -1 for
    a key that cannot be built for this layer (a bad address, a layer too small).

    Equal to count(detect_vector(w, key).confidences > threshold) key by key: the margins are
    the same products (a sign flip is exact) and a margin within 1e-6 of logit(threshold) gets
    detect_vector's own confidence formula. One batch; callers with many keys split them with
    `chunk_keys`.
    """
    from watermark import threshold_margin

    if w.ndim != 1:
        raise ValueError(f"mean kernel must be a vector, got shape {w.shape}")
    m = w.shape[0]
    out = np.full(len(keys), -1, dtype=np.int64)
    batch = _batch(keys, layer, scheme, m)
    if not batch.valid:
        return out
    w64 = np.asarray(w, dtype=np.float64)  # (m,)
    k = len(batch.valid)
    if batch.dense is not None:  # "random"
        raw = (batch.dense @ w64).reshape(k, scheme.n_bits)  # (K, T)
    elif scheme.matrix == "direct":
        raw = np.take(w64, batch.idx)  # (K, T)
        raw *= float(scheme.gain)
    else:  # "diff": +c at the first column, -c at the second, c = gain/sqrt(2) (keys.py)
        c = float(scheme.gain) / np.sqrt(2.0)
        raw = c * np.take(w64, batch.idx[0])  # (K, T)
        raw += (-c) * np.take(w64, batch.idx[1])
    margins = np.negative(raw, out=raw, where=batch.zero)  # (K, T): (2b - 1)·X·w
    z = threshold_margin(scheme.threshold)
    # A margin 1e-6 above logit(threshold) clears it whatever the rounding (sigmoid's slope
    # there is ~1e-4, its float error ~1e-16); the few within 1e-6 get detect_vector's formula.
    sure = margins > z + 1e-6  # (K, T)
    counts = np.count_nonzero(sure, axis=1).astype(np.int64)  # (K,)
    edge_r, edge_c = np.nonzero((margins > z - 1e-6) & ~sure)
    if edge_r.size:
        conf = np.exp(-np.logaddexp(0.0, -margins[edge_r, edge_c]))
        np.add.at(counts, edge_r, (conf > scheme.threshold).astype(np.int64))
    out[batch.valid] = counts
    return out


class _Batch(NamedTuple):
    """The rows of a list of keys, stacked once and reused for every model that list is tested
    against (the verifier tests the same marks on every model of a round)."""

    valid: list[int]  # positions of the keys that can be built
    zero: npt.NDArray[np.bool_]  # (K, T) where the key's bit is 0 (the margin's sign is -)
    idx: npt.NDArray[np.intp]  # (K, T) "direct", (2, K, T) "diff", (0,) "random"
    dense: npt.NDArray[np.float64] | None  # (K*T, m) "random" only

    @property
    def nbytes(self) -> int:
        return self.zero.nbytes + self.idx.nbytes + 100 * len(self.valid)  # + the key tuple


_batches: OrderedDict[tuple[object, ...], _Batch] = OrderedDict()
_batches_bytes = 0


def _batch(keys: Sequence[tuple[bytes, str]], layer: str, scheme: WatermarkScheme, m: int
           ) -> _Batch:
    global _batches_bytes
    bk = (tuple(keys), layer, scheme.matrix, scheme.n_bits, m)
    with _cache_lock:
        hit = _batches.get(bk)
        if hit is not None:
            _batches.move_to_end(bk)
            return hit
    valid, rows = _rows(keys, layer, scheme, m)
    if not rows:
        batch = _Batch(valid, np.zeros((0, scheme.n_bits), dtype=np.bool_),
                       np.empty(0, dtype=np.intp), None)
    else:
        dense = None
        if scheme.matrix == "random":
            dense = np.concatenate([r.dense for r in rows if r.dense is not None])  # (K*T, m)
        idx = np.empty(0, dtype=np.intp)
        if dense is None:  # one contiguous (K, T) block per column of the rows, for np.take
            idx = np.stack([r.idx for r in rows], axis=-2).astype(np.intp)
        batch = _Batch(valid, np.stack([r.bits for r in rows]) == 0, idx, dense)
    if batch.dense is None:  # a dense batch is as big as the whole budget allows: not kept
        with _cache_lock:
            if bk not in _batches:
                _batches[bk] = batch
                _batches_bytes += batch.nbytes
            while _batches_bytes > BATCH_CACHE_BYTES and _batches:
                _batches_bytes -= _batches.popitem(last=False)[1].nbytes
    return batch


def chunk_keys(scheme: WatermarkScheme, m: int) -> int:
    """How many keys one `bits_read` batch takes within `BATCH_BYTES`."""
    per_key = scheme.n_bits * 8 * (m if scheme.matrix == "random" else 6)
    return max(1, BATCH_BYTES // max(1, per_key))


def _rows(keys: Sequence[tuple[bytes, str]], layer: str, scheme: WatermarkScheme, m: int
          ) -> tuple[list[int], list[KeyRows]]:
    """(positions of the keys that can be built, their rows), from the cache where possible."""
    global _cache_bytes
    from watermark import WatermarkError

    want: list[tuple[int, _CacheKey]] = []
    for i, (seed, miner) in enumerate(keys):
        try:
            addr = bytes.fromhex(miner)
        except ValueError:
            continue
        want.append((i, (seed, addr, layer, scheme.matrix, scheme.n_bits, m)))
    found: dict[int, KeyRows] = {}
    if scheme.matrix != "random":
        with _cache_lock:
            for i, ck in want:
                hit = _cache.get(ck)
                if hit is not None:
                    _cache.move_to_end(ck)
                    found[i] = hit
    new: list[tuple[_CacheKey, KeyRows]] = []
    for i, ck in want:
        if i in found:
            continue
        try:
            found[i] = rows = _make_rows(ck, scheme)
        except WatermarkError:
            continue
        if rows.dense is None:
            new.append((ck, rows))
    if new:
        with _cache_lock:
            for ck, rows in new:
                if ck not in _cache:
                    _cache[ck] = rows
                    _cache_bytes += rows.nbytes
            while _cache_bytes > KEY_CACHE_BYTES and _cache:
                _cache_bytes -= _cache.popitem(last=False)[1].nbytes
    valid = [i for i, _ in want if i in found]
    return valid, [found[i] for i in valid]


def _make_rows(ck: _CacheKey, scheme: WatermarkScheme) -> KeyRows:
    """The rows of X for one key, from the same generator as WatermarkKey.projection.

    The key is built (and so validated) as for detect_vector; "direct"/"diff" then keep only the
    column of each row's non-zeros, "random" takes the key's dense matrix.
    """
    from watermark import WatermarkError
    from watermark.keys import _matrix_rng  # X's own generator: no second copy of its rules

    seed, addr, layer, matrix, n_bits, m = ck
    key = scheme.key(seed, addr, layer)  # WatermarkError on a bad address
    if matrix == "random":
        return KeyRows(key.bits(), np.empty(0, dtype=np.int32), key.projection(m))
    per_row = 1 if matrix == "direct" else 2
    if per_row * n_bits > m:  # the refusal of keys._projection
        raise WatermarkError(f"{matrix} matrix needs {per_row}*n_bits <= layer coordinates "
                             f"({per_row * n_bits} > {m})")
    perm = _matrix_rng(key.digest, matrix, n_bits, m).permutation(m)[: per_row * n_bits]
    small = m <= 1 << 16  # uint16 holds every column of such a layer
    idx: npt.NDArray[np.integer[Any]] = (perm.astype(np.uint16) if small
                                         else perm.astype(np.int32)).reshape(per_row, n_bits)
    return KeyRows(key.bits().copy(), idx[0] if per_row == 1 else idx, None)


def clear_cache() -> None:
    """Forget every cached key and batch (benchmarks time the cold path with it)."""
    global _cache_bytes, _batches_bytes
    with _cache_lock:
        _cache.clear()
        _batches.clear()
        _cache_bytes = _batches_bytes = 0
