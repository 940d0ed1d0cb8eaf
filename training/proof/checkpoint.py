"""Training checkpoints a validator can replay from: weights, AdamW state and step, in safetensors.

docs/proof_of_learning.md "Replayable steps". A plain model file is not enough to replay an
epoch: AdamW's moment estimates and step count decide every update, so each checkpoint holds

* `model.<param>` (float32): the weights after the epoch;
* `adam.<param>.exp_avg`, `adam.<param>.exp_avg_sq` (float32): AdamW's first and second moments
  (zeros before the first step);
* `adam.step` (int64 scalar): optimizer steps so far;

and, as metadata, `training.artifacts.model_metadata` plus `dlbc.epoch`, `dlbc.step` and
`dlbc.pol` (the `ReplayConfig` as sorted JSON). Registry models have no buffers, so this is the
whole training state; the data order and RNG come from `seeds.epoch_seed`, not from the file.

A checkpoint comes from a stranger: `load_checkpoint` checks the header (names and shapes
against the architecture the file's own config names, every dtype) before a tensor is
allocated, then every value (finite, second moments >= 0), and raises `BadCheckpoint` saying
what was wrong. The manifest that lists a run's checkpoints is in `training.proof.manifest`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor, nn

from training.artifact_errors import NotSafetensors
from training.artifacts import expected_state_shapes, model_metadata, save_model
from training.models import build_model
from training.proof.config import ReplayConfig
from training.proof.manifest import Manifest, ManifestEntry, read_manifest, write_manifest
from training.safetensors_header import check_safetensors_header, check_safetensors_layout
from training.trainer import CheckpointWriter

__all__ = [
    "BadCheckpoint", "Manifest", "ManifestEntry", "ReplayConfig", "TrainingCheckpoint",
    "checkpoint_writer", "load_checkpoint", "read_manifest", "save_checkpoint", "write_manifest",
]

_MAX_COUNT = 1 << 53  # epochs and steps: integers a JSON reader anywhere keeps exact
_ADAM_STEP = "adam.step"


class BadCheckpoint(ValueError):
    """A training checkpoint that cannot be replayed from; the message says why."""


@dataclass
class TrainingCheckpoint:
    """One parsed checkpoint: the training state after `epoch` epochs (`step` optimizer steps)."""

    epoch: int
    step: int
    config: ReplayConfig
    weights: dict[str, Tensor]
    """Parameter name -> float32 weights (CPU)."""
    exp_avg: dict[str, Tensor]
    exp_avg_sq: dict[str, Tensor]
    adam_step: int

    def model(self) -> nn.Module:
        """The registry model (CPU) holding these weights (copies: training it leaves `weights`
        as they are)."""
        model = build_model(self.config.arch, self.config.hparams, seed=0)  # global RNG untouched
        model.load_state_dict(self.weights, strict=True)
        return model

    def optimizer(self, model: nn.Module) -> torch.optim.AdamW:
        """AdamW over `model` exactly as the miner's was after this checkpoint's last step
        (`model` must be `self.model()`, possibly moved to another device)."""
        opt = torch.optim.AdamW(model.parameters(), lr=self.config.learning_rate,
                                weight_decay=self.config.weight_decay)
        if self.adam_step == 0:
            return opt  # before the first step AdamW holds no state at all
        state = opt.state_dict()
        names = [name for name, _ in model.named_parameters()]
        # AdamW keeps `step` as a float32 CPU scalar (torch.optim.adamw, non-capturable);
        # load_state_dict moves the moments to each parameter's device.
        state["state"] = {
            i: {"step": torch.tensor(float(self.adam_step), dtype=torch.float32),
                "exp_avg": self.exp_avg[name].clone(), "exp_avg_sq": self.exp_avg_sq[name].clone()}
            for i, name in enumerate(names)
        }
        opt.load_state_dict(state)
        return opt


# --------------------------------------------------------------------------------------------
# Writing


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                    epoch: int, step: int, config: ReplayConfig) -> str:
    """Write the training state after `epoch` epochs as one safetensors file, atomically, and
    return its SHA-256 (hex). ValueError if the state is not what a replay can rebuild (buffers,
    non-float32 parameters, parameters at different optimizer steps, a learning rate other than
    the config's)."""
    if next(model.buffers(), None) is not None:
        raise ValueError("model has buffers: a checkpoint of parameters and AdamW state would "
                         "not capture its whole state")
    groups = optimizer.param_groups
    if len(groups) != 1 or groups[0]["lr"] != config.learning_rate \
            or groups[0]["weight_decay"] != config.weight_decay:
        raise ValueError("optimizer does not match the pol config (one AdamW group with its "
                         "learning rate and weight decay)")
    tensors: dict[str, Tensor] = {}
    steps: set[int] = set()
    for name, param in model.named_parameters():
        if param.dtype != torch.float32:
            raise ValueError(f"parameter {name} is {param.dtype}, not float32")
        tensors[f"model.{name}"] = param.detach()
        state = optimizer.state.get(param)
        if state:
            tensors[f"adam.{name}.exp_avg"] = state["exp_avg"].detach()
            tensors[f"adam.{name}.exp_avg_sq"] = state["exp_avg_sq"].detach()
            steps.add(int(state["step"]))
        else:
            tensors[f"adam.{name}.exp_avg"] = torch.zeros_like(param, device="cpu")
            tensors[f"adam.{name}.exp_avg_sq"] = torch.zeros_like(param, device="cpu")
            steps.add(0)
    if len(steps) != 1:
        raise ValueError(f"parameters are at different optimizer steps {sorted(steps)[:5]}")
    tensors[_ADAM_STEP] = torch.tensor(steps.pop(), dtype=torch.int64)
    metadata = {**model_metadata(config.arch, config.hparams), "dlbc.epoch": str(epoch),
                "dlbc.step": str(step), "dlbc.pol": json.dumps(config.to_json(), sort_keys=True)}
    # No fsync per epoch (as the trainer's own checkpoints): a crash means retraining anyway.
    return save_model(tensors, path, metadata=metadata, durable=False)


def checkpoint_writer(config: ReplayConfig) -> CheckpointWriter:
    """The `TrainConfig.checkpoint_writer` that saves replayable checkpoints under `config`."""

    def write(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int,
              path: Path) -> str:
        return save_checkpoint(path, model, optimizer, epoch=epoch, step=step, config=config)

    return write


# --------------------------------------------------------------------------------------------
# Reading


def load_checkpoint(data: bytes) -> TrainingCheckpoint:
    """Parse and check one checkpoint's bytes; raise BadCheckpoint with the reason.

    The header names its architecture (in `dlbc.pol`); names, shapes and dtypes are held
    against that architecture's parameters before any tensor is allocated.
    """
    try:
        header = check_safetensors_header(data)
    except NotSafetensors as exc:
        raise BadCheckpoint(str(exc)) from None
    meta = header.get("__metadata__")
    if not isinstance(meta, dict):
        raise BadCheckpoint("checkpoint has no metadata (dlbc.pol, dlbc.epoch, dlbc.step)")
    config = _config(meta)
    epoch, step = _count(meta, "dlbc.epoch"), _count(meta, "dlbc.step")
    if meta.get("dlbc.arch") != config.arch or meta.get("dlbc.hparams") != \
            model_metadata(config.arch, config.hparams)["dlbc.hparams"]:
        raise BadCheckpoint("dlbc.arch / dlbc.hparams metadata disagree with dlbc.pol")
    try:
        shapes = dict(_parameter_shapes(config.arch, tuple(sorted(config.hparams.items()))))
    except ValueError as exc:
        raise BadCheckpoint(f"pol config names an impossible model: {exc}") from None
    expected: dict[str, tuple[int, ...]] = {_ADAM_STEP: ()}
    for name, shape in shapes.items():
        expected.update({f"model.{name}": shape, f"adam.{name}.exp_avg": shape,
                         f"adam.{name}.exp_avg_sq": shape})
    try:
        layout = check_safetensors_layout(data, expected)
    except NotSafetensors as exc:
        raise BadCheckpoint(str(exc)) from None
    for name, (dtype, _shape) in layout.items():
        want = "I64" if name == _ADAM_STEP else "F32"
        if dtype != want:
            raise BadCheckpoint(f"tensor {name}: dtype {dtype}, expected {want}")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise BadCheckpoint(f"invalid safetensors file: {exc}") from None
    adam_step = int(tensors.pop(_ADAM_STEP))
    if not 0 <= adam_step <= _MAX_COUNT:
        raise BadCheckpoint(f"adam.step {adam_step} out of range")
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise BadCheckpoint(f"tensor {name}: contains NaN or infinity")
    out = TrainingCheckpoint(epoch, step, config, {}, {}, {}, adam_step)
    for name in shapes:
        out.weights[name] = tensors[f"model.{name}"]
        out.exp_avg[name] = tensors[f"adam.{name}.exp_avg"]
        out.exp_avg_sq[name] = tensors[f"adam.{name}.exp_avg_sq"]
        if bool((out.exp_avg_sq[name] < 0).any()):
            raise BadCheckpoint(f"tensor adam.{name}.exp_avg_sq: negative second moment")
    return out


@functools.lru_cache(maxsize=16)
def _parameter_shapes(arch: str, hparams: tuple[tuple[str, int], ...],
                      ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """`expected_state_shapes`, cached: building even a meta-device model runs its initialiser,
    which cost more than parsing a small checkpoint, and a validator loads E+1 of one model."""
    return tuple(expected_state_shapes(arch, dict(hparams)).items())


def _config(meta: Mapping[str, object]) -> ReplayConfig:
    raw = meta.get("dlbc.pol")
    if not isinstance(raw, str):
        raise BadCheckpoint("checkpoint metadata has no dlbc.pol (the replay config)")
    try:
        return ReplayConfig.from_json(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        raise BadCheckpoint(f"dlbc.pol does not parse: {exc}") from None


def _count(meta: Mapping[str, object], key: str) -> int:
    raw = meta.get(key)
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 16 \
            or (len(raw) > 1 and raw[0] == "0"):
        raise BadCheckpoint(f"checkpoint metadata {key} must be a decimal count, got "
                            f"{str(raw)[:40]!r}")
    value = int(raw)
    if value > _MAX_COUNT:
        raise BadCheckpoint(f"checkpoint metadata {key} out of range")
    return value
