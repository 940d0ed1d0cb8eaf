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


def check_remote_uri(uri: str, allow_file: bool, allow_private: bool = False) -> None:
    """Refuse URIs a remote party should not make this machine open (docs/artifacts.md).

    Specs and reveals come from other accounts: a `file://` URI would make a miner or validator
    read a local path of the attacker's choosing (a FIFO, a device, a secret whose digest it
    then leaks by accepting). Only http(s) is allowed unless the operator opts in (single-machine
    setups and tests). An http(s) host that is or resolves to a non-public address raises
    AddressRefused unless `allow_private`; the fetch itself checks again, hop by hop, and
    connects only to the addresses it checked, so this early check is a fast refusal, not the
    guard.
    """
    from urllib.parse import urlsplit

    from training.artifacts import ArtifactError
    from training.netguard import NetPolicy, checked_addresses

    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if allow_file and scheme == "file":
        return
    if scheme not in ("http", "https"):
        raise ArtifactError(f"refusing URI {uri[:80]!r}: only http(s) is fetched from other "
                            "accounts" + ("" if allow_file else " (file:// needs allow_file_uris)"))
    if allow_private:
        return
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname or "", parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise ArtifactError(f"refusing URI {uri[:80]!r}: bad host or port ({exc})") from None
    if not host:
        raise ArtifactError(f"refusing URI {uri[:80]!r}: no host")
    checked_addresses(host, port, NetPolicy())


def fetch_dataset(uri: str, sha256_hex: str, size: int, key: bytes, dest: Path,
                  max_bytes: int, num_classes: int | None, *,
                  allow_file: bool = False, allow_private: bool = False,
                  max_decoded_bytes: int | None = None, min_rate_bps: float = 0,
                  deadline: float | None = None) -> ArrayDataset:
    """Download (size-capped, digest-checked) and decrypt an encrypted `.npz` data set.

    `size` is the spec's declared `data_size_bytes` (0 for a test set, whose size no spec
    declares): the download cap, and through `load_npz`'s expansion limit the bound on what the
    data set may take in memory once loaded (docs/artifacts.md "Data sets").
    """
    from training.artifacts import fetch
    from training.encryption import decrypt_dataset

    check_remote_uri(uri, allow_file, allow_private)
    cap = min(max_bytes, size) if size > 0 else max_bytes
    fetch(uri, max_bytes=cap, sha256=sha256_hex, dest=dest, allow_private=allow_private,
          min_rate_bps=min_rate_bps, deadline=deadline)
    return decrypt_dataset(key, dest.read_bytes(), num_classes=num_classes,
                           max_decoded_bytes=max_decoded_bytes)
