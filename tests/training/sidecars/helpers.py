"""What the sidecar and e2e tests share beyond tests/support: a tiny demo task, miner funds.

Everything is real: `python -m abci_app` and `dlbc node` subprocesses (LocalChain), real keys,
real training. Sizes are kept tiny so a whole round fits in seconds on 2 CPU cores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.support.chains import local_chain
from tests.support.keys import keypair as key
from tests.support.ports import free_port
from tests.support.waiting import wait_for

__all__ = [
    "MINER_START",
    "TINY_TASK",
    "fees_paid",
    "free_port",
    "key",
    "local_chain",
    "start_thread",
    "wait_for",
]

# The demo task used by the chain tests: 48 images of 16x16, a 2-level U-Net 8 filters wide, on
# the old shapes (solved in seconds, so the better-trained miner reliably wins); the default
# vessels task (training/DEMO_DATA.md) needs tens of seconds and sometimes collapses at 16x16.
TINY_TASK = {"samples": 48, "image_size": 16, "hparams": {"depth": 2, "base_width": 8},
             "generator": "shapes"}


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
