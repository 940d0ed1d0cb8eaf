"""A failed proof-of-learning check in the verdicts (issue 15, docs/proof_of_learning.md): the
`trajectory_failed` field of a vote-extension verdict counts as a refutation in Settle, and a
verdict without it encodes exactly as before the field existed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from abci_app.dlbc import txs
from abci_app.dlbc.extensions import decode_verdict_set, extension_bytes
from abci_app.dlbc.verdicts import Verdict, VerdictFile, read_verdicts, write_verdicts
from abci_app.pb.dlbc.v1 import vote_pb2
from abci_app.pb.tendermint.abci import types_pb2 as abci

from .helpers import NS, Node, app_state, extended_commit, verdict_set
from .rounds_fixture import (
    BALANCES,
    HONEST,
    OVERCLAIM,
    POWER,
    VALS,
    Round,
    digest,
    full_round_to_verify,
)

ACCEPT = abci.ResponseProcessProposal.ACCEPT


@pytest.fixture
def rd(tmp_path: Path) -> Iterator[Round]:
    node = Node(tmp_path, [(k, POWER) for k in VALS], app_state(BALANCES))
    r = full_round_to_verify(node)
    yield r
    node.close()


def _extension(round_no: int, honest_failed: bool, index: int) -> bytes:
    """A validator's verdicts: HONEST measured within tolerance with its watermark, its
    trajectory failed or not; OVERCLAIM measured far below its claim."""
    return extension_bytes(round_no, VerdictFile((
        Verdict(HONEST.address, digest("h"), True, 899_000 + 1_000 * index, honest_failed),
        Verdict(OVERCLAIM.address, digest("o"), True, 700_000),
    )))


def _settle(rd: Round, failed: Sequence[bool]) -> dict[str, object]:
    node = rd.node
    exts = [_extension(rd.round_no, f, i) for i, f in enumerate(failed)]
    tx = txs.build_settle_tx(rd.round_no,
                             extended_commit([(k, POWER) for k in VALS], exts, node.height))
    assert node.process([tx], node.time_ns + NS) == ACCEPT
    r = node.finalize([tx])
    assert [x.code for x in r.tx_results] == [0], r.tx_results[0].log
    rec: dict[str, object] = node.query(f"rounds/{rd.round_no}")
    return rec


def test_invalid_trajectory_refutes_the_model_and_forfeits_its_deposit(rd: Round) -> None:
    # Verify three of four validators (> 1/3 of the power) failing HONEST's trajectory refute it,
    # though its score and watermark check out: no winner, its reveal deposit is not returned
    before = rd.node.balance(HONEST)
    rec = _settle(rd, [True, True, True, False])
    assert rec["outcome"] == "no_winner" and rec["winner"] is None
    statuses = {v["miner"]: v["status"] for v in rec["verdicts"]}  # type: ignore[attr-defined]
    assert statuses[HONEST.address.hex()] == "refuted"
    assert rd.node.balance(HONEST) == before
    assert rd.node.query("supply")["supply"] == rd.node.total_held()


def test_one_failed_trajectory_check_of_four_does_not_refute(rd: Round) -> None:
    # Verify one validator (1/4 of the power, not > 1/3) cannot refute an honest model alone
    before = rd.node.balance(HONEST)
    rec = _settle(rd, [True, False, False, False])
    assert rec["outcome"] == "settled"
    assert rec["winner"]["miner"] == HONEST.address.hex()  # type: ignore[index]
    assert rd.node.balance(HONEST) > before


def test_a_verdict_without_failure_encodes_as_before_the_field() -> None:
    # Verify the default is not encoded: the extension bytes of an unfailed verdict are those of
    # a Verdict message without field 5, so extensions and golden chains of before still decode
    # and replay the same
    old = verdict_set(7, [(HONEST.address, digest("h"), True, 900_000)])
    new = extension_bytes(7, VerdictFile((Verdict(HONEST.address, digest("h"), True, 900_000),)))
    assert new == old
    failed = extension_bytes(7, VerdictFile((
        Verdict(HONEST.address, digest("h"), True, 900_000, True),)))
    assert len(failed) == len(old) + 2
    vs = decode_verdict_set(failed, 7, [(HONEST.address, digest("h"))])
    assert vs is not None and vs.verdicts[0].trajectory_failed
    assert not vs.verdicts[0].provenance_ok
    assert vote_pb2.Verdict.FromString(bytes(vote_pb2.VerdictSet.FromString(failed).verdicts[0]
                                             .SerializeToString())).trajectory_failed


def test_verdict_file_round_trips_the_failure(tmp_path: Path) -> None:
    ok = Verdict(HONEST.address, digest("h"), True, 900_000)
    bad = Verdict(OVERCLAIM.address, digest("o"), True, 880_000, trajectory_failed=True)
    path = write_verdicts(tmp_path, 3, [ok, bad])
    assert b"trajectory_failed" in path.read_bytes()
    assert path.read_bytes().count(b"trajectory_failed") == 1  # left out where it is false
    found = read_verdicts(tmp_path, 3)
    assert found is not None and found.verdicts == (ok, bad)


def test_invalid_verdict_file_with_a_non_bool_failure(tmp_path: Path) -> None:
    path = write_verdicts(tmp_path, 3, [Verdict(HONEST.address, digest("h"), True, 900_000)])
    path.write_bytes(path.read_bytes().replace(b'"watermark_ok"',
                                               b'"trajectory_failed": 1, "watermark_ok"'))
    assert read_verdicts(tmp_path, 3) is None


def test_invalid_reveal_without_a_trajectory_on_a_checking_chain(tmp_path: Path) -> None:
    # Verify a chain with proof_of_learning refuses a reveal naming fewer than two checkpoints
    # (epoch 0 and one trained epoch), and takes the one that names two
    from abci_app.dlbc.codes import Code

    from .rounds_fixture import reveal, submit_and_start, train_and_commit

    node = Node(tmp_path, [(k, POWER) for k in VALS], app_state(BALANCES, proof_of_learning=4))
    try:
        rd = submit_and_start(node)
        train_and_commit(rd)
        codes = reveal(rd)
        assert codes[:3] == [0, 0, Code.BAD_REVEAL]  # test key, HONEST (2 digests), OVERCLAIM (0)
        assert node.query(f"rounds/{rd.round_no}")["reveals"] == 1
        assert node.query("params")["proof_of_learning"] == 4
    finally:
        node.close()
