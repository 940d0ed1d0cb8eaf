"""A killable process that runs the verifier's CPU checks (load, watermark, score) with torch
preloaded (docs/verification.md "Bounded work").

Why a process and not a thread: a thread cannot be stopped. A check that outlives its budget
(a model that is slow to score, a pathological file) used to be abandoned on a daemon thread
that kept computing beside the next check and competed with it for the CPU. Here the check runs
in a child process; on a timeout the parent kills it (SIGKILL), waits for it, and starts a fresh
one, so nothing of the timed-out check is left running. The child is persistent (one start per
verifier and per timeout, not per model): starting Python and importing torch costs about a
second or two (`CheckWorker.start_seconds`, measured by bench/verifier.py), so it is started
before it is needed (`start`) and the round's test set is sent to it once.

Protocol (stdin/stdout of `python -m training.sidecars.check_worker`): frames of a 4-byte
big-endian length and a payload. Parent → child: a JSON frame ``{"op": "check", ...}``
(`CheckJob.to_json`), or ``{"op": "test", ...}`` naming the dtype and shape of the test set's two
arrays, followed by one frame of raw bytes per array. Child → parent: JSON (`ModelCheck.to_json`,
or ``{"error": ...}``). Nothing is pickled either way: no side ever runs code from what it reads,
and the model bytes are read from a digest-checked file by strict safetensors. A child whose
stdin closes exits: it never outlives the verifier.
"""

from __future__ import annotations

import json
import logging
import os
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

import numpy as np

from abci_app.dlbc.records import Reveal, TaskSpec
from training.sidecars.base import WatermarkScheme
from training.sidecars.copy_marks import OtherMark
from training.sidecars.model_check import ModelCheck

if TYPE_CHECKING:
    from training.data import ArrayDataset

log = logging.getLogger("dlbc.verifier.worker")

_LEN = struct.Struct(">I")
#: Largest frame either side accepts: a test set of the verifier's max_data_bytes fits.
MAX_FRAME = 1 << 31


class WorkerFailed(RuntimeError):
    """The check process died or answered nonsense (not the model's fault: no verdict)."""


@dataclass(frozen=True)
class CheckJob:
    """One model to check: its digest-checked file and what the check needs besides the test
    set (which the worker holds per round)."""

    path: Path
    reveal: Reveal
    spec: TaskSpec
    seed: bytes
    scheme: WatermarkScheme
    others: tuple[OtherMark, ...] = ()
    device: str = "cpu"
    round_no: int = 0
    screen: bool = False
    """Score a slice of the test set first and defer a claim far from it (model_check)."""
    checkpoints: tuple[Path, ...] = ()
    """The model's digest-checked checkpoints, epochs 0..E (proof of learning)."""
    pol_epochs: int = 0
    """Epochs of the trajectory to replay once the model itself passed (0: no replay)."""
    selection_seed: bytes = b""
    """The round's spot-check seed (`trajectory_check.selection_seed`)."""
    tolerance_ppm: int = 0
    """The chain's tolerance: only a model whose claim it confirms is worth a replay."""
    timeout: float = 0.0
    """Seconds the parent gives this check; the replay stops in time to answer (0: no bound)."""
    defer_replay: bool = False
    """Answer `replay_pending` instead of replaying: the verifier replays the models it would
    confirm in claim order, after the cheap checks, so the stop rule spares the others."""

    def to_json(self) -> dict[str, Any]:
        return {"op": "check", "path": str(self.path), "reveal": self.reveal.to_json(),
                "spec": self.spec.to_json(), "seed": self.seed.hex(),
                "scheme": [self.scheme.n_bits, self.scheme.matrix, self.scheme.gain,
                           self.scheme.threshold_ppm],
                "others": [[o.miner, o.seed.hex(), o.why] for o in self.others],
                "device": self.device, "round_no": self.round_no, "screen": self.screen,
                "checkpoints": [str(p) for p in self.checkpoints],
                "pol_epochs": self.pol_epochs, "selection_seed": self.selection_seed.hex(),
                "tolerance_ppm": self.tolerance_ppm, "timeout": self.timeout,
                "defer_replay": self.defer_replay}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CheckJob:
        n_bits, matrix, gain, threshold_ppm = doc["scheme"]
        return cls(Path(doc["path"]), Reveal.from_json(doc["reveal"]),
                   TaskSpec.from_json(doc["spec"]), bytes.fromhex(doc["seed"]),
                   WatermarkScheme(n_bits, matrix, gain, threshold_ppm),
                   tuple(OtherMark(m, bytes.fromhex(sd), why) for m, sd, why in doc["others"]),
                   doc["device"], doc["round_no"], doc["screen"],
                   tuple(Path(p) for p in doc["checkpoints"]), doc["pol_epochs"],
                   bytes.fromhex(doc["selection_seed"]), doc["tolerance_ppm"], doc["timeout"],
                   doc["defer_replay"])

    def wants_replay(self, out: ModelCheck) -> bool:
        """Whether `out` (the model's own check) leaves the trajectory to decide: a verdict
        that would otherwise confirm the claim. A refuted or deferred model needs no replay."""
        return bool(self.pol_epochs and self.checkpoints and out.verdict and out.watermark_ok
                    and not out.deferred
                    and abs(out.score_ppm - out.claimed_score_ppm) <= self.tolerance_ppm)


