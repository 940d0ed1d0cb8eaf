"""The verifier's proof-of-learning spot-check of one revealed model (issue 15,
docs/proof_of_learning.md): fetch its checkpoints, then replay a few of its epochs.

Why its own module: `model_check` checks the model itself (load, watermark, score); this checks
how it came to be. The two halves run where model_check's do: `fetch_checkpoints` on a download
thread (I/O, bounded by the model's deadline and the minimum rate), `check_trajectory` in the
killable check process (torch), only for a model that passed everything else, since a refuted
model needs no further proof and a replay costs epochs of training.

Where the checkpoints are: beside the model, `<model URI's folder>/checkpoints/epoch-NNNN.
safetensors` for epochs 0..E, one per digest of the reveal's `checkpoint_digests` (the miner
publishes its round folder so, `miner_reveal.publish`). Verdict policy as for the model: a
checkpoint that is not the committed bytes, over the size cap, or whose replay fails refutes
(`trajectory_failed`); one that cannot be fetched in time gets no verdict.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from abci_app.dlbc.records import Reveal, Round
from training.sidecars.model_check import ModelCheck, Unavailable

if TYPE_CHECKING:
    from torch import Tensor, nn

    from training.data import ArrayDataset
    from training.proof.config import ReplayConfig
    from training.proof.verify import TrajectoryPolicy
    from training.sidecars.check_worker import CheckJob
    from training.sidecars.rpc_client import RpcClient

log = logging.getLogger("dlbc.verifier.trajectory")

#: A checkpoint holds the weights and AdamW's two moments of every parameter (three times the
#: model's tensors) and a longer header (the replay config): the model's cap times 3 plus 1 MiB.
CHECKPOINT_TENSOR_COPIES = 3


def checkpoint_uri(model_uri: str, epoch: int) -> str:
    """Where epoch `epoch`'s checkpoint of the model at `model_uri` is (module docstring)."""
    from training.proof.manifest import checkpoint_file_name

    return f"{model_uri.rsplit('/', 1)[0]}/checkpoints/{checkpoint_file_name(epoch)}"


def checkpoint_cap(model_cap: int) -> int:
    """The largest checkpoint file fetched for a model whose own cap is `model_cap`."""
    return model_cap * CHECKPOINT_TENSOR_COPIES + (1 << 20)


def refuted(reveal: Reveal, why: str) -> ModelCheck:
    """A verdict refuting the model for its trajectory (measured or not, it cannot win)."""
    out = ModelCheck.of(reveal, verdict=True, reason=f"trajectory: {why}")
    out.trajectory_ok = False
    out.trajectory = why
    return out


def fetch_checkpoints(reveal: Reveal, dest_dir: Path, *, max_bytes: int, deadline: float,
                      allow_file: bool = False, allow_private: bool = False,
                      min_rate_bps: int = 0) -> list[Path] | ModelCheck:
    """Download every checkpoint the reveal names into `dest_dir`, digest-checked, in epoch
    order. The paths, or a refuting ModelCheck for a provable fault; raises `Unavailable` when
    one could not be obtained before `deadline` (time.monotonic)."""
    from training.artifacts import (
        AddressRefused,
        ArtifactError,
        DigestMismatch,
        TooLarge,
        TooSlow,
        fetch,
    )
    from training.sidecars.task_inputs import check_remote_uri

    if len(reveal.checkpoint_digests) < 2:
        return refuted(reveal, f"{len(reveal.checkpoint_digests)} checkpoint(s); the trajectory "
                               "needs epoch 0 and at least one trained epoch")
    dest_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for epoch, digest in enumerate(reveal.checkpoint_digests):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unavailable(f"out of time after {epoch} of "
                              f"{len(reveal.checkpoint_digests)} checkpoints")
        dest = dest_dir / f"epoch-{epoch:04d}.safetensors"
        uri = checkpoint_uri(reveal.model_uri, epoch)
        try:
            check_remote_uri(uri, allow_file, allow_private=allow_private)
            fetch(uri, max_bytes=max_bytes, sha256=digest.hex(), dest=dest, timeout=left,
                  allow_private=allow_private, min_rate_bps=min_rate_bps, deadline=deadline)
        except AddressRefused:
            return refuted(reveal, "checkpoint URI refused")
        except DigestMismatch as exc:
            return refuted(reveal, f"checkpoint {epoch} is not the committed one: {exc}")
        except TooLarge as exc:
            return refuted(reveal, f"checkpoint {epoch} too large: {exc}")
        except TooSlow as exc:
            raise Unavailable(f"checkpoint {epoch} too slow: {exc}") from exc
        except ArtifactError as exc:
            raise Unavailable(f"checkpoint {epoch}: {exc}") from exc
        paths.append(dest)
    return paths


