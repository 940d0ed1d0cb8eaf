"""The `dlbc` command line: one entry point, one module per subcommand in `dlbc_ops.cli`.

Each module in `SUBCOMMANDS` exposes `register(subparsers)`, which adds its parser(s) and sets
`func=<callable(args) -> int>` as the default. The list is explicit, so what `dlbc` offers is
read here, and a subcommand module that fails to import fails loudly. No module imports torch
(or the sidecars) at import time, only inside its handler, so `dlbc keys` and `dlbc --help`
start fast. `python -m dlbc_ops` runs `main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from dlbc_ops.cli import (
    devnet,
    genesis,
    keys,
    localnet,
    mine,
    node,
    query,
    serve,
    task,
    transfer,
    verify,
)
from dlbc_ops.cli.common import Parser

#: Order here is the order in `dlbc --help`.
SUBCOMMANDS: tuple[ModuleType, ...] = (
    keys, node, genesis, localnet, serve, devnet, transfer, task, mine, verify, query,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(  # its formatter reaches every subcommand (common.HelpFormatter)
        prog="dlbc",
        description="DLBC on CometBFT: deep-learning training as the useful work of a blockchain.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
