"""Real processes for the dev-node tests: a kvstore app and a `dlbc node` on free ports, started
through the project's one launcher (`dlbc_ops.devnode.launch.LocalChain` on `Supervisor`)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from dlbc_ops.devnode.launch import LocalChain
from dlbc_ops.ports import free_port
from training.sidecars.rpc_client import Backoff, RpcClient

BLOCK_TIME = 0.2
HANG_AT = "ABCI_KVSTORE_HANG_AT"  # kvstore test hook: sleep inside that ABCI call ("" = never)
TESTS_DIR = Path(__file__).resolve().parents[2]


@dataclass
class Chain:
    """A kvstore app + dev node pair under `root` (logs in root/logs/{app,node}.log)."""

    local: LocalChain

    @classmethod
    def create(cls, root: Path, app_spec: str = "kvstore") -> Chain:
        # tests/ on the path: app specs such as ops.devnode.recheck_app:WriteOnceKV
        pythonpath = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
        return cls(LocalChain(
            root, app=app_spec, app_port=free_port(), rpc_port=free_port(),
            block_time=BLOCK_TIME, env={"PYTHONPATH": pythonpath, HANG_AT: ""}, ready_timeout=30,
        ))  # fmt: skip

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
        self.local.start_app(env={HANG_AT: hang_at or ""})

    def start_node(self, *extra: str, ready: bool = True) -> None:
        self.local.start_node(*extra, ready=ready)

    def start(self) -> Chain:
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
