"""Learning curves: a run's per-epoch checkpoints scored on a test set (paper Figs. 10 and 12).

Why: the chain ranks only each miner's final model, which hides *how* the score was reached.
Scoring the checkpoints the trainer writes after every epoch (`trainer.train`, their seconds in
`TrainResult.epoch_elapsed`) shows validation Dice against epochs and against seconds, the
picture that says whether more training still pays (issue 14): the devnet draws it per miner
after each round, `bench/demo_task.py` prints it for the demo task.

Which checkpoints: at most `max_points`, log-spaced in the epoch number and always the first and
the last, because a curve changes fastest early, and a run of hundreds of epochs must not cost
hundreds of evaluations. Each checkpoint is loaded with `artifacts.load_model` (header checked
against the architecture's shapes before any tensor is allocated, strict load), never unpickled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.artifacts import load_model
from training.data import ArrayDataset
from training.trainer import evaluate

PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One scored checkpoint; `dataclasses.asdict` gives the {"epoch", "seconds", "score"} rows
    the devnet keeps in its history and plots."""

    epoch: int
    """1-based epoch whose end the checkpoint records."""
    seconds: float
    """Seconds since training started, at the end of that epoch."""
    score: float
    """The task metric as a fraction in [0, 1] (the chain's ppm / 10^6)."""


def log_spaced(n: int, max_points: int) -> list[int]:
    """At most `max_points` distinct 0-based indices of `n` epochs, log-spaced in the epoch
    number, always 0 and n-1; all of them when `n <= max_points`."""
    if n < 1 or max_points < 2:
        raise ValueError(f"need n >= 1 and max_points >= 2, got n={n} max_points={max_points}")
    if n <= max_points:
        return list(range(n))
    best = [0, n - 1]
    # Rounding merges early epochs, so ask for more points until the distinct ones would overflow.
    for k in range(max_points, n + 1):
        epochs = {round(math.exp(math.log(n) * i / (k - 1))) for i in range(k)}
        picked = sorted(e - 1 for e in epochs)
        if len(picked) > max_points:
            break
        best = picked
    return best


def score_checkpoint(path: Path, test: ArrayDataset, architecture: str,
                     hparams: Mapping[str, Any], metric: str) -> int:
    """`metric` of the checkpoint at `path` on `test`, in ppm (`trainer.evaluate`).

    Either kind of checkpoint: a replayable one (weights and AdamW state, proof of learning,
    `training.proof.checkpoint`) or a plain model file."""
    from training.proof.checkpoint import BadCheckpoint, load_checkpoint

    data = Path(path).read_bytes()
    try:
        model = load_checkpoint(data).model()
    except BadCheckpoint:
        model = load_model(data, architecture, dict(hparams))
    return evaluate(model, test, metric)


def curve(checkpoints: Sequence[Path], elapsed: Sequence[float], test: ArrayDataset,
          architecture: str, hparams: Mapping[str, Any], metric: str, *,
          max_points: int = 16) -> list[CurvePoint]:
    """Score a log-spaced subset of a run's per-epoch `checkpoints` (epoch 1, 2, ... in order,
    `elapsed[i]` the seconds at the end of epoch i+1) on `test`.

    Raises ValueError when the two sequences disagree in length (they must come from the same
    run) or are empty, and what `load_model` raises for a file that is not such a checkpoint.
    """
    if len(checkpoints) != len(elapsed):
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(elapsed)} epoch times: "
                         "both must describe the same run")
    if not checkpoints:
        raise ValueError("no checkpoints to score")
    return [
        CurvePoint(i + 1, float(elapsed[i]),
                   score_checkpoint(Path(checkpoints[i]), test, architecture, hparams,
                                    metric) / PPM)
        for i in log_spaced(len(checkpoints), max_points)
    ]


__all__ = ["CurvePoint", "curve", "log_spaced", "score_checkpoint"]
