"""One round's VERIFY work for the verifier sidecar (docs/verification.md "Order, stop rule and
budgets", "Bounded work"): the download pool, the queues of downloaded models, the check
process, the verdict file.

Why its own module: `verifier.py` is the sidecar (when to act, the test set, what to read from
the chain); this is the scheduler of one round, the part the issue 13 attacks aim at. The main
thread schedules; download threads only fetch, each bounded by its own deadline and minimum
rate (`model_check.fetch_model`); the check process only checks (`check_worker`), killed and
replaced when it overruns. Which reveals still matter and how long each may take is
`verify_plan`'s.

Queues: `ready` holds downloaded models by claimed score (best first); `deferred` holds models
whose screen said their claim is far off (`model_check.check_model_bytes`), scored in full
only when nothing in `ready` is waiting and no download is about to land.

On a chain that checks training trajectories (`proof_of_learning` > 0, issue 15) a model's
download also fetches its checkpoints (`trajectory_check.fetch_checkpoints`, within the model's
own deadline), and its check replays `proof_of_learning` epochs of them once the model itself
passed; the verdict says `trajectory_failed` when the replay refutes it.
"""

from __future__ import annotations

import heapq
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from abci_app.dlbc.params import PPM
from abci_app.dlbc.records import Reveal, RoundInfo, Task
from training.sidecars.base import WatermarkScheme
from training.sidecars.check_worker import CheckJob, WorkerFailed
from training.sidecars.copy_marks import OtherMark
from training.sidecars.model_check import ModelCheck, Unavailable, fetch_model, model_cap
from training.sidecars.trajectory_check import checkpoint_cap, fetch_checkpoints
from training.sidecars.verify_plan import MIN_USEFUL_SECONDS, RoundPlan

if TYPE_CHECKING:
    from training.sidecars.verifier import Verifier


@dataclass(order=True)
class _Ready:
    """A downloaded model waiting for its check, ordered like `check_order`."""

    neg_claim: int
    miner: bytes
    reveal: Reveal = field(compare=False)
    path: Path = field(compare=False)
    spent: float = field(compare=False)
    """Seconds of the model's budget used so far (its download, then its screen)."""
    budget: float = field(compare=False)
    screen: bool = field(default=True, compare=False)
    checkpoints: tuple[Path, ...] = field(default=(), compare=False)
    """Its digest-checked checkpoints (proof of learning), epochs 0..E; () when not checked."""
    replay: bool = field(default=False, compare=False)
    """Its own checks passed: this check replays its trajectory (`RoundRun.replays`)."""


