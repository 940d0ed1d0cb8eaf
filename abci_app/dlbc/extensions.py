"""The vote-extension codec: a validator's `VerdictSet` as bytes and back (docs/wire.md,
docs/settlement.md).

Why its own module: this and `txs.py` are where protobuf meets the state machine. ExtendVote
encodes this validator's verdict file (`extension_bytes`); VerifyVoteExtension and the Settle
rule decode the extensions (`decode_verdict_set`) into frozen `VerdictSet` values, so
`settle.py` decides on plain data and imports no protobuf.

Valid extension: the canonical encoding with no unknown field (no padding, wire.parse_canonical),
verdicts strictly increasing by (miner, digest) (so none twice), each on a model revealed in the
round (so at most one per reveal), scores in ppm, and a test-set complaint carries no verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from abci_app.dlbc.crypto import ADDRESS_LEN
from abci_app.dlbc.params import PPM
from abci_app.dlbc.records import Address, RoundNo
from abci_app.dlbc.verdicts import Verdict, VerdictFile
from abci_app.dlbc.wire import WireError, parse_canonical
from abci_app.pb.dlbc.v1 import vote_pb2

#: Encoded size of one Verdict inside a VerdictSet, at most: tag+len of the entry (3), miner
#: (2+20), digest (2+32), watermark_ok (2), score_ppm (1+3 for <= 1e6), trajectory_failed (2).
VERDICT_MAX_BYTES = 3 + 22 + 34 + 2 + 4 + 2
#: VerdictSet fields besides its verdicts: round (1+10), complete (2), test_set_unusable (2).
VERDICT_SET_OVERHEAD = 16


@dataclass(frozen=True, slots=True)
class VerdictSet:
    """One validator's decoded vote extension for `round`."""

    round: RoundNo
    complete: bool  # its verifier finished the round (only complete sets count in a Settle)
    test_set_unusable: bool
    verdicts: tuple[Verdict, ...]  # strictly increasing by (miner, model_digest)


def decode_verdict_set(ext: bytes, round_no: int,
                       revealed: Iterable[tuple[Address, bytes]]) -> VerdictSet | None:
    """A valid VerdictSet for `round_no` (see the module docstring), else None; never raises."""
    known = set(revealed)
    if not ext or len(ext) > VERDICT_SET_OVERHEAD + len(known) * VERDICT_MAX_BYTES:
        return None
    try:
        vs = parse_canonical(vote_pb2.VerdictSet, ext)
    except WireError:
        return None
    if vs.round != round_no or (vs.test_set_unusable and len(vs.verdicts)):
        return None
    last = b""
    out: list[Verdict] = []
    for v in vs.verdicts:
        miner, digest = bytes(v.miner), bytes(v.model_digest)
        key = miner + digest
        if (len(miner) != ADDRESS_LEN or len(digest) != 32 or v.score_ppm > PPM
                or key <= last or (miner, digest) not in known):
            return None
        last = key
        out.append(Verdict(miner, digest, v.watermark_ok, v.score_ppm, v.trajectory_failed))
    return VerdictSet(RoundNo(vs.round), vs.complete, vs.test_set_unusable, tuple(out))


def extension_bytes(round_no: int, found: VerdictFile) -> bytes:
    """The vote extension ExtendVote sends: the canonical VerdictSet, verdicts sorted by
    (miner, digest), one per model (what `decode_verdict_set` accepts)."""
    unique: dict[bytes, Verdict] = {}
    for v in found.verdicts:
        unique.setdefault(v.miner + v.model_digest, v)
    ordered = [unique[k] for k in sorted(unique)]
    ext: bytes = vote_pb2.VerdictSet(
        round=round_no, complete=found.complete, test_set_unusable=found.test_set_unusable,
        verdicts=[vote_pb2.Verdict(miner=v.miner, model_digest=v.model_digest,
                                   watermark_ok=v.watermark_ok, score_ppm=v.score_ppm,
                                   trajectory_failed=v.trajectory_failed)
                  for v in ordered],
    ).SerializeToString(deterministic=True)
    return ext
