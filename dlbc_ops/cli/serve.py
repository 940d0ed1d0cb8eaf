"""`dlbc serve-artifacts DIR [--host H] [--port P]`: host a folder of artifacts over HTTP.

For files a publisher or miner prepared by hand; the sidecars serve their own folders
in-process. The server (read-only, never outside DIR) is `training.sidecars.artifact_server`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from training.sidecars.artifact_server import ArtifactServer

    try:
        server = ArtifactServer(args.directory, host=args.host, port=args.port)
    except (ValueError, OSError) as exc:
        print(f"serve-artifacts: {exc}")
        return 2
    print(f"serving {args.directory.resolve()} at {server.base_url}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dlbc serve-artifacts`."""
    p = subparsers.add_parser(
        "serve-artifacts",
        help="serve a directory of artifacts (models, encrypted data) over HTTP",
        description="Read-only HTTP server for DLBC artifacts; never serves outside DIR.",
    )
    p.add_argument("directory", type=Path, metavar="DIR",
                   help="folder whose files are served (read-only, no listing)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8700, help="port (default 8700, 0 = any free)")
    p.set_defaults(func=_serve)
