"""`python -m abci_app --home DIR --address tcp://127.0.0.1:26658 [--app dlbc|kvstore|MOD:CLASS]`

Runs the ABCI socket server that a `cometbft node --proxy_app tcp://127.0.0.1:26658` connects
to. The app class is constructed as `AppClass(home: Path)`. The default is the DLBC state machine
(`abci_app.dlbc.app:DlbcApplication`); if it cannot be imported the process exits 2 with the
reason, never falling back to another app: a validator serving the wrong app would fork off the
chain. `--app kvstore` serves the CometBFT kvstore example; `--app MODULE:CLASS` serves an
`Application` subclass of your own (the dev-node tests serve a kvstore variant this way).
Exit code 1 after a fatal application error (InitChain/FinalizeBlock/Commit failed).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from abci_app.application import Application
from abci_app.logs import LEVELS, setup_logging

log = logging.getLogger("abci_app")


def _dlbc() -> type[Application]:
    from abci_app.dlbc.app import DlbcApplication

    return DlbcApplication


def _kvstore() -> type[Application]:
    from abci_app.kvstore import KVStoreApplication

    return KVStoreApplication


#: The named apps. Imported only when chosen: `--app kvstore` must not need the DLBC app's
#: dependencies, and `--app dlbc` must fail loudly if they are missing.
APPS = {"dlbc": _dlbc, "kvstore": _kvstore}
DEFAULT_APP = "dlbc"


def resolve_app_class(spec: str) -> type[Application]:
    """The class `--app SPEC` names: `dlbc`, `kvstore` or `module:Class`.

    Raises ImportError/AttributeError when it cannot be loaded, ValueError for a malformed
    spec and TypeError when the target is not an `Application` subclass; the caller exits."""
    named = APPS.get(spec)
    if named is not None:
        return named()
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"--app must be {', '.join(APPS)} or module:Class, got {spec!r}")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Application)):
        raise TypeError(f"{spec} is not an abci_app.application.Application subclass")
    return cls


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m abci_app", description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, required=True, help="app data directory (LMDB under it)")
    p.add_argument("--address", default="tcp://127.0.0.1:26658",
                   help="listen address: tcp://HOST:PORT or unix:///path.sock")
    p.add_argument("--app", default=DEFAULT_APP,
                   help="dlbc | kvstore | module:Class (default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=LEVELS)
    return p


async def _run(app: Application, address: str) -> int:
    from abci_app.server import AbciServer

    server = AbciServer(app, address)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    return await server.serve()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        cls = resolve_app_class(args.app)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        log.error("cannot load app %r: %s", args.app, exc)
        return 2
    args.home.mkdir(parents=True, exist_ok=True)
    app = cls(args.home)
    log.info("starting %s.%s home=%s", cls.__module__, cls.__name__, args.home)
    try:
        code = asyncio.run(_run(app, args.address))
    finally:
        app.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
