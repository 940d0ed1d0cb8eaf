"""Tx validity and transitions (abci_app/dlbc/process.py) on a real app with real LMDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from abci_app.dlbc import txs
from abci_app.dlbc.codes import Code
from abci_app.dlbc.params import ARCHITECTURES
from abci_app.pb.dlbc.v1 import tx_pb2
from abci_app.pb.tendermint.abci import types_pb2 as abci

from .helpers import CHAIN_ID, NS, Key, Node, app_state, spec_for

VALS = [Key(f"val{i}") for i in range(4)]
ALICE, BOB, MINER = Key("alice"), Key("bob"), Key("miner")
TRAIN_KEY, TEST_KEY = b"K" * 32, b"T" * 32
MINER_START = 2_000  # pays a few tx fees, not much more; never registered


@pytest.fixture
def node(tmp_path: Path) -> Node:
    for k in (ALICE, BOB, MINER):
        k.nonce = 0
    n = Node(tmp_path, [(k, 10) for k in VALS],
             app_state({ALICE.address: 100_000, MINER.address: MINER_START}))
    yield n
    n.close()


def codes(resp: abci.ResponseFinalizeBlock) -> list[int]:
    return [r.code for r in resp.tx_results]


def test_process_transfer_moves_funds_and_bumps_nonce(node: Node) -> None:
    tx = ALICE.tx(txs.transfer(BOB.address, 700))
    r = node.finalize([tx])
    assert codes(r) == [0]
    assert node.balance(ALICE) == 99_300 - node.fee(tx) and node.balance(BOB) == 700
    assert node.query(f"accounts/{ALICE.address.hex()}")["nonce"] == 1
    assert node.query("supply")["supply"] == node.total_held() == 100_000 + MINER_START


def test_invalid_transfer_insufficient_funds_changes_nothing(node: Node) -> None:
    before = node.app.store.last_app_hash
    tx = MINER.tx(txs.transfer(ALICE.address, MINER_START))  # the fee comes first
    r = node.finalize([tx])
    assert codes(r) == [Code.INSUFFICIENT_FUNDS]
    assert f"has {MINER_START - node.fee(tx)}, needs {MINER_START}" in r.tx_results[0].log
    assert node.query(f"accounts/{MINER.address.hex()}") == {
        "address": MINER.address.hex(), "balance": MINER_START, "nonce": 0, "miner": None,
        "bonded": 0, "unbonding": None, "deposit": 0, "pending_tasks": 0}
    assert before != node.app.store.last_app_hash  # the block itself still commits


def test_invalid_replayed_tx_is_rejected(node: Node) -> None:
    tx = ALICE.tx(txs.transfer(BOB.address, 10))
    assert codes(node.finalize([tx])) == [0]
    r = node.finalize([tx])
    assert codes(r) == [Code.BAD_NONCE] and "expects 1" in r.tx_results[0].log
    assert node.balance(BOB) == 10
    assert node.check(tx).code == Code.BAD_NONCE


def test_invalid_forged_signature(node: Node) -> None:
    signed = tx_pb2.SignedTx.FromString(ALICE.tx(txs.transfer(BOB.address, 10)))
    body = tx_pb2.TxBody.FromString(signed.body)
    body.transfer.amount = 10_000  # tamper after signing
    signed.body = body.SerializeToString()
    forged = signed.SerializeToString()
    assert node.check(forged).code == Code.BAD_SIGNATURE
    r = node.finalize([forged])
    assert codes(r) == [Code.BAD_SIGNATURE]
    assert node.balance(BOB) == 0


def test_invalid_wrong_chain_id_and_garbage(node: Node) -> None:
    other = txs.build_signed_tx(ALICE.priv, "other-chain", 0, txs.transfer(BOB.address, 1))
    assert node.check(other).code == Code.WRONG_CHAIN_ID
    assert node.check(b"\xff\x00garbage").code == Code.MALFORMED_TX
    big = ALICE.tx(tx_pb2.Transfer(to=b"x" * 70_000, amount=1), nonce=0)
    assert node.check(big).code == Code.TX_TOO_LARGE
    assert node.check(b"x" * (9 << 20)).code == Code.TX_TOO_LARGE
    unsigned = tx_pb2.SignedTx(body=tx_pb2.TxBody(chain_id=CHAIN_ID).SerializeToString())
    assert node.check(unsigned.SerializeToString()).code == Code.EMPTY_MSG


def test_check_tx_accumulates_nonces_until_commit(node: Node) -> None:
    t0 = ALICE.tx(txs.transfer(BOB.address, 1))
    t1 = ALICE.tx(txs.transfer(BOB.address, 1))
    assert node.check(t0).code == 0 and node.check(t1).code == 0
    assert node.check(t0).code == Code.BAD_NONCE  # already in the check state
    assert codes(node.finalize([t0, t1])) == [0, 0]


def test_invalid_settle_via_mempool(node: Node) -> None:
    settle = txs.build_settle_tx(1, abci.ExtendedCommitInfo())
    assert node.check(settle).code == Code.SETTLE_NOT_ALLOWED


def test_process_submit_task_escrows_reward(node: Node) -> None:
    spec = spec_for("t1", train_key=TRAIN_KEY, test_key=TEST_KEY)
    tx = ALICE.tx(txs.submit_task(spec, 5_000))
    r = node.finalize([tx])
    assert codes(r) == [0]
    assert node.balance(ALICE) == 95_000 - node.fee(tx)
    assert node.query("supply")["escrow"] == 5_000
    task = node.query("tasks/1")
    assert task["status"] == "pending" and task["reward"] == 5_000
    assert task["spec"]["data_key_sha256"] == txs.key_commitment(TRAIN_KEY).hex()
    assert node.query("tasks/pending")["tasks"][0]["id"] == 1


@pytest.mark.parametrize("field,value", [
    ("architecture", "../../evil"), ("metric", "f1"), ("data_sha256", b"short"),
    ("data_uri", "ftp://x"), ("hyperparams_json", "[1,2]"), ("model_size_bytes", 0),
    ("min_score_ppm", 1_000_001),
])
def test_invalid_submit_task_bad_spec(node: Node, field: str, value: object) -> None:
    spec = spec_for("bad", train_key=TRAIN_KEY, test_key=TEST_KEY)
    setattr(spec, field, value)
    r = node.finalize([ALICE.tx(txs.submit_task(spec, 10))])
    assert codes(r) == [Code.BAD_TASK_SPEC] and field in r.tx_results[0].log
    assert node.balance(ALICE) == 100_000 and node.query("supply")["escrow"] == 0


@pytest.mark.parametrize("arch", ["resnet", "unet4d", "mlp"])
def test_invalid_submit_task_unknown_architecture(node: Node, arch: str) -> None:
    spec = spec_for("arch", train_key=TRAIN_KEY, test_key=TEST_KEY)
    spec.architecture = arch  # well-formed registry-style name, but not in the allow-list
    tx = ALICE.tx(txs.submit_task(spec, 10))
    check = node.check(tx)
    assert check.code == Code.UNKNOWN_ARCHITECTURE and repr(arch) in check.log
    r = node.finalize([tx])
    assert codes(r) == [Code.UNKNOWN_ARCHITECTURE] and "unet2d" in r.tx_results[0].log
    assert node.balance(ALICE) == 100_000 and node.query("supply")["escrow"] == 0
    assert node.query(f"accounts/{ALICE.address.hex()}")["nonce"] == 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_process_submit_task_accepts_every_registry_architecture(node: Node, arch: str) -> None:
    spec = spec_for("ok", train_key=TRAIN_KEY, test_key=TEST_KEY)
    spec.architecture = arch
    assert codes(node.finalize([ALICE.tx(txs.submit_task(spec, 10))])) == [0]
    assert node.query("tasks/1")["spec"]["architecture"] == arch


def test_invalid_submit_task_reward_and_funds(node: Node) -> None:
    spec = spec_for("x", train_key=TRAIN_KEY, test_key=TEST_KEY)
    assert codes(node.finalize([ALICE.tx(txs.submit_task(spec, 0))])) == [Code.REWARD_TOO_SMALL]
    assert codes(node.finalize([MINER.tx(txs.submit_task(spec, MINER_START))])) == [
        Code.INSUFFICIENT_FUNDS]


def test_invalid_commit_from_unregistered_miner(node: Node) -> None:
    node.finalize([ALICE.tx(txs.submit_task(spec_for("c", train_key=TRAIN_KEY,
                                                     test_key=TEST_KEY), 100))])
    node.finalize([])  # round 1 starts
    r = node.finalize([MINER.tx(txs.commit_model(1, b"\x00" * 32))])
    assert codes(r) == [Code.NOT_REGISTERED_MINER]
    assert node.query("round")["commitments"] == []


def test_invalid_release_train_key_mismatch_and_not_publisher(node: Node) -> None:
    node.finalize([ALICE.tx(txs.submit_task(spec_for("r", train_key=TRAIN_KEY,
                                                     test_key=TEST_KEY), 100)),
                   ALICE.tx(txs.transfer(BOB.address, 10_000))])  # BOB pays fees
    node.finalize([])
    r = node.finalize([ALICE.tx(txs.release_train_key(1, b"W" * 32)),
                       BOB.tx(txs.release_train_key(1, TRAIN_KEY)),
                       ALICE.tx(txs.release_train_key(2, TRAIN_KEY), nonce=2)])
    assert codes(r) == [Code.KEY_MISMATCH, Code.NOT_TASK_PUBLISHER, Code.UNKNOWN_TASK]
    ALICE.nonce = 2  # rejected txs consume no nonce
    assert node.query("round")["key_released"] is False
    assert codes(node.finalize([ALICE.tx(txs.release_train_key(1, TRAIN_KEY))])) == [0]
    assert node.query("tasks/1")["train_key"] == TRAIN_KEY.hex()


def test_invalid_prepare_drops_bad_txs_and_respects_max_tx_bytes(node: Node) -> None:
    good = [ALICE.tx(txs.transfer(BOB.address, 1)) for _ in range(3)]
    bad = BOB.tx(txs.transfer(ALICE.address, 5))
    out = node.prepare([good[0], bad, good[1], good[2]], node.time_ns + NS)
    assert out == good
    out = node.prepare(good, node.time_ns + NS, max_tx_bytes=len(good[0]) + len(good[1]))
    assert out == good[:2]
