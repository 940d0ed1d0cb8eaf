"""The validator's proof-of-learning check of one revealed model's training trajectory.

docs/proof_of_learning.md "Spot-check", after Jia et al., "Proof-of-Learning" (IEEE S&P 2021):
a revealed model counts only if its own miner's run demonstrably produced it. `verify_trajectory`
runs the checks cheapest first and stops at the first failure:

1. every checkpoint loads (training.proof.checkpoint); epochs are 0..E in order, E >= 1; every
   checkpoint carries the same replay config, naming this task's architecture, this round and
   this miner; each holds epoch * ceil(N / batch_size) steps; every AdamW state is one AdamW can
   reach (distance.adam_state_excess);
2. epoch 0 is the anchored start: exactly `seeds.anchored_model`, zero AdamW state, step 0;
3. the final link: the revealed model is the watermark-sealed model of checkpoint E;
4. the epochs `select.choose_epochs` picks from the update norms and the post-reveal seed are
   replayed from checkpoint i-1 (training.proof.replay); weights and both AdamW moments must
   land within the threshold of checkpoint i's, each distance normalised by how far that epoch
   moved it.

Loading all E+1 checkpoints costs memory traffic only (norms come from the weights; each
checkpoint is dropped once its successor's norm is taken, the last one kept for the final link);
only the q selected epochs cost compute, which keeps the check a small share of the training.
Bad input never raises: every problem is `ok=False` with a reason a miner can act on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from training.artifacts import load_model
from training.data import ArrayDataset
from training.models import HParams, resolve_hparams
from training.proof.checkpoint import BadCheckpoint, TrainingCheckpoint, load_checkpoint
from training.proof.config import ReplayConfig
from training.proof.distance import adam_state_excess, is_zero_state, l2_distance, normalised
from training.proof.replay import ExtraLoss, ReplayedState, TimeUp, replay_epoch
from training.proof.seeds import anchored_model
from training.proof.select import choose_epochs
from training.proof.thresholds import threshold_for

__all__ = ["TrajectoryPolicy", "TrajectoryReport", "verify_trajectory"]

_REASON_CHARS = 500


@dataclass(frozen=True)
class TrajectoryPolicy:
    """How many epochs to replay, chosen how, and the acceptance threshold."""

    q_random: int = 1
    """Epochs drawn at random from the post-reveal seed."""
    q_largest: int = 1
    """Epochs with the largest update norm."""
    q_anomalous: int = 2
    """Epochs whose update norm stands out most from its neighbours'."""
    threshold: float | None = None
    """Largest normalised distance accepted; None: thresholds.threshold_for(arch, autocast)."""


@dataclass
class TrajectoryReport:
    ok: bool
    reason: str
    """"" when ok; else why (the first failure)."""
    checked: list[tuple[int, float]] = field(default_factory=list)
    """(epoch replayed, normalised distance: the largest of weights', exp_avg's, exp_avg_sq's)."""
    epochs: int = 0
    """E (checkpoints 0..E)."""
    replay_seconds: float = 0.0
    """Time spent replaying epochs."""
    seconds: float = 0.0
    """The whole check."""
    timed_out: bool = False
    """Not ok because the deadline came first: no finding about the trajectory (a verifier
    gives no verdict rather than a refutation)."""


class _Rejected(Exception):
    """The trajectory fails a check; the message is the report's reason."""


@dataclass(frozen=True)
class _Claim:
    """What the chain says the trajectory must be (not what its files say)."""

    arch: str
    hparams: dict[str, int]
    round_seed: bytes
    miner: bytes
    samples: int
    """N, the training set's size."""


