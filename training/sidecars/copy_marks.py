"""Which watermarks a revealed model must NOT carry, and the test for "carries" (the verifier's
copy/overwrite defence, docs/verification.md).

Copy/overwrite defence (paper §IV-C.3, watermark/attacks.py): keys are public, so a thief can take
another miner's model and embed its own key on top; a few steps suffice for the thief's mark to
pass. The victim's mark then still reads, though, until the thief has trained long enough to erase
it (the cost the paper's argument rests on). Every revealed model is public from its reveal on,
so a thief may take one from any earlier round, not only the last: a model is tested against the
keys of every other miner that committed or revealed in the same round, and of every earlier
winner and every earlier reveal of a task of the same architecture, each under the seed of the
round it belongs to (`MarkIndex`); if one of them is present the verdict is watermark_ok=False
with reason "carries <miner>'s watermark". The revealing miner's own earlier marks are skipped:
building on one's own model is no theft.

"Present" is a statistical test, not the all-bits rule of the miner's own mark: where the thief's
bits read the same weights as the victim's with the opposite sign (with the "direct" matrix about
T²/2m of them for a layer of m coordinates: ~7 of 256 bits at m = 4608) embedding the thief's key
necessarily breaks those victim bits, so requiring all of them would let nearly every overwrite
through. A model trained independently of a key reads each of its (hash-derived) bits correctly
with probability at most 1/2, so k of T bits above the threshold happens by chance with
probability at most P(Binomial(T, 1/2) >= k). The verifier flags a key when that bound is
<= 2^-64 (`copy_bits_needed`: 200 of 256 bits, 113 of 128); testing K keys multiplies it by K
(union bound), which stays negligible for any chain: 10^6 earlier marks give 2^-44 per model.
Below 64 bits no count is that unlikely and the check is off. It catches an overwrite as long as
fewer than T - k victim bits were broken, i.e. for layers with m well above T²/(2(T-k)) (~590 for
256 bits: not the devnet's tiniest U-Net, whose m is 288). With the "diff" matrix (the default) a
bit reads two coordinates, so about 2T²/m victim bits break and the test needs m above
~2T²/(T-k) (~2340 for 256 bits: the demo U-Net, depth 2 base width 16, has m = 576 and is not
covered; the copy-defence test pins "direct" for that reason). A thief who trains long enough, or
edits the weights with the public key (watermark.attacks.forge), still gets through: the defence
raises the cost of a copy, it does not make one impossible.

Cost (bench/copy_marks.py): all keys of a layer are read with one batched projection
(training/sidecars/mark_batch.py), not one dense product per key.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

from abci_app.dlbc.records import RoundInfo, Task
from training.sidecars.mark_batch import bits_read, chunk_keys
from training.sidecars.rpc_types import NodeUnreachable, RpcError
from training.sidecars.scheme import WatermarkScheme

if TYPE_CHECKING:
    from training.sidecars.chain_client import ChainClient

log = logging.getLogger("dlbc.verifier.copy_marks")

#: Failed round queries in a row after which a pass stops (the rest is asked at the next one):
#: a node that answers every query with an error costs a handful of queries, not one per round.
_GIVE_UP_AFTER = 8


class OtherMark(NamedTuple):
    """A watermark no revealed model but its owner's may carry (the copy/overwrite defence)."""

    miner: str
    """Hex address of the miner whose key is tested."""
    seed: bytes
    """The seed of the round that miner's mark belongs to."""
    why: str
    """For the verdict's reason, e.g. "revealed in round 7"."""


# -- the index of earlier marks


class _RoundMarks(NamedTuple):
    """What a closed round leaves to test: its seed, its winner and its revealers.

    All a mark needs is miner + seed + round (+ the architecture, the key of the list this sits
    in); addresses are interned by the index, so a chain where the same miners reveal round
    after round stores each address once.
    """

    round: int
    seed: bytes
    winner: bytes | None
    revealers: tuple[bytes, ...]


