"""No-I/O parts of the dev node: event queries, URI parameters, mempool rules."""

from __future__ import annotations

import pytest

from dlbc_ops.devnode.mempool import Mempool, MempoolConfig, MempoolError, tx_key
from dlbc_ops.devnode.rpc_json import Query, QuerySyntaxError, flatten_events
from dlbc_ops.devnode.rpc_server import uri_params


def test_query_matching() -> None:
    events = flatten_events(
        [{"type": "transfer", "attributes": [{"key": "to", "value": "ab"}, {"key": "amount", "value": "10"}]}],
        {"tm.event": ["Tx"], "tx.height": ["7"]},
    )
    assert Query.parse("tm.event='Tx'").matches(events)
    assert not Query.parse("tm.event='NewBlock'").matches(events)
    assert Query.parse("tm.event='Tx' AND transfer.to='ab' AND tx.height>=7").matches(events)
    assert not Query.parse("tm.event='Tx' AND tx.height>7").matches(events)
    assert Query.parse("transfer.amount<11 AND transfer.to CONTAINS 'a'").matches(events)
    assert Query.parse("transfer.to EXISTS").matches(events)
    assert not Query.parse("transfer.from EXISTS").matches(events)


@pytest.mark.parametrize("bad", ["", "tm.event=Tx", "tm.event='Tx' OR a='b'", "a ~ 'b'", "x" * 600])
def test_invalid_query(bad: str) -> None:
    with pytest.raises(QuerySyntaxError):
        Query.parse(bad)


def test_uri_params() -> None:
    p = uri_params('path="/key"&data=0x6b6579&height=5&tx=0x6b3d76&prove=false')
    assert p == {"path": "/key", "data": "6b6579", "height": "5", "tx": "az12", "prove": False}


def test_mempool_dedup_caps_and_fifo() -> None:
    mp = Mempool(MempoolConfig(max_txs=2, max_tx_bytes=10, cache_size=3))
    for tx in (b"a=1", b"b=2"):
        mp.precheck(tx)
        mp.add(tx)
    with pytest.raises(MempoolError, match="already exists"):
        mp.precheck(b"a=1")
    with pytest.raises(MempoolError, match="full"):
        mp.precheck(b"c=3")
    with pytest.raises(MempoolError, match="too large"):
        mp.precheck(b"x" * 11)
    with pytest.raises(MempoolError, match="empty"):
        mp.precheck(b"")
    assert mp.reap(max_bytes=100) == [b"a=1", b"b=2"]
    assert mp.reap(max_bytes=5) == [b"a=1"]
    left = mp.update([b"a=1"])
    assert left == [b"b=2"] and len(mp) == 1 and mp.size_bytes == 3
    # committed tx stays in the cache: a replay is refused without asking the app
    with pytest.raises(MempoolError, match="already exists"):
        mp.precheck(b"a=1")
    mp.remove(b"b=2")
    assert tx_key(b"b=2") not in mp and mp.size_bytes == 0
    mp.precheck(b"b=2")  # a tx dropped by recheck may be resubmitted
