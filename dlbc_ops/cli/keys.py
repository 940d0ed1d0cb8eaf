"""`dlbc keys new NAME|PATH [--home DIR] [--force]` and `dlbc keys show NAME|PATH [--json]`.

The file format and the `<home>/keys/<NAME>.json` layout are `abci_app.keyfile`'s (the chain and
every sidecar read the same files); this module is only the command over them. A key is named
the way `--key` names it (`common.key_file`: a NAME under the home, or a file path), so a key
that `dlbc mine --key` takes, `dlbc keys show` shows. Private key material is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from abci_app.keyfile import KeyFileError, KeyPair, default_home, load_key, save_key
from dlbc_ops.cli.common import key_file


def _new_key(path: Path, args: argparse.Namespace) -> KeyPair:
    key = KeyPair.generate()
    save_key(path, key, overwrite=args.force)
    return key


def _show_key(path: Path, _args: argparse.Namespace) -> KeyPair:
    return load_key(path)


def _keys_command(action: Callable[[Path, argparse.Namespace], KeyPair]
                  ) -> Callable[[argparse.Namespace], int]:
    """`dlbc keys <action>`: run it on the key's path (a NAME's or the PATH given), print its
    public part; a KeyFileError becomes one `error:` line and exit status 1 (never a
    traceback)."""

    def run(args: argparse.Namespace) -> int:
        try:
            path = key_file(args.name, args.home)
            key = action(path, args)
        except KeyFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _print_public(key, path, as_json=args.json)
        return 0

    return run


def _print_public(key: KeyPair, path: Path, *, as_json: bool) -> None:
    info = {**key.public_info(), "file": str(path)}
    if as_json:
        print(json.dumps(info, sort_keys=True))
    else:
        print(f"address: {info['address']}")
        print(f"pub_key: {info['pub_key']}")
        print(f"file:    {info['file']}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dlbc keys new|show`."""
    keys = subparsers.add_parser(
        "keys", help="create and show ed25519 account key files",
        description="Create and show the ed25519 key files of accounts: the key that signs a "
                    "publisher's or miner's transactions (CometBFT priv_validator_key.json "
                    "format, mode 0600). A key is a NAME, kept as HOME/keys/NAME.json, or a "
                    "file PATH; `--key` of `dlbc task|mine` takes the same. Needs no running "
                    "node.\n\n  dlbc keys new publisher\n  dlbc keys show publisher --json")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME|PATH",
                       help="a key NAME (file HOME/keys/NAME.json), or a key file PATH (one "
                            "with a '/', ending in .json, or an existing file)")
        p.add_argument(
            "--home", type=Path, default=default_home(),
            help="where named keys live ($DLBC_HOME, else ~/.dlbc; default: %(default)s)"
        )
        p.add_argument("--json", action="store_true",
                       help="print address, pub_key and file as one JSON object")

    p_new = keys_sub.add_parser(
        "new", help="generate a new key (file mode 0600)",
        description="Generate a new ed25519 key and write it (mode 0600), then print its "
                    "address. An existing file is never replaced without --force: a lost "
                    "funded key cannot be recovered.\n\n  dlbc keys new publisher")
    common(p_new)
    p_new.add_argument("--force", action="store_true", help="overwrite an existing key file")
    p_new.set_defaults(func=_keys_command(_new_key))

    p_show = keys_sub.add_parser(
        "show", help="print address and public key (never the private)",
        description="Print a key's address (what `dlbc query account` and genesis balances "
                    "take) and public key; the private key is never printed.\n\n"
                    "  dlbc keys show publisher\n  dlbc keys show ./dlbc-devnet/keys/miner-1.json")
    common(p_show)
    p_show.set_defaults(func=_keys_command(_show_key))
