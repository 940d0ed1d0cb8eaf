"""`dlbc localnet`: an N-validator DLBC chain on this machine with real `cometbft` binaries.

Steps (issue 7): detect `cometbft version` (v0.38.x / v1.0.x, others refused) -> check every
planned port is free and the folder writable -> `cometbft testnet --v N` into a temporary folder ->
patch genesis + configs -> move into place (`dlbc_ops.localnet.home`) -> start apps, nodes, each
validator's verifier (`dlbc verify`, which feeds its ExtendVote) and --sidecar processes
(`dlbc_ops.localnet.runner`) -> wait for height 1 -> (--demo: publisher + two miners, once, against
node0's RPC) -> print heights (and the round) until Ctrl-C (`dlbc_ops.localnet.follow`) -> stop
everything.

`dlbc localnet --validators 4 --demo` is the project's main job on real CometBFT (`make demo`):
the demo's keys, genesis funding, phase lengths and commands are planned in
`dlbc_ops.localnet.demo`.

A rerun with the same --home resumes the chain (genesis untouched). Without `cometbft` on PATH it
prints how to install it and falls back to `dlbc devnet` (the embedded single-validator
development stand-in, which always runs the demo) with the matching options (`devnet_argv`).
This module reads the flags and prints; the work is done by `dlbc_ops.localnet`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from dlbc_ops import genesis as gen
from dlbc_ops.cli import devnet as devnet_cli
from dlbc_ops.cometbft import (
    CometbftError,
    check_supported,
    detect_cometbft,
    find_cometbft,
    supported_hint,
)
from dlbc_ops.localnet import demo, layout, nodeconfig
from dlbc_ops.localnet import plan as lp
from dlbc_ops.localnet.follow import follow
from dlbc_ops.localnet.home import (
    DEVNET_DIR,
    HomeRequest,
    check_writable,
    create_home,
    resume_home,
)
from dlbc_ops.localnet.ports import require_free
from dlbc_ops.localnet.runner import (
    Terminated,
    app_command,
    install_signal_handlers,
    node_command,
    node_context,
    sidecar_hook_from_templates,
    start_demo,
    start_localnet,
    verifier_command,
)
from dlbc_ops.supervisor import LaunchError, Supervisor

DEFAULT_CHAIN_ID = "dlbc-localnet"
_DEFAULT_TIMEOUT_COMMIT = nodeconfig.ConsensusSettings().timeout_commit


def default_home() -> Path:
    env = os.environ.get("DLBC_HOME")
    return (Path(env) if env else Path.home() / ".dlbc") / "localnet"


def _print_plan(plan: lp.LocalnetPlan, cometbft: str) -> None:
    print(
        f"localnet {plan.chain_id}: {plan.validators} validator(s), CometBFT {plan.form} form, "
        f"home {plan.root}"
    )
    for i in range(plan.validators):
        p = plan.node_ports(i)
        print(
            f"  node{i}: rpc {plan.rpc_url(i)}  p2p {p.p2p}  "
            f"abci tcp://{layout.LOOPBACK}:{p.abci}  "
            f"app home {layout.app_home(Path(plan.root), i)}"
        )
    print(f"  logs: {Path(plan.root) / 'logs'}")


#: `--param` names `dlbc devnet` takes as its own options (the dev node fallback).
_DEVNET_PARAM_FLAGS = {
    "train_seconds": "--train-seconds",
    "reveal_seconds": "--reveal-seconds",
    "verify_seconds": "--verify-seconds",
}


def devnet_argv(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The `dlbc devnet` command matching these localnet options, and notes on what the
    single-validator dev node ignores. Pure, so the mapping is tested without a devnet run.

    Mapping: --home H -> --out H/devnet (state beside the localnet's, not in the cwd);
    --base-port P -> devnet --base-port P+1, so node0's RPC stays at P+1 (26657 by default) and
    `dlbc query ... --rpc` works the same on both; train/reveal/verify --param -> devnet's flags;
    --samples/--small-budget -> the same devnet flags. devnet always runs the demo (publisher,
    two miners, verifier), with or without --demo."""
    argv = [
        "devnet",
        "--out", str(Path(args.home) / DEVNET_DIR),
        "--base-port", str(args.base_port + 1),
    ]  # fmt: skip
    notes: list[str] = []
    if args.validators != 1:
        notes.append(
            f"--validators {args.validators} is ignored: the dev node is a single validator "
            "(install cometbft for a real multi-validator network)"
        )
    ignored_params = []
    for text in args.param:
        name, value = gen.parse_param(text)
        flag = _DEVNET_PARAM_FLAGS.get(name)
        if flag is not None:
            argv += [flag, str(value)]
        elif name == "rounds_in_flight" and type(value) is int and value in (1, 2):
            argv += ["--sequential"] if value == 1 else []  # 2 is devnet's own default
        else:
            ignored_params.append(name)
    if ignored_params:
        notes.append(f"--param {', '.join(ignored_params)} ignored (devnet keeps its defaults)")
    if args.samples is not None:
        argv += ["--samples", str(args.samples)]
    if args.small_budget is not None:
        argv += ["--small-budget", f"{args.small_budget:g}"]
    ignored = [
        flag
        for flag, given in (
            ("--account", bool(args.account)),
            ("--chain-id", args.chain_id != DEFAULT_CHAIN_ID),
            ("--sidecar", bool(args.sidecar)),
            ("--max-tx-bytes", bool(args.max_tx_bytes)),
            ("--timeout-commit", args.timeout_commit != _DEFAULT_TIMEOUT_COMMIT),
            ("--reward", args.reward is not None),
            ("--until-height", bool(args.until_height)),
            ("--prepare-only", args.prepare_only),
            ("--no-verifiers", args.no_verifiers),
        )
        if given
    ]
    if ignored:
        notes.append(f"{', '.join(ignored)} ignored by `dlbc devnet`")
    if not args.demo:
        notes.append("`dlbc devnet` always runs the demo publisher, two miners and a verifier")
    return argv, notes


