"""Scores of trained models: Dice and accuracy, exact integers in parts per million for the chain.

Validators compare a miner's claimed score with their own measurement, and the chain takes a
power-weighted median of measured scores (docs/settlement.md); consensus arithmetic must be
bit-identical on every node (docs/determinism.md). So every score here is computed from integer
counts with exact rational arithmetic and floored to an integer number of parts per million (ppm,
1_000_000 = perfect). Floats appear only in the convenience functions meant for humans.

Dice (Sørensen–Dice) of a predicted mask A and a true mask B is 2|A∩B| / (|A| + |B|).

* Empty-mask convention: when A and B are both empty the masks agree perfectly and Dice is 1
  (1_000_000 ppm). When exactly one is empty the formula gives 0 as usual. This matters for the
  per-image mean, where images without foreground are common.
* Global Dice (metric ``dice``) pools the counts over all images, then applies the formula once;
  large objects weigh more. Mean per-image Dice (``dice_per_image``) applies it per image and
  averages, so every image weighs the same.
* Multi-class masks (class indices, 0 = background): the score is the mean over foreground
  classes 1..K-1 of each class's Dice. Binary masks are the case K = 2.

Accuracy is correct / total over classification labels.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from abci_app.dlbc.params import PPM

MetricName = Literal["dice", "dice_per_image", "accuracy"]
METRICS: tuple[str, ...] = ("dice", "dice_per_image", "accuracy")


class MetricError(ValueError):
    """Predictions and targets that cannot be scored together."""


def to_ppm(value: Fraction | float) -> int:
    """A score in [0, 1] as floored integer ppm; exact for `Fraction`, clamped to [0, PPM]."""
    if isinstance(value, Fraction):
        ppm = (value.numerator * PPM) // value.denominator
    else:
        if math.isnan(value):
            raise MetricError("score is NaN")
        ppm = int(np.floor(float(value) * PPM))
    return max(0, min(PPM, ppm))


def _as_int_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biu":
        raise MetricError(f"masks and labels must be integers or bools, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _dice_fraction(inter: int, pred_sum: int, true_sum: int) -> Fraction:
    if pred_sum + true_sum == 0:
        return Fraction(1)  # both empty: perfect agreement (module docstring)
    return Fraction(2 * inter, pred_sum + true_sum)


class DiceAccumulator:
    """Streams batches of (N, *spatial) class-index masks; `ppm()` gives the chosen Dice.

    Holds only integer counts (global mode) or one exact `Fraction` sum (per-image mode), so a
    test set of any size can be scored batch by batch with the same result as all at once.
    """

    def __init__(self, num_classes: int = 2, *, per_image: bool = False) -> None:
        if num_classes < 2:
            raise MetricError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.per_image = per_image
        self._inter = [0] * num_classes
        self._pred = [0] * num_classes
        self._true = [0] * num_classes
        self._image_sum = Fraction(0)
        self._images = 0

    def update(self, pred: Any, target: Any) -> None:
        p, t = _as_int_array(pred), _as_int_array(target)
        if p.shape != t.shape or p.ndim < 2:
            raise MetricError(f"prediction shape {p.shape} != target shape {t.shape} "
                              "(need (N, *spatial))")
        if t.size and (t.min() < 0 or t.max() >= self.num_classes):
            raise MetricError(f"target classes must lie in [0, {self.num_classes})")
        axes = tuple(range(1, p.ndim))
        classes = range(1, self.num_classes)
        per_class = []
        for c in classes:
            pc, tc = p == c, t == c
            per_class.append((
                np.count_nonzero(pc & tc, axis=axes),
                np.count_nonzero(pc, axis=axes),
                np.count_nonzero(tc, axis=axes),
            ))  # each (N,)
        if self.per_image:
            for i in range(p.shape[0]):
                scores = [_dice_fraction(int(a[i]), int(b[i]), int(c[i])) for a, b, c in per_class]
                self._image_sum += sum(scores, Fraction(0)) / len(scores)
        else:
            for c, (a, b, d) in zip(classes, per_class, strict=True):
                self._inter[c] += int(a.sum())
                self._pred[c] += int(b.sum())
                self._true[c] += int(d.sum())
        self._images += p.shape[0]

    def fraction(self) -> Fraction:
        if self._images == 0:
            raise MetricError("no images scored")
        if self.per_image:
            return self._image_sum / self._images
        scores = [_dice_fraction(self._inter[c], self._pred[c], self._true[c])
                  for c in range(1, self.num_classes)]
        return sum(scores, Fraction(0)) / len(scores)

    def ppm(self) -> int:
        return to_ppm(self.fraction())


class AccuracyAccumulator:
    """Streams batches of predicted and true labels (N,); `ppm()` = floor(correct/total · 1e6)."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, pred: Any, target: Any) -> None:
        p, t = _as_int_array(pred), _as_int_array(target)
        if p.shape != t.shape or p.ndim != 1:
            raise MetricError(f"labels must be (N,) and equal in shape, got {p.shape}, {t.shape}")
        self.correct += int(np.count_nonzero(p == t))
        self.total += int(p.shape[0])

    def fraction(self) -> Fraction:
        if self.total == 0:
            raise MetricError("no samples scored")
        return Fraction(self.correct, self.total)

    def ppm(self) -> int:
        return to_ppm(self.fraction())


def make_accumulator(metric: str, num_classes: int = 2) -> DiceAccumulator | AccuracyAccumulator:
    """The accumulator for a task spec's metric name (`dice`, `dice_per_image`, `accuracy`)."""
    if metric == "dice":
        return DiceAccumulator(num_classes)
    if metric == "dice_per_image":
        return DiceAccumulator(num_classes, per_image=True)
    if metric == "accuracy":
        return AccuracyAccumulator()
    raise MetricError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def dice_ppm(pred: Any, target: Any, num_classes: int = 2) -> int:
    """Global Dice of (N, *spatial) masks in ppm."""
    acc = DiceAccumulator(num_classes)
    acc.update(pred, target)
    return acc.ppm()


def dice_per_image_ppm(pred: Any, target: Any, num_classes: int = 2) -> int:
    """Mean per-image Dice of (N, *spatial) masks in ppm."""
    acc = DiceAccumulator(num_classes, per_image=True)
    acc.update(pred, target)
    return acc.ppm()


def accuracy_ppm(pred: Any, target: Any) -> int:
    """Classification accuracy of (N,) labels in ppm."""
    acc = AccuracyAccumulator()
    acc.update(pred, target)
    return acc.ppm()


def dice(pred: Any, target: Any, num_classes: int = 2) -> float:
    """Global Dice as a float, for humans and plots (never for consensus)."""
    acc = DiceAccumulator(num_classes)
    acc.update(pred, target)
    return float(acc.fraction())
