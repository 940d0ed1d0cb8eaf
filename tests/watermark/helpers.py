"""Shared helpers: a tiny conv net and an honest embedding loop.

Embedding is real training (Adam on the regularizer alone — the task loss is irrelevant to
whether the bits go in), kept to a few hundred milliseconds.
"""

from __future__ import annotations

import torch
from torch import nn

import watermark as wm

SEED = bytes(range(32))
MINER = bytes(range(100, 120))
OTHER_MINER = bytes(range(200, 220))
OTHER_SEED = bytes(range(1, 33))


class TinyNet(nn.Module):
    """conv(1→8) → conv(8→16, 3x3: 72 coords) → conv(16→8, 3x3: 144 coords) → head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.Conv2d(16, 8, 3, padding=1),
        )
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))  # (N, 2)


def tiny_net(seed: int = 0) -> TinyNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet()


def embed(model: nn.Module, key: wm.WatermarkKey, steps: int = 150, lr: float = 1e-2) -> None:
    """Optimise the regularizer alone with Adam until it is well past the threshold."""
    opt = torch.optim.Adam([dict(model.named_parameters())[key.layer]], lr=lr)
    for _ in range(steps):
        loss = wm.embed_loss(model, key, temperature=10.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
