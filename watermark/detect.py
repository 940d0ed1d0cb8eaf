"""Detection: does a model carry a given miner's watermark? (paper §IV-C.2, docs/verification.md,
docs/watermark.md)

The extraction is one matrix product, y = sigmoid(X·w); bit i's confidence is y_i when the key's
bit is 1 and 1 − y_i when it is 0. The verdict is the paper's: every bit's confidence strictly
above the threshold (0.9999). Everything runs in float64 on CPU from the stored weights, so it
needs no miner code and no GPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from watermark.errors import WatermarkError
from watermark.keys import WatermarkKey
from watermark.layers import StateDict, layer_from, layer_from_file

DEFAULT_THRESHOLD = 0.9999


@dataclass(frozen=True, eq=False)
class Detection:
    """What a validator learns from projecting one layer with one key."""

    confidences: npt.NDArray[np.float64]
    """(T,) confidence of each bit, in [0, 1]; > 0.5 means the bit reads correctly."""
    bit_error_rate: float
    """Fraction of bits whose confidence is <= 0.5 (read as the wrong value)."""
    min_confidence: float
    """The weakest bit; the verdict hinges on it."""
    ok: bool
    """True iff every bit's confidence is strictly above ``threshold``."""
    threshold: float


def detect(
    model_or_state_dict: nn.Module | StateDict,
    key: WatermarkKey,
    threshold: float = DEFAULT_THRESHOLD,
) -> Detection:
    """Detect ``key``'s watermark in a module or a state dict (torch tensors or numpy arrays)."""
    _check_threshold(threshold)
    return detect_vector(layer_from(model_or_state_dict, key.layer), key, threshold)


def detect_file(
    path: str | os.PathLike[str], key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD
) -> Detection:
    """Detect ``key``'s watermark straight from a safetensors file, reading only its layer."""
    _check_threshold(threshold)
    return detect_vector(layer_from_file(path, key.layer), key, threshold)


def detect_vector(
    w: npt.NDArray[np.float64], key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD
) -> Detection:
    """Detect from an already extracted mean kernel w (m,); lets callers test many keys cheaply."""
    _check_threshold(threshold)
    margins = signed_margins(w, key)  # (T,)
    # sigmoid(z) = exp(-log(1 + exp(-z))), stable for large |z| of either sign.
    confidences = np.exp(-np.logaddexp(0.0, -margins))  # (T,)
    return Detection(
        confidences=confidences,
        bit_error_rate=float(np.count_nonzero(confidences <= 0.5)) / len(confidences),
        min_confidence=float(confidences.min()),
        ok=bool(np.all(confidences > threshold)),
        threshold=threshold,
    )


def signed_margins(w: npt.NDArray[Any], key: WatermarkKey) -> npt.NDArray[np.float64]:
    """(2b − 1)·X·w (T,): positive where a bit reads correctly; the logit of its confidence."""
    if w.ndim != 1:
        raise WatermarkError(f"mean kernel must be a vector, got shape {w.shape}")
    x = key.projection(w.shape[0])  # (T, m)
    signs = 2.0 * key.bits().astype(np.float64) - 1.0  # (T,)
    return signs * (x @ np.asarray(w, dtype=np.float64))  # (T,)


def threshold_margin(threshold: float = DEFAULT_THRESHOLD) -> float:
    """logit(threshold): the signed margin every bit must exceed (≈ 9.21 for 0.9999)."""
    _check_threshold(threshold)
    return math.log(threshold / (1.0 - threshold))


def _check_threshold(threshold: float) -> None:
    # Below 0.5 a wrong bit would pass; at 1.0 nothing can (confidences are <= 1).
    if not isinstance(threshold, (int, float)) or not 0.5 <= threshold < 1.0:
        raise WatermarkError(f"threshold must be in [0.5, 1), got {threshold!r}")
