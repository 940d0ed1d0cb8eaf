"""Embedding: the regularizer E_R(w) that the trainer adds to the task loss (paper Eq. 7).

E(w) = E0(w) + λ·E_R(w), with E_R the binary cross-entropy between sigmoid(X·w) and the key's
bits (Uchida et al. 2017, Eq. 3–4). We average over bits instead of summing so that λ means the
same thing for any n_bits; the trainer owns λ (``extra_loss=lambda m: lam * embed_loss(m, key)``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from watermark.errors import WatermarkError
from watermark.keys import WatermarkKey
from watermark.layers import mean_kernel_torch

DEFAULT_TEMPERATURE = 100.0


def embed_loss(
    model: nn.Module, key: WatermarkKey, *, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """E_R(w) = t·BCE(sigmoid(X·w / t), bits) for ``key`` on ``model`` (t = temperature).

    At t = 1 this is exactly Uchida's regularizer. A temperature t > 1 keeps the loss from
    saturating as soon as detection passes: plain BCE's gradient dies like exp(−margin), so
    margins stall just above logit(0.9999) ≈ 9.2 and a few steps of any later training knock
    one bit under the threshold. With temperature t the loss keeps pushing until margins are a
    few multiples of t, so the watermark keeps deepening for the whole training run and an
    attacker has to undo all of it (measured in bench/watermark.py). The factor t keeps the
    gradient at small margins, hence the meaning of λ, independent of t (the loss *value* starts
    at t·ln 2, about 69 at the default, which shows in the trainer's logged loss). Detection uses
    X·w itself. Raises WatermarkError for a missing or badly shaped layer.
    """
    if not temperature > 0:
        raise WatermarkError(f"temperature must be positive, got {temperature!r}")
    weight = _parameter(model, key.layer)
    logits = watermark_logits(weight, key) / temperature  # (T,)
    bits = _bits_tensor(key, str(weight.device))  # (T,)
    return temperature * F.binary_cross_entropy_with_logits(logits, bits)


def watermark_logits(weight: torch.Tensor, key: WatermarkKey) -> torch.Tensor:
    """X·w (T,) for a weight tensor (O, ...), differentiable (float32 training precision)."""
    w = mean_kernel_torch(weight, key.layer)  # (m,)
    x = _projection_tensor(key, w.numel(), str(w.device))  # (T, m)
    return x @ w  # (T,)


def _parameter(model: nn.Module, name: str) -> torch.Tensor:
    # get_parameter walks the dotted path: O(depth), not a dict of every parameter per step.
    try:
        return model.get_parameter(name)
    except AttributeError:
        raise WatermarkError(f"layer {name!r} is not a parameter of the model") from None


@functools.lru_cache(maxsize=64)
def _projection_tensor(key: WatermarkKey, m: int, device: str) -> torch.Tensor:
    # float32 on the weight's device: training precision; detection recomputes in float64.
    return torch.from_numpy(key.projection(m).astype("float32")).to(device)


@functools.lru_cache(maxsize=64)
def _bits_tensor(key: WatermarkKey, device: str) -> torch.Tensor:
    return torch.from_numpy(key.bits().astype("float32")).to(device)
