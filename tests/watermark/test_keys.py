"""Key derivation (docs/watermark.md): bits from SHA-256(seed_r ‖ address_m), matrix from the
same."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import watermark as wm
from tests.watermark.helpers import MINER, OTHER_MINER, OTHER_SEED, SEED


def test_derive_key_bits_are_the_hash_bits() -> None:
    key = wm.derive_key(SEED, MINER, layer="l")
    digest = hashlib.sha256(SEED + MINER).digest()
    expected = [(digest[i // 8] >> (7 - i % 8)) & 1 for i in range(256)]
    assert key.bits().tolist() == expected
    assert key.n_bits == 256 and key.matrix == wm.DEFAULT_MATRIX


def test_bits_extend_deterministically_past_256() -> None:
    long = wm.derive_key(SEED, MINER, layer="l", n_bits=600).bits()
    short = wm.derive_key(SEED, MINER, layer="l", n_bits=256).bits()
    assert long.shape == (600,)
    assert np.array_equal(long[:256], short)
    assert np.array_equal(long, wm.derive_key(SEED, MINER, layer="l", n_bits=600).bits())
    # The extension is not a repetition of the hash.
    assert not np.array_equal(long[256:512], short)
    assert 120 < int(long[256:].sum()) < 224  # 344 fresh, roughly balanced bits


def test_bits_differ_per_miner_and_round() -> None:
    base = wm.derive_key(SEED, MINER, layer="l").bits()
    for other in (
        wm.derive_key(SEED, OTHER_MINER, layer="l"),
        wm.derive_key(OTHER_SEED, MINER, layer="l"),
    ):
        assert 80 < int(np.count_nonzero(other.bits() != base)) < 176


# Pinned bytes: a change in numpy's PCG64 / Generator streams (or in our derivation) would make
# validators disagree with miners, so it must fail loudly here. Rounded to 1e-9 so last-ulp
# differences between CPUs in the row normalisation do not matter.
GOLDEN = {
    "direct": "96738539629b1a70d383c271f47c83c3bfdc58827dc857ec0409e539e97d2d5d",
    "diff": "3417ac79c7ba580dd8e2e998e6369c4e1f6c4ada5a27076f1c338eb41db77801",
    "random": "6751a2f3624fd09d90388d17d2f6bea9a257850da6b0be505f2e9fe1153c93eb",
}


@pytest.mark.parametrize("matrix", wm.MATRIX_TYPES)
def test_projection_is_pinned(matrix: str) -> None:
    key = wm.derive_key(
        bytes(range(32)), bytes(range(100, 120)), layer="l", matrix=matrix, n_bits=64, gain=100.0
    )
    x = key.projection(300)
    assert x.shape == (64, 300) and x.dtype == np.float64
    assert hashlib.sha256(np.round(x, 9).tobytes()).hexdigest() == GOLDEN[matrix]


@pytest.mark.parametrize("matrix", wm.MATRIX_TYPES)
def test_projection_rows_have_norm_gain(matrix: str) -> None:
    x = wm.derive_key(SEED, MINER, layer="l", matrix=matrix, n_bits=100, gain=7.0).projection(400)
    assert np.allclose(np.linalg.norm(x, axis=1), 7.0)


def test_direct_rows_read_distinct_coordinates() -> None:
    x = wm.derive_key(SEED, MINER, layer="l", matrix="direct", n_bits=256).projection(300)
    assert np.all(np.count_nonzero(x, axis=1) == 1)
    assert len(set(np.argmax(x, axis=1).tolist())) == 256


def test_diff_rows_are_plus_minus_pairs() -> None:
    x = wm.derive_key(SEED, MINER, layer="l", matrix="diff", n_bits=100).projection(300)
    assert np.all((x > 0).sum(axis=1) == 1) and np.all((x < 0).sum(axis=1) == 1)
    assert np.allclose(x.sum(axis=1), 0.0)
    assert np.count_nonzero(x.any(axis=0)) == 200  # 200 distinct coordinates


def test_projection_is_read_only() -> None:
    x = wm.derive_key(SEED, MINER, layer="l").projection(600)
    with pytest.raises(ValueError):
        x[0, 0] = 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed_r": b""},
        {"miner_address": b"\x01" * 19},
        {"miner_address": "ab" * 20},
        {"layer": ""},
        {"n_bits": 0},
        {"n_bits": True},
        {"n_bits": 1 << 20},
        {"matrix": "gaussian"},
        {"gain": 0.0},
        {"gain": float("nan")},
        {"gain": float("inf")},
        {"gain": "1000"},
    ],
)
def test_invalid_derive_key(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"seed_r": SEED, "miner_address": MINER, "layer": "l"} | kwargs
    with pytest.raises(wm.WatermarkError):
        wm.derive_key(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("matrix", "m"), [("direct", 255), ("diff", 511)])
def test_invalid_projection_layer_too_small(matrix: str, m: int) -> None:
    key = wm.derive_key(SEED, MINER, layer="l", matrix=matrix)
    with pytest.raises(wm.WatermarkError, match="coordinates"):
        key.projection(m)
