"""The round schedule, commit-reveal rules and task-pool outcomes (rounds.py, process.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from abci_app.dlbc import txs
from abci_app.dlbc.codes import Code
from abci_app.pb.tendermint.abci import types_pb2 as abci

from .helpers import NS, Node, app_state
from .rounds_fixture import (
    BALANCES,
    COPIER,
    HONEST,
    KEYS,
    OVERCLAIM,
    POWER,
    PUB1,
    PUB2,
    REWARDS,
    VALS,
    digest,
    reveal,
    submit_and_start,
    to_verify,
    train_and_commit,
)

REJECT = abci.ResponseProcessProposal.REJECT
ACCEPT = abci.ResponseProcessProposal.ACCEPT


@pytest.fixture
def node(tmp_path: Path) -> Node:
    n = Node(tmp_path, [(k, POWER) for k in VALS], app_state(BALANCES))
    yield n
    n.close()


def test_start_round_selects_smallest_ranking_score(node: Node) -> None:
    rd = submit_and_start(node)
    pending = node.query("tasks/pending")  # the other task, still pending
    rec = rd.record
    # task 1 is smaller (model 10 kB vs 90 kB) and richer: it is selected first
    assert rec["task_id"] == 1 and rd.publisher is PUB1
    assert rec["unselected"] == [2] and [t["id"] for t in pending["tasks"]] == [2]
    assert rec["queue_len"] == 2 and rec["phase"] == "TRAIN"
    assert rec["train_end_ns"] - rec["start_ns"] == 100 * NS
    assert rec["seed"] == node.block_hash(2).hex()
    assert node.query("tasks/1")["status"] == "selected"


def test_invalid_commit_out_of_phase_rejects_proposal(node: Node) -> None:
    rd = submit_and_start(node)
    train_and_commit(rd)
    node.finalize([], rd.record["train_end_ns"])  # REVEAL now
    late = PUB2.tx(txs.transfer(HONEST.address, 1))  # fine
    commit = OVERCLAIM.tx(txs.commit_model(rd.round_no, b"\x01" * 32))
    assert node.check(commit).code == Code.WRONG_PHASE
    assert node.process([late, commit], node.time_ns + NS) == REJECT
    assert node.process([late], node.time_ns + NS) == ACCEPT
    r = node.finalize([late, commit])
    assert [x.code for x in r.tx_results] == [0, Code.WRONG_PHASE]


def test_invalid_second_commit_in_round(node: Node) -> None:
    rd = submit_and_start(node)
    train_and_commit(rd)
    r = node.finalize([HONEST.tx(txs.commit_model(rd.round_no, b"\x02" * 32))])
    assert [x.code for x in r.tx_results] == [Code.DUPLICATE_COMMIT]
    first = [c for c in node.query("round")["commitments"] if c["miner"] == HONEST.address.hex()]
    assert first[0]["commitment"] == txs.model_commitment(
        digest("h"), HONEST.address, rd.salts["honest"]).hex()


def test_invalid_reveal_of_someone_elses_commitment(node: Node) -> None:
    rd = submit_and_start(node)
    train_and_commit(rd)
    codes = reveal(rd)
    assert codes == [0, 0, 0, Code.REVEAL_MISMATCH]  # COPIER reused HONEST's digest and salt
    revealed = {r["miner"] for r in node.query("round")["revealed"]}
    assert revealed == {HONEST.address.hex(), OVERCLAIM.address.hex()}
    copy = COPIER.tx(txs.reveal_model(rd.round_no, "file:///m/h.safetensors", digest("h"),
                                      rd.salts["honest"], 990_000))
    assert node.process([copy], node.time_ns + NS) == REJECT


def test_invalid_reveal_test_key_mismatch(node: Node) -> None:
    rd = submit_and_start(node)
    train_and_commit(rd)
    node.finalize([], rd.record["train_end_ns"])
    r = node.finalize([rd.publisher.tx(txs.reveal_test_set(rd.task_id, b"z" * 32)),
                       PUB2.tx(txs.reveal_test_set(rd.task_id, KEYS[PUB1.name][1]))])
    assert [x.code for x in r.tx_results] == [Code.TEST_KEY_MISMATCH, Code.NOT_TASK_PUBLISHER]
    assert node.query("round")["test_key_revealed"] is False


def test_key_withheld_refunds_less_fee_and_moves_on(node: Node) -> None:
    rd = submit_and_start(node)
    bal = node.balance(PUB1)
    sup0 = node.query("supply")
    vals0 = sum(node.balance(k) for k in VALS)
    node.finalize([], rd.record["train_end_ns"])  # TRAIN ends without the key
    rec = node.query(f"rounds/{rd.round_no}")
    assert rec["outcome"] == "key_withheld" and rec["status"] == "closed"
    # 10 % of 5,000 is 500, under the floor withhold_fee_min = 1,000
    fee = max(1_000, REWARDS[PUB1.name] * 100_000 // 1_000_000)
    assert fee == 1_000
    assert node.balance(PUB1) == bal + REWARDS[PUB1.name] - fee
    sup = node.query("supply")
    # the fee went to the fee pool, which paid the validators by power in the same block
    paid = sum(node.balance(k) for k in VALS) - vals0
    assert paid + sup["fee_pool"] == sup0["fee_pool"] + fee and sup["fee_pool"] < 4 * POWER
    assert sup["supply"] == sup0["supply"] == node.total_held()
    assert node.query("tasks/1")["status"] == "refunded"
    nxt = node.query("round")
    assert nxt["round"] == rd.round_no + 1 and nxt["task_id"] == 2  # same block


def test_no_reveal_returns_task_to_pool_once(node: Node) -> None:
    rd = submit_and_start(node)
    train_key, test_key = KEYS[PUB1.name]
    node.finalize([PUB1.tx(txs.release_train_key(1, train_key))])
    node.finalize([], rd.record["train_end_ns"])
    node.finalize([PUB1.tx(txs.reveal_test_set(1, test_key))])
    node.finalize([], rd.record["reveal_end_ns"])  # nobody revealed a model
    assert node.query(f"rounds/{rd.round_no}")["outcome"] == "no_reveal"
    task = node.query("tasks/1")
    assert task["returned"] == 1 and task["status"] in ("pending", "selected")
    assert node.query("supply")["escrow"] == sum(REWARDS.values())


def test_phase_sequence_reaches_verify(node: Node) -> None:
    rd = submit_and_start(node)
    train_and_commit(rd)
    reveal(rd)
    to_verify(rd)
    rec = node.query("round")
    assert rec["phase"] == "VERIFY" and rec["reveals"] == 2
    assert len(rec["commitments"]) == 3


def test_query_bad_paths(node: Node) -> None:
    for path, code in [("nope", Code.QUERY_BAD_PATH), ("tasks/abc", Code.QUERY_BAD_PATH),
                       ("accounts/zz", Code.QUERY_BAD_PATH), ("tasks/99", Code.QUERY_NOT_FOUND),
                       ("rounds/5", Code.QUERY_NOT_FOUND)]:
        r = node.app.query(abci.RequestQuery(path=path))
        assert r.code == code, path
    assert node.query("round") == {"round": 0, "phase": "IDLE", "last_block_time_ns": 0}
    assert node.query("params")["train_seconds"] == 100


def test_invalid_settle_out_of_phase_rejects_proposal(node: Node) -> None:
    from .helpers import extended_commit
    from .rounds_fixture import honest_verdicts

    rd = submit_and_start(node)
    train_and_commit(rd)
    reveal(rd)  # REVEAL: validators have nothing to settle yet
    ec = extended_commit([(k, POWER) for k in VALS], [honest_verdicts(rd, i) for i in range(4)],
                         node.height)
    tx = txs.build_settle_tx(rd.round_no, ec)
    assert node.process([tx], node.time_ns + NS) == REJECT
    r = node.finalize([tx])
    assert r.tx_results[0].code == Code.WRONG_PHASE
    assert node.query("round")["status"] == "active"
    assert node.prepare([], node.time_ns + NS, local_last_commit=ec) == []


def test_invalid_settle_with_extensions_from_before_verify(node: Node) -> None:
    from .helpers import extended_commit
    from .rounds_fixture import honest_verdicts

    rd = submit_and_start(node)
    train_and_commit(rd)
    reveal(rd)
    # this block moves the round to VERIFY, but its extensions were signed during REVEAL
    ec = extended_commit([(k, POWER) for k in VALS], [honest_verdicts(rd, i) for i in range(4)],
                         node.height)
    tx = txs.build_settle_tx(rd.round_no, ec)
    t = rd.record["reveal_end_ns"]
    assert node.process([tx], t) == REJECT
    assert node.prepare([], t, local_last_commit=ec) == []
    r = node.finalize([tx], t)
    assert r.tx_results[0].code == Code.WRONG_PHASE and "predate VERIFY" in r.tx_results[0].log
    rec = node.query("round")
    assert rec["phase"] == "VERIFY" and rec["verify_height"] == node.height


def test_tx_events_carry_indexable_round_attributes(node: Node) -> None:
    rd = submit_and_start(node)
    tx = HONEST.tx(txs.commit_model(rd.round_no, b"\x07" * 32))
    r = node.finalize([tx])
    ev = r.tx_results[0].events[0]
    attrs = {a.key: a.value for a in ev.attributes}
    assert ev.type == "dlbc"
    # lookup keys are indexed (tx_search finds them); the fee, a value, is not
    assert {a.key for a in ev.attributes if a.index} == {"action", "sender", "miner", "round",
                                                         "task_id", "phase"}
    assert attrs == {"action": "commit_model", "sender": HONEST.address.hex(),
                     "miner": HONEST.address.hex(), "round": str(rd.round_no),
                     "task_id": str(rd.task_id), "phase": "TRAIN", "fee": str(node.fee(tx))}
    r = node.finalize([], rd.record["train_end_ns"])  # TRAIN ends without the key
    block_events = [{a.key: a.value for a in e.attributes} for e in r.events]
    assert {"round": str(rd.round_no), "phase": "DONE", "task_id": str(rd.task_id),
            "outcome": "key_withheld", "amount": "4000"} in block_events  # 5,000 - floor
    assert any(e.get("action") == "start" and e["round"] == str(rd.round_no + 1)
               for e in block_events)
