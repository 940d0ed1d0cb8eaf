"""Distances between training states, and the one invariant every AdamW state satisfies.

docs/proof_of_learning.md "Spot-check": a replayed epoch is compared with the checkpoint it
should reproduce by the L2 distance over all parameters, normalised by how far that epoch moved
the weights (Jia et al., "Proof-of-Learning", IEEE S&P 2021, Sec. V: the reproduction error
relative to the update). Sums run in float64 so that the rounding of the measurement itself
stays far below the float32 differences it measures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

TINY = 1e-30
"""Floor of a normaliser: an epoch that did not move at all must be reproduced exactly."""

BETA1, BETA2 = 0.9, 0.999
"""AdamW's default betas, which the trainer uses."""
ADAM_RATIO_BOUND = math.sqrt((1 - BETA1) ** 2 / (1 - BETA2) / (1 - BETA1**2 / BETA2))
"""sup |exp_avg| / sqrt(exp_avg_sq) over every gradient history (about 7.27), see
`adam_state_excess`."""
_ADAM_SLACK = 1.01  # float32 rounding of the two moving averages, with a wide margin
_ADAM_ATOL = 1e-18  # subnormal second moments; a first moment this small moves nothing


def l2_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """||a - b|| over every tensor of two states with the same names (a KeyError otherwise)."""
    total = 0.0
    for name, x in a.items():
        y = b[name].to(x.device)
        total += float((x.double() - y.double()).square().sum())
    return math.sqrt(total)


def normalised(distance: float, scale: float) -> float:
    return distance / max(scale, TINY)


def adam_state_excess(exp_avg: Mapping[str, Tensor], exp_avg_sq: Mapping[str, Tensor]) -> float:
    """The largest |m| / (bound(v)) over all coordinates: <= 1 for any state AdamW can reach.

    Why: a checkpoint's moments are the miner's to write, and made-up moments could steer the
    next epoch anywhere while its replay still matched (the replay starts from them). AdamW's
    m_t = (1-b1) sum_s b1^(t-s) g_s and v_t = (1-b2) sum_s b2^(t-s) g_s^2 give, by
    Cauchy-Schwarz, |m_t| <= sqrt((1-b1)^2 / (1-b2) / (1 - b1^2/b2)) * sqrt(v_t) whatever the
    gradients were, so any state beyond that bound was not produced by training, and within it
    one made-up state moves the weights by at most ~ADAM_RATIO_BOUND/(1-b1) steps' worth.
    """
    worst = 0.0
    for name, m in exp_avg.items():
        bound = exp_avg_sq[name].double().sqrt() * (ADAM_RATIO_BOUND * _ADAM_SLACK) + _ADAM_ATOL
        worst = max(worst, float((m.double().abs() / bound).max()) if m.numel() else 0.0)
    return worst


def is_zero_state(tensors: Mapping[str, Tensor]) -> bool:
    return all(not bool(torch.count_nonzero(t)) for t in tensors.values())
