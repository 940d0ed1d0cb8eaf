"""One round's reveals, one honest and many hostile, as real files behind a `HostileServer`: the
world of the verifier's budget tests and of `bench/verifier.py` (issue 13 "Verifier").

Hostile kinds, each a real file served over real HTTP (what the verifier must make of it):

* ``drip``: a valid model served one byte a second → dropped on the minimum rate, no verdict;
* ``huge``: a Content-Length of 1 TiB → over the size cap, refuted unread;
* ``digest``: a file whose SHA-256 is not the revealed one → refuted;
* ``pickle``: a pickled object with the right digest → never unpickled, refuted;
* ``truncated``: half a safetensors file with the right digest → refuted;
* ``nomark``: a valid model without the miner's watermark → refuted without scoring;
* ``liar``: a valid model carrying the miner's own watermark whose claim is a perfect score
  → scored, and the measured score refutes the claim.

Every hostile reveal claims 1,000,000 ppm (a perfect score), so in claimed order they all come
before the honest reveal, which claims exactly what it measures.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from abci_app.dlbc.params import PPM
from abci_app.dlbc.records import Reveal
from training.sidecars.base import WatermarkScheme
from training.sidecars.hostile_server import HostileServer
from training.sidecars.offline_records import reveal

if TYPE_CHECKING:
    from training.data import ArrayDataset

KINDS = ("drip", "huge", "digest", "pickle", "truncated", "nomark", "liar")
HPARAMS = {"depth": 2, "base_width": 16}
"""The verifier tests' U-Net: the smallest whose watermark layer holds the default 256 bits."""


@dataclass(frozen=True)
class RoundFiles:
    honest: Reveal
    hostile: tuple[tuple[str, Reveal], ...]
    """(kind, reveal) in the order they were made."""
    honest_score_ppm: int

    @property
    def reveals(self) -> tuple[Reveal, ...]:
        return (self.honest, *(r for _, r in self.hostile))


def miner_address(i: int) -> bytes:
    """A distinct 20-byte address per miner (0 is the honest one)."""
    return hashlib.sha256(b"miner %d" % i).digest()[:20]


def make_round(root: Path, srv: HostileServer, seed: bytes, scheme: WatermarkScheme,
               test: ArrayDataset, kinds: Sequence[str]) -> RoundFiles:
    """Write the honest model and one file per entry of `kinds` under `root` (the server's
    folder) and return their reveals. `test` is the round's ArrayDataset (for the honest
    claim). Models are tiny U-Nets (`HPARAMS`), so this takes a second or two."""
    import torch

    from training.artifacts import save_model, sha256_file
    from training.models import build_model
    from training.sidecars.sealing import seal_watermark
    from training.trainer import evaluate

    def sealed(miner: bytes, init_seed: int) -> torch.nn.Module:
        model = build_model("unet2d", HPARAMS, seed=init_seed)
        key = scheme.key(seed, miner, scheme.layer(model))
        det, _ = seal_watermark(model, key, scheme.threshold)
        if not det.ok:
            raise RuntimeError("could not seal a watermark into the test model")
        return model

    honest_miner = miner_address(0)
    honest = sealed(honest_miner, 0)
    digest = save_model(honest, root / "honest.safetensors")
    score = evaluate(honest, test, "dice")
    honest_rev = reveal(honest_miner, srv.url_for("files", "honest.safetensors"), digest, score)
    plain = build_model("unet2d", HPARAMS, seed=1)
    plain_digest = save_model(plain, root / "plain.safetensors")
    data = (root / "plain.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (root / "pickle.bin").write_bytes(pickle.dumps({"weights": list(range(100))}))
    out: list[tuple[str, Reveal]] = []
    for i, kind in enumerate(kinds, start=1):
        miner = miner_address(i)
        if kind == "drip":
            uri, dg = srv.url_for("drip", "plain.safetensors"), plain_digest
        elif kind == "huge":
            uri, dg = srv.url_for("huge", "plain.safetensors"), plain_digest
        elif kind == "digest":
            uri, dg = srv.url_for("files", "plain.safetensors"), "ab" * 32
        elif kind == "pickle":
            uri, dg = srv.url_for("files", "pickle.bin"), sha256_file(root / "pickle.bin")
        elif kind == "truncated":
            uri = srv.url_for("files", "truncated.safetensors")
            dg = sha256_file(root / "truncated.safetensors")
        elif kind == "nomark":
            uri, dg = srv.url_for("files", "plain.safetensors"), plain_digest
        elif kind == "liar":
            name = f"liar-{i}.safetensors"
            dg = save_model(sealed(miner, i + 1), root / name)
            uri = srv.url_for("files", name)
        else:
            raise ValueError(f"unknown hostile kind {kind!r}; one of {', '.join(KINDS)}")
        out.append((kind, reveal(miner, uri, dg, PPM)))
    return RoundFiles(honest_rev, tuple(out), score)
