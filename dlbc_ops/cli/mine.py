"""`dlbc mine`: the miner sidecar in the foreground (train the round's task, commit, reveal).

    dlbc mine --key miner1 [--max-train-seconds 120] [--artifact-port 8701] [--quiet-progress]

`DESCRIPTION` is what `dlbc mine --help` tells a first-time user. Its artifact server publishes
a round's model only at REVEAL, at the port given here; torch is
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
        min_rate_bps=args.min_rate_bps, **sidecar_settings(args))  # type: ignore[arg-type]


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


DESCRIPTION = """\
The miner sidecar, in the foreground until Ctrl-C or --rounds N. It registers the key's account
as a miner (bonding `miner_bond`, so the account needs funds), then each round trains the
selected task with its watermark, commits the model hash in TRAIN, publishes the model and
reveals it in REVEAL, and logs whether it won.

  dlbc mine --key miner1 --rpc http://127.0.0.1:26657 --artifact-port 8701

Needs a running chain (`dlbc devnet`, `dlbc localnet`, or `cometbft node` beside
`python -m abci_app`) reachable at --rpc, and a funded key (`dlbc keys new NAME`, then a
transfer or a genesis balance). Validators fetch the models from --artifact-host:--artifact-port,
so on more than one machine give an address they can reach.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "mine", help="miner: train the selected task each round, commit, reveal",
        description=DESCRIPTION)
    add_sidecar_options(p)
    p.add_argument("--workdir", default="dlbc-miner",
                   help="folder for this miner's models, checkpoints and round state")
    p.add_argument("--bandwidth", type=int, default=100_000_000, metavar="BYTES_PER_S",
                   help="network bandwidth declared in RegisterMiner (paper Eq. 2)")
    p.add_argument("--flops", type=int, default=1_000_000_000_000, metavar="FLOP_PER_S",
                   help="compute declared in RegisterMiner (paper Eq. 3)")
    p.add_argument("--max-train-seconds", type=float, default=None, metavar="SECONDS",
                   help="training budget per round (default: all of TRAIN less the margin)")
    p.add_argument("--commit-margin", type=float, default=2.5, metavar="SECONDS",
                   help="stop training this many seconds before TRAIN ends, to save and commit")
    p.add_argument("--max-epochs", type=int, default=None, metavar="N",
                   help="stop after N epochs even with time left (default: train until the "
                        "budget ends)")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate of the optimizer")
    p.add_argument("--wm-lambda", type=float, default=1.0,
                   help="weight λ of the watermark regulariser (loss = task + λ·watermark)")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--allow-file-uris", action="store_true",
                   help="accept file:// data URIs (single-machine setups only)")
    p.add_argument("--min-rate-bps", type=int, default=64 * 1024,
                   help="abort a data download slower than this many bytes/s on average "
                        "(after a 5 s grace; 0: no minimum)")
    p.add_argument("--quiet-progress", action="store_true",
                   help="no per-epoch progress lines; log one summary line per round")
    p.add_argument("--artifact-host", default="127.0.0.1", metavar="HOST",
                   help="address the model server listens on and names in its reveal URIs")
    p.add_argument("--artifact-port", type=int, default=8701, metavar="PORT",
                   help="port serving this miner's models (0 = any free port)")
    p.set_defaults(func=guarded(_mine))
