"""Start an app + dev node pair as child processes, wait until it serves RPC, tear it down cleanly.

Why: `dlbc devnet`, the end-to-end tests and the sidecar demos all need "a chain on localhost"
without caring how it is made. This is that, with the rules of issue 7 for bad input: ports are
checked before anything starts, a failed start leaves nothing running, and shutdown stops the
node first (Ctrl-C: it finishes its current block) and then the app.

    with LocalChain(home, block_time=0.5) as chain:
        rpc = RpcClient(chain.rpc_url)
        ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger("abci_app.devnet")


class LaunchError(RuntimeError):
    """The chain could not be started; the message names the problem and the fix."""


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port (checked by binding, like the node will)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalChain:
    """`python -m abci_app` + `dlbc node` under `home` (app/, node/, logs/)."""

    def __init__(
        self,
        home: Path,
        *,
        app: str | None = None,
        app_port: int = 26658,
        rpc_port: int = 26657,
        block_time: float = 1.0,
        genesis: Path | None = None,
        chain_id: str = "dlbc-devnet",
        ready_timeout: float = 60.0,
        node_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.app = app
        self.app_port = app_port
        self.rpc_port = rpc_port
        self.block_time = block_time
        self.genesis = genesis
        self.chain_id = chain_id
        self.ready_timeout = ready_timeout
        self.node_args = node_args
        self.env = env
        self.app_proc: subprocess.Popen[bytes] | None = None
        self.node_proc: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def app_address(self) -> str:
        return f"tcp://127.0.0.1:{self.app_port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def start(self) -> Self:
        for name, port, flag in (("RPC", self.rpc_port, "rpc_port"), ("ABCI", self.app_port, "app_port")):
            if port_in_use("127.0.0.1", port):
                raise LaunchError(
                    f"{name} port {port} is already in use (another node or app running?). "
                    f"Stop it, or choose another {flag}."
                )
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            probe = self.log_dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise LaunchError(f"{self.home}: not writable ({exc.strerror}); pick another home") from None
        env = dict(os.environ)
        env.update(self.env or {})
        try:
            app_cmd = [sys.executable, "-m", "abci_app", "--home", str(self.home / "app"),
                       "--address", self.app_address]
            if self.app:
                app_cmd += ["--app", self.app]
            self.app_proc = subprocess.Popen(app_cmd, stdout=subprocess.DEVNULL,
                                             stderr=self._log("app.log"), env=env)
            node_cmd = [sys.executable, "-m", "abci_app.cli", "node", "--home", str(self.home / "node"),
                        "--proxy-app", self.app_address,
                        "--rpc-laddr", f"tcp://127.0.0.1:{self.rpc_port}",
                        "--block-time", str(self.block_time), "--chain-id", self.chain_id,
                        *self.node_args]
            if self.genesis is not None:
                node_cmd += ["--genesis", str(self.genesis)]
            self.node_proc = subprocess.Popen(node_cmd, stdout=subprocess.DEVNULL,
                                              stderr=self._log("node.log"), env=env)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("local chain up: RPC %s, app %s, logs in %s", self.rpc_url, self.app_address, self.log_dir)
        return self

    def _log(self, name: str) -> IO[bytes]:
        fh = open(self.log_dir / name, "ab")  # noqa: SIM115  (closed in stop())
        self._logs.append(fh)
        return fh

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            for name, proc in (("app", self.app_proc), ("node", self.node_proc)):
                if proc is not None and proc.poll() is not None:
                    raise LaunchError(
                        f"{name} exited with code {proc.returncode} during start; see "
                        f"{self.log_dir / (name + '.log')}:\n{self.tail(name)}"
                    )
            try:
                with urllib.request.urlopen(self.rpc_url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise LaunchError(f"node did not answer /health within {self.ready_timeout:.0f}s:\n{self.tail('node')}")

    def tail(self, name: str, n: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Node first (SIGINT: finishes its block), then the app (SIGTERM); kill on timeout."""
        for proc, sig in ((self.node_proc, signal.SIGINT), (self.app_proc, signal.SIGTERM)):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("pid %d ignored %s; killing it", proc.pid, sig.name)
                proc.kill()
                proc.wait()
        for fh in self._logs:
            with contextlib.suppress(OSError):
                fh.close()
        self._logs.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
