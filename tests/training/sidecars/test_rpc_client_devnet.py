"""training.sidecars.rpc_client and .subscription against the dev node's RPC, with a real kvstore
app behind it (sockets only)."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.chains import DevChain
from training.sidecars.rpc_client import RpcClient
from training.sidecars.rpc_types import MEMPOOL_REFUSED, RpcError, tx_hash
from training.sidecars.subscription import BlockSignal

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChain]:
    c = DevChain.create(tmp_path_factory.mktemp("chain")).start()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture()
def rpc(chain: DevChain) -> Iterator[RpcClient]:
    with chain.client() as client:
        yield client


def test_broadcast_tx_commit_lands_and_query_reads_back(rpc: RpcClient) -> None:
    res = rpc.broadcast_tx_commit(b"color=blue")
    assert res.ok, res
    assert res.height >= 1 and res.hash == tx_hash(b"color=blue")
    assert [e.get("key") for e in res.tx_result.events_of("app")] == ["color"]
    q = rpc.abci_query("/key", b"color")
    assert q.ok and q.value == b"blue" and q.height >= res.height
    # the tx is indexed by hash and sits in its block with its result
    found = rpc.tx(res.hash)
    assert (found.height, found.tx, found.result.ok) == (res.height, b"color=blue", True)
    block = rpc.get_block(res.height)
    assert [t.tx for t in block.txs] == [b"color=blue"]
    assert block.txs[0].result.events_of("app")[0].get("key") == "color"


def test_query_json_and_missing_key(rpc: RpcClient) -> None:
    rpc.broadcast_tx_commit(b'doc={"n": 3}')
    assert rpc.query_json("/key", b"doc") == {"n": 3}
    missing = rpc.abci_query("/key", b"nope")
    assert missing.code == 4 and not missing.ok
    with pytest.raises(RpcError, match="does not exist"):
        rpc.query_json("/key", b"nope")


def test_invalid_tx_gets_checktx_code_over_rpc(rpc: RpcClient) -> None:
    res = rpc.broadcast_tx_sync(b"no-equals-sign")
    assert res.code == 1 and "key=value" in res.log
    commit = rpc.broadcast_tx_commit(b"also-bad")
    assert commit.check_tx.code == 1 and commit.height == 0 and not commit.ok
    # refused txs never reach a block
    with pytest.raises(RpcError, match="not found"):
        rpc.tx(tx_hash(b"no-equals-sign"))


def test_invalid_duplicate_tx_refused_by_mempool_cache(rpc: RpcClient) -> None:
    assert rpc.broadcast_tx_commit(b"dup=1").ok
    # CometBFT answers the mempool cache's refusal with a JSON-RPC error; the client turns it
    # into a refused result, as a CheckTx refusal, so a resend is never a transport failure
    res = rpc.broadcast_tx_sync(b"dup=1")
    assert res.code == MEMPOOL_REFUSED and res.codespace == "mempool"
    assert "already exists in cache" in res.log
    again = rpc.broadcast_tx_commit(b"dup=1")
    assert again.check_tx.code == MEMPOOL_REFUSED and not again.ok and again.height == 0


def test_broadcast_tx_sync_then_tx_event_and_every_block(rpc: RpcClient, chain: DevChain) -> None:
    start = rpc.latest_height() + 1
    sub = rpc.subscribe("tm.event='Tx' AND app.key='ev'")
    try:
        res = rpc.broadcast_tx_sync(b"ev=1")
        assert res.ok and res.hash == tx_hash(b"ev=1")
        ev = sub.next(timeout=10)
        assert ev is not None and ev.type == "tendermint/event/Tx"
        assert ev.events["tx.hash"] == [res.hash]
        got = ev.tx()
        assert got is not None and got.tx == b"ev=1" and got.hash == res.hash and got.result.ok
        assert got.result.events_of("app")[0].get("key") == "ev"
        height = got.height
        assert ev.height == height and rpc.wait_for_tx(res.hash).height == height
    finally:
        sub.close()
    # every height from `start` is served in order, including the tx's block
    rpc.wait_for_height(height + 1)
    seen = [rpc.get_block(h) for h in range(start, height + 2)]
    assert [b.height for b in seen] == list(range(start, height + 2))
    assert any(t.tx == b"ev=1" for b in seen for t in b.txs)
    times = [b.time_ns for b in seen]
    assert all(a < b for a, b in itertools.pairwise(times))  # BFT time strictly increases


def test_new_block_subscription(rpc: RpcClient) -> None:
    with rpc.subscribe("tm.event='NewBlock'") as sub:
        a = sub.next(timeout=5)
        b = sub.next(timeout=5)
    assert a is not None and b is not None
    ha = int(a.value["block"]["header"]["height"])
    assert int(b.value["block"]["header"]["height"]) == ha + 1


def test_async_broadcast_and_wait(rpc: RpcClient) -> None:
    res = rpc.broadcast_tx_async(b"later=1")
    assert res.hash == tx_hash(b"later=1")
    assert rpc.wait_for_tx(res.hash, timeout=10).result.ok
    with pytest.raises(TimeoutError):
        rpc.wait_for_tx(tx_hash(b"never=sent"), timeout=0.3)


def test_invalid_requests_answered_and_server_keeps_serving(rpc: RpcClient, chain: DevChain) -> None:
    r = httpx.post(chain.url + "/", content=b"{not json")
    assert r.json()["error"]["code"] == -32700
    r = httpx.post(chain.url + "/", json={"jsonrpc": "2.0", "id": 1, "method": "nope", "params": {}})
    assert r.json()["error"]["code"] == -32601
    with pytest.raises(RpcError, match="current blockchain height"):
        rpc.block(10**9)
    with pytest.raises(RpcError, match="base64"):
        rpc.call("broadcast_tx_sync", {"tx": "***"})
    r = httpx.get(chain.url + "/abci_query", params={"path": '"/key"', "data": "0x636f6c6f72"})
    assert r.json()["result"]["response"]["code"] in (0, 4)
    # garbage on a raw socket does not take the server down
    import socket

    with socket.create_connection(("127.0.0.1", chain.rpc_port)) as s:
        s.sendall(b"\x00\xff garbage\r\n\r\n")
        s.recv(100)
    assert rpc.health() and rpc.latest_height() > 0
    assert rpc.abci_info()["last_block_height"] != "0"
    assert rpc.chain_id() == "dlbc-devnet"


def test_invalid_websocket_input(rpc: RpcClient, chain: DevChain) -> None:
    with connect(rpc.websocket_url(), proxy=None, open_timeout=5) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "subscribe",
                            "params": {"query": "tm.event = Tx OR x"}}))
        answer = json.loads(ws.recv(timeout=5))
        assert answer["id"] == 7 and "failed to parse query" in answer["error"]["data"]
        ws.send("{broken")
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == -32700
        # ordinary methods work over the websocket too
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 8, "method": "health", "params": {}}))
        assert json.loads(ws.recv(timeout=5)) == {"jsonrpc": "2.0", "id": 8, "result": {}}
    # an unmasked client frame is a protocol error: the server closes that connection only
    with socket.create_connection(("127.0.0.1", chain.rpc_port), timeout=5) as raw:
        raw.sendall(b"GET /websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += raw.recv(4096)
        assert reply.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in reply
        raw.sendall(bytes([0x81, 0x01]) + b"x")  # text frame without a mask
        close = reply.split(b"\r\n\r\n", 1)[1] or raw.recv(4096)
        assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1002
    # a bad handshake is answered, not crashed on
    r = httpx.get(chain.url + "/websocket", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert r.status_code in (400, 426)
    assert rpc.health()


def test_block_signal_wakes_on_each_new_block(rpc: RpcClient) -> None:
    wakeup = BlockSignal(rpc.websocket_url()).start()
    try:
        assert wakeup.wait(10), "no NewBlock wake-up within 10 s"  # subscribes in the background
        h0 = rpc.latest_height()
        assert all(wakeup.wait(5.0) for _ in range(3))  # one wake-up per block
        assert rpc.latest_height() >= h0 + 2
    finally:
        wakeup.close()
