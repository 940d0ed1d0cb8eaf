"""The validator's trajectory check: an honest run passes (also replayed on another thread
count); a wrong anchor, a tampered epoch, a foreign final model, another miner's or round's
files, shuffled epochs, an impossible optimizer state and a passed deadline are refused with a
reason (issue 15). The four forgery classes of the issue have their own tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from training.artifacts import model_metadata, state_dict_bytes
from training.data import ArrayDataset, make_segmentation_2d
from training.models import build_model
from training.proof.checkpoint import (
    ReplayConfig,
    checkpoint_writer,
    load_checkpoint,
    save_checkpoint,
)
from training.proof.seeds import anchored_model, epoch_seed
from training.proof.select import choose_epochs
from training.proof.thresholds import THRESHOLDS, threshold_for
from training.proof.verify import TrajectoryPolicy, TrajectoryReport, verify_trajectory
from training.safetensors_header import check_safetensors_header
from training.sidecars.sealing import seal_watermark
from training.trainer import TrainConfig, train
from watermark import WatermarkKey, derive_key, embed_loss
from watermark.layers import default_layer

HP = {"depth": 2, "base_width": 4}
ROUND, MINER = b"\x31" * 32, b"\x42" * 20
EPOCHS = 4
TRAIN_THREADS = 1  # as conftest gives every test; one test replays on two
CONFIG = ReplayConfig("unet2d", HP, ROUND, MINER, 1e-2, 0.0, 8, "auto", 1e-4, 100.0, "none",
                      1e-2, 300, 999_900)


@dataclass
class Honest:
    data: ArrayDataset
    checkpoints: list[bytes]
    final: bytes
    key: WatermarkKey
    seal_steps: int

    def extra_loss(self, model: nn.Module, config: ReplayConfig) -> Tensor:
        return config.watermark_lambda * embed_loss(model, self.key,
                                                    temperature=config.watermark_temperature)

    def seal(self, model: nn.Module) -> None:
        seal_watermark(model, self.key, CONFIG.watermark_threshold_ppm / 1e6, lr=CONFIG.seal_lr,
                       max_steps=CONFIG.seal_max_steps, temperature=CONFIG.watermark_temperature)

    def verify(self, checkpoints: list[bytes] | None = None, final: bytes | None = None,
               **kw: object) -> TrajectoryReport:
        args: dict[str, object] = {
            "arch": "unet2d", "hparams": HP, "round_seed": ROUND, "miner": MINER,
            "extra_loss": self.extra_loss, "seal": self.seal, "selection_seed": b"block"}
        args.update(kw)
        return verify_trajectory(self.checkpoints if checkpoints is None else checkpoints,
                                 self.final if final is None else final, self.data,
                                 **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Honest:
    """A miner's run as training/sidecars/miner_train.py does it: anchored start, per-epoch
    seeds, the watermark term, replayable checkpoints, sealing; on TRAIN_THREADS threads."""
    data = make_segmentation_2d(24, 16, seed=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        model = anchored_model("unet2d", HP, ROUND, MINER)
        key = derive_key(ROUND, MINER, layer=default_layer(model, n_bits=64), n_bits=64)
        run = Honest(data, [], b"", key, 0)
        result = train(model, data, TrainConfig(
            max_epochs=EPOCHS, batch_size=CONFIG.batch_size, learning_rate=CONFIG.learning_rate,
            budget_seconds=120, progress=False, checkpoint_dir=tmp_path_factory.mktemp("run"),
            epoch_seeds=lambda e: epoch_seed(ROUND, MINER, e),
            checkpoint_writer=checkpoint_writer(CONFIG)),
            extra_loss=lambda m: run.extra_loss(m, CONFIG))
        _, run.seal_steps = seal_watermark(
            model, key, CONFIG.watermark_threshold_ppm / 1e6, lr=CONFIG.seal_lr,
            max_steps=CONFIG.seal_max_steps, temperature=CONFIG.watermark_temperature)
    finally:
        torch.set_num_threads(threads)
    run.checkpoints = [c.path.read_bytes() for c in result.checkpoints]
    run.final = state_dict_bytes(model, model_metadata("unet2d", HP))
    return run


def _resave(data: bytes, change: Callable[[dict[str, Tensor]], None]) -> bytes:
    state = st_load(data)
    change(state)
    return st_save(state, metadata=check_safetensors_header(data)["__metadata__"])


def test_honest_run_passes_on_the_same_thread_count(honest: Honest) -> None:
    assert torch.get_num_threads() == TRAIN_THREADS
    report = honest.verify()
    assert report.ok and not report.timed_out, report.reason
    assert report.reason == "" and report.epochs == EPOCHS
    # q = 4 >= E: every epoch is replayed, and on the miner's thread count bit for bit.
    assert report.checked == [(e, 0.0) for e in range(1, EPOCHS + 1)]
    assert 0 < report.replay_seconds <= report.seconds
    assert honest.seal_steps > 0  # the final link really re-ran the sealing


def test_honest_run_passes_on_another_thread_count(honest: Honest) -> None:
    torch.set_num_threads(2)  # conftest sets one thread again for the next test
    # Two replays only: two threads on a shared 2-core box are slow, not more telling.
    report = honest.verify(policy=TrajectoryPolicy(q_random=1, q_largest=1, q_anomalous=0))
    assert report.ok, report.reason
    distances = [d for _, d in report.checked]
    assert len(distances) == 2 and max(distances) < threshold_for("unet2d", "none") / 10
    assert max(distances) > 0.0  # really another summation order


def test_only_the_chosen_epochs_are_replayed(honest: Honest) -> None:
    policy = TrajectoryPolicy(q_random=1, q_largest=0, q_anomalous=0)
    report = honest.verify(policy=policy, selection_seed=b"another block")
    assert report.ok, report.reason
    assert len(report.checked) == 1 and 1 <= report.checked[0][0] <= EPOCHS


def test_invalid_wrong_anchor(honest: Honest, tmp_path: Path) -> None:
    stranger = build_model("unet2d", HP, seed=123)  # a start the miner chose itself
    opt = torch.optim.AdamW(stranger.parameters(), lr=CONFIG.learning_rate, weight_decay=0.0)
    save_checkpoint(tmp_path / "c", stranger, opt, epoch=0, step=0, config=CONFIG)
    report = honest.verify([(tmp_path / "c").read_bytes(), *honest.checkpoints[1:]])
    assert not report.ok and "anchored start" in report.reason
    assert report.checked == []  # refused before any replay


def test_invalid_anchor_with_optimizer_state(honest: Honest) -> None:
    def warm(t: dict[str, Tensor]) -> None:
        name = next(k for k in sorted(t) if k.endswith(".exp_avg_sq"))
        t[name] = torch.ones_like(t[name])
    report = honest.verify([_resave(honest.checkpoints[0], warm), *honest.checkpoints[1:]])
    assert not report.ok and "anchored start" in report.reason


def test_invalid_tampered_epoch(honest: Honest) -> None:
    def nudge(t: dict[str, Tensor]) -> None:  # every weight 1e-2 off: half an epoch's update
        t.update({name: value + 1e-2 for name, value in t.items()
                  if name.startswith("model.") and name.endswith(".weight")})
    cks = list(honest.checkpoints)
    cks[2] = _resave(cks[2], nudge)
    report = honest.verify(cks)
    assert not report.ok and report.reason.startswith("epoch 2 does not replay"), report.reason
    assert not report.timed_out  # a finding, not a lack of time
    assert [e for e, _ in report.checked] == [1, 2]


def test_invalid_final_model_not_from_last_checkpoint(honest: Honest) -> None:
    earlier = load_checkpoint(honest.checkpoints[EPOCHS - 1]).model()
    honest.seal(earlier)
    report = honest.verify(final=state_dict_bytes(earlier))
    assert not report.ok and "not the sealed model of checkpoint 4" in report.reason


def test_invalid_final_model_garbage(honest: Honest) -> None:
    report = honest.verify(final=b"\x80\x04not a model")
    assert not report.ok and report.reason.startswith("revealed model does not load")


@pytest.mark.parametrize(("claim", "reason"), [
    ({"miner": b"\x43" * 20}, "another miner"),
    ({"round_seed": b"\x32" * 32}, "another round seed"),
    ({"hparams": {"depth": 2, "base_width": 8}}, "hyper-parameters"),
    ({"arch": "fcn"}, "architecture"),
])
def test_invalid_config_mismatch(honest: Honest, claim: dict[str, object], reason: str) -> None:
    report = honest.verify(**claim)
    assert not report.ok and reason in report.reason, report.reason


def test_invalid_config_differs_between_checkpoints(honest: Honest, tmp_path: Path) -> None:
    ck = load_checkpoint(honest.checkpoints[2])
    model = ck.model()
    other = replace(CONFIG, learning_rate=2e-2)
    opt = torch.optim.AdamW(model.parameters(), lr=other.learning_rate, weight_decay=0.0)
    save_checkpoint(tmp_path / "c", model, opt, epoch=2, step=0, config=other)
    cks = list(honest.checkpoints)
    cks[2] = (tmp_path / "c").read_bytes()
    report = honest.verify(cks)
    assert not report.ok and "differs from checkpoint 0's" in report.reason


def test_invalid_epochs_out_of_order(honest: Honest) -> None:
    cks = list(honest.checkpoints)
    cks[1], cks[2] = cks[2], cks[1]
    report = honest.verify(cks)
    assert not report.ok and "must be epochs 0..4 in order" in report.reason


def test_invalid_skipped_step_count(honest: Honest) -> None:
    # The same checkpoints claimed for a training set one sample larger: an epoch short.
    bigger = make_segmentation_2d(25, 16, seed=4)
    report = verify_trajectory(honest.checkpoints, honest.final, bigger, arch="unet2d",
                               hparams=HP, round_seed=ROUND, miner=MINER,
                               extra_loss=honest.extra_loss, seal=honest.seal,
                               selection_seed=b"block")
    assert not report.ok and "checkpoint 1: step 3" in report.reason, report.reason


def test_invalid_adam_state_no_training_produces(honest: Honest) -> None:
    # A first moment far beyond what any gradient history gives for its second moment: the way
    # to steer an epoch whose replay starts from that very state.
    def steer(t: dict[str, Tensor]) -> None:
        name = next(k for k in sorted(t) if k.endswith(".exp_avg"))
        t[name] = t[name] + 10 * t[name.replace(".exp_avg", ".exp_avg_sq")].sqrt() + 1e-3
    cks = list(honest.checkpoints)
    cks[2] = _resave(cks[2], steer)
    report = honest.verify(cks)
    assert not report.ok and "AdamW state no training run can produce" in report.reason


def test_invalid_garbage_checkpoint(honest: Honest) -> None:
    cks = list(honest.checkpoints)
    cks[3] = b"garbage" * 4
    report = honest.verify(cks)
    assert not report.ok and report.reason.startswith("checkpoint 3: ")


def test_invalid_no_epochs(honest: Honest) -> None:
    report = honest.verify(honest.checkpoints[:1])
    assert not report.ok and "E >= 1" in report.reason


def test_invalid_replay_without_the_watermark_term(honest: Honest) -> None:
    # The replay runs the loss the miner trained with; leaving a term out changes every epoch.
    report = honest.verify(extra_loss=None)
    assert not report.ok and "does not replay" in report.reason


def test_invalid_deadline_passed(honest: Honest) -> None:
    report = honest.verify(deadline=time.monotonic() - 1.0)
    assert not report.ok and report.timed_out and report.reason.startswith("time is up")
    assert report.checked == [] and report.replay_seconds == 0.0


def test_invalid_deadline_during_replays(honest: Honest) -> None:
    # A watermark term that takes 0.3 s a step: each replay (3 steps) then takes about 1 s, and
    # the deadline, 0.5 s after the loading and the final link would end, falls inside the
    # first replay or, on a slow box, at the latest inside the second.
    def slow_loss(model: nn.Module, config: ReplayConfig) -> Tensor:
        time.sleep(0.3)
        return honest.extra_loss(model, config)

    start = time.monotonic()
    honest.verify(policy=TrajectoryPolicy(q_random=0, q_largest=0, q_anomalous=0))
    cheap = time.monotonic() - start
    report = honest.verify(extra_loss=slow_loss, deadline=time.monotonic() + cheap + 0.5)
    assert not report.ok and report.timed_out, report.reason
    assert report.reason.startswith("time is up") and len(report.checked) < EPOCHS


# --------------------------------------------------------------------------------------------
# Selection and thresholds


def test_choose_epochs_picks_largest_anomalous_and_random() -> None:
    norms = [1.0, 1.0, 10.0, 1.0, 1.0, 1.0, 1.0, 3.0, 1.0, 1.0]
    policy = TrajectoryPolicy(q_random=1, q_largest=1, q_anomalous=2)
    chosen = choose_epochs(norms, policy, b"seed")
    # largest: 3; most anomalous then: 8 (3 / 1), then the earliest of the ratio-1 epochs: 1.
    assert {3, 8, 1} < set(chosen) and len(chosen) == 4 and chosen == sorted(chosen)
    assert choose_epochs(norms, policy, b"seed") == chosen
    randoms = {next(iter(set(choose_epochs(norms, policy, bytes([i]))) - {1, 3, 8}))
               for i in range(20)}
    assert len(randoms) > 2 and randoms <= {2, 4, 5, 6, 7, 9, 10}


def test_choose_epochs_with_more_picks_than_epochs() -> None:
    assert choose_epochs([0.5, 0.2], TrajectoryPolicy(), b"s") == [1, 2]
    assert choose_epochs([0.5], TrajectoryPolicy(), b"s") == [1]


def test_threshold_table_covers_the_registry() -> None:
    from training.models import ARCHITECTURES
    assert {(a, c) for a in ARCHITECTURES for c in ("none", "bf16")} <= set(THRESHOLDS)
    assert threshold_for("unet2d", "none") < threshold_for("unet2d", "bf16")
    with pytest.raises(ValueError, match="no proof-of-learning threshold"):
        threshold_for("gpt", "none")