def _fallback(args: argparse.Namespace) -> int:
    print(
        f"no CometBFT binary found ({args.cometbft or 'none on PATH, none built in .tools/'}), "
        "so a real CometBFT localnet cannot start.",
        file=sys.stderr,
    )
    print(f"To get it: {supported_hint()}", file=sys.stderr)
    if args.no_fallback:
        return 1
    try:
        argv, notes = devnet_argv(args)
    except gen.GenesisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        "Falling back to `dlbc devnet`: the embedded single-validator DEVELOPMENT STAND-IN for "
        "CometBFT (see `dlbc devnet --help` for its options).",
        file=sys.stderr,
    )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"running: dlbc {shlex.join(argv)}", file=sys.stderr, flush=True)
    return devnet_cli.run(argv[1:])


def demo_settings(args: argparse.Namespace) -> demo.DemoSettings:
    defaults = demo.DemoSettings()
    settings = demo.DemoSettings(
        samples=defaults.samples if args.samples is None else args.samples,
        small_budget_s=defaults.small_budget_s if args.small_budget is None else args.small_budget,
        reward=defaults.reward if args.reward is None else args.reward,
    )
    settings.check()
    return settings


def _print_howto(plan: lp.LocalnetPlan, demo_on: bool) -> None:
    root = Path(plan.root)
    rpc = plan.rpc_url(0)
    print(
        f"logs: {root / 'logs'}/  (appI, cometbftI, verifyI"
        + (", publisher, miner-1, miner-2" if demo_on else "")
        + ")"
    )
    print(
        f"query: dlbc query round --rpc {rpc}   |   dlbc query winners --rpc {rpc}   |   "
        f"dlbc query tasks --rpc {rpc}"
    )
    if demo_on:
        print(f"keys: {root / demo.KEYS_DIR}/  (dlbc query account ADDRESS --rpc {rpc})")


