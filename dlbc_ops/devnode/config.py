"""The dev node's settings and its one error type.

Why apart: `dlbc node`'s CLI, `LocalChain` and the node itself all speak `NodeConfig`; none of
them should need the node's machinery to build one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dlbc_ops.devnode.mempool import MempoolConfig

NODE_VERSION = "0.38.x-dlbc-devnode"
DEFAULT_CHAIN_ID = "dlbc-devnet"
VALIDATOR_POWER = 10
MAX_BLOCK_BYTES = 4 * 1024 * 1024
MIN_BLOCK_BYTES = 2048  # header + commit overhead (~840 B for one validator) + some txs


class NodeError(RuntimeError):
    """The node cannot start or continue (bad home, genesis, app unreachable); message says why."""


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one dev node; defaults match CometBFT's where one exists."""

    home: Path
    proxy_app: str = "tcp://127.0.0.1:26658"
    rpc_laddr: str = "tcp://127.0.0.1:26657"
    block_time: float = 1.0  # seconds between block proposals
    genesis: Path | None = None  # copied into home on first start
    chain_id: str = DEFAULT_CHAIN_ID  # only used when generating a genesis
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    max_block_bytes: int = MAX_BLOCK_BYTES  # consensus_params.block.max_bytes
    create_empty_blocks: bool = True  # the round schedule needs time to advance
    timeout_broadcast_tx_commit: float = 10.0  # CometBFT rpc.timeout_broadcast_tx_commit
    app_connect_timeout: float = 30.0  # how long to wait for the app to listen


def parse_laddr(laddr: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` (or `HOST:PORT`) → (host, port)."""
    rest = laddr.split("://", 1)[1] if "://" in laddr else laddr
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise NodeError(f"bad listen address {laddr!r}: expected tcp://HOST:PORT")
    return host or "127.0.0.1", int(port)
