"""The dev node's one block store and the RPC documents read from it (no app, no sockets)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from abci_app.pb.tendermint.abci import types_pb2 as abci
from dlbc_ops.devnode import blockdocs
from dlbc_ops.devnode.blockstore import BlockStore

PROPOSER = b"\x07" * 20


def _run_height(store: BlockStore, h: int, txs: list[bytes], *, commit: bool = True) -> None:
    """What the driver writes for one height, in its order."""
    req = abci.RequestFinalizeBlock(txs=txs, height=h, hash=b"H%d" % h,
                                    time=Timestamp(seconds=1_700_000_000 + h, nanos=5),
                                    proposer_address=PROPOSER)
    store.save_block(h, req, b"H%d" % h, None)
    resp = abci.ResponseFinalizeBlock(
        tx_results=[abci.ExecTxResult(code=0, log=f"ok {i}") for i in range(len(txs))],
        events=[abci.Event(type="block", attributes=[abci.EventAttribute(key="h", value=str(h))])],
        app_hash=b"A%d" % h)
    store.save_finalize_response(h, resp)
    if commit:
        store.save_commit(h, b"A%d" % h, txs)


@pytest.mark.parametrize("on_disk", [True, False])
def test_commit_records_height_app_hash_and_tx_index(tmp_path: Path, on_disk: bool) -> None:
    path = tmp_path / "blocks" if on_disk else None
    store = BlockStore(path)
    store.save_genesis_app_hash(b"G")
    _run_height(store, 1, [b"a=1", b"b=2"])
    _run_height(store, 2, [b"a=1"])  # the same tx again in a later block
    _run_height(store, 3, [b"c=3"], commit=False)  # stored, executed, never committed
    if on_disk:  # everything survives a restart
        store.close()
        store = BlockStore(path)
    assert (store.height, store.last_block) == (2, 3)
    assert store.genesis_app_hash() == b"G" and store.app_hash(2) == b"A2"
    assert store.app_hash(3) is None and store.finalize_response(3) is not None
    assert store.tx_location(hashlib.sha256(b"a=1").digest()) == (1, 0)  # the first location
    assert store.tx_location(hashlib.sha256(b"b=2").digest()) == (1, 1)
    assert store.tx_location(hashlib.sha256(b"c=3").digest()) is None  # not committed
    store.save_commit(1, b"A1", [b"a=1"])  # a replayed commit never lowers the height
    assert store.height == 2
    store.close()


def test_rpc_documents_are_views_of_the_store() -> None:
    store = BlockStore(None)
    _run_height(store, 1, [b"a=1"])
    _run_height(store, 2, [b"b=2", b"c=3"])
    b2 = blockdocs.block_doc(store, "chain", 2)
    assert b2 is not None
    header = b2["block"]["header"]
    assert header["height"] == "2" and header["chain_id"] == "chain"
    assert header["last_block_id"]["hash"] == b"H1".hex().upper()  # hash-linked
    assert header["app_hash"] == b"A1".hex().upper()  # the state after the previous height
    assert header["proposer_address"] == PROPOSER.hex().upper()
    assert header["time"] == "2023-11-14T22:13:22.000000005Z"
    results = blockdocs.results_doc(store, 2)
    assert results is not None and [r["log"] for r in results["txs_results"]] == ["ok 0", "ok 1"]
    assert results["finalize_block_events"][0]["attributes"][0]["value"] == "2"
    tx = blockdocs.tx_doc(store, hashlib.sha256(b"c=3").digest())
    assert tx is not None and (tx["height"], tx["index"], tx["tx_result"]["log"]) == ("2", 1, "ok 1")
    tip = blockdocs.chain_tip(store)
    assert (tip.height, tip.block_hash, tip.app_hash) == (2, b"H2", b"A2")
    assert tip.time_ns == (1_700_000_002 * 10**9) + 5


def test_invalid_heights_have_no_documents() -> None:
    store = BlockStore(None)
    assert blockdocs.chain_tip(store) == blockdocs.ChainTip()
    assert blockdocs.block_doc(store, "chain", 1) is None
    assert blockdocs.results_doc(store, 1) is None
    assert blockdocs.tx_doc(store, b"\0" * 32) is None
