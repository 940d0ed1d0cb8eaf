"""Pipelined rounds (issue 14, docs/rounds.md "Pipelined rounds") on a real app, block by block.

With `rounds_in_flight=2` round n+1's TRAIN starts exactly when round n's TRAIN ends, and round n
reveals, verifies and settles meanwhile. Every rule of a sequential round still holds per round:
these tests send each message to the round it is not for (or too early, or twice) and check the
exact refusal, then that the same message is accepted where it belongs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app.dlbc import state, txs
from abci_app.dlbc.codes import Code
from abci_app.dlbc.params import Params
from abci_app.pb.tendermint.abci import types_pb2 as abci

from .helpers import (
    CHAIN_ID,
    NS,
    TEST_PARAMS,
    Key,
    Node,
    app_state,
    extended_commit,
    spec_for,
    verdict_set,
)
from .rounds_fixture import HONEST, OVERCLAIM, POWER, PUB1, PUB2, VALS, digest

ACCEPT = abci.ResponseProcessProposal.ACCEPT
REJECT = abci.ResponseProcessProposal.REJECT
PUB3 = Key("publisher3")
ANNOUNCE_S = 30
TRAIN_NS = TEST_PARAMS["train_seconds"] * NS
KEYS = {PUB1.name: (b"A" * 32, b"a" * 32), PUB2.name: (b"B" * 32, b"b" * 32),
        PUB3.name: (b"C" * 32, b"c" * 32)}
REWARD = 5_000
BALANCES = {PUB1.address: 100_000, PUB2.address: 100_000, PUB3.address: 100_000,
            HONEST.address: 1_000_000, OVERCLAIM.address: 1_000_000}


def _reset() -> None:
    for k in (PUB1, PUB2, PUB3, HONEST, OVERCLAIM):
        k.nonce = 0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    _reset()
    n = Node(tmp_path, [(k, POWER) for k in VALS],
             app_state(BALANCES, rounds_in_flight=2, announce_seconds=ANNOUNCE_S))
    yield n
    n.close()


def codes(r: abci.ResponseFinalizeBlock) -> list[int]:
    return [x.code for x in r.tx_results]


def active(node: Node) -> list[tuple[int, str]]:
    return [(r["round"], r["phase"]) for r in node.query("rounds/active")["rounds"]]


def submit(node: Node, *pubs: Key) -> None:
    """One task per publisher, its model size making the ranking order PUB1, PUB2, PUB3."""
    r = node.finalize([
        HONEST.tx(txs.register_miner(1_000_000, 10**9)),
        OVERCLAIM.tx(txs.register_miner(2_000_000, 2 * 10**9)),
        *[p.tx(txs.submit_task(spec_for(p.name, train_key=KEYS[p.name][0],
                                        test_key=KEYS[p.name][1], model_size=10_000 * (i + 1)),
                               REWARD)) for i, p in enumerate(pubs)],
    ])
    assert codes(r) == [0] * (2 + len(pubs)), [x.log for x in r.tx_results]


def commit(miner: Key, n: int, name: str) -> bytes:
    return miner.tx(txs.commit_model(n, txs.model_commitment(digest(name), miner.address,
                                                             b"salt-" + name.encode())))


def reveal(miner: Key, n: int, name: str, score: int) -> bytes:
    return miner.tx(txs.reveal_model(n, f"file:///m/{name}.safetensors", digest(name),
                                     b"salt-" + name.encode(), score))


def refused(node: Node, tx: bytes, code: Code, sender: Key | None = None, *,
            fatal: bool = True) -> None:
    """CheckTx and the block both refuse `tx` with `code`, and the tx changes nothing (the
    sender's nonce is given back). `fatal`: an out-of-phase commit or reveal also makes
    ProcessProposal REJECT the block holding it (process.is_proposal_fatal); a key tx out of
    phase only fails in the block. A Settle is never accepted by CheckTx at all."""
    settle = sender is None
    check = node.check(tx)
    assert check.code == (Code.SETTLE_NOT_ALLOWED if settle else code), check.log
    assert node.process([tx], node.time_ns + NS) == (REJECT if fatal else ACCEPT)
    r = node.finalize([tx])
    assert codes(r) == [code], r.tx_results[0].log
    if sender is not None:
        sender.nonce -= 1


def round_rec(node: Node, n: int) -> dict:
    return node.query(f"rounds/{n}")


def to_two_in_flight(node: Node) -> tuple[dict, dict]:
    """Round 1 trains with two commitments, round 2 is announced, then both move on: round 1
    in REVEAL and round 2 in TRAIN, in the same block."""
    submit(node, PUB1, PUB2, PUB3)
    node.finalize([])
    r1 = round_rec(node, 1)
    assert active(node) == [(1, "TRAIN")] and r1["task_id"] == 1
    assert codes(node.finalize([PUB1.tx(txs.release_train_key(1, KEYS[PUB1.name][0])),
                                commit(HONEST, 1, "h1"), commit(OVERCLAIM, 1, "o1")])) == [0] * 3
    node.finalize([], r1["train_end_ns"] - ANNOUNCE_S * NS)
    r2 = round_rec(node, 2)
    assert active(node) == [(1, "TRAIN"), (2, "ANNOUNCED")]
    assert r2["start_ns"] == r1["train_end_ns"] and r2["train_end_ns"] == r1["train_end_ns"] + TRAIN_NS
    node.finalize([], r1["train_end_ns"])
    assert active(node) == [(1, "REVEAL"), (2, "TRAIN")]
    return r1, round_rec(node, 2)


def test_next_round_is_announced_then_trains_when_the_last_train_ends(node: Node) -> None:
    submit(node, PUB1, PUB2)
    node.finalize([])
    r1 = round_rec(node, 1)
    node.finalize([PUB1.tx(txs.release_train_key(1, KEYS[PUB1.name][0]))])
    # not before announce_seconds ahead of the end of round 1's TRAIN
    node.finalize([], r1["train_end_ns"] - ANNOUNCE_S * NS - 1)
    assert active(node) == [(1, "TRAIN")]
    r = node.finalize([], r1["train_end_ns"] - ANNOUNCE_S * NS)
    r2 = round_rec(node, 2)
    assert (r2["phase"], r2["task_id"], r2["start_height"]) == ("ANNOUNCED", 2, node.height)
    assert r2["reveal_end_ns"] == r2["train_end_ns"] + TEST_PARAMS["reveal_seconds"] * NS
    assert r2["seed"] == node.block_hash(node.height).hex()
    # the announced task is fixed: out of the pool, selected, its spec readable for prefetching
    task = node.query("tasks/2")
    assert task["status"] == "selected" and task["rounds"] == [2] and task["train_key"] is None
    assert node.query("tasks/pending")["queue_len"] == 0
    assert node.query("round")["round"] == 2  # `round` answers the newest
    ev = [e for e in r.events if e.type == "dlbc.round"]
    assert {a.key: a.value for a in ev[0].attributes}["action"] == "announce"
    node.finalize([], r1["train_end_ns"])
    assert active(node) == [(1, "REVEAL"), (2, "TRAIN")]


def test_invalid_release_train_key_while_announced(node: Node) -> None:
    submit(node, PUB1, PUB2)
    node.finalize([])
    r1 = round_rec(node, 1)
    node.finalize([], r1["train_end_ns"] - ANNOUNCE_S * NS)
    tx = PUB2.tx(txs.release_train_key(2, KEYS[PUB2.name][0]))
    refused(node, tx, Code.WRONG_PHASE, PUB2, fatal=False)
    assert round_rec(node, 2)["key_released"] is False
    node.finalize([], r1["train_end_ns"])
    assert codes(node.finalize([PUB2.tx(txs.release_train_key(2, KEYS[PUB2.name][0]))])) == [0]
    assert round_rec(node, 2)["key_released"] is True


def test_invalid_commit_for_announced_round(node: Node) -> None:
    submit(node, PUB1, PUB2)
    node.finalize([])
    r1 = round_rec(node, 1)
    node.finalize([], r1["train_end_ns"] - ANNOUNCE_S * NS)
    refused(node, commit(HONEST, 2, "h2"), Code.WRONG_PHASE, HONEST)
    # a commit for the round that trains is still fine
    assert codes(node.finalize([commit(HONEST, 1, "h1")])) == [0]


def test_invalid_commit_for_round_n_during_round_n1_train(node: Node) -> None:
    to_two_in_flight(node)
    refused(node, commit(HONEST, 1, "late"), Code.WRONG_PHASE, HONEST)
    assert codes(node.finalize([commit(HONEST, 2, "h2")])) == [0]
    refused(node, commit(HONEST, 2, "again"), Code.DUPLICATE_COMMIT, HONEST, fatal=False)


def test_invalid_reveal_for_the_training_round(node: Node) -> None:
    to_two_in_flight(node)
    assert codes(node.finalize([PUB2.tx(txs.release_train_key(2, KEYS[PUB2.name][0])),
                                commit(HONEST, 2, "h2")])) == [0, 0]
    refused(node, reveal(HONEST, 2, "h2", 900_000), Code.WRONG_PHASE, HONEST)
    refused(node, PUB2.tx(txs.reveal_test_set(2, KEYS[PUB2.name][1])), Code.WRONG_PHASE, PUB2,
            fatal=False)
    # round 1's reveals and test key land while round 2 trains
    assert codes(node.finalize([PUB1.tx(txs.reveal_test_set(1, KEYS[PUB1.name][1])),
                                reveal(HONEST, 1, "h1", 900_000)])) == [0, 0]
    assert round_rec(node, 1)["reveals"] == 1 and round_rec(node, 2)["reveals"] == 0


def test_invalid_message_for_closed_or_future_round(node: Node) -> None:
    to_two_in_flight(node)
    refused(node, commit(HONEST, 3, "h3"), Code.WRONG_ROUND, HONEST)
    refused(node, reveal(HONEST, 0, "h1", 1), Code.WRONG_ROUND, HONEST)


def settle_round(node: Node, n: int, verdicts: list[tuple[bytes, bytes, bool, int]]) -> bytes:
    exts = [verdict_set(n, verdicts) for _ in VALS]
    return txs.build_settle_tx(n, extended_commit([(k, POWER) for k in VALS], exts, node.height))


def test_round_n_settles_while_round_n1_trains(node: Node) -> None:
    r1, r2 = to_two_in_flight(node)
    assert codes(node.finalize([PUB2.tx(txs.release_train_key(2, KEYS[PUB2.name][0])),
                                PUB1.tx(txs.reveal_test_set(1, KEYS[PUB1.name][1])),
                                reveal(HONEST, 1, "h1", 900_000),
                                reveal(OVERCLAIM, 1, "o1", 990_000),
                                commit(HONEST, 2, "h2")])) == [0] * 5
    # deposits of round 1 are locked per round; the account query sums the active rounds
    deposit = node.query("params")["reveal_deposit"]
    assert node.query(f"accounts/{HONEST.address.hex()}")["deposit"] == deposit
    node.finalize([], r1["reveal_end_ns"])
    assert active(node) == [(1, "VERIFY"), (2, "TRAIN")]
    verdicts = [(HONEST.address, digest("h1"), True, 900_000),
                (OVERCLAIM.address, digest("o1"), True, 700_000)]
    # a Settle for round 2 (in TRAIN) is refused; the proposer builds round 1's
    refused(node, settle_round(node, 2, verdicts), Code.WRONG_PHASE)
    ec = extended_commit([(k, POWER) for k in VALS], [verdict_set(1, verdicts)] * 4, node.height)
    built = node.prepare([], node.time_ns + NS, local_last_commit=ec)
    assert len(built) == 1 and node.process(built, node.time_ns + NS) == ACCEPT
    before = node.balance(HONEST)
    assert codes(node.finalize(built)) == [0]
    done = round_rec(node, 1)
    assert done["outcome"] == "settled" and done["winner"]["miner"] == HONEST.address.hex()
    assert node.balance(HONEST) == before + REWARD + done["winner"]["block_reward_miner"] + deposit
    assert active(node) == [(2, "TRAIN")]
    # one Settle per round: round 1 is closed now
    refused(node, settle_round(node, 1, verdicts), Code.WRONG_ROUND)
    assert round_rec(node, 2)["train_end_ns"] == r2["train_end_ns"]


def test_unsettled_round_requeues_its_task_for_a_later_round(node: Node) -> None:
    r1, r2 = to_two_in_flight(node)
    node.finalize([PUB2.tx(txs.release_train_key(2, KEYS[PUB2.name][0]))])
    node.finalize([PUB1.tx(txs.reveal_test_set(1, KEYS[PUB1.name][1])),
                   reveal(HONEST, 1, "h1", 900_000)])
    # nobody settles round 1: at its VERIFY end it closes unsettled, task 1 back in the pool
    node.finalize([], r1["verify_end_ns"])
    assert round_rec(node, 1)["outcome"] == "unsettled"
    assert node.query("tasks/1")["status"] == "pending"
    pending = {t["id"] for t in node.query("tasks/pending")["tasks"]}
    assert pending == {1, 3}
    assert active(node) == [(2, "TRAIN")]
    # the requeued task competes for round 3 (task 1 ranks before task 3), announced ahead
    node.finalize([], r2["train_end_ns"] - ANNOUNCE_S * NS)
    r3 = round_rec(node, 3)
    assert (r3["phase"], r3["task_id"]) == ("ANNOUNCED", 1)
    assert node.query("tasks/1")["rounds"] == [1, 3]


def test_key_withheld_in_round_n1_while_round_n_verifies(node: Node) -> None:
    r1, r2 = to_two_in_flight(node)
    node.finalize([PUB1.tx(txs.reveal_test_set(1, KEYS[PUB1.name][1])),
                   reveal(HONEST, 1, "h1", 900_000)])
    node.finalize([], r1["reveal_end_ns"])
    pub2 = node.balance(PUB2)
    # PUB2 never releases round 2's key: at its TRAIN end it is refunded less the withhold fee,
    # after round 1 closed (its VERIFY ended first); round 3 trains from that same instant
    node.finalize([], r2["train_end_ns"])
    assert round_rec(node, 1)["outcome"] == "unsettled"
    assert round_rec(node, 2)["outcome"] == "key_withheld"
    fee = max(TEST_PARAMS["withhold_fee_ppm"] * REWARD // 1_000_000, Params().withhold_fee_min)
    assert node.balance(PUB2) == pub2 + REWARD - min(fee, REWARD)
    r3 = round_rec(node, 3)
    assert r3["phase"] == "TRAIN" and r3["start_ns"] == r2["train_end_ns"]


def test_long_halt_is_worked_off_in_one_block_in_round_order(node: Node) -> None:
    _r1, r2 = to_two_in_flight(node)
    node.finalize([PUB2.tx(txs.release_train_key(2, KEYS[PUB2.name][0]))])
    # the chain halts for longer than both rounds: one block closes them, oldest first, and
    # starts the next round at once
    r = node.finalize([], r2["verify_end_ns"] + 1000 * NS)
    closes = [{a.key: a.value for a in e.attributes} for e in r.events if e.type == "dlbc.round"]
    done = [(int(c["round"]), c["outcome"]) for c in closes if c.get("outcome")]
    assert done == [(1, "test_key_withheld"), (2, "test_key_withheld")]
    assert active(node) == [(3, "TRAIN")] and round_rec(node, 3)["start_ns"] == node.time_ns


def test_sequential_params_keep_one_round_at_a_time(tmp_path: Path) -> None:
    _reset()
    n = Node(tmp_path, [(k, POWER) for k in VALS], app_state(BALANCES))
    try:
        submit(n, PUB1, PUB2)
        n.finalize([])
        r1 = round_rec(n, 1)
        n.finalize([PUB1.tx(txs.release_train_key(1, KEYS[PUB1.name][0]))])
        n.finalize([], r1["train_end_ns"])
        assert active(n) == [(1, "REVEAL")]
        n.finalize([PUB1.tx(txs.reveal_test_set(1, KEYS[PUB1.name][1]))])
        assert "rounds_in_flight" not in n.query("params")  # stored form of a default
        n.finalize([], r1["reveal_end_ns"])
        assert active(n) == [(2, "TRAIN")] and round_rec(n, 1)["outcome"] == "no_reveal"
    finally:
        n.close()


@pytest.mark.parametrize("params,needle", [
    ({"rounds_in_flight": 3}, "rounds_in_flight must be 1"),
    ({"rounds_in_flight": 0}, "rounds_in_flight must be 1"),
    ({"rounds_in_flight": 2, "train_seconds": 40}, "reveal_seconds \\+ verify_seconds"),
])
def test_invalid_pipeline_params(params: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Params.from_json({**TEST_PARAMS, **params})


def test_random_schedule_keeps_the_pipeline_invariants(node: Node) -> None:
    """Random block times, keys released or not, reveals or not, settles or not: at every
    committed height at most one round trains, at most one is announced, at most one is past
    TRAIN, rounds close in order, and supply is conserved."""
    rng = random.Random(14)
    pubs = [PUB1, PUB2, PUB3]
    submit(node, *pubs)
    supply = node.query("supply")["supply"]
    closed_order: list[int] = []
    for _ in range(160):
        recs = node.query("rounds/active")["rounds"]
        block: list[bytes] = []
        for rec in recs:
            n, pub = rec["round"], next(p for p in pubs if p.address.hex() == rec["publisher"])
            if rec["phase"] == "TRAIN" and not rec["key_released"] and rng.random() < 0.7:
                block.append(pub.tx(txs.release_train_key(rec["task_id"], KEYS[pub.name][0])))
            if rec["phase"] == "TRAIN" and rng.random() < 0.5 and not any(
                    c["miner"] == HONEST.address.hex() for c in rec["commitments"]):
                block.append(commit(HONEST, n, f"r{n}"))
            if rec["phase"] == "REVEAL" and not rec["test_key_revealed"] and rng.random() < 0.8:
                block.append(pub.tx(txs.reveal_test_set(rec["task_id"], KEYS[pub.name][1])))
            if (rec["phase"] == "REVEAL" and not rec["revealed"] and any(
                    c["miner"] == HONEST.address.hex() for c in rec["commitments"])):
                block.append(reveal(HONEST, n, f"r{n}", 800_000))
        r = node.finalize(block, node.time_ns + rng.choice([1, 5, 20, 45]) * NS)
        by_address = {k.address: k for k in (*pubs, HONEST)}
        for tx, res in zip(block, r.tx_results, strict=True):
            if res.code != 0:  # a tx that raced the schedule changed nothing: reuse its nonce
                by_address[txs.decode_tx(tx, CHAIN_ID, 1 << 20).sender].nonce -= 1
        for e in r.events:
            attrs = {a.key: a.value for a in e.attributes}
            if e.type == "dlbc.round" and attrs.get("outcome"):
                closed_order.append(int(attrs["round"]))
        phases = [p for _, p in active(node)]
        assert phases.count("TRAIN") <= 1 and phases.count("ANNOUNCED") <= 1
        assert sum(p in ("REVEAL", "VERIFY") for p in phases) <= 1
        assert len(phases) <= state.MAX_ACTIVE_ROUNDS
        assert node.total_held() == node.query("supply")["supply"] == supply
        if node.query("tasks/pending")["queue_len"] == 0 and rng.random() < 0.3:
            pub = rng.choice(pubs)
            res = node.finalize([pub.tx(txs.submit_task(spec_for(
                pub.name + str(node.height), train_key=KEYS[pub.name][0],
                test_key=KEYS[pub.name][1]), REWARD))])
            if res.tx_results[0].code != 0:
                pub.nonce -= 1
            supply = node.query("supply")["supply"]
    assert closed_order == sorted(closed_order) and len(closed_order) >= 4

