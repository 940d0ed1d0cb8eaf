"""Watch a running localnet: print heights (and, with --demo, the active rounds) until stopped.

A crashed child is reported once, with how to restart it, and the rest carry on: a BFT network
of N validators keeps committing with up to f = (N-1)//3 of them down, which is exactly what an
operator runs a localnet to see. Only when every `cometbft node` has exited does it give up.
"""

from __future__ import annotations

import shlex
import sys
import time

from dlbc_ops.localnet import demo
from dlbc_ops.localnet.layout import LocalnetError
from dlbc_ops.localnet.plan import LocalnetPlan
from dlbc_ops.localnet.runner import node_height, rpc_get
from dlbc_ops.supervisor import Supervisor, log_tail

PRINT_EVERY_S = 5.0


def follow(plan: LocalnetPlan, sup: Supervisor, *, until_height: int = 0,
           timeout_s: float = 60.0, show_round: bool = False) -> int:
    """Until every node reaches `until_height` (0: until Ctrl-C) or no node is left; exit code.

    With `until_height`, LocalnetError if it is not reached in `timeout_s` plus 5 s a block."""
    last_print = 0.0
    deadline = time.monotonic() + timeout_s + until_height * 5
    reported: set[int] = set()
    while True:
        for c in sup.exited():
            if id(c.popen) in reported:
                continue
            reported.add(id(c.popen))
            print(
                f"warning: {c.name} exited with code {c.popen.returncode}; the other processes "
                f"carry on. Restart it with: {shlex.join(c.argv)}\nLast log lines "
                f"({c.log_path}):\n{log_tail(c.log_path)}",
                file=sys.stderr,
                flush=True,
            )
        nodes = [c for c in sup.children if c.name.startswith("cometbft")]
        if nodes and all(c.popen.poll() is not None for c in nodes):
            print("error: every cometbft node has exited; stopping the localnet", file=sys.stderr)
            return 1
        now = time.monotonic()
        heights = [node_height(plan.rpc_url(i)) for i in range(plan.validators)]
        if until_height and min(h or 0 for h in heights) >= until_height:
            print(f"reached height {until_height} on every node: {heights}")
            return 0
        if until_height and now > deadline:
            raise LocalnetError(
                f"nodes did not reach height {until_height} in time (heights {heights}); "
                f"see the logs in {sup.log_dir}"
            )
        if now - last_print >= PRINT_EVERY_S:
            line = "heights: " + " ".join(
                f"node{i}={h if h is not None else '?'}" for i, h in enumerate(heights)
            )
            if show_round:
                rpc = plan.rpc_url(0)
                summary = demo.rounds_summary(
                    rpc_get(demo.round_query_url(rpc, "rounds/active")),
                    rpc_get(demo.round_query_url(rpc)),
                )
                if summary:
                    line += f"  |  {summary}"
            print(line, flush=True)
            last_print = now
        time.sleep(0.5)
