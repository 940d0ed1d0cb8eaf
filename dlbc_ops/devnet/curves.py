"""Learning curves of each closed round, computed on one background thread (issue 14 part 2).

After a round closes, every miner that revealed has its per-epoch checkpoints in its private
round folder (the `committed` event's `checkpoint_dir`, `epoch_elapsed` the seconds into
training at the end of each epoch). Each checkpoint is scored on the round's test set
(`training.learning_curve.curve`: Dice against epochs and against seconds, what paper Figs. 10
and 12 plot), the points are kept in the history rows (`curve`) and OUT/plots/
learning_curves.png is redrawn for the latest round.

The test set is the one the chain revealed: fetched from the task's `test_uri` (digest-checked
against the spec) and decrypted with the revealed test key, as a validator's verifier does, so
the curves score exactly what the round was judged on.

Why a thread of its own, niced: scoring a dozen checkpoints per miner costs seconds of CPU,
and with pipelined rounds the miners are already training the next round. The main loop only
queues a job; the worker runs at the lowest CPU priority (Linux applies `setpriority` to one
thread when given its native id) with the devnet's torch thread count (one by default), so it
takes the cycles the sidecars leave. A failure is said and skipped: a plot never stops the chain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlbc_ops.devnet.history import History

if TYPE_CHECKING:
    from abci_app.dlbc.records import Task
    from training.data import ArrayDataset

log = logging.getLogger("dlbc.devnet")

LOWEST_PRIORITY = 19
"""`nice` of the worker thread: it runs when the sidecars leave a core idle."""
MAX_POINTS = 16
"""Checkpoints scored per miner and round (evenly spread; the last one always)."""
PNG = "learning_curves.png"


@dataclass(frozen=True, slots=True)
class MinerWork:
    """What one miner left of a round: its checkpoints and when each epoch ended."""

    miner: str
    """Display name (miner-1, ...): the curve's label and the history row."""
    checkpoint_dir: Path
    epoch_elapsed: tuple[float, ...]
    """Seconds into training at the end of epoch 1, 2, ... (the `committed` event's)."""


@dataclass(frozen=True, slots=True)
class CurveJob:
    round_no: int
    task: Task
    """The round's task record once closed: its spec and the revealed test key."""
    work: tuple[MinerWork, ...]


def checkpoints_in(directory: Path) -> list[Path]:
    """The trained epochs' checkpoints of a round folder in epoch order (trainer's
    `epoch-NNNN.safetensors`; the zero-padded names sort by epoch). Epoch 0, the anchored start
    a proof-of-learning run also writes, is no point of a learning curve."""
    return [p for p in sorted(directory.glob("epoch-*.safetensors"))
            if p.name != "epoch-0000.safetensors"]


def load_test_set(task: Task, workdir: Path, *, allow_private: bool = True) -> ArrayDataset:
    """The round's revealed test set: fetched from `test_uri`, checked against the spec's
    digest, decrypted with the revealed key (ValueError if the key was never revealed)."""
    from training.sidecars.task_inputs import fetch_dataset

    if task.test_key is None:
        raise ValueError(f"task {task.id}: the test key was never revealed")
    spec = task.spec
    dest = workdir / f"task-{task.id}-test.npz.enc"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return fetch_dataset(spec.test_uri, spec.test_sha256.hex(), 0, task.test_key, dest,
                             256 * 1024 * 1024, spec.num_classes or None,
                             allow_private=allow_private)
    finally:
        dest.unlink(missing_ok=True)


def compute_curves(job: CurveJob, test: ArrayDataset,
                   stop: threading.Event | None = None) -> dict[str, list[dict[str, Any]]]:
    """{miner: [{"epoch", "seconds", "score"}, ...]} for each miner of `job` with checkpoints;
    `stop` set: the miners not yet scored are left out."""
    from training.learning_curve import curve

    spec = job.task.spec
    hparams = json.loads(spec.hyperparams_json or "{}")
    curves: dict[str, list[dict[str, Any]]] = {}
    for w in job.work:
        if stop is not None and stop.is_set():
            break
        ckpts = checkpoints_in(w.checkpoint_dir)
        if not ckpts:
            log.info("round %d: %s left no checkpoints in %s", job.round_no, w.miner,
                     w.checkpoint_dir)
            continue
        points = curve(ckpts, list(w.epoch_elapsed), test, spec.architecture, hparams,
                       spec.metric, max_points=MAX_POINTS)
        curves[w.miner] = [asdict(p) for p in points]
    return curves


class CurveWorker:
    """One thread that turns queued `CurveJob`s into history rows and the PNG."""

    def __init__(self, history: History, plots_dir: Path, workdir: Path,
                 say: Callable[[str], None]) -> None:
        self.history = history
        self.plots_dir = plots_dir
        self.workdir = workdir
        self.say = say
        self._jobs: queue.Queue[CurveJob | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learning-curves", daemon=True)
        self._started = False

    def submit(self, job: CurveJob) -> None:
        if not self._started:
            self._thread.start()
            self._started = True
        self._jobs.put(job)

    def drain(self, timeout: float) -> bool:
        """Wait until every queued job is done (True) or `timeout` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._jobs.all_tasks_done:
            while self._jobs.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._jobs.all_tasks_done.wait(min(left, 1.0))
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Drop the jobs not started, let the running one end after its current miner."""
        self._stop.set()
        if not self._started:
            return
        with contextlib.suppress(queue.Full):
            self._jobs.put_nowait(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: the normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        while True:
            job = self._jobs.get()
            try:
                if job is None or self._stop.is_set():
                    if job is None:
                        return
                    continue
                self._do(job)
            except Exception as exc:  # a plot must never stop the chain: said and logged
                log.exception("round %s: learning curves failed", getattr(job, "round_no", "?"))
                self.say(f"round {getattr(job, 'round_no', '?')}: no learning curves: {exc}")
            finally:
                self._jobs.task_done()

    def _do(self, job: CurveJob) -> None:
        from dlbc_ops.devnet.plots import write_learning_curves

        test = load_test_set(job.task, self.workdir)
        curves = compute_curves(job, test, self._stop)
        for miner, points in curves.items():
            self.history.record(job.round_no, miner, curve=points)
        self.history.save()
        if not curves:
            return
        path = write_learning_curves(curves, job.round_no, self.plots_dir / PNG)
        self.say(f"round {job.round_no}: learning curves {path} ({_summary(curves)})")


def _summary(curves: Mapping[str, Sequence[dict[str, Any]]]) -> str:
    """"miner-1 0.612 -> 0.874 over 40 epochs; ..." from each curve's first and last point."""
    parts = []
    for miner, pts in sorted(curves.items()):
        first, last = pts[0], pts[-1]
        parts.append(f"{miner} {float(first['score']):.3f} -> {float(last['score']):.3f} "
                     f"over {int(last['epoch'])} epoch(s)")
    return "; ".join(parts)
