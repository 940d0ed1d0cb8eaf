"""Embedding as a loss term (paper Eq. 7): differentiable, local to one layer, usable by the trainer."""

from __future__ import annotations

import pytest
import torch

import watermark as wm
from tests.watermark.helpers import MINER, SEED, tiny_net
from training.data import make_segmentation_2d
from training.models import build_model
from training.trainer import TrainConfig, train


def test_embed_loss_is_a_scalar_with_gradient_only_on_the_layer(key: wm.WatermarkKey) -> None:
    model = tiny_net()
    loss = wm.embed_loss(model, key)
    assert loss.shape == () and loss.item() > 0.1
    loss.backward()
    for name, p in model.named_parameters():
        has_grad = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert has_grad is (name == key.layer), name


def test_embed_loss_falls_as_detection_rises(marked: torch.nn.Module, key: wm.WatermarkKey) -> None:
    assert wm.embed_loss(marked, key).item() < wm.embed_loss(tiny_net(), key).item()


def test_embed_loss_temperature_softens(marked: torch.nn.Module, key: wm.WatermarkKey) -> None:
    sharp = wm.embed_loss(marked, key, temperature=1.0).item()
    soft = wm.embed_loss(marked, key, temperature=10.0).item()
    assert sharp < soft  # the same margins look less "done" at a higher temperature


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_invalid_embed_loss_temperature(key: wm.WatermarkKey, temperature: float) -> None:
    with pytest.raises(wm.WatermarkError, match="temperature"):
        wm.embed_loss(tiny_net(), key, temperature=temperature)


def test_invalid_embed_loss_missing_layer() -> None:
    key = wm.derive_key(SEED, MINER, layer="nope.weight", n_bits=16)
    with pytest.raises(wm.WatermarkError, match="not a parameter"):
        wm.embed_loss(tiny_net(), key)


def test_invalid_embed_loss_bias_layer() -> None:
    key = wm.derive_key(SEED, MINER, layer="body.1.bias", n_bits=8)
    with pytest.raises(wm.WatermarkError, match="shape"):
        wm.embed_loss(tiny_net(), key)


def test_embed_with_the_trainer_on_a_registry_unet() -> None:
    """The miner's path: trainer extra_loss hook + registry model + default layer + default key."""
    # 40 AdamW steps at the miner's learning rate: embedding needs about 24 with He-initialised
    # weights (training/models.py init_weights), whose larger scale takes longer to move.
    data = make_segmentation_2d(64, 16, seed=3)
    model = build_model("unet2d", {"depth": 2, "base_width": 16}, seed=0)
    layer = wm.default_layer(model)
    key = wm.derive_key(SEED, MINER, layer=layer)
    assert not wm.detect(model, key).ok
    cfg = TrainConfig(budget_seconds=60, max_epochs=5, batch_size=8, learning_rate=3e-3,
                      progress=False, device="cpu")
    train(model, data, cfg, extra_loss=lambda m: 1.0 * wm.embed_loss(m, key))
    det = wm.detect(model, key)
    assert det.ok, det.min_confidence
    assert not wm.detect(model, wm.derive_key(SEED, bytes(20), layer=layer)).ok
