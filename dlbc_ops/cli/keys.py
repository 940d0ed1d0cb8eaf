"""`dlbc keys new NAME [--home DIR] [--force]` and `dlbc keys show NAME [--home DIR] [--json]`.

The file format and the `<home>/keys/<NAME>.json` layout are `abci_app.keyfile`'s (the chain and
every sidecar read the same files); this module is only the command over them. Private key
material is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from abci_app.keyfile import KeyFileError, KeyPair, default_home, key_path, load_key, save_key


def _new_key(path: Path, args: argparse.Namespace) -> KeyPair:
    key = KeyPair.generate()
    save_key(path, key, overwrite=args.force)
    return key


def _show_key(path: Path, _args: argparse.Namespace) -> KeyPair:
    return load_key(path)


def _keys_command(action: Callable[[Path, argparse.Namespace], KeyPair]
                  ) -> Callable[[argparse.Namespace], int]:
    """`dlbc keys <action>`: run it on the named key's path, print its public part; a
    KeyFileError becomes one `error:` line and exit status 1 (never a traceback)."""

    def run(args: argparse.Namespace) -> int:
        try:
            path = key_path(args.home, args.name)
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
    keys = subparsers.add_parser("keys", help="create and show ed25519 account key files")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", help="key name (file <home>/keys/<name>.json)")
        p.add_argument(
            "--home", type=Path, default=default_home(), help="DLBC home (default: %(default)s)"
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p_new = keys_sub.add_parser("new", help="generate a new key (file mode 0600)")
    common(p_new)
    p_new.add_argument("--force", action="store_true", help="overwrite an existing key file")
    p_new.set_defaults(func=_keys_command(_new_key))

    p_show = keys_sub.add_parser("show", help="print address and public key (never the private)")
    common(p_show)
    p_show.set_defaults(func=_keys_command(_show_key))
