"""`dlbc transfer --key NAME --to ADDRESS --amount N`: move funds between accounts.

    dlbc transfer --key faucet --to 3f2a...c1 --amount 1000000 --rpc http://127.0.0.1:26657
    dlbc transfer --key dlbc-devnet/keys/faucet.json --to publisher --amount 1000000

Why a command of its own (issue 13): a key made with `dlbc keys new` starts with nothing, and a
publisher needs its reward plus fees and a miner its bond before either can do anything. --to
takes a 40-hex address, or a key NAME (`dlbc keys new NAME`, under --home) or key file, whose
address is used. The sender pays the amount plus the tx fee (docs/economics.md). Prints the tx
hash and height and both new balances; a refusal prints the app's code and log (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlbc_ops.cli.common import CliError, add_node_options, guarded, resolve_key


def resolve_address(spec: str, home: Path | None) -> bytes:
    """A 40-hex address as given, else the address of key NAME or key file `spec`."""
    text = spec.strip().lower().removeprefix("0x")
    if len(text) == 40 and all(c in "0123456789abcdef" for c in text):
        return bytes.fromhex(text)
    try:
        key = resolve_key(spec, home)
    except CliError as exc:
        raise CliError(f"{spec!r} is neither a 40-hex address nor a usable key ({exc})") from None
    address: bytes = key.address
    return address


def _transfer(args: argparse.Namespace) -> int:
    from abci_app.dlbc import txs
    from training.sidecars.chain_client import ChainClient, TxRejected
    from training.sidecars.publisher import explain_rejection
    from training.sidecars.rpc_client import RpcClient

    key = resolve_key(args.key, args.home)
    to = resolve_address(args.to, args.home)
    if args.amount < 1:
        raise CliError("--amount must be >= 1")
    if to == key.address:
        raise CliError("--to is the sending key's own address; nothing to transfer")
    with RpcClient(args.rpc) as rpc:
        chain = ChainClient(rpc, key)
        try:
            res = chain.send(txs.transfer(to, args.amount), "Transfer")
        except TxRejected as exc:
            raise CliError(explain_rejection(exc, key.address.hex())) from None
        fee = next((e.get("fee") for e in res.tx_result.events if e.get("fee")), None)
        sender = chain.account(key.address)
        receiver = chain.account(to)
    print(f"transferred {args.amount} from {key.address.hex()} to {to.hex()}: tx {res.hash} "
          f"at height {res.height}" + (f", fee {fee}" if fee else ""))
    print(f"balance {key.address.hex()}: {sender.get('balance')}")
    print(f"balance {to.hex()}: {receiver.get('balance')}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dlbc transfer`."""
    p = subparsers.add_parser("transfer", help="send funds from one of your keys to an address",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_node_options(p)
    p.add_argument("--key", required=True,
                   help="sending key: a key NAME (`dlbc keys new NAME`) or key file path")
    p.add_argument("--home", type=Path, default=None,
                   help="where `dlbc keys` keeps named keys (default: $DLBC_HOME or ~/.dlbc)")
    p.add_argument("--to", required=True,
                   help="recipient: 40-hex address, or a key NAME / key file (its address)")
    p.add_argument("--amount", type=int, required=True, help="amount to send (the fee is extra)")
    p.set_defaults(func=guarded(_transfer))
