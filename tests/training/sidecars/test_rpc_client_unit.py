"""training.sidecars.rpc_client/rpc_types/subscription without a node: retries against a dead
port, decoding, time parsing, the block signal's polling fallback."""

from __future__ import annotations

import logging
import time

import pytest

from abci_app.rfc3339 import format_rfc3339_ns
from dlbc_ops.ports import free_port as _dead_port  # nothing listens there
from training.sidecars.rpc_client import Backoff, RpcClient
from training.sidecars.rpc_types import (
    NodeUnreachable,
    RpcError,
    parse_event,
    parse_rfc3339_ns,
    parse_tx_result,
    tx_hash,
)
from training.sidecars.subscription import BlockSignal


def test_retry_backoff_is_bounded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    rpc = RpcClient(f"http://127.0.0.1:{_dead_port()}", backoff=Backoff(attempts=4, initial=0.05, factor=2.0, max_delay=0.1))
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="training.sidecars.rpc_client"), \
            pytest.raises(NodeUnreachable, match="after 4 attempt"):
        rpc.status()
    elapsed = time.monotonic() - t0
    # delays 0.05 + 0.1 + 0.1 = 0.25 s; bounded well under a second
    assert 0.2 <= elapsed < 2.0
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 3
    assert "3/3" in retries[-1].getMessage()


def test_broadcast_to_dead_node_fails_cleanly() -> None:
    rpc = RpcClient(f"127.0.0.1:{_dead_port()}", backoff=Backoff(attempts=2, initial=0.01))
    with pytest.raises(NodeUnreachable):
        rpc.broadcast_tx_sync(b"k=v")
    assert rpc.health() is False


def test_block_signal_without_a_node_falls_back_to_the_poll_timeout() -> None:
    wakeup = BlockSignal(f"ws://127.0.0.1:{_dead_port()}/websocket", retry_seconds=0.05).start()
    try:
        t0 = time.monotonic()
        assert wakeup.wait(0.3) is False  # nothing to wake it: the caller's poll interval
        assert 0.25 <= time.monotonic() - t0 < 2.0
        wakeup.wake()
        assert wakeup.wait(5.0) is True
    finally:
        wakeup.close()


def test_backoff_delays() -> None:
    assert list(Backoff(attempts=5, initial=0.1, factor=3.0, max_delay=1.0).delays()) == [0.1, pytest.approx(0.3), pytest.approx(0.9), 1.0]
    assert list(Backoff(attempts=1).delays()) == []


def test_parse_rfc3339_ns_exact() -> None:
    assert parse_rfc3339_ns("1970-01-01T00:00:01.000000001Z") == 1_000_000_001
    assert parse_rfc3339_ns("2024-05-01T12:00:00Z") == 1714564800 * 10**9
    assert parse_rfc3339_ns("2024-05-01T14:00:00.5+02:00") == 1714564800 * 10**9 + 500_000_000
    t = 1_732_430_000_123_456_789
    assert parse_rfc3339_ns(format_rfc3339_ns(t)) == t


def test_invalid_block_time_from_the_node_is_an_rpc_error() -> None:
    for bad in ("2024-05-01 12:00:00Z", "2024-02-30T00:00:00Z", "", "2024-05-01T12:00:00.1234567890Z"):
        with pytest.raises(RpcError, match="RFC 3339"):
            parse_rfc3339_ns(bad)


def test_parse_tx_result_and_events() -> None:
    res = parse_tx_result({
        "code": 5, "data": "AQI=", "log": "bad", "gas_wanted": "7", "gas_used": "3",
        "events": [{"type": "transfer", "attributes": [{"key": "to", "value": "ab", "index": True},
                                                       {"key": "to", "value": "cd"}]}],
        "codespace": "dlbc",
    })
    assert (res.code, res.data, res.gas_wanted, res.gas_used, res.ok) == (5, b"\x01\x02", 7, 3, False)
    assert res.events_of("transfer")[0].get("to") == "ab"
    assert parse_event({"type": "x"}).attributes == ()
    assert parse_tx_result(None).ok
    assert tx_hash(b"abc") == "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
