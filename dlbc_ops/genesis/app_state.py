"""The DLBC half of genesis: `app_state` = the state machine's defaults + balances + overrides.

The defaults and the validation belong to the state machine (`abci_app.dlbc.genesis`) and are
called directly, so that `dlbc genesis`, `dlbc localnet`, the dev node and the app's InitChain
agree on one definition. This module only parses the operator's `--account`/`--param` and
merges them in.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from abci_app.dlbc.genesis import default_app_state, validate_app_state
from dlbc_ops.genesis.errors import GenesisError, is_int_text
from dlbc_ops.genesis.validators import validator_from_key_file

_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")


def check_app_state(app_state: Mapping[str, Any]) -> None:
    """The state machine's own app_state validation (InitChain runs the same), as GenesisError."""
    try:
        validate_app_state(copy.deepcopy(dict(app_state)))
    except (ValueError, TypeError, KeyError) as exc:  # keep the state machine's message
        raise GenesisError(f"invalid app_state: {exc}") from None


def parse_account(text: str) -> tuple[str, int]:
    """`ADDR=AMOUNT` (ADDR: 40 hex chars, or a key file whose address is used) -> (hex, amount)."""
    addr, sep, amount = text.rpartition("=")
    if not sep or not addr:
        raise GenesisError(f"--account {text!r}: expected ADDRESS=AMOUNT, e.g. 3f1a...c9=1000000")
    if not _HEX40.match(addr):
        key_path = Path(addr)
        if not key_path.is_file():
            raise GenesisError(
                f"--account {text!r}: {addr!r} is neither a 40-hex-char address nor a key file"
            )
        addr = validator_from_key_file(key_path)["address"]
    if not is_int_text(amount) or int(amount) < 0:
        raise GenesisError(f"--account {text!r}: amount must be a non-negative integer")
    return addr.lower(), int(amount)


def parse_param(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` with VALUE read as int, bool, JSON or else a plain string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise GenesisError(f"--param {text!r}: expected NAME=VALUE, e.g. train_seconds=120")
    raw = raw.strip()
    value: Any
    if is_int_text(raw):
        value = int(raw)
    elif raw in ("true", "false"):
        value = raw == "true"
    else:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
    return name.strip(), value


def build_app_state(
    base: Mapping[str, Any] | None,
    *,
    accounts: Iterable[tuple[str, int]] = (),
    params: Iterable[tuple[str, Any]] = (),
) -> dict[str, Any]:
    """DLBC app_state = `base` (or the defaults) + genesis balances + parameter overrides.

    Parameters must already exist in the defaults and keep their JSON type, so a typo such as
    `train_second=5` is an error instead of a silently ignored key.
    """
    defaults = default_app_state()
    state = copy.deepcopy(dict(base)) if base else copy.deepcopy(defaults)
    known = defaults["params"]
    state_params = state.setdefault("params", copy.deepcopy(known))
    for name, value in params:
        if name not in known:
            raise GenesisError(
                f"--param {name}: unknown parameter; known: {', '.join(sorted(known))}"
            )
        default = known[name]
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, int) and not isinstance(value, int)
        ):
            raise GenesisError(
                f"--param {name}={value!r}: expected "
                f"{'true/false' if isinstance(default, bool) else 'an integer'} "
                f"like the default {default!r}"
            )
        state_params[name] = value
    _sequential_if_phases_need_it(state_params, {name for name, _ in params})
    _merge_balances(state, list(accounts))
    check_app_state(state)
    return state


def _sequential_if_phases_need_it(params: dict[str, Any], named: set[str]) -> None:
    """Pipelined rounds (the default) need reveal + verify <= train (docs/rounds.md); phases set
    shorter than that without naming `rounds_in_flight` get sequential rounds instead of a
    refused genesis. Naming `rounds_in_flight=2` with such phases is still an error."""
    if "rounds_in_flight" in named or params.get("rounds_in_flight") != 2:
        return
    try:
        train, reveal, verify = (int(params[k]) for k in ("train_seconds", "reveal_seconds",
                                                          "verify_seconds"))
    except (KeyError, TypeError, ValueError):
        return  # check_app_state names the bad value
    if reveal + verify > train:
        params["rounds_in_flight"] = 1


def _merge_balances(state: dict[str, Any], accounts: list[tuple[str, int]]) -> None:
    """Set app_state.accounts[address].balance for each (address, amount); sorted by address."""
    seen: set[str] = set()
    for addr, _ in accounts:
        if addr in seen:
            raise GenesisError(f"--account {addr}: given twice; fix: one --account per address")
        seen.add(addr)
    if not accounts:
        return
    current = state.get("accounts") or []
    if not isinstance(current, list):
        raise GenesisError(f"app_state.accounts must be a list, got {type(current).__name__}")
    by_addr = {
        str(e.get("address", "")).lower(): dict(e) for e in current if isinstance(e, Mapping)
    }
    for addr, amount in accounts:
        by_addr[addr] = {"address": addr, "balance": amount}
    state["accounts"] = [by_addr[a] for a in sorted(by_addr)]
