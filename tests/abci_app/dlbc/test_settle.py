"""Settlement by vote extensions (abci_app/dlbc/settle.py, docs/settlement.md) on a real app."""

from __future__ import annotations

from pathlib import Path

import pytest

from abci_app.dlbc import txs
from abci_app.dlbc.codes import Code
from abci_app.dlbc.settle import weighted_median
from abci_app.pb.tendermint.abci import types_pb2 as abci

from .helpers import NS, Key, Node, app_state, extended_commit
from .rounds_fixture import (
    BALANCES,
    COPIER,
    HONEST,
    OVERCLAIM,
    POWER,
    REWARDS,
    VALS,
    Round,
    digest,
    full_round_to_verify,
    honest_verdicts,
)

ACCEPT = abci.ResponseProcessProposal.ACCEPT
REJECT = abci.ResponseProcessProposal.REJECT


@pytest.fixture
def rd(tmp_path: Path) -> Round:
    node = Node(tmp_path, [(k, POWER) for k in VALS], app_state(BALANCES))
    r = full_round_to_verify(node)
    yield r
    node.close()


def settle_tx(rd: Round, extensions: list[bytes], vals: list[tuple[Key, int]] | None = None
              ) -> bytes:
    ec = extended_commit(vals or [(k, POWER) for k in VALS], extensions, rd.node.height)
    return txs.build_settle_tx(rd.round_no, ec)


def test_weighted_median() -> None:
    assert weighted_median([(5, 1), (1, 1), (9, 1)]) == 5
    assert weighted_median([(1, 10), (100, 1), (200, 1)]) == 1
    assert weighted_median([(1, 1), (2, 1)]) == 1  # lower median


def test_process_settle_pays_honest_winner(rd: Round) -> None:
    node = rd.node
    supply0 = node.query("supply")["supply"]
    before = {k.name: node.balance(k) for k in (HONEST, OVERCLAIM, COPIER, rd.publisher)}
    tx = settle_tx(rd, [honest_verdicts(rd, i) for i in range(4)])
    assert node.process([tx], node.time_ns + NS) == ACCEPT
    r = node.finalize([tx])
    assert [x.code for x in r.tx_results] == [0], r.tx_results[0].log
    rec = node.query(f"rounds/{rd.round_no}")
    assert rec["outcome"] == "settled"
    w = rec["winner"]
    assert w["miner"] == HONEST.address.hex() and w["model_digest"] == digest("h").hex()
    assert w["verified_score_ppm"] == 900_000  # lower weighted median of 899k..902k
    assert w["checkpoint_digests"] == [digest("h1").hex(), digest("h2").hex()]
    reward = REWARDS[rd.publisher.name]
    assert w["task_reward"] == reward
    assert w["block_reward_miner"] + w["block_reward_publisher"] == 1_000
    # queue length 2 at round start, L = 10: publisher share 1 - 0.2² = 0.96
    assert rec["publisher_share_ppm"] == 960_000 and w["block_reward_publisher"] == 960
    # the winner's reveal deposit comes back; the over-claimer's claim is refuted by every
    # validator, so its deposit is forfeited (it stays below its balance before the Settle)
    deposit = node.query("params")["reveal_deposit"]
    assert node.balance(HONEST) == before["honest"] + reward + 40 + deposit
    assert node.balance(rd.publisher) == before[rd.publisher.name] + 960
    assert node.balance(OVERCLAIM) == before["overclaim"]
    assert node.balance(COPIER) == before["copier"]
    statuses = {v["miner"]: v["status"] for v in rec["verdicts"]}
    assert statuses == {HONEST.address.hex(): "confirmed", OVERCLAIM.address.hex(): "refuted"}
    sup = node.query("supply")
    assert sup["supply"] == supply0 + 1_000 == node.total_held()
    assert node.query(f"tasks/{rd.task_id}")["status"] == "done"
    # the next round starts at the next block with the other task
    node.finalize([])
    nxt = node.query("round")
    assert nxt["round"] == rd.round_no + 1 and nxt["task_id"] != rd.task_id
    assert nxt["phase"] == "TRAIN" and nxt["seed"] == node.block_hash(node.height).hex()


