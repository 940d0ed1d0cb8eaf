"""The whole genesis document: create, merge DLBC into, validate, read and write.

Why one place: every validator must start from byte-identical genesis files (`dumps_genesis`),
and `dlbc genesis`, `dlbc localnet` and the dev node must accept and refuse the same documents
(`validate_genesis`). Everything here is a pure function over JSON-like dicts except the file
helpers at the end; nothing is written unless the whole document validates.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from abci_app.fsutil import atomic_write
from abci_app.rfc3339 import format_rfc3339_ns, is_rfc3339
from dlbc_ops.genesis.app_state import build_app_state, check_app_state
from dlbc_ops.genesis.consensus import (
    check_form,
    check_settle_fits,
    default_consensus_params,
    enable_vote_extensions,
    require_vote_extensions,
)
from dlbc_ops.genesis.errors import GenesisError, is_int_text
from dlbc_ops.genesis.validators import check_validators

# CometBFT's limit (types/genesis.go MaxChainIDLen).
MAX_CHAIN_ID_LEN = 50


def new_genesis(
    chain_id: str,
    validators: list[dict[str, Any]],
    form: str,
    *,
    genesis_time: str | None = None,
    app_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A fresh genesis document in CometBFT's field order (genesis time: now, in ns)."""
    return {
        "genesis_time": genesis_time or format_rfc3339_ns(time.time_ns()),
        "chain_id": chain_id,
        "initial_height": "1",
        "consensus_params": default_consensus_params(form),
        "validators": validators,
        "app_hash": "",
        "app_state": dict(app_state or {}),
    }


def validate_genesis(doc: Mapping[str, Any], form: str) -> None:
    """Everything CometBFT and DLBC need from a genesis; raises GenesisError naming the fix."""
    check_form(form)
    chain_id = doc.get("chain_id")
    if not isinstance(chain_id, str) or not chain_id.strip():
        raise GenesisError("genesis chain_id is empty; fix: pass --chain-id NAME")
    if len(chain_id) > MAX_CHAIN_ID_LEN:
        raise GenesisError(
            f"chain_id {chain_id[:20]!r}... is {len(chain_id)} chars; CometBFT allows at most "
            f"{MAX_CHAIN_ID_LEN}"
        )
    gtime = doc.get("genesis_time")
    if not is_rfc3339(gtime):
        raise GenesisError(
            f"genesis_time {gtime!r} is not RFC 3339 (e.g. 2026-01-01T00:00:00Z); "
            "fix: pass --genesis-time"
        )
    height = doc.get("initial_height", "1")
    if not isinstance(height, str | int) or not is_int_text(str(height)) or int(height) < 0:
        raise GenesisError(f"initial_height must be a string integer >= 0, got {height!r}")
    params = doc.get("consensus_params")
    if not isinstance(params, Mapping):
        raise GenesisError("genesis has no consensus_params object")
    require_vote_extensions(params, form)
    check_validators(doc.get("validators"))
    app_state = doc.get("app_state")
    if not isinstance(app_state, Mapping):
        raise GenesisError("genesis app_state must be a JSON object")
    check_app_state(app_state)
    check_settle_fits(params, app_state, doc.get("validators"))


def apply_dlbc(
    doc: Mapping[str, Any],
    form: str,
    *,
    chain_id: str | None = None,
    genesis_time: str | None = None,
    validators: list[dict[str, Any]] | None = None,
    accounts: Iterable[tuple[str, int]] = (),
    params: Iterable[tuple[str, Any]] = (),
) -> dict[str, Any]:
    """Return a copy of `doc` ready for a DLBC chain on CometBFT `form`; validated.

    Keeps every field the operator set (key order too) except: app_state merged with the DLBC
    defaults, vote extensions enabled from height 1, and the explicit overrides given.
    """
    out = copy.deepcopy(dict(doc))
    if chain_id is not None:
        out["chain_id"] = chain_id
    if genesis_time is not None:
        if not is_rfc3339(genesis_time):
            raise GenesisError(f"--genesis-time {genesis_time!r} is not RFC 3339")
        out["genesis_time"] = genesis_time
    if validators is not None:
        out["validators"] = validators
    if str(out.get("initial_height", "0")) == "0":
        # CometBFT reads 0 as 1 (types/genesis.go ValidateAndComplete); writing "1" says so to
        # every other reader of the file, e.g. the embedded dev node and the socket driver.
        out["initial_height"] = "1"
    params_doc = out.get("consensus_params")
    if not isinstance(params_doc, dict):
        params_doc = default_consensus_params(form)
    enable_vote_extensions(params_doc, form)
    out["consensus_params"] = params_doc
    base = out.get("app_state")
    if base is not None and not isinstance(base, Mapping):
        raise GenesisError("existing genesis app_state is not a JSON object")
    out["app_state"] = build_app_state(base or None, accounts=accounts, params=params)
    validate_genesis(out, form)
    return out


def dumps_genesis(doc: Mapping[str, Any]) -> str:
    """Canonical text of a genesis: 2-space indent like CometBFT, trailing newline.

    Every localnet node gets these exact bytes, so nodes cannot disagree on genesis.
    """
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write via a temp file in the same folder + rename: readers never see half a genesis."""
    atomic_write(path, text.encode(), mode=mode)


def load_genesis(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise GenesisError(
            f"{path}: genesis file not found; fix: run `cometbft init` first or omit --genesis "
            "to create one"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenesisError(f"{path}: not a readable JSON genesis ({exc})") from None
    if not isinstance(doc, dict):
        raise GenesisError(f"{path}: genesis must be a JSON object")
    return doc
