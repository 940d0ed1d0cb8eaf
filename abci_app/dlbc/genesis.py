"""Genesis `app_state` of DLBC: initial balances and chain parameters.

Shape (all integers may be JSON numbers or decimal strings)::

    {"params":   {<Params field>: int, ...,             # optional; defaults in params.Params
                  "watermark_matrix": "diff"},          # (the one string-valued param)
     "accounts": [{"address": "<40 hex>", "balance": int}, ...]}   # optional

`InitChain` accepts the empty app_state that `cometbft init` writes (empty bytes, "{}" or
"null"): default params, no balances. `validate_app_state` is what the genesis builder CLI
calls; its ValueError messages name the offending field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from abci_app.dlbc.params import Params, _as_int
from abci_app.dlbc.records import Address
from abci_app.dlbc.wire import WireError, parse_json_object

# InitChain must decide the same on every node and Python: app_state's shape is bounded before
# it is parsed ({"params": {...}, "accounts": [{"address", "balance"}, ...]} is 3 levels; room
# for a million accounts; a u64 balance has at most 20 digits).
GENESIS_MAX_DEPTH = 4
GENESIS_MAX_VALUES = 4_000_000
GENESIS_MAX_INT_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Genesis:
    params: Params
    balances: tuple[tuple[Address, int], ...]  # sorted by address, unique


def default_app_state() -> dict[str, Any]:
    """The app_state a genesis builder starts from: every param named, no accounts.

    A new chain gets pipelined rounds (`rounds_in_flight` 2, issue 14) and the proof-of-learning
    spot-check (`proof_of_learning` 4 epochs per model, issue 15); `Params()` itself keeps 1 and
    0, the behaviour of a genesis written before the params existed."""
    return {"params": asdict(replace(Params(), rounds_in_flight=2, proof_of_learning=4)),
            "accounts": []}


def parse_address(text: Any, where: str = "address") -> Address:
    if not isinstance(text, str) or len(text) != 40:
        raise ValueError(f"{where} must be 40 hex characters, got {text!r}")
    try:
        return Address(bytes.fromhex(text))
    except ValueError:
        raise ValueError(f"{where} is not hex: {text!r}") from None


def validate_app_state(obj: Any) -> Genesis:
    """Check a parsed app_state; raise ValueError with a clear message on the first fault."""
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise ValueError("app_state must be a JSON object")  # noqa: TRY004
    unknown = sorted(set(obj) - {"params", "accounts"})
    if unknown:
        raise ValueError(f"unknown app_state keys: {', '.join(unknown)}")
    params = Params.from_json(obj.get("params"))
    accounts = obj.get("accounts") or []
    if not isinstance(accounts, list):
        raise ValueError("app_state.accounts must be a list")  # noqa: TRY004
    seen: dict[Address, int] = {}
    for i, acc in enumerate(accounts):
        if not isinstance(acc, dict) or set(acc) != {"address", "balance"}:
            raise ValueError(f"app_state.accounts[{i}] must be {{'address', 'balance'}}")
        addr = parse_address(acc["address"], f"app_state.accounts[{i}].address")
        if addr in seen:
            raise ValueError(f"app_state.accounts[{i}]: duplicate address {acc['address']}")
        bal = _as_int(acc["balance"], f"app_state.accounts[{i}].balance")
        if bal < 0 or bal >= 2**64:
            raise ValueError(f"app_state.accounts[{i}].balance out of range")
        seen[addr] = bal
    return Genesis(params=params, balances=tuple(sorted(seen.items())))


def parse_app_state(raw: bytes) -> Genesis:
    """Decode InitChain.app_state_bytes; empty means defaults."""
    text = raw.decode("utf-8", errors="strict").strip() if raw else ""
    if text in ("", "null"):
        return validate_app_state({})
    try:
        obj = parse_json_object(text, max_depth=GENESIS_MAX_DEPTH, max_values=GENESIS_MAX_VALUES,
                                max_int_digits=GENESIS_MAX_INT_DIGITS)
    except WireError as e:
        raise ValueError(f"app_state is not valid JSON: {e}") from None
    return validate_app_state(obj)
