"""The verifier sidecar: one per validator, the eyes behind its vote extension
(docs/verification.md).

In VERIFY of every round the verifier
1. fetches the revealed test set (URI and digest from the task spec, key from RevealTestSet;
   already in REVEAL, as soon as the key lands),
2. goes through the revealed models in decreasing claimed score and stops once settlement can
   no longer change (`training.sidecars.verify_plan`: after a confirmation at measured score s,
   only claims c with c + tolerance >= s can still win). `training.sidecars.verify_round`
   schedules the round: downloads on a bounded pool of threads, each ending by itself at its
   deadline or when the server drips below `min_rate_bps` (`training.artifacts.fetch`); the
   downloaded model with the highest claim is checked next in a killable worker process
   (`training.sidecars.check_worker` running `training.sidecars.model_check`: strict
   safetensors load → the revealing miner's watermark → no other miner's watermark → a screen
   on a slice of the test set → the score), killed and replaced when it overruns its budget,
3. writes the verdicts with `abci_app.dlbc.verdicts.write_verdicts(app_home, round, ...)` after
   every verdict: `complete=False` while a needed reveal is still open, `complete=True` once the
   stop rule is met or VERIFY is about to end (`verify_margin_seconds`), whichever is first. The
   validator's app reads the file at every ExtendVote, so the round settles on what is there.

Budgets (so 50 sybil reveals cannot starve the honest one): `per_model_seconds` of download +
check work per model, `per_miner_seconds` over `per_miner_rounds` rounds of unconfirmed work per
miner address, `min_rate_bps` for every download, `download_workers` concurrent downloads.

Verdict policy (`model_check`): a provable fault is a negative verdict, a model that could not be
obtained or checked in time gets no verdict, a reveal below the stop line gets no verdict (not
even a finding a speculative download already had).

Copy/overwrite defence: `training.sidecars.copy_marks` (every earlier reveal and winner of a task
of the same architecture, `MarkIndex`).

Proof of learning (issue 15, docs/proof_of_learning.md): on a chain with `proof_of_learning` > 0
the verifier also fetches the round's training set (its key was released in TRAIN) during
REVEAL, downloads every checked model's checkpoints with the model, and replays that many
epochs of the trajectory of each model that passed everything else
(`training.sidecars.trajectory_check`), the epochs drawn from the hash of the block that began
VERIFY. A training set it cannot obtain leaves the trajectories unchecked, and those models
without a verdict: the verifier never confirms what it could not check.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from abci_app.dlbc.params import Params
from abci_app.dlbc.records import Phase, RoundInfo, Task
from abci_app.keyfile import KeyPair
from training.data import ArrayDataset
from training.sidecars.base import (
    Sidecar,
    SidecarConfig,
    WatermarkParamsError,
    WatermarkScheme,
    seconds_left,
)
from training.sidecars.check_worker import CheckWorker
from training.sidecars.copy_marks import MarkIndex, OtherMark
from training.sidecars.metrics_server import Metrics
from training.sidecars.model_check import ModelCheck, Unavailable, check_model
from training.sidecars.rpc_client import RpcClient
from training.sidecars.task_inputs import fetch_dataset
from training.sidecars.trajectory_check import selection_seed
from training.sidecars.verify_plan import MinerLedger, RoundPlan, check_order
from training.sidecars.verify_round import RoundRun

__all__ = ["ModelCheck", "TestSetUnusable", "Unavailable", "Verifier", "VerifierConfig",
           "check_model"]


class TestSetUnusable(Exception):
    """The revealed test set cannot be fetched, does not match its digest, or does not decrypt
    or load: the publisher's fault, reported in the vote extension."""