def assert_settle_rejected(rd: Round, tx: bytes, code: Code, *extra: bytes) -> None:
    node = rd.node
    rec0 = node.query("round")
    assert node.process([tx, *extra], node.time_ns + NS) == REJECT
    r = node.finalize([tx, *extra])
    assert r.tx_results[0].code == code, r.tx_results[0].log
    rec = node.query("round")
    assert rec["status"] == "active" and rec["winner"] is None
    assert rec["phase"] == rec0["phase"]


def test_invalid_settle_forged_signature(rd: Round) -> None:
    exts = [honest_verdicts(rd, i) for i in range(4)]
    ec = extended_commit([(k, POWER) for k in VALS], exts, rd.node.height)
    sig = bytearray(ec.votes[1].extension_signature)
    sig[5] ^= 1
    ec.votes[1].extension_signature = bytes(sig)
    assert_settle_rejected(rd, txs.build_settle_tx(rd.round_no, ec), Code.SETTLE_BAD_SIGNATURE)


def test_invalid_settle_forged_extension_content(rd: Round) -> None:
    exts = [honest_verdicts(rd, i) for i in range(4)]
    ec = extended_commit([(k, POWER) for k in VALS], exts, rd.node.height)
    ec.votes[0].vote_extension = honest_verdicts(rd, 3)[:-1] + b"\x01"  # changed after signing
    assert_settle_rejected(rd, txs.build_settle_tx(rd.round_no, ec), Code.SETTLE_BAD_SIGNATURE)


def test_invalid_settle_missing_signature(rd: Round) -> None:
    ec = extended_commit([(k, POWER) for k in VALS], [honest_verdicts(rd, i) for i in range(4)],
                         rd.node.height)
    ec.votes[2].extension_signature = b""
    assert_settle_rejected(rd, txs.build_settle_tx(rd.round_no, ec), Code.SETTLE_BAD_SIGNATURE)


def test_invalid_settle_replayed_from_older_height(rd: Round) -> None:
    ec = extended_commit([(k, POWER) for k in VALS], [honest_verdicts(rd, i) for i in range(4)],
                         rd.node.height - 1)
    assert_settle_rejected(rd, txs.build_settle_tx(rd.round_no, ec), Code.SETTLE_BAD_SIGNATURE)


def test_invalid_settle_insufficient_power(rd: Round) -> None:
    # only 2 of 4 equal-power validators sent verdicts: 1/2 is not > 2/3
    exts = [honest_verdicts(rd, 0), honest_verdicts(rd, 1), b"", b""]
    assert_settle_rejected(rd, settle_tx(rd, exts), Code.SETTLE_INSUFFICIENT_POWER)


def test_invalid_settle_unknown_validator(rd: Round) -> None:
    vals = [(k, POWER) for k in VALS[:3]] + [(Key("stranger"), POWER)]
    exts = [honest_verdicts(rd, i) for i in range(4)]
    assert_settle_rejected(rd, settle_tx(rd, exts, vals), Code.SETTLE_UNKNOWN_VALIDATOR)


def test_invalid_settle_not_first_tx(rd: Round) -> None:
    tx = settle_tx(rd, [honest_verdicts(rd, i) for i in range(4)])
    transfer = rd.publisher.tx(txs.transfer(HONEST.address, 1))
    node = rd.node
    assert node.process([transfer, tx], node.time_ns + NS) == REJECT
    r = node.finalize([transfer, tx])
    assert [x.code for x in r.tx_results] == [0, Code.SETTLE_NOT_ALLOWED]


def test_invalid_settle_wrong_round(rd: Round) -> None:
    ec = extended_commit([(k, POWER) for k in VALS], [honest_verdicts(rd, i) for i in range(4)],
                         rd.node.height)
    assert_settle_rejected(rd, txs.build_settle_tx(rd.round_no + 1, ec), Code.WRONG_ROUND)


def test_settle_no_confirmed_claim_returns_task_once(rd: Round) -> None:
    # every validator finds HONEST's watermark missing and OVERCLAIM out of tolerance
    from .helpers import verdict_set

    bad = verdict_set(rd.round_no, [(HONEST.address, digest("h"), False, 900_000),
                                    (OVERCLAIM.address, digest("o"), True, 700_000)])
    node = rd.node
    r = node.finalize([settle_tx(rd, [bad] * 4)])
    assert r.tx_results[0].code == 0
    assert node.query(f"rounds/{rd.round_no}")["outcome"] == "no_winner"
    task = node.query(f"tasks/{rd.task_id}")
    assert task["status"] == "pending" and task["returned"] == 1
    assert node.query("supply")["supply"] == node.total_held()