def selection_seed(rpc: RpcClient, rec: Round) -> bytes:
    """The seed of the epochs every validator replays in round `rec`: the hash of the block
    that began VERIFY, which did not exist when the reveals were sent (docs/proof_of_learning.md
    "Spot-check"). Every honest validator draws the same epochs, so their verdicts agree.
    Falls back to the round seed (logged) if the node cannot say."""
    from training.sidecars.rpc_types import RpcError

    height = rec.verify_height
    try:
        if height is not None:
            block_hash = rpc.block(int(height))["block_id"]["hash"]
            return hashlib.sha256(b"dlbc/pol/select\x00" + bytes.fromhex(block_hash)).digest()
    except (RpcError, KeyError, TypeError, ValueError) as exc:
        log.warning("round %d: no hash for block %s (%s); spot-check seeded by the round seed",
                    rec.round, height, exc)
    return hashlib.sha256(b"dlbc/pol/select-fallback\x00" + rec.seed).digest()


# ------------------------------------------------------------------------------ in the worker


def check_trajectory(out: ModelCheck, job: CheckJob, model_bytes: bytes,
                     train: ArrayDataset | None, *, deadline: float | None = None) -> None:
    """Replay the model's trajectory (`training.proof.verify`) and write the outcome into
    `out`; runs in the check process after `check_model_bytes` found nothing against the model.
    A replay that runs out of time turns the verdict into no verdict, never a refutation."""
    from training.proof.verify import verify_trajectory
    from training.sidecars.task_inputs import spec_hparams

    if train is None:
        raise RuntimeError("no training set was sent")  # the parent's bug: no verdict
    miner = job.reveal.miner
    checkpoints = [Path(p).read_bytes() for p in job.checkpoints]
    extra_loss, seal = _watermark_terms(job, checkpoints[-1])
    report = verify_trajectory(
        checkpoints, model_bytes, train, arch=job.spec.architecture,
        hparams=spec_hparams(job.spec), round_seed=job.seed, miner=miner,
        extra_loss=extra_loss, seal=seal,
        selection_seed=hashlib.sha256(job.selection_seed + miner).digest(),
        policy=policy_for(job.pol_epochs), device=job.device, deadline=deadline)
    if report.ok:
        checked = ", ".join(f"{e} ({d:.2g})" for e, d in report.checked)
        out.trajectory = (f"epochs {checked or 'none'} of {report.epochs} replayed in "
                          f"{report.replay_seconds:.1f}s")
    elif report.timed_out:
        out.verdict = False
        out.reason = f"out of time: {report.reason}"
    else:
        out.trajectory_ok = False
        out.trajectory = report.reason
        out.reason = f"trajectory: {report.reason}"
    log.debug("trajectory of %s: %s (%.1fs)", miner.hex(), out.trajectory or out.reason,
              report.seconds)


def policy_for(epochs: int) -> TrajectoryPolicy:
    """The chain's `proof_of_learning` epochs split as docs/proof_of_learning.md says: the
    largest update, up to two updates that stand out from their neighbours, the rest drawn."""
    from training.proof.verify import TrajectoryPolicy

    largest = min(1, epochs)
    anomalous = min(2, epochs - largest)
    return TrajectoryPolicy(q_random=epochs - largest - anomalous, q_largest=largest,
                            q_anomalous=anomalous)


def _watermark_terms(job: CheckJob, last_checkpoint: bytes
                     ) -> tuple[Callable[[nn.Module, ReplayConfig], Tensor],
                                Callable[[nn.Module], None] | None]:
    """The watermark loss the miner trained with and its sealing, for the replay: the key is
    the revealing miner's, derived from the round seed under the chain's scheme; the sealing's
    settings are the run's own (its last checkpoint's config; None when that does not load,
    which `verify_trajectory` then reports)."""
    import torch

    from training.models import build_model
    from training.proof.checkpoint import BadCheckpoint, load_checkpoint
    from training.proof.replay import replay_threads
    from training.sidecars.sealing import seal_watermark
    from training.sidecars.task_inputs import spec_hparams
    from watermark import embed_loss

    scheme = job.scheme
    layer = scheme.layer(build_model(job.spec.architecture, spec_hparams(job.spec)))
    key = scheme.key(job.seed, job.reveal.miner, layer)

    def extra_loss(model: nn.Module, config: ReplayConfig) -> Tensor:
        loss: Tensor = config.watermark_lambda * embed_loss(
            model, key, temperature=config.watermark_temperature)
        return loss

    try:
        config = load_checkpoint(last_checkpoint).config
    except BadCheckpoint:
        return extra_loss, None

    def seal(model: nn.Module) -> None:
        with replay_threads(config.torch_threads, torch.device("cpu")):  # as the miner sealed
            seal_watermark(model, key, scheme.threshold, lr=config.seal_lr,
                           max_steps=config.seal_max_steps,
                           temperature=config.watermark_temperature)

    return extra_loss, seal
