"""Port-in-use detection runs before anything starts (issue 7, bad input)."""

from __future__ import annotations

import socket

import pytest

from dlbc_ops import ports as net_ports
from dlbc_ops.localnet import layout
from dlbc_ops.localnet.ports import busy_ports, free_base_port, require_free
from dlbc_ops.ports import busy, free_base, free_port, port_is_free
from dlbc_ops.supervisor import LaunchError


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
    base = free_base_port(2, start=31000)
    ports = layout.plan_ports(2, base)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", ports[1].rpc))
        srv.listen()
        assert busy_ports(ports) == [(1, "RPC", ports[1].rpc)]
        with pytest.raises(layout.LocalnetError) as info:
            require_free(ports, base)
    msg = str(info.value)
    assert f"{ports[1].rpc} (node1 RPC)" in msg and "--base-port" in msg
    require_free(ports, base)  # freed again


def test_free_port_is_free_and_busy_names_what_is_taken():
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", port))
        srv.listen()
        other = free_port()
        assert other != port
        assert busy([("RPC", port), ("app ABCI", other)]) == [("RPC", port)]
        with pytest.raises(LaunchError) as info:
            net_ports.require_free([("RPC", port), ("app ABCI", other)], "pass --base-port P")
    msg = str(info.value)
    assert f"already in use on 127.0.0.1: {port} (RPC)." in msg and msg.endswith("pass --base-port P")
    assert str(other) not in msg
    net_ports.require_free([("RPC", port)], "unused")  # freed again


def test_free_base_skips_a_block_with_a_busy_port():
    base = free_base(lambda b: (b, b + 1), start=40000, step=50)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", base + 1))
        srv.listen()
        assert free_base(lambda b: (b, b + 1), start=base, step=50) >= base + 50
        with pytest.raises(RuntimeError, match="no free block"):
            free_base(lambda b: (base + 1,), start=base, stop=base + 100, step=50)


def test_localnet_free_base_port_covers_the_demo_ports():
    base = free_base_port(1, extra=3, start=41000)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", base + 12))  # miner-2's artifact port with 1 validator
        srv.listen()
        assert free_base_port(1, extra=3, start=base) != base
        assert free_base_port(1, start=base) == base  # the nodes' own ports are still free
