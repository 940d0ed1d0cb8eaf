"""Time-budgeted training and evaluation of registry models (the miner's useful work).

Paper Assumption 2 and Sec. IV-B: a miner must finish training inside the TRAIN phase, so the
trainer gets a wall-clock budget, times each epoch, and only starts another epoch when the last
epoch's duration (times a safety factor) still fits before the deadline. An epoch once started is
always finished, so every checkpoint is a whole-epoch model. After every epoch the model is
written as safetensors and its SHA-256 recorded: these are the `checkpoint_digests` a miner
reveals (docs/transactions.md).

The trainer knows nothing about watermarks or chains: the watermark enters as `extra_loss`
(Uchida et al.'s regulariser, docs/watermark.md), logging and chain work as callbacks.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, Protocol, TextIO

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.artifacts import save_model
from training.data import ArrayDataset
from training.metrics import make_accumulator
from training.progress import ProgressBar

LossName = Literal["auto", "bce_dice", "bce", "cross_entropy"]

# Training sets up to this size are copied to the GPU once; larger ones go batch by batch.
_RESIDENT_BYTES = 2 << 30


CheckpointWriter = Callable[[nn.Module, torch.optim.Optimizer, int, int, Path], str]
"""`(model, optimizer, epoch, step, path) -> sha256 hex`: writes one checkpoint file."""


class TrainingError(ValueError):
    """A training request that cannot be carried out as asked."""


class BudgetTooSmall(TrainingError):
    """Not even one whole epoch fits the budget; raised early, after a few timed steps."""


class StopTraining(Exception):
    """Raise from a callback to stop after the current (finished, checkpointed) epoch."""


@dataclass
class TrainConfig:
    """How to train; defaults suit the tiny models of the tests and the devnet."""

    budget_seconds: float = 60.0
    """Wall-clock budget of the whole call, checkpoints included (paper Assumption 2)."""
    max_epochs: int | None = None
    """Stop after this many epochs even if time is left (None: only the budget limits)."""
    batch_size: int = 16
    """Samples per optimizer step; the last batch of an epoch may be smaller."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam (decoupled, AdamW) weight decay."""
    seed: int = 0
    """Seeds shuffling and torch's global RNG, so a run is reproducible: bit for bit on CPU; on
    CUDA cuDNN is held to deterministic algorithms, but some backward kernels (MaxPool3d, used by
    unet3d) accumulate with atomics and may differ in the last bits from run to run."""
    device: str = "auto"
    """"auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"."""
    bf16: bool = True
    """Autocast forward passes to bfloat16 on a CUDA device that supports it; ignored on CPU."""
    loss: LossName = "auto"
    """"auto": BCE + soft Dice for binary segmentation (1 output channel), cross-entropy for
    multi-class segmentation and classification."""
    checkpoint_dir: Path | None = None
    """Where per-epoch safetensors checkpoints go (None: no checkpoints)."""
    checkpoint_prefix: str = "epoch"
    """Checkpoint file names are f"{prefix}-{epoch:04d}.safetensors"."""
    checkpoint_metadata: dict[str, str] = field(default_factory=dict)
    """Extra safetensors metadata for every checkpoint (e.g. `artifacts.model_metadata`)."""
    safety_factor: float = 1.1
    """Another epoch starts only if (slowest of the last 3 epochs) * safety_factor still fits."""
    probe_steps: int = 5
    """Steps timed at the start of epoch 1 to reject a budget too small for even one epoch."""
    progress: bool = True
    """Show a progress bar on stderr."""
    epoch_seeds: Callable[[int], int] | None = None
    """Proof of learning (docs/proof_of_learning.md): epoch `e` (1-based) shuffles with its own
    generator seeded `epoch_seeds(e)` and reseeds torch's global RNG with it, so a validator can
    replay any one epoch from its starting checkpoint alone. None: one generator seeded with
    `seed` for the whole run (each epoch's order depends on every earlier one)."""
    checkpoint_writer: CheckpointWriter | None = None
    """Writes every checkpoint (with `checkpoint_dir`) instead of `save_model`: proof of learning
    needs the optimizer state too (`training.proof.checkpoint.checkpoint_writer`). With it an
    epoch-0 checkpoint (the untrained model, step 0, fresh optimizer) is written before epoch 1,
    so `TrainResult.checkpoints` holds epochs 0..E; without it, epochs 1..E."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    epoch: int
    path: Path
    sha256: str


@dataclass(frozen=True, slots=True)
class EpochReport:
    """Passed to every callback after an epoch (and its checkpoint) finished."""

    epoch: int
    steps: int
    mean_loss: float
    seconds: float
    elapsed: float
    checkpoint: Checkpoint | None


@dataclass
class TrainResult:
    epochs: int
    steps: int
    epoch_losses: list[float]
    checkpoints: list[Checkpoint]
    wall_seconds: float
    step_seconds: float
    """Time inside the batch loops (batch gather, forward, backward, optimizer step)."""
    stopped: Literal["budget", "max_epochs", "callback"]
    device: str
    epoch_elapsed: list[float] = field(default_factory=list)
    """Seconds since `train` started at the end of each epoch, its checkpoint written (one per
    `epoch_losses` entry): a learning curve's x axis in seconds, and what a miner reports so a
    plot can tell "trained longer" from "trained more epochs" (issue 14)."""

    @property
    def checkpoint_digests(self) -> list[str]:
        return [c.sha256 for c in self.checkpoints]


Callback = Callable[[EpochReport], None]


# --------------------------------------------------------------------------------------------


def select_device(name: str = "auto") -> torch.device:
    """The device to train on; "auto" prefers CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise TrainingError(f"unsupported device {name!r}")
    return device


