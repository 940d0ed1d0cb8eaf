"""One real `cometbft node` paired with `python -m abci_app`, set up as the README tells an operator
(`cometbft init`, `dlbc genesis`, then the two processes), once per supported release.

What only a real node shows: CometBFT accepts our genesis and InitChain answer, the handshake
and a long run of FinalizeBlock/Commit agree with CometBFT's own block store, signed txs travel
through CometBFT's mempool and RPC (both broadcast modes, both error shapes of a refused tx),
`abci_query` reaches every query path, and the websocket event stream carries our events.
"""

from __future__ import annotations

import base64
import json
import threading

import pytest

from abci_app.dlbc import txs
from dlbc_ops.localnet.runner import rpc_get
from training.sidecars.rpc_client import RpcClient
from training.sidecars.rpc_types import MEMPOOL_REFUSED, tx_hash
from training.sidecars.subscription import BlockSignal

from .conftest import SingleNode

pytestmark = [pytest.mark.timeout(240)]


def _chain_id(node: SingleNode) -> str:
    return str(rpc_get(f"{node.rpc_url}/status")["node_info"]["network"])


def _transfer(node: SingleNode, sender: int, to: bytes, amount: int, nonce: int) -> bytes:
    key = node.funded[sender]
    return txs.build_signed_tx(key.private_key, _chain_id(node), nonce,
                               txs.transfer(to, amount))


def test_handshake_and_fifty_heights_match_cometbft_block_store(single_node) -> None:
    node = single_node()
    node.wait_height(52, timeout_s=120)
    with RpcClient(node.rpc_url) as rpc:
        info = rpc.abci_info()
        # Verify the app reports what CometBFT stored: heights and app hash agree.
        last = int(info["last_block_height"])
        assert last >= 51
        header = rpc.block(last + 1)["block"]["header"] if node.height() > last else None
        if header is not None:
            assert base64.b64decode(info["last_block_app_hash"]).hex().upper() == header["app_hash"]
        # Every header from 2 on carries a non-empty app hash, and it changes only with state
        # (empty blocks of DLBC still advance the round clock, so it may change or not, but it
        # must never be empty).
        for h in range(2, 52):
            assert rpc.block(h)["block"]["header"]["app_hash"], h
    # The handshake path: restart the app (CometBFT exits when its app goes away) and the node;
    # CometBFT replays nothing it already has and goes on from the same app hash.
    before = node.height()
    node.sup.kill("cometbft", sig=15)
    node.sup.kill("app", sig=15)
    node.start_app()
    node.start_node()
    node.wait_height(before + 5)
    log = (node.root / "logs" / "cometbft.log").read_text()
    assert "ABCI Handshake App Info" in log or "ABCI Handshake" in log


def test_signed_transfers_through_broadcast_sync_and_commit(single_node) -> None:
    node = single_node()
    a, b = node.funded
    with RpcClient(node.rpc_url) as rpc:
        # broadcast_tx_commit: CheckTx + the block, with our events
        res = rpc.broadcast_tx_commit(_transfer(node, 0, b.address, 1_234, 0))
        assert res.ok, (res.check_tx, res.tx_result)
        assert res.height > 0
        assert ("dlbc", "transfer") in {(e.type, e.get("action")) for e in res.tx_result.events}
        # broadcast_tx_sync: admitted by CheckTx, then found in a block by hash
        raw = _transfer(node, 0, b.address, 66, 1)
        sync = rpc.broadcast_tx_sync(raw)
        assert sync.ok and sync.hash == tx_hash(raw)
        committed = rpc.wait_for_tx(sync.hash, timeout=30)
        assert committed.result.ok and committed.height > 0
        assert rpc.query_json(f"accounts/{b.address.hex()}")["balance"] == 1_000_000 + 1_300
        assert rpc.query_json(f"accounts/{a.address.hex()}")["nonce"] == 2


