"""Start a localnet's processes: N `python -m abci_app`, N `cometbft node`, verifiers, sidecars
(`--sidecar` templates), and the `--demo` publisher and miners; ask a node for heights.

The process handling itself (process groups, SIGTERM then SIGKILL, logs, kill/restart) is the
shared `dlbc_ops.supervisor.Supervisor`; this module knows the localnet's order of start (apps
before nodes: CometBFT dials proxy_app once at start) and how to ask a node's RPC for heights and
app hashes.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlbc_ops.localnet.demo import DemoProcess, DemoSettings, demo_processes, miner_rpc_url
from dlbc_ops.localnet.layout import LOOPBACK, LocalnetError, app_home, node_home
from dlbc_ops.localnet.plan import LocalnetPlan
from dlbc_ops.supervisor import Supervisor, log_tail, wait_for_port


def rpc_get(url: str, timeout_s: float = 2.0) -> Any:
    """GET a CometBFT URI-style RPC endpoint and return its `result` (None on any failure)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read(1 << 20))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body.get("result") if isinstance(body, dict) else None


def node_height(rpc_url: str) -> int | None:
    result = rpc_get(f"{rpc_url}/status")
    try:
        return int(result["sync_info"]["latest_block_height"])
    except (TypeError, KeyError, ValueError):
        return None