def verify_trajectory(checkpoints: Sequence[bytes], final_model: bytes, train_data: ArrayDataset,
                      *, arch: str, hparams: HParams, round_seed: bytes, miner: bytes,
                      extra_loss: ExtraLoss | None,
                      seal: Callable[[nn.Module], None] | None,
                      selection_seed: bytes, policy: TrajectoryPolicy = TrajectoryPolicy(),
                      device: str = "cpu", deadline: float | None = None) -> TrajectoryReport:
    """Check that `final_model` is what the run recorded in `checkpoints` (epoch i's bytes at
    index i, digests already checked by the caller) produced, replaying a few epochs.

    `extra_loss(model, config)` is the watermark term the miner trained with, `seal(model)`
    re-runs its watermark sealing in place; `selection_seed` must not have existed before the
    reveal. `deadline` is a time.monotonic() value. Never raises on bad input.
    """
    start = time.monotonic()
    report = TrajectoryReport(ok=False, reason="", epochs=max(len(checkpoints) - 1, 0))
    try:
        _verify(report, checkpoints, final_model, train_data, arch=arch, hparams=hparams,
                round_seed=round_seed, miner=miner, extra_loss=extra_loss, seal=seal,
                selection_seed=selection_seed, policy=policy, device=device, deadline=deadline)
        report.ok = True
    except _Rejected as exc:
        report.reason = str(exc)[:_REASON_CHARS]
    except TimeUp:
        report.reason = _time_up(report)
        report.timed_out = True
    except Exception as exc:  # noqa: BLE001 - hostile input tripping torch: a verdict, no crash
        report.reason = f"check failed: {type(exc).__name__}: {exc}"[:_REASON_CHARS]
    report.seconds = time.monotonic() - start
    return report


def _verify(report: TrajectoryReport, checkpoints: Sequence[bytes], final_model: bytes,
            train_data: ArrayDataset, *, arch: str, hparams: HParams, round_seed: bytes,
            miner: bytes, extra_loss: ExtraLoss | None, seal: Callable[[nn.Module], None] | None,
            selection_seed: bytes, policy: TrajectoryPolicy, device: str,
            deadline: float | None) -> None:
    # Verify the trajectory has a start and at least one epoch
    if len(checkpoints) < 2:
        raise _Rejected(f"a trajectory needs checkpoints of epochs 0..E with E >= 1, got "
                        f"{len(checkpoints)} checkpoint(s)")
    try:
        resolved = resolve_hparams(arch, hparams)
    except ValueError as exc:
        raise _Rejected(f"task names an impossible model: {exc}") from None
    claim = _Claim(arch, resolved, round_seed, miner, len(train_data))
    last, norms = _walk(checkpoints, claim, deadline)
    threshold = policy.threshold
    if threshold is None:
        try:
            threshold = threshold_for(arch, last.config.autocast)
        except ValueError as exc:
            raise _Rejected(str(exc)) from None
    _check_final_link(final_model, last, claim, seal, norms[-1], threshold)
    del last
    _check_replays(report, checkpoints, norms, train_data, extra_loss,
                   choose_epochs(norms, policy, selection_seed), threshold, device, deadline)


def _load(index: int, data: bytes) -> TrainingCheckpoint:
    try:
        return load_checkpoint(data)
    except BadCheckpoint as exc:
        raise _Rejected(f"checkpoint {index}: {exc}") from None


def _walk(checkpoints: Sequence[bytes], claim: _Claim, deadline: float | None,
          ) -> tuple[TrainingCheckpoint, list[float]]:
    """Load every checkpoint once, in order, for the structural checks, the anchored start, the
    AdamW invariant and the update norms. Returns (last checkpoint, norms); holds two
    checkpoints at a time."""
    prev: TrainingCheckpoint | None = None
    norms: list[float] = []
    for i, data in enumerate(checkpoints):
        _check_time(deadline)
        ck = _load(i, data)
        # Verify epochs run 0..E in order, under this task's, round's and miner's config
        if ck.epoch != i:
            raise _Rejected(f"checkpoint {i} holds epoch {ck.epoch}: checkpoints must be epochs "
                            f"0..{len(checkpoints) - 1} in order")
        if prev is None:
            _check_config(ck.config, claim)
        elif ck.config != prev.config:
            raise _Rejected(f"checkpoint {i}: its replay config differs from checkpoint 0's")
        # Verify every epoch took ceil(N / batch_size) optimizer steps
        want = i * math.ceil(claim.samples / ck.config.batch_size)
        if ck.step != want or ck.adam_step != want:
            raise _Rejected(f"checkpoint {i}: step {ck.step} (AdamW step {ck.adam_step}), "
                            f"expected {want} for epoch {i}")
        # Verify the AdamW state is one training can produce
        excess = adam_state_excess(ck.exp_avg, ck.exp_avg_sq)
        if excess > 1.0:
            raise _Rejected(f"checkpoint {i}: AdamW state no training run can produce "
                            f"(|exp_avg| {excess:.3g}x its bound by sqrt(exp_avg_sq))")
        if prev is None:
            _check_anchor(ck, claim)
        else:
            norms.append(l2_distance(ck.weights, prev.weights))
        prev = ck
    if prev is None or not all(math.isfinite(n) for n in norms):
        raise _Rejected("an epoch's update norm is not finite")
    return prev, norms


