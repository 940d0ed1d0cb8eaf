"""Forged training trajectories: what a thief hands the trajectory check (issue 15,
docs/proof_of_learning.md "Threat model").

The thief holds a model it did not train (a victim's revealed model, with the victim's public
watermark overwritten by its own: `steal`) and wants a reward for it. The check accepts a model
only with checkpoints 0..E whose epoch 0 is the thief's OWN anchored start
(`seeds.anchored_model`) and whose epochs replay, so every builder here starts from that anchor
and differs in how it fakes the way from there to the model it reveals:

* `interpolated`: every checkpoint 1..E-1 is a point between the anchor and the stolen weights;
* `finetuned_with_fabricated_history`: interpolated up to E-k, then k genuine epochs of
  fine-tuning (the trainer's own `train_epoch`, from the fabricated optimizer state);
* `different_start`: a genuine run that did not start at the thief's anchor, as is or with
  checkpoint 0 swapped for the anchor;
* `skipped_epoch`: a genuine run with one checkpoint dropped and the later ones renumbered.

Every forgery is internally consistent (one `ReplayConfig`, epochs 0..E in order, step counts
`epoch * ceil(N / batch_size)`, Adam state of the right shapes), so only the checks that look at
what training does can catch it. Why in the library: the tests of each class and
bench/proof_of_learning.py build the very same forgeries, and `train_trajectory` (an honest
miner's run without a chain, as training/sidecars/miner_train.py does it) makes their inputs.
The watermark term and sealing come in as callables, as for `verify.verify_trajectory`, so this
module needs nothing of the sidecars.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from training.artifacts import load_model, model_metadata, state_dict_bytes
from training.data import ArrayDataset
from training.proof.checkpoint import (
    ReplayConfig,
    TrainingCheckpoint,
    checkpoint_writer,
    load_checkpoint,
    save_checkpoint,
)
from training.proof.seeds import anchored_model, epoch_seed
from training.trainer import TrainConfig, seed_epoch, train, train_epoch
from watermark import WatermarkKey
from watermark.attacks import forge

Forgery = tuple[list[bytes], bytes]
"""(checkpoint files 0..E, revealed model file): what `verify.verify_trajectory` takes."""
ExtraLoss = Callable[[nn.Module, ReplayConfig], Tensor]
Seal = Callable[[nn.Module], None]
Schedule = Literal["linear", "front_loaded"]
AdamFake = Literal["zeros", "consistent"]

_FRONT_LOADED_RATIO = 0.85
"""`front_loaded` covers a fraction (1 - r^e) / (1 - r^E) of the way after e epochs: big
updates first, like a real run's, so the update norms do not give the forgery away."""
_FAKE_GRADIENT_SCALE = 1e-3
"""Gradient size `consistent` pretends to: the moments then say the steps were Adam's."""


@dataclass
class Run:
    """An honest miner's run: what it publishes (checkpoints, model) and what it cost."""

    checkpoints: list[bytes]
    final_model: bytes
    train_seconds: float
    """Wall time of `trainer.train` (checkpoints included), the miner's training compute."""

    @property
    def forgery(self) -> Forgery:
        """The run as `verify_trajectory`'s inputs (a genuine trajectory, not a forgery)."""
        return list(self.checkpoints), self.final_model


# --------------------------------------------------------------------------------------------
# Honest runs and the stolen model


def steps_per_epoch(samples: int, config: ReplayConfig) -> int:
    """Optimizer steps of one epoch: the last batch may be smaller (training/trainer.py)."""
    return math.ceil(samples / config.batch_size)


def train_trajectory(start: nn.Module, train_data: ArrayDataset, config: ReplayConfig, *,
                     epochs: int, extra_loss: ExtraLoss | None, seal: Seal | None,
                     directory: Path) -> Run:
    """Train `start` in place for `epochs` epochs as a miner does, under `config`'s miner.

    The real trainer with the miner's replayable epoch seeds and checkpoint writer (epochs
    0..E into `directory`), then `seal` on the last model: the published checkpoints and the
    revealed model of an honest run when `start` is `anchored_model(...)` of `config.miner`,
    and of a `different_start` forgery otherwise.
    """
    cfg = TrainConfig(
        budget_seconds=1e9, max_epochs=epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, device="cpu",
        bf16=config.autocast == "bf16", loss=_loss_name(config.loss), checkpoint_dir=directory,
        checkpoint_writer=checkpoint_writer(config), progress=False,
        epoch_seeds=lambda e: epoch_seed(config.round_seed, config.miner, e),
    )
    extra = None if extra_loss is None else (lambda m: extra_loss(m, config))
    result = train(start, train_data, cfg, extra_loss=extra)
    checkpoints = [c.path.read_bytes() for c in result.checkpoints]
    return Run(checkpoints, _reveal(start, config, seal), result.wall_seconds)


