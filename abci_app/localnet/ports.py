"""Is a loopback TCP port free? Checked for every planned port *before* anything starts.

Why bind instead of connect: a listener on 0.0.0.0 or one still starting does not always
answer a connect, but it always makes a bind on 127.0.0.1 fail. SO_REUSEADDR is set like Go's
and asyncio's listeners do, so a port only in TIME_WAIT from a previous run counts as free.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from abci_app.localnet.plan import LOOPBACK, LocalnetError, NodePorts


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def busy_ports(ports: Iterable[NodePorts], host: str = LOOPBACK) -> list[tuple[int, str, int]]:
    """(node index, role, port) for each planned port something else already holds."""
    busy: list[tuple[int, str, int]] = []
    for i, node in enumerate(ports):
        for role, port in node.labelled():
            if not port_is_free(port, host):
                busy.append((i, role, port))
    return busy


def require_free(ports: list[NodePorts], base_port: int, host: str = LOOPBACK) -> None:
    """Raise LocalnetError naming every busy port and the fix."""
    busy = busy_ports(ports, host)
    if not busy:
        return
    listed = ", ".join(f"{port} (node{i} {role})" for i, role, port in busy)
    span = f"{ports[0].p2p}..{ports[-1].sidecar}"
    raise LocalnetError(
        f"port(s) already in use on {host}: {listed}. Another cometbft, devnet or localnet may "
        f"be running; fix: stop it, or pass --base-port P (this localnet uses {span}, "
        f"10 ports per node from P)"
    )
