"""Which watermarks a revealed model must NOT carry, and the test for "carries" (the verifier's
copy/overwrite defence, docs/verification.md).

Copy/overwrite defence (paper §IV-C.3, watermark/attacks.py): keys are public, so a thief can take
another miner's model and embed its own key on top; a few steps suffice for the thief's mark to
pass. The victim's mark then still reads, though, until the thief has trained long enough to erase
it (the cost the paper's argument rests on). So a model is also tested against the keys of every
other miner that committed or revealed in the same round and of the previous round's winner
(under that round's seed), one matrix product per key on the same mean kernel; if one of them is
present the verdict is watermark_ok=False with reason "carries <miner>'s watermark".

"Present" is a statistical test, not the all-bits rule of the miner's own mark: where the thief's
bits read the same weights as the victim's with the opposite sign (with the "direct" matrix about
T²/2m of them for a layer of m coordinates: ~7 of 256 bits at m = 4608) embedding the thief's key
necessarily breaks those victim bits, so requiring all of them would let nearly every overwrite
through. A model trained independently of a key reads each of its (hash-derived) bits correctly
with probability at most 1/2, so k of T bits above the threshold happens by chance with
probability at most P(Binomial(T, 1/2) >= k). The verifier flags a key when that bound is
<= 2^-64 (`copy_bits_needed`: 200 of 256 bits, 113 of 128): no honest model is flagged in
practice and grinding addresses to frame one is hopeless. Below 64 bits no count is that
unlikely and the check is off. It catches an overwrite as long as fewer than T - k victim bits
were broken, i.e. for layers with m well above T²/(2(T-k)) (~590 for 256 bits: not the devnet's
tiniest U-Net, whose m is 288). With the "diff" matrix (the default) a bit reads two
coordinates, so about 2T²/m victim bits break and the test needs m above ~2T²/(T-k) (~2340 for
256 bits: the demo U-Net, depth 2 base width 16, has m = 576 and is not covered; the copy-defence
test pins "direct" for that reason). A thief who trains long enough, or edits the weights with the
public key (watermark.attacks.forge), still gets through: the defence raises the cost of a copy,
it does not make one impossible.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from abci_app.dlbc.records import RoundInfo
from training.sidecars.base import WatermarkScheme


class OtherMark(NamedTuple):
    """A watermark no revealed model but its owner's may carry (the copy/overwrite defence)."""

    miner: str
    """Hex address of the miner whose key is tested."""
    seed: bytes
    """The seed of the round that miner's mark belongs to."""
    why: str
    """For the verdict's reason, e.g. "revealed in round 7"."""


def foreign_mark(w: npt.NDArray[np.float64], layer: str, miner: str, others: Sequence[OtherMark],
                 scheme: WatermarkScheme) -> OtherMark | None:
    """The first of `others` (not `miner` itself) whose watermark the mean kernel `w` carries.

    One matrix product per key (detect_vector on the already extracted w). A key that cannot be
    built for this layer (e.g. a bad address) is skipped: it cannot be in the model either.
    """
    from watermark import WatermarkError, detect_vector

    need = copy_bits_needed(scheme.n_bits)
    if need is None:
        return None
    me = miner.lower()
    for other in others:
        if other.miner.lower() == me:
            continue  # the miner's own earlier mark (e.g. it won the previous round) is no theft
        try:
            key = scheme.key(other.seed, bytes.fromhex(other.miner), layer)
            det = detect_vector(w, key, scheme.threshold)
        except (WatermarkError, ValueError):
            continue
        read = int(np.count_nonzero(det.confidences > scheme.threshold))
        if read >= need:
            return other._replace(why=f"{read}/{scheme.n_bits} of its bits; {other.why}")
    return None


@functools.lru_cache(maxsize=64)
def copy_bits_needed(n_bits: int, log2_false_positive: int = 64) -> int | None:
    """Smallest k with P(Binomial(n_bits, 1/2) >= k) <= 2^-log2_false_positive; None if none.

    Exact integer arithmetic (math.comb), so every validator draws the line at the same k.
    """
    tail = 0
    for k in range(n_bits, -1, -1):
        tail += math.comb(n_bits, k)
        if tail << log2_false_positive > 1 << n_bits:  # P(X >= k) > 2^-fp: k+1 is the line
            return k + 1 if k < n_bits else None
    return 0


def marks_to_exclude(info: RoundInfo, previous: RoundInfo | None) -> list[OtherMark]:
    """Every key a model of round `info` must not carry, from the round query answers.

    The round's committers and revealers under this round's seed, plus the previous round's
    winner under that round's seed (a model stolen after it was revealed there); sorted and
    deduplicated so that every validator tests the same list.
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
