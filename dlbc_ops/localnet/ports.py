"""The localnet's planned ports (`NodePorts` of each node), checked through `dlbc_ops.ports`
before anything starts; a busy one is named as `36667 (node1 RPC)` with the --base-port fix."""

from __future__ import annotations

from collections.abc import Iterable

from dlbc_ops import ports as net_ports
from dlbc_ops.localnet.layout import LOOPBACK, PORT_STRIDE, LocalnetError, NodePorts, plan_ports


def busy_ports(ports: Iterable[NodePorts], host: str = LOOPBACK) -> list[tuple[int, str, int]]:
    """(node index, role, port) for each planned port something else already holds."""
    busy: list[tuple[int, str, int]] = []
    for i, node in enumerate(ports):
        busy += [(i, role, port) for role, port in net_ports.busy(node.labelled(), host)]
    return busy


def require_free(ports: list[NodePorts], base_port: int, host: str = LOOPBACK) -> None:
    """Raise LocalnetError naming every busy port and the fix."""
    span = f"{ports[0].p2p}..{ports[-1].sidecar}"
    net_ports.require_free(
        [(f"node{i} {role}", p) for i, node in enumerate(ports) for role, p in node.labelled()],
        f"pass --base-port P (this localnet uses {span}, 10 ports per node from P)",
        host=host,
        error=LocalnetError,
    )


def free_base_port(
    validators: int, *, extra: int = 0, start: int = 30000, step: int = 97, host: str = LOOPBACK
) -> int:
    """A --base-port whose localnet block is free: every node's ports and `extra` more right
    after the last node's (`--demo`'s artifact servers: 3). For tests and benchmarks."""

    def ports_at(base: int) -> list[int]:
        nodes = [p for node in plan_ports(validators, base) for _, p in node.labelled()]
        after = base + PORT_STRIDE * validators
        return nodes + list(range(after, after + extra))

    return net_ports.free_base(ports_at, start=start, step=step, host=host)