def steal(victim_model: bytes, config: ReplayConfig, *, victim_key: WatermarkKey,
          thief_key: WatermarkKey, threshold: float) -> nn.Module:
    """The victim's revealed model with its watermark replaced by the thief's.

    The zero-epoch least-squares edit of watermark/attacks.py `forge`: the key is public, so
    this costs the thief nothing (bench/watermark.py) and the stolen model passes the
    watermark check as the thief's. What is left to fake is the trajectory.
    """
    model = load_model(victim_model, config.arch, config.hparams)
    forge(model, victim_key, thief_key, threshold=threshold)
    return model


# --------------------------------------------------------------------------------------------
# The four forgery classes


def interpolated(stolen: nn.Module, config: ReplayConfig, *, samples: int, epochs: int,
                 seal: Seal | None, schedule: Schedule = "linear",
                 adam: AdamFake = "zeros") -> Forgery:
    """Checkpoints 0..E from the thief's anchor to `stolen`, the ones between interpolated.

    `samples` is the training set's size (step counts). The Adam state is either zeros or
    `consistent`: moments that make each epoch's fabricated move look like Adam steps.
    """
    anchor = _weights(anchored_model(config.arch, config.hparams, config.round_seed,
                                     config.miner))
    path = _path(anchor, _weights(stolen), epochs, schedule)
    return _fabricated(path, config, samples, adam), _reveal(stolen, config, seal)


def finetuned_with_fabricated_history(
    stolen: nn.Module, train_data: ArrayDataset, config: ReplayConfig, *, epochs: int,
    genuine_epochs: int, extra_loss: ExtraLoss | None, seal: Seal | None,
    schedule: Schedule = "front_loaded", adam: AdamFake = "consistent",
) -> Forgery:
    """The thief fine-tunes `stolen` for its last `genuine_epochs` epochs, for real.

    Checkpoints 0..E-k are `interpolated` from the anchor to `stolen`; from checkpoint E-k the
    thief runs k real epochs with its own epoch seeds and watermark term through the trainer's
    `train_epoch`, starting from the fabricated optimizer state, so each of the last k
    transitions replays exactly: only a replay of a fabricated epoch can tell.
    """
    if not 1 <= genuine_epochs < epochs:
        raise ValueError(f"genuine_epochs must be in [1, {epochs - 1}], got {genuine_epochs}")
    fabricated_epochs = epochs - genuine_epochs
    anchor = _weights(anchored_model(config.arch, config.hparams, config.round_seed,
                                     config.miner))
    path = _path(anchor, _weights(stolen), fabricated_epochs, schedule)
    checkpoints = _fabricated(path, config, len(train_data), adam)
    state = load_checkpoint(checkpoints[-1])
    model = state.model()
    optimizer = state.optimizer(model)
    per_epoch = steps_per_epoch(len(train_data), config)
    for epoch in range(fabricated_epochs + 1, epochs + 1):
        _genuine_epoch(model, optimizer, train_data, config, epoch, extra_loss)
        checkpoints.append(_encode(model, optimizer, epoch, epoch * per_epoch, config))
    return checkpoints, _reveal(model, config, seal)


def different_start(run: Run, config: ReplayConfig, *, seal: Seal | None,
                    swap_anchor: bool) -> Forgery:
    """A genuine run that started elsewhere, passed off as `config.miner`'s.

    `run` may be the thief's own training from another initial point (a pretrained or a
    victim's model: its checkpoints already carry `config`) or a victim's whole trajectory,
    relabelled here: every checkpoint is rewritten under `config`, and the revealed model is
    the last checkpoint's sealed with `seal` (the thief's), so the final link holds. With
    `swap_anchor` checkpoint 0 is replaced by the thief's anchored start, so epoch 0 passes
    and, for the thief's own run, only the transition 0 -> 1 is false.
    """
    states = [load_checkpoint(data) for data in run.checkpoints]
    checkpoints = [_relabel(state, config) for state in states]
    if swap_anchor:
        anchor = anchored_model(config.arch, config.hparams, config.round_seed, config.miner)
        checkpoints[0] = _encode(anchor, _fresh_optimizer(anchor, config), 0, 0, config)
    return checkpoints, _reveal(states[-1].model(), config, seal)


def skipped_epoch(run: Run, *, skip: int) -> Forgery:
    """`run` with checkpoint `skip` (1..E) dropped and the later ones renumbered one down.

    Epoch, step and Adam step counts are rewritten, so the trajectory looks complete with E-1
    epochs: the miner claims a run one epoch shorter than the work it shows. Dropping E leaves
    the revealed model one epoch past the last checkpoint.
    """
    states = [load_checkpoint(data) for data in run.checkpoints]
    last = len(states) - 1
    if not 1 <= skip <= last:
        raise ValueError(f"skip must be in [1, {last}], got {skip}")
    per_epoch = states[1].step
    out = list(run.checkpoints[:skip])
    for state in states[skip + 1 :]:
        model = state.model()
        optimizer = state.optimizer(model)
        epoch = state.epoch - 1
        _set_adam_step(optimizer, state.adam_step - per_epoch)
        out.append(_encode(model, optimizer, epoch, epoch * per_epoch, state.config))
    return out, run.final_model


