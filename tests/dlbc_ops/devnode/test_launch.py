"""dlbc_ops.devnode.launch.LocalChain: app + node processes up, usable, and torn down cleanly."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dlbc_ops.devnode.launch import LaunchError, LocalChain
from dlbc_ops.ports import free_port
from training.sidecars.rpc_client import RpcClient

pytestmark = pytest.mark.timeout(120)


def test_local_chain_up_and_down(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path, app="kvstore", app_port=free_port(), rpc_port=free_port(),
                       block_time=0.2, chain_id="launch-test")
    with chain:
        with RpcClient(chain.rpc_url) as rpc:
            assert rpc.broadcast_tx_commit(b"launched=1").ok
            assert rpc.chain_id() == "launch-test"
        procs = [chain.app_proc, chain.node_proc]
    assert all(p is not None and p.poll() is not None for p in procs)
    assert chain.node_proc is not None and chain.node_proc.returncode == 0  # stopped first: clean exit
    assert "DEVELOPMENT STAND-IN" in (tmp_path / "logs" / "node.log").read_text()


def test_invalid_port_in_use_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        chain = LocalChain(tmp_path, app="kvstore", app_port=free_port(), rpc_port=port)
        with pytest.raises(LaunchError, match=rf"already in use on 127\.0\.0\.1: {port} \(RPC\)"):
            chain.start()
    assert chain.app_proc is None and chain.node_proc is None


def test_invalid_unwritable_home(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    chain = LocalChain(blocker / "home", app="kvstore", app_port=free_port(), rpc_port=free_port())
    with pytest.raises(LaunchError, match="not writable"):
        chain.start()
    assert chain.app_proc is None


def test_invalid_app_fails_fast_and_cleans_up(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path, app="no.such.module:App", app_port=free_port(), rpc_port=free_port(),
                       node_args=("--app-connect-timeout", "2"))
    with pytest.raises(LaunchError, match="exited with code"):
        chain.start()
    assert all(p is None or p.poll() is not None for p in (chain.app_proc, chain.node_proc))
