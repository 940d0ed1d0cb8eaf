"""The dev node's block store: one LMDB environment (or a dict, for tests) with everything a
restarted node needs, as CometBFT keeps its blockstore and state DB.

What is kept, per height: the exact RequestFinalizeBlock sent (txs, time, proposer, hash), the
block hash, the extended commit (vote extensions), the ResponseFinalizeBlock (saved before
Commit, as CometBFT saves its ABCI responses) and the app hash after Commit; plus the committed
height, the InitChain app hash and a tx-hash index for `/tx`. The driver replays from it and the
RPC serves from it (`blockdocs`), so there is one record of the chain and no second store to keep
in step after a crash.

Why the write points are what they are: a block is stored before it is executed, its response
before Commit, and the commit (app hash, height, tx index) in ONE write transaction after the
apps committed — so a kill at any point leaves either a height that is fully committed or one
the next handshake replays. Only this module knows the key layout.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from pathlib import Path

import lmdb

from abci_app.pb.tendermint.abci import types_pb2 as abci

_HEIGHT = b"height"
_LAST_BLOCK = b"last_block"
_GENESIS_APP_HASH = b"genesis_app_hash"
_BLOCK = b"block/"
_BLOCK_HASH = b"block_hash/"
_EXT_COMMIT = b"ext_commit/"
_RESULTS = b"results/"
_APP_HASH = b"app_hash/"
_TX = b"tx/"


def _hkey(prefix: bytes, height: int) -> bytes:
    return prefix + struct.pack(">q", height)


def _height(raw: bytes | None) -> int:
    return int(struct.unpack(">q", raw)[0]) if raw else 0


class BlockStore:
    """Blocks, results, app hashes and the tx index (LMDB at `path`; in memory when None)."""

    def __init__(self, path: Path | None, *, map_size: int = 1 << 34) -> None:
        self._mem: dict[bytes, bytes] | None = None
        self._env: lmdb.Environment | None = None
        if path is None:
            self._mem = {}
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(str(path), map_size=map_size, subdir=True)

    # -- storage

    def _get(self, key: bytes) -> bytes | None:
        if self._mem is not None:
            return self._mem.get(key)
        assert self._env is not None, "block store used after close()"
        with self._env.begin() as txn:
            v = txn.get(key)
            return bytes(v) if v is not None else None

    def _put(self, items: dict[bytes, bytes], *, keep_first: Iterable[tuple[bytes, bytes]] = ()
             ) -> None:
        """Write `items` and the `keep_first` keys that are not there yet, atomically."""
        if self._mem is not None:
            self._mem.update(items)
            for k, v in keep_first:
                self._mem.setdefault(k, v)
            return
        assert self._env is not None, "block store used after close()"
        with self._env.begin(write=True) as txn:
            for k, v in items.items():
                txn.put(k, v)
            for k, v in keep_first:
                txn.put(k, v, overwrite=False)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    # -- reads

    @property
    def height(self) -> int:
        """The last height committed (every app answered Commit)."""
        return _height(self._get(_HEIGHT))

    @property
    def last_block(self) -> int:
        """Highest stored block (may exceed `height` by one after a crash mid-height)."""
        return max(_height(self._get(_LAST_BLOCK)), self.height)

    def block(self, height: int) -> abci.RequestFinalizeBlock | None:
        raw = self._get(_hkey(_BLOCK, height))
        return None if raw is None else abci.RequestFinalizeBlock.FromString(raw)

    def block_hash(self, height: int) -> bytes | None:
        return self._get(_hkey(_BLOCK_HASH, height))

    def app_hash(self, height: int) -> bytes | None:
        """The app hash after committing `height` (None before it was committed)."""
        return self._get(_hkey(_APP_HASH, height))

    def genesis_app_hash(self) -> bytes | None:
        """InitChain's app hash (what the first block's header carries as the previous state)."""
        return self._get(_GENESIS_APP_HASH)

    def finalize_response(self, height: int) -> abci.ResponseFinalizeBlock | None:
        """The ResponseFinalizeBlock recorded for `height` (saved before Commit)."""
        raw = self._get(_hkey(_RESULTS, height))
        return None if raw is None else abci.ResponseFinalizeBlock.FromString(raw)

    def extended_commit(self, height: int) -> abci.ExtendedCommitInfo | None:
        raw = self._get(_hkey(_EXT_COMMIT, height))
        return None if raw is None else abci.ExtendedCommitInfo.FromString(raw)

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, index) of the committed tx with this SHA-256, the first if it repeats."""
        raw = self._get(_TX + tx_hash)
        if raw is None:
            return None
        height, index = struct.unpack(">qI", raw)
        return int(height), int(index)

    # -- writes, in the order a height makes them

    def save_genesis_app_hash(self, app_hash: bytes) -> None:
        self._put({_GENESIS_APP_HASH: app_hash})

    def save_block(self, height: int, block: abci.RequestFinalizeBlock, block_hash: bytes,
                   extended_commit: abci.ExtendedCommitInfo | None) -> None:
        """The decided block, before it is executed (CometBFT saves the block first)."""
        items = {_hkey(_BLOCK, height): block.SerializeToString(),
                 _hkey(_BLOCK_HASH, height): block_hash,
                 _LAST_BLOCK: struct.pack(">q", height)}
        if extended_commit is not None:
            items[_hkey(_EXT_COMMIT, height)] = extended_commit.SerializeToString()
        self._put(items)

    def save_finalize_response(self, height: int, response: abci.ResponseFinalizeBlock) -> None:
        """Before Commit: a node killed after the apps commit still has the real tx results."""
        self._put({_hkey(_RESULTS, height): response.SerializeToString()})

    def save_app_hash(self, height: int, app_hash: bytes) -> None:
        """An app hash learnt from an app's Info (the driver died before recording it)."""
        self._put({_hkey(_APP_HASH, height): app_hash})

    def save_commit(self, height: int, app_hash: bytes, txs: Iterable[bytes]) -> None:
        """`height` is committed: its app hash, the new height and the tx index, in one write.

        A tx that repeats in a later block keeps its first location, like CometBFT's kv indexer.
        """
        index = [(_TX + hashlib.sha256(tx).digest(), struct.pack(">qI", height, i))
                 for i, tx in enumerate(txs)]
        self._put({_hkey(_APP_HASH, height): app_hash,
                   _HEIGHT: struct.pack(">q", max(height, self.height))}, keep_first=index)
