"""`dlbc node`: run the embedded development node (a stand-in for `cometbft node`, see node.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from dlbc_ops.devnode.mempool import MempoolConfig

log = logging.getLogger("dlbc_ops.devnode")


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "node",
        help="embedded single-validator dev node (development stand-in for cometbft node)",
        description=(
            "Development stand-in for CometBFT: one validator, no p2p. Drives the app at "
            "--proxy-app over the ABCI socket and serves CometBFT's RPC subset on --rpc-laddr."
        ),
    )
    p.add_argument("--home", type=Path, required=True, help="node home (config/, data/)")
    p.add_argument("--proxy-app", default="tcp://127.0.0.1:26658",
                   help="ABCI app address (default: %(default)s)")
    p.add_argument("--rpc-laddr", default="tcp://127.0.0.1:26657",
                   help="RPC listen address (default: %(default)s)")
    p.add_argument("--block-time", type=_positive, default=1.0,
                   help="seconds between blocks (default: %(default)s)")
    p.add_argument("--genesis", type=Path, default=None,
                   help="genesis.json to start from (copied into HOME/config on first start)")
    p.add_argument("--chain-id", default="dlbc-devnet",
                   help="chain id when generating a genesis (default: %(default)s)")
    p.add_argument("--max-block-bytes", type=int, default=4 * 1024 * 1024,
                   help="consensus_params.block.max_bytes of a generated genesis (default: %(default)s)")
    p.add_argument("--mempool-size", type=int, default=5000, help="max txs in the mempool")
    p.add_argument("--app-connect-timeout", type=_positive, default=30.0,
                   help="seconds to wait for the app to accept connections (default: %(default)s)")
    p.add_argument("--no-empty-blocks", action="store_true",
                   help="produce blocks only when the mempool has txs")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error", "critical"),
                   help="least severe log level printed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from abci_app.logs import setup_logging
    from dlbc_ops.devnode.config import NodeConfig, NodeError
    from dlbc_ops.devnode.node import DevNode

    setup_logging(args.log_level)
    cfg = NodeConfig(
        home=args.home,
        proxy_app=args.proxy_app,
        rpc_laddr=args.rpc_laddr,
        block_time=args.block_time,
        genesis=args.genesis,
        chain_id=args.chain_id,
        mempool=MempoolConfig(max_txs=args.mempool_size),
        max_block_bytes=args.max_block_bytes,
        create_empty_blocks=not args.no_empty_blocks,
        app_connect_timeout=args.app_connect_timeout,
    )

    async def main() -> int:
        node = DevNode(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(node.stop()))
        try:
            await node.run()
        except NodeError as exc:
            log.error("%s", exc)
            return 1
        log.info("dev node stopped at height %d", node.tip.height)
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130
