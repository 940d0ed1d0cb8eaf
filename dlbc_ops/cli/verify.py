"""`dlbc verify`: a validator's verifier sidecar in the foreground.

    dlbc verify --app-home ~/.dlbc-app [--metrics-port 9102]

It checks the round's revealed models and writes verdicts into the validator app's home, where
that app's ExtendVote reads them (docs/verification.md): one verifier per validator, beside its app.
`DESCRIPTION` is what `dlbc verify --help` tells a first-time user.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlbc_ops.cli.common import (
    CliError,
    add_sidecar_options,
    guarded,
    run_sidecar,
    set_torch_threads,
    setup_logs,
    sidecar_settings,
)


def _verify(args: argparse.Namespace) -> int:
    from training.sidecars.verifier import Verifier, VerifierConfig

    setup_logs(args.log_level)
    set_torch_threads(args.threads)
    home = Path(args.app_home)
    if not home.is_dir():
        raise CliError(f"--app-home {home} is not a directory (the validator app's --home)")
    if args.workdir is None:  # one verifier per validator: keep its files beside that app
        args.workdir = str(home / "verifier")
    cfg = VerifierConfig(app_home=home, per_model_seconds=args.per_model_seconds,
                         per_miner_seconds=args.per_miner_seconds,
                         per_miner_rounds=args.per_miner_rounds, min_rate_bps=args.min_rate_bps,
                         download_workers=args.download_workers,
                         device=args.device, allow_file_uris=args.allow_file_uris,
                         **sidecar_settings(args))  # type: ignore[arg-type]
    return run_sidecar(Verifier(cfg))


DESCRIPTION = """\
A validator's verifier sidecar, in the foreground until Ctrl-C or --rounds N. In each round's
VERIFY phase it fetches the revealed models (safetensors only, size-capped, digest-checked),
detects each miner's watermark, rejects copies of other miners' models, measures the score on
the revealed test set and writes the verdicts into APP_HOME/verdicts/, where this validator's
app reads them for its vote extension. It signs nothing and needs no key.

  dlbc verify --app-home ~/.dlbc/app --rpc http://127.0.0.1:26657

Needs this validator's app (`python -m abci_app --home APP_HOME`) and its CometBFT node running,
the node's RPC at --rpc; one verifier per validator, on the same machine as its app.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("verify", help="validator: check revealed models, write verdicts",
                              description=DESCRIPTION)
    add_sidecar_options(p, key=False)
    p.add_argument("--app-home", required=True, metavar="APP_HOME",
                   help="this validator's `python -m abci_app --home` (verdicts go there)")
    p.add_argument("--workdir", default=None,
                   help="scratch folder (default: APP_HOME/verifier)")
    p.add_argument("--per-model-seconds", type=float, default=10.0, metavar="SECONDS",
                   help="verifier work one model may cost, its download plus its check "
                        "(default: %(default)s; raise it for large models); a model not "
                        "checked in time gets no verdict")
    p.add_argument("--per-miner-seconds", type=float, default=20.0, metavar="SECONDS",
                   help="verifier work one miner's unconfirmed reveals (no verdict, refuted) "
                        "may cost over --per-miner-rounds rounds (default: %(default)s)")
    p.add_argument("--per-miner-rounds", type=int, default=10, metavar="N",
                   help="the window of --per-miner-seconds, in rounds (default: %(default)s)")
    p.add_argument("--min-rate-bps", type=int, default=64 * 1024, metavar="BYTES",
                   help="drop a model download slower than this many bytes/s on average after "
                        "a 5 s grace: no verdict (default: %(default)s)")
    p.add_argument("--download-workers", type=int, default=32, metavar="N",
                   help="model downloads at once (default: %(default)s)")
    p.add_argument("--device", default="cpu",
                   help="torch device for scoring: cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--allow-file-uris", action="store_true",
                   help="accept file:// model/test URIs (single-machine setups only)")
    p.set_defaults(func=guarded(_verify))
