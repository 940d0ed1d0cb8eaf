"""`dlbc verify`: a validator's verifier sidecar in the foreground.

    dlbc verify --app-home ~/.dlbc-app [--metrics-port 9102]

It checks the round's revealed models and writes verdicts into the validator app's home, where
that app's ExtendVote reads them (docs/verification.md): one verifier per validator, beside its app.
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
                         device=args.device, allow_file_uris=args.allow_file_uris,
                         **sidecar_settings(args))  # type: ignore[arg-type]
    return run_sidecar(Verifier(cfg))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("verify", help="validator: check revealed models, write verdicts")
    add_sidecar_options(p, key=False)
    p.add_argument("--app-home", required=True,
                   help="this validator's `python -m abci_app --home` (verdicts go there)")
    p.add_argument("--workdir", default=None,
                   help="scratch folder (default: APP_HOME/verifier)")
    p.add_argument("--per-model-seconds", type=float, default=30.0,
                   help="time bound per model; a model not checked in time gets no verdict")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--allow-file-uris", action="store_true",
                   help="accept file:// model/test URIs (single-machine setups only)")
    p.set_defaults(func=guarded(_verify))