def _prepare(args: argparse.Namespace, cometbft: str, form: str,
             accounts: list[tuple[str, int]], params: list[tuple[str, object]]) -> lp.LocalnetPlan:
    """Fresh folder: generate + patch + install. Existing localnet: repatch ports only."""
    root: Path = args.home.resolve()
    req = HomeRequest(
        validators=args.validators, base_port=args.base_port, chain_id=args.chain_id,
        settings=nodeconfig.ConsensusSettings(max_tx_bytes=args.max_tx_bytes,
                                      timeout_commit=args.timeout_commit),
    )
    existing = lp.load_plan(root)
    if existing is None:
        return create_home(root, form, cometbft, req, accounts, params)
    if args.param or args.account or args.chain_id != existing.chain_id:
        print(
            f"warning: {root} already holds chain {existing.chain_id}; its genesis is never "
            "rewritten, so --param/--account/--chain-id are ignored (fresh --home to change "
            "them)",
            file=sys.stderr,
        )
    return resume_home(root, existing, form, cometbft, req)


def _print_prepared(plan: lp.LocalnetPlan, cometbft: str, verifier_extra: list[str],
                    settings: demo.DemoSettings | None) -> None:
    """--prepare-only: the commands that would start each node (and the demo)."""
    print("prepared only (--prepare-only); start each node with:")
    for i in range(plan.validators):
        ctx = node_context(plan, i)
        print(f"  {shlex.join(app_command(ctx))} &")
        print(f"  {shlex.join(node_command(cometbft, ctx))} &")
        print(f"  {shlex.join(verifier_command(ctx, verifier_extra))} &")
    if settings is not None:
        print("then, once for the network:")
        procs = demo.demo_processes(
            Path(plan.root), plan.rpc_url(0), plan.validators, plan.base_port, settings,
            sys.executable, miner_rpc_url=demo.miner_rpc_url(plan),
        )  # fmt: skip
        for p in procs:
            print(f"  {shlex.join(p.argv)} &")


