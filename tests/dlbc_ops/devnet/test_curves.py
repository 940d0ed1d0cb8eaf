"""The devnet's learning curves (dlbc_ops/devnet/curves.py): a real tiny U-Net trained with
per-epoch checkpoints, its round's test set encrypted and served over real HTTP, the worker
thread scoring every checkpoint into the history and drawing the PNG."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from abci_app.dlbc.records import Address, Amount, Height, Task, TaskId, TaskStatus
from dlbc_ops.devnet.curves import PNG, CurveJob, CurveWorker, MinerWork, checkpoints_in
from dlbc_ops.devnet.history import History
from training.artifacts import sha256_bytes
from training.data import make_segmentation_2d
from training.encryption import encrypt_dataset, generate_key
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.offline_records import task_spec

HPARAMS = {"depth": 1, "base_width": 4}
EPOCHS = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[float, ...]]:
    """A miner's round folder: EPOCHS checkpoints and the seconds at each epoch's end."""
    import torch

    from training.models import build_model
    from training.trainer import EpochReport, TrainConfig, train

    torch.set_num_threads(1)
    ckpts = tmp_path_factory.mktemp("miner") / "checkpoints"
    elapsed: list[float] = []

    def note(r: EpochReport) -> None:
        elapsed.append(r.elapsed)

    train(build_model("unet2d", HPARAMS, seed=1), make_segmentation_2d(24, 16, seed=1),
          TrainConfig(budget_seconds=60, max_epochs=EPOCHS, batch_size=8, device="cpu",
                      checkpoint_dir=ckpts, progress=False), callbacks=[note])
    return ckpts, tuple(elapsed)


@pytest.fixture
def served_task(tmp_path: Path) -> Iterator[Task]:
    """A task whose revealed test set is served by a real artifact server."""
    key = generate_key()
    blob = encrypt_dataset(key, make_segmentation_2d(12, 16, seed=2))
    (tmp_path / "served" / "t").mkdir(parents=True)
    (tmp_path / "served" / "t" / "test.npz.enc").write_bytes(blob)
    server = ArtifactServer(tmp_path / "served")
    server.start()
    try:
        spec = replace(task_spec("unet2d", json.dumps(HPARAMS), "dice"),
                       test_uri=server.url_for("t/test.npz.enc"),
                       test_sha256=bytes.fromhex(sha256_bytes(blob)), num_classes=2,
                       input_shape=(1, 16, 16))
        yield Task(TaskId(7), Address(b"\1" * 20), spec, Amount(10), TaskStatus.DONE, 0, (),
                   Height(1), 1, 1, b"k" * 32, key, None)
    finally:
        server.stop()


def test_checkpoints_in_epoch_order(tmp_path: Path) -> None:
    for e in (10, 2, 1):
        (tmp_path / f"epoch-{e:04d}.safetensors").write_bytes(b"")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert [p.name for p in checkpoints_in(tmp_path)] == [
        "epoch-0001.safetensors", "epoch-0002.safetensors", "epoch-0010.safetensors"]


def test_worker_scores_each_checkpoint_and_draws_the_png(
        tmp_path: Path, trained: tuple[Path, tuple[float, ...]], served_task: Task) -> None:
    ckpts, elapsed = trained
    history = History(tmp_path / "history.json")
    said: list[str] = []
    worker = CurveWorker(history, tmp_path / "plots", tmp_path / "work", said.append)
    try:
        worker.submit(CurveJob(4, served_task, (MinerWork("miner-1", ckpts, elapsed),)))
        assert worker.drain(120)
    finally:
        worker.close()
    points = history.curves(4)["miner-1"]
    assert [p["epoch"] for p in points] == list(range(1, EPOCHS + 1))
    assert [p["seconds"] for p in points] == pytest.approx(list(elapsed))
    assert all(0.0 <= p["score"] <= 1.0 for p in points)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved[0]["curve"] == points  # kept across runs
    assert (tmp_path / "plots" / PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(s.startswith("round 4: learning curves") for s in said), said
    assert not list((tmp_path / "work").glob("*.enc"))  # the fetched ciphertext is gone


def test_invalid_job_without_test_key_is_said_and_the_worker_goes_on(
        tmp_path: Path, trained: tuple[Path, tuple[float, ...]], served_task: Task) -> None:
    ckpts, elapsed = trained
    history = History(tmp_path / "history.json")
    said: list[str] = []
    worker = CurveWorker(history, tmp_path / "plots", tmp_path / "work", said.append)
    try:
        worker.submit(CurveJob(1, replace(served_task, test_key=None),
                               (MinerWork("miner-1", ckpts, elapsed),)))
        worker.submit(CurveJob(2, served_task, (MinerWork("miner-2", ckpts, elapsed),)))
        assert worker.drain(120)
    finally:
        worker.close()
    assert any("round 1: no learning curves" in s and "never revealed" in s for s in said)
    assert history.curves(1) == {} and set(history.curves(2)) == {"miner-2"}
