"""A chain on localhost: `python -m abci_app` + `dlbc node` as child processes of one `Supervisor`.

Why: `dlbc devnet`, the end-to-end and sidecar tests and the dev-node tests all need "a chain on
localhost" without caring how it is made. This is that, with the rules of issue 7 for bad input:
ports and the folder are checked before anything starts, a failed start leaves nothing running,
and shutdown stops the node first (it finishes its current block) and then the app. The process
handling itself (process groups, SIGTERM then SIGKILL, logs, fail-fast readiness waits) is the
project's one launcher, `dlbc_ops.supervisor`, which `dlbc localnet` uses too.

Layout under `home`: app/ (the app's --home: LMDB, verdicts/), node/ (the dev node's home:
genesis, validator key, block store), logs/{app,node}.log.

    with LocalChain(home, block_time=0.5) as chain:      # check, app, node, wait for /health
        chain.rpc.broadcast_tx_commit(...)

or step by step (`write_genesis`, `start_app`, `start_node`, `kill`, `stop`), as the devnet and
the fault tests do.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from dlbc_ops import ports
from dlbc_ops.preflight import require_writable
from dlbc_ops.supervisor import (
    LOOPBACK,
    Child,
    LaunchError,
    Supervisor,
    log_tail,
    wait_for_http,
    wait_for_port,
)

if TYPE_CHECKING:
    from training.sidecars.rpc_client import RpcClient

__all__ = ["LaunchError", "LocalChain"]

log = logging.getLogger("dlbc_ops.devnode")

APP = "app"
NODE = "node"


class LocalChain:
    """One app + one dev node on 127.0.0.1; `stop()` is idempotent and safe in `finally`."""

    def __init__(
        self,
        home: Path,
        *,
        app: str = "dlbc",
        app_port: int = 26658,
        rpc_port: int = 26657,
        block_time: float = 1.0,
        chain_id: str | None = None,
        genesis: Path | None = None,
        log_level: str = "info",
        node_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
        grace_s: float = 15.0,
    ) -> None:
        self.home = Path(home)
        self.app = app
        self.app_port = app_port
        self.rpc_port = rpc_port
        self.block_time = block_time
        self.chain_id = chain_id
        self.genesis = genesis
        self.log_level = log_level
        self.node_args = tuple(node_args)
        self.env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.supervisor = Supervisor(self.home / "logs", grace_s=grace_s)
        self.rpc: RpcClient | None = None
        """A client of the node's RPC, made once the node answers (`start_node`)."""
        self._started: dict[str, Child] = {}

    # -- where things are

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rpc_port}"

    @property
    def app_address(self) -> str:
        return f"tcp://{LOOPBACK}:{self.app_port}"

    @property
    def app_home(self) -> Path:
        return self.home / "app"

    @property
    def node_home(self) -> Path:
        return self.home / "node"

    @property
    def log_dir(self) -> Path:
        return self.supervisor.log_dir

    @property
    def app_proc(self) -> subprocess.Popen[bytes] | None:
        """The app's process (the latest start; kept after `stop()` for its exit code)."""
        child = self._started.get(APP)
        return None if child is None else child.popen

    @property
    def node_proc(self) -> subprocess.Popen[bytes] | None:
        child = self._started.get(NODE)
        return None if child is None else child.popen

    def log_text(self, name: str) -> str:
        """The whole log of `name` ("app" or "node") so far ("" when there is none)."""
        try:
            return (self.log_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    # -- checks, genesis

    def check(self) -> None:
        """Raise LaunchError, starting nothing, if a port is taken or `home` is not writable."""
        ports.require_free(
            [("RPC", self.rpc_port), ("app ABCI", self.app_port)],
            "choose other ports (rpc_port / app_port)",
        )
        require_writable(self.log_dir, "pick another home")

    def write_genesis(
        self, chain_id: str, params: Mapping[str, Any], balances: Mapping[str, int]
    ) -> bool:
        """Write node/config/genesis.json (DLBC app_state: `params` over the defaults, genesis
        `balances`) unless it exists; True when it did, i.e. the chain resumes. LaunchError when
        the app_state is invalid."""
        from dlbc_ops import genesis as gen
        from dlbc_ops.devnode.home import load_or_create_key, make_genesis

        path = self.node_home / "config" / "genesis.json"
        if path.exists():
            return True  # resuming: the chain's genesis is fixed
        try:
            app_state = gen.build_app_state(
                None, accounts=sorted(balances.items()), params=params.items()
            )
        except gen.GenesisError as exc:
            raise LaunchError(f"invalid genesis: {exc}") from None
        doc = make_genesis(chain_id, load_or_create_key(self.node_home), app_state)
        gen.write_text_atomic(path, gen.dumps_genesis(doc))
        return False

    # -- processes

    def start_app(self, *, env: Mapping[str, str] | None = None, ready: bool = True) -> Child:
        """Start the app (`env` on top of the chain's); with `ready`, wait until it listens."""
        argv = [sys.executable, "-m", "abci_app", "--home", str(self.app_home),
                "--address", self.app_address, "--app", self.app, "--log-level", self.log_level]
        child = self._start(APP, argv, env)
        if ready:
            wait_for_port(self.app_port, child, self.ready_timeout)
        return child

    def start_node(self, *extra: str, ready: bool = True) -> Child:
        """Start the dev node (`extra`: more `dlbc node` flags, after the chain's `node_args`);
        with `ready`, wait until its RPC answers /health and make `self.rpc`."""
        argv = [sys.executable, "-m", "dlbc_ops.cli.main", "node", "--home", str(self.node_home),
                "--proxy-app", self.app_address, "--rpc-laddr", f"tcp://{LOOPBACK}:{self.rpc_port}",
                "--block-time", str(self.block_time), "--log-level", self.log_level]
        if self.chain_id is not None:
            argv += ["--chain-id", self.chain_id]
        if self.genesis is not None:
            argv += ["--genesis", str(self.genesis)]
        child = self._start(NODE, [*argv, *self.node_args, *extra], None)
        if ready:
            wait_for_http(f"{self.rpc_url}/health", child, self.ready_timeout)
            if self.rpc is None:
                from training.sidecars.rpc_client import Backoff, RpcClient

                self.rpc = RpcClient(
                    self.rpc_url, backoff=Backoff(attempts=3, initial=0.2, max_delay=1.0)
                )
        return child

    def _start(self, name: str, argv: list[str], env: Mapping[str, str] | None) -> Child:
        child = self.supervisor.start(name, argv, env={**self.env, **(env or {})})
        self._started[name] = child
        return child

    def start(self) -> Self:
        """`check()`, then app and node, waiting for each; on any failure nothing is left."""
        self.check()
        try:
            self.start_app()
            self.start_node()
        except BaseException:
            self.stop()
            raise
        log.info("local chain up: RPC %s, app %s, logs in %s", self.rpc_url, self.app_address,
                 self.log_dir)
        return self

    def check_alive(self) -> None:
        """LaunchError naming the first of app/node that has exited, with its log tail."""
        for child in self.supervisor.exited():
            raise LaunchError(
                f"{child.name} exited with code {child.popen.returncode}; last log lines "
                f"({child.log_path}):\n{log_tail(child.log_path)}"
            )

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout_s: float | None = None) -> int:
        """Signal "app" or "node" and wait for its exit code (SIGKILL after `timeout_s`)."""
        return self.supervisor.kill(name, sig, timeout_s)

    def stop(self) -> None:
        """The node first (SIGTERM: it finishes its block and exits 0), then the app."""
        self.supervisor.stop(first=(NODE,))
        if self.rpc is not None:
            self.rpc.close()
            self.rpc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
