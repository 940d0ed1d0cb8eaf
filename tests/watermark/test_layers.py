"""Layer choice and extraction: order-independent, so miner and validator pick the same tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import watermark as wm
from tests.watermark.helpers import tiny_net
from training.models import build_model


def test_default_layer_takes_the_largest_conv() -> None:
    assert wm.default_layer(tiny_net(), n_bits=64) == "body.2.weight"  # 144 > 72 coordinates


def test_default_layer_registry_unet_is_a_middle_block() -> None:
    # depth 3, base 16: bottleneck conv 128->128 and first decoder conv 128->64 tie at m=1152.
    assert wm.default_layer(build_model("unet2d")) == "bottom.2.weight"
    assert (
        wm.default_layer(build_model("unet2d", {"depth": 2, "base_width": 16})) == "bottom.2.weight"
    )


def test_default_layer_same_from_module_file_and_reordered_dict(tmp_path: Path) -> None:
    model = build_model("unet2d", {"depth": 2, "base_width": 16}, seed=0)
    path = tmp_path / "m.safetensors"
    save_file(model.state_dict(), str(path))
    with safe_open(str(path), framework="pt") as f:
        from_file = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    reordered = dict(reversed(list(model.state_dict().items())))
    assert wm.default_layer(model) == wm.default_layer(from_file) == wm.default_layer(reordered)


def test_default_layer_respects_matrix_capacity() -> None:
    # diff with 256 bits needs 512 coordinates; tiny_net has at most 144.
    with pytest.raises(wm.WatermarkError, match="512"):
        wm.default_layer(tiny_net(), n_bits=256, matrix="diff")
    assert wm.default_layer(tiny_net(), n_bits=64, matrix="diff") == "body.2.weight"


def test_default_layer_falls_back_to_linear() -> None:
    mlp = nn.Sequential(nn.Linear(600, 20), nn.ReLU(), nn.Linear(20, 2))
    assert wm.default_layer(mlp) == "0.weight"


def test_invalid_default_layer_nothing_usable() -> None:
    with pytest.raises(wm.WatermarkError):
        wm.default_layer({"a.bias": torch.zeros(4)})


def test_mean_kernel_is_mean_over_output_channels() -> None:
    weight = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    w = wm.layers.layer_from({"c.weight": weight}, "c.weight")
    assert w.shape == (12,)
    assert np.allclose(w, (weight[0] + weight[1]).reshape(-1) / 2)