def _check_config(config: ReplayConfig, claim: _Claim) -> None:
    # Verify the files describe this task, this round and this miner
    if config.arch != claim.arch:
        raise _Rejected(f"checkpoints are of architecture {config.arch!r:.40}, the task names "
                        f"{claim.arch!r}")
    if resolve_hparams(config.arch, config.hparams) != claim.hparams:
        raise _Rejected("checkpoints' hyper-parameters differ from the task's")
    if config.round_seed != claim.round_seed:
        raise _Rejected("checkpoints were made for another round seed")
    if config.miner != claim.miner:
        raise _Rejected("checkpoints name another miner's address")


def _check_anchor(first: TrainingCheckpoint, claim: _Claim) -> None:
    # Verify epoch 0 is the anchored start
    anchor = anchored_model(claim.arch, claim.hparams, claim.round_seed, claim.miner)
    if not all(bool(torch.equal(first.weights[name], p.detach()))
               for name, p in anchor.named_parameters()):
        raise _Rejected("epoch 0 is not the anchored start: its weights are not the "
                        "architecture's initialisation from (round seed, miner address)")
    if not is_zero_state(first.exp_avg) or not is_zero_state(first.exp_avg_sq):
        raise _Rejected("epoch 0 is not the anchored start: it carries optimizer state")


def _check_final_link(final_model: bytes, last: TrainingCheckpoint, claim: _Claim,
                      seal: Callable[[nn.Module], None] | None, last_update: float,
                      threshold: float) -> None:
    # Verify the revealed model is the (sealed) model of the last checkpoint
    try:
        final = load_model(final_model, claim.arch, claim.hparams)
    except ValueError as exc:
        raise _Rejected(f"revealed model does not load: {exc}") from None
    model = last.model()
    if seal is not None:
        seal(model)
    distance = normalised(l2_distance(final.state_dict(), model.state_dict()), last_update)
    if distance > threshold:
        raise _Rejected(f"revealed model is not the sealed model of checkpoint {last.epoch}: "
                        f"normalised distance {distance:.3g} > {threshold:.3g}")


def _check_replays(report: TrajectoryReport, checkpoints: Sequence[bytes], norms: list[float],
                   train_data: ArrayDataset, extra_loss: ExtraLoss | None, epochs: list[int],
                   threshold: float, device: str, deadline: float | None) -> None:
    # Verify each chosen epoch replays from checkpoint i-1 to checkpoint i
    cached: tuple[int, TrainingCheckpoint] | None = None
    for epoch in epochs:
        _check_time(deadline)
        begin = cached[1] if cached is not None and cached[0] == epoch - 1 else \
            load_checkpoint(checkpoints[epoch - 1])
        end = load_checkpoint(checkpoints[epoch])
        cached = (epoch, end)
        t0 = time.monotonic()
        try:
            state = replay_epoch(begin, train_data, extra_loss=extra_loss, device=device,
                                 deadline=deadline)
        finally:
            report.replay_seconds += time.monotonic() - t0
        distance = _replay_distance(state, begin, end, norms[epoch - 1])
        report.checked.append((epoch, distance))
        if distance > threshold:
            raise _Rejected(f"epoch {epoch} does not replay: from checkpoint {epoch - 1} it lands "
                            f"at normalised distance {distance:.3g} from checkpoint {epoch} "
                            f"(threshold {threshold:.3g})")


def _replay_distance(state: ReplayedState, begin: TrainingCheckpoint, end: TrainingCheckpoint,
                     update: float) -> float:
    """The largest of the weights' and both moments' replay errors, each relative to how far the
    epoch moved it: a replay must reproduce the optimizer state the next epoch starts from."""
    return max(
        normalised(l2_distance(state.weights, end.weights), update),
        normalised(l2_distance(state.exp_avg, end.exp_avg),
                   l2_distance(end.exp_avg, begin.exp_avg)),
        normalised(l2_distance(state.exp_avg_sq, end.exp_avg_sq),
                   l2_distance(end.exp_avg_sq, begin.exp_avg_sq)),
    )


def _check_time(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeUp


def _time_up(report: TrajectoryReport) -> str:
    done = ", ".join(str(e) for e, _ in report.checked) or "none"
    return (f"time is up: the trajectory check passed its deadline before it finished "
            f"(epochs replayed: {done})")
