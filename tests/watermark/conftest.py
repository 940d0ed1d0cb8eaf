"""Fixtures: keys for every matrix type and an honestly watermarked tiny net.

Helpers live in helpers.py (imported as ``tests.watermark.helpers``: this folder has no
``__init__.py`` on purpose, so that it can never shadow the real ``watermark`` package).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import watermark as wm
from tests.watermark.helpers import MINER, SEED, embed, tiny_net


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(params=list(wm.MATRIX_TYPES))
def matrix(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def key(matrix: str) -> wm.WatermarkKey:
    # 64 bits: diff needs 2*64 <= 144 coordinates of LAYER.
    return wm.derive_key(SEED, MINER, layer="body.2.weight", n_bits=64, matrix=matrix, gain=100.0)


@pytest.fixture
def marked(key: wm.WatermarkKey) -> nn.Module:
    model = tiny_net()
    embed(model, key)
    return model
