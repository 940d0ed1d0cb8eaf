"""`dlbc localnet`: an N-validator DLBC chain on this machine with real `cometbft` binaries.

Steps (issue 7): detect `cometbft version` (v0.38.x / v1.0.x, others refused) -> check every
planned port is free and the folder writable -> `cometbft testnet --v N` into a temporary folder ->
patch genesis + configs (`plan.prepare_localnet`, pure) -> move into place -> start apps, nodes,
each validator's verifier (`dlbc verify`, which feeds its ExtendVote) and --sidecar processes ->
wait for height 1 -> print heights until Ctrl-C -> stop everything.

A rerun with the same --home resumes the chain (genesis untouched). Without `cometbft` on PATH it
prints how to install it and falls back to `dlbc devnet`, the embedded development stand-in.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from abci_app import genesis_cli as gen
from abci_app.localnet import plan as lp
from abci_app.localnet.ports import require_free
from abci_app.localnet.runner import (
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
    start_localnet,
    verifier_command,
    wait_for_height,
)


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


def prepare(args: argparse.Namespace, cometbft: str, form: str) -> lp.LocalnetPlan:
    """Fresh folder: generate + patch + install. Existing localnet: repatch ports only."""
    root: Path = args.home.resolve()
    settings = lp.ConsensusSettings(max_tx_bytes=args.max_tx_bytes) if args.max_tx_bytes else None
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
        if settings is None:
            genesis = lp.node_home(root, 0) / "config" / "genesis.json"
            doc = gen.load_genesis(genesis)
            settings = lp.ConsensusSettings(max_tx_bytes=lp.app_max_tx_bytes(doc))
        return lp.repatch_ports(root, existing, args.base_port, settings)
    if any(root.iterdir()):
        raise lp.LocalnetError(
            f"{root} is not empty and holds no {lp.MANIFEST}; fix: pass an empty or new --home"
        )
    accounts = [gen.parse_account(a) for a in args.account]
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
    from abci_app import cli

    parser = cli.build_parser()
    commands: set[str] = set()
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        commands.update(getattr(action, "choices", {}) or {})
    return commands


def _fallback(args: argparse.Namespace) -> int:
    print(
        f"`{args.cometbft}` is not on PATH, so a real CometBFT localnet cannot start.",
        file=sys.stderr,
    )
    print(f"To get it: {gen.INSTALL_HINT}", file=sys.stderr)
    if args.no_fallback:
        return 1
    from abci_app import cli

    if "devnet" not in registered_commands():
        print(
            "`dlbc devnet` (the embedded development node) is not available in this install.",
            file=sys.stderr,
        )
        return 1
    print(
        "Falling back to `dlbc devnet`: the embedded single-validator DEVELOPMENT STAND-IN for "
        "CometBFT (see `dlbc devnet --help` for its options).",
        file=sys.stderr,
    )
    return cli.main(["devnet"])


def run_localnet(args: argparse.Namespace) -> int:
    try:
        version = gen.detect_cometbft(args.cometbft)
    except gen.GenesisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if version is None:
        return _fallback(args)
    cometbft = shutil.which(args.cometbft) or args.cometbft
    sup: Supervisor | None = None
    restore = install_signal_handlers()
    try:
        form = gen.check_supported(version)
        ports = lp.plan_ports(args.validators, args.base_port)
        root: Path = args.home.resolve()
        hook = sidecar_hook_from_templates(args.sidecar)
        if lp.load_plan(root) is None:  # a fresh chain: check its genesis inputs up front
            gen.build_app_state(
                None,
                accounts=[gen.parse_account(a) for a in args.account],
                params=[gen.parse_param(p) for p in args.param],
            )
        require_free(ports, args.base_port)
        check_writable(root)
        plan = prepare(args, cometbft, form)
        _print_plan(plan, cometbft)
        if args.prepare_only:
            print("prepared only (--prepare-only); start each node with:")
            for i in range(plan.validators):
                ctx = node_context(plan, i)
                print(f"  {shlex.join(app_command(ctx))} &")
                print(f"  {shlex.join(node_command(cometbft, ctx))} &")
                print(f"  {shlex.join(verifier_command(ctx))} &")
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
            startup_timeout_s=args.timeout,
        )
        print("all nodes committed height >= 1. Ctrl-C stops everything.", flush=True)
        return _follow(plan, sup, args)
    except (lp.LocalnetError, gen.GenesisError) as exc:
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
    """Print heights every few seconds; stop at --until-height or when a child dies."""
    last_print = 0.0
    while True:
        if args.until_height:
            reached = wait_for_height(
                plan, sup, args.until_height, args.timeout + args.until_height * 5
            )
            print(f"reached height {args.until_height} on every node: {reached}")
            return 0
        dead = sup.exited()
        if dead:
            c = dead[0]
            print(
                f"error: {c.name} exited with code {c.popen.returncode}; stopping the localnet. "
                f"Last log lines ({c.log_path}):\n{log_tail(c.log_path)}",
                file=sys.stderr,
            )
            return 1
        now = time.monotonic()
        if now - last_print >= 5.0:
            heights = [node_height(plan.rpc_url(i)) for i in range(plan.validators)]
            print(
                "heights: "
                + " ".join(f"node{i}={h if h is not None else '?'}" for i, h in enumerate(heights)),
                flush=True,
            )
            last_print = now
        time.sleep(0.5)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dlbc localnet`."""
    p = subparsers.add_parser(
        "localnet",
        help="run an N-validator DLBC chain on this machine with real cometbft binaries",
        description=(
            "Generate (cometbft testnet), patch and run N `cometbft node` + N `python -m abci_app` "
            "on 127.0.0.1. Falls back to `dlbc devnet` when cometbft is not installed."
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
    p.add_argument("--chain-id", default="dlbc-localnet", help="chain id (default %(default)s)")
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
    p.add_argument("--cometbft", default="cometbft", help="cometbft binary (default: from PATH)")
    p.add_argument("--timeout", type=float, default=60.0, help="startup timeout seconds")
    p.add_argument("--until-height", type=int, default=0, help="stop after every node reaches H")
    p.add_argument("--prepare-only", action="store_true", help="generate and patch, start nothing")
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="without cometbft, exit 1 instead of running `dlbc devnet`",
    )
    p.set_defaults(func=run_localnet)
