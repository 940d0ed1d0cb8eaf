"""The manifest of a miner's replayable run: which checkpoint file holds which epoch.

docs/proof_of_learning.md "Replayable steps": the miner publishes `manifest.json` beside its
checkpoints, `{"version": 1, "pol": <ReplayConfig>, "checkpoints": [{"epoch": e, "file":
"epoch-0000.safetensors", "sha256": hex}, ...]}`, epochs 0..E in order. A validator reads it
before fetching anything, so `read_manifest` is strict and bounded: a size cap, at most
`MAX_ENTRIES` entries, file names of one fixed form only (no paths, nothing a fetcher could be
steered with), each naming its own epoch; any problem is a ValueError saying what.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.fsutil import atomic_writer
from training.proof.config import ReplayConfig
from training.trainer import Checkpoint

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MAX_ENTRIES = 1001
"""Epochs 0..1000: far beyond any TRAIN phase, and it bounds what a validator reads."""
MAX_MANIFEST_BYTES = 1 << 20
_FILE = re.compile(r"epoch-(\d{4})\.safetensors")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    epoch: int
    file: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    config: ReplayConfig
    checkpoints: tuple[ManifestEntry, ...]
    """Epochs 0..E in order."""


def checkpoint_file_name(epoch: int) -> str:
    """The one file name the manifest allows for `epoch`'s checkpoint."""
    return f"epoch-{epoch:04d}.safetensors"


def write_manifest(dir: Path, checkpoints: Sequence[Checkpoint], config: ReplayConfig) -> Path:
    """Write `dir/manifest.json` for a run's checkpoints (epochs 0..E, as the trainer returns
    them with a `checkpoint_writer`) atomically; return its path."""
    entries = [{"epoch": c.epoch, "file": c.path.name, "sha256": c.sha256} for c in checkpoints]
    doc = {"version": MANIFEST_VERSION, "pol": config.to_json(), "checkpoints": entries}
    data = json.dumps(doc, sort_keys=True, indent=1).encode()
    read_manifest(data)  # never publish what a validator would refuse
    path = Path(dir) / MANIFEST_NAME
    with atomic_writer(path) as f:
        f.write(data)
    return path


def read_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes strictly; ValueError naming the first problem."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"manifest is {len(data)} bytes, more than {MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(data, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"version", "pol", "checkpoints"}:
        raise ValueError("manifest must be an object with exactly version, pol, checkpoints")
    if doc["version"] != MANIFEST_VERSION or isinstance(doc["version"], bool):
        raise ValueError(f"manifest version must be {MANIFEST_VERSION}")
    config = ReplayConfig.from_json(doc["pol"])
    raw = doc["checkpoints"]
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_ENTRIES:
        raise ValueError(f"manifest checkpoints must be a list of 2..{MAX_ENTRIES} entries "
                         "(epochs 0..E, E >= 1)")
    return Manifest(config, tuple(_entry(i, e) for i, e in enumerate(raw)))


def _entry(index: int, entry: Any) -> ManifestEntry:
    if not isinstance(entry, dict) or set(entry) != {"epoch", "file", "sha256"}:
        raise ValueError(f"manifest entry {index}: must have exactly epoch, file, sha256")
    epoch, file, sha256 = entry["epoch"], entry["file"], entry["sha256"]
    if epoch != index or isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError(f"manifest entry {index}: epoch must be {index} (epochs 0..E in order)")
    if not isinstance(file, str) or _FILE.fullmatch(file) is None \
            or file != checkpoint_file_name(epoch):
        raise ValueError(f"manifest entry {index}: file must be "
                         f"{checkpoint_file_name(index)!r}, got {str(file)[:80]!r}")
    if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
        raise ValueError(f"manifest entry {index}: sha256 must be 64 lowercase hex characters")
    return ManifestEntry(epoch, file, sha256)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("manifest: a key appears twice in one object")
    return out
