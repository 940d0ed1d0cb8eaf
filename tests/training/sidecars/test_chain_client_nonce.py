"""Sending and the shared loop under an operator's mistakes (issue 13): two senders of one key,
a wrong --rpc, a node that goes away after it was reached. Real chain, real sockets."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from abci_app.dlbc import txs
from abci_app.dlbc.codes import Code
from training.sidecars.base import Sidecar, SidecarConfig
from training.sidecars.chain_client import ChainClient, TxRejected, expected_nonce
from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.rpc_types import NodeUnreachable

from .helpers import free_port, key, local_chain, wait_for

PARAMS = {"train_seconds": 3, "reveal_seconds": 2, "verify_seconds": 2}


def test_expected_nonce_reads_the_apps_log() -> None:
    assert expected_nonce("nonce 4 but account ab12 expects 5") == 5
    assert expected_nonce("something else") is None


def test_two_senders_of_one_key_both_land(tmp_path: Path) -> None:
    """Sender 1's tx is still in the mempool when sender 2 reads the committed nonce: the app
    answers BAD_NONCE, sender 2 signs again with the nonce it names, and both transfers land."""
    k, a, b = key(70), key(71), key(72)
    with local_chain(tmp_path / "chain", params=PARAMS, balances={k.address.hex(): 100_000},
                     block_time=2.0) as chain:
        rpc = chain.rpc
        first, second = ChainClient(rpc, k), ChainClient(rpc, k)
        nonce = int(first.account(k.address)["nonce"])
        tx = txs.build_signed_tx(k.private_key, first.chain_id, nonce, txs.transfer(a.address, 11))
        assert rpc.broadcast_tx_sync(tx).code == 0  # admitted, not yet in a block
        res = second.send(txs.transfer(b.address, 22), "Transfer")
        assert res.ok and second.nonce_retries >= 1
        wait_for(lambda: first.account(a.address)["balance"] == 11, 10, "sender 1's transfer")
        assert second.account(b.address)["balance"] == 22
        assert int(first.account(k.address)["nonce"]) == nonce + 2


def test_invalid_other_refusals_are_not_retried(tmp_path: Path) -> None:
    k, a = key(73), key(74)
    with local_chain(tmp_path / "chain", params=PARAMS, balances={k.address.hex(): 1_000}) as ch:
        client = ChainClient(ch.rpc, k)
        with pytest.raises(TxRejected) as exc:
            client.send(txs.transfer(a.address, 10_000), "Transfer")
        assert exc.value.code == Code.INSUFFICIENT_FUNDS and client.nonce_retries == 0
        assert "(INSUFFICIENT_FUNDS)" in str(exc.value)


def test_invalid_never_reached_node_ends_the_loop(tmp_path: Path) -> None:
    """A miner pointed at a port where nothing listens gives up after node_wait_seconds."""
    url = f"http://127.0.0.1:{free_port()}"
    miner = Miner(MinerConfig(rpc_url=url, workdir=tmp_path / "m", node_wait_seconds=1.5,
                              poll_seconds=0.2, progress=False), key(75))
    start = time.monotonic()
    with pytest.raises(NodeUnreachable, match=f"no CometBFT RPC answered at {url} within 1.5 s"):
        miner.run()
    assert time.monotonic() - start < 15
    assert miner.metrics.get("errors_total", kind="node_unreachable") >= 1


def test_node_that_goes_away_after_it_was_reached_is_retried(tmp_path: Path) -> None:
    with local_chain(tmp_path / "chain", params=PARAMS, balances={}) as chain:
        sc = Sidecar(SidecarConfig(rpc_url=chain.rpc_url, workdir=tmp_path / "w",
                                   poll_seconds=0.1, node_wait_seconds=1.0))
        t = threading.Thread(target=sc.run, daemon=True)
        t.start()
        try:
            wait_for(lambda: sc._blocks is not None, 10, "the loop to reach the node")
            chain.kill("node", signal.SIGTERM)
            wait_for(lambda: sc.metrics.get("errors_total", kind="node_unreachable") >= 2, 60,
                     "outage errors to be counted")
            time.sleep(1.5)  # longer than node_wait_seconds
            assert t.is_alive()  # still retrying: the node was reached once
        finally:
            sc.stop()
            t.join(timeout=30)
        assert not t.is_alive()
