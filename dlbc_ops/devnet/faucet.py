"""The devnet's faucet: an account funded in genesis that hands funds to operators' keys.

Why (issue 13): a key made with `dlbc keys new` holds nothing, so on a fresh devnet a new
publisher or miner could not pay a reward, a bond or even a fee. `dlbc devnet --fund ADDR=N`
sends N from the faucet to ADDR with an ordinary `Transfer` once the chain is up. A Transfer
rather than a genesis balance, so that it also works when the devnet resumes an OUT folder
whose genesis is long written. The faucet's key is OUT/keys/faucet.json, so an operator can
also pay from it later: `dlbc transfer --key OUT/keys/faucet.json --to ADDR --amount N`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from abci_app.keyfile import KeyFileError, KeyPair, load_key, save_key
from dlbc_ops.localnet import demo
from dlbc_ops.supervisor import LaunchError

FAUCET = "faucet"
#: The faucet's genesis balance: ~100 publishers' worth of demo balances.
FAUCET_BALANCE = 1_000_000_000


class FaucetError(LaunchError):
    """A --fund cannot be paid; the message names why and what to do."""


def faucet_path(out: Path) -> Path:
    return demo.key_file(out, FAUCET)


def load_or_create(out: Path) -> tuple[KeyPair, bool]:
    """The faucet key of OUT and whether it was made just now (written 0600 at once)."""
    path = faucet_path(out)
    if path.exists():
        try:
            return load_key(path), False
        except KeyFileError as exc:
            raise FaucetError(f"{exc}; restore that file or remove it (a new faucet is "
                              "then made, funded only on a fresh --out)") from None
    key = KeyPair.generate()
    try:
        save_key(path, key)
    except (OSError, KeyFileError) as exc:
        raise FaucetError(f"cannot write the faucet key {path}: {exc}") from None
    return key, True


def pay(rpc_url: str, faucet: KeyPair, funds: Sequence[tuple[bytes, int]],
        say: Callable[[str], None]) -> None:
    """Send each (address, amount) from the faucet; FaucetError on the first refusal."""
    from abci_app.dlbc import txs
    from training.sidecars.chain_client import ChainClient, TxRejected
    from training.sidecars.rpc_client import RpcClient

    with RpcClient(rpc_url) as rpc:
        chain = ChainClient(rpc, faucet)
        for address, amount in funds:
            try:
                res = chain.send(txs.transfer(address, amount), "Transfer")
            except TxRejected as exc:
                have = chain.account(faucet.address).get("balance", 0)
                raise FaucetError(
                    f"--fund {address.hex()}={amount}: the faucet {faucet.address.hex()} (balance "
                    f"{have}) could not pay it: {exc}. A devnet made before the faucet existed "
                    "has none in its genesis: use a fresh --out") from None
            balance = chain.account(address).get("balance")
            say(f"faucet: sent {amount} to {address.hex()} (tx {res.hash[:16]}… at height "
                f"{res.height}); its balance is now {balance}")