# --------------------------------------------------------------------------------------------
# Fabrication


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: p.detach().clone().float() for k, p in model.named_parameters()}


def _path(start: Mapping[str, Tensor], end: Mapping[str, Tensor], epochs: int,
          schedule: Schedule) -> list[dict[str, Tensor]]:
    """Weights of epochs 0..`epochs` on the straight line from `start` to `end`."""
    if epochs < 1:
        raise ValueError(f"a trajectory needs >= 1 epoch, got {epochs}")
    r = _FRONT_LOADED_RATIO
    fractions = [e / epochs if schedule == "linear" else (1 - r**e) / (1 - r**epochs)
                 for e in range(epochs + 1)]
    path = [{k: start[k] + t * (end[k] - start[k]) for k in start} for t in fractions[:-1]]
    return [*path, {k: v.clone() for k, v in end.items()}]


def _fabricated(path: Sequence[Mapping[str, Tensor]], config: ReplayConfig, samples: int,
                adam: AdamFake) -> list[bytes]:
    """Checkpoint files for the weights `path[e]` of epochs e = 0..len-1, Adam state faked."""
    per_epoch = steps_per_epoch(samples, config)
    model = anchored_model(config.arch, config.hparams, config.round_seed, config.miner)
    params = dict(model.named_parameters())
    out = [_encode(model, _fresh_optimizer(model, config), 0, 0, config)]
    for epoch in range(1, len(path)):
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(path[epoch][name])
        optimizer = _fresh_optimizer(model, config)
        for name, p in params.items():
            m, v = torch.zeros_like(p), torch.zeros_like(p)
            if adam == "consistent":
                # Per-step move u = Δ/steps; AdamW moves by about -lr·m/√v, so m = -(u/lr)·g
                # with v = max(g², m²) says "gradients of size g pointing along the path" and
                # keeps |m| <= √v, inside the bound every real AdamW state obeys.
                move = (path[epoch][name] - path[epoch - 1][name]) / per_epoch
                g = _FAKE_GRADIENT_SCALE
                m = -(move / config.learning_rate) * g
                v = torch.maximum(torch.full_like(p, g * g), m.square())
            optimizer.state[p] = {"step": torch.tensor(float(epoch * per_epoch)),
                                  "exp_avg": m, "exp_avg_sq": v}
        out.append(_encode(model, optimizer, epoch, epoch * per_epoch, config))
    return out


def _genuine_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: ArrayDataset,
                   config: ReplayConfig, epoch: int, extra_loss: ExtraLoss | None) -> None:
    """One real epoch as the trainer runs it under `TrainConfig.epoch_seeds` (trainer.py)."""
    order = seed_epoch(len(data), epoch_seed(config.round_seed, config.miner, epoch))
    extra = None if extra_loss is None else (lambda m: extra_loss(m, config))
    train_epoch(model, optimizer, torch.from_numpy(data.inputs), torch.from_numpy(data.targets),
                order, batch_size=config.batch_size, kind=data.kind,
                loss=_loss_name(config.loss), extra_loss=extra, device=torch.device("cpu"),
                bf16=False)


def _fresh_optimizer(model: nn.Module, config: ReplayConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                             weight_decay=config.weight_decay)


def _set_adam_step(optimizer: torch.optim.Optimizer, step: int) -> None:
    for state in optimizer.state.values():
        state["step"] = torch.tensor(float(step))


def _relabel(state: TrainingCheckpoint, config: ReplayConfig) -> bytes:
    model = state.model()
    return _encode(model, state.optimizer(model), state.epoch, state.step, config)


def _encode(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int,
            config: ReplayConfig) -> bytes:
    """The checkpoint file `save_checkpoint` writes for this state, as bytes."""
    with _scratch() as directory:
        path = directory / f"epoch-{epoch:04d}.safetensors"
        save_checkpoint(path, model, optimizer, epoch=epoch, step=step, config=config)
        return path.read_bytes()


def _reveal(model: nn.Module, config: ReplayConfig, seal: Seal | None) -> bytes:
    """The revealed model file: `seal` on a copy of `model`, as the miner seals after training."""
    final = copy.deepcopy(model).to("cpu")
    if seal is not None:
        seal(final)
    return state_dict_bytes(final, model_metadata(config.arch, config.hparams))


def _loss_name(name: str) -> Literal["auto", "bce_dice", "bce", "cross_entropy"]:
    if name not in ("auto", "bce_dice", "bce", "cross_entropy"):
        raise ValueError(f"unknown loss {name!r}")
    return name  # type: ignore[return-value]


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dlbc-forgery-") as name:
        yield Path(name)


__all__ = [
    "AdamFake", "ExtraLoss", "Forgery", "Run", "Schedule", "Seal", "different_start",
    "finetuned_with_fabricated_history", "interpolated", "skipped_epoch", "steal",
    "steps_per_epoch", "train_trajectory",
]
