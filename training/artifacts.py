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

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from abci_app.fsutil import atomic_writer
from training.artifact_errors import (
    AddressRefused,
    ArtifactError,
    DigestMismatch,
    NotSafetensors,
    TooLarge,
    TooSlow,
)
from training.fetching import stream_uri
from training.models import HParams, build_model
from training.netguard import NetPolicy
from training.safetensors_header import check_safetensors_header, check_safetensors_layout

__all__ = [
    "AddressRefused", "ArtifactError", "DigestMismatch", "NetPolicy", "NotSafetensors", "TooLarge",
    "TooSlow", "check_safetensors_header", "check_safetensors_layout", "expected_state_shapes",
    "fetch", "fetch_bytes", "file_uri", "load_into", "load_model", "load_state_dict_bytes",
    "model_metadata", "save_model", "sha256_bytes", "sha256_file", "state_dict_bytes",
    "state_shapes",
]

_READ_CHUNK = 4 << 20
_HEX = frozenset("0123456789abcdef")


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


def load_state_dict_bytes(
    data: bytes, *, sha256: str | None = None,
    expected: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, torch.Tensor]:
    """Check the digest (if given), then the header, *then* parse safetensors bytes into CPU
    tensors.

    The header check (training.safetensors_header) holds every tensor's size against the file
    and, with `expected` (name → shape, e.g. `state_shapes(model)`), the names and shapes
    against the architecture, before anything is allocated.
    """
    if sha256 is not None:
        want = _check_digest_arg(sha256)
        actual = sha256_bytes(data)
        if actual != want:
            raise DigestMismatch(f"digest mismatch: expected {want}, got {actual}")
    check_safetensors_layout(data, expected)
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise NotSafetensors(f"invalid safetensors file: {exc}") from None


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name → shape of `model`'s state dict: the `expected` of `load_state_dict_bytes`."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_state_shapes(arch: str, hparams: HParams | None = None) -> dict[str, tuple[int, ...]]:
    """`state_shapes` of registry `arch`, built on the meta device: no memory for weights."""
    with torch.device("meta"):
        return state_shapes(build_model(arch, hparams or {}))


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
    parsing, so what was verified is exactly what gets loaded. Its header is checked against the
    architecture's state-dict shapes (on the meta device) before any tensor or the model itself
    is allocated.
    """
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
    state = load_state_dict_bytes(data, sha256=sha256,
                                  expected=expected_state_shapes(arch, hparams))
    return load_into(build_model(arch, hparams or {}), state)


# --------------------------------------------------------------------------------------------
# Fetch by URI (docs/artifacts.md "Fetching from strangers"; the guards are in training.fetching)


def _policy(allow_private: bool, network: NetPolicy | None) -> NetPolicy:
    if network is None:
        return NetPolicy(allow_private=allow_private)
    return dataclasses.replace(network, allow_private=network.allow_private or allow_private)


def fetch(
    uri: str, *, max_bytes: int, sha256: str, dest: str | Path, timeout: float = 30.0,
    allow_private: bool = False, min_rate_bps: float = 0, deadline: float | None = None,
    network: NetPolicy | None = None,
) -> Path:
    """Download `uri` to `dest`, enforcing `max_bytes` while streaming and checking `sha256`.

    Bytes go to a temporary file beside `dest`, hashed on the way; only if the size and digest
    are right is it renamed to `dest`. On any failure nothing is left behind (and an existing
    `dest` is untouched). Returns `dest`.

    Network guards (training.fetching): hosts that are or resolve to non-public addresses raise
    AddressRefused unless `allow_private`; `deadline` (a `time.monotonic()` value) and
    `min_rate_bps` (average after a few seconds' grace) raise TooSlow; `timeout` bounds each
    connect and read. `network` replaces the address policy (tests).
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

        stream_uri(uri, consume, max_bytes=max_bytes, timeout=timeout,
                   policy=_policy(allow_private, network), min_rate_bps=min_rate_bps,
                   deadline=deadline)
        actual = h.hexdigest()
        if actual != expected:
            raise DigestMismatch(f"{uri}: digest mismatch: expected {expected}, got {actual}")
    return dest


def fetch_bytes(
    uri: str, *, max_bytes: int, sha256: str, timeout: float = 30.0, allow_private: bool = False,
    min_rate_bps: float = 0, deadline: float | None = None, network: NetPolicy | None = None,
) -> bytes:
    """Like `fetch` but into memory (for models and test sets the verifier parses at once)."""
    expected = _check_digest_arg(sha256)
    if max_bytes < 0:
        raise ArtifactError("max_bytes must be >= 0")
    parts: list[bytes] = []
    stream_uri(uri, parts.append, max_bytes=max_bytes, timeout=timeout,
               policy=_policy(allow_private, network), min_rate_bps=min_rate_bps,
               deadline=deadline)
    data = b"".join(parts)
    actual = sha256_bytes(data)
    if actual != expected:
        raise DigestMismatch(f"{uri}: digest mismatch: expected {expected}, got {actual}")
    return data


def file_uri(path: str | Path) -> str:
    """The file:// URI of a local path (absolute)."""
    return Path(path).resolve().as_uri()
