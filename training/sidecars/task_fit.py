"""Will a task work? The publisher's checks before anything is encrypted, escrowed or sent.

Why here and not only on chain (issue 13): the chain checks a `TaskSpec` field by field, but
some mistakes only show when miners train: a classification file given to a U-Net, `cnn` scored
with Dice, or a model too small to carry the chain's watermark (no miner could embed its mark,
so no model can ever win and the reward only comes back less the fees). Catching them at
`dlbc task submit` costs one model build; catching them a round later costs a round.

The rules:

* the metric is one the chain accepts (`abci_app.dlbc.process.METRICS`) and scores the
  architecture's kind: `dice` for segmentation, `accuracy` for classification;
* the data are of the architecture's kind (masks for `unet2d`/`unet3d`/`fcn`, labels for `cnn`),
  with the channels, spatial sizes and classes the model takes;
* the model has a layer that can carry the chain's watermark scheme. When the publisher did not
  choose `base_width`, it is doubled from the registry default until one does (so every
  architecture has a default that works), at most `MAX_WIDTH_DOUBLINGS` times.

The hyper-parameters that come out are complete (registry defaults filled in) and go into the
spec as such, so a later change of the registry defaults cannot change what a spec means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from abci_app.dlbc.process import METRICS as CHAIN_METRICS
from training.sidecars.scheme import WatermarkScheme

if TYPE_CHECKING:
    from torch import nn

#: Which task kind each chain metric scores (training/metrics.py).
METRIC_KIND: dict[str, str] = {"dice": "segmentation", "accuracy": "classification"}
#: The architecture used when the publisher names none, per kind of data.
DEFAULT_ARCHITECTURE: dict[str, str] = {"segmentation": "unet2d", "classification": "cnn"}
MAX_WIDTH_DOUBLINGS = 4


class TaskMismatch(ValueError):
    """Architecture, metric, data and watermark scheme do not fit together; says which way."""


@dataclass(frozen=True, slots=True)
class FittedModel:
    """The complete hyper-parameters a task will be trained with, and the model they build."""

    hparams: dict[str, int]
    model: nn.Module
    grown_from: int | None = None
    """The default base_width, when it had to be widened to carry the watermark."""


def default_metric(architecture: str) -> str:
    """The chain metric that scores `architecture`'s kind (dice or accuracy)."""
    from training.models import get_architecture

    kind = get_architecture(architecture).kind
    return next(m for m, k in METRIC_KIND.items() if k == kind)


def check_metric(architecture: str, metric: str) -> None:
    """`metric` is one the chain accepts and it scores `architecture`'s kind of task."""
    from training.models import get_architecture

    entry = get_architecture(architecture)  # ValueError naming the known ones
    if metric not in CHAIN_METRICS:
        raise TaskMismatch(f"metric {metric!r} is not one the chain accepts; "
                           f"known: {', '.join(CHAIN_METRICS)}")
    if METRIC_KIND[metric] != entry.kind:
        raise TaskMismatch(
            f"metric {metric} scores {METRIC_KIND[metric]} but {architecture} is a "
            f"{entry.kind} architecture; use --metric {default_metric(architecture)}")


def check_kind(architecture: str, kind: str) -> None:
    """The data (`kind`: segmentation masks or classification labels) are what `architecture`
    predicts."""
    from training.models import get_architecture

    entry = get_architecture(architecture)
    if kind != entry.kind:
        what = "masks (segmentation)" if kind == "segmentation" else "labels (classification)"
        raise TaskMismatch(f"the data hold {what} but {architecture} is a {entry.kind} "
                           f"architecture; use --arch {DEFAULT_ARCHITECTURE[kind]}")


def fit_task(architecture: str, hparams: Mapping[str, Any], metric: str, *, kind: str,
             num_classes: int, sample_shape: Sequence[int],
             scheme: WatermarkScheme) -> FittedModel:
    """Check that the pieces of a task fit (module docstring); the complete hparams + model.

    Raises `TaskMismatch` (a ValueError) naming the mismatch and the fix, or ValueError for an
    unknown architecture or bad hyper-parameters (training/models.py)."""
    from training.models import build_model, check_input_shape, get_architecture, resolve_hparams
    from watermark import WatermarkError

    entry = get_architecture(architecture)
    check_metric(architecture, metric)
    # Verify the data are what the architecture predicts
    check_kind(architecture, kind)
    given = dict(hparams)
    given.setdefault("in_channels", int(sample_shape[0]) if sample_shape else 1)
    if entry.output_key not in given:  # as many outputs as the data have classes
        binary = entry.kind == "segmentation" and num_classes == 2
        given[entry.output_key] = 1 if binary else num_classes
    resolved = resolve_hparams(architecture, given)
    outputs = resolved[entry.output_key]
    if not (outputs == num_classes or (entry.kind == "segmentation" and outputs == 1
                                       and num_classes == 2)):
        raise TaskMismatch(f"{architecture} with {entry.output_key}={outputs} cannot predict the "
                           f"data's {num_classes} classes; set {entry.output_key} to "
                           f"{num_classes} or leave it out")
    check_input_shape(architecture, resolved, sample_shape)
    # Verify a miner can embed the chain's watermark; widen the default model until it can
    widen = "base_width" not in hparams
    start = resolved["base_width"]
    for doubling in range(MAX_WIDTH_DOUBLINGS + 1):
        model = build_model(architecture, resolved, seed=0)
        try:
            scheme.layer(model)
        except WatermarkError as exc:
            if not widen or doubling == MAX_WIDTH_DOUBLINGS:
                raise TaskMismatch(
                    f"{architecture} {dict(resolved)} is too small to carry the round's "
                    f"watermark ({exc}); use a larger base_width") from None
            resolved["base_width"] *= 2  # builder limits raise ValueError
            continue
        return FittedModel(resolved, model, start if resolved["base_width"] != start else None)
    raise TaskMismatch(f"{architecture}: no base_width up to {resolved['base_width']} carries "
                       "the round's watermark")