@dataclass
class VerifierConfig(SidecarConfig):
    app_home: Path = field(default_factory=lambda: Path("."))
    """The validator app's --home: verdicts go to <app_home>/verdicts/round-<n>.json."""
    test_set_attempts: int = 3
    """Tries to fetch the test set before reporting it unusable (1 s, 2 s apart)."""
    per_model_seconds: float = 10.0
    """Verifier work one model may cost: its download plus its check (load, watermark, score);
    waiting in the queue does not count. Over it: no verdict. Raise it for large models."""
    per_miner_seconds: float = 20.0
    """Verifier work one miner address's unconfirmed reveals (no verdict, refuted) may cost over
    `per_miner_rounds` rounds; a miner past it gets less (or no) time. Confirmed work is free."""
    per_miner_rounds: int = 10
    min_rate_bps: int = 64 * 1024
    """A model download whose average rate falls below this (after a few seconds' grace) is
    dropped: no verdict. A slow-drip server costs the grace, not the budget."""
    download_workers: int = 32
    """Concurrent model downloads (I/O bound); checks run one at a time in the worker process."""
    verify_margin_seconds: float = 3.0
    """Mark the verdicts complete this long before VERIFY ends, so that an ExtendVote and the
    next proposer (two blocks) still see them before the phase closes."""
    max_model_bytes: int = 1 << 30
    """Never download a model larger than this (the spec's size is also enforced)."""
    max_data_bytes: int = 1 << 30
    device: str = "cpu"
    allow_file_uris: bool = False
    """Accept file:// model/test URIs (single-machine setups only)."""
    check_threads: int | None = None
    """torch threads of the check process (None: this process's torch.get_num_threads())."""