@pytest.mark.parametrize("mode", ["sync", "commit"])
def test_invalid_txs_are_refused_with_the_same_answer_on_every_release(single_node, mode) -> None:
    """v0.38 answers a CheckTx refusal with a result, v1.0 with a JSON-RPC error: the client
    turns both into a non-zero code with the app's log, never a transport failure."""
    node = single_node()
    a, b = node.funded
    with RpcClient(node.rpc_url) as rpc:
        send = rpc.broadcast_tx_sync if mode == "sync" else rpc.broadcast_tx_commit
        good = _transfer(node, 0, b.address, 5, 0)
        assert rpc.broadcast_tx_commit(good).ok
        tampered = bytearray(_transfer(node, 0, b.address, 5, 1))
        tampered[-1] ^= 1
        cases = {
            "garbage": b"not a DLBC SignedTx",
            "used nonce": _transfer(node, 0, b.address, 6, 0),
            "wrong signature": bytes(tampered),
            "wrong chain id": txs.build_signed_tx(a.private_key, "other-chain", 1,
                                                  txs.transfer(b.address, 5)),
            "resent tx (mempool cache)": good,
        }
        for what, raw in cases.items():
            res = send(raw)
            code = res.code if mode == "sync" else res.check_tx.code
            log = res.log if mode == "sync" else res.check_tx.log
            assert code != 0 and log, (what, res)
            if what.startswith("resent"):
                assert code == MEMPOOL_REFUSED
            else:  # the app's own code and reason, whatever the release's error shape
                assert code > 0, (what, res)
        # Verify nothing changed: a's nonce is 1, b got exactly 5
        assert rpc.query_json(f"accounts/{a.address.hex()}")["nonce"] == 1
        assert rpc.query_json(f"accounts/{b.address.hex()}")["balance"] == 1_000_005


def test_every_query_path_answers_through_abci_query(single_node, capsys) -> None:
    from dlbc_ops.cli.main import main as dlbc

    node = single_node(params={"train_seconds": 33})
    a, _ = node.funded
    with RpcClient(node.rpc_url) as rpc:
        assert rpc.query_json("params")["train_seconds"] == 33
        supply = rpc.query_json("supply")
        assert supply and all(isinstance(v, int) for v in supply.values())
        assert rpc.query_json(f"accounts/{a.address.hex()}")["balance"] == 1_000_000
        for path in ("miners", "tasks/pending", "round"):
            assert rpc.query_json(path) is not None, path
        missing = rpc.abci_query("tasks/999")
        assert not missing.ok and missing.log
        assert not rpc.abci_query("no/such/path").ok
    # The operator's CLI over the same RPC, every subcommand
    for args in (["round"], ["round", "1"], ["tasks"], ["account", a.address.hex()],
                 ["winners"], ["params"], ["supply"]):
        rc = dlbc(["query", *args, "--rpc", node.rpc_url, "--json"])
        out = capsys.readouterr()
        if args == ["round", "1"]:  # no round 1 yet: a clear error, not a traceback
            assert rc != 0 and "Traceback" not in out.err
            continue
        assert rc == 0, (args, out.err)
        json.loads(out.out)
    rc = dlbc(["query", "task", "999", "--rpc", node.rpc_url])
    assert rc != 0 and "Traceback" not in capsys.readouterr().err


def test_websocket_subscription_delivers_new_blocks_and_our_tx_events(single_node) -> None:
    node = single_node()
    _, b = node.funded
    with RpcClient(node.rpc_url) as rpc:
        with rpc.subscribe("tm.event='NewBlock'") as blocks:
            heights = []
            while len(heights) < 3:
                msg = blocks.next(timeout=10)
                assert msg is not None, "no NewBlock event within 10 s"
                heights.append(msg.height)
            assert heights == sorted(heights) and len(set(heights)) == 3
        with rpc.subscribe("tm.event='Tx' AND dlbc.action='transfer'") as stream:
            raw = _transfer(node, 0, b.address, 77, 0)
            sender = threading.Thread(target=lambda: rpc.broadcast_tx_sync(raw))
            sender.start()
            msg = stream.next(timeout=20)
            sender.join()
            assert msg is not None, "no Tx event within 20 s"
            tx = msg.tx()
            assert tx is not None and tx.hash == tx_hash(raw) and tx.result.ok
            assert "transfer" in {e.get("action") for e in tx.result.events if e.type == "dlbc"}
        # The sidecars' wake-up: one NewBlock signal per committed block
        wakeup = BlockSignal(rpc.websocket_url()).start()
        try:
            assert wakeup.wait(10), "no NewBlock wake-up within 10 s"
            start = node.height()
            assert all(wakeup.wait(10) for _ in range(3))
            assert node.height() >= start + 2
        finally:
            wakeup.close()
