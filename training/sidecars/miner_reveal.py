"""The miner's REVEAL work (docs/transactions.md, paper Sec. IV-B "commit-reveal"): measure the
committed model on the revealed test set, publish it under an unguessable URI, `RevealModel`.

Why its own module: `miner.py` is the sidecar (when to act), `miner_train.py` the training of a
round; this runs on the poll loop while the next round trains on the training thread. Publishing
links the round's files into the served root only now (front-running, see `miner.py`).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from abci_app.dlbc.records import RoundInfo
from training.sidecars.miner_state import RoundSkipped, RoundWork
from training.sidecars.miner_train import monotonic_deadline
from training.sidecars.task_inputs import fetch_dataset, spec_hparams

if TYPE_CHECKING:
    from training.sidecars.miner import Miner


def publish(m: Miner, work: RoundWork) -> str:
    """Make the round's model and checkpoints fetchable (at REVEAL only); returns the URI.

    Files are hard-linked (copied across filesystems) into a private staging folder that
    is then renamed into the served root as `<token>/`, so a reader never sees a half
    published folder. Idempotent: a restarted miner reuses the token recorded in state.json.
    """
    from training.artifacts import sha256_file

    assert m.server is not None
    rdir = m.round_dir(work.round)
    if not work.public_dir:
        work.public_dir = secrets.token_hex(16)
        work.save(rdir)
    pub = m.artifact_root / work.public_dir
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
    work.model_uri = m.server.url_for(Path(work.public_dir) / "model.safetensors")
    work.save(rdir)
    return work.model_uri


def reveal_round(m: Miner, info: RoundInfo, work: RoundWork) -> None:
    """Fetch the revealed test set, measure the committed model on it, publish the model and
    its checkpoints, send `RevealModel`; raises RoundSkipped."""
    from abci_app.dlbc import txs
    from training.artifacts import ArtifactError, load_model
    from training.trainer import evaluate

    assert m.key is not None
    n = work.round
    task = m.chain.task(work.task_id)
    if task is None or task.test_key is None:
        raise RoundSkipped("chain", f"task {work.task_id} has no revealed test key")
    spec = task.spec
    dest = m.cfg.workdir / f"round-{n}-test.npz.enc"
    try:
        test = fetch_dataset(spec.test_uri, spec.test_sha256.hex(), 0, task.test_key, dest,
                             m.mcfg.max_data_bytes, spec.num_classes or None,
                             allow_file=m.mcfg.allow_file_uris,
                             allow_private=m.mcfg.allow_private_networks,
                             min_rate_bps=m.mcfg.min_rate_bps,
                             deadline=monotonic_deadline(info.record.reveal_end_ns))
        model = load_model(work.model_path, spec.architecture, spec_hparams(spec),
                           sha256=work.model_digest)
    except (ValueError, OSError, ArtifactError) as exc:
        raise RoundSkipped("data", f"cannot measure the model: {exc}") from exc
    finally:
        dest.unlink(missing_ok=True)
    score = evaluate(model, test, spec.metric, device="cpu")
    work.claimed_score_ppm = score
    try:
        publish(m, work)
    except OSError as exc:
        raise RoundSkipped("data", f"cannot publish the model: {exc}") from exc
    msg = txs.reveal_model(n, work.model_uri, bytes.fromhex(work.model_digest),
                           bytes.fromhex(work.salt), score,
                           [bytes.fromhex(d) for d in work.checkpoint_digests])
    if m.send(msg, "RevealModel") is None:
        work.save(m.round_dir(n))
        raise RoundSkipped("tx_rejected", "RevealModel was rejected")
    work.revealed = True
    work.save(m.round_dir(n))
    m.metrics.inc("reveals_total")
    m.log.info("round %d: revealed %s with claimed %s %.4f", n, work.model_uri, spec.metric,
               score / 1e6)
    m.emit("revealed", round=n, miner=m.key.address.hex(), score_ppm=score, uri=work.model_uri)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no extra disk for a large model), copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
