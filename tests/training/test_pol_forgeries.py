"""Every forgery class of training/proof/forgeries.py is caught by the trajectory check.

One honest victim run and the thief's own runs, all real (the trainer with the miner's epoch
seeds and checkpoint writer, the chain's default watermark scheme, real sealing), are shared by
the module; each test builds one forgery from them and runs `verify_trajectory` with the
default `TrajectoryPolicy` and threshold, as a validator would. The control is the victim's own
trajectory, which must pass on the same data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from training.data import ArrayDataset
from training.demo_data import make_vessels_2d
from training.models import build_model
from training.proof import forgeries
from training.proof.checkpoint import ReplayConfig, load_checkpoint
from training.proof.forgeries import Forgery, Run
from training.proof.replay import replay_epoch
from training.proof.seeds import anchored_model
from training.proof.verify import TrajectoryReport, verify_trajectory
from training.sidecars.scheme import WatermarkScheme
from training.sidecars.sealing import seal_watermark
from watermark import WatermarkKey, embed_loss

ARCH = "unet2d"
HPARAMS = {"depth": 3, "base_width": 8}  # the demo task's U-Net (task_prep.DemoDataConfig)
EPOCHS = 8
GENUINE = 2  # real fine-tuning epochs at the end of the fine-tuning forgery
ROUND_SEED = hashlib.sha256(b"pol forgeries test round").digest()
VICTIM = hashlib.sha256(b"victim miner").digest()[:20]
THIEF = hashlib.sha256(b"thief miner").digest()[:20]
SELECTION_SEED = hashlib.sha256(b"block hash after REVEAL").digest()
SCHEME = WatermarkScheme.genesis_default()


def replay_config(miner: bytes) -> ReplayConfig:
    """The miner's settings (MinerConfig defaults but batch 8: 3 steps an epoch here)."""
    return ReplayConfig(
        arch=ARCH, hparams=HPARAMS, round_seed=ROUND_SEED, miner=miner, learning_rate=3e-3,
        weight_decay=0.0, batch_size=8, loss="auto", watermark_lambda=1.0,
        watermark_temperature=100.0, autocast="none", seal_lr=1e-2, seal_max_steps=2000,
        watermark_threshold_ppm=SCHEME.threshold_ppm)


def key_of(miner: bytes) -> WatermarkKey:
    """The miner's watermark key, as training/sidecars/miner_train.py derives it."""
    model = build_model(ARCH, HPARAMS)
    return SCHEME.key(ROUND_SEED, miner, SCHEME.layer(model))


def watermark_term(miner: bytes) -> forgeries.ExtraLoss:
    key = key_of(miner)

    def term(model: nn.Module, config: ReplayConfig) -> Tensor:
        return config.watermark_lambda * embed_loss(model, key,
                                                    temperature=config.watermark_temperature)

    return term


def sealer(miner: bytes) -> forgeries.Seal:
    key, config = key_of(miner), replay_config(miner)

    def seal(model: nn.Module) -> None:
        seal_watermark(model, key, config.watermark_threshold_ppm / 1_000_000,
                       lr=config.seal_lr, max_steps=config.seal_max_steps,
                       temperature=config.watermark_temperature)

    return seal


