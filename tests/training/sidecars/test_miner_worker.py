"""The miner's background threads (training/sidecars/miner_worker.py), the split data fetch
(task_inputs.download_dataset / decrypt_downloaded) and what the training thread does with a
failed prefetch (miner_train): real threads, real HTTP, real files, no chain."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from abci_app.dlbc.records import (
    Address,
    Amount,
    Height,
    Phase,
    RoundNo,
    Task,
    TaskId,
    TaskStatus,
)
from training.artifacts import ArtifactError, DigestMismatch, TooSlow
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import WatermarkScheme
from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.miner_state import RoundSkipped, RoundWork
from training.sidecars.miner_train import TrainJob, _training_set
from training.sidecars.miner_worker import MinerWorker
from training.sidecars.offline_records import round_info
from training.sidecars.publisher import DemoDataConfig, prepare_demo_task
from training.sidecars.task_inputs import decrypt_downloaded, download_dataset

from .helpers import key

DEMO = DemoDataConfig(samples=24, image_size=16, hparams={"depth": 2, "base_width": 16})


def _job(n: int, spans: dict[int, tuple[float, float]], seconds: float,
         halt: threading.Event | None = None) -> RoundWork:
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end and not (halt is not None and halt.is_set()):
        time.sleep(0.01)
    spans[n] = (t0, time.monotonic())
    return RoundWork(round=n, task_id=n)


def test_trainings_run_one_at_a_time_in_order() -> None:
    woken = threading.Event()
    worker = MinerWorker(on_done=woken.set)
    spans: dict[int, tuple[float, float]] = {}
    try:
        first = worker.submit(1, lambda: _job(1, spans, 0.3))
        second = worker.submit(2, lambda: _job(2, spans, 0.1))
        # Verify both are known while queued/running, so the loop starts neither again
        assert worker.has_job(1) and worker.has_job(2) and worker.training
        assert second.result(timeout=5).round == 2 and first.result(timeout=5).round == 1
        # Verify round 2's training started only after round 1's ended
        assert spans[2][0] >= spans[1][1]
        # Verify a finished training woke the loop, and each result is handed out once
        assert woken.wait(1)
        assert [n for n, _f in worker.finished()] == [1, 2]
        assert worker.finished() == [] and not worker.has_job(1) and not worker.training
    finally:
        worker.close()


def test_close_stops_the_running_training_and_drops_queued_ones() -> None:
    worker = MinerWorker()
    spans: dict[int, tuple[float, float]] = {}
    running = worker.submit(1, lambda: _job(1, spans, 30, worker.halt))
    queued = worker.submit(2, lambda: _job(2, spans, 30, worker.halt))
    while 1 not in spans and not running.running():
        time.sleep(0.01)
    t0 = time.monotonic()
    worker.close()
    # Verify close returned as soon as the running job saw `halt`, and the queued never ran
    assert time.monotonic() - t0 < 5
    assert running.done() and queued.cancelled() and 2 not in spans


def test_invalid_prefetch_failure_is_handed_over_and_can_be_retried() -> None:
    worker = MinerWorker()
    try:
        def boom() -> Path:
            raise ArtifactError("digest mismatch")

        failed = worker.prefetch(3, boom)
        assert isinstance(failed.exception(timeout=5), ArtifactError)
        assert worker.download(3) is failed  # the job that waits on it sees the failure
        again = worker.prefetch(3, lambda: Path("/tmp/x"))
        assert again is not failed and again.result(timeout=5) == Path("/tmp/x")
        assert worker.download(3) is again
        worker.forget(3)
        assert worker.download(3) is None
    finally:
        worker.close()


@pytest.fixture()
def prepared(tmp_path: Path):
    root = tmp_path / "artifacts"
    root.mkdir()
    with ArtifactServer(root) as srv:
        yield prepare_demo_task(root / "demo", srv.base_url, DEMO, "demo"), srv


def test_download_then_decrypt_with_the_key_released_later(prepared, tmp_path: Path) -> None:
    task, srv = prepared
    s = task.spec
    dest = tmp_path / "round-1-train.npz.enc"
    # Verify the ciphertext downloads without any key and is exactly the published bytes
    path = download_dataset(s.data_uri, bytes(s.data_sha256).hex(), s.data_size_bytes, dest,
                            1 << 20, allow_private=True)
    assert path == dest and dest.read_bytes() == (task.directory / "train.npz.enc").read_bytes()
    # Verify a restarted miner keeps a complete earlier download: no second fetch needed
    srv.stop()
    again = download_dataset(s.data_uri, bytes(s.data_sha256).hex(), s.data_size_bytes, dest,
                             1 << 20, allow_private=True)
    assert again == dest
    data = decrypt_downloaded(dest, task.train_key, 2)
    assert len(data) == s.num_samples
    with pytest.raises(ValueError):
        decrypt_downloaded(dest, task.test_key, 2)


def test_invalid_download_of_a_tampered_earlier_file_is_fetched_again(prepared,
                                                                      tmp_path: Path) -> None:
    task, _srv = prepared
    s = task.spec
    dest = tmp_path / "round-1-train.npz.enc"
    dest.write_bytes(b"not the ciphertext")
    download_dataset(s.data_uri, bytes(s.data_sha256).hex(), s.data_size_bytes, dest, 1 << 20,
                     allow_private=True)
    assert dest.read_bytes() == (task.directory / "train.npz.enc").read_bytes()
    # ... and a wrong digest is still refused, leaving the good file untouched
    with pytest.raises(ArtifactError, match="digest mismatch"):
        download_dataset(s.data_uri, "00" * 32, s.data_size_bytes, dest, 1 << 20,
                         allow_private=True)
    assert dest.read_bytes() == (task.directory / "train.npz.enc").read_bytes()


def _job_inputs(task_prep: Any, tmp_path: Path, prefetch: Future[Path]) -> tuple[Miner, TrainJob]:
    """A miner (no chain: `_training_set` sends nothing) and round 4's job for `task_prep`."""
    spec = task_prep.spec
    task = Task(TaskId(1), Address(b"\1" * 20), spec, Amount(10_000), TaskStatus.SELECTED, 0,
                (RoundNo(4),), Height(1), 0, 0, task_prep.train_key, None, None)
    info = round_info(4, b"\4" * 32, [], [])
    info = replace(info, record=replace(info.record, phase=Phase.TRAIN,
                                        train_end_ns=time.time_ns() + 60 * 10**9))
    miner = Miner(MinerConfig(rpc_url="http://127.0.0.1:1", workdir=tmp_path / "m",
                              allow_private_networks=True, progress=False), key(62))
    return miner, TrainJob(info, task, WatermarkScheme.genesis_default(), prefetch)


