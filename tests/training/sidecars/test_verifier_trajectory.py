"""The verifier's proof-of-learning spot-check over HTTP (issue 15): checkpoints fetched with
the model, replays in claim order after the cheap checks, verdicts with `trajectory_failed`.

Real parts: honest miners' runs (the trainer with the miner's epoch seeds and checkpoint
writer, the chain's watermark scheme, sealing), a thief's forged trajectory
(`forgeries.interpolated` from its anchor to the victim's model carrying the thief's mark), a
real HTTP artifact server laid out as a miner publishes (`<token>/model.safetensors`,
`<token>/checkpoints/epoch-NNNN.safetensors`), and the real `Verifier.check_round` with its
download threads and check process.

Three reveals: the thief (the model of an earlier round's winner, the victim, with the thief's
mark) claims the most, an honest miner next, a weaker honest miner least. The thief passes every
cheap check (its score is its own, its watermark its own) and is refuted by its replay; the
honest miner is confirmed after its replay; the weak miner's claim cannot beat the confirmed
score, so its trajectory is never replayed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from abci_app.dlbc.params import Params
from abci_app.dlbc.records import (
    Address,
    Amount,
    Commitment,
    Height,
    Reveal,
    RoundInfo,
    Task,
    TaskId,
    TaskStatus,
)
from abci_app.dlbc.verdicts import read_verdicts
from training.artifacts import load_model, sha256_bytes
from training.data import ArrayDataset, make_segmentation_2d
from training.models import build_model
from training.proof import forgeries
from training.proof.config import ReplayConfig
from training.proof.manifest import checkpoint_file_name
from training.proof.seeds import anchored_model
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.offline_records import reveal, round_info, task_spec
from training.sidecars.scheme import WatermarkScheme
from training.sidecars.sealing import seal_watermark
from training.sidecars.verifier import Verifier, VerifierConfig
from training.trainer import evaluate
from watermark import embed_loss

ARCH, HPARAMS = "unet2d", {"depth": 3, "base_width": 8}
SPEC = task_spec(ARCH, '{"base_width": 8, "depth": 3}', "dice")
SEED = hashlib.sha256(b"verifier trajectory round").digest()
VICTIM, HONEST, WEAK, THIEF = (hashlib.sha256(n).digest()[:20]
                               for n in (b"victim", b"honest", b"weak", b"thief"))
SCHEME = WatermarkScheme.genesis_default()
TASK = Task(TaskId(1), Address(b"\1" * 20), SPEC, Amount(10_000), TaskStatus.SELECTED, 0, (),
            Height(1), 1, 1, None, b"k" * 32, None)


def _config(miner: bytes) -> ReplayConfig:
    return ReplayConfig(
        arch=ARCH, hparams=HPARAMS, round_seed=SEED, miner=miner, learning_rate=3e-3,
        weight_decay=0.0, batch_size=8, loss="auto", watermark_lambda=1.0,
        watermark_temperature=100.0, autocast="none", seal_lr=1e-2, seal_max_steps=2000,
        watermark_threshold_ppm=SCHEME.threshold_ppm, torch_threads=1)


def _key(miner: bytes) -> Any:
    return SCHEME.key(SEED, miner, SCHEME.layer(build_model(ARCH, HPARAMS)))


def _term(miner: bytes) -> forgeries.ExtraLoss:
    key = _key(miner)

    def term(model: nn.Module, config: ReplayConfig) -> Tensor:
        return config.watermark_lambda * embed_loss(model, key,
                                                    temperature=config.watermark_temperature)

    return term


def _sealer(miner: bytes) -> forgeries.Seal:
    key = _key(miner)

    def seal(model: nn.Module) -> None:
        seal_watermark(model, key, SCHEME.threshold, lr=1e-2, max_steps=2000, temperature=100.0)

    return seal


def _publish(root: Path, srv: ArtifactServer, miner: bytes, checkpoints: list[bytes],
             model: bytes, test: ArrayDataset) -> Reveal:
    """Lay the files out as `miner_reveal.publish` does; a reveal claiming the model's score."""
    folder = root / miner.hex()
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(model)
    for epoch, data in enumerate(checkpoints):
        (folder / "checkpoints" / checkpoint_file_name(epoch)).write_bytes(data)
    claim = evaluate(load_model(model, ARCH, HPARAMS), test, "dice")
    rev = reveal(miner, srv.url_for(f"{miner.hex()}/model.safetensors"), sha256_bytes(model),
                 claim)
    return replace(rev, checkpoint_digests=tuple(hashlib.sha256(c).digest()
                                                 for c in checkpoints))


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("pol-verifier")
    root = tmp / "served"
    root.mkdir()
    train = make_segmentation_2d(48, 16, seed=3)  # shapes: learnt in a few epochs
    test = make_segmentation_2d(16, 16, seed=4)
    runs = {m: forgeries.train_trajectory(
        anchored_model(ARCH, HPARAMS, SEED, m), train, _config(m), epochs=e,
        extra_loss=_term(m), seal=_sealer(m), directory=tmp / m.hex())
        for m, e in ((VICTIM, 8), (HONEST, 2), (WEAK, 1))}
    stolen = forgeries.steal(runs[VICTIM].final_model, _config(THIEF), victim_key=_key(VICTIM),
                             thief_key=_key(THIEF), threshold=SCHEME.threshold)
    forged_ckpts, forged_model = forgeries.interpolated(stolen, _config(THIEF), samples=len(train),
                                                        epochs=8, seal=_sealer(THIEF))
    with ArtifactServer(root) as srv:
        # the victim won an earlier round: its model is public, the thief reveals it as its own
        reveals = [_publish(root, srv, m, runs[m].checkpoints, runs[m].final_model, test)
                   for m in (HONEST, WEAK)]
        reveals.append(_publish(root, srv, THIEF, forged_ckpts, forged_model, test))
        base = round_info(1, SEED, [], [])
        info = RoundInfo(replace(base.record, verify_end_ns=time.time_ns() + 60 * 10**9,
                                 reveals=3),
                         (), tuple(Commitment(r.miner, b"\0" * 32) for r in reveals),
                         tuple(reveals), 0)
        cfg = VerifierConfig(workdir=tmp / "verifier", app_home=tmp / "app",
                             allow_private_networks=True, check_threads=1,
                             verify_margin_seconds=0.5, per_model_seconds=40.0)
        (tmp / "app").mkdir(parents=True)
        cfg.workdir.mkdir(parents=True)
        v = Verifier(cfg)
        try:
            checks = v.check_round(info, TASK, test, SCHEME, Params().tolerance_ppm,
                                   pol_epochs=4, train=train,
                                   selection_seed=hashlib.sha256(b"verify block").digest())
        finally:
            v.close()
        yield {"checks": {bytes.fromhex(c.miner): c for c in checks},
               "verdicts": read_verdicts(tmp / "app", 1), "reveals": reveals,
               "workdir": cfg.workdir}