@dataclass
class World:
    data: ArrayDataset
    victim: Run
    """The victim's honest run (the control)."""
    stolen: nn.Module
    """The victim's revealed model carrying the thief's watermark instead."""
    elsewhere: Run
    """The thief's genuine run from another initial point (seed 1234), under its own config."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    torch.set_num_threads(1)  # module-scoped: runs before the autouse per-test fixture
    base = tmp_path_factory.mktemp("pol")
    data = make_vessels_2d(24, 16, seed=3)
    victim = forgeries.train_trajectory(
        anchored_model(ARCH, HPARAMS, ROUND_SEED, VICTIM), data, replay_config(VICTIM),
        epochs=EPOCHS, extra_loss=watermark_term(VICTIM), seal=sealer(VICTIM),
        directory=base / "victim")
    stolen = forgeries.steal(victim.final_model, replay_config(THIEF), victim_key=key_of(VICTIM),
                             thief_key=key_of(THIEF), threshold=SCHEME.threshold)
    elsewhere = forgeries.train_trajectory(
        build_model(ARCH, HPARAMS, seed=1234), data, replay_config(THIEF), epochs=EPOCHS,
        extra_loss=watermark_term(THIEF), seal=sealer(THIEF), directory=base / "elsewhere")
    yield World(data, victim, stolen, elsewhere)


def check(world: World, forgery: Forgery, miner: bytes) -> TrajectoryReport:
    """The validator's check of `forgery` revealed by `miner`, default policy and threshold."""
    checkpoints, final_model = forgery
    return verify_trajectory(
        checkpoints, final_model, world.data, arch=ARCH, hparams=HPARAMS, round_seed=ROUND_SEED,
        miner=miner, extra_loss=watermark_term(miner), seal=sealer(miner),
        selection_seed=SELECTION_SEED)


def assert_consistent(forgery: Forgery, epochs: int, miner: bytes) -> None:
    """The forgery is well formed, so a rejection is the check's doing, not a parse error."""
    states = [load_checkpoint(data) for data in forgery[0]]
    assert [s.epoch for s in states] == list(range(epochs + 1))
    assert [s.step for s in states] == [3 * e for e in range(epochs + 1)]
    assert [s.adam_step for s in states] == [3 * e for e in range(epochs + 1)]
    assert all(s.config == replay_config(miner) for s in states)


# --------------------------------------------------------------------------------------------


def test_honest_run_passes(world: World) -> None:
    report = check(world, world.victim.forgery, VICTIM)
    assert report.ok, report.reason
    assert report.epochs == EPOCHS
    assert len(report.checked) == 4  # q_largest + q_anomalous + q_random, all distinct
    assert max(d for _, d in report.checked) < 1e-2


def test_invalid_honest_run_claimed_by_another_miner(world: World) -> None:
    report = check(world, world.victim.forgery, THIEF)
    assert not report.ok
    assert "another miner" in report.reason


@pytest.mark.parametrize(("schedule", "adam"), [("linear", "zeros"),
                                                ("front_loaded", "consistent")])
def test_invalid_interpolated(world: World, schedule: forgeries.Schedule,
                              adam: forgeries.AdamFake) -> None:
    forgery = forgeries.interpolated(world.stolen, replay_config(THIEF), samples=len(world.data),
                                     epochs=EPOCHS, seal=sealer(THIEF), schedule=schedule,
                                     adam=adam)
    assert_consistent(forgery, EPOCHS, THIEF)
    report = check(world, forgery, THIEF)
    assert not report.ok
    assert "does not replay" in report.reason, report.reason


def test_invalid_finetuned_with_fabricated_history(world: World) -> None:
    forgery = forgeries.finetuned_with_fabricated_history(
        world.stolen, world.data, replay_config(THIEF), epochs=EPOCHS, genuine_epochs=GENUINE,
        extra_loss=watermark_term(THIEF), seal=sealer(THIEF))
    assert_consistent(forgery, EPOCHS, THIEF)
    report = check(world, forgery, THIEF)
    assert not report.ok
    failed = report.checked[-1][0]
    assert f"epoch {failed} does not replay" in report.reason, report.reason
    assert failed <= EPOCHS - GENUINE  # caught on a fabricated epoch, not a genuine one


