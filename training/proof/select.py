"""Which epochs a validator replays: the suspicious ones, plus some nobody could predict.

docs/proof_of_learning.md "Spot-check", after Jia et al., "Proof-of-Learning" (IEEE S&P 2021),
Sec. VI-A: a forger who fabricates part of a trajectory has to make up the distance somewhere,
so the epochs with the largest weight updates, and those whose update stands out from their
neighbours', are the first to check; a few more are drawn at random from a seed that did not
exist before the reveal, so no epoch is safe to fake. Everything is deterministic in the inputs,
so every validator checks the same epochs.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.proof.verify import TrajectoryPolicy

_TINY = 1e-30


def choose_epochs(update_norms: Sequence[float], policy: TrajectoryPolicy,
                  selection_seed: bytes) -> list[int]:
    """The epochs (1-based, sorted, distinct) to replay.

    `update_norms[i]` is ||w_{i+1} - w_i||, epoch i+1's update. Picks, in turn and each from the
    epochs not yet picked: the `q_largest` largest norms, the `q_anomalous` largest ratios
    norm_i / mean(norms of epochs i-1 and i+1), then `q_random` drawn without replacement by
    `random.Random` seeded with the first 8 bytes of sha256(selection_seed). Ties go to the
    earlier epoch; a NaN norm counts as infinitely suspicious.
    """
    norms = [_suspicion(x) for x in update_norms]
    epochs = len(norms)
    chosen: set[int] = set()

    def take(scores: Sequence[float], count: int) -> None:
        ranked = sorted((e for e in range(1, epochs + 1) if e not in chosen),
                        key=lambda e: (-scores[e - 1], e))
        chosen.update(ranked[:max(0, count)])

    take(norms, policy.q_largest)
    take(_neighbour_ratios(norms), policy.q_anomalous)
    rest = sorted(set(range(1, epochs + 1)) - chosen)
    rng = random.Random(int.from_bytes(hashlib.sha256(selection_seed).digest()[:8], "big"))
    chosen.update(rng.sample(rest, min(len(rest), max(0, policy.q_random))))
    return sorted(chosen)


def _suspicion(norm: float) -> float:
    return math.inf if math.isnan(norm) else norm


def _neighbour_ratios(norms: Sequence[float]) -> list[float]:
    """norm_i / mean(neighbours' norms); 1.0 for a lone epoch (no neighbour to stand out from)."""
    ratios = []
    for i, norm in enumerate(norms):
        neighbours = [norms[j] for j in (i - 1, i + 1) if 0 <= j < len(norms)]
        if not neighbours:
            ratios.append(1.0)
            continue
        mean = sum(neighbours) / len(neighbours)
        ratios.append(math.inf if math.isinf(norm) else norm / max(mean, _TINY))
    return ratios
