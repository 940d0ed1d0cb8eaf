"""Each node's config.toml for a localnet on 127.0.0.1 (line-level edits, operator comments kept).

What we change and why: distinct loopback ports per node for p2p, RPC, proxy_app (the ABCI
socket of that node's `python -m abci_app`) and Prometheus; persistent_peers = every *other* node
as id@127.0.0.1:p2p; addr_book_strict off and duplicate IPs allowed (all peers share 127.0.0.1);
empty blocks on, because DLBC's round phases advance on BFT block time even when no tx arrives
(docs/rounds.md); 1 s commit timeout; mempool tx size cap.
"""

from __future__ import annotations

import base64
import binascii
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.dlbc.crypto import address_of
from dlbc_ops import genesis as gen
from dlbc_ops.localnet.layout import (
    LOOPBACK,
    NODE_PREFIX,
    LocalnetError,
    NodePorts,
    load_json,
    node_home,
)
from dlbc_ops.localnet.tomlpatch import TomlPatchError, TomlScalar, patch_toml


@dataclass(frozen=True, slots=True)
class ConsensusSettings:
    """config.toml values DLBC wants on every node (documented in cometbft/README.md).

    timeout_commit: ~1 block/s, so phase deadlines in seconds (docs/rounds.md) are met within ~1 s.
    create_empty_blocks: phases advance only when blocks are made, so never wait for txs.
    max_tx_bytes: RevealModel/Settle are the largest txs; Settle grows with the validator count.
    """

    timeout_propose: str = "3s"
    timeout_commit: str = "1s"
    create_empty_blocks: bool = True
    create_empty_blocks_interval: str = "0s"
    max_tx_bytes: int = 1048576
    log_level: str = "info"


def node_id_from_key(node_key: Mapping[str, Any], where: str = "node_key.json") -> str:
    """CometBFT node ID: lowercase hex of SHA-256(ed25519 pub)[:20] (p2p/key.go)."""
    priv = node_key.get("priv_key") if isinstance(node_key, Mapping) else None
    value = priv.get("value") if isinstance(priv, Mapping) else None
    try:
        raw = base64.b64decode(value if isinstance(value, str) else "", validate=True)
    except (binascii.Error, ValueError):
        raise LocalnetError(f"{where}: priv_key.value is not base64") from None
    if len(raw) != 64:
        raise LocalnetError(
            f"{where}: ed25519 node key must be 64 bytes (seed||pub), got {len(raw)}"
        )
    # CometBFT's node ID is derived like an address: SHA-256(ed25519 pub)[:20].
    return address_of(raw[32:]).hex()


def config_edits(
    index: int,
    ports: list[NodePorts],
    node_ids: list[str],
    settings: ConsensusSettings,
    current: Mapping[str, Any],
) -> dict[str, dict[str, TomlScalar]]:
    """Edits for node `index`'s config.toml. Timeout keys are set only where the file has them
    (v1.0 renamed the prevote/precommit timeouts; we never add a key that version lacks)."""
    mine = ports[index]
    peers = ",".join(f"{node_ids[j]}@{LOOPBACK}:{p.p2p}" for j, p in enumerate(ports) if j != index)
    edits: dict[str, dict[str, TomlScalar]] = {
        "": {
            "proxy_app": f"tcp://{LOOPBACK}:{mine.abci}",
            "moniker": f"dlbc-{NODE_PREFIX}{index}",
            "log_level": settings.log_level,
        },
        "rpc": {"laddr": f"tcp://{LOOPBACK}:{mine.rpc}", "pprof_laddr": ""},
        "p2p": {
            "laddr": f"tcp://{LOOPBACK}:{mine.p2p}",
            "external_address": "",
            "persistent_peers": peers,
            "addr_book_strict": False,
            "allow_duplicate_ip": True,
        },
        "mempool": {"max_tx_bytes": settings.max_tx_bytes},
        "consensus": {
            "create_empty_blocks": settings.create_empty_blocks,
            "create_empty_blocks_interval": settings.create_empty_blocks_interval,
        },
        "instrumentation": {"prometheus_listen_addr": f"{LOOPBACK}:{mine.prometheus}"},
    }
    consensus = current.get("consensus", {}) if isinstance(current, Mapping) else {}
    for key in ("timeout_propose", "timeout_commit"):
        if isinstance(consensus, Mapping) and key in consensus:
            edits["consensus"][key] = getattr(settings, key)
    grpc = (
        current.get("rpc", {}).get("grpc_laddr")
        if isinstance(current.get("rpc"), Mapping)
        else None
    )
    if grpc:  # an operator template that turned the v0.38 gRPC broadcast API on: keep it unique
        edits["rpc"]["grpc_laddr"] = f"tcp://{LOOPBACK}:{mine.sidecar + 1}"
    return edits


def patch_config_files(
    root: Path,
    validators: int,
    ports: list[NodePorts],
    settings: ConsensusSettings,
) -> list[str]:
    """Patch every node's config.toml; returns the node IDs in node order."""
    node_ids = [
        node_id_from_key(
            load_json(node_home(root, i) / "config" / "node_key.json"),
            f"{node_home(root, i)}/config/node_key.json",
        )
        for i in range(validators)
    ]
    if len(set(node_ids)) != len(node_ids):
        raise LocalnetError(f"{root}: two nodes share a node key; fix: regenerate the folder")
    for i in range(validators):
        path = node_home(root, i) / "config" / "config.toml"
        text = path.read_text()
        try:
            current = tomllib.loads(text)
            patched = patch_toml(text, config_edits(i, ports, node_ids, settings, current))
        except (tomllib.TOMLDecodeError, TomlPatchError) as exc:
            raise LocalnetError(
                f"{path}: cannot patch ({exc}); fix: regenerate the folder"
            ) from None
        gen.write_text_atomic(path, patched)
    return node_ids
