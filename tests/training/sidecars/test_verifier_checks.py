"""The verifier's per-model check on real files served over HTTP (docs/verification.md, issue 6
bad input).

Verdict policy under test: provable faults (digest mismatch, pickle, truncated file, wrong
architecture, no watermark) give a negative verdict; a model that cannot be obtained in time
(404, a server that never answers) gives no verdict (`Unavailable` / TimeoutError).
"""

from __future__ import annotations

import hashlib
import pickle
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from abci_app.dlbc.records import Reveal
from training.artifacts import save_model
from training.data import make_segmentation_2d
from training.models import build_model
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import WatermarkScheme
from training.sidecars.offline_records import reveal, task_spec
from training.sidecars.sealing import seal_watermark
from training.sidecars.verifier import Unavailable, check_model
from training.trainer import evaluate

HP = {"depth": 2, "base_width": 16}
SPEC = task_spec("unet2d", '{"base_width": 16, "depth": 2}', "dice")
SEED = hashlib.sha256(b"round seed").digest()
MINER = bytes(range(20))
SCHEME = WatermarkScheme.genesis_default()
THRESHOLD = SCHEME.threshold


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("artifacts")
    model = build_model("unet2d", HP, seed=0)
    key = SCHEME.key(SEED, MINER, SCHEME.layer(model))
    det, _ = seal_watermark(model, key, THRESHOLD)
    assert det.ok
    digest = save_model(model, root / "model.safetensors")
    plain = build_model("unet2d", HP, seed=1)
    plain_digest = save_model(plain, root / "plain.safetensors")
    wrong = build_model("unet2d", {"depth": 2, "base_width": 4}, seed=0)
    wrong_digest = save_model(wrong, root / "wrong.safetensors")
    (root / "pickle.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    data = (root / "model.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    test = make_segmentation_2d(8, 16, seed=3)
    with ArtifactServer(root) as srv:
        yield {"srv": srv, "root": root, "model": model, "digest": digest,
               "plain_digest": plain_digest, "wrong_digest": wrong_digest, "test": test}


def _reveal(srv: ArtifactServer, name: str, digest: str, miner: bytes = MINER) -> Reveal:
    return reveal(miner, srv.url_for(name), digest, 500_000)


def _check(served: dict, rev: Reveal, **kw):
    return check_model(rev, SPEC, SEED, served["test"], scheme=SCHEME,
                       max_bytes=kw.get("max_bytes", 1 << 24), timeout=kw.get("timeout", 10.0),
                       allow_private=True)


def test_check_model_honest(served: dict) -> None:
    chk = _check(served, _reveal(served["srv"], "model.safetensors", served["digest"]))
    assert chk.verdict and chk.watermark_ok and chk.reason == ""
    assert chk.watermark_min_confidence > THRESHOLD
    assert chk.score_ppm == evaluate(served["model"], served["test"], "dice")


def test_invalid_other_miners_watermark(served: dict) -> None:
    """A copied model revealed by another address: the copier's watermark is not in it."""
    chk = _check(served, _reveal(served["srv"], "model.safetensors", served["digest"],
                                 miner=bytes(20)))
    assert chk.verdict and not chk.watermark_ok
    assert "watermark not detected" in chk.reason


def test_invalid_unwatermarked_model(served: dict) -> None:
    chk = _check(served, _reveal(served["srv"], "plain.safetensors", served["plain_digest"]))
    assert chk.verdict and not chk.watermark_ok


def test_invalid_digest_mismatch(served: dict) -> None:
    chk = _check(served, _reveal(served["srv"], "plain.safetensors", served["digest"]))
    assert chk.verdict and not chk.watermark_ok and chk.score_ppm == 0
    assert "digest mismatch" in chk.reason


def test_invalid_pickled_model_is_never_loaded(served: dict) -> None:
    digest = hashlib.sha256((served["root"] / "pickle.bin").read_bytes()).hexdigest()
    chk = _check(served, _reveal(served["srv"], "pickle.bin", digest))
    assert chk.verdict and not chk.watermark_ok and "pickle" in chk.reason


def test_invalid_truncated_model(served: dict) -> None:
    digest = hashlib.sha256((served["root"] / "truncated.safetensors").read_bytes()).hexdigest()
    chk = _check(served, _reveal(served["srv"], "truncated.safetensors", digest))
    assert chk.verdict and not chk.watermark_ok and "safetensors" in chk.reason


def test_invalid_wrong_architecture(served: dict) -> None:
    chk = _check(served, _reveal(served["srv"], "wrong.safetensors", served["wrong_digest"]))
    assert chk.verdict and not chk.watermark_ok and "shape" in chk.reason


def test_invalid_oversize_model(served: dict) -> None:
    chk = _check(served, _reveal(served["srv"], "model.safetensors", served["digest"]),
                 max_bytes=1000)
    assert chk.verdict and not chk.watermark_ok and "too large" in chk.reason


def test_invalid_404_gives_no_verdict(served: dict) -> None:
    with pytest.raises(Unavailable, match="404"):
        _check(served, _reveal(served["srv"], "missing.safetensors", served["digest"]))


def test_invalid_server_that_never_answers_gives_no_verdict(served: dict) -> None:
    """A URI whose server accepts and then stalls: bounded by the per-model time (a deadline
    for the whole download, not per read), and the check returns: nothing is left running."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(lsock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    rev = reveal(MINER, f"http://127.0.0.1:{lsock.getsockname()[1]}/model.safetensors",
                 served["digest"], 1)
    try:
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            _check(served, rev, timeout=1.0)
        assert time.monotonic() - t0 < 5
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        lsock.close()


def test_nothing_written_next_to_served_files(served: dict) -> None:
    """Checks only read: the served folder holds exactly what the fixture put there."""
    names = sorted(p.name for p in Path(served["root"]).iterdir())
    assert names == ["model.safetensors", "pickle.bin", "plain.safetensors",
                     "truncated.safetensors", "wrong.safetensors"]


def test_invalid_file_uri_from_a_miner_is_refuted_unopened(served: dict) -> None:
    """A reveal pointing at the validator's own disk is never opened (docs/artifacts.md), and since
    no validator can fetch it, the claim is refuted (its reveal deposit is forfeited,
    docs/economics.md) rather than left without a verdict."""
    rev = replace(_reveal(served["srv"], "model.safetensors", served["digest"]),
                  model_uri=(served["root"] / "model.safetensors").as_uri())
    chk = _check(served, rev)
    assert chk.verdict and not chk.watermark_ok and chk.score_ppm == 0
    assert "only http" in chk.reason
    chk = check_model(rev, SPEC, SEED, served["test"], scheme=SCHEME,
                      max_bytes=1 << 24, timeout=5.0, allow_file=True,  # operator opt-in
                      allow_private=True)
    assert chk.verdict and chk.watermark_ok
