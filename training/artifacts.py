"""Content-addressed artifacts: safetensors models, SHA-256 digests, size-capped fetch by URI.

docs/artifacts.md: models and data travel by URI (``file://``, ``http(s)://``), never inside blocks;
every download is size-capped and checked against its SHA-256 *before* anything parses it, and
models are safetensors only — a pickle is never loaded, so a hostile miner or publisher cannot
run code on a validator. A model file is identified by the SHA-256 of its bytes (the
``model_digest`` of ``RevealModel``, docs/transactions.md).

Every writer here goes through a temporary file in the destination's directory and an atomic
rename, so a failure (digest mismatch, size cap, I/O error) leaves nothing behind at the
destination.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from abci_app.fsutil import atomic_writer
from training.models import HParams, build_model

_READ_CHUNK = 4 << 20
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header
_HEX = frozenset("0123456789abcdef")


class ArtifactError(ValueError):
    """An artifact that must not be used; the message says why."""


class DigestMismatch(ArtifactError):
    pass


class TooLarge(ArtifactError):
    pass


class NotSafetensors(ArtifactError):
    pass


# --------------------------------------------------------------------------------------------
# Digests


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Streamed SHA-256 of a file (lowercase hex), reading into one reused buffer.

    OpenSSL's SHA-NI code path plus unbuffered `readinto` keeps this at memory/disk speed
    (bench/training.py compares it with `sha256sum` on a 270 MB checkpoint).
    """
    h = hashlib.sha256()
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _check_digest_arg(sha256: str) -> str:
    digest = sha256.lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ArtifactError(f"expected SHA-256 as 64 hex characters, got {sha256!r}")
    return digest


# --------------------------------------------------------------------------------------------
# Atomic writes


@contextmanager
def _suppress_oserror() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# Models as safetensors


