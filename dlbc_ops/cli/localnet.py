"""`dlbc localnet`: an N-validator DLBC chain on this machine with real `cometbft` binaries.

Steps (issue 7): detect `cometbft version` (v0.38.x / v1.0.x, others refused) -> check every
planned port is free and the folder writable -> `cometbft testnet --v N` into a temporary folder ->
patch genesis + configs (`plan.prepare_localnet`, pure) -> move into place -> start apps, nodes,
each validator's verifier (`dlbc verify`, which feeds its ExtendVote) and --sidecar processes ->
wait for height 1 -> (--demo: publisher + two miners, once, against node0's RPC) -> print
heights (and the round) until Ctrl-C -> stop everything.

`dlbc localnet --validators 4 --demo` is the project's main job on real CometBFT (`make demo`):
the demo's keys, genesis funding, phase lengths and commands are planned in `demo.py`.

A rerun with the same --home resumes the chain (genesis untouched). Without `cometbft` on PATH it
prints how to install it and falls back to `dlbc devnet` (the embedded single-validator
development stand-in, which always runs the demo) with the matching options (`devnet_argv`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dlbc_ops.genesis import builder as gen
from dlbc_ops.localnet import demo
from dlbc_ops.localnet import plan as lp
from dlbc_ops.localnet.binary import find_cometbft
from dlbc_ops.localnet.ports import require_free
from dlbc_ops.localnet.runner import (
    LaunchError,
    NodeContext,
    SidecarHook,
    Supervisor,
    Terminated,
    app_command,
    install_signal_handlers,
    log_tail,
    node_command,
    node_context,
    node_height,
    rpc_get,
    start_localnet,
    verifier_command,
    wait_for_port,
)

DEFAULT_CHAIN_ID = "dlbc-localnet"
DEVNET_DIR = "devnet"
"""Where the no-cometbft fallback keeps its `dlbc devnet --out` folder, inside --home."""


def default_home() -> Path:
    env = os.environ.get("DLBC_HOME")
    return (Path(env) if env else Path.home() / ".dlbc") / "localnet"


def check_writable(root: Path) -> None:
    """Create `root` (and a probe file in it) now, so a bad --home fails before anything runs."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise lp.LocalnetError(
            f"cannot write to {root}: {exc.strerror}; fix: pass --home DIR with a folder you can "
            "write to"
        ) from None


