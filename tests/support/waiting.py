"""Polling until a condition holds, failing with what was awaited (and the processes' logs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dlbc_ops.supervisor import Supervisor, log_tail


def wait_for(cond: Callable[[], Any], timeout: float, what: str, poll: float = 0.25, *,
             sup: Supervisor | None = None) -> Any:
    """Poll `cond` until truthy and return its value; on timeout fail naming `what`, with the
    last log lines of every child of `sup` when given (a hung chain says why)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "" if sup is None else "\n" + "\n".join(
                f"--- {c.name}\n{log_tail(c.log_path, 8)}" for c in sup.children)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{tails}")
        time.sleep(poll)
