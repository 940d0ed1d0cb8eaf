"""The dev node's RPC-facing record of committed blocks, in LMDB under `<home>/data/rpc.lmdb`.

Why separate from the driver's replay store: this one holds what the RPC serves — the `/block`
and `/block_results` JSON documents, the tx-hash index for `/tx`, and the node's own chain tip
(height, BFT time, block hash, app hash) needed to resume with strictly increasing time and a
hash-linked header chain after a restart. Each block is written in ONE LMDB write transaction,
so a crash leaves either the whole block record or none of it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

_META = b"m/tip"
_BLOCK = b"b/"
_RESULTS = b"r/"
_TX = b"t/"


@dataclass(frozen=True, slots=True)
class ChainTip:
    height: int = 0
    time_ns: int = 0
    block_hash: bytes = b""
    app_hash: bytes = b""  # app hash after executing `height`


def _h(height: int) -> bytes:
    return struct.pack(">Q", height)


class BlockStore:
    def __init__(self, path: Path, *, map_size: int = 1 << 32) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size, subdir=True, max_dbs=0)

    def close(self) -> None:
        self._env.close()

    def tip(self) -> ChainTip:
        with self._env.begin() as txn:
            raw = txn.get(_META)
        if raw is None:
            return ChainTip()
        d = json.loads(raw)
        return ChainTip(
            height=int(d["height"]),
            time_ns=int(d["time_ns"]),
            block_hash=bytes.fromhex(d["block_hash"]),
            app_hash=bytes.fromhex(d["app_hash"]),
        )

    def save(
        self,
        tip: ChainTip,
        block_doc: dict[str, Any],
        results_doc: dict[str, Any],
        tx_hashes: list[bytes],
    ) -> None:
        """Record one committed block atomically (block, results, tx index, new tip)."""
        meta = {
            "height": tip.height,
            "time_ns": tip.time_ns,
            "block_hash": tip.block_hash.hex(),
            "app_hash": tip.app_hash.hex(),
        }
        with self._env.begin(write=True) as txn:
            txn.put(_BLOCK + _h(tip.height), json.dumps(block_doc, separators=(",", ":")).encode())
            txn.put(
                _RESULTS + _h(tip.height), json.dumps(results_doc, separators=(",", ":")).encode()
            )
            for i, th in enumerate(tx_hashes):
                # a duplicate tx in a later block keeps its first location, like CometBFT's kv indexer
                txn.put(_TX + th, json.dumps([tip.height, i]).encode(), overwrite=False)
            txn.put(_META, json.dumps(meta).encode())

    def block(self, height: int) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self._get_json(_BLOCK + _h(height))
        return doc

    def results(self, height: int) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self._get_json(_RESULTS + _h(height))
        return doc

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        loc = self._get_json(_TX + tx_hash)
        return None if loc is None else (int(loc[0]), int(loc[1]))

    def _get_json(self, key: bytes) -> Any:
        with self._env.begin() as txn:
            raw = txn.get(key)
        return None if raw is None else json.loads(raw)
