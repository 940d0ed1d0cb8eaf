"""Operator-readable logging setup shared by `python -m abci_app` and the devnet.

One line per event, UTC timestamps, logger name; keys and secrets are never logged by anyone.
"""

from __future__ import annotations

import logging
import sys
import time

LEVELS = ("debug", "info", "warning", "error", "critical")
_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-5s %(name)s: %(message)s"


def setup_logging(level: str = "info", stream: object = None) -> None:
    """Configure the root logger once (idempotent: replaces our previous handler)."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    formatter = logging.Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.set_name("dlbc")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "dlbc":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def quiet_http_logs() -> None:
    """httpx logs every request at INFO: one line per poll would drown a sidecar's story."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
