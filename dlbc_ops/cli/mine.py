"""`dlbc mine`: the miner sidecar in the foreground (train the round's task, commit, reveal).

    dlbc mine --key miner1 [--max-train-seconds 120] [--artifact-port 8701] [--quiet-progress]

Its artifact server publishes a round's model only at REVEAL, at the port given here; torch is
imported only when the command runs, so `dlbc --help` stays fast.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dlbc_ops.cli.common import (
    CliError,
    add_sidecar_options,
    guarded,
    resolve_key,
    run_sidecar,
    set_torch_threads,
    setup_logs,
    sidecar_settings,
)

if TYPE_CHECKING:
    from training.sidecars.miner import MinerConfig


def miner_config(args: argparse.Namespace) -> MinerConfig:
    """The MinerConfig that `dlbc mine ARGS` runs with."""
    from training.sidecars.miner import MinerConfig

    return MinerConfig(
        bandwidth_bps=args.bandwidth, flops=args.flops, max_train_seconds=args.max_train_seconds,
        commit_margin_seconds=args.commit_margin, watermark_lambda=args.wm_lambda,
        batch_size=args.batch_size, learning_rate=args.lr, max_epochs=args.max_epochs,
        device=args.device, artifact_host=args.artifact_host, artifact_port=args.artifact_port,
        allow_file_uris=args.allow_file_uris, progress=not args.quiet_progress,
        **sidecar_settings(args))  # type: ignore[arg-type]


def _mine(args: argparse.Namespace) -> int:
    from training.sidecars.miner import Miner

    setup_logs(args.log_level)
    set_torch_threads(args.threads)
    key = resolve_key(args.key, args.home)
    miner = Miner(miner_config(args), key)
    try:
        miner.start_server()
    except OSError as exc:
        raise CliError(f"cannot serve models on {args.artifact_host}:{args.artifact_port}: "
                       f"{exc.strerror or exc}; pick another --artifact-port") from None
    return run_sidecar(miner)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("mine", help="miner: train the selected task each round, commit, reveal")
    add_sidecar_options(p)
    p.add_argument("--workdir", default="dlbc-miner", help="models, checkpoints, round state")
    p.add_argument("--bandwidth", type=int, default=100_000_000, help="declared bytes/s (Eq. 2)")
    p.add_argument("--flops", type=int, default=1_000_000_000_000, help="declared FLOP/s (Eq. 3)")
    p.add_argument("--max-train-seconds", type=float, default=None,
                   help="training budget per round (default: all of TRAIN less the margin)")
    p.add_argument("--commit-margin", type=float, default=4.0,
                   help="stop training this many seconds before TRAIN ends")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wm-lambda", type=float, default=1.0, help="watermark regulariser weight λ")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--allow-file-uris", action="store_true",
                   help="accept file:// data URIs (single-machine setups only)")
    p.add_argument("--quiet-progress", action="store_true",
                   help="no per-epoch progress lines; log one summary line per round")
    p.add_argument("--artifact-host", default="127.0.0.1")
    p.add_argument("--artifact-port", type=int, default=8701,
                   help="port serving this miner's models (0 = any free port)")
    p.set_defaults(func=guarded(_mine))