def _failed(exc: Exception) -> Future[Path]:
    fut: Future[Path] = Future()
    fut.set_exception(exc)
    return fut


def test_prefetch_that_failed_on_its_server_is_fetched_again(prepared, tmp_path: Path) -> None:
    """The publisher's server answered 404 while the round was ANNOUNCED: at key time the
    training thread downloads once more instead of giving the round up."""
    task, _srv = prepared
    miner, job = _job_inputs(task, tmp_path, _failed(ArtifactError("GET ...: HTTP 404")))
    try:
        data = _training_set(miner, job)
        assert len(data) == task.spec.num_samples
        assert not miner.train_data_path(4).exists()  # the ciphertext is gone once decrypted
    finally:
        miner.teardown()


@pytest.mark.parametrize("exc", [DigestMismatch("digest mismatch"), TooSlow("below the rate")])
def test_invalid_prefetch_that_failed_for_good_skips_the_round(prepared, tmp_path: Path,
                                                               exc: Exception) -> None:
    # the server still serves the right bytes: a second download would succeed, so the skip
    # shows that none was tried
    task, _srv = prepared
    miner, job = _job_inputs(task, tmp_path, _failed(exc))
    try:
        with pytest.raises(RoundSkipped, match="training data unusable") as info:
            _training_set(miner, job)
        assert info.value.kind == "data"
    finally:
        miner.teardown()