def test_prepare_proposal_injects_settle_first(rd: Round) -> None:
    node = rd.node
    ec = extended_commit([(k, POWER) for k in VALS], [honest_verdicts(rd, i) for i in range(4)],
                         node.height)
    transfer = rd.publisher.tx(txs.transfer(HONEST.address, 1))
    out = node.prepare([transfer], node.time_ns + NS, local_last_commit=ec)
    assert len(out) == 2 and out[1] == transfer
    assert out[0] == txs.build_settle_tx(rd.round_no, ec)
    assert node.process(out, node.time_ns + NS) == ACCEPT
    # without enough extensions the proposer injects nothing
    weak = extended_commit([(k, POWER) for k in VALS],
                           [honest_verdicts(rd, 0), b"", b"", b""], node.height)
    assert node.prepare([transfer], node.time_ns + NS, local_last_commit=weak) == [transfer]


def test_unsettled_verify_phase_returns_task(rd: Round) -> None:
    node = rd.node
    node.finalize([], rd.record["verify_end_ns"])
    rec = node.query(f"rounds/{rd.round_no}")
    assert rec["outcome"] == "unsettled"
    # the same task was returned to the pool once and, being the only... it restarts a round
    assert node.query(f"tasks/{rd.task_id}")["returned"] == 1


def test_invalid_settle_on_incomplete_verdict_sets(rd: Round) -> None:
    """A proposer cannot settle on verdicts still being gathered: only complete sets are
    present, and four incomplete ones carry no power."""
    from .helpers import verdict_set

    partial = verdict_set(rd.round_no, [(HONEST.address, digest("h"), True, 900_000)],
                          complete=False)
    assert_settle_rejected(rd, settle_tx(rd, [partial] * 4), Code.SETTLE_INSUFFICIENT_POWER)


def test_invalid_settle_padded_with_non_commit_entries(rd: Round) -> None:
    ec = extended_commit([(k, POWER) for k in VALS], [honest_verdicts(rd, i) for i in range(4)],
                         rd.node.height)
    ec.votes[3].block_id_flag = 1  # ABSENT, yet carrying bytes
    assert_settle_rejected(rd, txs.build_settle_tx(rd.round_no, ec), Code.BAD_SETTLE)
    ec2 = extended_commit([(k, POWER) for k in VALS], [honest_verdicts(rd, i) for i in range(4)],
                          rd.node.height)
    ec2.votes.add(validator=abci.Validator(address=VALS[0].address, power=POWER),
                  block_id_flag=1)  # the same validator again, as an empty absent entry
    assert_settle_rejected(rd, txs.build_settle_tx(rd.round_no, ec2), Code.SETTLE_DUPLICATE_VOTE)


def test_invalid_settle_with_padded_extension_is_not_counted(rd: Round) -> None:
    """An extension with unknown-field padding is not a valid VerdictSet: not present."""
    padded = [honest_verdicts(rd, i) + b"\xfa\x3f\x03abc" for i in range(2)]
    exts = [*padded, honest_verdicts(rd, 2), honest_verdicts(rd, 3)]
    assert_settle_rejected(rd, settle_tx(rd, exts), Code.SETTLE_INSUFFICIENT_POWER)


def _liar(rd: Round) -> bytes:
    from .helpers import verdict_set

    # the over-claimer's friend: confirms 0.99 for OVERCLAIM, sinks HONEST
    return verdict_set(rd.round_no, [(HONEST.address, digest("h"), False, 0),
                                     (OVERCLAIM.address, digest("o"), True, 990_000)])