def state_dict_bytes(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Serialise a model (or a state dict) to safetensors bytes; tensors are copied to CPU."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return st_save(tensors, metadata=dict(metadata) if metadata else None)


def save_model(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
    durable: bool = True,
) -> str:
    """Write safetensors to `path` atomically and return the SHA-256 hex digest of the file.

    The digest is taken over the very bytes written, in memory, so no second read is needed.
    `durable=False` skips the fsync (per-epoch checkpoints: a crash means retraining anyway).
    """
    data = state_dict_bytes(model_or_state, metadata)
    digest = sha256_bytes(data)
    with atomic_writer(Path(path), durable=durable) as f:
        f.write(data)
    return digest


def model_metadata(arch: str, hparams: HParams) -> dict[str, str]:
    """Safetensors metadata naming the registry architecture (informational only).

    A loader always builds the architecture the *task spec* names; this metadata is never used
    to choose code, only to help humans and to catch obvious mix-ups.
    """
    return {"dlbc.arch": arch, "dlbc.hparams": json.dumps(dict(hparams), sort_keys=True)}


def check_safetensors_header(data: bytes | memoryview) -> dict[str, Any]:
    """Parse and sanity-check the safetensors header; raise NotSafetensors with a reason.

    Recognises the usual impostors by their first bytes: a pickle (0x80 protocol byte) and a
    `torch.save` zip archive ("PK"), so the error says what the file actually is.
    """
    head = bytes(data[:8])
    if head[:2] == b"PK":
        raise NotSafetensors("file is a zip archive (torch.save checkpoint?), not safetensors; "
                             "pickled checkpoints are never loaded")
    if head[:1] == b"\x80":
        raise NotSafetensors("file is a Python pickle, not safetensors; pickles are never loaded")
    if len(data) < 10:
        raise NotSafetensors(f"file too short for safetensors ({len(data)} bytes)")
    header_len = int.from_bytes(head, "little")
    if header_len > _MAX_HEADER or 8 + header_len > len(data):
        raise NotSafetensors(f"not safetensors: header length {header_len} does not fit the file")
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotSafetensors(f"not safetensors: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise NotSafetensors("not safetensors: header is not a JSON object")
    return header


def load_state_dict_bytes(data: bytes, *, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Check the digest (if given) *then* parse safetensors bytes into CPU tensors."""
    if sha256 is not None:
        expected = _check_digest_arg(sha256)
        actual = sha256_bytes(data)
        if actual != expected:
            raise DigestMismatch(f"digest mismatch: expected {expected}, got {actual}")
    check_safetensors_header(data)
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise NotSafetensors(f"invalid safetensors file: {exc}") from None


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy `state` into `model` strictly: same keys, same shapes, floating point values.

    Values are cast to the model's dtype (a bf16 file fits a float32 model); anything else that
    differs is an error listing the offending keys, and the model is left unchanged.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ArtifactError(
            "state dict does not match the architecture: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, ref in own.items():
        value = state[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise ArtifactError(f"shape of {key}: file has {tuple(value.shape)}, "
                                f"architecture needs {tuple(ref.shape)}")
        if ref.is_floating_point() and not value.is_floating_point():
            raise ArtifactError(f"{key}: expected floating point values, got {value.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ArtifactError(f"{key}: contains NaN or infinity")
    model.load_state_dict({k: state[k].to(own[k].dtype) for k in own}, strict=True)
    return model


def load_model(
    path_or_bytes: str | Path | bytes,
    arch: str,
    hparams: HParams | None = None,
    *,
    sha256: str | None = None,
    max_bytes: int | None = None,
) -> nn.Module:
    """Build registry `arch` from `hparams` and load a safetensors file into it, strictly.

    The file is read once into memory; its digest (when given) is checked on those bytes before
    parsing, so what was verified is exactly what gets loaded.
    """
    model = build_model(arch, hparams or {})
    if isinstance(path_or_bytes, bytes):
        data = path_or_bytes
    else:
        path = Path(path_or_bytes)
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise TooLarge(f"{path} is {size} bytes, more than the cap of {max_bytes}")
        data = path.read_bytes()
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(f"model is {len(data)} bytes, more than the cap of {max_bytes}")
    return load_into(model, load_state_dict_bytes(data, sha256=sha256))


# --------------------------------------------------------------------------------------------
# Fetch by URI


def _iter_file(path: Path) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_READ_CHUNK):
            yield chunk


def _file_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ArtifactError(f"file:// URI with a remote host is not supported: {uri!r}")
    path = Path(unquote(parts.path))
    if not path.is_file():
        raise ArtifactError(f"no such file: {path}")
    return path


def _stream(uri: str, max_bytes: int, timeout: float, consume: Callable[[bytes], None]) -> None:
    """Feed the bytes at `uri` to `consume`, raising TooLarge as soon as the cap is passed."""
    scheme = urlsplit(uri).scheme.lower()
    total = 0

    def take(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"{uri} is larger than the cap of {max_bytes} bytes")
        consume(chunk)

    if scheme == "file":
        path = _file_path(uri)
        if path.stat().st_size > max_bytes:
            raise TooLarge(f"{uri} is {path.stat().st_size} bytes, over the cap of {max_bytes}")
        for chunk in _iter_file(path):
            take(chunk)
        return
    if scheme in ("http", "https"):
        import httpx  # only fetching over the network needs it

        try:
            # identity: the digest is over the bytes as stored; iter_raw never inflates a bomb.
            with httpx.stream("GET", uri, timeout=timeout, follow_redirects=False,
                              headers={"Accept-Encoding": "identity"}) as resp:
                if resp.status_code != 200:
                    raise ArtifactError(f"GET {uri}: HTTP {resp.status_code}")
                declared = resp.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise TooLarge(f"{uri} declares {declared} bytes, over the cap of {max_bytes}")
                for chunk in resp.iter_raw(_READ_CHUNK):
                    take(chunk)
        except httpx.HTTPError as exc:
            raise ArtifactError(f"GET {uri} failed: {exc}") from exc
        return
    raise ArtifactError(f"unsupported URI scheme in {uri!r}; use file://, http:// or https://")


def fetch(
    uri: str, *, max_bytes: int, sha256: str, dest: str | Path, timeout: float = 30.0
) -> Path:
    """Download `uri` to `dest`, enforcing `max_bytes` while streaming and checking `sha256`.

    Bytes go to a temporary file beside `dest`, hashed on the way; only if the size and digest
    are right is it renamed to `dest`. On any failure nothing is left behind (and an existing
    `dest` is untouched). Returns `dest`.
    """
    expected = _check_digest_arg(sha256)
    if max_bytes < 0:
        raise ArtifactError("max_bytes must be >= 0")
    dest = Path(dest)
    h = hashlib.sha256()
    with atomic_writer(dest) as f:

        def consume(chunk: bytes) -> None:
            h.update(chunk)
            f.write(chunk)

        _stream(uri, max_bytes, timeout, consume)
        actual = h.hexdigest()
        if actual != expected:
            raise DigestMismatch(f"{uri}: digest mismatch: expected {expected}, got {actual}")
    return dest


def fetch_bytes(uri: str, *, max_bytes: int, sha256: str, timeout: float = 30.0) -> bytes:
    """Like `fetch` but into memory (for models and test sets the verifier parses at once)."""
    expected = _check_digest_arg(sha256)
    parts: list[bytes] = []
    _stream(uri, max_bytes, timeout, parts.append)
    data = b"".join(parts)
    actual = sha256_bytes(data)
    if actual != expected:
        raise DigestMismatch(f"{uri}: digest mismatch: expected {expected}, got {actual}")
    return data


def file_uri(path: str | Path) -> str:
    """The file:// URI of a local path (absolute)."""
    return Path(path).resolve().as_uri()
