"""Safetensors artifacts, digests, and size-capped digest-checked fetch over real file/HTTP URIs."""

from __future__ import annotations

import hashlib
import json
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
    check_safetensors_layout,
    expected_state_shapes,
    fetch,
    fetch_bytes,
    file_uri,
    load_model,
    load_state_dict_bytes,
    model_metadata,
    save_model,
    sha256_file,
    state_dict_bytes,
    state_shapes,
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
    dest = fetch(url, max_bytes=10**7, sha256=digest.upper(), dest=tmp_path / "m.safetensors",
                 allow_private=True)
    assert sha256_file(dest) == digest
    assert fetch_bytes(url, max_bytes=10**7, sha256=digest, allow_private=True) == path.read_bytes()
    load_model(dest, "unet2d", HP, sha256=digest)


def _only(dir_: Path) -> list[str]:
    return sorted(p.name for p in dir_.iterdir()) if dir_.exists() else []


def test_invalid_fetch_http_size_cap(server: ArtifactServer, model_file: tuple[Path, str],
                                     tmp_path: Path) -> None:
    path, digest = model_file
    out = tmp_path / "out"
    with pytest.raises(TooLarge):
        fetch(server.url_for("model.safetensors"), max_bytes=path.stat().st_size - 1,
              sha256=digest, dest=out / "m", allow_private=True)
    assert _only(out) == []


def test_invalid_fetch_digest_mismatch_keeps_existing(
    server: ArtifactServer, model_file: tuple[Path, str], tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "m"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    for uri in (server.url_for("model.safetensors"), file_uri(model_file[0])):
        with pytest.raises(DigestMismatch):
            fetch(uri, max_bytes=10**7, sha256="ab" * 32, dest=dest, allow_private=True)
        assert _only(dest.parent) == ["m"] and dest.read_bytes() == b"previous"


def test_invalid_fetch_errors(server: ArtifactServer, tmp_path: Path) -> None:
    ok = "00" * 32
    with pytest.raises(ArtifactError, match="HTTP 404"):
        fetch(server.url_for("missing"), max_bytes=100, sha256=ok, dest=tmp_path / "x",
              allow_private=True)
    with pytest.raises(ArtifactError, match="scheme"):
        fetch("ftp://example/x", max_bytes=100, sha256=ok, dest=tmp_path / "x")
    with pytest.raises(ArtifactError, match="64 hex"):
        fetch(server.url_for("model.safetensors"), max_bytes=100, sha256="zz", dest=tmp_path / "x")
    with pytest.raises(ArtifactError, match="no such file"):
        fetch(file_uri(tmp_path / "nope"), max_bytes=100, sha256=ok, dest=tmp_path / "x")
    with pytest.raises(ArtifactError, match="failed"):
        fetch("http://127.0.0.1:9/x", max_bytes=100, sha256=ok, dest=tmp_path / "x", timeout=2,
              allow_private=True)
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
            fetch(url, max_bytes=100_000, sha256="00" * 32, dest=tmp_path / "big",
                  allow_private=True)
        with pytest.raises(TooLarge):
            fetch_bytes(url, max_bytes=100_000, sha256="00" * 32, allow_private=True)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert _only(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Safetensors headers checked before anything is allocated (training/safetensors_header.py)


def _safetensors(entries: dict[str, object], data: bytes) -> bytes:
    """A safetensors file with a hand-written header: the entries say what they like."""
    header = json.dumps(entries).encode()
    return len(header).to_bytes(8, "little") + header + data


def _f32(shape: list[int], begin: int) -> dict[str, object]:
    size = 4 * (shape[0] * shape[1] if len(shape) == 2 else shape[0])
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, begin + size]}


@pytest.mark.parametrize(("entries", "data_len", "message"), [
    # a 4 TiB tensor declared in a 64-byte file
    ({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}, 64, "beyond"),
    # shape and range disagree (the range fits the file, the shape needs 4 MB)
    ({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 64]}}, 64, "needs 4000000"),
    # two tensors sharing bytes, a gap, bytes after the last tensor
    ({"a": _f32([8], 0), "b": _f32([8], 16)}, 48, "contiguous"),
    ({"a": _f32([4], 0), "b": _f32([4], 32)}, 48, "contiguous"),
    ({"a": _f32([4], 0)}, 64, "after the last tensor"),
    ({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, 16, "bad shape"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, 16, "data_offsets"),
    ({"a": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}}, 16, "dtype"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16], "x": 1}}, 16, "exactly"),
    ({"__metadata__": {"k": 1}, "a": _f32([4], 0)}, 16, "__metadata__"),
])
def test_invalid_safetensors_header_lying_about_sizes(entries: dict[str, object], data_len: int,
                                                      message: str) -> None:
    blob = _safetensors(entries, bytes(data_len))
    with pytest.raises(NotSafetensors, match=message):
        check_safetensors_layout(blob)
    with pytest.raises(NotSafetensors, match=message):
        load_state_dict_bytes(blob)


def test_invalid_safetensors_duplicate_name() -> None:
    header = b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, ' \
             b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    blob = len(header).to_bytes(8, "little") + header + bytes(16)
    with pytest.raises(NotSafetensors, match="twice"):
        load_state_dict_bytes(blob)


def test_safetensors_layout_of_a_real_file() -> None:
    model = build_model("cnn", {"depth": 1, "base_width": 2}, seed=0)
    blob = state_dict_bytes(model, model_metadata("cnn", {"depth": 1, "base_width": 2}))
    layout = check_safetensors_layout(blob, state_shapes(model))
    assert {k: v[1] for k, v in layout.items()} == state_shapes(model)
    state = load_state_dict_bytes(blob, expected=state_shapes(model))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_invalid_safetensors_wrong_tensors_refused_from_the_header() -> None:
    hp = {"depth": 1, "base_width": 2}
    model = build_model("cnn", hp, seed=0)
    expected = expected_state_shapes("cnn", hp)  # meta device: no weights allocated
    assert expected == state_shapes(model)
    # One tensor the architecture does not have, of a size that fits the file: refused as a
    # header problem (NotSafetensors), before safetensors or load_into see it.
    padded = {**model.state_dict(), "extra": torch.zeros(1 << 20)}
    with pytest.raises(NotSafetensors, match=r"unexpected \['extra'\]"):
        load_state_dict_bytes(state_dict_bytes(padded), expected=expected)
    with pytest.raises(NotSafetensors, match=r"unexpected \['extra'\]"):
        load_model(state_dict_bytes(padded), "cnn", hp)
    reshaped = {k: v.reshape(-1) if v.ndim > 1 else v for k, v in model.state_dict().items()}
    with pytest.raises(NotSafetensors, match="shape of"):
        load_model(state_dict_bytes(reshaped), "cnn", hp)


def test_safetensors_header_length_that_starts_like_a_pickle_or_zip_loads() -> None:
    # A header of 128 mod 256 bytes starts the file with 0x80 (pickle's first byte), one of
    # 0x4B50 mod 65536 with "PK": real files, not impostors.
    model = build_model("cnn", {"depth": 1, "base_width": 2}, seed=0)
    for first in (b"\x80", b"PK"):
        for pad in range(0, 70_000, 8):  # safetensors pads its header to 8 bytes
            blob = state_dict_bytes(model, {"pad": "x" * pad})
            if blob.startswith(first):
                break
        state = load_state_dict_bytes(blob, expected=state_shapes(model))
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
