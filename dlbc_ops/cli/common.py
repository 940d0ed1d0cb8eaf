"""Helpers shared by the sidecar subcommands (`dlbc task|mine|verify|query`).

Why one module: every sidecar takes the same node/key/metrics/rounds options and prints tables
the same way, so an operator learns them once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from abci_app.logs import quiet_http_logs

DEFAULT_RPC = "http://127.0.0.1:26657"


class CliError(Exception):
    """A problem the user can fix; printed as `dlbc: <message>` with exit code 2."""


class HelpFormatter(argparse.HelpFormatter):
    """`dlbc ... --help` as a first-time user needs it.

    Descriptions are prose paragraphs (wrapped to the terminal) and example command lines
    (indented, kept exactly as written, so they can be copied); an option with a default worth
    knowing gets "(default: X)" unless its help already says, so no help text can forget it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for par in textwrap.dedent(text).strip("\n").split("\n\n"):
            lines = par.split("\n")
            if any(ln.startswith(" ") for ln in lines):  # examples, tables: as written
                out.append("\n".join(indent + ln for ln in lines))
            else:
                out.append(textwrap.fill(" ".join(par.split()), width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is argparse.SUPPRESS
                or default is None or isinstance(default, bool)
                or (isinstance(default, list | tuple | dict) and not default)):  # "(repeat)"
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The parser of `dlbc` and every subcommand: `HelpFormatter` unless told otherwise
    (subparsers are made of their parent's class, so one `parser_class=Parser` reaches all)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_node_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpc", default=DEFAULT_RPC, metavar="URL",
                   help="CometBFT RPC address of a node (default: %(default)s)")


def add_sidecar_options(p: argparse.ArgumentParser, *, key: bool = True) -> None:
    add_node_options(p)
    if key:
        p.add_argument("--key", required=True, metavar="NAME|PATH",
                       help="key file path, or a key NAME created with `dlbc keys new NAME`")
        p.add_argument("--home", type=Path, default=None, metavar="DIR",
                       help="where `dlbc keys` keeps named keys (default: $DLBC_HOME or ~/.dlbc)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on this port (0 = any free port; default: "
                        "no metrics)")
    p.add_argument("--rounds", type=int, default=None, metavar="N",
                   help="stop after N closed rounds (default: run until Ctrl-C)")
    p.add_argument("--poll", type=float, default=0.5, metavar="SECONDS",
                   help="seconds between chain polls")
    p.add_argument("--allow-private-networks", action="store_true",
                   help="also fetch from loopback/private/link-local addresses (single-machine "
                        "and LAN test chains only; off: a URI a stranger names cannot reach "
                        "this host's own network)")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error", "critical"),
                   help="least severe log level printed")


def sidecar_settings(args: argparse.Namespace) -> dict[str, object]:
    """The config fields every sidecar takes from the shared options (`add_sidecar_options`)."""
    return {"rpc_url": args.rpc, "workdir": Path(args.workdir), "poll_seconds": args.poll,
            "metrics_port": args.metrics_port, "max_rounds": args.rounds,
            "allow_private_networks": args.allow_private_networks}


def key_file(spec: str, home: Path | None) -> Path:
    """Where the key `spec` lives: a file path as given, or a NAME's `<home>/keys/NAME.json`
    (abci_app.keyfile layout).

    A path is anything with a "/", ending in ".json" or naming an existing file; anything else
    is a name. One rule for `--key` and `dlbc keys new|show`, so a key that one accepts the
    others accept too. Raises `KeyFileError` for a name that could escape the keys folder."""
    from abci_app.keyfile import default_home, key_path

    path = Path(spec).expanduser()
    if path.exists() or "/" in spec or spec.endswith(".json"):
        return path
    return key_path(home or default_home(), spec)


def resolve_key(spec: str, home: Path | None) -> Any:
    """The key pair `spec` names (`key_file`); a missing or bad file is a `CliError`."""
    from abci_app.keyfile import KeyFileError, load_key

    try:
        path = key_file(spec, home)
    except (ValueError, KeyFileError) as exc:
        raise CliError(str(exc)) from None
    try:
        return load_key(path)
    except KeyFileError as exc:
        raise CliError(f"{exc} (create one with `dlbc keys new NAME`)") from None


def setup_logs(level: str) -> None:
    from abci_app.logs import setup_logging

    setup_logging(level)
    quiet_http_logs()


def set_torch_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def run_sidecar(sidecar: Any) -> int:
    """Run a sidecar in the foreground; Ctrl-C stops it cleanly."""
    try:
        sidecar.start_metrics()
    except OSError as exc:
        sidecar.teardown()  # e.g. the artifact server already started: stop it
        raise CliError(str(exc)) from None
    try:
        return int(sidecar.run())
    except KeyboardInterrupt:
        sidecar.stop()
        return 130


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str],
                out: TextIO | None = None) -> None:
    """An aligned table (`rich`): header, rule, one line per row; `None` shows as "-".

    On a terminal it fits the window; in a pipe or log no row is wrapped or cut, so `grep`
    and line-based tests see each row whole."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    out = out or sys.stdout
    table = Table(*headers, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for r in rows:
        table.add_row(*("-" if c is None else str(c) for c in r))
    console = Console(file=out)
    if not console.is_terminal:
        console = Console(file=out, width=10_000, no_color=True)
    console.print(table)
    if not rows:
        print("(none)", file=out)


def print_json(doc: Any, out: TextIO | None = None) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True), file=out or sys.stdout)


def guarded(func: Any) -> Any:
    """Turn CliError / unreachable node into a one-line message and exit code 2."""

    def wrapper(args: argparse.Namespace) -> int:
        from training.sidecars.rpc_types import NodeUnreachable, RpcError

        try:
            return int(func(args) or 0)
        except BrokenPipeError:  # `dlbc query ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
            return 0
        except CliError as exc:
            print(f"dlbc: {exc}", file=sys.stderr)
            return 2
        except NodeUnreachable as exc:
            print(f"dlbc: node unreachable at {getattr(args, 'rpc', '?')}: {exc}. "
                  "Is `cometbft node` (or `dlbc node` / `dlbc devnet`) running?", file=sys.stderr)
            return 2
        except RpcError as exc:
            print(f"dlbc: {exc}", file=sys.stderr)
            return 2

    wrapper.__name__ = getattr(func, "__name__", "command")
    wrapper.__doc__ = func.__doc__
    return wrapper