class MarkIndex:
    """Every earlier winner and reveal, by architecture, read incrementally from the chain.

    A closed round's record never changes, so each earlier round is queried once per process and
    kept; a query that fails (node hiccup, record missing or odd, round not closed yet) is logged
    and retried at the next `marks` call, never raised: the index must not stop the verifier. A
    node that is unreachable ends the pass at once rather than timing out once per round, and
    `_GIVE_UP_AFTER` failures in a row end it too. Memory is one `_RoundMarks` per closed round
    (bench/copy_marks.py: 2.1 MiB for 10,000 rounds of 5 reveals).

    Grouped by architecture name, not by hyperparameters: a model of other shapes would not load
    into this task's model at all, so testing its key only costs a gather, while telling shapes
    apart from `hyperparams_json` text could miss the same model spelled another way.
    """

    def __init__(self, chain: ChainClient | None) -> None:
        self.chain = chain
        """Where `update` reads closed rounds; None: only `add_round` feeds the index."""
        self._next = 1
        """Every round below this was queried once: indexed, or waiting in `_retry`."""
        self._retry: dict[int, int] = {}
        """Round -> failed queries so far; retried on every pass."""
        self._by_arch: dict[str, list[_RoundMarks]] = {}
        self._arch_of: dict[int, str] = {}
        """Task id -> architecture (a task's spec never changes)."""
        self._indexed: set[int] = set()
        self._addresses: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    # -- reads

    def marks(self, info: RoundInfo, task: Task, *,
              deadline: float | None = None) -> list[OtherMark]:
        """The marks a model revealed in round `info` (of `task`) must not carry.

        This round's committers and revealers under its seed, then every earlier round's winner
        and revealers of a task of the same architecture under that round's seed, newest round
        first (winner first, then revealers by address); one entry per (miner, seed). Every
        validator with the same records gets the same list. `deadline` (time.monotonic()) bounds
        the catch-up of a long chain; what is not indexed by then is read at the next call.
        """
        rec = info.record
        self.update(rec.round - 1, deadline=deadline)
        current = {c.miner for c in info.commitments} | {r.miner for r in info.revealed}
        out = [OtherMark(m.hex(), rec.seed, f"committed in round {rec.round}")
               for m in sorted(current)]
        seen: set[tuple[bytes, bytes]] = {(m, rec.seed) for m in current}
        with self._lock:
            earlier = sorted((r for r in self._by_arch.get(task.spec.architecture, ())
                              if r.round < rec.round), key=lambda r: -r.round)
        for r in earlier:
            for miner, why in self._round_marks(r):
                if (miner, r.seed) not in seen:
                    seen.add((miner, r.seed))
                    out.append(OtherMark(miner.hex(), r.seed, why))
        return out

    @staticmethod
    def _round_marks(r: _RoundMarks) -> Iterator[tuple[bytes, str]]:
        if r.winner is not None:
            yield r.winner, f"won round {r.round}"
        for miner in r.revealers:
            yield miner, f"revealed in round {r.round}"

    def __len__(self) -> int:
        """How many (round, miner) marks are indexed."""
        with self._lock:
            return sum(len({*r.revealers, *([r.winner] if r.winner else [])})
                       for rounds in self._by_arch.values() for r in rounds)

    @property
    def rounds_indexed(self) -> int:
        with self._lock:
            return len(self._indexed)

    @property
    def pending(self) -> list[int]:
        """Rounds below the indexed frontier whose query failed; retried on the next pass."""
        with self._lock:
            return sorted(self._retry)

    # -- writes

    def update(self, upto: int, *, deadline: float | None = None) -> int:
        """Index every closed round up to `upto` not indexed yet; how many were added.

        Cheap when nothing is new (one check), so a verifier may call it at every poll to spread
        the catch-up of a long chain over the phases where it has nothing else to do.
        """
        chain = self.chain
        if chain is None:
            return 0
        with self._lock:
            todo = sorted(n for n in self._retry if n <= upto) + list(range(self._next, upto + 1))
            self._next = max(self._next, upto + 1)
        added, failed_in_a_row = 0, 0
        for i, n in enumerate(todo):
            if deadline is not None and time.monotonic() > deadline:
                self._give_back(todo[i:])
                break
            try:
                got = self._index_round(chain, n)
            except NodeUnreachable as exc:  # no point asking for the rest now
                self._failed(n, str(exc))
                self._give_back(todo[i + 1:])
                break
            except (RpcError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self._failed(n, f"odd answer: {exc!r}")  # from_json of a malformed record
                got = 0
            added += got
            failed_in_a_row = 0 if got else failed_in_a_row + 1
            if failed_in_a_row >= _GIVE_UP_AFTER:  # a node answering nonsense: next pass
                self._give_back(todo[i + 1:])
                break
        return added

    def add_round(self, info: RoundInfo, architecture: str) -> bool:
        """Keep a closed round's marks under `architecture`; False if it is not closed yet.

        `update` feeds this from the chain; it is public so that records already at hand (a
        replay, a benchmark) need no node.
        """
        rec = info.record
        if rec.is_active:
            return False
        with self._lock:
            self._retry.pop(rec.round, None)
            if rec.round in self._indexed:
                return True
            self._indexed.add(rec.round)
            rounds = self._by_arch.setdefault(architecture, [])
            winner = None if rec.winner is None else self._intern(rec.winner.miner)
            revealers = tuple(sorted({self._intern(r.miner) for r in info.revealed}))
            rounds.append(_RoundMarks(rec.round, rec.seed, winner, revealers))
        return True

    def _index_round(self, chain: ChainClient, n: int) -> int:
        info = chain.round_record(n)
        if info is None:
            self._failed(n, "not found")
            return 0
        if info.record.round != n:
            self._failed(n, f"the node answered round {info.record.round}")
            return 0
        tid = info.record.task_id
        arch = self._arch_of.get(tid)
        if arch is None:
            task = chain.task(tid)
            if task is None:
                self._failed(n, f"its task {tid} is not found")
                return 0
            arch = self._arch_of[tid] = task.spec.architecture
        if not self.add_round(info, arch):
            self._failed(n, "not closed yet")
            return 0
        return 1

    def _failed(self, n: int, why: str) -> None:
        with self._lock:
            tries = self._retry[n] = self._retry.get(n, 0) + 1
        # warn once per round; later retries of the same record only at debug level
        log.log(logging.WARNING if tries == 1 else logging.DEBUG,
                "copy-defence index: round %d skipped (%s); retried next time", n, why)

    def _give_back(self, rounds: Sequence[int]) -> None:
        with self._lock:
            for n in rounds:
                self._retry.setdefault(n, 0)

    def _intern(self, addr: bytes) -> bytes:
        return self._addresses.setdefault(bytes(addr), bytes(addr))


# -- the test for "carries"


def foreign_mark(w: npt.NDArray[np.float64], layer: str, miner: str, others: Sequence[OtherMark],
                 scheme: WatermarkScheme) -> OtherMark | None:
    """The first of `others` (not `miner` itself) whose watermark the mean kernel `w` carries.

    One batched projection per chunk of keys (training/sidecars/mark_batch.py), the same count
    per key as detect_vector would give. A key that cannot be built for this layer (e.g. a bad
    address) is skipped: it cannot be in the model either.
    """
    need = copy_bits_needed(scheme.n_bits)
    if need is None:
        return None
    me = miner.lower()
    todo = [o for o in others if o.miner.lower() != me]  # one's own earlier mark is no theft
    step = chunk_keys(scheme, w.shape[0])
    for start in range(0, len(todo), step):
        chunk = todo[start:start + step]
        reads = bits_read(w, layer, [(o.seed, o.miner) for o in chunk], scheme)
        hits = np.flatnonzero(reads >= need)
        if hits.size:
            other = chunk[int(hits[0])]
            return other._replace(why=f"{int(reads[hits[0]])}/{scheme.n_bits} of its bits; "
                                      f"{other.why}")
    return None


@functools.lru_cache(maxsize=64)
def copy_bits_needed(n_bits: int, log2_false_positive: int = 64) -> int | None:
    """Smallest k with P(Binomial(n_bits, 1/2) >= k) <= 2^-log2_false_positive; None if none.

    The bound is per key: a model tested against K keys is falsely flagged with probability at
    most K·2^-log2_false_positive (union bound), negligible for any K a chain can hold, so the
    line does not move with the size of the index (which would make it depend on how much of the
    chain each validator has indexed). Exact integer arithmetic (math.comb), so every validator
    draws the line at the same k.
    """
    tail = 0
    for k in range(n_bits, -1, -1):
        tail += math.comb(n_bits, k)
        if tail << log2_false_positive > 1 << n_bits:  # P(X >= k) > 2^-fp: k+1 is the line
            return k + 1 if k < n_bits else None
    return 0


def marks_to_exclude(info: RoundInfo, previous: RoundInfo | None) -> list[OtherMark]:
    """This round's committers and revealers, plus the previous round's winner: the marks of the
    records at hand, without an index (`MarkIndex.marks` is the verifier's full list).

    Sorted and deduplicated so that every validator tests the same list.
    """
    rec = info.record
    miners = {c.miner for c in info.commitments} | {r.miner for r in info.revealed}
    marks = [OtherMark(m.hex(), rec.seed, f"committed in round {rec.round}")
             for m in sorted(miners)]
    winner = None if previous is None else previous.record.winner
    if previous is not None and winner is not None:
        marks.append(OtherMark(winner.miner.hex(), previous.record.seed,
                               f"won round {previous.record.round}"))
    return marks
