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


def download_dataset(uri: str, sha256_hex: str, size: int, dest: Path, max_bytes: int, *,
                     allow_file: bool = False, allow_private: bool = False,
                     min_rate_bps: float = 0, deadline: float | None = None) -> Path:
    """Download an encrypted `.npz` data set to `dest` (size-capped, digest-checked); no key
    needed.

    The first half of `fetch_dataset`, on its own so a miner can fetch a round's ciphertext
    while the round is ANNOUNCED, before its key is released (paper IV-B: the next task's
    encrypted data goes out ahead of time), and only decrypt once the key lands. A `dest`
    already holding the right bytes (a restarted miner's earlier download) is kept as it is.
    `size` is the spec's declared `data_size_bytes` (0 for a test set, whose size no spec
    declares): with `max_bytes` the download cap.
    """
    from training.artifacts import fetch, sha256_file

    check_remote_uri(uri, allow_file, allow_private)
    cap = min(max_bytes, size) if size > 0 else max_bytes
    if (dest.is_file() and dest.stat().st_size <= cap
            and sha256_file(dest) == sha256_hex.lower()):
        return dest
    return fetch(uri, max_bytes=cap, sha256=sha256_hex, dest=dest, allow_private=allow_private,
                 min_rate_bps=min_rate_bps, deadline=deadline)


def decrypt_downloaded(path: Path, key: bytes, num_classes: int | None, *,
                       max_decoded_bytes: int | None = None) -> ArrayDataset:
    """The second half of `fetch_dataset`: decrypt and load a downloaded data set with its key.

    The loaded arrays are bounded by `load_npz`'s expansion limit over the ciphertext's size
    (docs/artifacts.md "Data sets"), so the download cap also bounds the memory it takes."""
    from training.encryption import decrypt_dataset

    return decrypt_dataset(key, path.read_bytes(), num_classes=num_classes,
                           max_decoded_bytes=max_decoded_bytes)


def fetch_dataset(uri: str, sha256_hex: str, size: int, key: bytes, dest: Path,
                  max_bytes: int, num_classes: int | None, *,
                  allow_file: bool = False, allow_private: bool = False,
                  max_decoded_bytes: int | None = None, min_rate_bps: float = 0,
                  deadline: float | None = None) -> ArrayDataset:
    """Download (size-capped, digest-checked) and decrypt an encrypted `.npz` data set: the
    test set, whose key is revealed before anyone fetches it (`download_dataset`, then
    `decrypt_downloaded`)."""
    download_dataset(uri, sha256_hex, size, dest, max_bytes, allow_file=allow_file,
                     allow_private=allow_private, min_rate_bps=min_rate_bps, deadline=deadline)
    return decrypt_downloaded(dest, key, num_classes, max_decoded_bytes=max_decoded_bytes)
