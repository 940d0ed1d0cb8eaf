"""Checks made before anything starts: is a folder writable. (Ports: `dlbc_ops.ports`.)

Why up front: issue 7's rule for bad input is that nothing is started, and nothing half made
is left behind, when an operator's --out/--home cannot be written; a probe file created and
removed now fails with the reason and the fix instead of a traceback from a child later.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from dlbc_ops.supervisor import LaunchError


def require_writable(
    folder: Path, fix: str, *, error: Callable[[str], Exception] = LaunchError
) -> None:
    """Create `folder` (parents too) and a probe file in it; raise `error` naming `fix` if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(
            f"cannot write to {folder} (not writable: {exc.strerror or exc}); fix: {fix}"
        ) from None
