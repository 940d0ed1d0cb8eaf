"""The miner sidecar: the useful work of DLBC (paper Sec. IV-B; docs/transactions.md,
docs/rounds.md, docs/watermark.md).

Per round the miner
1. fetches the encrypted training set (size cap + SHA-256 from the spec, docs/artifacts.md) as
   soon as the round is ANNOUNCED (pipelined rounds, docs/rounds.md) or in TRAIN, on a download
   thread, and waits for the publisher's `ReleaseTrainKey` (the key shows up in `tasks/<id>`),
2. decrypts it with the released key,
3. builds the spec's registry architecture (never publisher code), derives its watermark key from
   the round seed and its own address under the chain's watermark params (bits, matrix, gain,
   threshold: `WatermarkScheme` from the `params` query, docs/watermark.md — never the watermark
   package's defaults) and trains with `λ·embed_loss` as the trainer's `extra_loss`, under a budget
   that ends `commit_margin_seconds` before TRAIN ends (paper Assumption 2: commit-in-P1),
4. saves the model as safetensors plus per-epoch checkpoints into its PRIVATE round folder
   `<workdir>/rounds/<n>/` and sends `CommitModel{SHA-256(digest ‖ address ‖ salt)}` (steps 2-4
   up to the saved model run on the training thread, `miner_train`; the commit on the loop),
5. in REVEAL fetches the revealed test set, measures its score, publishes the model and its
   checkpoints (see below) and sends `RevealModel` with the URI, the claimed score and the
   checkpoint digests.

With pipelined rounds round n+1 trains while round n reveals: the poll loop (this module) only
decides and sends txs, the training runs on one worker thread (`miner_worker`, `miner_train`),
so the reveal of round n (`miner_reveal`), the commit of a model just trained and the prefetch
of the next round all happen while the GPU works (docs/processes.md "The miner's threads").

Front-running (docs/transactions.md, paper Sec. IV-B "commit-reveal"): the commitment hides the
model only if nobody can download it before REVEAL. A competitor who fetched it during TRAIN could
overwrite the watermark with its own key (see tests/training/sidecars/test_copy_defence.py) and commit the
copy. So the artifact server's root (`<workdir>/artifacts/`) holds nothing of a round until the
miner reveals it: only then are the model and checkpoints linked into `artifacts/<token>/` where
`token = secrets.token_hex(16)` is drawn at reveal time (unguessable; the URI first becomes known
through the RevealModel tx). The round state (salt, digest, the token once drawn) lives in
`<workdir>/rounds/<n>/state.json`, never served, written before the commit is sent so that a
restarted miner can still reveal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.dlbc.records import Phase, RoundInfo
from abci_app.keyfile import KeyPair
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import (
    Sidecar,
    SidecarConfig,
    WatermarkParamsError,
    seconds_left,
    training_first,
)
from training.sidecars.metrics_server import Metrics
from training.sidecars.miner_reveal import publish, reveal_round
from training.sidecars.miner_state import RoundSkipped, RoundWork
from training.sidecars.miner_train import (
    DATA_ERRORS,
    FINAL_PREFETCH_ERRORS,
    TrainJob,
    download_train_set,
    train_round,
    warm_up_torch,
)
from training.sidecars.miner_worker import MinerWorker
from training.sidecars.rpc_client import RpcClient

__all__ = ["Miner", "MinerConfig", "RoundSkipped", "RoundWork"]

#: Tries of a round's prefetch that failed but not for good (`FINAL_PREFETCH_ERRORS`); after
#: them the training thread fetches the data itself once the key is known.
PREFETCH_TRIES = 3


@dataclass
class MinerConfig(SidecarConfig):
    bandwidth_bps: int = 100_000_000
    """Declared in RegisterMiner; feeds the median of paper Eq. 2."""
    flops: int = 1_000_000_000_000
    """Declared in RegisterMiner; feeds the median of paper Eq. 3."""
    max_train_seconds: float | None = None
    """This miner's compute budget per round (None: all of TRAIN less the commit margin)."""
    commit_margin_seconds: float = 2.5
    """Training stops this long before TRAIN ends, leaving time to seal, save, commit and land
    the commit in a block: that took 0.6-0.8 s at the devnet's 1 s blocks, the rest is headroom
    for a late block (docs/processes.md "The miner's threads"). Raise it for slower blocks."""
    min_train_seconds: float = 1.0
    """Below this budget the round is skipped instead of committing a barely trained model."""
    watermark_lambda: float = 1.0
    """λ of the Uchida regulariser (E0 + λ·E_R, paper Eq. 7). A miner's own tuning knob: the
    bits, matrix, gain and threshold that decide acceptance come from the chain's params."""
    watermark_temperature: float = 100.0
    """Temperature of `embed_loss` (watermark.DEFAULT_TEMPERATURE; a test keeps them equal).
    Embedding-only, so a miner setting rather than a chain param (see params.py)."""
    seal_learning_rate: float = 1e-2
    seal_max_steps: int = 2000
    """Bound on the E_R-only steps that finish the embedding (see `seal_watermark`)."""
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    max_data_bytes: int = 1 << 30
    """Never download more training/test data than this, whatever the spec says."""
    allow_file_uris: bool = False
    """Accept file:// data URIs (single-machine setups only; see `check_remote_uri`)."""
    min_rate_bps: int = 64 * 1024
    """Abort a data download slower than this on average (after a short grace), and any that
    would outlast its phase: a publisher's slow-drip server must not eat the TRAIN budget."""
    artifact_host: str = "127.0.0.1"
    artifact_port: int = 0
    """Where this miner serves its models; use a fixed port if it must survive a restart."""
    progress: bool = True


