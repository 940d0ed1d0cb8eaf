"""Loopback TCP ports: is one free, which of a set are busy, pick free ones. The one port check of
`dlbc localnet`, `dlbc devnet`, the dev-node launcher and the tests.

Why bind instead of connect: a listener on 0.0.0.0 or one still starting does not always answer
a connect, but it always makes a bind on 127.0.0.1 fail. SO_REUSEADDR is set like Go's and
asyncio's listeners do, so a port only in TIME_WAIT from a previous run counts as free.

Every planned port is checked *before* anything starts (issue 7, bad input), and a busy one is
named with what it was for and the fix.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable

from dlbc_ops.supervisor import LOOPBACK, LaunchError

__all__ = ["LOOPBACK", "busy", "free_base", "free_port", "port_is_free", "require_free"]


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


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the kernel's pick among the ephemeral ones)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_base(
    ports_at: Callable[[int], Iterable[int]],
    *,
    start: int = 30000,
    stop: int = 60000,
    step: int = 97,
    host: str = LOOPBACK,
) -> int:
    """The first base in range(start, stop, step) whose every port `ports_at(base)` is free (for
    layouts of fixed offsets from a --base-port). Callers that may run side by side pick
    different `start`/`step` so that they do not race for the same block."""
    for base in range(start, stop, step):
        if all(port_is_free(p, host) for p in ports_at(base)):
            return base
    raise RuntimeError(f"no free block of ports on {host} in {start}..{stop}")


def busy(ports: Iterable[tuple[str, int]], host: str = LOOPBACK) -> list[tuple[str, int]]:
    """The (label, port) pairs whose port something already holds, in the given order."""
    return [(label, port) for label, port in ports if not port_is_free(port, host)]


def require_free(
    ports: Iterable[tuple[str, int]],
    fix: str,
    *,
    host: str = LOOPBACK,
    error: Callable[[str], Exception] = LaunchError,
) -> None:
    """Raise `error` naming every busy port, e.g. "port(s) already in use on 127.0.0.1: 26657
    (RPC). Another cometbft node, devnet or localnet may be running; fix: stop it, or `fix`"."""
    taken = busy(ports, host)
    if taken:
        listed = ", ".join(f"{port} ({label})" for label, port in taken)
        raise error(
            f"port(s) already in use on {host}: {listed}. Another cometbft node, devnet or "
            f"localnet may be running; fix: stop it, or {fix}"
        )