def _honest(checked: dict[str, Any]) -> tuple[Any, Any]:
    """The two honest miners' checks: the one claiming more, then the other (their scores
    come from their anchored starts: which one learnt more in its epochs is the data's say)."""
    a, b = (checked["checks"][m] for m in (HONEST, WEAK))
    return (a, b) if a.claimed_score_ppm >= b.claimed_score_ppm else (b, a)


def test_honest_model_is_confirmed_after_its_replay(checked: dict[str, Any]) -> None:
    chk, _ = _honest(checked)
    assert chk.verdict and chk.watermark_ok and chk.trajectory_ok, chk
    assert chk.score_ppm == chk.claimed_score_ppm > 0
    assert chk.trajectory.startswith("epochs ") and "replayed in" in chk.trajectory


def test_invalid_forged_trajectory_is_refuted_with_trajectory_failed(
        checked: dict[str, Any]) -> None:
    chk = checked["checks"][THIEF]
    best, _ = _honest(checked)
    # Verify the thief claimed the most and passed every cheap check (its own watermark, its
    # own score), and was refuted by its replay alone
    assert chk.claimed_score_ppm > best.claimed_score_ppm
    assert chk.verdict and chk.watermark_ok and chk.score_ppm == chk.claimed_score_ppm, chk
    assert not chk.trajectory_ok and "does not replay" in chk.trajectory, chk
    found = checked["verdicts"]
    assert found is not None and found.complete
    by_miner = {v.miner: v for v in found.verdicts}
    assert by_miner[THIEF].trajectory_failed and not by_miner[THIEF].provenance_ok
    best_miner = bytes.fromhex(best.miner)
    assert not by_miner[best_miner].trajectory_failed and by_miner[best_miner].provenance_ok


def test_a_claim_that_cannot_win_is_never_replayed(checked: dict[str, Any]) -> None:
    best, low = _honest(checked)
    # Verify the stop rule spared the replay (the costly part) of a claim that cannot beat the
    # confirmed score
    assert low.claimed_score_ppm + Params().tolerance_ppm < best.score_ppm, (low, best)
    assert not low.verdict and "not needed" in low.reason, low
    assert low.trajectory == ""
    assert bytes.fromhex(low.miner) not in {v.miner for v in checked["verdicts"].verdicts}


def test_nothing_downloaded_is_left_behind(checked: dict[str, Any]) -> None:
    assert not list(Path(checked["workdir"]).glob("round-1-models-*/*"))
