"""`dlbc node` as a real process: restarts resume, Ctrl-C is clean, bad setups fail clearly."""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.chains import DevChain
from training.sidecars.rpc_client import RpcClient
from training.sidecars.rpc_types import RpcError

pytestmark = pytest.mark.timeout(120)


def test_restart_resumes_heights_and_keeps_every_block(tmp_path: Path) -> None:
    chain = DevChain.create(tmp_path).start()
    try:
        rpc = chain.client()
        first = rpc.broadcast_tx_commit(b"before=restart")
        assert first.ok
        block1 = rpc.get_block(1)
        rpc.wait_for_height(first.height + 2)
        assert chain.kill("node", signal.SIGINT) == 0  # Ctrl-C: clean exit
        stopped = re.search(r"stopped at height (\d+)", chain.log())
        assert stopped is not None
        stopped_at = int(stopped.group(1))

        chain.start_node()  # same home: resumes
        h = rpc.wait_for_height(stopped_at + 3)
        assert rpc.get_block(1).hash == block1.hash  # history kept
        assert rpc.tx(first.hash).height == first.height
        assert rpc.abci_query("/key", b"before").value == b"restart"
        after = rpc.broadcast_tx_commit(b"after=restart")
        assert after.ok and after.height > stopped_at
        # every height across the restart is served, in order, BFT time strictly increasing
        seen = [rpc.get_block(x) for x in range(first.height, after.height + 1)]
        assert [b.height for b in seen] == list(range(first.height, after.height + 1))
        times = [b.time_ns for b in seen]
        assert all(a < b for a, b in itertools.pairwise(times))
        assert any(tx.tx == b"after=restart" for b in seen for tx in b.txs)
        assert h >= stopped_at + 3
    finally:
        chain.close()


def test_kill9_node_and_app_then_restart_both(tmp_path: Path) -> None:
    chain = DevChain.create(tmp_path).start()
    try:
        rpc = chain.client()
        res = rpc.broadcast_tx_commit(b"durable=yes")
        assert res.ok
        rpc.wait_for_height(res.height + 2)
        chain.kill("node")  # kill -9
        chain.kill("app")
        chain.start_app()
        chain.start_node()
        latest = rpc.wait_for_height(res.height + 3)
        # every height is served, in order, hash-linked by last_block_id
        prev = None
        for h in range(1, latest + 1):
            doc = rpc.block(h)
            assert int(doc["block"]["header"]["height"]) == h
            if prev is not None:
                assert doc["block"]["header"]["last_block_id"]["hash"] == prev
            prev = doc["block_id"]["hash"]
        assert rpc.abci_query("/key", b"durable").value == b"yes"
    finally:
        chain.close()


def test_invalid_no_app_fails_with_clear_message(tmp_path: Path) -> None:
    chain = DevChain.create(tmp_path)  # no app started: nothing listens on its port
    try:
        chain.start_node("--app-connect-timeout", "0.5", ready=False)
        assert chain.exit_code("node") == 1
        text = chain.log()
    finally:
        chain.close()
    assert "cannot connect to ABCI app" in text and "python -m abci_app" in text
    assert "Traceback" not in text


def test_invalid_rpc_port_in_use(tmp_path: Path) -> None:
    chain = DevChain.create(tmp_path)
    busy = socket.socket()
    busy.bind(("127.0.0.1", chain.rpc_port))
    busy.listen()
    try:
        chain.start_app()
        chain.start_node(ready=False)
        assert chain.exit_code("node") == 1
        text = chain.log()
        assert "cannot listen for RPC" in text and "--rpc-laddr" in text
        assert "Traceback" not in text
    finally:
        busy.close()
        chain.close()


def test_invalid_genesis_with_foreign_validator(tmp_path: Path) -> None:
    from abci_app.keyfile import KeyPair
    from dlbc_ops.devnode.home import make_genesis

    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(make_genesis("other-chain", KeyPair.generate(), {})))
    chain = DevChain.create(tmp_path)
    try:
        chain.start_node("--genesis", str(genesis), ready=False)
        assert chain.exit_code("node") == 1
        text = chain.log()
    finally:
        chain.close()
    assert "exactly one validator" in text and "Traceback" not in text