def test_finetuned_forgery_genuine_epochs_replay(world: World) -> None:
    """The fine-tuning forgery is the strong one: its last epochs really replay, so only the
    spot-check's choice of a fabricated epoch catches it."""
    checkpoints, _ = forgeries.finetuned_with_fabricated_history(
        world.stolen, world.data, replay_config(THIEF), epochs=EPOCHS, genuine_epochs=GENUINE,
        extra_loss=watermark_term(THIEF), seal=sealer(THIEF))
    for epoch in range(EPOCHS - GENUINE + 1, EPOCHS + 1):
        begin, end = load_checkpoint(checkpoints[epoch - 1]), load_checkpoint(checkpoints[epoch])
        state = replay_epoch(begin, world.data, extra_loss=watermark_term(THIEF))
        assert all(torch.equal(state.weights[k], end.weights[k]) for k in end.weights)


def test_invalid_different_start_other_seed(world: World) -> None:
    forgery = forgeries.different_start(world.elsewhere, replay_config(THIEF),
                                        seal=sealer(THIEF), swap_anchor=False)
    assert_consistent(forgery, EPOCHS, THIEF)
    report = check(world, forgery, THIEF)
    assert not report.ok
    assert "epoch 0 is not the anchored start" in report.reason, report.reason


def test_invalid_different_start_relabelled_victim_run(world: World) -> None:
    forgery = forgeries.different_start(world.victim, replay_config(THIEF), seal=sealer(THIEF),
                                        swap_anchor=False)
    assert_consistent(forgery, EPOCHS, THIEF)
    report = check(world, forgery, THIEF)
    assert not report.ok
    assert "epoch 0 is not the anchored start" in report.reason, report.reason


def test_invalid_different_start_anchor_swapped(world: World) -> None:
    forgery = forgeries.different_start(world.elsewhere, replay_config(THIEF),
                                        seal=sealer(THIEF), swap_anchor=True)
    assert_consistent(forgery, EPOCHS, THIEF)
    report = check(world, forgery, THIEF)
    assert not report.ok
    # The jump from the anchor to the other run's epoch 1 is the largest update: checked first.
    assert "epoch 1 does not replay" in report.reason, report.reason


def test_invalid_different_start_relabelled_victim_run_anchor_swapped(world: World) -> None:
    forgery = forgeries.different_start(world.victim, replay_config(THIEF), seal=sealer(THIEF),
                                        swap_anchor=True)
    assert_consistent(forgery, EPOCHS, THIEF)
    report = check(world, forgery, THIEF)
    assert not report.ok
    # Every epoch's order came from the victim's seeds: whichever epoch is replayed fails.
    assert "does not replay" in report.reason, report.reason


@pytest.mark.parametrize("skip", [1, EPOCHS // 2, EPOCHS], ids=["begin", "middle", "end"])
def test_invalid_skipped_epoch(world: World, skip: int) -> None:
    forgery = forgeries.skipped_epoch(world.victim, skip=skip)
    assert_consistent(forgery, EPOCHS - 1, VICTIM)
    report = check(world, forgery, VICTIM)
    assert not report.ok
    if skip == EPOCHS:  # the revealed model is one epoch past the last checkpoint
        assert "revealed model is not the sealed model" in report.reason, report.reason
    else:
        assert "does not replay" in report.reason, report.reason


def test_invalid_skipped_epoch_out_of_range(world: World) -> None:
    with pytest.raises(ValueError, match="skip must be"):
        forgeries.skipped_epoch(world.victim, skip=0)


def test_steal_moves_the_watermark(world: World) -> None:
    """The stolen model passes as the thief's: the trajectory is all that is left to fake."""
    from watermark import detect

    assert detect(world.stolen, key_of(THIEF), threshold=SCHEME.threshold).ok
    assert not detect(world.stolen, key_of(VICTIM), threshold=SCHEME.threshold).ok


def test_train_trajectory_writes_epochs_zero_to_e(world: World) -> None:
    assert len(world.victim.checkpoints) == EPOCHS + 1
    assert world.victim.train_seconds > 0
    first = load_checkpoint(world.victim.checkpoints[0])
    anchor = anchored_model(ARCH, HPARAMS, ROUND_SEED, VICTIM)
    assert all(torch.equal(first.weights[k], p) for k, p in anchor.named_parameters())
