"""Chains of real processes for tests, all started through the project's one launcher
(`dlbc_ops.devnode.launch.LocalChain` on `dlbc_ops.supervisor.Supervisor`).

- `local_chain`: the DLBC app + a `dlbc node`, with a genesis of the test's params and balances
  (sidecar, RPC-client and end-to-end tests);
- `DevChain`: any app (default the kvstore example) + a `dlbc node`, with handles to kill and
  restart each process and the kvstore's hang hook (dev-node and crash tests).

The real-CometBFT networks live in `tests/real_cometbft/conftest.py` (they need the binary
fixture).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from abci_app.kvstore import HANG_AT_ENV
from dlbc_ops.devnode.launch import LocalChain
from dlbc_ops.ports import free_port
from tests.support import REPO
from training.sidecars.rpc_client import Backoff, RpcClient


@contextlib.contextmanager
def local_chain(root: Path, *, params: dict[str, int], balances: dict[str, int],
                block_time: float = 0.5) -> Iterator[LocalChain]:
    """A running single-validator DLBC chain (app + dev node) under `root`; stopped on exit.

    Trajectories are not checked unless `params` names `proof_of_learning`: a new chain's
    default (4 epochs replayed per model) does not fit the few seconds of VERIFY these tests
    give a round; tests/training/sidecars/test_proof_of_learning_chain.py turns it on."""
    chain = LocalChain(root, rpc_port=free_port(), app_port=free_port(), block_time=block_time,
                       log_level="info")
    chain.write_genesis("dlbc-test", {"proof_of_learning": 0, **params}, balances)
    try:
        chain.start_app()
        chain.start_node()
        yield chain
    finally:
        chain.stop()


@dataclass
class DevChain:
    """An app + dev node pair under `root` (logs in root/logs/{app,node}.log)."""

    local: LocalChain
    block_time: float = 0.2

    @classmethod
    def create(cls, root: Path, app_spec: str = "kvstore", block_time: float = 0.2) -> DevChain:
        # the repository on the child's path: app specs such as `tests.x.y:Class` resolve
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return cls(LocalChain(
            root, app=app_spec, app_port=free_port(), rpc_port=free_port(),
            block_time=block_time, env={"PYTHONPATH": pythonpath, HANG_AT_ENV: ""},
            ready_timeout=30,
        ), block_time)  # fmt: skip

    @property
    def url(self) -> str:
        return self.local.rpc_url

    @property
    def rpc_port(self) -> int:
        return self.local.rpc_port

    @property
    def app_port(self) -> int:
        return self.local.app_port

    def client(self) -> RpcClient:
        return RpcClient(self.url, timeout=15, backoff=Backoff(attempts=3, initial=0.1))

    def start_app(self, hang_at: str | None = None) -> None:
        self.local.start_app(env={HANG_AT_ENV: hang_at or ""})

    def start_node(self, *extra: str, ready: bool = True) -> None:
        self.local.start_node(*extra, ready=ready)

    def start(self) -> DevChain:
        self.start_app()
        self.start_node()
        return self

    def log(self) -> str:
        """The node's log so far."""
        return self.local.log_text("node")

    def exit_code(self, name: str, timeout: float = 30) -> int:
        """Wait for "app" or "node" to exit on its own and return its code."""
        proc = self.local.node_proc if name == "node" else self.local.app_proc
        assert proc is not None, f"{name} was never started"
        return proc.wait(timeout=timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 10) -> int:
        """Signal "app" or "node" and return its exit code; one that ignores `sig` fails."""
        code = self.local.kill(name, sig, timeout)
        if sig != signal.SIGKILL and code == -signal.SIGKILL:
            raise AssertionError(f"{name} ignored signal {signal.Signals(sig).name}")
        return code

    def close(self) -> None:
        self.local.stop()
