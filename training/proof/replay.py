"""Replaying one epoch of a miner's run from its starting checkpoint.

docs/proof_of_learning.md "Replayable steps": the validator rebuilds the model and AdamW exactly
as checkpoint i-1 left them, draws epoch i's data order from `seeds.epoch_seed`, and runs the
trainer's own batch loop (`training.trainer.train_epoch`), so the replay executes the very code
the miner ran; only the hardware (thread count, device) may differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.data import ArrayDataset
from training.proof.checkpoint import TrainingCheckpoint
from training.proof.config import ReplayConfig
from training.proof.seeds import epoch_seed
from training.trainer import seed_epoch, train_epoch

ExtraLoss = Callable[[nn.Module, ReplayConfig], Tensor]

#: Most torch threads a replay takes on the miner's word (`ReplayConfig.torch_threads`): a
#: config claiming thousands must not make a validator spawn them.
MAX_REPLAY_THREADS = 64


class TimeUp(Exception):
    """The replay passed its deadline (raised from inside the batch loop)."""


@dataclass
class ReplayedState:
    """The training state after a replayed epoch (CPU tensors, by parameter name)."""

    weights: dict[str, Tensor]
    exp_avg: dict[str, Tensor]
    exp_avg_sq: dict[str, Tensor]
    seconds: float


def replay_epoch(start: TrainingCheckpoint, train_data: ArrayDataset, *,
                 extra_loss: ExtraLoss | None = None, device: str = "cpu",
                 deadline: float | None = None) -> ReplayedState:
    """Run epoch `start.epoch + 1` of the run `start.config` describes, from `start`.

    Torch's global RNG is reseeded for the epoch as the trainer does, inside `fork_rng`, so the
    caller's CPU RNG is left as it was. Raises TimeUp past `deadline` (a time.monotonic()).
    """
    config = start.config
    dev = torch.device(device)
    bf16 = False
    if dev.type == "cuda":
        # As the trainer does: deterministic cuDNN algorithms, no autotuning.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        bf16 = config.autocast == "bf16" and torch.cuda.is_bf16_supported(including_emulation=False)
    model = start.model().to(dev)
    optimizer = start.optimizer(model)
    inputs = torch.from_numpy(train_data.inputs)  # (N, C, *S) float32, CPU
    targets = torch.from_numpy(train_data.targets)  # (N, *S) or (N,), CPU
    loss_term = None if extra_loss is None else (lambda m: extra_loss(m, config))

    def on_step(_step: int) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeUp

    t0 = time.monotonic()
    with torch.random.fork_rng(devices=[]), replay_threads(config.torch_threads, dev):
        order = seed_epoch(len(train_data), epoch_seed(config.round_seed, config.miner,
                                                       start.epoch + 1))
        train_epoch(model, optimizer, inputs, targets, order, batch_size=config.batch_size,
                    kind=train_data.kind, loss=config.loss,
                    extra_loss=loss_term, device=dev, bf16=bf16, on_step=on_step)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.monotonic() - t0
    state = ReplayedState({}, {}, {}, seconds)
    for name, param in model.named_parameters():
        moments = optimizer.state[param]
        state.weights[name] = param.detach().cpu()
        state.exp_avg[name] = moments["exp_avg"].detach().cpu()
        state.exp_avg_sq[name] = moments["exp_avg_sq"].detach().cpu()
    return state


@contextmanager
def replay_threads(threads: int, dev: torch.device) -> Iterator[None]:
    """Run a CPU replay (or the miner's watermark sealing) on the miner's thread count
    (bounded by MAX_REPLAY_THREADS), then restore the caller's."""
    if dev.type != "cpu" or threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(threads, MAX_REPLAY_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before)