def _use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast only where the GPU computes bf16 natively (compute capability >= 8.0).

    `is_bf16_supported()` alone also says yes to older GPUs that merely emulate bf16, which is
    slower than float32 there; it also asks about the current device, not necessarily `device`.
    """
    if not cfg.bf16 or device.type != "cuda":
        return False
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def uses_bf16(cfg: TrainConfig) -> bool:
    """Whether `train(..., cfg)` will autocast to bf16 on this machine: a miner records it in
    its replay config (docs/proof_of_learning.md), where it picks the replay threshold."""
    return _use_bf16(cfg, select_device(cfg.device))


class _Fp32Knob(Protocol):
    """A backend's float32 precision setting: "ieee", "tf32" or "none" (inherit)."""

    fp32_precision: str


def _fp32_knobs() -> tuple[_Fp32Knob, _Fp32Knob]:
    """The cuDNN-convolution and cuBLAS-matmul float32 precision settings.

    This fp32_precision API replaced `allow_tf32`; mixing the two raises, so only it is used.
    """
    # torch.backends.cudnn.conv exists at run time (torch >= 2.9) but not in torch's stubs.
    conv: _Fp32Knob = getattr(torch.backends.cudnn, "conv")  # noqa: B009
    matmul: _Fp32Knob = torch.backends.cuda.matmul
    return conv, matmul


def _use_deterministic_cudnn(device: torch.device) -> None:
    """Make cuDNN pick deterministic algorithms, without autotuning (process-wide and never
    undone: trainer threads of one process, as in the devnet, would otherwise undo each other's
    setting mid-run)."""
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


