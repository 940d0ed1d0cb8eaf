"""One round's training for the miner, run on its training thread (docs/processes.md "The
miner's threads"; paper Sec. IV-B).

Why its own module: `miner.py` is the sidecar (when to act, what to send); this is the work of
one round once its data key is known: wait for the prefetched ciphertext (or fetch it now),
decrypt, build the spec's registry architecture at the miner's anchored start, derive the
watermark key from the round seed and the miner's address under the chain's scheme, train with
`λ·embed_loss` under a budget that ends `commit_margin_seconds` before TRAIN ends (paper
Assumption 2: commit-in-P1), seal the watermark, save the model into the round's private folder
and write `state.json`.

Proof of learning (docs/proof_of_learning.md): the initial weights come from (round seed, miner
address) (`training.proof.seeds.anchored_model`), every epoch's data order from (round seed,
miner address, epoch), and every checkpoint (epochs 0..E) holds the weights and the AdamW state
with the replay config, listed in `checkpoints/manifest.json`: any validator can rebuild epoch 0
and replay any epoch. The run is the same whether or not the chain checks trajectories. It sends no
tx and reads nothing from the chain: everything it needs is in its `TrainJob`, gathered by the
poll loop, so the loop thread stays free to commit and reveal the other round meanwhile.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abci_app.dlbc.records import RoundInfo, Task
from training.artifact_errors import AddressRefused, DigestMismatch, TooLarge, TooSlow
from training.sidecars.base import WatermarkScheme, seconds_left
from training.sidecars.miner_state import RoundSkipped, RoundWork
from training.sidecars.sealing import seal_watermark
from training.sidecars.task_inputs import decrypt_downloaded, download_dataset, spec_hparams

if TYPE_CHECKING:
    from training.data import ArrayDataset
    from training.models import HParams
    from training.proof.config import ReplayConfig
    from training.sidecars.miner import Miner
    from training.trainer import TrainConfig

#: Exceptions of a download or a decryption that make the round's data unusable (ArtifactError
#: and its kinds, DecryptionError, DataError: ValueError subclasses; OSError).
DATA_ERRORS = (ValueError, OSError)
#: Prefetch failures that a second download would only repeat: the bytes are not the committed
#: ones or too many, the host is refused, the server drips. Any other failure of a prefetch
#: (the publisher's server not up yet, a 404, the node not answering the task query) is tried
#: once more when the key lands, as a miner without prefetch would have.
FINAL_PREFETCH_ERRORS = (DigestMismatch, TooLarge, AddressRefused, TooSlow)


#: Checkpoints 0..E go into RevealModel, which takes at most 1000 digests (abci_app/dlbc/process.py).
MAX_EPOCHS = 999


def monotonic_deadline(end_ns: int) -> float:
    """The `time.monotonic()` value of a phase deadline (BFT time ≈ wall clock)."""
    return time.monotonic() + max(0.0, seconds_left(end_ns))


@dataclass(frozen=True)
class TrainJob:
    """What the training thread needs for one round, read from the chain by the poll loop."""

    info: RoundInfo
    task: Task
    """The round's task with its released `train_key`."""
    scheme: WatermarkScheme
    prefetch: Future[Path] | None
    """The download started while the round was ANNOUNCED (or in TRAIN before its key)."""


def warm_up_torch() -> float:
    """Pay torch's one-time costs before the first round; returns the seconds it took.

    The first optimizer a process builds imports `torch._dynamo` (2-4 s on a loaded CPU). Paid
    inside `train()` it comes out of the first round's budget, and a short budget fails its
    first-epoch probe (BudgetTooSmall); paid at setup it costs nothing a round needs."""
    import torch

    t0 = time.monotonic()
    param = torch.zeros(1, requires_grad=True)
    torch.optim.AdamW([param]).zero_grad()
    return time.monotonic() - t0