def run_localnet(args: argparse.Namespace) -> int:
    try:
        version = detect_cometbft(args.cometbft)
    except CometbftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if version is None:
        return _fallback(args)
    cometbft = find_cometbft(args.cometbft)
    if cometbft is None:  # vanished since detect_cometbft ran
        return _fallback(args)
    sup: Supervisor | None = None
    restore = install_signal_handlers()
    try:
        form = check_supported(version)
        ports = layout.plan_ports(args.validators, args.base_port)
        root: Path = args.home.resolve()
        hook = sidecar_hook_from_templates(args.sidecar)
        accounts = [gen.parse_account(a) for a in args.account]
        params = [gen.parse_param(p) for p in args.param]
        keys: demo.DemoKeys | None = None
        settings = demo.DemoSettings()
        if args.demo:
            settings = demo_settings(args)
            demo.demo_ports(args.validators, args.base_port)  # in range?
            keys = demo.load_or_generate_keys(root)
            accounts, params = demo.genesis_inputs(accounts, params, keys.publisher, settings,
                                                   keys.miners)
        elif (args.samples, args.small_budget, args.reward) != (None, None, None):
            print(
                "warning: --samples/--small-budget/--reward only apply with --demo", file=sys.stderr
            )
        fresh = lp.load_plan(root) is None
        if fresh:  # a fresh chain: check its genesis inputs up front
            gen.build_app_state(None, accounts=accounts, params=params)
        elif keys is not None:
            demo.check_demo_funded(root, keys)
        require_free(ports, args.base_port)
        if args.demo:
            demo.require_demo_ports_free(args.validators, args.base_port)
        check_writable(root)
        if keys is not None:
            keys.save_new()  # before the genesis that funds them: never fund a lost key
        plan = _prepare(args, cometbft, form, accounts, params)
        _print_plan(plan, cometbft)
        verifier_extra = []
        if keys is not None:  # from the chain's genesis: a resumed chain keeps its own phases
            verifier_extra = demo.verifier_args(demo.genesis_params(root), settings)
        if args.prepare_only:
            _print_prepared(plan, cometbft, verifier_extra, settings if keys else None)
            return 0
        sup = Supervisor(Path(plan.root) / "logs")
        print(f"cometbft {version} found; starting...")
        start_localnet(
            plan,
            sup,
            cometbft=cometbft,
            sidecars=hook,
            verifiers=not args.no_verifiers,
            verifier_extra=verifier_extra,
            startup_timeout_s=args.timeout,
        )
        if keys is not None:
            procs = start_demo(plan, sup, settings, args.timeout)
            print("started the demo publisher and miners (publisher on node0's RPC, miners on "
                  "node1's):")
            for line in demo.describe(procs, keys):
                print(line)
        print("all nodes committed height >= 1. Ctrl-C stops everything.", flush=True)
        _print_howto(plan, keys is not None)
        return follow(plan, sup, until_height=args.until_height, timeout_s=args.timeout,
                      show_round=args.demo)
    except (LaunchError, gen.GenesisError, CometbftError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated):
        print("\nstopping localnet...", file=sys.stderr)
        return 0
    finally:
        if sup is not None:
            sup.stop()
        restore()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dlbc localnet`."""
    p = subparsers.add_parser(
        "localnet",
        help="run an N-validator DLBC chain on this machine with real cometbft binaries",
        description=(
            "Generate (cometbft testnet), patch and run N `cometbft node` + N `python -m abci_app` "
            "on 127.0.0.1 (with --demo also a publisher and two miners). Falls back to "
            "`dlbc devnet` (single validator, always with the demo) when cometbft is not "
            "installed."
        ),
    )
    p.add_argument("--validators", type=int, default=4, help="number of validators (default 4)")
    p.add_argument(
        "--home", type=Path, default=default_home(), help="folder (default: %(default)s)"
    )
    p.add_argument(
        "--base-port",
        type=int,
        default=layout.DEFAULT_BASE_PORT,
        help="node i uses ports P+10i .. P+10i+5 (default %(default)s)",
    )
    p.add_argument("--chain-id", default=DEFAULT_CHAIN_ID, help="chain id (default %(default)s)")
    p.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ADDR=AMOUNT",
        help="genesis balance (repeat)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="DLBC parameter override (repeat)",
    )
    p.add_argument(
        "--max-tx-bytes",
        type=int,
        default=0,
        help="mempool max_tx_bytes (default: the app's params.max_tx_bytes)",
    )
    p.add_argument(
        "--timeout-commit",
        default=nodeconfig.ConsensusSettings().timeout_commit,
        metavar="DURATION",
        help="consensus.timeout_commit of every node, a Go duration (default: %(default)s, about "
        "one block a second; phases are measured in BFT seconds, so shorter is only faster)",
    )
    p.add_argument(
        "--sidecar",
        action="append",
        default=[],
        metavar="TEMPLATE",
        help="command started per node, with {i} {app_home} {rpc_url} {metrics_port} {chain_id} "
        "{python} {node_home} {abci_addr} {rpc_port} {extra_port1..3} filled in (repeat)",
    )
    p.add_argument(
        "--no-verifiers",
        action="store_true",
        help="do not start `dlbc verify` beside each validator (rounds then never settle)",
    )
    demo_opts = p.add_argument_group(
        "demo (--demo: a publisher and two miners, like `dlbc devnet`)"
    )
    demo_opts.add_argument(
        "--demo",
        action="store_true",
        help="also create keys HOME/keys/{publisher,miner-1,miner-2}.json, fund the publisher in "
        "genesis, use short phases (train 60 s, reveal 12 s, verify 30 s; --param overrides) and "
        "start `dlbc task submit --demo` + two `dlbc mine` once against node0's RPC",
    )
    demo_opts.add_argument(
        "--samples", type=int, default=None, help=f"demo images (default {demo.DEMO_SAMPLES})"
    )
    demo_opts.add_argument(
        "--small-budget",
        type=float,
        default=None,
        help=f"miner-2's training seconds per round; miner-1 uses all of TRAIN "
        f"(default {demo.SMALL_BUDGET_S:g})",
    )
    demo_opts.add_argument(
        "--reward", type=int, default=None, help=f"demo task reward (default {demo.DEMO_REWARD})"
    )
    p.add_argument(
        "--cometbft",
        default=None,
        metavar="PATH",
        help="cometbft binary (default: `cometbft` on PATH, else the project's pinned build "
        "in .tools/ made by `make tools`)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="startup timeout seconds")
    p.add_argument("--until-height", type=int, default=0, help="stop after every node reaches H")
    p.add_argument("--prepare-only", action="store_true", help="generate and patch, start nothing")
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="without cometbft, exit 1 instead of running `dlbc devnet`",
    )
    p.set_defaults(func=run_localnet)