class RoundRun:
    """One round's VERIFY work: the download pool, the ready queue, the worker, the file.

    The main thread schedules; download threads only fetch (each bounded by its own deadline);
    the check process only checks. Everything it started has ended when `close` returns."""

    def __init__(self, v: Verifier, info: RoundInfo, task: Task, plan: RoundPlan,
                 scheme: WatermarkScheme, others: tuple[OtherMark, ...], end: float, *,
                 pol_epochs: int = 0, selection_seed: bytes = b"") -> None:
        self.v, self.cfg, self.info, self.task, self.plan = v, v.vcfg, info, task, plan
        self.scheme, self.others, self.end = scheme, others, end
        self.pol_epochs, self.selection_seed = pol_epochs, selection_seed
        """Epochs replayed per model (the chain's `proof_of_learning`; 0: none) and the seed
        that picks them (`trajectory_check.selection_seed`)."""
        self.n = info.record.round
        self.cap = model_cap(task.spec, self.cfg.max_model_bytes)
        self.dir = v.cfg.workdir / f"round-{self.n}-models-{os.getpid()}"
        self.results: dict[bytes, ModelCheck] = {}
        self.pool = ThreadPoolExecutor(max(1, self.cfg.download_workers),
                                       thread_name_prefix=f"verify-fetch-{self.n}")
        self.fetching: dict[Future[tuple[ModelCheck | tuple[Path, ...] | None, float]],
                            tuple[Reveal, float]] = {}
        self.ready: list[_Ready] = []
        self.deferred: list[_Ready] = []
        """Screened models whose claim looked far off: scored in full when `ready` is empty."""
        self.replays: list[_Ready] = []
        """Models that passed their own checks and await the replay of their trajectory (the
        costly part: epochs of training), best claim first, after every cheap check, so that
        once the best is confirmed the stop rule drops the replays of models that cannot win."""

    # -- the schedule

    def run(self) -> list[ModelCheck]:
        self.dir.mkdir(parents=True, exist_ok=True)
        for rev in self.plan.reveals:  # in check order: the pool fetches the best claims first
            self._submit(rev)
        while not self.plan.complete() and time.monotonic() < self.end:
            self._drop_unneeded()
            self._collect_downloads()
            if self.ready:
                self._check(heapq.heappop(self.ready))
            elif self.replays:
                self._check(heapq.heappop(self.replays))
            elif self.deferred and not self._worth_waiting():
                self._check(heapq.heappop(self.deferred))
            elif self.fetching:
                wait(list(self.fetching), timeout=max(0.0, self.end - time.monotonic()),
                     return_when=FIRST_COMPLETED)
            else:
                break
        self._collect_downloads()
        for rev in self.plan.pending():
            self.v.count_error("timeout", "round %d: VERIFY time is up; %s gets no verdict",
                               self.n, rev.miner.hex())
            self._record(ModelCheck.of(rev, verdict=False, reason="VERIFY time is up"))
        self._write(complete=True)
        return [self.results[r.miner] if self.plan.needed(r) else ModelCheck.of(
            r, verdict=False, reason="not needed: its claim cannot beat a confirmed model")
            for r in self.plan.reveals]

    def _worth_waiting(self) -> bool:
        """Whether to wait for a download rather than score a deferred model in full: only
        while a needed download could still land soon (a second), so that an honest model
        behind slow drips is screened before the suspects are scored."""
        if not self.fetching:
            return False
        wait(list(self.fetching), timeout=min(1.0, max(0.0, self.end - time.monotonic())),
             return_when=FIRST_COMPLETED)
        return any(f.done() for f in self.fetching)

    def close(self) -> None:
        """Cancel what has not started; the running downloads end at their own deadline."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _submit(self, rev: Reveal) -> None:
        budget = self.v.ledger.budget(rev.miner, self.n, self.cfg.per_model_seconds)
        if budget < MIN_USEFUL_SECONDS:
            self.v.count_error("budget", "round %d: %s spent its verifier time; no verdict",
                               self.n, rev.miner.hex())
            self._record(ModelCheck.of(rev, verdict=False, reason="per-miner budget spent"))
            return
        fut = self.pool.submit(self._download, rev, budget)
        self.fetching[fut] = (rev, budget)

    def _path(self, rev: Reveal) -> Path:
        return self.dir / f"{rev.miner.hex()}.safetensors"

    def _checkpoint_dir(self, rev: Reveal) -> Path:
        return self.dir / f"{rev.miner.hex()}-checkpoints"

    def _discard(self, rev: Reveal) -> None:
        """Delete a model's downloaded files (model and checkpoints)."""
        self._path(rev).unlink(missing_ok=True)
        shutil.rmtree(self._checkpoint_dir(rev), ignore_errors=True)

    def _download(self, rev: Reveal, budget: float
                  ) -> tuple[ModelCheck | tuple[Path, ...] | None, float]:
        """On a pool thread: fetch within the model's budget (counted from now, not from when
        it was queued) and the round's end, with its checkpoints when the chain checks
        trajectories. Returns (None, or the checkpoints' paths, when the files are there, else
        its refutation or no-verdict outcome; seconds spent)."""
        t0 = time.monotonic()
        deadline = min(t0 + budget, self.end)
        if deadline - t0 < MIN_USEFUL_SECONDS:
            return ModelCheck.of(rev, verdict=False, reason="VERIFY time is up"), 0.0
        try:
            out: ModelCheck | tuple[Path, ...] | None = fetch_model(
                rev, self._path(rev), max_bytes=self.cap, timeout=deadline - t0,
                allow_file=self.cfg.allow_file_uris,
                allow_private=self.cfg.allow_private_networks,
                min_rate_bps=self.cfg.min_rate_bps, deadline=deadline)
            if out is None and self.pol_epochs:
                got = fetch_checkpoints(rev, self._checkpoint_dir(rev),
                                        max_bytes=checkpoint_cap(self.cap), deadline=deadline,
                                        allow_file=self.cfg.allow_file_uris,
                                        allow_private=self.cfg.allow_private_networks,
                                        min_rate_bps=self.cfg.min_rate_bps)
                out = got if isinstance(got, ModelCheck) else tuple(got)
        except Unavailable as exc:
            out = ModelCheck.of(rev, verdict=False,
                                reason=f"{exc} (after {time.monotonic() - t0:.1f}s)")
        return out, time.monotonic() - t0

    def _drop_unneeded(self) -> None:
        for fut, (rev, _b) in list(self.fetching.items()):
            if not self.plan.needed(rev) and fut.cancel():
                del self.fetching[fut]
        for queue in (self.ready, self.deferred, self.replays):
            keep = [r for r in queue if self.plan.needed(r.reveal)]
            for r in queue:
                if not self.plan.needed(r.reveal):
                    self._discard(r.reveal)
            if len(keep) != len(queue):
                queue[:] = keep
                heapq.heapify(queue)

    def _collect_downloads(self) -> None:
        for fut in [f for f in self.fetching if f.done()]:
            rev, budget = self.fetching.pop(fut)
            if fut.cancelled():
                continue
            try:
                out, secs = fut.result()
            except Exception as exc:  # noqa: BLE001 - a bug in a download must not end VERIFY
                self.v.metrics.inc("errors_total", kind="check")
                self.v.log.error("round %d: fetching %s failed: %r", self.n, rev.miner.hex(), exc)
                self._record(ModelCheck.of(rev, verdict=False, reason=f"internal error: {exc}"))
                continue
            if out is None or isinstance(out, tuple):
                heapq.heappush(self.ready, _Ready(-rev.claimed_score_ppm, rev.miner, rev,
                                                  self._path(rev), secs, budget,
                                                  checkpoints=out or ()))
                continue
            self._discard(rev)
            if not out.verdict:
                self.v.count_error("model_unavailable", "round %d: no verdict for %s: %s",
                                   self.n, rev.miner.hex(), out.reason)
            out.seconds = secs
            self._record(out, charge=secs)

    def _check(self, item: _Ready) -> None:
        rev = item.reveal
        t0 = time.monotonic()
        keep_file = False
        try:
            self.v.worker.start()  # after a kill: the restart is not this model's time
            t0 = time.monotonic()
            left = min(item.budget - item.spent, self.end - t0)
            if left <= 0:
                raise TimeoutError("its budget is spent")
            job = CheckJob(item.path, rev, self.task.spec, self.info.record.seed,
                           self.scheme, self.others, self.cfg.device, self.n,
                           screen=item.screen, checkpoints=item.checkpoints,
                           pol_epochs=self.pol_epochs if item.checkpoints else 0,
                           selection_seed=self.selection_seed,
                           tolerance_ppm=self.plan.tolerance_ppm, defer_replay=not item.replay)
            chk = self.v.worker.check(job, left)
            if chk.replay_pending:  # its own checks passed: replayed in claim order, later
                item.spent += time.monotonic() - t0
                item.replay, item.screen = True, False
                heapq.heappush(self.replays, item)
                keep_file = True
                return
            if chk.deferred:  # a claim far from its screen: scored in full after the others
                item.spent += time.monotonic() - t0
                item.screen = False
                heapq.heappush(self.deferred, item)
                keep_file = True
                self.v.log.info("round %d: %s claimed %d, %s", self.n, chk.miner,
                                chk.claimed_score_ppm, chk.reason)
                return
        except TimeoutError as exc:
            self.v.count_error("timeout", "round %d: no verdict for %s: %s", self.n,
                               rev.miner.hex(), exc)
            chk = ModelCheck.of(rev, verdict=False, reason=f"out of time: {exc}")
        except WorkerFailed as exc:
            self.v.metrics.inc("errors_total", kind="check")
            self.v.log.warning("round %d: checking %s failed: %s", self.n, rev.miner.hex(), exc)
            chk = ModelCheck.of(rev, verdict=False, reason=f"internal error: {exc}")
        finally:
            if not keep_file:
                self._discard(rev)
        chk.seconds = item.spent + time.monotonic() - t0
        self._record(chk, charge=chk.seconds)

    # -- outcomes

    def _record(self, chk: ModelCheck, *, charge: float = 0.0) -> None:
        """Keep an outcome, feed the stop rule and the miner ledger, and rewrite the file."""
        miner = bytes.fromhex(chk.miner)
        self.results[miner] = chk
        self.plan.record(miner, verdict=chk.verdict, watermark_ok=chk.confirms,
                         score_ppm=chk.score_ppm, claimed_ppm=chk.claimed_score_ppm)
        if not (chk.confirms
                and abs(chk.score_ppm - chk.claimed_score_ppm) <= self.plan.tolerance_ppm):
            self.v.ledger.charge(miner, self.n, charge)
        if chk.verdict and chk.reason:
            self.v.count_error("bad_model", "round %d: %s: %s", self.n, chk.miner, chk.reason)
        self.v.log.info(
            "round %d: %s claimed %d measured %d watermark %s (%.1fs)%s", self.n, chk.miner,
            chk.claimed_score_ppm, chk.score_ppm, "ok" if chk.watermark_ok else "NO",
            chk.seconds, "" if chk.verdict else f" -> no verdict ({chk.reason})")
        if chk.trajectory:
            self.v.log.info("round %d: %s trajectory %s: %s", self.n, chk.miner,
                            "ok" if chk.trajectory_ok else "FAILED", chk.trajectory)
        if chk.verdict:
            self._write(complete=self.plan.complete())

    def _write(self, *, complete: bool) -> None:
        from abci_app.dlbc.verdicts import Verdict, write_verdicts

        # only what settlement needs: a verdict on a reveal below the stop line (fetched
        # speculatively on the download pool) is left out, so every honest verifier's complete
        # file holds the same set (verify_plan's line depends only on the confirmed scores)
        needed = {r.miner for r in self.plan.reveals if self.plan.needed(r)}
        verdicts = [Verdict(m, bytes.fromhex(c.model_digest), c.watermark_ok,
                            max(0, min(PPM, c.score_ppm)), not c.trajectory_ok)
                    for m, c in self.results.items() if c.verdict and m in needed]
        write_verdicts(self.cfg.app_home, self.n, verdicts, complete=complete)
