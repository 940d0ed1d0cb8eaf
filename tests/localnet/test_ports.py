"""Port-in-use detection runs before anything starts (issue 7, bad input)."""

from __future__ import annotations

import socket

import pytest

from abci_app.localnet import plan as lp
from abci_app.localnet.ports import busy_ports, port_is_free, require_free


def _free_base(validators: int) -> int:
    for base in range(31000, 60000, 97):
        if not busy_ports(lp.plan_ports(validators, base)):
            return base
    raise RuntimeError("no free port range on this machine")


def test_port_is_free_sees_a_listener():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


def test_wildcard_listener_blocks_loopback_port():
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", 0))
        srv.listen()
        assert not port_is_free(srv.getsockname()[1])


def test_invalid_busy_port_is_named_with_the_fix():
    base = _free_base(2)
    ports = lp.plan_ports(2, base)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", ports[1].rpc))
        srv.listen()
        assert busy_ports(ports) == [(1, "RPC", ports[1].rpc)]
        with pytest.raises(lp.LocalnetError) as info:
            require_free(ports, base)
    msg = str(info.value)
    assert f"{ports[1].rpc} (node1 RPC)" in msg and "--base-port" in msg
    require_free(ports, base)  # freed again