def app_hash_at(rpc_url: str, height: int) -> str | None:
    """The app hash in the header of block `height` (= state after height-1)."""
    result = rpc_get(f"{rpc_url}/block?height={height}")
    try:
        return str(result["block"]["header"]["app_hash"])
    except (TypeError, KeyError):
        return None


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What a sidecar hook may need about node i (also the fields of --sidecar templates)."""

    i: int
    node_home: str
    app_home: str
    rpc_url: str
    rpc_port: int
    abci_addr: str
    metrics_port: int
    extra_port1: int
    extra_port2: int
    extra_port3: int
    chain_id: str
    python: str

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


SidecarHook = Callable[[NodeContext], list[list[str]]]


def node_context(plan: LocalnetPlan, i: int) -> NodeContext:
    ports = plan.node_ports(i)
    root = Path(plan.root)
    return NodeContext(
        i=i,
        node_home=str(node_home(root, i)),
        app_home=str(app_home(root, i)),
        rpc_url=plan.rpc_url(i),
        rpc_port=ports.rpc,
        abci_addr=f"tcp://{LOOPBACK}:{ports.abci}",
        metrics_port=ports.sidecar,
        # +7..+9 of the node's block of 10: free for extra sidecars (artifact server, metrics)
        extra_port1=ports.p2p + 7,
        extra_port2=ports.p2p + 8,
        extra_port3=ports.p2p + 9,
        chain_id=plan.chain_id,
        python=sys.executable,
    )


def sidecar_hook_from_templates(templates: list[str]) -> SidecarHook | None:
    """--sidecar 'CMD {app_home} {rpc_url}' templates -> a hook giving argv lists per node."""
    if not templates:
        return None
    fields = set(NodeContext.__slots__)

    def hook(ctx: NodeContext) -> list[list[str]]:
        try:
            return [shlex.split(t.format(**ctx.as_dict())) for t in templates]
        except (KeyError, IndexError, ValueError) as exc:
            raise LocalnetError(
                f"--sidecar template error ({exc}); fields: {', '.join(sorted(fields))}"
            ) from None

    # Fail on a bad template now, before anything starts, not after the nodes are up.
    hook(NodeContext(0, "/h", "/a", "http://x:1", 1, "tcp://x:2", 5, 7, 8, 9, "c", "python"))
    return hook


def app_command(ctx: NodeContext, app: str = "dlbc") -> list[str]:
    """How node i's ABCI app is started (README: pairing a node with `python -m abci_app`).
    `app`: which of `python -m abci_app --app` (the bench also runs the small kvstore on the very
    same transport, to tell the socket's cost from the state machine's)."""
    return [ctx.python, "-m", "abci_app", "--home", ctx.app_home, "--address", ctx.abci_addr,
            "--app", app]


def node_command(cometbft: str, ctx: NodeContext) -> list[str]:
    return [cometbft, "node", "--home", ctx.node_home]


def verifier_command(ctx: NodeContext, extra: Sequence[str] = ()) -> list[str]:
    """Node i's verifier sidecar (`dlbc verify`): it must write verdicts into *this* node's app
    home, which that app's ExtendVote reads (docs/verification.md), and follow this node's RPC.
    `extra`: more `dlbc verify` flags (the demo bounds its threads and per-model time)."""
    return [
        ctx.python, "-m", "dlbc_ops", "verify",
        "--app-home", ctx.app_home, "--rpc", ctx.rpc_url, "--metrics-port", str(ctx.metrics_port),
        "--allow-private-networks",  # a localnet's artifact servers all listen on this machine
        *extra,
    ]  # fmt: skip


def start_localnet(
    plan: LocalnetPlan,
    sup: Supervisor,
    *,
    cometbft: str,
    sidecars: SidecarHook | None = None,
    verifiers: bool = False,
    verifier_extra: Sequence[str] = (),
    startup_timeout_s: float = 60.0,
    say: Callable[[str], None] = print,
    app: str = "dlbc",
) -> None:
    """Apps first (CometBFT dials proxy_app once at start), then nodes, then each validator's
    verifier (`verifiers`) and the `sidecars` hook's processes (logs sidecar<i>-<k>); returns
    when every node has committed height >= 1. On any failure raises; the caller stops `sup`."""
    contexts = [node_context(plan, i) for i in range(plan.validators)]
    apps = [sup.start(f"app{c.i}", app_command(c, app)) for c in contexts]
    for ctx, child in zip(contexts, apps, strict=True):
        wait_for_port(plan.node_ports(ctx.i).abci, child, startup_timeout_s)
    say(f"started {len(apps)} ABCI app(s): python -m abci_app")
    nodes = [sup.start(f"cometbft{c.i}", node_command(cometbft, c)) for c in contexts]
    for ctx, child in zip(contexts, nodes, strict=True):
        wait_for_port(plan.node_ports(ctx.i).rpc, child, startup_timeout_s)
    say(f"started {len(nodes)} cometbft node(s)")
    if verifiers:
        for ctx in contexts:
            sup.start(f"verify{ctx.i}", verifier_command(ctx, verifier_extra))
    if sidecars is not None:
        for ctx in contexts:
            for k, argv in enumerate(sidecars(ctx)):
                sup.start(f"sidecar{ctx.i}-{k}", argv)
    wait_for_height(plan, sup, 1, startup_timeout_s)


def start_demo(
    plan: LocalnetPlan,
    sup: Supervisor,
    settings: DemoSettings,
    timeout_s: float,
    python: str = sys.executable,
) -> list[DemoProcess]:
    """Publisher (node0's RPC) + miners (node1's) once for the whole network; returns when each
    serves its artifact port (so a bad key or busy port fails here, with its log tail)."""
    procs = demo_processes(
        Path(plan.root), plan.rpc_url(0), plan.validators, plan.base_port, settings, python,
        miner_rpc_url=miner_rpc_url(plan),
    )  # fmt: skip
    children = [sup.start(p.name, p.argv) for p in procs]
    for p, child in zip(procs, children, strict=True):
        wait_for_port(p.artifact_port, child, timeout_s)
    return procs


def wait_for_height(
    plan: LocalnetPlan, sup: Supervisor, height: int, timeout_s: float
) -> list[int]:
    """Until every node reports latest_block_height >= height; fails fast if a child died."""
    deadline = time.monotonic() + timeout_s
    heights: list[int] = []
    while True:
        dead = sup.exited()
        if dead:
            c = dead[0]
            raise LocalnetError(
                f"{c.name} exited with code {c.popen.returncode}; last log lines "
                f"({c.log_path}):\n{log_tail(c.log_path)}"
            )
        heights = [node_height(plan.rpc_url(i)) or 0 for i in range(plan.validators)]
        if min(heights) >= height:
            return heights
        if time.monotonic() > deadline:
            raise LocalnetError(
                f"nodes did not reach height {height} within {timeout_s:.0f}s (heights {heights}); "
                f"see the logs in {sup.log_dir}"
            )
        time.sleep(0.5)


class Terminated(Exception):
    """SIGTERM/SIGHUP arrived; unwinds to the `finally` that stops every child."""


def install_signal_handlers() -> Callable[[], None]:
    """Turn SIGTERM/SIGHUP into `Terminated` (SIGINT already raises KeyboardInterrupt)."""

    def handler(signum: int, _frame: object) -> None:
        raise Terminated(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
