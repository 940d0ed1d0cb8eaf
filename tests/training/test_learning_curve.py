"""Learning curves (training/learning_curve.py) from a real run's checkpoints, and the trainer's
per-epoch seconds they are drawn against (`TrainResult.epoch_elapsed`)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from training.artifacts import ArtifactError, load_model, save_model
from training.data import make_segmentation_2d
from training.learning_curve import CurvePoint, curve, log_spaced, score_checkpoint
from training.models import build_model
from training.trainer import TrainConfig, TrainResult, evaluate, train

HP = {"depth": 2, "base_width": 8}
EPOCHS = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real tiny U-Net trained for EPOCHS epochs, a checkpoint each, on the old shapes set
    (it learns within seconds, so the curve must rise)."""
    import torch

    torch.set_num_threads(1)
    train_set, test_set = make_segmentation_2d(96, 32, seed=7).split(0.25, seed=7)
    model = build_model("unet2d", HP, seed=0)
    ckpts = tmp_path_factory.mktemp("curve")
    result = train(model, train_set, TrainConfig(max_epochs=EPOCHS, batch_size=16,
                                                 learning_rate=3e-3, budget_seconds=120,
                                                 checkpoint_dir=ckpts, progress=False))
    return {"result": result, "model": model, "test": test_set, "dir": ckpts}


def test_train_records_epoch_elapsed(run: dict[str, Any]) -> None:
    result: TrainResult = run["result"]
    assert result.epochs == EPOCHS
    assert len(result.epoch_elapsed) == len(result.epoch_losses) == len(result.checkpoints)
    assert 0 < result.epoch_elapsed[0]
    assert all(a < b for a, b in pairwise(result.epoch_elapsed))
    assert result.epoch_elapsed[-1] <= result.wall_seconds


def test_curve_scores_every_checkpoint_of_a_short_run(run: dict[str, Any]) -> None:
    result: TrainResult = run["result"]
    paths = [c.path for c in result.checkpoints]
    points = curve(paths, result.epoch_elapsed, run["test"], "unet2d", HP, "dice")
    assert [p.epoch for p in points] == list(range(1, EPOCHS + 1))
    assert [p.seconds for p in points] == result.epoch_elapsed
    # Each point is its own checkpoint's score: the last one is the trained model's.
    assert points[-1].score == evaluate(run["model"], run["test"], "dice") / 1e6
    for p, path in zip(points, paths, strict=True):
        assert p.score == score_checkpoint(path, run["test"], "unet2d", HP, "dice") / 1e6
    assert all(0.0 <= p.score <= 1.0 for p in points)
    assert points[-1].score > points[0].score  # it learned: the curve rises


def test_curve_keeps_the_first_and_last_of_a_subset(run: dict[str, Any]) -> None:
    result: TrainResult = run["result"]
    paths = [c.path for c in result.checkpoints]
    points = curve(paths, result.epoch_elapsed, run["test"], "unet2d", HP, "dice", max_points=3)
    assert len(points) == 3 and points[0].epoch == 1 and points[-1].epoch == EPOCHS
    assert isinstance(points[0], CurvePoint)


def test_log_spaced_picks_early_epochs_densely() -> None:
    picked = log_spaced(1000, 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 999
    assert picked == sorted(set(picked))
    gaps = [b - a for a, b in pairwise(picked)]
    assert gaps[0] <= 2 and gaps[-1] > 100  # dense at the start, sparse at the end
    assert log_spaced(5, 16) == [0, 1, 2, 3, 4]
    assert log_spaced(1, 16) == [0]
    assert log_spaced(17, 16)[-1] == 16 and len(log_spaced(17, 16)) <= 16


def test_invalid_curve_lengths_disagree(run: dict[str, Any]) -> None:
    result: TrainResult = run["result"]
    paths = [c.path for c in result.checkpoints]
    with pytest.raises(ValueError, match="same run"):
        curve(paths, result.epoch_elapsed[:-1], run["test"], "unet2d", HP, "dice")
    with pytest.raises(ValueError, match="no checkpoints"):
        curve([], [], run["test"], "unet2d", HP, "dice")
    with pytest.raises(ValueError):
        log_spaced(0, 16)


def test_invalid_curve_checkpoint_of_another_model(run: dict[str, Any], tmp_path: Path) -> None:
    """A file that is not this architecture's checkpoint is refused by its header, not loaded."""
    other = tmp_path / "epoch-0001.safetensors"
    save_model(build_model("unet2d", {"depth": 1, "base_width": 4}, seed=0), other)
    with pytest.raises(ArtifactError):
        curve([other], [1.0], run["test"], "unet2d", HP, "dice")
    assert load_model(other, "unet2d", {"depth": 1, "base_width": 4}) is not None