class _IeeeFloat32:
    """A context in which float32 convolutions and matmuls on CUDA are really float32.

    PyTorch lets cuDNN convolutions use TF32 (a 10-bit mantissa) by default on Ampere and later
    GPUs, which would make a GPU measurement drift from a CPU one (docs/verification.md). The
    setting is process-wide, so concurrent users (sidecar threads) are counted under a lock: the
    first one in switches to IEEE, the last one out restores what was there before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: list[str] = []

    @contextmanager
    def on(self, device: torch.device) -> Iterator[None]:
        if device.type != "cuda":
            yield
            return
        with self._lock:
            if self._users == 0:
                knobs = _fp32_knobs()
                self._saved = [k.fp32_precision for k in knobs]
                for knob in knobs:
                    knob.fp32_precision = "ieee"
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for knob, precision in zip(_fp32_knobs(), self._saved, strict=True):
                        knob.fp32_precision = precision


_ieee_float32 = _IeeeFloat32()


def _gather(data: Tensor, idx: Tensor, device: torch.device) -> Tensor:
    """The rows `idx` of `data` on `device`; a host-resident set goes through pinned memory so
    the copy to the GPU is asynchronous (indexing a pinned tensor yields an unpinned one)."""
    batch = data[idx]  # (B, ...)
    if batch.device.type == "cpu" and device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def _soft_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """1 - soft Dice over the batch, on sigmoid probabilities (binary segmentation)."""
    prob = torch.sigmoid(logits)  # (N, *S)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + 1.0) / (prob.sum() + target.sum() + 1.0)


def compute_loss(logits: Tensor, target: Tensor, kind: str, loss: LossName) -> Tensor:
    """The task loss in float32 (logits may come out of a bf16 autocast region)."""
    logits = logits.float()
    if kind == "classification":
        if loss not in ("auto", "cross_entropy"):
            raise TrainingError(f"loss {loss!r} does not apply to classification")
        return F.cross_entropy(logits, target)  # logits (N, K), target (N,)
    if logits.shape[1] == 1:
        if loss == "cross_entropy":
            raise TrainingError("cross_entropy needs >= 2 output channels")
        x, y = logits[:, 0], target.float()  # (N, *S)
        bce = F.binary_cross_entropy_with_logits(x, y)
        return bce if loss == "bce" else bce + _soft_dice_loss(x, y)
    if loss not in ("auto", "cross_entropy"):
        raise TrainingError(f"loss {loss!r} needs a single output channel")
    return F.cross_entropy(logits, target)  # logits (N, K, *S), target (N, *S)


def _check_compat(model: nn.Module, data: ArrayDataset, device: torch.device) -> None:
    """One forward pass on one sample, turning shape mistakes into a clear TrainingError."""
    sample = torch.from_numpy(data.inputs[:1]).to(device)
    try:
        with torch.no_grad():
            out = model(sample)
    except (ValueError, RuntimeError) as exc:
        raise TrainingError(f"model does not accept inputs of shape {data.sample_shape}: {exc}")
    if data.kind == "classification":
        ok = out.dim() == 2 and out.shape[1] == data.num_classes
    else:
        ok = out.shape[2:] == sample.shape[2:] and out.shape[1] in (1, data.num_classes)
        ok = ok and (out.shape[1] != 1 or data.num_classes == 2)
    if not ok:
        raise TrainingError(
            f"model output {tuple(out.shape)} does not fit a {data.kind} set with "
            f"{data.num_classes} classes"
        )


def seed_epoch(n: int, seed: int) -> Tensor:
    """Start a replayable epoch: reseed torch's global RNG with `seed` and return the epoch's data
    order, a permutation of range(n) drawn from a generator of its own seeded `seed`.

    Shared by `train` (with `TrainConfig.epoch_seeds`) and a validator's replay, so both draw the
    very same order.
    """
    torch.manual_seed(seed)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # (n,) int64


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    targets: Tensor,
    order: Tensor,
    *,
    batch_size: int,
    kind: str,
    loss: LossName,
    extra_loss: Callable[[nn.Module], Tensor] | None,
    device: torch.device,
    bf16: bool,
    on_step: Callable[[int], None] | None = None,
) -> tuple[int, Tensor]:
    """One epoch of optimizer steps over `inputs[order]` in batches of `batch_size`.

    The batch loop of `train`, public so that a proof-of-learning replay runs the very same code
    as the miner did (training.proof.verify). `inputs` (N, C, *S) and `targets` may live on the
    CPU or on `device`; `order` lives where `inputs` does. `on_step(i)` is called after the i-th
    step (1-based). Returns (steps taken, summed loss as a 0-d tensor on `device`, unsynced).
    """
    model.train()
    steps = math.ceil(len(order) / batch_size)
    loss_sum = torch.zeros((), device=device)
    for i in range(steps):
        idx = order[i * batch_size : (i + 1) * batch_size]
        x = _gather(inputs, idx, device)  # (B, C, *S)
        y = _gather(targets, idx, device)  # (B, *S) or (B,)
        # bf16 needs no GradScaler: it has float32's exponent range, so gradients don't
        # underflow; parameters, optimizer state and the loss stay float32.
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            logits: Tensor = model(x)  # (B, K, *S) or (B, K)
        step_loss = compute_loss(logits, y, kind, loss)
        if extra_loss is not None:
            step_loss = step_loss + extra_loss(model)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(step_loss)
        optimizer.step()
        loss_sum += step_loss.detach()
        if on_step is not None:
            on_step(i + 1)
    return steps, loss_sum


def train(
    model: nn.Module,
    train_data: ArrayDataset,
    cfg: TrainConfig,
    *,
    extra_loss: Callable[[nn.Module], Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
    stream: TextIO | None = None,
) -> TrainResult:
    """Train `model` in place on `train_data` within `cfg.budget_seconds` of wall time.

    Epoch planning (paper Sec. IV-B): epoch 1 always runs (after `probe_steps` timed steps show
    it fits, else BudgetTooSmall); each further epoch starts only if the previous epoch's duration,
    checkpoint included (the slowest of the last three), times `safety_factor` still fits before
    the deadline. `extra_loss(model)` is added to every step's loss (computed in float32 outside
    autocast). Returns a TrainResult with per-epoch checkpoints and their SHA-256 digests.
    `cfg.epoch_seeds` and `cfg.checkpoint_writer` make the run replayable epoch by epoch (proof
    of learning, docs/proof_of_learning.md).

    On CUDA with `cfg.bf16`, forward passes run under bf16 autocast; the loss, the gradients'
    accumulation into float32 parameters and the optimizer stay float32.
    """
    start = time.monotonic()
    if cfg.budget_seconds <= 0 or not math.isfinite(cfg.budget_seconds):
        raise TrainingError(f"budget_seconds must be positive, got {cfg.budget_seconds}")
    if cfg.batch_size < 1:
        raise TrainingError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.max_epochs is not None and cfg.max_epochs < 1:
        raise TrainingError(f"max_epochs must be >= 1, got {cfg.max_epochs}")
    deadline = start + cfg.budget_seconds
    device = select_device(cfg.device)
    bf16 = _use_bf16(cfg, device)
    torch.manual_seed(cfg.seed)
    _use_deterministic_cudnn(device)
    model.to(device)
    _check_compat(model, train_data, device)
    if cfg.checkpoint_dir is not None:
        Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)

    inputs = torch.from_numpy(train_data.inputs)  # (N, C, *S) float32, CPU
    targets = torch.from_numpy(train_data.targets)  # (N, *S) or (N,) int64, CPU
    if device.type == "cuda" and inputs.nbytes + targets.nbytes <= _RESIDENT_BYTES:
        inputs, targets = inputs.to(device), targets.to(device)  # small set: keep it on the GPU
    # else: a large set stays in host memory and `_gather` copies it batch by batch.
    n = len(train_data)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)

    result = TrainResult(0, 0, [], [], 0.0, 0.0, "budget", str(device))
    if cfg.checkpoint_writer is not None:
        start_checkpoint = _checkpoint(model, optimizer, cfg, 0, 0)  # the anchored start
        if start_checkpoint is not None:
            result.checkpoints.append(start_checkpoint)
    recent_epoch_seconds: list[float] = []
    while True:
        epoch = result.epochs + 1
        if cfg.max_epochs is not None and epoch > cfg.max_epochs:
            result.stopped = "max_epochs"
            break
        epoch_start = time.monotonic()
        # The slowest of the last three epochs: one fast epoch on a shared box is no promise.
        planned = max(recent_epoch_seconds[-3:], default=0.0) * cfg.safety_factor
        if epoch > 1 and epoch_start + planned > deadline:
            result.stopped = "budget"
            break
        bar = ProgressBar(steps_per_epoch, f"epoch {epoch}", stream=stream, enabled=cfg.progress)
        if cfg.epoch_seeds is None:
            order = torch.randperm(n, generator=shuffle)
        else:
            order = seed_epoch(n, cfg.epoch_seeds(epoch))
        loop_start = time.monotonic()

        def on_step(i: int, epoch: int = epoch, loop_start: float = loop_start,
                    bar: ProgressBar = bar) -> None:
            if epoch == 1 and i == min(cfg.probe_steps, steps_per_epoch):
                _probe(device, loop_start, i, steps_per_epoch, deadline)
            bar.update(1)

        steps, loss_sum = train_epoch(
            model, optimizer, inputs, targets, order.to(inputs.device),
            batch_size=cfg.batch_size, kind=train_data.kind, loss=cfg.loss,
            extra_loss=extra_loss, device=device, bf16=bf16, on_step=on_step)
        result.steps += steps
        mean_loss = float(loss_sum) / steps_per_epoch  # syncs the device once per epoch
        if not math.isfinite(mean_loss):
            raise TrainingError(f"loss diverged to {mean_loss} in epoch {epoch}")
        result.step_seconds += time.monotonic() - loop_start
        result.epochs = epoch
        result.epoch_losses.append(mean_loss)
        checkpoint = _checkpoint(model, optimizer, cfg, epoch, result.steps)
        if checkpoint is not None:
            result.checkpoints.append(checkpoint)
        bar.note = f"loss {mean_loss:.4f}  {max(0.0, deadline - time.monotonic()):.1f}s left"
        bar.close()
        now = time.monotonic()
        result.epoch_elapsed.append(now - start)
        report = EpochReport(epoch, result.steps, mean_loss, now - epoch_start, now - start,
                             checkpoint)
        try:
            for callback in callbacks:
                callback(report)
        except StopTraining:
            result.stopped = "callback"
            break
        finally:
            recent_epoch_seconds.append(time.monotonic() - epoch_start)
    result.wall_seconds = time.monotonic() - start
    return result


def _probe(device: torch.device, loop_start: float, steps: int, per_epoch: int,
           deadline: float) -> None:
    """Raise BudgetTooSmall if the first epoch, extrapolated from `steps` steps, overruns."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    now = time.monotonic()
    projected = loop_start + (now - loop_start) * per_epoch / steps
    if projected > deadline:
        raise BudgetTooSmall(
            f"one epoch needs about {(now - loop_start) * per_epoch / steps:.1f}s but the "
            f"budget ends in {deadline - loop_start:.1f}s; use a smaller model, set or batch"
        )


