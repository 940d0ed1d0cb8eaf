"""`dlbc genesis`: write DLBC's `app_state` into a CometBFT genesis.json (or create one).

    dlbc genesis --genesis ~/.cometbft/config/genesis.json          # merge in place
    dlbc genesis --chain-id dlbc-1 --validator node0/config/priv_validator_key.json \\
                 --account <addr-hex>=1000000 --param train_seconds=120 --out genesis.json

The document itself is built and validated by `dlbc_ops.genesis` (see cometbft/README.md);
this module only reads the flags, picks the CometBFT form and writes the result. Bad input
prints one `error: ...` line naming the fix and exits 1; nothing is written then.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlbc_ops import genesis as gen
from dlbc_ops.cometbft import FORM_V038, FORMS, CometbftError, check_supported, detect_cometbft
from dlbc_ops.genesis.errors import is_int_text


def _resolve_form(explicit: str | None, existing: Mapping[str, Any] | None) -> str:
    if explicit:
        gen.check_form(explicit)
        return explicit
    # The file's own form first: it was written by the `cometbft init` that will run it, which
    # may not be the binary `find_cometbft` picks (two releases installed side by side).
    inferred = gen.infer_form(existing) if existing else None
    if inferred is not None:
        return inferred
    version = detect_cometbft()
    if version is not None:
        return check_supported(version)
    return FORM_V038


def _parse_validator(text: str) -> dict[str, Any]:
    path, sep, power = text.rpartition("=")
    if not sep:
        return gen.validator_from_key_file(text)
    if not is_int_text(power):
        raise gen.GenesisError(f"--validator {text!r}: expected PATH or PATH=POWER")
    return gen.validator_from_key_file(path, int(power))


def run_genesis(args: argparse.Namespace) -> int:
    """`dlbc genesis`: build, validate, then (only then) write."""
    try:
        existing = gen.load_genesis(args.genesis) if args.genesis else None
        form = _resolve_form(args.cometbft_version, existing)
        validators = [_parse_validator(v) for v in args.validator] or None
        accounts = [gen.parse_account(a) for a in args.account]
        params = [gen.parse_param(p) for p in args.param]
        if existing is None:
            if validators is None:
                raise gen.GenesisError(
                    "no --genesis to merge into and no --validator given; fix: pass "
                    "--genesis FILE, or --validator KEYFILE to create a new genesis"
                )
            existing = gen.new_genesis(args.chain_id or "dlbc-local", validators, form)
        doc = gen.apply_dlbc(
            existing,
            form,
            chain_id=args.chain_id,
            genesis_time=args.genesis_time,
            validators=validators,
            accounts=accounts,
            params=params,
        )
        text = gen.dumps_genesis(doc)
        out: Path | None = args.out or args.genesis
        if out is None or str(out) == "-":
            sys.stdout.write(text)
            return 0
        try:
            gen.write_text_atomic(Path(out), text)
        except OSError as exc:
            raise gen.GenesisError(
                f"cannot write {out}: {exc.strerror}; fix: choose a writable --out path"
            ) from None
    except (gen.GenesisError, CometbftError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {out}: chain_id={doc['chain_id']} validators={len(doc['validators'])} "
        f"vote extensions from height {gen.VOTE_EXTENSIONS_HEIGHT} (CometBFT {form} form)",
        file=sys.stderr,
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dlbc genesis`."""
    p = subparsers.add_parser(
        "genesis",
        help="write DLBC app_state + vote-extension params into a CometBFT genesis.json",
        description=(
            "Merge DLBC's app_state into a CometBFT genesis (in place, or to --out), or create a "
            "new genesis from validator key files. Enables vote extensions from height 1 in the "
            "form the target CometBFT version expects. Nothing is written unless it validates."
        ),
    )
    p.add_argument("--genesis", type=Path, help="existing genesis.json to merge into")
    p.add_argument("--out", type=Path, help="where to write (default: --genesis in place, or '-')")
    p.add_argument("--chain-id", help="set chain_id (default: keep; new genesis: dlbc-local)")
    p.add_argument("--genesis-time", help="RFC 3339 genesis time (default: keep / now)")
    p.add_argument(
        "--validator",
        action="append",
        default=[],
        metavar="KEYFILE[=POWER]",
        help="validator priv_validator_key.json (repeat; replaces the validator set)",
    )
    p.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ADDR=AMOUNT",
        help="genesis balance (ADDR: 40 hex chars or a key file; repeat)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a DLBC parameter from abci_app.dlbc.genesis defaults (repeat)",
    )
    p.add_argument(
        "--cometbft-version",
        choices=FORMS,
        help="target CometBFT line (default: `cometbft version` if on PATH, else from the file, "
        "else 0.38)",
    )
    p.set_defaults(func=run_genesis)