def download_train_set(m: Miner, n: int, task: Task, train_end_ns: int) -> Path:
    """Download round `n`'s encrypted training set to `Miner.train_data_path(n)`: size cap and
    digest from the spec, aborted below `min_rate_bps` and at the end of its TRAIN."""
    spec = task.spec
    return download_dataset(spec.data_uri, spec.data_sha256.hex(), spec.data_size_bytes,
                            m.train_data_path(n), m.mcfg.max_data_bytes,
                            allow_file=m.mcfg.allow_file_uris,
                            allow_private=m.mcfg.allow_private_networks,
                            min_rate_bps=m.mcfg.min_rate_bps,
                            deadline=monotonic_deadline(train_end_ns))


def _wait(m: Miner, fut: Future[Path]) -> Path | BaseException:
    """The prefetch's file or its exception; RoundSkipped when the miner stops meanwhile."""
    while not fut.done():
        if m.stopping():
            raise RoundSkipped("stopped", "sidecar stopping before the data arrived")
        time.sleep(0.05)
    exc = fut.exception()
    return fut.result() if exc is None else exc


def _training_set(m: Miner, job: TrainJob) -> ArrayDataset:
    """Decrypt the round's training set: the prefetched file if it came, else fetched now.

    A prefetch that failed for good (`FINAL_PREFETCH_ERRORS`) skips the round, as that fetch at
    key time would have; any other failure is fetched again here, once."""
    rec, task = job.info.record, job.task
    n = rec.round
    t0 = time.monotonic()
    got: Path | BaseException | None = None if job.prefetch is None else _wait(m, job.prefetch)
    try:
        if isinstance(got, FINAL_PREFETCH_ERRORS):
            raise RoundSkipped("data", f"training data unusable: {got}")
        path = got if isinstance(got, Path) else download_train_set(m, n, task, rec.train_end_ns)
        data = decrypt_downloaded(path, task.train_key or b"", task.spec.num_classes or None)
    except DATA_ERRORS as exc:  # ArtifactError, DecryptionError, DataError
        raise RoundSkipped("data", f"training data unusable: {exc}") from exc
    finally:
        m.train_data_path(n).unlink(missing_ok=True)
    m.log.info("round %d: task %d data ready (%d samples) in %.1fs%s", n, task.id, len(data),
               time.monotonic() - t0, "" if job.prefetch is None else " (prefetched)")
    return data


