"""Shared pieces of the sidecar and e2e tests: free ports, a real local chain, a tiny demo task.

Everything is real: `python -m abci_app` and `dlbc node` subprocesses (LocalChain), real keys,
real training. Sizes are kept tiny so a whole round fits in seconds on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from abci_app.keyfile import KeyPair
from dlbc_ops.devnode.launch import LocalChain
from dlbc_ops.ports import free_port

# The demo task used by the chain tests: 48 images of 16x16, a 2-level U-Net 8 filters wide.
TINY_TASK = {"samples": 48, "image_size": 16, "hparams": {"depth": 2, "base_width": 8}}


@contextlib.contextmanager
def local_chain(root: Path, *, params: dict[str, int], balances: dict[str, int],
                block_time: float = 0.5) -> Iterator[LocalChain]:
    """A running single-validator chain (app + dev node) under `root`; stopped on exit."""
    chain = LocalChain(root, rpc_port=free_port(), app_port=free_port(), block_time=block_time,
                       log_level="info")
    chain.write_genesis("dlbc-test", params, balances)
    try:
        chain.start_app()
        chain.start_node()
        yield chain
    finally:
        chain.stop()


def key(seed: int) -> KeyPair:
    return KeyPair.from_seed(bytes([seed]) * 32)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, poll: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def start_thread(target: Callable[[], Any], name: str) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


#: What the chain tests give a miner in genesis: its bond (100,000), tx fees and reveal deposits
#: for many rounds (docs/economics.md).
MINER_START = 1_000_000


def fees_paid(rpc: Any, address: bytes) -> int:
    """Every tx fee `address` paid so far: the `fee` attribute its txs' `dlbc` events carry, in
    every block (process.apply_decoded)."""
    total = 0
    for height in range(1, rpc.latest_height() + 1):
        for tx in rpc.get_block(height).txs:
            for e in tx.result.events if tx.result.ok else ():
                if e.type == "dlbc" and e.get("sender") == address.hex() and e.get("fee"):
                    total += int(e.get("fee") or 0)
    return total
