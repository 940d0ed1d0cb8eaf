"""Every scarce resource costs something (abci_app/dlbc/economics.py, docs/economics.md).

Tx fees to the fee pool and from it to the validators by power; miner bonds, unbonding after
the delay, only bonded miners in Eq. 2-3; reveal deposits returned or forfeited; the publisher
who withholds the test set after reveals pays the revealers; the withhold fee rounds up with a
floor; a minimum reward and a per-publisher cap; equal ranking scores break by the higher
reward. Real app, real LMDB, real signatures; supply is checked after every step that moves
money.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from abci_app.dlbc import economics, state, txs
from abci_app.dlbc.codes import Code
from abci_app.dlbc.params import Params
from abci_app.dlbc.ranking import RankingContext, ln_fp, select_task
from abci_app.dlbc.records import RoundNo
from abci_app.dlbc.rounds import compute_ranking_context
from abci_app.pb.dlbc.v1 import tx_pb2
from abci_app.pb.tendermint.abci import types_pb2 as abci
from tests.support import REPO

from .helpers import NS, Key, Node, app_state, spec_for
from .rounds_fixture import (
    BALANCES,
    COPIER,
    HONEST,
    KEYS,
    OVERCLAIM,
    POWER,
    PUB1,
    REWARDS,
    VALS,
    Round,
    digest,
    submit_and_start,
    to_verify,
    train_and_commit,
)

ACCEPT = abci.ResponseProcessProposal.ACCEPT
D = Params()  # the defaults under test (the test chain only lowers min_task_reward)
ALICE, BOB, CAROL = Key("econ-alice"), Key("econ-bob"), Key("econ-carol")
TRAIN_KEY, TEST_KEY = b"K" * 32, b"T" * 32
START = 1_000_000


def reset(*keys: Key) -> None:
    for k in keys:
        k.nonce = 0


def codes(resp: abci.ResponseFinalizeBlock) -> list[int]:
    return [r.code for r in resp.tx_results]


def conserved(node: Node) -> None:
    sup = node.query("supply")
    assert sup["supply"] == node.total_held()
    assert sup["bonded"] == state.get_bonded_total(node.app.store)
    assert sup["deposits"] == state.get_deposits_total(node.app.store)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    reset(ALICE, BOB, CAROL)
    n = Node(tmp_path, [(k, POWER) for k in VALS],
             app_state({ALICE.address: START, CAROL.address: START}, unbonding_seconds=1_000))
    yield n
    n.close()


@pytest.fixture
def round_node(tmp_path: Path) -> Node:
    n = Node(tmp_path, [(k, POWER) for k in VALS], app_state(BALANCES))
    yield n
    n.close()


def spec(name: str = "t", **kw: int) -> tx_pb2.TaskSpec:
    return spec_for(name, train_key=TRAIN_KEY, test_key=TEST_KEY, **kw)


# -- tx fees ------------------------------------------------------------------------------------
def test_fee_is_base_plus_per_byte_and_goes_to_the_fee_pool(node: Node) -> None:
    tx = ALICE.tx(txs.transfer(BOB.address, 1_000))
    assert economics.tx_fee(D, len(tx)) == D.tx_base_fee + D.tx_fee_per_byte * len(tx)
    assert node.fee(tx) == 100 + len(tx)
    r = node.finalize([tx])
    assert codes(r) == [0]
    fee = node.fee(tx)
    assert node.balance(ALICE) == START - 1_000 - fee and node.balance(BOB) == 1_000
    assert node.query("supply")["fee_pool"] == fee  # paid out at the start of the next block
    attrs = [{a.key: a.value for a in e.attributes} for e in r.tx_results[0].events]
    assert attrs == [{"action": "transfer", "sender": ALICE.address.hex(),
                      "to": BOB.address.hex(), "amount": "1000", "fee": str(fee)}]
    conserved(node)


def test_invalid_transfer_cannot_pay_fee(node: Node) -> None:
    """BOB has 0: no tx of his can pay its fee; CheckTx and the block refuse, nothing moves."""
    tx = BOB.tx(txs.transfer(ALICE.address, 1))
    check = node.check(tx)
    assert check.code == Code.INSUFFICIENT_FEE and f"fee of this {len(tx)}-byte tx" in check.log
    r = node.finalize([tx])
    assert codes(r) == [Code.INSUFFICIENT_FEE] and "has 0" in r.tx_results[0].log
    acct = node.query(f"accounts/{BOB.address.hex()}")
    assert acct["balance"] == 0 and acct["nonce"] == 0
    assert node.query("supply")["fee_pool"] == 0
    # one unit short of the fee is still refused
    fund = ALICE.tx(txs.transfer(BOB.address, node.fee(tx) - 1))
    assert codes(node.finalize([fund])) == [0]
    assert codes(node.finalize([tx])) == [Code.INSUFFICIENT_FEE]
    assert node.balance(BOB) == node.fee(tx) - 1
    conserved(node)


def test_invalid_transfer_of_whole_balance_leaves_no_room_for_fee(node: Node) -> None:
    tx = CAROL.tx(txs.transfer(BOB.address, START))
    r = node.finalize([tx])
    assert codes(r) == [Code.INSUFFICIENT_FUNDS]
    assert f"has {START - node.fee(tx)}, needs {START}" in r.tx_results[0].log
    assert node.balance(CAROL) == START and node.balance(BOB) == 0
    CAROL.nonce = 0
    ok = CAROL.tx(txs.transfer(BOB.address, START - node.fee(tx)))  # same size, same fee
    assert len(ok) == len(tx) and codes(node.finalize([ok])) == [0]
    assert node.balance(CAROL) == 0 and node.balance(BOB) == START - node.fee(tx)
    conserved(node)


def test_invalid_failed_tx_pays_no_fee(node: Node) -> None:
    """A tx whose message fails changes nothing: no fee, no nonce (the design's rule)."""
    r = node.finalize([ALICE.tx(txs.transfer(BOB.address, 0))])
    assert codes(r) == [Code.BAD_AMOUNT]
    assert node.balance(ALICE) == START and node.query("supply")["fee_pool"] == 0
    assert node.query(f"accounts/{ALICE.address.hex()}")["nonce"] == 0


def test_invalid_check_tx_fee_on_the_mempool_view(node: Node) -> None:
    """CheckTx charges on the mempool view: the second tx cannot pay once the first is in."""
    first = CAROL.tx(txs.transfer(BOB.address, START - 300))
    second = CAROL.tx(txs.transfer(BOB.address, 1))
    assert node.fee(first) <= 300 < node.fee(first) + node.fee(second)
    assert node.check(first).code == 0
    assert node.check(second).code == Code.INSUFFICIENT_FEE
    assert node.prepare([first, second], node.time_ns + NS) == [first]
    r = node.finalize([first, second])
    assert codes(r) == [0, Code.INSUFFICIENT_FEE]
    conserved(node)


def test_fee_pool_pays_validators_by_power_remainder_stays(tmp_path: Path) -> None:
    v1, v2, v3 = Key("econ-v1"), Key("econ-v2"), Key("econ-v3")
    reset(ALICE)
    n = Node(tmp_path, [(v1, 1), (v2, 2), (v3, 4)], app_state({ALICE.address: START}))
    try:
        tx = ALICE.tx(txs.transfer(BOB.address, 5))
        n.finalize([tx])
        fee = n.fee(tx)
        assert n.query("supply")["fee_pool"] == fee
        r = n.finalize([])  # the next block pays the pool out first
        shares = {k.address: fee * p // 7 for k, p in ((v1, 1), (v2, 2), (v3, 4))}
        for k in (v1, v2, v3):
            assert n.balance(k) == shares[k.address]
        assert n.query("supply")["fee_pool"] == fee - sum(shares.values()) < 7
        payouts = [{a.key: a.value for a in e.attributes} for e in r.events
                   if any(a.key == "action" and a.value == "fee_payout" for a in e.attributes)]
        assert [p["validator"] for p in payouts] == sorted(a.hex() for a in shares)
        assert [int(p["amount"]) for p in payouts] == [shares[bytes.fromhex(p["validator"])]
                                                       for p in payouts]
        # the remainder is not lost: it joins the next block's fees
        tx2 = ALICE.tx(txs.transfer(BOB.address, 5))
        n.finalize([tx2])
        assert n.query("supply")["fee_pool"] == fee - sum(shares.values()) + n.fee(tx2)
        n.finalize([])
        paid = sum(n.balance(k) for k in (v1, v2, v3))
        assert paid + n.query("supply")["fee_pool"] == fee + n.fee(tx2)
        assert n.query("supply")["fee_pool"] < 7
        assert n.query("supply")["supply"] == n.total_held() == START
    finally:
        n.close()


# -- miner bonds --------------------------------------------------------------------------------
def test_register_bonds_once_and_reregister_updates_resources(node: Node) -> None:
    t1 = ALICE.tx(txs.register_miner(1_000, 2_000))
    assert codes(node.finalize([t1])) == [0]
    acct = node.query(f"accounts/{ALICE.address.hex()}")
    assert acct["bonded"] == D.miner_bond and acct["miner"] == {"bandwidth_bps": 1_000,
                                                                 "flops": 2_000}
    assert acct["balance"] == START - node.fee(t1) - D.miner_bond
    t2 = ALICE.tx(txs.register_miner(5_000, 6_000))
    assert codes(node.finalize([t2])) == [0]
    acct = node.query(f"accounts/{ALICE.address.hex()}")
    assert acct["bonded"] == D.miner_bond and acct["miner"]["bandwidth_bps"] == 5_000
    assert acct["balance"] == START - node.fee(t1) - node.fee(t2) - D.miner_bond
    assert node.query("miners")["miners"] == [{"address": ALICE.address.hex(),
                                                "bandwidth_bps": 5_000, "flops": 6_000,
                                                "bonded": D.miner_bond}]
    assert node.query("supply")["bonded"] == D.miner_bond
    conserved(node)


def test_invalid_register_miner_without_the_bond(node: Node) -> None:
    tx = BOB.tx(txs.register_miner(1_000, 2_000))
    assert codes(node.finalize([ALICE.tx(txs.transfer(BOB.address, D.miner_bond))])) == [0]
    r = node.finalize([tx])  # the fee leaves less than the bond
    assert codes(r) == [Code.INSUFFICIENT_FUNDS] and "miner_bond" in r.tx_results[0].log
    acct = node.query(f"accounts/{BOB.address.hex()}")
    assert acct["miner"] is None and acct["bonded"] == 0 and acct["balance"] == D.miner_bond
    assert node.query("miners")["miners"] == []
    conserved(node)


def test_invalid_commit_by_unbonded_miner(node: Node) -> None:
    node.finalize([ALICE.tx(txs.submit_task(spec(), 100)),
                   CAROL.tx(txs.register_miner(1_000, 2_000))])
    node.finalize([])  # round 1 starts
    r = node.finalize([CAROL.tx(txs.unbond_miner())])
    assert codes(r) == [0]
    commit = CAROL.tx(txs.commit_model(1, b"\x01" * 32))
    assert node.check(commit).code == Code.NOT_REGISTERED_MINER
    r = node.finalize([commit])
    assert codes(r) == [Code.NOT_REGISTERED_MINER] and "bonded" in r.tx_results[0].log
    never = ALICE.tx(txs.commit_model(1, b"\x02" * 32))  # never registered
    assert codes(node.finalize([never])) == [Code.NOT_REGISTERED_MINER]
    assert node.query("round")["commitments"] == []


def test_invalid_unbond_when_not_bonded(node: Node) -> None:
    r = node.finalize([ALICE.tx(txs.unbond_miner())])
    assert codes(r) == [Code.NOT_REGISTERED_MINER] and "not a bonded miner" in r.tx_results[0].log
    ALICE.nonce = 0  # a rejected tx consumes no nonce
    assert codes(node.finalize([ALICE.tx(txs.register_miner(1, 1))])) == [0]
    assert codes(node.finalize([ALICE.tx(txs.unbond_miner())])) == [0]
    r = node.finalize([ALICE.tx(txs.unbond_miner())])  # already unbonding
    assert codes(r) == [Code.NOT_REGISTERED_MINER]
    assert node.query(f"accounts/{ALICE.address.hex()}")["unbonding"]["amount"] == D.miner_bond


def test_unbonded_miner_leaves_the_medians_at_once(node: Node) -> None:
    node.finalize([ALICE.tx(txs.register_miner(1_000, 10)),
                   CAROL.tx(txs.register_miner(3_000, 30))])
    view = node.app.store.view()
    ctx = compute_ranking_context(view, D, 1)
    assert (ctx.median_bandwidth, ctx.median_compute) == (2_000, 20)
    node.finalize([CAROL.tx(txs.unbond_miner())])
    view = node.app.store.view()
    ctx = compute_ranking_context(view, D, 1)
    assert (ctx.median_bandwidth, ctx.median_compute) == (1_000, 10)
    assert [m["address"] for m in node.query("miners")["miners"]] == [ALICE.address.hex()]


def test_unbonding_credits_the_bond_after_the_delay(node: Node) -> None:
    """unbonding_seconds = 1,000 on this chain: nothing before, the whole bond at the time."""
    node.finalize([CAROL.tx(txs.register_miner(1_000, 2_000))])
    r = node.finalize([CAROL.tx(txs.unbond_miner())])
    t_unbond = node.time_ns
    release = t_unbond + 1_000 * NS
    ev = {a.key: a.value for a in r.tx_results[0].events[0].attributes}
    assert ev["action"] == "unbond_miner" and int(ev["release_ns"]) == release
    acct = node.query(f"accounts/{CAROL.address.hex()}")
    assert acct["miner"] is None and acct["bonded"] == 0
    assert acct["unbonding"] == {"amount": D.miner_bond, "release_ns": release}
    sup = node.query("supply")
    assert sup["bonded"] == 0 and sup["unbonding"] == D.miner_bond
    conserved(node)
    bal = node.balance(CAROL)
    node.finalize([], release - 1)
    assert node.balance(CAROL) == bal and node.query("supply")["unbonding"] == D.miner_bond
    r = node.finalize([], release)
    assert node.balance(CAROL) == bal + D.miner_bond
    acct = node.query(f"accounts/{CAROL.address.hex()}")
    assert acct["unbonding"] is None and node.query("supply")["unbonding"] == 0
    assert {"action": "unbonded", "miner": CAROL.address.hex(), "amount": str(D.miner_bond)} in [
        {a.key: a.value for a in e.attributes} for e in r.events]
    conserved(node)


def test_unbonding_twice_merges_into_the_later_release(node: Node) -> None:
    node.finalize([CAROL.tx(txs.register_miner(1, 1))])
    node.finalize([CAROL.tx(txs.unbond_miner())])
    first = node.time_ns + 1_000 * NS
    node.finalize([CAROL.tx(txs.register_miner(1, 1))], node.time_ns + 10 * NS)  # bonds again
    node.finalize([CAROL.tx(txs.unbond_miner())])
    second = node.time_ns + 1_000 * NS
    assert node.query(f"accounts/{CAROL.address.hex()}")["unbonding"] == {
        "amount": 2 * D.miner_bond, "release_ns": second}
    bal = node.balance(CAROL)
    node.finalize([], first)
    assert node.balance(CAROL) == bal
    node.finalize([], second)
    assert node.balance(CAROL) == bal + 2 * D.miner_bond
    conserved(node)


# -- reveal deposits ----------------------------------------------------------------------------
def reveal_models(rd: Round, with_test_key: bool) -> list[int]:
    """REVEAL: HONEST and OVERCLAIM reveal; the publisher reveals the test key or not."""
    node, n = rd.node, rd.round_no
    node.finalize([], rd.record["train_end_ns"])
    block = [
        HONEST.tx(txs.reveal_model(n, "file:///m/h.safetensors", digest("h"),
                                   rd.salts["honest"], 900_000)),
        OVERCLAIM.tx(txs.reveal_model(n, "file:///m/o.safetensors", digest("o"),
                                      rd.salts["overclaim"], 990_000)),
    ]
    if with_test_key:
        test_key = KEYS[rd.publisher.name][1]
        block.insert(0, rd.publisher.tx(txs.reveal_test_set(rd.task_id, test_key)))
    return codes(node.finalize(block))


def test_reveal_locks_the_deposit(round_node: Node) -> None:
    rd = submit_and_start(round_node)
    train_and_commit(rd)
    before = {k.name: round_node.balance(k) for k in (HONEST, OVERCLAIM)}
    round_node.finalize([], rd.record["train_end_ns"])
    tx = HONEST.tx(txs.reveal_model(rd.round_no, "file:///m/h.safetensors", digest("h"),
                                    rd.salts["honest"], 900_000))
    assert codes(round_node.finalize([tx])) == [0]
    assert round_node.balance(HONEST) == before["honest"] - round_node.fee(tx) - D.reveal_deposit
    acct = round_node.query(f"accounts/{HONEST.address.hex()}")
    assert acct["deposit"] == D.reveal_deposit
    assert round_node.query("supply")["deposits"] == D.reveal_deposit
    conserved(round_node)


def test_invalid_reveal_without_the_deposit(tmp_path: Path) -> None:
    """A miner that can pay the reveal's fee but not the deposit: refused, nothing changes."""
    balances = dict(BALANCES)
    balances[HONEST.address] = D.miner_bond + 2_000  # bond, register + commit fees, no deposit
    node = Node(tmp_path, [(k, POWER) for k in VALS], app_state(balances))
    try:
        rd = submit_and_start(node)
        train_and_commit(rd)
        node.finalize([], rd.record["train_end_ns"])
        bal = node.balance(HONEST)
        assert node.fee(HONEST.tx(txs.transfer(BOB.address, 1), nonce=0)) < bal \
            < D.reveal_deposit
        tx = HONEST.tx(txs.reveal_model(rd.round_no, "file:///m/h.safetensors", digest("h"),
                                        rd.salts["honest"], 900_000))
        assert node.check(tx).code == Code.INSUFFICIENT_FUNDS
        r = node.finalize([tx])
        assert codes(r) == [Code.INSUFFICIENT_FUNDS] and "reveal_deposit" in r.tx_results[0].log
        assert node.balance(HONEST) == bal and node.query("round")["revealed"] == []
        assert node.query("supply")["deposits"] == 0
        conserved(node)
    finally:
        node.close()


def test_refuted_reveal_forfeits_its_deposit(round_node: Node) -> None:
    """settle_reveal_deposits as settlement calls it: refuted → fee pool, the rest returned."""
    rd = submit_and_start(round_node)
    train_and_commit(rd)
    assert reveal_models(rd, with_test_key=True) == [0, 0, 0]
    before = {k.name: round_node.balance(k) for k in (HONEST, OVERCLAIM)}
    view = round_node.app.store.view()
    pool0 = state.get_fee_pool(view)
    events = economics.settle_reveal_deposits(view, rd.round_no, {OVERCLAIM.address})
    got = [{a: v for a, v in e.attributes} for e in events]
    assert got == sorted([
        {"action": "deposit_returned", "miner": HONEST.address.hex(), "round": "1",
         "amount": str(D.reveal_deposit)},
        {"action": "deposit_forfeited", "miner": OVERCLAIM.address.hex(), "round": "1",
         "amount": str(D.reveal_deposit)}], key=lambda e: e["miner"])
    assert state.get_account(view, HONEST.address)[0] == before["honest"] + D.reveal_deposit
    assert state.get_account(view, OVERCLAIM.address)[0] == before["overclaim"]
    assert state.get_fee_pool(view) == pool0 + D.reveal_deposit
    assert state.get_deposits_total(view) == 0
    # a second call pays nothing: the deposits are gone
    assert economics.settle_reveal_deposits(view, rd.round_no, set()) == []
    assert state.get_account(view, OVERCLAIM.address)[0] == before["overclaim"]


def test_unsettled_round_returns_every_deposit(round_node: Node) -> None:
    rd = submit_and_start(round_node)
    train_and_commit(rd)
    assert reveal_models(rd, with_test_key=True) == [0, 0, 0]
    to_verify(rd)
    before = {k.name: round_node.balance(k) for k in (HONEST, OVERCLAIM)}
    round_node.finalize([], rd.record["verify_end_ns"])  # nobody settled
    assert round_node.query(f"rounds/{rd.round_no}")["outcome"] == "unsettled"
    assert round_node.balance(HONEST) == before["honest"] + D.reveal_deposit
    assert round_node.balance(OVERCLAIM) == before["overclaim"] + D.reveal_deposit
    assert round_node.query("supply")["deposits"] == 0
    conserved(round_node)


# -- publisher faults -----------------------------------------------------------------------------
def test_publisher_withholding_the_test_key_after_reveals_pays_the_revealers(
        round_node: Node) -> None:
    rd = submit_and_start(round_node)
    train_and_commit(rd)
    assert reveal_models(rd, with_test_key=False) == [0, 0]
    before = {k.name: round_node.balance(k) for k in (HONEST, OVERCLAIM, COPIER, PUB1)}
    escrow = round_node.query("supply")["escrow"]
    r = round_node.finalize([], rd.record["reveal_end_ns"])
    rec = round_node.query(f"rounds/{rd.round_no}")
    assert rec["outcome"] == "test_key_withheld" and rec["status"] == "closed"
    reward = REWARDS[PUB1.name]
    share = reward // 2
    assert round_node.balance(HONEST) == before["honest"] + share + D.reveal_deposit
    assert round_node.balance(OVERCLAIM) == before["overclaim"] + share + D.reveal_deposit
    assert round_node.balance(COPIER) == before["copier"]  # committed, never revealed
    assert round_node.balance(PUB1) == before["publisher1"]  # no refund
    task = round_node.query(f"tasks/{rd.task_id}")
    assert task["status"] == "forfeited" and task["returned"] == 0
    assert task["forfeit"] == {"round": 1, "miners": sorted([HONEST.address.hex(),
                                                             OVERCLAIM.address.hex()]),
                               "share": share, "to_fee_pool": reward - 2 * share}
    assert rd.task_id not in [t["id"] for t in round_node.query("tasks/pending")["tasks"]]
    assert round_node.query("supply")["escrow"] == escrow - reward
    faults = [{a.key: a.value for a in e.attributes} for e in r.events]
    assert sum(1 for f in faults if f.get("action") == "publisher_fault") == 2
    # the next round is the other task's, not this one again
    assert round_node.query("round")["task_id"] != rd.task_id
    conserved(round_node)


def test_test_key_withheld_without_reveals_refunds_less_the_withhold_fee(
        round_node: Node) -> None:
    rd = submit_and_start(round_node)
    train_and_commit(rd)
    round_node.finalize([], rd.record["train_end_ns"])  # REVEAL; nobody reveals anything
    bal = round_node.balance(PUB1)
    round_node.finalize([], rd.record["reveal_end_ns"])
    rec = round_node.query(f"rounds/{rd.round_no}")
    assert rec["outcome"] == "test_key_withheld"
    fee = economics.withhold_fee(state.get_params(round_node.app.store), REWARDS[PUB1.name])
    assert fee == D.withhold_fee_min  # 10 % of 5,000 = 500 < the floor
    assert round_node.balance(PUB1) == bal + REWARDS[PUB1.name] - fee
    assert round_node.query(f"tasks/{rd.task_id}")["status"] == "refunded"
    conserved(round_node)


def test_pay_publisher_fault_splits_equally_remainder_to_fee_pool(round_node: Node) -> None:
    rd = submit_and_start(round_node)
    train_and_commit(rd)
    assert reveal_models(rd, with_test_key=True) == [0, 0, 0]
    view = round_node.app.store.view()
    task = state.get_task(view, rd.task_id)
    assert task is not None
    task = replace(task, reward=10_001)  # odd split: 5,000 each, 1 to the fee pool
    state.add_escrow(view, 10_001 - REWARDS[PUB1.name])
    before = {a: state.get_account(view, a)[0] for a in (HONEST.address, OVERCLAIM.address)}
    pool0, escrow0 = state.get_fee_pool(view), state.get_escrow(view)
    events = economics.pay_publisher_fault(view, task, rd.round_no)
    for a, bal in before.items():
        assert state.get_account(view, a)[0] == bal + 5_000 + D.reveal_deposit
    assert state.get_fee_pool(view) == pool0 + 1
    assert state.get_escrow(view) == escrow0 - 10_001
    forfeited = state.get_task(view, rd.task_id)
    assert forfeited is not None and forfeited.status == "forfeited"
    assert [dict(e.attributes)["action"] for e in events] == [
        "publisher_fault", "publisher_fault", "deposit_returned", "deposit_returned"]
    # never twice
    assert economics.pay_publisher_fault(view, forfeited, RoundNo(1)) == []
    assert state.get_escrow(view) == escrow0 - 10_001


# -- tasks: withhold fee, minimum reward, per-publisher cap, tie-break ----------------------------
@pytest.mark.parametrize("reward,fee", [
    (1, 1),                  # capped at the reward: never 0 (before: 1 * 5 % = 0)
    (999, 999),              # under the floor: the whole reward
    (10_000, 1_000),         # 5 % = 500 < floor
    (20_000, 1_000),         # 5 % = 1,000 exactly
    (20_001, 1_001),         # 1,000.05 rounds up
    (1_000_000, 50_000),
])
def test_withhold_fee_rounds_up_with_an_absolute_floor(reward: int, fee: int) -> None:
    assert economics.withhold_fee(D, reward) == fee


def test_withheld_key_of_a_reward_1_task_costs_it_all(tmp_path: Path) -> None:
    reset(ALICE)
    n = Node(tmp_path, [(k, POWER) for k in VALS],
             app_state({ALICE.address: START}, min_task_reward=1, withhold_fee_ppm=50_000))
    try:
        n.finalize([ALICE.tx(txs.submit_task(spec(), 1))])
        n.finalize([])
        rec = n.query("round")
        bal = n.balance(ALICE)
        n.finalize([], rec["train_end_ns"])
        assert n.query(f"rounds/{rec['round']}")["outcome"] == "key_withheld"
        assert n.balance(ALICE) == bal  # refund 1 - fee 1 = 0
        conserved(n)
    finally:
        n.close()


def test_invalid_submit_task_below_min_reward(tmp_path: Path) -> None:
    reset(ALICE)
    n = Node(tmp_path, [(k, POWER) for k in VALS],
             app_state({ALICE.address: START}, min_task_reward=D.min_task_reward))
    try:
        low = ALICE.tx(txs.submit_task(spec(), D.min_task_reward - 1))
        assert n.check(low).code == Code.REWARD_TOO_SMALL
        r = n.finalize([low])
        assert codes(r) == [Code.REWARD_TOO_SMALL] and "min_task_reward 10000" in \
            r.tx_results[0].log
        assert n.balance(ALICE) == START and n.query("supply")["escrow"] == 0
        ALICE.nonce = 0
        assert codes(n.finalize([ALICE.tx(txs.submit_task(spec(), D.min_task_reward))])) == [0]
    finally:
        n.close()


def test_invalid_submit_task_over_publisher_cap(tmp_path: Path) -> None:
    reset(ALICE, CAROL)
    n = Node(tmp_path, [(k, POWER) for k in VALS],
             app_state({ALICE.address: START, CAROL.address: START},
                       max_pending_per_publisher=2))
    try:
        a, b = (ALICE.tx(txs.submit_task(spec(x), 100)) for x in "ab")
        third = ALICE.tx(txs.submit_task(spec("c"), 100))
        assert [n.check(t).code for t in (a, b, third)] == [0, 0, Code.PUBLISHER_CAP]
        r = n.finalize([a, b, third, CAROL.tx(txs.submit_task(spec("d"), 100))])
        assert codes(r) == [0, 0, Code.PUBLISHER_CAP, 0]
        assert "max_pending_per_publisher=2" in r.tx_results[2].log
        assert n.query(f"accounts/{ALICE.address.hex()}")["pending_tasks"] == 2
        ALICE.nonce -= 1
        escrow = n.query("supply")["escrow"]
        assert escrow == 300
        # a round takes one of ALICE's tasks out of the pool: she has room for one again
        n.finalize([])
        rec = n.query("round")
        assert rec["publisher"] == ALICE.address.hex()
        assert n.query(f"accounts/{ALICE.address.hex()}")["pending_tasks"] == 1
        assert codes(n.finalize([ALICE.tx(txs.submit_task(spec("e"), 100))])) == [0]
        # a withheld key refunds the task; the returned-to-pool path counts it again
        conserved(n)
    finally:
        n.close()


def tiny_spec(name: str) -> tx_pb2.TaskSpec:
    s = spec_for(name, train_key=TRAIN_KEY, test_key=TEST_KEY, model_size=1, data_size=1,
                 flops=1)
    s.num_samples = 1
    return s


def test_select_task_ties_break_by_higher_reward_then_lower_id() -> None:
    big = (1 << 63) - 1
    ctx = RankingContext(1_000_000, 2, 2, big, big)
    lnf = ln_fp(1)
    entries = [(1, 2, lnf, 10), (2, 2, lnf, 1_000_000), (3, 2, lnf, 1_000_000)]
    assert [ctx.score_e18(s, f, r) for _, s, f, r in entries] == [0, 0, 0]
    assert select_task(ctx, entries) == (2, 0)
    assert select_task(ctx, [(1, 2, lnf, 7), (2, 2, lnf, 7)]) == (1, 0)
    # a genuinely smaller score still wins over a higher reward
    ctx2 = RankingContext(1_000_000, 2, 10, 1, 1)
    assert select_task(ctx2, [(1, 10, lnf, 100), (2, 10**6, lnf, 1_000)])[0] == 1


def test_cheap_task_no_longer_outranks_a_rich_one_by_being_first(tmp_path: Path) -> None:
    """Both tiny specs score 0 (huge declared miner resources, q = 1): the richer task wins."""
    reset(ALICE, CAROL)
    n = Node(tmp_path, [(k, POWER) for k in VALS],
             app_state({ALICE.address: START, CAROL.address: 10 * START}, max_queue_len=2))
    try:
        big = (1 << 63) - 1
        r = n.finalize([ALICE.tx(txs.register_miner(big, big)),
                        ALICE.tx(txs.submit_task(tiny_spec("cheap"), 10)),
                        CAROL.tx(txs.submit_task(tiny_spec("rich"), 1_000_000))])
        assert codes(r) == [0, 0, 0]
        pending = n.query("tasks/pending")["tasks"]
        assert [(t["id"], t["ranking_score_e18"]) for t in pending] == [(2, 0), (1, 0)]
        n.finalize([])
        assert n.query("round")["task_id"] == 2
    finally:
        n.close()


# -- params, queries, proposals -------------------------------------------------------------------
@pytest.mark.parametrize("change,needle", [
    ({"tx_base_fee": 0}, "tx_base_fee must be > 0"),
    ({"miner_bond": 0}, "miner_bond must be > 0"),
    ({"reveal_deposit": 0}, "reveal_deposit must be > 0"),
    ({"withhold_fee_min": 0}, "withhold_fee_min must be > 0"),
    ({"max_pending_per_publisher": 0}, "max_pending_per_publisher must be > 0"),
    ({"unbonding_seconds": 479}, "unbonding_seconds must be >= one round"),
    ({"unbonding_seconds": 10 * 365 * 86_400 + 1}, "unbonding_seconds must be <= 315360000"),
    ({"tx_fee_per_byte": 1 << 63}, r"tx_fee_per_byte must be <= 2\^63-1"),
])
def test_invalid_economics_params(change: dict[str, int], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Params.from_json(change)


def test_default_params_are_the_documented_ones() -> None:
    """docs/economics.md lists every fee, stake, deposit and cap with the default in force."""
    doc = (REPO / "docs" / "economics.md").read_text()
    for name in ("tx_base_fee", "tx_fee_per_byte", "miner_bond", "unbonding_seconds",
                 "reveal_deposit", "min_task_reward", "withhold_fee_ppm", "withhold_fee_min",
                 "max_pending_per_publisher", "max_pending_tasks", "max_reveals_per_round",
                 "max_tx_bytes"):
        assert f"| `{name}` | {getattr(D, name):,} |" in doc, name


def test_insufficient_fee_does_not_reject_a_proposal(node: Node) -> None:
    tx = BOB.tx(txs.transfer(ALICE.address, 1))
    assert node.process([tx], node.time_ns + NS) == ACCEPT
    assert node.prepare([tx], node.time_ns + NS) == []


def test_supply_conserved_across_a_full_economic_life(round_node: Node) -> None:
    """Fees, bonds, deposits, a publisher fault, the next round's key withheld, unbonding."""
    rd = submit_and_start(round_node)
    conserved(round_node)
    train_and_commit(rd)
    assert reveal_models(rd, with_test_key=False) == [0, 0]
    conserved(round_node)
    round_node.finalize([], rd.record["reveal_end_ns"])  # publisher fault
    conserved(round_node)
    nxt = round_node.query("round")
    round_node.finalize([HONEST.tx(txs.unbond_miner())])
    round_node.finalize([], nxt["train_end_ns"])  # key withheld: refund less the fee
    conserved(round_node)
    round_node.finalize([], round_node.time_ns + D.unbonding_seconds * NS)
    assert round_node.query(f"accounts/{HONEST.address.hex()}")["unbonding"] is None
    sup = round_node.query("supply")
    assert sup["bonded"] == 2 * D.miner_bond and sup["unbonding"] == 0
    assert sup["supply"] == sum(BALANCES.values()) == round_node.total_held()  # none minted