def test_genesis_file_is_used(tmp_path: Path) -> None:
    from abci_app.keyfile import KeyPair, save_key
    from dlbc_ops.devnode.home import make_genesis

    key = KeyPair.generate()
    save_key(tmp_path / "node" / "config" / "priv_validator_key.json", key)
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(make_genesis("my-chain", key, {"seeded": "1"})))
    chain = DevChain.create(tmp_path)
    try:
        chain.start_app()
        chain.start_node("--genesis", str(genesis))
        rpc = chain.client()
        st = rpc.status()
        assert st["node_info"]["network"] == "my-chain"
        assert st["validator_info"]["address"] == key.address.hex().upper()
        b = rpc.get_block(rpc.wait_for_height(1))
        assert rpc.abci_query("/key", b"seeded").value == b"1"  # app_state reached InitChain
        assert b.chain_id == "my-chain" and b.proposer_address == key.address.hex().upper()
    finally:
        chain.close()


def test_cli_help_labels_dev_stand_in() -> None:
    import sys

    out = subprocess.run([sys.executable, "-m", "dlbc_ops.cli.main", "node", "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "stand-in" in out.lower()


def test_recheck_drops_txs_invalidated_by_a_block(tmp_path: Path) -> None:
    chain = DevChain.create(tmp_path, app_spec="tests.dlbc_ops.devnode.recheck_app:WriteOnceKV")
    chain.start_app()
    # ~1.2 kB of tx space per block: exactly one 700-byte tx fits, the rest wait and are rechecked
    chain.start_node("--max-block-bytes", "2048", "--block-time", "1.5")
    try:
        rpc = chain.client()
        first, second, other = (b"k=" + b"A" * 700, b"k=" + b"B" * 700, b"o=" + b"C" * 700)
        with rpc.subscribe("tm.event='NewBlock'") as sub:
            assert sub.next(timeout=5) is not None  # submit right after a block: ~1 s to spare
            results = [rpc.broadcast_tx_sync(tx) for tx in (first, second, other)]
        assert [r.code for r in results] == [0, 0, 0]  # all valid against committed state
        assert results[0].data == b"\x01\xab"
        h_first = rpc.tx(results[0].hash).height if _wait_tx(rpc, results[0].hash) else None
        assert _wait_tx(rpc, results[2].hash)
        h_other = rpc.tx(results[2].hash).height
        assert h_first is not None and h_other == h_first + 1  # one tx per block, FIFO
        rpc.wait_for_height(h_other + 1)
        with pytest.raises(RpcError, match="not found"):
            rpc.tx(results[1].hash)  # dropped by RECHECK after `first` committed
        assert rpc.call("num_unconfirmed_txs")["n_txs"] == "0"
        assert "recheck dropped" in chain.log()
        assert rpc.abci_query("/key", b"k").value == b"A" * 700
        # a dropped tx left the cache: resubmitting it gets the app's verdict, not "in cache"
        assert rpc.broadcast_tx_sync(second).code == 9
    finally:
        chain.close()


def _wait_tx(rpc: RpcClient, tx_hash_hex: str, timeout: float = 10) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rpc.tx(tx_hash_hex)
            return True
        except RpcError:
            time.sleep(0.1)
    return False


def test_app_killed_inside_finalize_block_then_resume(tmp_path: Path) -> None:
    """The block is stored before FinalizeBlock (as CometBFT does); the app dies inside it. The
    node halts with a clear error; after restarting both, the handshake replays the block and the
    RPC serves it, from the same block store, with the real tx results of the replayed
    FinalizeBlock."""
    import time

    chain = DevChain.create(tmp_path)
    chain.start_app(hang_at="finalize:6")
    chain.start_node()
    try:
        rpc = chain.client()
        rpc.wait_for_height(4)
        assert rpc.broadcast_tx_sync(b"inflight=1").ok  # lands in block 5 or 6
        deadline = time.monotonic() + 20
        while rpc.latest_height() < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the app is now asleep inside FinalizeBlock(6)
        chain.kill("app")  # kill -9
        assert chain.exit_code("node", timeout=20) == 1  # halts like CometBFT, no traceback
        text = chain.log()
        assert "height 6 failed" in text and "restart with the same --home" in text
        assert "Traceback" not in text
        chain.start_app()
        chain.start_node()
        rpc.wait_for_height(8)
        b6 = rpc.get_block(6)
        assert b6.height == 6 and rpc.get_block(7).time_ns > b6.time_ns
        assert rpc.block(7)["block"]["header"]["last_block_id"]["hash"] == b6.hash
        assert rpc.abci_query("/key", b"inflight").value == b"1"
        assert "replayed height=6" in chain.log()  # the handshake, as CometBFT's
        for h in (5, 6):
            for res in rpc.block_results(h)["txs_results"] or []:
                assert res.get("info") != "unrecorded", (h, res)
    finally:
        chain.close()
