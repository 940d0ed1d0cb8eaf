"""The devnet node's mempool: admission bookkeeping with no I/O.

Why it exists: the dev node stands in for CometBFT (docs/processes.md), whose mempool admits a tx
only after the app's CheckTx says code 0, deduplicates by tx hash (its "cache"), caps count and
bytes, reaps txs FIFO into proposals, drops what a block committed, and rechecks the rest against
the new state. This module holds the data and the rules; the node performs the CheckTx calls.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass


class MempoolError(Exception):
    """A tx the mempool refuses before asking the app; `message` matches CometBFT's wording."""


@dataclass(frozen=True, slots=True)
class MempoolConfig:
    max_txs: int = 5000  # CometBFT mempool.size
    max_txs_bytes: int = 64 * 1024 * 1024  # mempool.max_txs_bytes
    max_tx_bytes: int = 1024 * 1024  # mempool.max_tx_bytes
    cache_size: int = 10000  # mempool.cache_size: recently seen hashes


def tx_key(tx: bytes) -> bytes:
    """CometBFT's tx key: SHA-256 of the raw bytes."""
    return hashlib.sha256(tx).digest()


class Mempool:
    """FIFO of admitted txs keyed by hash, plus an LRU cache of recently seen hashes."""

    def __init__(self, config: MempoolConfig = MempoolConfig()) -> None:
        self.config = config
        self._txs: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._cache: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._txs)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __contains__(self, key: bytes) -> bool:
        return key in self._txs

    def precheck(self, tx: bytes) -> bytes:
        """Checks done before CheckTx; returns the tx key. Raises `MempoolError`."""
        # Verify size
        if not tx:
            raise MempoolError("tx is empty")
        if len(tx) > self.config.max_tx_bytes:
            raise MempoolError(f"tx too large. Max size is {self.config.max_tx_bytes}, but got {len(tx)}")
        key = tx_key(tx)
        # Verify not seen recently (the cache also covers committed txs, like CometBFT's)
        if key in self._cache or key in self._txs:
            raise MempoolError("tx already exists in cache")
        # Verify room
        if len(self._txs) >= self.config.max_txs or self._bytes + len(tx) > self.config.max_txs_bytes:
            raise MempoolError(
                f"mempool is full: number of txs {len(self._txs)} (max: {self.config.max_txs}), "
                f"total txs bytes {self._bytes} (max: {self.config.max_txs_bytes})"
            )
        return key

    def add(self, tx: bytes) -> bytes:
        """Admit a tx the app accepted (call `precheck` first)."""
        key = tx_key(tx)
        if key in self._txs:
            return key
        self._txs[key] = tx
        self._bytes += len(tx)
        self._remember(key)
        return key

    def reject(self, tx: bytes) -> None:
        """CheckTx said no: forget it so a fixed resubmission is possible (CometBFT default)."""
        self._cache.pop(tx_key(tx), None)

    def reap(self, max_bytes: int, max_txs: int | None = None) -> list[bytes]:
        """Txs for a proposal, FIFO, within `max_bytes` total (skips none in the middle)."""
        out: list[bytes] = []
        total = 0
        for tx in self._txs.values():
            if total + len(tx) > max_bytes or (max_txs is not None and len(out) >= max_txs):
                break
            out.append(tx)
            total += len(tx)
        return out

    def update(self, committed: list[bytes]) -> list[bytes]:
        """Remove committed txs (keep them in the cache); returns what is left, for recheck."""
        for tx in committed:
            key = tx_key(tx)
            self._remember(key)
            old = self._txs.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
        return list(self._txs.values())

    def remove(self, tx: bytes) -> None:
        """Drop a tx that failed recheck (and let it be resubmitted later)."""
        key = tx_key(tx)
        old = self._txs.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._cache.pop(key, None)

    def _remember(self, key: bytes) -> None:
        self._cache[key] = None
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)
