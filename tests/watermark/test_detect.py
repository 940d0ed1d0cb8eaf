"""Detection (paper §IV-C.2): every bit's confidence above the threshold, from weights alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file
from torch import nn

import watermark as wm
from tests.watermark.helpers import MINER, OTHER_MINER, OTHER_SEED, SEED, tiny_net


def test_detect_honest_embedding(marked: nn.Module, key: wm.WatermarkKey) -> None:
    det = wm.detect(marked, key)
    assert det.ok
    assert det.bit_error_rate == 0.0
    assert det.min_confidence > 0.9999
    assert det.confidences.shape == (key.n_bits,)
    assert det.threshold == wm.DEFAULT_THRESHOLD


def test_detect_unmarked_model_fails(key: wm.WatermarkKey) -> None:
    det = wm.detect(tiny_net(), key)
    assert not det.ok
    assert 0.2 < det.bit_error_rate < 0.8  # an untrained layer reads as noise


def test_detect_other_miner_and_round_not_detected(marked: nn.Module, key: wm.WatermarkKey) -> None:
    for seed, miner in ((SEED, OTHER_MINER), (OTHER_SEED, MINER)):
        other = wm.derive_key(
            seed, miner, layer=key.layer, n_bits=key.n_bits, matrix=key.matrix, gain=key.gain
        )
        det = wm.detect(marked, other)
        assert not det.ok
        assert det.bit_error_rate > 0.2


def test_detect_no_false_positives_over_1000_keys(marked: nn.Module, key: wm.WatermarkKey) -> None:
    """A false accept would let one miner's model pass as another's; detection is one product."""
    w = wm.layers.layer_from(marked, key.layer)
    rng = np.random.Generator(np.random.PCG64(7))
    hits = 0
    for _ in range(1000):
        miner = rng.bytes(20)
        other = wm.derive_key(
            SEED, miner, layer=key.layer, n_bits=key.n_bits, matrix=key.matrix, gain=key.gain
        )
        hits += wm.detect_vector(w, other).ok
    assert hits == 0
    assert wm.detect_vector(w, key).ok  # the same vector does carry the true key


def test_detect_state_dict_torch_and_numpy(marked: nn.Module, key: wm.WatermarkKey) -> None:
    sd = marked.state_dict()
    a = wm.detect(sd, key)
    b = wm.detect({k: v.numpy() for k, v in sd.items()}, key)
    c = wm.detect(marked, key)
    assert a.ok and b.ok and c.ok
    assert np.array_equal(a.confidences, b.confidences)
    assert np.array_equal(a.confidences, c.confidences)


def test_detect_file_reads_safetensors(
    tmp_path: Path, marked: nn.Module, key: wm.WatermarkKey
) -> None:
    path = tmp_path / "model.safetensors"
    save_file(marked.state_dict(), str(path))
    det = wm.detect_file(path, key)
    assert det.ok
    assert np.array_equal(det.confidences, wm.detect(marked, key).confidences)
    # A validator's view: a different miner's key on the same file is rejected.
    other = wm.derive_key(
        SEED, OTHER_MINER, layer=key.layer, n_bits=key.n_bits, matrix=key.matrix, gain=key.gain
    )
    assert not wm.detect_file(path, other).ok


def test_detect_file_bf16(tmp_path: Path, marked: nn.Module, key: wm.WatermarkKey) -> None:
    path = tmp_path / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in marked.state_dict().items()}, str(path))
    det = wm.detect_file(path, key)
    assert det.bit_error_rate == 0.0  # bf16 rounding moves margins but not signs


# ---- threshold edge cases ------------------------------------------------------------------


def _direct_state_dict(key: wm.WatermarkKey, margin: float, m: int = 72) -> dict[str, np.ndarray]:
    """A layer whose every bit has exactly signed logit ``margin`` under a direct key."""
    x = key.projection(m)
    signs = 2.0 * key.bits() - 1.0
    w = np.zeros(m)
    w[np.argmax(x, axis=1)] = signs * margin / key.gain  # (m,)
    return {key.layer: np.broadcast_to(w.reshape(8, 3, 3), (4, 8, 3, 3)).copy()}


@pytest.fixture
def direct_key() -> wm.WatermarkKey:
    return wm.derive_key(SEED, MINER, layer="conv.weight", n_bits=32, matrix="direct", gain=64.0)


@pytest.mark.parametrize(("delta", "ok"), [(1e-6, True), (-1e-6, False)])
def test_detect_threshold_edge(direct_key: wm.WatermarkKey, delta: float, ok: bool) -> None:
    margin = wm.threshold_margin(0.9999) + delta
    det = wm.detect(_direct_state_dict(direct_key, margin), direct_key, threshold=0.9999)
    assert det.ok is ok
    assert det.bit_error_rate == 0.0  # every bit reads right; only confidence decides
    assert abs(det.min_confidence - 0.9999) < 1e-9


def test_detect_one_weak_bit_fails_the_verdict(direct_key: wm.WatermarkKey) -> None:
    sd = _direct_state_dict(direct_key, 20.0)
    col = int(np.argmax(direct_key.projection(72)[5]))
    sd[direct_key.layer].reshape(4, -1)[:, col] *= 0.25  # bit 5 now has margin 5 < 9.21
    det = wm.detect(sd, direct_key)
    assert not det.ok
    assert det.bit_error_rate == 0.0
    assert int(np.argmin(det.confidences)) == 5


def test_detect_threshold_half_requires_strictly_positive_margin(
    direct_key: wm.WatermarkKey,
) -> None:
    assert not wm.detect(_direct_state_dict(direct_key, 0.0), direct_key, threshold=0.5).ok
    assert wm.detect(_direct_state_dict(direct_key, 1e-3), direct_key, threshold=0.5).ok


def test_detect_wrong_bits_have_low_confidence(direct_key: wm.WatermarkKey) -> None:
    det = wm.detect(_direct_state_dict(direct_key, -20.0), direct_key)
    assert det.bit_error_rate == 1.0
    assert det.confidences.max() < 1e-8


def test_threshold_margin_value() -> None:
    assert wm.threshold_margin(0.9999) == pytest.approx(9.2102404, abs=1e-6)
    assert wm.threshold_margin(0.5) == 0.0


@pytest.mark.parametrize("threshold", [1.0, 0.4999, -1.0, float("nan"), 2.0])
def test_invalid_threshold(direct_key: wm.WatermarkKey, threshold: float) -> None:
    with pytest.raises(wm.WatermarkError, match="threshold"):
        wm.detect(_direct_state_dict(direct_key, 20.0), direct_key, threshold=threshold)


# ---- bad inputs: clear error, no crash -----------------------------------------------------


def test_invalid_detect_missing_layer(key: wm.WatermarkKey) -> None:
    with pytest.raises(wm.WatermarkError, match="not found"):
        wm.detect({"other.weight": np.zeros((4, 8, 3, 3), np.float32)}, key)
    with pytest.raises(wm.WatermarkError, match="not found"):
        wm.detect(nn.Linear(3, 3), key)


@pytest.mark.parametrize(
    "tensor",
    [
        np.zeros(16, np.float32),  # a bias: no output-channel axis
        np.zeros((4, 8, 3), np.float32),  # 24 coordinates: too few for 64 direct / diff bits
        np.zeros((4, 0, 3, 3), np.float32),
        np.zeros((4, 16, 3, 3), np.int64),
        np.full((4, 16, 3, 3), np.nan, np.float32),
    ],
)
def test_invalid_detect_bad_layer(tensor: np.ndarray) -> None:
    key = wm.derive_key(SEED, MINER, layer="conv.weight", n_bits=64, matrix="diff")
    with pytest.raises(wm.WatermarkError):
        wm.detect({key.layer: tensor}, key)


def test_invalid_detect_not_a_model(key: wm.WatermarkKey) -> None:
    with pytest.raises(wm.WatermarkError):
        wm.detect([1, 2, 3], key)  # type: ignore[arg-type]
    with pytest.raises(wm.WatermarkError):
        wm.detect({key.layer: "weights"}, key)  # type: ignore[dict-item]


def test_invalid_detect_file(tmp_path: Path, key: wm.WatermarkKey) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(wm.WatermarkError, match="cannot read"):
        wm.detect_file(garbage, key)
    with pytest.raises(wm.WatermarkError, match="cannot read"):
        wm.detect_file(tmp_path / "absent.safetensors", key)
    other = tmp_path / "other.safetensors"
    save_numpy({"x.weight": np.zeros((2, 2), np.float32)}, str(other))
    with pytest.raises(wm.WatermarkError, match="not found"):
        wm.detect_file(other, key)
    ints = tmp_path / "ints.safetensors"
    save_numpy({key.layer: np.zeros((8, 16, 3, 3), np.int32)}, str(ints))
    with pytest.raises(wm.WatermarkError, match="dtype"):
        wm.detect_file(ints, key)


def test_detect_through_the_artifact_pipeline(
    tmp_path: Path, marked: nn.Module, key: wm.WatermarkKey
) -> None:
    """The miner's writer and the verifier's loader (training/artifacts.py) keep the watermark."""
    from training.artifacts import load_state_dict_bytes, save_model

    path = tmp_path / "reveal.safetensors"
    save_model(marked, path, metadata={"arch": "tiny"}, durable=False)
    assert wm.detect_file(path, key).ok
    assert wm.detect(load_state_dict_bytes(path.read_bytes()), key).ok