@pytest.mark.parametrize(("left_out", "byzantine"), [
    *((i, b) for i in range(4) for b in (None, "liar")),
    (None, "absent"), (None, "liar"),  # all four offered; validator 3 silent / lying
])
def test_proposer_choice_of_extensions_does_not_change_the_outcome(
        tmp_path: Path, left_out: int | None, byzantine: str | None) -> None:
    """Class 2 on the real app: the proposer leaves out any one extension, and validator 3
    (1/4 of the power) lies or stays silent: ProcessProposal ACCEPTs and the same honest
    miner wins with the same verified score every time."""
    node = Node(tmp_path, [(k, POWER) for k in VALS], app_state(BALANCES))
    try:
        rd = full_round_to_verify(node)
        exts = [honest_verdicts(rd, i) for i in range(4)]
        if byzantine == "liar":
            exts[3] = _liar(rd)
        elif byzantine == "absent":
            exts[3] = b""
        vals = [(k, POWER) for i, k in enumerate(VALS) if i != left_out]
        kept = [e for i, e in enumerate(exts) if i != left_out]
        tx = settle_tx(rd, kept, vals)
        assert node.process([tx], node.time_ns + NS) == ACCEPT
        assert node.finalize([tx]).tx_results[0].code == 0
        rec = node.query(f"rounds/{rd.round_no}")
        assert rec["outcome"] == "settled"
        assert rec["winner"]["miner"] == HONEST.address.hex()
        # lower weighted median of the honest scores present (899k + 1k * i)
        honest_scores = sorted(899_000 + 1_000 * i for i in range(4)
                               if i != left_out and not (i == 3 and byzantine))
        assert rec["winner"]["verified_score_ppm"] in honest_scores
    finally:
        node.close()


def test_settle_blames_a_publisher_whose_test_set_is_unusable(rd: Round) -> None:
    """Class 5: every verifier says the revealed test set could not be used: the escrow goes
    to the miners who revealed, not back to the publisher, and the task is not re-queued."""
    from .helpers import verdict_set

    node = rd.node
    pub0 = node.balance(rd.publisher)
    miners0 = {k.name: node.balance(k) for k in (HONEST, OVERCLAIM)}
    complaint = verdict_set(rd.round_no, [], test_set_unusable=True)
    tx = settle_tx(rd, [complaint] * 4)
    assert node.process([tx], node.time_ns + NS) == ACCEPT
    assert node.finalize([tx]).tx_results[0].code == 0
    assert node.query(f"rounds/{rd.round_no}")["outcome"] == "publisher_fault"
    assert node.balance(rd.publisher) <= pub0
    reward = REWARDS[rd.publisher.name]
    gained = sum(node.balance(k) - miners0[k.name] for k in (HONEST, OVERCLAIM))
    deposit = node.query("params")["reveal_deposit"]
    assert reward - 1 <= gained - 2 * deposit <= reward  # (integer split; remainder to the pool)
    assert node.query(f"tasks/{rd.task_id}")["status"] != "pending"
    assert node.query("supply")["supply"] == node.total_held()


def test_honest_settle_of_the_largest_chain_fits_its_bound_and_a_block() -> None:
    """Class 6: max validators x one verdict per reveal (the most a valid extension can hold)
    gives the largest honest Settle; it must fit `max_settle_bytes`, and that bound must fit
    CometBFT's default block (4 MiB in v1.0, 21 MiB in v0.38) beside a full tx."""
    from abci_app.dlbc.params import MAX_REVEALS_PER_ROUND, Params
    from abci_app.dlbc.settle import MAX_VALIDATORS, max_settle_bytes

    from .helpers import verdict_set

    p = Params()
    assert txs.MAX_SETTLE_BYTES == max_settle_bytes(
        Params(max_reveals_per_round=MAX_REVEALS_PER_ROUND))
    verdicts = [(bytes([1 + i % 250]) * 19 + bytes([i // 250]), bytes([i % 256]) * 32, True,
                 1_000_000) for i in range(p.max_reveals_per_round)]
    ext = verdict_set(2**40, verdicts)
    vals = [(Key(f"big-{i}"), 2**40) for i in range(MAX_VALIDATORS)]
    ec = extended_commit(vals, [ext] * MAX_VALIDATORS, 2**40, round_=2**20)
    settle = txs.tx_pb2.Settle(round=2**40, extended_commit=ec)
    assert settle.ByteSize() <= max_settle_bytes(p)
    assert max_settle_bytes(p) + p.max_tx_bytes <= 4 * 1024 * 1024
