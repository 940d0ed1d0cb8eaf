"""The `dlbc` command line: one entry point, subcommands owned by the modules that implement them.

Each subcommand lives beside the code it drives (the miner in `training/`, the devnet in
`abci_app/`, ...). A module listed in `_SUBCOMMAND_MODULES` exposes
`register(subparsers: argparse._SubParsersAction) -> None`, which adds its parser(s) and sets
`func=<callable(args) -> int>` as the default. Modules are imported lazily so that `dlbc keys`
does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Order here is the order in `dlbc --help`.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "abci_app.keyfile",
    "dlbc_ops.cli.node",
    "dlbc_ops.genesis.builder",
    "dlbc_ops.cli.localnet",
    "training.sidecars.artifact_server",
    "dlbc_ops.devnet.command",
    "dlbc_ops.cli.sidecars",
    "dlbc_ops.cli.query",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlbc",
        description="DLBC on CometBFT: deep-learning training as the useful work of a blockchain.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(name)
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
