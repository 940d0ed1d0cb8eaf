"""`dlbc devnet`: one command brings up a whole DLBC chain on this machine (issue 7, main job).

App, embedded dev node, a publisher, two miners and a verifier under one --out folder; each
round is printed as it happens, OUT/plots/ and OUT/history.json follow it. Ctrl-C (or SIGTERM)
stops the sidecars, then the node, then the app; running again with the same --out resumes.
The orchestration is `dlbc_ops.devnet.devnet.Devnet`; this module only reads the flags.
`dlbc localnet` runs this command (`run`) when no CometBFT binary is installed.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from dlbc_ops.devnet.config import DevnetConfig, demo_miners
from dlbc_ops.localnet import demo
from dlbc_ops.supervisor import LaunchError

_DEFAULTS = DevnetConfig()


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=_DEFAULTS.out,
                   help="output folder for chain state, models, logs and plots (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=None, help="stop after N rounds (default: run on)")
    p.add_argument("--base-port", type=int, default=_DEFAULTS.base_port,
                   help="RPC port; app uses +1, artifact servers +10.. (default: %(default)s)")
    p.add_argument("--block-time", type=float, default=_DEFAULTS.block_time,
                   help="seconds per block (default: %(default)s)")
    p.add_argument("--train-seconds", type=int, default=_DEFAULTS.train_seconds,
                   help="TRAIN phase length")
    p.add_argument("--reveal-seconds", type=int, default=_DEFAULTS.reveal_seconds,
                   help="REVEAL phase length")
    p.add_argument("--verify-seconds", type=int, default=_DEFAULTS.verify_seconds,
                   help="VERIFY phase length")
    p.add_argument("--sequential", action="store_true",
                   help="genesis rounds_in_flight=1: a round starts only after the one before "
                        "it closed (default: pipelined, round n+1 trains while round n reveals "
                        "and verifies; a fresh --out only, a resumed chain keeps its params)")
    p.add_argument("--samples", type=int, default=_DEFAULTS.samples, help="demo images per task")
    p.add_argument("--small-budget", type=float, default=demo.SMALL_BUDGET_S,
                   help="miner-2's training seconds per round (miner-1 uses all of TRAIN)")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error", "critical"),
                   help="least severe log level of the app, node and sidecars")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.add_argument("--metrics", action="store_true",
                   help="serve Prometheus metrics per sidecar on base-port+20..+29")
    p.add_argument("--fund", action="append", default=[], metavar="ADDR=AMOUNT",
                   help="faucet: send AMOUNT to ADDR (40-hex address, or a `dlbc keys` NAME) "
                        "once the chain is up, on every start; repeatable. The faucet's own key "
                        "is OUT/keys/faucet.json (`dlbc transfer --key` it for more)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dlbc devnet`."""
    p = subparsers.add_parser(
        "devnet",
        help="run a local DLBC chain: app, dev node, publisher, 2 miners, verifier",
        description=(
            "Bring up a complete DLBC chain on this machine with the embedded dev node (a "
            "development stand-in for CometBFT). Prints each round as it happens; Ctrl-C stops "
            "everything; running again with the same --out resumes."),
    )
    _add_arguments(p)
    p.set_defaults(func=run_devnet)


def build_parser() -> argparse.ArgumentParser:
    """`dlbc devnet`'s own parser, the same options `register` adds."""
    p = argparse.ArgumentParser(prog="dlbc devnet")
    _add_arguments(p)
    return p


def run(argv: Sequence[str]) -> int:
    """`dlbc devnet ARGV` without the rest of the CLI (for `dlbc localnet`'s fallback)."""
    return run_devnet(build_parser().parse_args(list(argv)))


def parse_funds(specs: Sequence[str]) -> list[tuple[bytes, int]]:
    """`ADDR=AMOUNT` pairs of --fund; ValueError naming the bad one."""
    from dlbc_ops.cli.common import CliError
    from dlbc_ops.cli.transfer import resolve_address

    funds = []
    for spec in specs:
        addr, sep, amount = spec.rpartition("=")
        if not sep or not addr or not amount.isdigit() or int(amount) < 1:
            raise ValueError(f"--fund {spec!r}: expected ADDR=AMOUNT with AMOUNT >= 1")
        try:
            funds.append((resolve_address(addr, None), int(amount)))
        except CliError as exc:
            raise ValueError(f"--fund {spec!r}: {exc}") from None
    return funds


def run_devnet(args: argparse.Namespace) -> int:
    from dlbc_ops.devnet.devnet import Devnet

    if args.rounds is not None and args.rounds < 1:
        print("devnet: --rounds must be >= 1", file=sys.stderr)
        return 2
    try:
        funds = parse_funds(getattr(args, "fund", []))
    except ValueError as exc:
        print(f"devnet: {exc}", file=sys.stderr)
        return 2
    cfg = DevnetConfig(
        out=args.out, base_port=args.base_port, rounds=args.rounds, block_time=args.block_time,
        train_seconds=args.train_seconds, reveal_seconds=args.reveal_seconds,
        verify_seconds=args.verify_seconds, sequential=args.sequential,
        samples=args.samples, log_level=args.log_level,
        plots=not args.no_plots, metrics=args.metrics, miners=demo_miners(args.small_budget),
        funds=funds,
    )
    net = Devnet(cfg)
    try:
        net.start()
    except LaunchError as exc:
        print(f"devnet: {exc}", file=sys.stderr)
        return 1
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: net.stop())
    code = 0
    try:
        code = net.run()
    except KeyboardInterrupt:
        net.say("Ctrl-C: stopping sidecars, node and app")
        code = 130
    except LaunchError as exc:
        print(f"devnet: {exc}", file=sys.stderr)
        code = 1
    finally:
        net.shutdown()
        signal.signal(signal.SIGTERM, previous)
    net.say(f"stopped; state kept in {cfg.out} (run again to resume)")
    return code