def generate_testnet(cometbft: str, root: Path, validators: int) -> Path:
    """`cometbft testnet --v N --o TMP/net` with TMP a hidden folder inside the (empty) `root`;
    returns TMP (the caller moves its nodes into `root`, or removes it)."""
    import subprocess

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".testnet-", dir=root))
    out = tmp / "net"
    argv = [cometbft, "testnet", "--v", str(validators), "--o", str(out)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise lp.LocalnetError(f"`{shlex.join(argv)}` failed: {exc}") from None
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise lp.LocalnetError(
            f"`{shlex.join(argv)}` exited {proc.returncode}: {(proc.stderr or proc.stdout)[-400:]}"
        )
    return tmp


def _install_prepared(tmp: Path, root: Path) -> None:
    """Move the patched nodes from TMP/net into `root` (which holds nothing of a localnet yet)."""
    net = tmp / "net"
    # The manifest marks a finished localnet, so it moves last: a crash mid-way leaves no
    # manifest, and the next run refuses the non-empty folder instead of resuming half of it.
    for entry in sorted(net.iterdir(), key=lambda p: (p.name == lp.MANIFEST, p.name)):
        os.replace(entry, root / entry.name)
    shutil.rmtree(tmp, ignore_errors=True)


def sidecar_hook_from_templates(templates: list[str]) -> SidecarHook | None:
    """--sidecar 'CMD {app_home} {rpc_url}' templates -> a hook giving argv lists per node."""
    if not templates:
        return None
    fields = set(NodeContext.__slots__)

    def hook(ctx: NodeContext) -> list[list[str]]:
        try:
            return [shlex.split(t.format(**ctx.as_dict())) for t in templates]
        except (KeyError, IndexError, ValueError) as exc:
            raise lp.LocalnetError(
                f"--sidecar template error ({exc}); fields: {', '.join(sorted(fields))}"
            ) from None

    # Fail on a bad template now, before anything starts, not after the nodes are up.
    hook(NodeContext(0, "/h", "/a", "http://x:1", 1, "tcp://x:2", 5, 7, 8, 9, "c", "python"))
    return hook


#: Entries a fresh --home may already hold: the demo's key files (written before the genesis
#: that funds them) and the `dlbc devnet` fallback's folder.
_ALLOWED_IN_FRESH_HOME = frozenset({demo.KEYS_DIR, DEVNET_DIR})


def prepare(
    args: argparse.Namespace,
    cometbft: str,
    form: str,
    accounts: list[tuple[str, int]] | None = None,
    params: list[tuple[str, Any]] | None = None,
) -> lp.LocalnetPlan:
    """Fresh folder: generate + patch + install. Existing localnet: repatch ports only.

    `accounts`/`params`: the genesis inputs (default: parsed from args; --demo adds its own)."""
    root: Path = args.home.resolve()
    settings = lp.ConsensusSettings(
        max_tx_bytes=args.max_tx_bytes, timeout_commit=args.timeout_commit
    )
    existing = lp.load_plan(root)
    if existing is not None:
        if existing.validators != args.validators:
            raise lp.LocalnetError(
                f"{root} holds a {existing.validators}-validator localnet, not {args.validators}; "
                f"fix: pass --validators {existing.validators} to resume it, or a fresh --home"
            )
        if existing.form != form:
            raise lp.LocalnetError(
                f"{root} was made for CometBFT {existing.form} but `{cometbft}` is {form}; "
                "fix: use the same cometbft, or a fresh --home"
            )
        if args.param or args.account or args.chain_id != existing.chain_id:
            print(
                f"warning: {root} already holds chain {existing.chain_id}; its genesis is never "
                "rewritten, so --param/--account/--chain-id are ignored (fresh --home to change "
                "them)",
                file=sys.stderr,
            )
        existing.root = str(root)  # the folder may have been moved since
        if not settings.max_tx_bytes:
            genesis = lp.node_home(root, 0) / "config" / "genesis.json"
            doc = gen.load_genesis(genesis)
            settings = replace(settings, max_tx_bytes=lp.app_max_tx_bytes(doc))
        return lp.repatch_ports(root, existing, args.base_port, settings)
    if any(p.name not in _ALLOWED_IN_FRESH_HOME for p in root.iterdir()):
        raise lp.LocalnetError(
            f"{root} is not empty and holds no {lp.MANIFEST}; fix: pass an empty or new --home"
        )
    if accounts is None:
        accounts = [gen.parse_account(a) for a in args.account]
    if params is None:
        params = [gen.parse_param(p) for p in args.param]
    tmp = generate_testnet(cometbft, root, args.validators)
    try:
        plan = lp.prepare_localnet(
            tmp / "net",
            args.validators,
            form,
            base_port=args.base_port,
            chain_id=args.chain_id,
            accounts=accounts,
            params=params,
            settings=settings,
        )
        plan.root = str(root)
        gen.write_text_atomic(tmp / "net" / lp.MANIFEST, plan.to_json())
        _install_prepared(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return plan


def _print_plan(plan: lp.LocalnetPlan, cometbft: str) -> None:
    print(
        f"localnet {plan.chain_id}: {plan.validators} validator(s), CometBFT {plan.form} form, "
        f"home {plan.root}"
    )
    for i in range(plan.validators):
        p = plan.node_ports(i)
        print(
            f"  node{i}: rpc {plan.rpc_url(i)}  p2p {p.p2p}  abci tcp://{lp.LOOPBACK}:{p.abci}  "
            f"app home {lp.app_home(Path(plan.root), i)}"
        )
    print(f"  logs: {Path(plan.root) / 'logs'}")


def registered_commands() -> set[str]:
    """The `dlbc` subcommands this install registers (devnet is another engineer's module)."""
    from dlbc_ops.cli import main as cli

    parser = cli.build_parser()
    commands: set[str] = set()
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        commands.update(getattr(action, "choices", {}) or {})
    return commands


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
            ("--timeout-commit", args.timeout_commit != lp.ConsensusSettings().timeout_commit),
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
    print(f"To get it: {gen.INSTALL_HINT}", file=sys.stderr)
    if args.no_fallback:
        return 1
    from dlbc_ops.cli import main as cli

    if "devnet" not in registered_commands():
        print(
            "`dlbc devnet` (the embedded development node) is not available in this install.",
            file=sys.stderr,
        )
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
    return cli.main(argv)


def demo_settings(args: argparse.Namespace) -> demo.DemoSettings:
    defaults = demo.DemoSettings()
    settings = demo.DemoSettings(
        samples=defaults.samples if args.samples is None else args.samples,
        small_budget_s=defaults.small_budget_s if args.small_budget is None else args.small_budget,
        reward=defaults.reward if args.reward is None else args.reward,
    )
    settings.check()
    return settings


def _check_demo_funded(root: Path, keys: demo.DemoKeys) -> None:
    """A resumed localnet keeps its genesis: the demo publisher must already be funded there."""
    doc = gen.load_genesis(lp.node_home(root, 0) / "config" / "genesis.json")
    addr = keys.publisher.address_hex
    if demo.genesis_balance(doc, addr) <= 0 or demo.PUBLISHER in keys.new:
        raise lp.LocalnetError(
            f"{root} holds a chain whose genesis does not fund the demo publisher {addr} (made "
            f"without --demo, or {root / demo.KEYS_DIR} changed); its genesis is never rewritten; "
            "fix: a fresh --home for --demo"
        )


def _start_demo(
    plan: lp.LocalnetPlan,
    sup: Supervisor,
    keys: demo.DemoKeys,
    settings: demo.DemoSettings,
    timeout_s: float,
) -> list[demo.DemoProcess]:
    """Publisher (node0's RPC) + miners (node1's) once for the whole network; returns when each
    serves its artifact port (so a bad key or busy port fails here, with its log tail)."""
    procs = demo.demo_processes(
        Path(plan.root), plan.rpc_url(0), plan.validators, plan.base_port, settings, sys.executable,
        miner_rpc_url=demo.miner_rpc_url(plan),
    )  # fmt: skip
    children = [sup.start(p.name, p.argv) for p in procs]
    for p, child in zip(procs, children, strict=True):
        wait_for_port(p.artifact_port, child, timeout_s)
    print("started the demo publisher and miners (publisher on node0's RPC, miners on node1's):")
    for line in demo.describe(procs, keys):
        print(line)
    return procs


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


def run_localnet(args: argparse.Namespace) -> int:
    try:
        version = gen.detect_cometbft(args.cometbft)
    except gen.GenesisError as exc:
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
        form = gen.check_supported(version)
        ports = lp.plan_ports(args.validators, args.base_port)
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
            _check_demo_funded(root, keys)
        require_free(ports, args.base_port)
        if args.demo:
            demo.require_demo_ports_free(args.validators, args.base_port)
        check_writable(root)
        if keys is not None:
            keys.save_new()  # before the genesis that funds them: never fund a lost key
        plan = prepare(args, cometbft, form, accounts, params)
        _print_plan(plan, cometbft)
        verifier_extra = []
        if keys is not None:  # from the chain's genesis: a resumed chain keeps its own phases
            verifier_extra = demo.verifier_args(demo.genesis_params(root), settings)
        if args.prepare_only:
            print("prepared only (--prepare-only); start each node with:")
            for i in range(plan.validators):
                ctx = node_context(plan, i)
                print(f"  {shlex.join(app_command(ctx))} &")
                print(f"  {shlex.join(node_command(cometbft, ctx))} &")
                print(f"  {shlex.join(verifier_command(ctx, verifier_extra))} &")
            if keys is not None:
                print("then, once for the network:")
                procs = demo.demo_processes(
                    root, plan.rpc_url(0), plan.validators, plan.base_port, settings,
                    sys.executable, miner_rpc_url=demo.miner_rpc_url(plan),
                )  # fmt: skip
                for p in procs:
                    print(f"  {shlex.join(p.argv)} &")
            return 0
        sup = Supervisor(Path(plan.root) / "logs")
        print(f"cometbft {version} found; starting...")
        verifiers = not args.no_verifiers and "verify" in registered_commands()
        start_localnet(
            plan,
            sup,
            cometbft=cometbft,
            sidecars=hook,
            verifiers=verifiers,
            verifier_extra=verifier_extra,
            startup_timeout_s=args.timeout,
        )
        if keys is not None:
            _start_demo(plan, sup, keys, settings, args.timeout)
        print("all nodes committed height >= 1. Ctrl-C stops everything.", flush=True)
        _print_howto(plan, keys is not None)
        return _follow(plan, sup, args)
    except (LaunchError, gen.GenesisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated):
        print("\nstopping localnet...", file=sys.stderr)
        return 0
    finally:
        if sup is not None:
            sup.stop()
        restore()


def _follow(plan: lp.LocalnetPlan, sup: Supervisor, args: argparse.Namespace) -> int:
    """Print heights (and, with --demo, the round) every few seconds; stop at --until-height or
    when no `cometbft node` is left running.

    A crashed child is reported once, with how to restart it, and the rest carry on: a BFT
    network of N validators keeps committing with up to f = (N-1)//3 of them down, which is
    exactly what an operator runs a localnet to see."""
    last_print = 0.0
    deadline = time.monotonic() + args.timeout + args.until_height * 5
    reported: set[int] = set()
    while True:
        for c in sup.exited():
            if id(c.popen) in reported:
                continue
            reported.add(id(c.popen))
            print(
                f"warning: {c.name} exited with code {c.popen.returncode}; the other processes "
                f"carry on. Restart it with: {shlex.join(c.argv)}\nLast log lines "
                f"({c.log_path}):\n{log_tail(c.log_path)}",
                file=sys.stderr,
                flush=True,
            )
        nodes = [c for c in sup.children if c.name.startswith("cometbft")]
        if nodes and all(c.popen.poll() is not None for c in nodes):
            print("error: every cometbft node has exited; stopping the localnet", file=sys.stderr)
            return 1
        now = time.monotonic()
        heights = [node_height(plan.rpc_url(i)) for i in range(plan.validators)]
        if args.until_height and min(h or 0 for h in heights) >= args.until_height:
            print(f"reached height {args.until_height} on every node: {heights}")
            return 0
        if args.until_height and now > deadline:
            raise lp.LocalnetError(
                f"nodes did not reach height {args.until_height} in time (heights {heights}); "
                f"see the logs in {sup.log_dir}"
            )
        if now - last_print >= 5.0:
            line = "heights: " + " ".join(
                f"node{i}={h if h is not None else '?'}" for i, h in enumerate(heights)
            )
            if args.demo:
                summary = demo.round_summary(rpc_get(demo.round_query_url(plan.rpc_url(0))))
                if summary:
                    line += f"  |  {summary}"
            print(line, flush=True)
            last_print = now
        time.sleep(0.5)


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
        default=lp.DEFAULT_BASE_PORT,
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
        default=lp.ConsensusSettings().timeout_commit,
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
