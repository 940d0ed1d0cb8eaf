"""The miner sidecar: the useful work of DLBC (paper Sec. IV-B; docs/transactions.md,
docs/rounds.md, docs/watermark.md).

Per round the miner
1. waits in TRAIN for the publisher's `ReleaseTrainKey` (the key shows up in `tasks/<id>`),
2. fetches the encrypted training set (size cap + SHA-256 from the spec, docs/artifacts.md) and
   decrypts it with the released key,
3. builds the spec's registry architecture (never publisher code), derives its watermark key from
   the round seed and its own address under the chain's watermark params (bits, matrix, gain,
   threshold: `WatermarkScheme` from the `params` query, docs/watermark.md — never the watermark
   package's defaults) and trains with `λ·embed_loss` as the trainer's `extra_loss`, under a budget
   that ends `commit_margin_seconds` before TRAIN ends (paper Assumption 2: commit-in-P1),
4. saves the model as safetensors plus per-epoch checkpoints into its PRIVATE round folder
   `<workdir>/rounds/<n>/` and sends `CommitModel{SHA-256(digest ‖ address ‖ salt)}`,
5. in REVEAL fetches the revealed test set, measures its score, publishes the model and its
   checkpoints (see below) and sends `RevealModel` with the URI, the claimed score and the
   checkpoint digests.

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

import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from abci_app.dlbc.records import Phase, RoundInfo
from abci_app.fsutil import atomic_write
from abci_app.keyfile import KeyPair
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import (
    Sidecar,
    SidecarConfig,
    WatermarkParamsError,
    seconds_left,
)
from training.sidecars.metrics_server import Metrics
from training.sidecars.rpc_client import RpcClient
from training.sidecars.sealing import seal_watermark
from training.sidecars.task_inputs import fetch_dataset, spec_hparams


def _monotonic_deadline(end_ns: int) -> float:
    """The `time.monotonic()` value of a phase deadline (BFT time ≈ wall clock)."""
    return time.monotonic() + max(0.0, seconds_left(end_ns))


class RoundSkipped(Exception):
    """This round cannot be mined (bad data, no time left, ...); logged and counted."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass
class MinerConfig(SidecarConfig):
    bandwidth_bps: int = 100_000_000
    """Declared in RegisterMiner; feeds the median of paper Eq. 2."""
    flops: int = 1_000_000_000_000
    """Declared in RegisterMiner; feeds the median of paper Eq. 3."""
    max_train_seconds: float | None = None
    """This miner's compute budget per round (None: all of TRAIN less the commit margin)."""
    commit_margin_seconds: float = 4.0
    """Training stops this long before TRAIN ends, leaving time to save, commit and land a block."""
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


