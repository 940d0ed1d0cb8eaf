"""What a task's spec makes a miner or verifier open: its hyper-parameters and its encrypted data
set, fetched only from URIs a remote party may name (docs/artifacts.md). Shared by the miner
and the verifier, so both refuse the same inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abci_app.dlbc.records import TaskSpec

if TYPE_CHECKING:
    from training.data import ArrayDataset


def spec_hparams(spec: TaskSpec) -> dict[str, Any]:
    hp = json.loads(spec.hyperparams_json or "{}")
    if not isinstance(hp, dict):
        raise ValueError("hyperparams_json is not a JSON object")  # noqa: TRY004 - bad input
    return hp


def check_remote_uri(uri: str, allow_file: bool) -> None:
    """Refuse URIs a remote party should not make this machine open (docs/artifacts.md).

    Specs and reveals come from other accounts: a `file://` URI would make a miner or validator
    read a local path of the attacker's choosing (a FIFO, a device, a secret whose digest it
    then leaks by accepting). Only http(s) is allowed unless the operator opts in (single-machine
    setups and tests).
    """
    from training.artifacts import ArtifactError

    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in ("http", "https") or (allow_file and scheme == "file"):
        return
    raise ArtifactError(f"refusing URI {uri[:80]!r}: only http(s) is fetched from other accounts"
                        + ("" if allow_file else " (file:// needs allow_file_uris)"))


def fetch_dataset(uri: str, sha256_hex: str, size: int, key: bytes, dest: Path,
                  max_bytes: int, num_classes: int | None, *,
                  allow_file: bool = False) -> ArrayDataset:
    """Download (size-capped, digest-checked) and decrypt an encrypted `.npz` data set."""
    from training.artifacts import fetch
    from training.encryption import decrypt_dataset

    check_remote_uri(uri, allow_file)
    cap = min(max_bytes, size) if size > 0 else max_bytes
    fetch(uri, max_bytes=cap, sha256=sha256_hex, dest=dest)
    return decrypt_dataset(key, dest.read_bytes(), num_classes=num_classes)