class Verifier(Sidecar):
    role = "verifier"

    def __init__(self, cfg: VerifierConfig, key: KeyPair | None = None, *,
                 rpc: RpcClient | None = None, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, key=key, rpc=rpc, metrics=metrics)
        self.vcfg = cfg
        self.checks: dict[int, list[ModelCheck]] = {}
        # round -> its test set, fetched during REVEAL, or why it could not be used
        self._test_sets: dict[int, ArrayDataset | TestSetUnusable] = {}
        # round -> its training set for trajectory replays (proof of learning), or why not
        self._train_sets: dict[int, ArrayDataset | str] = {}
        self.mark_index = MarkIndex(self.chain)
        self.worker = CheckWorker(threads=cfg.check_threads)
        self.ledger = MinerLedger(cfg.per_miner_seconds, cfg.per_miner_rounds)

    def setup(self) -> None:
        self.worker.start()  # torch imported before the first VERIFY, not inside it
        self.log.info("check process ready in %.2fs", self.worker.start_seconds)

    def teardown(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the check process (also for callers of `verify_round` without `run`)."""
        self.worker.close()

    def on_round(self, info: RoundInfo) -> None:
        """Work for round `info` by its own phase and number: with pipelined rounds the newest
        round trains (or is ANNOUNCED: nothing to do) while this one reveals or verifies, and
        its verdicts go to `verdicts/round-<n>.json` of its own number, the file ExtendVote
        reads for the one round in REVEAL/VERIFY (`settle.extension_round`)."""
        rec = info.record
        n = rec.round
        if rec.phase is Phase.REVEAL and self._pol_epochs() and self.once(n, "train set"):
            self._prefetch_train_set(info)  # its key was released in TRAIN
        if rec.phase is Phase.REVEAL and rec.test_key_revealed:
            if self.once(n, "test set"):
                self._prefetch_test_set(info)  # as soon as RevealTestSet lands (issue 11 §5)
            return
        if rec.phase is Phase.REVEAL:
            # spread the copy index's catch-up of a long chain over a phase with nothing to do
            self.mark_index.update(n - 1, deadline=time.monotonic() + 1.0)
            return
        if rec.phase is not Phase.VERIFY:
            return
        if not self.once(n, "verify"):
            return
        from training.sidecars.rpc_types import RpcError

        try:
            self.verify_round(info)
        except RpcError:
            self._done.discard((n, "verify"))  # node hiccup: try again at the next poll
            raise

    # -- the test set

    def _fetch_test_set(self, n: int, task: Task) -> ArrayDataset:
        """The round's test set, fetched and decrypted; a few tries before calling it unusable
        (a refusal here blames the publisher on chain, so a transient hiccup must not)."""
        from training.artifacts import ArtifactError

        spec, test_key = task.spec, task.test_key or b""
        last: Exception | None = None
        for attempt in range(self.vcfg.test_set_attempts):
            dest = self.cfg.workdir / (
                f"round-{n}-test-{os.getpid()}-{threading.get_ident()}.npz.enc")
            try:
                return fetch_dataset(spec.test_uri, spec.test_sha256.hex(), 0, test_key, dest,
                                     self.vcfg.max_data_bytes, spec.num_classes or None,
                                     allow_file=self.vcfg.allow_file_uris,
                                     allow_private=self.cfg.allow_private_networks)
            except (ArtifactError, ValueError, OSError) as exc:
                last = exc
                if attempt + 1 < self.vcfg.test_set_attempts:
                    time.sleep(min(2.0 ** attempt, 4.0))
            finally:
                dest.unlink(missing_ok=True)
        raise TestSetUnusable(str(last))

    def _prefetch_test_set(self, info: RoundInfo) -> None:
        n, tid = info.record.round, info.record.task_id
        task = self.chain.task(tid)
        if task is None or task.test_key is None:
            self._done.discard((n, "test set"))  # not visible yet: next poll
            return
        try:
            self._test_sets[n] = self._fetch_test_set(n, task)
        except TestSetUnusable as exc:
            self._test_sets[n] = exc
            self.count_error("data", "round %d: test set unusable: %s", n, exc)

    def _test_set(self, n: int, task: Task) -> ArrayDataset:
        cached = self._test_sets.pop(n, None)
        for old in [k for k in self._test_sets if k < n]:
            del self._test_sets[old]
        if isinstance(cached, TestSetUnusable):
            raise cached
        return cached if cached is not None else self._fetch_test_set(n, task)

    # -- the training set (proof of learning)

    def _pol_epochs(self) -> int:
        """The chain's `proof_of_learning`: epochs replayed per model (0: no trajectory check)."""
        value = self.chain.params().get("proof_of_learning", 0)
        return int(value)

    def _prefetch_train_set(self, info: RoundInfo) -> None:
        n, tid = info.record.round, info.record.task_id
        task = self.chain.task(tid)
        if task is None or task.train_key is None:
            self._done.discard((n, "train set"))  # not visible yet: next poll
            return
        self._train_sets[n] = self._fetch_train_set(n, task)

    def _fetch_train_set(self, n: int, task: Task) -> ArrayDataset | str:
        """The round's training set, as its miners got it; or why it could not be had."""
        from training.artifacts import ArtifactError

        spec = task.spec
        dest = self.cfg.workdir / f"round-{n}-train-{os.getpid()}-{threading.get_ident()}.npz.enc"
        try:
            return fetch_dataset(spec.data_uri, spec.data_sha256.hex(), spec.data_size_bytes,
                                 task.train_key or b"", dest, self.vcfg.max_data_bytes,
                                 spec.num_classes or None, allow_file=self.vcfg.allow_file_uris,
                                 allow_private=self.cfg.allow_private_networks,
                                 min_rate_bps=self.vcfg.min_rate_bps)
        except (ArtifactError, ValueError, OSError) as exc:
            self.count_error("data", "round %d: training set unusable, trajectories cannot be "
                                     "checked: %s", n, exc)
            return str(exc)
        finally:
            dest.unlink(missing_ok=True)

    def _train_set(self, n: int, task: Task) -> ArrayDataset | str:
        cached = self._train_sets.pop(n, None)
        for old in [k for k in self._train_sets if k < n]:
            del self._train_sets[old]
        return cached if cached is not None else self._fetch_train_set(n, task)

    # -- VERIFY

    def _tolerance_ppm(self) -> int:
        value = self.chain.params().get("tolerance_ppm", Params().tolerance_ppm)
        return int(value)

    def verify_round(self, info: RoundInfo) -> list[ModelCheck]:
        """Check the round's reveals as the module docstring says; every verdict lands in the
        verdict file as soon as it is known. Returns one ModelCheck per reveal, in check order."""
        from abci_app.dlbc.verdicts import write_verdicts

        rec = info.record
        n, tid = rec.round, rec.task_id
        end = time.monotonic() + seconds_left(rec.verify_end_ns) - self.vcfg.verify_margin_seconds
        task = self.chain.task(tid)
        if task is None or task.test_key is None:
            self.count_error("chain", "round %d: task %d has no revealed test key", n, tid)
            return []
        try:
            scheme = self.chain.watermark_scheme()
        except WatermarkParamsError as exc:
            self.count_error("chain", "round %d: cannot verify: %s", n, exc)
            return []
        try:
            test = self._test_set(n, task)
        except TestSetUnusable as exc:
            # The publisher's fault, said on chain: a complete set with the complaint and no
            # scores (settle.py step 5 pays the revealing miners from the escrow).
            self.count_error("data", "round %d: test set unusable: %s", n, exc)
            write_verdicts(self.vcfg.app_home, n, [], test_set_unusable=True)
            self.emit("verdicts", round=n, checks=[])
            return []
        others = self.mark_index.marks(info, task, deadline=time.monotonic() + max(
            1.0, (end - time.monotonic()) / 10))
        pol = self._pol_epochs()
        train: ArrayDataset | str | None = self._train_set(n, task) if pol else None
        seed = selection_seed(self.rpc, rec) if pol else b""
        return self.check_round(info, task, test, scheme, self._tolerance_ppm(), others,
                                pol_epochs=pol, train=train, selection_seed=seed)

    def check_round(self, info: RoundInfo, task: Task, test: ArrayDataset,
                    scheme: WatermarkScheme, tolerance_ppm: int,
                    others: Sequence[OtherMark] = (), *, pol_epochs: int = 0,
                    train: ArrayDataset | str | None = None,
                    selection_seed: bytes = b"") -> list[ModelCheck]:
        """`verify_round` once the chain was read: check `info.revealed` against `test` until
        the stop rule or the end of VERIFY (`info.record.verify_end_ns` less the margin),
        writing the verdict file as it goes. One ModelCheck per reveal, in check order.

        `pol_epochs` > 0 (the chain's `proof_of_learning`): replay that many epochs of each
        model's trajectory on `train`, the round's training set (a string: why it could not be
        had, and then no model gets a verdict), picked by `selection_seed`."""
        rec = info.record
        n = rec.round
        end = time.monotonic() + seconds_left(rec.verify_end_ns) - self.vcfg.verify_margin_seconds
        plan = RoundPlan(check_order(info.revealed), tolerance_ppm, task.spec.min_score_ppm)
        self.worker.set_test_set(n, test)
        if pol_epochs and not isinstance(train, ArrayDataset):
            # nothing can be confirmed without its trajectory
            return self._unchecked(info, plan, f"training set unusable: {train}")
        self.worker.set_train_set(n, train if isinstance(train, ArrayDataset) and pol_epochs
                                  else None)
        run = RoundRun(self, info, task, plan, scheme, tuple(others), end,
                       pol_epochs=pol_epochs, selection_seed=selection_seed)
        try:
            checks = run.run()
        finally:
            run.close()
        self.metrics.inc("verdicts_total", sum(1 for c in checks if c.verdict))
        self.checks[n] = checks
        self.emit("verdicts", round=n, checks=checks)
        return checks

    def _unchecked(self, info: RoundInfo, plan: RoundPlan, why: str) -> list[ModelCheck]:
        """No verdict on any model (their trajectories cannot be checked), a complete file."""
        from abci_app.dlbc.verdicts import write_verdicts

        n = info.record.round
        checks = [ModelCheck.of(r, verdict=False, reason=why) for r in plan.reveals]
        write_verdicts(self.vcfg.app_home, n, [], complete=True)
        self.checks[n] = checks
        self.emit("verdicts", round=n, checks=checks)
        return checks