class Miner(Sidecar):
    role = "miner"

    def __init__(self, cfg: MinerConfig, key: KeyPair, *, rpc: RpcClient | None = None,
                 metrics: Metrics | None = None) -> None:
        super().__init__(cfg, key=key, rpc=rpc, metrics=metrics)
        self.mcfg = cfg
        self.artifact_root = cfg.workdir / "artifacts"
        """Served over HTTP: only revealed rounds' `<token>/` folders ever appear here."""
        self.private_root = cfg.workdir / "rounds"
        """Never served: per-round models before reveal, checkpoints, salt (state.json)."""
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        self.private_root.mkdir(parents=True, exist_ok=True)
        self.server: ArtifactServer | None = None
        self.work: dict[int, RoundWork] = {}
        self._waiting_logged: set[tuple[int, str]] = set()
        self._saw_train: set[int] = set()
        """Rounds this process saw ANNOUNCED or in TRAIN: the ones it had a chance to mine
        (`counts_round`)."""
        self._worker: MinerWorker | None = None

    # -- loop hooks

    def start_server(self) -> ArtifactServer:
        """Serve the artifact folder (models, checkpoints); OSError if the port is taken."""
        if self.server is None:
            self.server = ArtifactServer(self.artifact_root, host=self.mcfg.artifact_host,
                                         port=self.mcfg.artifact_port).start()
        return self.server

    def setup(self) -> None:
        from abci_app.dlbc import txs

        self.start_server()
        self.log.info("torch ready in %.1fs", warm_up_torch())
        assert self.key is not None
        acct = self.chain.account(self.key.address)
        if not acct.get("miner"):
            self.chain.send(txs.register_miner(self.mcfg.bandwidth_bps, self.mcfg.flops),
                            "RegisterMiner")
            self.metrics.inc("txs_total", type="RegisterMiner")
            self.log.info("registered as miner %s", self.key.address.hex())
            self.emit("miner_registered", miner=self.key.address.hex())

    def teardown(self) -> None:
        if self._worker is not None:
            self._worker.close()  # a running training stops at its epoch end, uncommitted
            self._worker = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def worker(self) -> MinerWorker:
        """The training and download threads (started on first use, ended by `teardown`)."""
        if self._worker is None:
            self._worker = MinerWorker(on_done=self.wake)
        return self._worker

    def stopping(self) -> bool:
        """Whether a training should stop now (`stop()`, or `teardown` closing the worker)."""
        return self.stop_event.is_set() or (self._worker is not None
                                            and self._worker.halt.is_set())

    def train_data_path(self, n: int) -> Path:
        """Where round `n`'s encrypted training set is downloaded (deleted once decrypted)."""
        return self.cfg.workdir / f"round-{int(n)}-train.npz.enc"

    def round_dir(self, n: int) -> Path:
        """The round's private folder (model, checkpoints, state.json); never served."""
        return self.private_root / str(int(n))

    def model_path(self, n: int) -> Path | None:
        """This miner's saved model of round `n` (for the devnet's winner copy), or None."""
        work = self.work.get(n) or RoundWork.load(self.round_dir(n))
        if work is None or not work.model_path or not Path(work.model_path).is_file():
            return None
        return Path(work.model_path)

    def publish(self, work: RoundWork) -> str:
        """Make the round's model and checkpoints fetchable (at REVEAL only); returns the URI
        (`miner_reveal.publish`)."""
        return publish(self, work)

    def _work(self, info: RoundInfo) -> RoundWork | None:
        n = info.record.round
        if n not in self.work and not self.worker.has_job(n):
            # state.json is the training thread's while it trains the round: read only after
            loaded = RoundWork.load(self.round_dir(n))
            if loaded is not None:
                self.work[n] = loaded
        return self.work.get(n)

    def _wait_note(self, n: int, what: str) -> None:
        if (n, what) not in self._waiting_logged:
            self._waiting_logged.add((n, what))
            self.log.info("round %d: waiting for %s", n, what)

    def counts_round(self, info: RoundInfo) -> bool:
        """`--rounds N` means N rounds this miner could take part in: a round first seen in
        REVEAL or VERIFY (started mid-round) closes without it and does not count."""
        n = info.record.round
        return n in self._saw_train or n in self.work

    def tick(self) -> None:
        self._collect()
        super().tick()

    def order_rounds(self, infos: list[RoundInfo]) -> list[RoundInfo]:
        """The training round first: starting its training (or sending its commit) must not
        wait for the other round's reveal, which blocks the loop for a block or more."""
        return training_first(infos)

    def _collect(self) -> None:
        """Take over the trainings the worker finished: a model to commit, or why not."""
        if self._worker is None:
            return
        for n, fut in self._worker.finished():
            exc = fut.exception()
            if exc is None:
                self.work.setdefault(n, fut.result())
            elif isinstance(exc, RoundSkipped):
                self._skipped(n, exc)
            else:
                self.metrics.inc("errors_total", kind="step")
                self.log.error("round %d: training failed", n, exc_info=exc)

    def _skipped(self, n: int, exc: RoundSkipped) -> None:
        self.count_error(exc.kind, "round %d: %s", n, exc)
        self.emit("round_skipped", round=n, reason=str(exc),
                  miner=self.key.address.hex() if self.key else "")

    def on_round(self, info: RoundInfo) -> None:
        rec = info.record
        n, phase = rec.round, rec.phase
        if phase in (Phase.ANNOUNCED, Phase.TRAIN):
            self._saw_train.add(n)
        work = self._work(info)
        if work is not None and self.key is not None:
            # A tx whose broadcast timed out may still have landed: trust the chain.
            me = self.key.address
            if not work.committed and me in {c.miner for c in info.commitments}:
                work.committed = True
                work.save(self.round_dir(n))
            if not work.revealed and me in {r.miner for r in info.revealed}:
                work.revealed = True
                work.save(self.round_dir(n))
        try:
            if phase is Phase.ANNOUNCED:
                self._prefetch(info)
            elif phase is Phase.TRAIN:
                self._on_train(info, work)
            elif phase is Phase.REVEAL and work is not None and not work.committed:
                if self.once(n, "late"):
                    raise RoundSkipped("deadline", "the model was not committed before TRAIN "
                                                   "ended")
            elif phase is Phase.REVEAL and work is not None and not work.revealed:
                if not rec.test_key_revealed:
                    self._wait_note(n, "the publisher's test key")
                    return
                if self.once(n, "reveal"):
                    self._retrying(n, "reveal", self.measure_and_reveal, info, work)
        except RoundSkipped as exc:
            self._skipped(n, exc)

    def _on_train(self, info: RoundInfo, work: RoundWork | None) -> None:
        """TRAIN: commit a trained model (the first try, or a retry when the node was down),
        else prefetch until the key lands, then hand the round to the training thread."""
        rec = info.record
        n = rec.round
        if work is not None:
            if not work.committed and self._retry_ok(n, "commit"):
                self.commit(info, work)
            return
        if self.worker.has_job(n):
            return  # training (or queued behind the previous round's training)
        if not rec.key_released:
            self._prefetch(info)
            self._wait_note(n, "the publisher's data key")
            return
        if self.once(n, "train"):
            self._retrying(n, "train", self.start_training, info)

    def _retry_ok(self, n: int, step: str, limit: int = 5) -> bool:
        k = (n, f"{step}#")
        count = sum(1 for d in self._done if d[0] == n and d[1].startswith(k[1]))
        if count >= limit:
            return False
        self._done.add((n, f"{step}#{count}"))
        return True

    def _retrying(self, n: int, step: str, fn: Any, *args: Any) -> Any:
        """Run a once-per-round step; a transient RPC failure re-arms it for the next poll."""
        from training.sidecars.rpc_types import RpcError

        try:
            return fn(*args)
        except RpcError:
            if self._retry_ok(n, f"{step}-rpc"):
                self._done.discard((n, step))
            raise

    def on_round_closed(self, info: RoundInfo) -> None:
        assert self.key is not None
        rec = info.record
        if self._worker is not None:
            self._worker.forget(rec.round)
        self.train_data_path(rec.round).unlink(missing_ok=True)  # a prefetch never decrypted
        won = rec.winner is not None and rec.winner.miner == self.key.address
        bal = int(self.chain.account(self.key.address).get("balance", 0))
        self.metrics.set("balance", bal)
        self.log.info("round %d closed (%s): %s; balance %d", rec.round, rec.outcome,
                      "WON" if won else "not won", bal)

    # -- ANNOUNCED / TRAIN

    def _prefetch(self, info: RoundInfo) -> None:
        """Start downloading the round's encrypted training set, once (paper IV-B: the next
        task's data goes out ahead of its key). The task query and the download run on a
        download thread, so the poll loop never waits for either. A prefetch that failed for
        good (`FINAL_PREFETCH_ERRORS`) is not repeated; any other failure is tried again at the
        next poll, `PREFETCH_TRIES` times in all."""
        rec = info.record
        n, tid, train_end = rec.round, rec.task_id, rec.train_end_ns
        fut = self.worker.download(n)
        if fut is not None and (not fut.done() or fut.exception() is None
                                or isinstance(fut.exception(), FINAL_PREFETCH_ERRORS)):
            return
        if not self._retry_ok(n, "prefetch", PREFETCH_TRIES):
            return

        def fetch() -> Path:
            t0 = time.monotonic()
            task = self.chain.task(tid)
            if task is None:  # not a data fault: tried again, and by the training thread
                raise LookupError(f"task {tid} is not readable yet")
            try:
                path = download_train_set(self, n, task, train_end)
            except DATA_ERRORS as exc:
                self.log.warning("round %d: prefetch of task %d's data failed: %s", n, tid, exc)
                raise
            self.log.info("round %d: task %d's encrypted data prefetched (%d bytes, %.1fs)", n,
                          tid, path.stat().st_size, time.monotonic() - t0)
            self.emit("data_prefetched", round=n, task_id=tid, path=str(path),
                      bytes=path.stat().st_size, seconds=time.monotonic() - t0,
                      miner=self.key.address.hex() if self.key else "")
            return path

        self.worker.prefetch(n, fetch)

    def start_training(self, info: RoundInfo) -> None:
        """Read what the round's training needs from the chain (its released key, the watermark
        scheme) and queue it on the training thread; the result comes back through `_collect`,
        and the commit is sent from the loop."""
        rec = info.record
        task = self.chain.task(rec.task_id)
        if task is None or task.train_key is None:
            raise RoundSkipped("chain", f"task {rec.task_id} has no released key yet")
        try:
            scheme = self.chain.watermark_scheme()
        except WatermarkParamsError as exc:
            raise RoundSkipped("chain", str(exc)) from exc
        job = TrainJob(info, task, scheme, self.worker.download(rec.round))
        self.worker.submit(rec.round, lambda: train_round(self, job))

    def commit(self, info: RoundInfo, work: RoundWork) -> None:
        """CommitModel{SHA-256(digest ‖ address ‖ salt)}: only valid in TRAIN
        (docs/transactions.md)."""
        from abci_app.dlbc import txs

        assert self.key is not None
        n = work.round
        commitment = txs.model_commitment(bytes.fromhex(work.model_digest), self.key.address,
                                          bytes.fromhex(work.salt))
        if seconds_left(info.record.train_end_ns) <= 0:
            raise RoundSkipped("deadline", "TRAIN ended before the commit could be sent")
        if self.send(txs.commit_model(n, commitment), "CommitModel") is None:
            raise RoundSkipped("tx_rejected", "CommitModel was rejected")
        work.committed = True
        work.save(self.round_dir(n))
        self.metrics.inc("commits_total")
        self.emit("committed", round=n, miner=self.key.address.hex(), epochs=work.epochs,
                  digest=work.model_digest, watermark_confidence=work.watermark_min_confidence,
                  **work.timing())

    # -- REVEAL

    def measure_and_reveal(self, info: RoundInfo, work: RoundWork) -> None:
        """Score the committed model on the revealed test set, publish it, `RevealModel`
        (`miner_reveal.reveal_round`); on the poll loop, while the next round trains."""
        reveal_round(self, info, work)