@dataclass
class RoundWork:
    """What the miner did in one round; persisted as rounds/<n>/state.json."""

    round: int
    task_id: int
    model_path: str = ""
    model_uri: str = ""
    model_digest: str = ""
    salt: str = ""
    checkpoint_digests: list[str] = field(default_factory=list)
    epochs: int = 0
    train_seconds: float = 0.0
    watermark_min_confidence: float = 0.0
    committed: bool = False
    revealed: bool = False
    claimed_score_ppm: int | None = None
    public_dir: str = ""
    """Name of the served folder (`artifacts/<token>`) once published at REVEAL; empty before."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "state.json",
                     json.dumps(asdict(self), indent=2, sort_keys=True).encode(), mode=0o600)

    @classmethod
    def load(cls, directory: Path) -> RoundWork | None:
        try:
            doc = json.loads((directory / "state.json").read_text())
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in doc.items() if k in known})
        except (OSError, ValueError, TypeError, AttributeError):
            return None


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
        """Rounds this process saw in TRAIN: the ones it had a chance to mine (`counts_round`)."""

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
        assert self.key is not None
        acct = self.chain.account(self.key.address)
        if not acct.get("miner"):
            self.chain.send(txs.register_miner(self.mcfg.bandwidth_bps, self.mcfg.flops),
                            "RegisterMiner")
            self.metrics.inc("txs_total", type="RegisterMiner")
            self.log.info("registered as miner %s", self.key.address.hex())
            self.emit("miner_registered", miner=self.key.address.hex())

    def teardown(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

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
        """Make the round's model and checkpoints fetchable (at REVEAL only); returns the URI.

        Files are hard-linked (copied across filesystems) into a private staging folder that
        is then renamed into the served root as `<token>/`, so a reader never sees a half
        published folder. Idempotent: a restarted miner reuses the token recorded in state.json.
        """
        from training.artifacts import sha256_file

        assert self.server is not None
        rdir = self.round_dir(work.round)
        if not work.public_dir:
            work.public_dir = secrets.token_hex(16)
            work.save(rdir)
        pub = self.artifact_root / work.public_dir
        if not (pub / "model.safetensors").is_file():
            stage = rdir / ".publish"
            if stage.exists():
                shutil.rmtree(stage)
            (stage / "checkpoints").mkdir(parents=True)
            _link_or_copy(Path(work.model_path), stage / "model.safetensors")
            ckpts = rdir / "checkpoints"
            for f in sorted(ckpts.iterdir()) if ckpts.is_dir() else []:
                if f.is_file():
                    _link_or_copy(f, stage / "checkpoints" / f.name)
            if pub.exists():
                shutil.rmtree(pub)
            stage.rename(pub)
        if sha256_file(pub / "model.safetensors") != work.model_digest:
            raise RoundSkipped("data", "published model does not match the committed digest")
        work.model_uri = self.server.url_for(Path(work.public_dir) / "model.safetensors")
        work.save(rdir)
        return work.model_uri

    def _work(self, info: RoundInfo) -> RoundWork | None:
        n = info.record.round
        if n not in self.work:
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

    def on_round(self, info: RoundInfo) -> None:
        rec = info.record
        n, phase = rec.round, rec.phase
        if phase is Phase.TRAIN:
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
            if phase is Phase.TRAIN and work is not None and not work.committed:
                # trained, but the commit did not land (node down?): retry only the commit
                if self._retry_ok(n, "commit"):
                    self.commit(info, work)
            elif phase is Phase.TRAIN and work is None:
                if not rec.key_released:
                    self._wait_note(n, "the publisher's data key")
                    return
                if self.once(n, "train"):
                    self._retrying(n, "train", self.train_and_commit, info)
            elif (phase is Phase.REVEAL and work is not None and work.committed
                  and not work.revealed):
                if not rec.test_key_revealed:
                    self._wait_note(n, "the publisher's test key")
                    return
                if self.once(n, "reveal"):
                    self._retrying(n, "reveal", self.measure_and_reveal, info, work)
        except RoundSkipped as exc:
            self.count_error(exc.kind, "round %d: %s", n, exc)
            self.emit("round_skipped", round=n, reason=str(exc),
                      miner=self.key.address.hex() if self.key else "")

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
        won = rec.winner is not None and rec.winner.miner == self.key.address
        bal = int(self.chain.account(self.key.address).get("balance", 0))
        self.metrics.set("balance", bal)
        self.log.info("round %d closed (%s): %s; balance %d", rec.round, rec.outcome,
                      "WON" if won else "not won", bal)

    # -- TRAIN

    def train_and_commit(self, info: RoundInfo) -> RoundWork:
        from training.artifacts import model_metadata, save_model
        from training.models import build_model
        from training.trainer import (
            BudgetTooSmall,
            StopTraining,
            TrainConfig,
            TrainingError,
            train,
        )
        from watermark import WatermarkError, embed_loss

        assert self.key is not None and self.server is not None
        rec = info.record
        n, tid = rec.round, rec.task_id
        task = self.chain.task(tid)
        if task is None or task.train_key is None:
            raise RoundSkipped("chain", f"task {tid} has no released key yet")
        spec, key = task.spec, task.train_key
        try:
            scheme = self.chain.watermark_scheme()
        except WatermarkParamsError as exc:
            raise RoundSkipped("chain", str(exc)) from exc
        rdir = self.round_dir(n)
        t0 = time.monotonic()
        try:
            data = fetch_dataset(spec.data_uri, spec.data_sha256.hex(), spec.data_size_bytes, key,
                                 self.cfg.workdir / f"round-{n}-train.npz.enc",
                                 self.mcfg.max_data_bytes, spec.num_classes or None,
                                 allow_file=self.mcfg.allow_file_uris,
                                 allow_private=self.mcfg.allow_private_networks,
                                 min_rate_bps=self.mcfg.min_rate_bps,
                                 deadline=_monotonic_deadline(rec.train_end_ns))
        except (ValueError, OSError) as exc:  # ArtifactError, DecryptionError, DataError
            raise RoundSkipped("data", f"training data unusable: {exc}") from exc
        finally:
            (self.cfg.workdir / f"round-{n}-train.npz.enc").unlink(missing_ok=True)
        self.log.info("round %d: task %d data ready (%d samples) in %.1fs", n, tid, len(data),
                      time.monotonic() - t0)
        arch, hparams = spec.architecture, spec_hparams(spec)
        try:
            model = build_model(arch, hparams, seed=self.mcfg.seed + n)
        except ValueError as exc:
            raise RoundSkipped("spec", f"cannot build {arch}: {exc}") from exc
        try:
            layer = scheme.layer(model)
            wm_key = scheme.key(rec.seed, self.key.address, layer)
        except WatermarkError as exc:
            raise RoundSkipped("spec", f"{arch} cannot carry the watermark: {exc}") from exc
        budget = seconds_left(rec.train_end_ns) - self.mcfg.commit_margin_seconds
        if self.mcfg.max_train_seconds is not None:
            budget = min(budget, self.mcfg.max_train_seconds)
        if budget < self.mcfg.min_train_seconds:
            raise RoundSkipped("deadline", f"only {budget:.1f}s left to train")
        rdir.mkdir(parents=True, exist_ok=True)
        ckpt_dir = rdir / "checkpoints"
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        cfg = TrainConfig(
            budget_seconds=budget, max_epochs=self.mcfg.max_epochs,
            batch_size=self.mcfg.batch_size, learning_rate=self.mcfg.learning_rate,
            seed=self.mcfg.seed + n, device=self.mcfg.device, checkpoint_dir=ckpt_dir,
            checkpoint_metadata=model_metadata(arch, hparams), progress=self.mcfg.progress,
        )
        lam, temp = self.mcfg.watermark_lambda, self.mcfg.watermark_temperature
        self.log.info("round %d: training %s for up to %.1fs (watermark %d bits, %s matrix, gain "
                      "%d on layer %s, λ=%g)", n, arch, budget, scheme.n_bits, scheme.matrix,
                      scheme.gain, layer, lam)
        self.emit("training_started", round=n, task_id=tid, budget=budget,
                  miner=self.key.address.hex())
        t1 = time.monotonic()

        def stop_when_asked(_report: Any) -> None:
            if self.stop_event.is_set():  # Ctrl-C: finish the epoch, do not commit
                raise StopTraining

        try:
            result = train(model, data, cfg,
                           extra_loss=lambda m: lam * embed_loss(m, wm_key, temperature=temp),
                           callbacks=[stop_when_asked])
        except BudgetTooSmall as exc:
            raise RoundSkipped("deadline", str(exc)) from exc
        except TrainingError as exc:
            raise RoundSkipped("training", str(exc)) from exc
        finally:
            self.metrics.inc("training_seconds_total", time.monotonic() - t1)
        if self.stop_event.is_set():
            raise RoundSkipped("stopped", "sidecar stopping; the model is not committed")
        model = model.to("cpu")
        det, steps = seal_watermark(model, wm_key, scheme.threshold,
                                    lr=self.mcfg.seal_learning_rate,
                                    max_steps=self.mcfg.seal_max_steps, temperature=temp)
        if steps:
            self.log.info("round %d: %d watermark sealing step(s)", n, steps)
        model_path = rdir / "model.safetensors"
        digest = save_model(model, model_path, metadata=model_metadata(arch, hparams))
        work = RoundWork(
            round=n, task_id=tid, model_path=str(model_path), model_digest=digest, salt=os.urandom(32).hex(),
            checkpoint_digests=result.checkpoint_digests, epochs=result.epochs,
            train_seconds=result.wall_seconds, watermark_min_confidence=det.min_confidence,
        )
        work.save(rdir)
        self.work[n] = work
        self.log.info("round %d: %d epoch(s) in %.1fs, watermark min confidence %.6f%s",
                      n, result.epochs, result.wall_seconds, det.min_confidence,
                      "" if det.ok else " (BELOW threshold: validators will reject)")
        self.commit(info, work)
        return work

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
                  digest=work.model_digest, watermark_confidence=work.watermark_min_confidence)

    # -- REVEAL

    def measure_and_reveal(self, info: RoundInfo, work: RoundWork) -> None:
        from abci_app.dlbc import txs
        from training.artifacts import ArtifactError, load_model
        from training.trainer import evaluate

        assert self.key is not None
        n = work.round
        task = self.chain.task(work.task_id)
        if task is None or task.test_key is None:
            raise RoundSkipped("chain", f"task {work.task_id} has no revealed test key")
        spec = task.spec
        dest = self.cfg.workdir / f"round-{n}-test.npz.enc"
        try:
            test = fetch_dataset(spec.test_uri, spec.test_sha256.hex(), 0, task.test_key, dest,
                                 self.mcfg.max_data_bytes, spec.num_classes or None,
                                 allow_file=self.mcfg.allow_file_uris,
                                 allow_private=self.mcfg.allow_private_networks,
                                 min_rate_bps=self.mcfg.min_rate_bps,
                                 deadline=_monotonic_deadline(info.record.reveal_end_ns))
            model = load_model(work.model_path, spec.architecture, spec_hparams(spec),
                               sha256=work.model_digest)
        except (ValueError, OSError, ArtifactError) as exc:
            raise RoundSkipped("data", f"cannot measure the model: {exc}") from exc
        finally:
            dest.unlink(missing_ok=True)
        score = evaluate(model, test, spec.metric, device="cpu")
        work.claimed_score_ppm = score
        try:
            self.publish(work)
        except OSError as exc:
            raise RoundSkipped("data", f"cannot publish the model: {exc}") from exc
        msg = txs.reveal_model(n, work.model_uri, bytes.fromhex(work.model_digest),
                               bytes.fromhex(work.salt), score,
                               [bytes.fromhex(d) for d in work.checkpoint_digests])
        if self.send(msg, "RevealModel") is None:
            work.save(self.round_dir(n))
            raise RoundSkipped("tx_rejected", "RevealModel was rejected")
        work.revealed = True
        work.save(self.round_dir(n))
        self.metrics.inc("reveals_total")
        self.log.info("round %d: revealed %s with claimed %s %.4f", n, work.model_uri,
                      spec.metric, score / 1e6)
        self.emit("revealed", round=n, miner=self.key.address.hex(), score_ppm=score,
                  uri=work.model_uri)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no extra disk for a large model), copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
