"""Dice and accuracy against hand-computed cases; exact integer ppm."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from training.metrics import (
    PPM,
    DiceAccumulator,
    MetricError,
    accuracy_ppm,
    dice,
    dice_per_image_ppm,
    dice_ppm,
    make_accumulator,
    to_ppm,
)

# Image 1: pred and target share their single pixel            -> Dice 1.
# Image 2: pred 3 pixels, target 1 pixel, overlap 1             -> Dice 2*1/(3+1) = 1/2.
PRED = np.array([[[1, 0], [0, 0]], [[1, 1], [1, 0]]])
TRUE = np.array([[[1, 0], [0, 0]], [[0, 1], [0, 0]]])


def test_dice_global_hand_computed() -> None:
    # pooled: intersection 2, |pred| 4, |true| 2 -> 4/6
    assert dice_ppm(PRED, TRUE) == 666_666
    assert dice(PRED, TRUE) == pytest.approx(2 / 3)


def test_dice_per_image_hand_computed() -> None:
    assert dice_per_image_ppm(PRED, TRUE) == 750_000


def test_dice_simple_row() -> None:
    assert dice_ppm(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 0]])) == 500_000


def test_dice_empty_mask_convention() -> None:
    empty = np.zeros((1, 3, 3), np.int64)
    full = np.ones((1, 3, 3), np.int64)
    assert dice_ppm(empty, empty) == PPM  # both empty: perfect agreement
    assert dice_ppm(full, empty) == 0
    assert dice_ppm(empty, full) == 0
    # per image, an empty-and-correct image counts 1, pulling the mean up
    pred = np.concatenate([empty, full])
    true = np.concatenate([empty, empty])
    assert dice_per_image_ppm(pred, true) == 500_000
    assert dice_ppm(pred, true) == 0


def test_dice_multiclass_is_mean_over_foreground_classes() -> None:
    pred = np.array([[0, 1, 2, 2]])
    true = np.array([[0, 1, 1, 2]])
    # class 1: 2*1/(1+2) = 2/3 ; class 2: 2*1/(2+1) = 2/3 -> mean 2/3
    assert dice_ppm(pred, true, num_classes=3) == 666_666


def test_accumulator_batches_equal_whole() -> None:
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 2, (10, 8, 8))
    true = rng.integers(0, 2, (10, 8, 8))
    for per_image in (False, True):
        acc = DiceAccumulator(per_image=per_image)
        for s in range(0, 10, 3):
            acc.update(pred[s : s + 3], true[s : s + 3])
        whole = dice_per_image_ppm(pred, true) if per_image else dice_ppm(pred, true)
        assert acc.ppm() == whole


def test_accepts_torch_tensors() -> None:
    assert dice_ppm(torch.from_numpy(PRED), torch.from_numpy(TRUE).bool()) == 666_666


def test_accuracy_hand_computed() -> None:
    assert accuracy_ppm([1, 2, 3], [1, 2, 0]) == 666_666
    assert accuracy_ppm(np.arange(4), np.arange(4)) == PPM


def test_to_ppm_exact_and_clamped() -> None:
    assert to_ppm(Fraction(1, 3)) == 333_333
    assert to_ppm(0.5) == 500_000
    assert to_ppm(1.5) == PPM and to_ppm(-0.1) == 0
    with pytest.raises(MetricError):
        to_ppm(float("nan"))


def test_make_accumulator_names() -> None:
    assert isinstance(make_accumulator("dice"), DiceAccumulator)
    assert make_accumulator("dice_per_image").per_image  # type: ignore[union-attr]
    with pytest.raises(MetricError, match="unknown metric"):
        make_accumulator("f1")


def test_invalid_metric_inputs() -> None:
    with pytest.raises(MetricError, match="shape"):
        dice_ppm(np.zeros((1, 2, 2), np.int64), np.zeros((1, 3, 3), np.int64))
    with pytest.raises(MetricError, match="integers"):
        dice_ppm(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), np.int64))
    with pytest.raises(MetricError, match="classes"):
        dice_ppm(np.zeros((1, 2, 2), np.int64), np.full((1, 2, 2), 5))
    with pytest.raises(MetricError, match="no images"):
        DiceAccumulator().ppm()
