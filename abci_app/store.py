"""Committed application state in LMDB, with staged, nestable overlays for a block's writes.

docs/determinism.md / STYLE "How that lands here" 3: a block's writes are staged in memory during
FinalizeBlock (a `View`), and only `Store.commit` touches LMDB — in ONE write transaction that
holds the writes, the new height and the new app hash. LMDB commits are atomic and durable
(copy-on-write B+tree, fsync on commit), so a kill -9 at any instant leaves either the previous
block or the new one on disk, never half of one; `Info` then reports `last_height` and CometBFT
replays what is missing.

Readers never see half-staged state: CheckTx and Query read committed LMDB state (or their own
throwaway view over it), while consensus stages into a separate in-memory `View`.

App hash (`compute_app_hash`): a SHA-256 hash chain, computed in time proportional to the
block's writes rather than the state size (issue 2), that still commits to the whole state
because every state is the genesis state plus the sequence of committed write sets.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Protocol, Self

import lmdb

from abci_app.codec import encode_uvarint

__all__ = ["APP_HASH_DOMAIN", "Store", "StoreError", "View", "compute_app_hash"]

APP_HASH_DOMAIN = b"dlbc/app-hash/v1"
_META_HEIGHT = b"height"
_META_APP_HASH = b"app_hash"
_TAG_DELETE = b"\x00"
_TAG_SET = b"\x01"


class StoreError(RuntimeError):
    """Misuse of the store API or a storage failure: fatal for consensus calls."""


def compute_app_hash(
    prev_app_hash: bytes, height: int, writes: Iterable[tuple[bytes, bytes | None]]
) -> bytes:
    """Return SHA-256 over the previous app hash, the height and the block's sorted writes.

    Exact encoding (all lengths are protobuf uvarints, height is 8-byte big-endian signed):

        "dlbc/app-hash/v1" || uvarint(len(prev)) || prev || int64_be(height)
        || for each (key, value) in key order:
               uvarint(len(key)) || key || 0x00                          (delete)
               uvarint(len(key)) || key || 0x01 || uvarint(len(value)) || value   (set)

    `writes` must be key-sorted with unique keys (as `View.writes()` returns); this is checked
    because an unsorted list would silently give a node-specific hash.
    """
    h = hashlib.sha256()
    h.update(APP_HASH_DOMAIN)
    h.update(encode_uvarint(len(prev_app_hash)))
    h.update(prev_app_hash)
    h.update(struct.pack(">q", height))
    last: bytes | None = None
    for key, value in writes:
        if last is not None and key <= last:
            raise StoreError("compute_app_hash: writes must be strictly key-sorted")
        last = key
        h.update(encode_uvarint(len(key)))
        h.update(key)
        if value is None:
            h.update(_TAG_DELETE)
        else:
            h.update(_TAG_SET)
            h.update(encode_uvarint(len(value)))
            h.update(value)
    return h.digest()


class _Reader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iter_prefix(
        self, prefix: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]: ...


def _prefix_successor(prefix: bytes) -> bytes | None:
    """Smallest byte string greater than every string starting with `prefix` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _merge(
    base: Iterator[tuple[bytes, bytes]],
    overlay: list[tuple[bytes, bytes | None]],
    reverse: bool,
) -> Iterator[tuple[bytes, bytes]]:
    """Merge a sorted base iterator with sorted overlay entries (None = deleted)."""
    i = 0
    n = len(overlay)
    nxt = next(base, None)
    while nxt is not None or i < n:
        if i < n:
            okey, oval = overlay[i]
            if nxt is None:
                take_overlay, same = True, False
            else:
                bkey = nxt[0]
                same = okey == bkey
                take_overlay = same or ((okey < bkey) != reverse)
        else:
            take_overlay, same = False, False
        if take_overlay:
            i += 1
            if same:
                nxt = next(base, None)
            if oval is not None:
                yield okey, oval
        else:
            assert nxt is not None
            yield nxt
            nxt = next(base, None)


