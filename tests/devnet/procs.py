"""Real processes for the dev-node tests: a kvstore app and a `dlbc node`, on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from training.rpc_client import Backoff, RpcClient

BLOCK_TIME = "0.2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TESTS_DIR = Path(__file__).resolve().parent.parent


def spawn_app(home: Path, port: int, log: Path, app: str = "kvstore",
              hang_at: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "ABCI_KVSTORE_HANG_AT"}
    if hang_at:
        env["ABCI_KVSTORE_HANG_AT"] = hang_at  # kvstore test hook: sleep inside that ABCI call
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "abci_app", "--home", str(home), "--address",
         f"tcp://127.0.0.1:{port}", "--app", app, "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
        env=env,
    )


def spawn_node(home: Path, app_port: int, rpc_port: int, log: Path,
               *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "abci_app.cli", "node", "--home", str(home),
         "--proxy-app", f"tcp://127.0.0.1:{app_port}",
         "--rpc-laddr", f"tcp://127.0.0.1:{rpc_port}", "--block-time", BLOCK_TIME, *extra],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"process {proc.args[:4]} ignored signal {sig}") from None
    return int(proc.returncode)


@dataclass
class Chain:
    """A kvstore app + dev node pair under `root`."""

    root: Path
    app_port: int
    rpc_port: int
    app: subprocess.Popen[bytes] | None = None
    node: subprocess.Popen[bytes] | None = None
    app_spec: str = "kvstore"

    @classmethod
    def create(cls, root: Path, app_spec: str = "kvstore") -> Chain:
        return cls(root=root, app_port=free_port(), rpc_port=free_port(), app_spec=app_spec)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    def client(self) -> RpcClient:
        return RpcClient(self.url, timeout=15, backoff=Backoff(attempts=3, initial=0.1))

    def start_app(self, hang_at: str | None = None) -> None:
        self.app = spawn_app(self.root / "app", self.app_port, self.root / "app.log", self.app_spec,
                             hang_at)

    def start_node(self, *extra: str) -> None:
        self.node = spawn_node(self.root / "node", self.app_port, self.rpc_port,
                               self.root / "node.log", *extra)
        self.wait_ready()

    def start(self) -> Chain:
        self.start_app()
        self.start_node()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        rpc = RpcClient(self.url, backoff=Backoff(attempts=1))
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                assert self.node is not None
                if self.node.poll() is not None:
                    raise AssertionError(f"node exited {self.node.returncode}:\n{self.log()}")
                if rpc.health():
                    return
                time.sleep(0.05)
        finally:
            rpc.close()
        raise AssertionError(f"node not healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        p = self.root / "node.log"
        return p.read_text()[-4000:] if p.exists() else ""

    def stop_node(self, sig: int = signal.SIGINT) -> int:
        assert self.node is not None
        return stop(self.node, sig)

    def close(self) -> None:
        for p in (self.node, self.app):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