# Not written into a checkpoint's `dlbc.train_config`: the metadata dict itself, and callables
# (whose str() is a memory address, which would make the file's digest differ run to run).
_NOT_IN_TRAIN_CONFIG = frozenset({"checkpoint_metadata", "epoch_seeds", "checkpoint_writer"})


def _checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, epoch: int,
                step: int) -> Checkpoint | None:
    if cfg.checkpoint_dir is None:
        return None
    path = Path(cfg.checkpoint_dir) / f"{cfg.checkpoint_prefix}-{epoch:04d}.safetensors"
    if cfg.checkpoint_writer is not None:
        return Checkpoint(epoch, path, cfg.checkpoint_writer(model, optimizer, epoch, step, path))
    config = {f.name: str(getattr(cfg, f.name)) for f in fields(cfg)
              if f.name not in _NOT_IN_TRAIN_CONFIG}
    metadata = {**cfg.checkpoint_metadata, "dlbc.epoch": str(epoch), "dlbc.step": str(step),
                "dlbc.train_config": repr(sorted(config.items()))}
    # No fsync per epoch: it can stall for long on a busy disk and steal the training budget.
    return Checkpoint(epoch, path, save_model(model, path, metadata=metadata, durable=False))


# --------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor) -> Tensor:
    """Hard predictions: class indices (N,) for classifiers, masks (N, *S) for segmenters."""
    logits: Tensor = model(inputs).float()  # (N, K, *S) or (N, K)
    if logits.dim() > 2 and logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()  # binary segmentation: sigmoid(x) > 0.5
    return logits.argmax(dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ArrayDataset, metric: str, *, batch_size: int = 64,
    device: str | torch.device | None = None,
) -> int:
    """Score `model` on `data` with `metric` (`dice`, `dice_per_image`, `accuracy`) in ppm.

    Always float32 (no autocast, and no TF32 on a GPU), batch by batch into exact integer
    accumulators, so a miner's claim and a validator's measurement of the same weights agree
    (docs/verification.md). `device` None means where the model's parameters are; otherwise the
    model is moved there for the measurement and back afterwards.
    """
    first = next(iter(model.parameters()), None)
    home = first.device if first is not None else torch.device("cpu")
    if isinstance(device, str):
        device = select_device(device)
    if device is None:
        device = home
    if metric == "accuracy" and data.kind != "classification":
        raise TrainingError("accuracy needs a classification set")
    if metric != "accuracy" and data.kind != "segmentation":
        raise TrainingError(f"{metric} needs a segmentation set")
    acc = make_accumulator(metric, data.num_classes)
    was_training = model.training
    model.eval()
    model.to(device)
    try:
        _use_deterministic_cudnn(device)
        with _ieee_float32.on(device):
            for s in range(0, len(data), batch_size):
                x = torch.from_numpy(data.inputs[s : s + batch_size]).to(device)  # (B, C, *S)
                pred = predict(model, x).cpu().numpy()  # (B, *S) or (B,)
                acc.update(pred, data.targets[s : s + batch_size])
    finally:
        model.to(home)
        model.train(was_training)
    return acc.ppm()


__all__ = [
    "BudgetTooSmall", "Checkpoint", "CheckpointWriter", "EpochReport", "StopTraining",
    "TrainConfig", "TrainResult", "TrainingError", "compute_loss", "evaluate", "predict",
    "seed_epoch", "select_device", "train", "train_epoch", "uses_bf16",
]