class View:
    """A staged overlay of writes over committed state (or over a parent view).

    `child()` gives a per-tx layer: `write_through()` applies it to the parent, dropping it
    discards it (STYLE 2: a tx's writes apply only if it succeeds).
    """

    __slots__ = ("_done", "_keys", "_parent", "_staged", "_store")

    def __init__(self, parent: _Reader, store: Store) -> None:
        self._parent = parent
        self._store = store
        self._staged: dict[bytes, bytes | None] = {}
        self._keys: list[bytes] = []  # sorted keys of _staged, for prefix scans
        self._done = False

    # -- reads ---------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        view = self
        while True:  # a loop, not recursion: a tx's view sits three or four layers deep
            staged = view._staged
            if key in staged:
                return staged[key]
            parent = view._parent
            if not isinstance(parent, View):
                return parent.get(key)
            view = parent

    def has(self, key: bytes) -> bool:
        return self.get(key) is not None

    def iter_prefix(
        self, prefix: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Merged committed+staged pairs whose key starts with `prefix`, byte-sorted.

        The staged part is snapshotted when iteration starts, so writing to this view while
        iterating is allowed (the writes are not seen by the running iteration).
        """
        keys = self._keys
        start = bisect_left(keys, prefix)
        overlay: list[tuple[bytes, bytes | None]] = []
        staged = self._staged
        for k in keys[start:]:
            if not k.startswith(prefix):
                break
            overlay.append((k, staged[k]))
        if reverse:
            overlay.reverse()
        base = self._parent.iter_prefix(prefix, reverse=reverse)
        if not overlay:
            return base
        return _merge(base, overlay, reverse)

    # -- writes --------------------------------------------------------------------------
    def set(self, key: bytes, value: bytes) -> None:
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError("View.set needs bytes key and bytes value")
        if not key:
            raise ValueError("empty keys are not allowed")
        if self._done:
            raise StoreError("view already written through or committed")
        staged = self._staged
        if key not in staged:
            insort(self._keys, key)
        staged[key] = value

    def delete(self, key: bytes) -> None:
        if not isinstance(key, bytes):
            raise TypeError("View.delete needs a bytes key")
        self._put(key, None)

    def _put(self, key: bytes, value: bytes | None) -> None:
        if self._done:
            raise StoreError("view already written through or committed")
        staged = self._staged
        if key not in staged:
            insort(self._keys, key)
        staged[key] = value

    # -- layering ------------------------------------------------------------------------
    def child(self) -> View:
        return View(self, self._store)

    def write_through(self) -> None:
        """Apply this layer's writes to its parent view (not to LMDB)."""
        parent = self._parent
        if not isinstance(parent, View):
            raise StoreError("write_through on a root view: use Store.commit")
        if self._done:
            raise StoreError("view already written through")
        staged = self._staged
        if staged and parent._done:
            raise StoreError("view already written through or committed")
        if parent._staged:
            pstaged = parent._staged
            pkeys = parent._keys
            for key in self._keys:
                if key not in pstaged:
                    insort(pkeys, key)
                pstaged[key] = staged[key]
        else:  # an empty parent (a block onto its root): take the sorted layer as it is
            parent._staged = dict(staged)
            parent._keys = list(self._keys)
        self._done = True

    def replay(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Stage `writes` (None = delete) as if set/deleted one by one, in order: for
        re-staging another view's `writes()` (key-sorted, unique) without re-running them."""
        if self._done:
            raise StoreError("view already written through or committed")
        keys = [k for k, _ in writes]
        if self._staged or any(a >= b for a, b in pairwise(keys)):
            for key, value in writes:
                if value is None:
                    self.delete(key)
                else:
                    self.set(key, value)
            return
        for key, value in writes:
            if not (isinstance(key, bytes) and key and (value is None or isinstance(value, bytes))):
                raise TypeError("View.replay needs non-empty bytes keys and bytes/None values")
        self._staged = dict(writes)
        self._keys = keys

    def writes(self) -> list[tuple[bytes, bytes | None]]:
        """Key-sorted staged writes of this layer (None = delete)."""
        staged = self._staged
        return [(k, staged[k]) for k in self._keys]

    @property
    def is_root(self) -> bool:
        return not isinstance(self._parent, View)

    def __len__(self) -> int:
        return len(self._staged)


class Store:
    """LMDB environment under `path`: committed state plus (height, app hash) metadata."""

    def __init__(self, path: Path, *, map_size: int = 1 << 36) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(self.path), map_size=map_size, max_dbs=2, subdir=True, sync=True,
                metasync=True, readahead=False,
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open LMDB store at {self.path}: {exc}") from exc
        self._state = self._env.open_db(b"state")
        self._meta = self._env.open_db(b"meta")
        self._closed = False
        self._load_meta()

    def _load_meta(self) -> None:
        with self._env.begin(db=self._meta) as txn:
            raw_h = txn.get(_META_HEIGHT)
            raw_a = txn.get(_META_APP_HASH)
        self.last_height: int = struct.unpack(">q", raw_h)[0] if raw_h else 0
        self.last_app_hash: bytes = bytes(raw_a) if raw_a else b""

    # -- committed reads -------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        with self._env.begin(db=self._state) as txn:
            return txn.get(key)

    def iter_prefix(
        self, prefix: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Committed pairs under `prefix`, key-sorted, from one consistent LMDB snapshot."""
        with self._env.begin(db=self._state) as txn:
            cur = txn.cursor()
            if not reverse:
                if not cur.set_range(prefix):
                    return
                for key, value in cur:
                    if not key.startswith(prefix):
                        return
                    yield key, value
            else:
                succ = _prefix_successor(prefix)
                if succ is None:
                    found = cur.last()
                elif cur.set_range(succ):
                    found = cur.prev()
                else:
                    found = cur.last()
                if not found:
                    return
                for key, value in cur.iterprev():
                    if not key.startswith(prefix):
                        return
                    yield key, value

    # -- staging and commit ----------------------------------------------------------------
    def view(self) -> View:
        if self._closed:
            raise StoreError("store is closed")
        return View(self, self)

    def commit(self, view: View, height: int, app_hash: bytes) -> None:
        """Write all staged writes of root `view` plus height and app hash in ONE LMDB txn."""
        if view._store is not self or not view.is_root:
            raise StoreError("commit needs a root view created by this store")
        if view._done:
            raise StoreError("view already committed")
        if height < self.last_height:
            raise StoreError(f"commit height {height} below last height {self.last_height}")
        try:
            with self._env.begin(write=True) as txn:
                for key, value in view.writes():
                    if value is None:
                        txn.delete(key, db=self._state)
                    else:
                        txn.put(key, value, db=self._state)
                txn.put(_META_HEIGHT, struct.pack(">q", height), db=self._meta)
                txn.put(_META_APP_HASH, app_hash, db=self._meta)
        except lmdb.Error as exc:
            raise StoreError(f"LMDB commit of height {height} failed: {exc}") from exc
        view._done = True
        self.last_height = height
        self.last_app_hash = bytes(app_hash)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
