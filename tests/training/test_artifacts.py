"""Safetensors artifacts, digests, and size-capped digest-checked fetch over real file/HTTP URIs."""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from training.artifacts import (
    ArtifactError,
    DigestMismatch,
    NotSafetensors,
    TooLarge,
    fetch,
    fetch_bytes,
    file_uri,
    load_model,
    model_metadata,
    save_model,
    sha256_file,
    state_dict_bytes,
)
from training.models import build_model
from training.sidecars.artifact_server import ArtifactServer

HP = {"depth": 1, "base_width": 4}


@pytest.fixture
def model_file(tmp_path: Path) -> tuple[Path, str]:
    model = build_model("unet2d", HP, seed=1)
    path = tmp_path / "root" / "model.safetensors"
    digest = save_model(model, path, metadata=model_metadata("unet2d", HP))
    return path, digest


@pytest.fixture
def server(model_file: tuple[Path, str]) -> Iterator[ArtifactServer]:
    with ArtifactServer(model_file[0].parent) as srv:
        yield srv


def test_save_model_digest_matches_file(model_file: tuple[Path, str]) -> None:
    path, digest = model_file
    assert digest == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temp left


def test_load_model_round_trip(model_file: tuple[Path, str]) -> None:
    path, digest = model_file
    original = build_model("unet2d", HP, seed=1)
    loaded = load_model(path, "unet2d", HP, sha256=digest)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(original(x), loaded(x))


def test_invalid_pickle_is_never_loaded(tmp_path: Path) -> None:
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weight": [1.0]}))
    with pytest.raises(NotSafetensors, match="pickle"):
        load_model(evil, "unet2d", HP)
    zipped = tmp_path / "ckpt.pt"
    torch.save(build_model("unet2d", HP).state_dict(), zipped)  # writing only; never torch.load
    with pytest.raises(NotSafetensors, match="zip"):
        load_model(zipped, "unet2d", HP)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{abc}" + bytes(40))
    with pytest.raises(NotSafetensors, match="JSON"):
        load_model(junk, "unet2d", HP)


def test_invalid_digest_checked_before_parsing(tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps(object))
    # The digest is wrong, so the file is refused for that reason, before it is even looked at.
    with pytest.raises(DigestMismatch):
        load_model(evil, "unet2d", HP, sha256="00" * 32)


def test_invalid_wrong_architecture(model_file: tuple[Path, str]) -> None:
    path, _ = model_file
    with pytest.raises(ArtifactError, match="missing"):
        load_model(path, "unet2d", {"depth": 2, "base_width": 4})
    with pytest.raises(ArtifactError, match="shape of"):
        load_model(path, "unet2d", {"depth": 1, "base_width": 8})
    with pytest.raises(ValueError, match="unknown architecture"):
        load_model(path, "transformer", {})


def test_invalid_non_float_or_nan_weights() -> None:
    state = build_model("cnn", {"depth": 1, "base_width": 2}).state_dict()
    bad = {k: v.to(torch.int32) for k, v in state.items()}
    with pytest.raises(ArtifactError, match="floating point"):
        load_model(state_dict_bytes(bad), "cnn", {"depth": 1, "base_width": 2})
    nan = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    with pytest.raises(ArtifactError, match="NaN"):
        load_model(state_dict_bytes(nan), "cnn", {"depth": 1, "base_width": 2})


def test_bf16_file_loads_into_float32_model() -> None:
    hp = {"depth": 1, "base_width": 2}
    state = build_model("cnn", hp, seed=0).state_dict()
    blob = state_dict_bytes({k: v.to(torch.bfloat16) for k, v in state.items()})
    loaded = load_model(blob, "cnn", hp)
    assert loaded.classifier.weight.dtype == torch.float32


def test_fetch_file_uri(model_file: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = model_file
    dest = fetch(file_uri(path), max_bytes=10**7, sha256=digest, dest=tmp_path / "dl" / "m")
    assert dest.read_bytes() == path.read_bytes()


def test_fetch_http(server: ArtifactServer, model_file: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = model_file
    url = server.url_for("model.safetensors")
    dest = fetch(url, max_bytes=10**7, sha256=digest.upper(), dest=tmp_path / "m.safetensors")
    assert sha256_file(dest) == digest
    assert fetch_bytes(url, max_bytes=10**7, sha256=digest) == path.read_bytes()
    load_model(dest, "unet2d", HP, sha256=digest)


def _only(dir_: Path) -> list[str]:
    return sorted(p.name for p in dir_.iterdir()) if dir_.exists() else []


def test_invalid_fetch_http_size_cap(server: ArtifactServer, model_file: tuple[Path, str],
                                     tmp_path: Path) -> None:
    path, digest = model_file
    out = tmp_path / "out"
    with pytest.raises(TooLarge):
        fetch(server.url_for("model.safetensors"), max_bytes=path.stat().st_size - 1,
              sha256=digest, dest=out / "m")
    assert _only(out) == []


def test_invalid_fetch_digest_mismatch_keeps_existing(
    server: ArtifactServer, model_file: tuple[Path, str], tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "m"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    for uri in (server.url_for("model.safetensors"), file_uri(model_file[0])):
        with pytest.raises(DigestMismatch):
            fetch(uri, max_bytes=10**7, sha256="ab" * 32, dest=dest)
        assert _only(dest.parent) == ["m"] and dest.read_bytes() == b"previous"


def test_invalid_fetch_errors(server: ArtifactServer, tmp_path: Path) -> None:
    ok = "00" * 32
    with pytest.raises(ArtifactError, match="HTTP 404"):
        fetch(server.url_for("missing"), max_bytes=100, sha256=ok, dest=tmp_path / "x")
    with pytest.raises(ArtifactError, match="scheme"):
        fetch("ftp://example/x", max_bytes=100, sha256=ok, dest=tmp_path / "x")
    with pytest.raises(ArtifactError, match="64 hex"):
        fetch(server.url_for("model.safetensors"), max_bytes=100, sha256="zz", dest=tmp_path / "x")
    with pytest.raises(ArtifactError, match="no such file"):
        fetch(file_uri(tmp_path / "nope"), max_bytes=100, sha256=ok, dest=tmp_path / "x")
    with pytest.raises(ArtifactError, match="failed"):
        fetch("http://127.0.0.1:9/x", max_bytes=100, sha256=ok, dest=tmp_path / "x", timeout=2)
    assert _only(tmp_path) == ["root"]


class _NoLengthHandler(BaseHTTPRequestHandler):
    """Streams 1 MiB with no Content-Length (close-delimited), as a lying server might."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(64):
                self.wfile.write(b"\0" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_invalid_size_cap_enforced_while_streaming(tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NoLengthHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/big"
        with pytest.raises(TooLarge):
            fetch(url, max_bytes=100_000, sha256="00" * 32, dest=tmp_path / "big")
        with pytest.raises(TooLarge):
            fetch_bytes(url, max_bytes=100_000, sha256="00" * 32)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert _only(tmp_path) == []
