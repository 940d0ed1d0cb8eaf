"""The trainer's proof-of-learning options: per-epoch seeds make any epoch replayable on its own,
and a checkpoint writer gets an epoch-0 checkpoint of the untrained model (issue 15)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from training.artifacts import load_model, sha256_file
from training.data import ArrayDataset, make_segmentation_2d
from training.models import build_model
from training.proof.checkpoint import (
    ReplayConfig,
    TrainingCheckpoint,
    checkpoint_writer,
    load_checkpoint,
)
from training.proof.seeds import anchored_model, epoch_seed
from training.trainer import TrainConfig, TrainResult, seed_epoch, train, train_epoch

HP = {"depth": 2, "base_width": 4}
ROUND, MINER = b"\x11" * 32, b"\x22" * 20
BATCH, LR, EPOCHS = 8, 1e-2, 3


def _seeds(epoch: int) -> int:
    return epoch_seed(ROUND, MINER, epoch)


@pytest.fixture(scope="module")
def seg_set() -> ArrayDataset:
    return make_segmentation_2d(24, 16, seed=4)


@pytest.fixture(scope="module")
def pol_run(seg_set: ArrayDataset, tmp_path_factory: pytest.TempPathFactory,
            ) -> tuple[TrainResult, list[TrainingCheckpoint]]:
    config = ReplayConfig("unet2d", HP, ROUND, MINER, LR, 0.0, BATCH, "auto", 0.0, 100.0, "none",
                          1e-2, 0, 999_900)
    torch.set_num_threads(1)  # as the tests' replays (conftest): CPU float32 is then bit-exact
    model = anchored_model("unet2d", HP, ROUND, MINER)
    result = train(model, seg_set, TrainConfig(
        max_epochs=EPOCHS, batch_size=BATCH, learning_rate=LR, budget_seconds=120,
        progress=False, checkpoint_dir=tmp_path_factory.mktemp("pol"), epoch_seeds=_seeds,
        checkpoint_writer=checkpoint_writer(config)))
    return result, [load_checkpoint(c.path.read_bytes()) for c in result.checkpoints]


def _replay(start: TrainingCheckpoint, data: ArrayDataset, seed: int,
            ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = start.model()
    optimizer = start.optimizer(model)
    train_epoch(model, optimizer, torch.from_numpy(data.inputs), torch.from_numpy(data.targets),
                seed_epoch(len(data), seed), batch_size=BATCH, kind=data.kind, loss="auto",
                extra_loss=None, device=torch.device("cpu"), bf16=False)
    return model, optimizer


def test_epoch_seeds_make_an_epoch_replayable_alone(pol_run, seg_set: ArrayDataset) -> None:
    _, cks = pol_run
    model, optimizer = _replay(cks[2], seg_set, _seeds(3))
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), cks[3].weights[name]), name
        assert torch.equal(optimizer.state[param]["exp_avg"], cks[3].exp_avg[name]), name
        assert torch.equal(optimizer.state[param]["exp_avg_sq"], cks[3].exp_avg_sq[name]), name
    assert int(optimizer.state[next(model.parameters())]["step"]) == cks[3].adam_step


def test_replay_with_another_epochs_order_differs(pol_run, seg_set: ArrayDataset) -> None:
    # The bit-for-bit match above is due to the order: epoch 2's seed does not reproduce epoch 3.
    _, cks = pol_run
    model, _ = _replay(cks[2], seg_set, _seeds(2))
    assert not all(torch.equal(p.detach(), cks[3].weights[n]) for n, p in model.named_parameters())


def test_epoch_zero_checkpoint_is_the_untrained_model(pol_run, seg_set: ArrayDataset) -> None:
    result, cks = pol_run
    steps = math.ceil(len(seg_set) / BATCH)
    assert [c.epoch for c in result.checkpoints] == list(range(EPOCHS + 1))
    assert result.epochs == EPOCHS and result.steps == EPOCHS * steps
    for c in result.checkpoints:
        assert c.path.name == f"epoch-{c.epoch:04d}.safetensors"
        assert sha256_file(c.path) == c.sha256
    assert [(ck.epoch, ck.step, ck.adam_step) for ck in cks] == \
        [(e, e * steps, e * steps) for e in range(EPOCHS + 1)]
    untrained = anchored_model("unet2d", HP, ROUND, MINER)
    for name, param in untrained.named_parameters():
        assert torch.equal(cks[0].weights[name], param.detach())
        assert not cks[0].exp_avg[name].any() and not cks[0].exp_avg_sq[name].any()
    assert all(not torch.equal(cks[1].weights[n], w) for n, w in cks[0].weights.items()
               if n.endswith(".weight"))


def test_epoch_seeds_reseed_the_global_rng_per_epoch(seg_set: ArrayDataset) -> None:
    model = build_model("unet2d", HP, seed=0)
    train(model, seg_set, TrainConfig(max_epochs=2, batch_size=BATCH, budget_seconds=60,
                                      progress=False, seed=5, epoch_seeds=_seeds))
    assert torch.initial_seed() == _seeds(2)


def test_without_the_new_options_checkpoints_stay_plain_models(seg_set: ArrayDataset,
                                                                 tmp_path: Path) -> None:
    model = build_model("unet2d", HP, seed=0)
    result = train(model, seg_set, TrainConfig(max_epochs=2, batch_size=BATCH, budget_seconds=60,
                                               progress=False, checkpoint_dir=tmp_path))
    assert [c.epoch for c in result.checkpoints] == [1, 2]
    last = load_model(result.checkpoints[-1].path, "unet2d", HP)
    assert all(torch.equal(a, b) for a, b in
               zip(last.state_dict().values(), model.state_dict().values(), strict=True))
    # Two runs without epoch_seeds are the same run, and a different one from the seeded run.
    again = build_model("unet2d", HP, seed=0)
    train(again, seg_set, TrainConfig(max_epochs=2, batch_size=BATCH, budget_seconds=60,
                                      progress=False))
    seeded = build_model("unet2d", HP, seed=0)
    train(seeded, seg_set, TrainConfig(max_epochs=2, batch_size=BATCH, budget_seconds=60,
                                       progress=False, epoch_seeds=_seeds))
    assert all(torch.equal(a, b) for a, b in
               zip(again.state_dict().values(), model.state_dict().values(), strict=True))
    assert not all(torch.equal(a, b) for a, b in
                   zip(seeded.state_dict().values(), model.state_dict().values(), strict=True))