def train_round(m: Miner, job: TrainJob) -> RoundWork:
    """Train, seal and save round `job.info`'s model; `state.json` is written before returning,
    so the commit the loop sends next survives a restart. Raises RoundSkipped."""
    from training.artifacts import model_metadata, save_model
    from training.proof.checkpoint import checkpoint_writer, write_manifest
    from training.proof.seeds import anchored_model, epoch_seed
    from training.trainer import BudgetTooSmall, StopTraining, TrainConfig, TrainingError, train
    from watermark import WatermarkError, embed_loss

    assert m.key is not None
    rec, spec = job.info.record, job.task.spec
    n, tid = rec.round, rec.task_id
    data = _training_set(m, job)
    arch, hparams = spec.architecture, spec_hparams(spec)
    addr = m.key.address
    try:
        model = anchored_model(arch, hparams, rec.seed, addr)
    except ValueError as exc:
        raise RoundSkipped("spec", f"cannot build {arch}: {exc}") from exc
    scheme = job.scheme
    try:
        layer = scheme.layer(model)
        wm_key = scheme.key(rec.seed, addr, layer)
    except WatermarkError as exc:
        raise RoundSkipped("spec", f"{arch} cannot carry the watermark: {exc}") from exc
    budget = seconds_left(rec.train_end_ns) - m.mcfg.commit_margin_seconds
    if m.mcfg.max_train_seconds is not None:
        budget = min(budget, m.mcfg.max_train_seconds)
    if budget < m.mcfg.min_train_seconds:
        raise RoundSkipped("deadline", f"only {budget:.1f}s left to train")
    rdir = m.round_dir(n)
    rdir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = rdir / "checkpoints"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    lam, temp = m.mcfg.watermark_lambda, m.mcfg.watermark_temperature
    cfg = TrainConfig(
        budget_seconds=budget, max_epochs=min(m.mcfg.max_epochs or MAX_EPOCHS, MAX_EPOCHS),
        batch_size=m.mcfg.batch_size, learning_rate=m.mcfg.learning_rate,
        seed=m.mcfg.seed + n, device=m.mcfg.device, checkpoint_dir=ckpt_dir,
        checkpoint_metadata=model_metadata(arch, hparams), progress=m.mcfg.progress,
        epoch_seeds=lambda e: epoch_seed(rec.seed, addr, e),
    )
    replay = replay_config(m, job, cfg, hparams)
    cfg.checkpoint_writer = checkpoint_writer(replay)
    m.log.info("round %d: training %s for up to %.1fs (watermark %d bits, %s matrix, gain "
               "%d on layer %s, λ=%g)", n, arch, budget, scheme.n_bits, scheme.matrix,
               scheme.gain, layer, lam)
    m.emit("training_started", round=n, task_id=tid, budget=budget, miner=m.key.address.hex())

    def stop_when_asked(_report: Any) -> None:
        if m.stopping():  # Ctrl-C: finish the epoch, do not commit
            raise StopTraining

    t1 = time.monotonic()
    started_ns = time.time_ns()
    try:
        result = train(model, data, cfg,
                       extra_loss=lambda mod: lam * embed_loss(mod, wm_key, temperature=temp),
                       callbacks=[stop_when_asked])
    except BudgetTooSmall as exc:
        raise RoundSkipped("deadline", str(exc)) from exc
    except TrainingError as exc:
        raise RoundSkipped("training", str(exc)) from exc
    finally:
        ended_ns = time.time_ns()
        m.metrics.inc("training_seconds_total", time.monotonic() - t1)
    if m.stopping():
        raise RoundSkipped("stopped", "sidecar stopping; the model is not committed")
    write_manifest(ckpt_dir, result.checkpoints, replay)
    model = model.to("cpu")
    det, steps = seal_watermark(model, wm_key, scheme.threshold, lr=m.mcfg.seal_learning_rate,
                                max_steps=m.mcfg.seal_max_steps, temperature=temp)
    if steps:
        m.log.info("round %d: %d watermark sealing step(s)", n, steps)
    model_path = rdir / "model.safetensors"
    digest = save_model(model, model_path, metadata=model_metadata(arch, hparams))
    work = RoundWork(
        round=n, task_id=tid, model_path=str(model_path), model_digest=digest,
        salt=os.urandom(32).hex(), checkpoint_digests=result.checkpoint_digests,
        epochs=result.epochs, train_seconds=result.wall_seconds,
        step_seconds=result.step_seconds, train_started_ns=started_ns, train_ended_ns=ended_ns,
        epoch_elapsed=[float(x) for x in result.epoch_elapsed],
        checkpoint_dir=str(ckpt_dir), watermark_min_confidence=det.min_confidence,
    )
    work.save(rdir)  # before the commit is sent: a restarted miner can still reveal
    m.log.info("round %d: %d epoch(s) in %.1fs (%.1fs in optimizer steps), watermark min "
               "confidence %.6f%s", n, result.epochs, result.wall_seconds, result.step_seconds,
               det.min_confidence, "" if det.ok else " (BELOW threshold: validators will reject)")
    return work


def replay_config(m: Miner, job: TrainJob, cfg: TrainConfig, hparams: HParams) -> ReplayConfig:
    """What a validator needs to replay this run's epochs (docs/proof_of_learning.md): written
    into every checkpoint, so a replay uses the miner's very hyper-parameters."""
    import torch

    from training.models import resolve_hparams
    from training.proof.config import ReplayConfig
    from training.trainer import uses_bf16

    assert m.key is not None
    return ReplayConfig(
        arch=job.task.spec.architecture,
        hparams=resolve_hparams(job.task.spec.architecture, hparams),
        round_seed=job.info.record.seed,
        miner=m.key.address, learning_rate=float(cfg.learning_rate),
        weight_decay=float(cfg.weight_decay), batch_size=cfg.batch_size, loss=cfg.loss,
        watermark_lambda=float(m.mcfg.watermark_lambda),
        watermark_temperature=float(m.mcfg.watermark_temperature),
        autocast="bf16" if uses_bf16(cfg) else "none",
        seal_lr=float(m.mcfg.seal_learning_rate), seal_max_steps=m.mcfg.seal_max_steps,
        watermark_threshold_ppm=job.scheme.threshold_ppm, torch_threads=torch.get_num_threads())
