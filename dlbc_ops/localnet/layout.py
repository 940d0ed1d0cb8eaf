"""Where a localnet's things are: ports per node, node and app folders, the manifest's name,
and the check that a folder is the `cometbft testnet` layout we patch.

Layout (what `cometbft testnet` writes, v0.38 and v1.0 alike):

    DIR/node<i>/config/{config.toml, genesis.json, node_key.json, priv_validator_key.json}
    DIR/node<i>/data/priv_validator_state.json
    DIR/node<i>/app/           (ours: that node's `python -m abci_app --home`)
    DIR/localnet.json          (ours: the manifest, `plan.LocalnetPlan`)

Ports: node i uses base + 10·i + {p2p 0, rpc 1, abci 2, prometheus 4, sidecar metrics 5}, so
node0 keeps CometBFT's defaults 26656/26657/26658/26660 with the default base 26656.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlbc_ops.supervisor import LaunchError

DEFAULT_BASE_PORT = 26656
PORT_STRIDE = 10
MAX_VALIDATORS = 64
LOOPBACK = "127.0.0.1"
MANIFEST = "localnet.json"
NODE_PREFIX = "node"


class LocalnetError(LaunchError):
    """A localnet cannot be prepared or started; the message names the problem and the fix."""


@dataclass(frozen=True, slots=True)
class NodePorts:
    """The loopback ports of one node; `sidecar` is left free for its sidecars' metrics."""

    p2p: int
    rpc: int
    abci: int
    prometheus: int
    sidecar: int

    def labelled(self) -> list[tuple[str, int]]:
        return [
            ("p2p", self.p2p),
            ("RPC", self.rpc),
            ("ABCI proxy_app", self.abci),
            ("prometheus", self.prometheus),
            ("sidecar metrics", self.sidecar),
        ]


def node_ports(index: int, base_port: int = DEFAULT_BASE_PORT) -> NodePorts:
    start = base_port + PORT_STRIDE * index
    return NodePorts(
        p2p=start, rpc=start + 1, abci=start + 2, prometheus=start + 4, sidecar=start + 5
    )


def plan_ports(validators: int, base_port: int = DEFAULT_BASE_PORT) -> list[NodePorts]:
    """Ports for `validators` nodes; refuses counts and bases that leave the valid port range."""
    if not 1 <= validators <= MAX_VALIDATORS:
        raise LocalnetError(
            f"--validators must be between 1 and {MAX_VALIDATORS}, got {validators}"
        )
    last = base_port + PORT_STRIDE * validators - 1
    if base_port < 1024 or last > 65535:
        raise LocalnetError(
            f"--base-port {base_port} with {validators} validators needs ports "
            f"{base_port}..{last}; "
            "fix: choose a base port between 1024 and "
            f"{65535 - PORT_STRIDE * validators + 1}"
        )
    return [node_ports(i, base_port) for i in range(validators)]


def node_home(root: Path, index: int) -> Path:
    return root / f"{NODE_PREFIX}{index}"


def app_home(root: Path, index: int) -> Path:
    """Where node i's `python -m abci_app --home` keeps LMDB state (and verdict files)."""
    return node_home(root, index) / "app"


_REQUIRED = (
    "config/config.toml",
    "config/genesis.json",
    "config/node_key.json",
    "config/priv_validator_key.json",
    "data/priv_validator_state.json",
)


def check_layout(root: Path, validators: int) -> None:
    """The folder holds exactly the testnet files we need for `validators` nodes."""
    missing = [
        str(node_home(root, i) / rel)
        for i in range(validators)
        for rel in _REQUIRED
        if not (node_home(root, i) / rel).is_file()
    ]
    if missing:
        raise LocalnetError(
            f"{root} is not a `cometbft testnet --v {validators}` folder; missing: "
            + ", ".join(missing[:4])
            + (" ..." if len(missing) > 4 else "")
            + f"; fix: remove {root} (or use another --home) and run again"
        )
    extra = node_home(root, validators) / "config" / "genesis.json"
    if extra.exists():
        raise LocalnetError(
            f"{root} holds more than {validators} nodes (found {extra.parent.parent.name}); "
            "fix: use the same --validators as before, or a fresh --home"
        )


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LocalnetError(f"{path}: cannot read JSON ({exc})") from None
