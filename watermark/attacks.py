"""Attack harness: how much work does it take to strip or replace a miner's watermark?

The key is public (paper §IV-C.3: it derives from the round's block and the miner's address), so
the attacker knows X and the bits. The paper's claim (§V-C, Fig. 14) is that removing a watermark
costs many more epochs than embedding one (30 vs 3), so stealing a model does not pay. Three
attacks, all on a stolen, watermarked model:

- ``removal``   — the paper's attack: train on the task with the victim's regularizer negated
  (E0 − λ·E_R(victim)) while embedding the attacker's own key (+ λ·E_R(attacker)), since a stolen
  model is only worth something if it then passes as the attacker's; the negated term is dropped
  while the victim's watermark is not detected;
- ``overwrite`` — just embed the attacker's key on top (E0 + λ·E_R(attacker));
- ``projection`` — no training at all: with X public, the smallest weight edit that zeroes the
  victim's projections and sets the attacker's is a least-squares solve (``forge``). This is the
  honest lower bound on the attacker's cost and the reason the key alone cannot protect a model.

The harness is model-agnostic: the caller supplies ``train_steps(model, extra_loss, n_steps)``
(e.g. a thin wrapper over the trainer's ``extra_loss`` hook) and the harness checks the
watermarks after every step, so epochs are reported to the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from watermark.detect import (
    DEFAULT_THRESHOLD,
    Detection,
    detect,
    signed_margins,
    threshold_margin,
)
from watermark.embed import DEFAULT_TEMPERATURE, embed_loss
from watermark.errors import WatermarkError
from watermark.keys import WatermarkKey
from watermark.layers import layer_from

ExtraLoss = Callable[[nn.Module], torch.Tensor]
StepCallback = Callable[[int], None]
TrainSteps = Callable[[nn.Module, ExtraLoss, int, StepCallback], None]
"""train_steps(model, extra_loss, n_steps, after_step): run n_steps optimizer steps of the task
loss plus extra_loss(model), calling after_step(step_index) after each one."""

AttackMode = Literal["removal", "overwrite"]


@dataclass(frozen=True)
class AttackTrace:
    """Watermark state after every attack step (index 0 = the stolen model, before any step)."""

    mode: str
    steps_per_epoch: int
    victim_min_conf: tuple[float, ...]
    attacker_min_conf: tuple[float, ...]
    victim_min_margin: tuple[float, ...]
    attacker_min_margin: tuple[float, ...]
    step_victim_removed: int | None
    """First step after which the victim's watermark is no longer detected (None: never)."""
    step_attacker_detected: int | None
    """First step after which the attacker's watermark is detected (None: never)."""
    step_success: int | None
    """First step with both at once: a stolen model passing as the attacker's own."""

    def epochs(self, step: int | None) -> float | None:
        """A step index as (fractional) epochs; None stays None."""
        return None if step is None else step / self.steps_per_epoch


def min_margin(model: nn.Module, key: WatermarkKey) -> float:
    """The weakest bit's signed logit; the verdict needs it above logit(threshold)."""
    return float(signed_margins(layer_from(model, key.layer), key).min())


def run_attack(
    model: nn.Module,
    victim: WatermarkKey,
    attacker: WatermarkKey,
    train_steps: TrainSteps,
    *,
    mode: AttackMode,
    lam: float,
    max_steps: int,
    steps_per_epoch: int,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    stop_on_success: bool = True,
) -> AttackTrace:
    """Train ``model`` (in place) as the attacker and record when each watermark flips."""
    if mode not in ("removal", "overwrite"):
        raise WatermarkError(f"unknown attack mode {mode!r}")
    if victim.layer != attacker.layer:
        raise WatermarkError("victim and attacker keys must name the same layer")

    trace: dict[str, list[float]] = {k: [] for k in ("vc", "ac", "vm", "am")}
    marks: dict[str, int | None] = {"removed": None, "detected": None, "success": None}
    victim_present = [True]

    def extra(m: nn.Module) -> torch.Tensor:
        own = lam * embed_loss(m, attacker, temperature=temperature)
        if mode == "removal" and victim_present[0]:
            # The paper's negated regularizer, with the victim's (public) key and temperature.
            # It is unbounded below, so a sensible attacker stops subtracting once the victim's
            # watermark is gone; otherwise it keeps tearing at the shared coordinates and the
            # attacker's own bits never settle.
            return own - lam * embed_loss(m, victim, temperature=temperature)
        return own

    def record(step: int) -> None:
        dv: Detection = detect(model, victim, threshold)
        da: Detection = detect(model, attacker, threshold)
        trace["vc"].append(dv.min_confidence)
        trace["ac"].append(da.min_confidence)
        trace["vm"].append(min_margin(model, victim))
        trace["am"].append(min_margin(model, attacker))
        victim_present[0] = dv.ok
        if not dv.ok and marks["removed"] is None:
            marks["removed"] = step
        if da.ok and marks["detected"] is None:
            marks["detected"] = step
        if not dv.ok and da.ok and marks["success"] is None:
            marks["success"] = step

    class _Done(Exception):
        pass

    def after_step(i: int) -> None:
        record(i + 1)
        if stop_on_success and marks["success"] is not None:
            raise _Done

    record(0)
    if not (stop_on_success and marks["success"] is not None):
        try:
            train_steps(model, extra, max_steps, after_step)
        except _Done:
            pass
    return AttackTrace(
        mode=mode,
        steps_per_epoch=steps_per_epoch,
        victim_min_conf=tuple(trace["vc"]),
        attacker_min_conf=tuple(trace["ac"]),
        victim_min_margin=tuple(trace["vm"]),
        attacker_min_margin=tuple(trace["am"]),
        step_victim_removed=marks["removed"],
        step_attacker_detected=marks["detected"],
        step_success=marks["success"],
    )


def forge(
    model: nn.Module,
    victim: WatermarkKey,
    attacker: WatermarkKey | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    slack: float = 1.0,
) -> float:
    """Zero-epoch attack: edit the layer in place so the victim's bits read 0-margin and, if
    ``attacker`` is given, the attacker's bits read logit(threshold) + slack. Returns ||Δw||.

    Minimum-norm solution Δw = X⁺(t − X·w) of the stacked projections; adding Δw to every output
    channel's kernel shifts the mean kernel by exactly Δw and leaves the channel differences the
    task relies on untouched.
    """
    weight = dict(model.named_parameters()).get(victim.layer)
    if weight is None:
        raise WatermarkError(f"layer {victim.layer!r} is not a parameter of the model")
    w = layer_from(model, victim.layer)  # (m,)
    m = w.shape[0]
    rows = [victim.projection(m)]  # (T, m)
    targets = [np.zeros(victim.n_bits)]
    if attacker is not None:
        # The attacker's rows weigh 1000x: where the two keys read the same coordinate (direct,
        # diff) passing as the attacker matters; zeroing the victim needs only one bit anyway.
        rows.append(1000.0 * attacker.projection(m))
        signs = 2.0 * attacker.bits().astype(np.float64) - 1.0
        targets.append(1000.0 * signs * (threshold_margin(threshold) + slack))
    x = np.concatenate(rows)  # (T_total, m)
    t = np.concatenate(targets)  # (T_total,)
    delta, *_ = np.linalg.lstsq(x, t - x @ w, rcond=None)  # (m,)
    with torch.no_grad():
        d = torch.from_numpy(delta).to(weight.dtype).reshape(weight.shape[1:])
        weight.add_(d.unsqueeze(0))  # broadcast over output channels
    return float(np.linalg.norm(delta))