def _test_set_frames(round_no: int, test: ArrayDataset, op: str = "test") -> list[bytes]:
    """A data set as frames: a JSON header with each array's dtype and shape, then each
    array's raw bytes (read back with `np.frombuffer`, which builds no objects). `op` "test"
    for the test set, "train" for the training set a trajectory replay trains on."""
    arrays = (np.ascontiguousarray(test.inputs), np.ascontiguousarray(test.targets))
    head = {"op": op, "round": round_no, "kind": test.kind, "num_classes": test.num_classes,
            "arrays": [[a.dtype.str, list(a.shape)] for a in arrays]}
    return [json.dumps(head).encode(), *(a.tobytes() for a in arrays)]


def _test_set_from_frames(head: dict[str, Any], bodies: list[bytearray]) -> ArrayDataset:
    from training.data import ArrayDataset

    inputs, targets = (np.frombuffer(b, dtype=np.dtype(d)).reshape(shape)
                       for (d, shape), b in zip(head["arrays"], bodies, strict=True))
    return ArrayDataset(inputs, targets, head["kind"], head["num_classes"])


def _write_frame(f: IO[bytes], payload: bytes) -> None:
    f.write(_LEN.pack(len(payload)) + payload)
    f.flush()


def _read_exact_blocking(f: IO[bytes], n: int) -> bytearray | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf  # writable: the test set's arrays are built on it without a copy


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    """n bytes from the pipe `fd` before `deadline` (time.monotonic), else TimeoutError."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("check did not finish in time")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise WorkerFailed("the check process exited")
        buf += chunk
    return bytes(buf)


class CheckWorker:
    """The parent's handle on one check process, replaced whenever a check times out."""

    def __init__(self, *, threads: int | None = None, start_timeout: float = 120.0) -> None:
        self.threads = threads
        self.start_timeout = start_timeout
        self.start_seconds = 0.0
        """How long the last start took (process + torch import), for the logs and the bench."""
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._test: tuple[int, ArrayDataset] | None = None
        self._test_sent = False
        self._train: tuple[int, ArrayDataset] | None = None
        self._train_sent = False

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the process (if not running) and wait until torch is imported."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._reap()
        t0 = time.monotonic()
        threads = self.threads
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "training.sidecars.check_worker", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._test_sent = self._train_sent = False
        self.starts += 1
        try:
            ready = self._read_json(t0 + self.start_timeout)
        except BaseException:
            self.close()
            raise
        if not ready.get("ready"):
            self.close()
            raise WorkerFailed(f"check process did not start: {ready}")
        self.start_seconds = time.monotonic() - t0
        log.debug("check process %d ready in %.2fs", self._proc.pid, self.start_seconds)

    def set_test_set(self, round_no: int, test: ArrayDataset) -> None:
        """The test set later checks score on; sent to the process once (again after a restart)."""
        if self._test is None or self._test[0] != round_no or self._test[1] is not test:
            self._test = (round_no, test)
            self._test_sent = False

    def set_train_set(self, round_no: int, train: ArrayDataset | None) -> None:
        """The training set trajectory replays train on (proof of learning); sent with the
        first check that needs it (again after a restart). None: no replays this round."""
        if train is None:
            self._train, self._train_sent = None, False
        elif self._train is None or self._train[0] != round_no or self._train[1] is not train:
            self._train = (round_no, train)
            self._train_sent = False

    def check(self, job: CheckJob, timeout: float) -> ModelCheck:
        """Run one check; its ModelCheck, or TimeoutError after killing (and replacing) the
        process when it takes longer than `timeout` seconds. WorkerFailed if the process died."""
        self.start()  # a (re)start is not the model's time: the deadline starts after it
        deadline = time.monotonic() + max(0.0, timeout)
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise WorkerFailed("no check process")
        try:
            if not self._test_sent and self._test is not None:
                for frame in _test_set_frames(*self._test):
                    _write_frame(proc.stdin, frame)
                self._test_sent = True
            if job.pol_epochs and not self._train_sent and self._train is not None:
                for frame in _test_set_frames(*self._train, op="train"):
                    _write_frame(proc.stdin, frame)
                self._train_sent = True
            job = replace(job, timeout=max(0.0, deadline - time.monotonic()))
            _write_frame(proc.stdin, json.dumps(job.to_json()).encode())
            answer = self._read_json(deadline)
        except TimeoutError:
            self.kill()
            raise
        except (OSError, WorkerFailed) as exc:
            self.kill()
            raise WorkerFailed(str(exc)) from exc
        if "error" in answer:
            raise WorkerFailed(str(answer["error"]))
        return ModelCheck.from_json(answer)

    def _read_json(self, deadline: float) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise WorkerFailed("no check process")
        fd = proc.stdout.fileno()
        (n,) = _LEN.unpack(_read_exact(fd, _LEN.size, deadline))
        if n > MAX_FRAME:
            raise WorkerFailed(f"check process sent a {n}-byte frame")
        doc = json.loads(_read_exact(fd, n, deadline))
        if not isinstance(doc, dict):
            raise WorkerFailed("check process sent a non-object")
        return doc

    def kill(self) -> None:
        """Stop the current process now (SIGKILL) and wait for it; the next check starts anew."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._reap()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """End the process: closing its stdin makes it exit; killed if it does not at once."""
        proc = self._proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
        self._reap()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ the child


def _serve(threads: int) -> int:
    """The child's loop: read jobs from stdin, answer on the original stdout."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print from any library goes to stderr, never into the protocol
    import torch

    from training.sidecars.model_check import check_model_bytes, screen_set
    from training.sidecars.trajectory_check import check_trajectory

    torch.set_num_threads(max(1, threads))
    import training.models
    import training.trainer
    import watermark  # noqa: F401 - preloaded so the first check pays no import

    del training
    _write_frame(proto_out, json.dumps({"ready": True}).encode())
    test: Any = None
    screen: Any = None
    train: Any = None
    def frame() -> bytearray | None:
        head = _read_exact_blocking(proto_in, _LEN.size)
        if head is None:
            return None  # the verifier closed our stdin (or died): done
        (n,) = _LEN.unpack(head)
        return _read_exact_blocking(proto_in, n)

    while (body := frame()) is not None:
        msg = json.loads(body)
        if msg["op"] in ("test", "train"):
            arrays = [frame() for _ in msg["arrays"]]
            if any(a is None for a in arrays):
                return 0
            data = _test_set_from_frames(msg, [a for a in arrays if a is not None])
            if msg["op"] == "train":
                train = data
            else:
                test, screen = data, screen_set(data)
            continue
        job = CheckJob.from_json(msg)
        try:
            if test is None:
                raise RuntimeError("no test set was sent")
            started = time.monotonic()
            model_bytes = job.path.read_bytes()
            out = check_model_bytes(model_bytes, job.reveal, job.spec, job.seed, test,
                                    scheme=job.scheme, others=job.others, device=job.device,
                                    screen=screen if job.screen else None)
            if job.wants_replay(out) and job.defer_replay:
                out.replay_pending = True
            elif job.wants_replay(out):
                check_trajectory(out, job, model_bytes, train,
                                 deadline=started + job.timeout - 0.5 if job.timeout else None)
            answer: dict[str, Any] = out.to_json()
        except Exception as exc:  # noqa: BLE001 - reported to the parent as no verdict
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        _write_frame(proto_out, json.dumps(answer).encode())
    return 0


if __name__ == "__main__":
    sys.exit(_serve(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
