"""`dlbc genesis`: write DLBC's `app_state` into a CometBFT genesis.json (or create one).

Why a builder: a DLBC chain only settles rounds when vote extensions are on (DESIGN §2, §6), the
key for that moved between CometBFT versions, and every validator must start from byte-identical
genesis files. This module owns the CometBFT-facing half of genesis: chain id, genesis time,
validators from key files, consensus params in the form the target CometBFT version expects:

    v0.38: consensus_params.abci.vote_extensions_enable_height    = "1"   (string int)
    v1.0 : consensus_params.feature.vote_extensions_enable_height = "1"

The DLBC half (`app_state`: parameters, genesis balances, their defaults and validation) belongs to
the state machine, `abci_app.dlbc.genesis`, whose defaults and validator are used here directly, so
that `dlbc genesis`, `dlbc localnet`, `dlbc devnet`'s dev node and the app's InitChain agree.

Everything here is a pure function over JSON-like dicts except `run_genesis` (the CLI), so
the localnet builder and the tests reuse it. Bad input raises `GenesisError` whose message names
the problem and the fix; nothing is written unless the whole document validates.

CLI (see `cometbft/README.md`):

    dlbc genesis --genesis ~/.cometbft/config/genesis.json          # merge in place
    dlbc genesis --chain-id dlbc-1 --validator node0/config/priv_validator_key.json \\
                 --account <addr-hex>=1000000 --param train_seconds=120 --out genesis.json
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.dlbc.crypto import address_of
from abci_app.dlbc.genesis import default_app_state, validate_app_state
from abci_app.fsutil import atomic_write
from abci_app.rfc3339 import format_rfc3339_ns, is_rfc3339
from dlbc_ops.localnet.binary import find_cometbft, install_hint

# CometBFT's limits and JSON conventions (types/genesis.go, types/params.go).
MAX_CHAIN_ID_LEN = 50
PUB_KEY_TYPE_ED25519 = "tendermint/PubKeyEd25519"
DEFAULT_VALIDATOR_POWER = 10
VOTE_EXTENSIONS_HEIGHT = 1

# Supported CometBFT release lines and where each keeps the vote-extension switch.
FORM_V038 = "0.38"
FORM_V1 = "1.0"
FORMS: tuple[str, ...] = (FORM_V038, FORM_V1)
_VE_SECTION = {FORM_V038: "abci", FORM_V1: "feature"}

_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
_INT = re.compile(r"^-?[0-9]+$")


class GenesisError(ValueError):
    """The genesis (or an argument building it) is invalid; the message says what and how to fix."""


# --------------------------------------------------------------------------- CometBFT versions


@dataclass(frozen=True, slots=True)
class CometVersion:
    """A parsed `cometbft version` answer (e.g. "0.38.12", "v1.0.1", "0.38.17+abc123")."""

    major: int
    minor: int
    patch: int
    raw: str

    @property
    def form(self) -> str:
        """Which genesis/config form this release expects (`FORM_V038` / `FORM_V1`)."""
        return f"{self.major}.{self.minor}" if self.major == 1 else f"0.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


_VERSION_RE = re.compile(r"\bv?(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.+-]*)?")

INSTALL_HINT = "install CometBFT v0.38.x or v1.0.x: " + install_hint()


def parse_cometbft_version(text: str) -> CometVersion:
    """Parse the output of `cometbft version`; the first semver-looking token wins."""
    match = _VERSION_RE.search(text.strip())
    if match is None:
        raise GenesisError(
            f"could not read a version from `cometbft version` output {text.strip()[:80]!r}; "
            f"fix: {INSTALL_HINT}"
        )
    major, minor, patch = (int(g) for g in match.groups())
    return CometVersion(major, minor, patch, text.strip())


def check_supported(version: CometVersion) -> str:
    """Return the genesis form for a supported release; refuse others with the fix.

    Why only these two: DLBC needs ABCI 2.0 (vote extensions), which starts in v0.38; v1.0 keeps
    the same socket field numbers (DESIGN §2). Later majors may change the wire again.
    """
    if (version.major, version.minor) in ((0, 38), (1, 0)):
        return version.form
    raise GenesisError(
        f"cometbft {version} is not supported: DLBC needs ABCI 2.0 with vote extensions as in "
        f"CometBFT v0.38.x or v1.0.x; fix: {INSTALL_HINT}"
    )


def detect_cometbft(binary: str | None = None, timeout_s: float = 10.0) -> CometVersion | None:
    """Run `cometbft version` on the binary `find_cometbft` picks; None when there is none."""
    path = find_cometbft(binary)
    if path is None:
        return None
    try:
        proc = subprocess.run(
            [path, "version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GenesisError(f"`{path} version` failed to run ({exc}); fix: {INSTALL_HINT}") from None
    if proc.returncode != 0:
        raise GenesisError(
            f"`{path} version` exited {proc.returncode}: {proc.stderr.strip()[:200]}; "
            f"fix: {INSTALL_HINT}"
        )
    return parse_cometbft_version(proc.stdout or proc.stderr)


def infer_form(genesis: Mapping[str, Any]) -> str | None:
    """Guess the CometBFT line that wrote `genesis` from its consensus params (None: no clue).

    `cometbft init` v1.0 writes `feature` (and `synchrony`); v0.38 writes `abci`.
    """
    params = genesis.get("consensus_params")
    if not isinstance(params, Mapping):
        return None
    if "feature" in params or "synchrony" in params:
        return FORM_V1
    if "abci" in params:
        return FORM_V038
    return None


# --------------------------------------------------------------------------- consensus params


def default_consensus_params(form: str) -> dict[str, Any]:
    """CometBFT's default consensus params for `form`, vote extensions on from height 1.

    Values are those `cometbft init` writes (types.DefaultConsensusParams); int64s are JSON
    strings as in every CometBFT genesis.
    """
    _check_form(form)
    params: dict[str, Any] = {
        "block": {"max_bytes": "22020096", "max_gas": "-1"},
        "evidence": {
            "max_age_num_blocks": "100000",
            "max_age_duration": "172800000000000",
            "max_bytes": "1048576",
        },
        "validator": {"pub_key_types": ["ed25519"]},
        "version": {"app": "0"},
    }
    if form == FORM_V1:
        params["block"]["max_bytes"] = "4194304"
        params["synchrony"] = {"precision": "505000000", "message_delay": "15000000000"}
        params["feature"] = {"vote_extensions_enable_height": "0", "pbts_enable_height": "0"}
    else:
        params["abci"] = {"vote_extensions_enable_height": "0"}
    enable_vote_extensions(params, form)
    return params


def enable_vote_extensions(
    consensus_params: dict[str, Any], form: str, height: int = VOTE_EXTENSIONS_HEIGHT
) -> None:
    """Set the vote-extension switch of `form` in place and drop the other version's key.

    Why drop it: a v1.0 node given both `abci` and `feature` heights, or a v0.38 node given an
    unknown `feature` object, is at best confusing; each version reads exactly one.
    """
    _check_form(form)
    if height < 1:
        raise GenesisError(f"vote extensions must be enabled from a height >= 1, got {height}")
    section = _VE_SECTION[form]
    other = _VE_SECTION[FORM_V1 if form == FORM_V038 else FORM_V038]
    current = consensus_params.get(section)
    if not isinstance(current, dict):
        current = {}
    current["vote_extensions_enable_height"] = str(height)
    if form == FORM_V1:
        current.setdefault("pbts_enable_height", "0")
    consensus_params[section] = current
    old = consensus_params.get(other)
    if isinstance(old, dict):
        old.pop("vote_extensions_enable_height", None)
        # `abci` has no other field in v0.38/v1.0; an emptied `feature` is meaningless to v0.38.
        if not old or other == "feature":
            consensus_params.pop(other)


def vote_extensions_height(consensus_params: Mapping[str, Any], form: str) -> int:
    """The enable height written for `form`, or 0 when absent (= disabled in CometBFT)."""
    section = consensus_params.get(_VE_SECTION[form])
    if not isinstance(section, Mapping):
        return 0
    value = section.get("vote_extensions_enable_height", "0")
    if isinstance(value, bool) or not isinstance(value, str | int) or not _INT.match(str(value)):
        raise GenesisError(
            f"consensus_params.{_VE_SECTION[form]}.vote_extensions_enable_height must be a "
            f'string integer such as "1", got {value!r}'
        )
    return int(value)


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise GenesisError(f"unknown CometBFT version form {form!r}; use one of {', '.join(FORMS)}")


# --------------------------------------------------------------------------- validators


def validator_from_key_file(
    path: Path | str, power: int = DEFAULT_VALIDATOR_POWER
) -> dict[str, Any]:
    """A genesis validator entry from a `priv_validator_key.json` (or `show-validator` JSON).

    Only public fields are read, so the same code takes a full key file or just its public half;
    the stored address must agree with SHA-256(pub)[:20] (DESIGN §2).
    """
    path = Path(path)
    if power <= 0:
        raise GenesisError(f"{path}: validator power must be a positive integer, got {power}")
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise GenesisError(f"{path}: validator key file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenesisError(f"{path}: cannot read validator key file ({exc})") from None
    pub_obj = obj.get("pub_key", obj) if isinstance(obj, dict) else None
    pub = _decode_pub_key(pub_obj, str(path))
    address = address_of(pub).hex().upper()
    stored = obj.get("address") if isinstance(obj, dict) else None
    if stored is not None and (not isinstance(stored, str) or stored.upper() != address):
        raise GenesisError(
            f"{path}: address {stored!r} does not match its pub_key (expected {address}); "
            "fix: regenerate the key file with `cometbft init` or `dlbc keys new`"
        )
    return validator_entry(
        pub, power, path.parent.parent.name if path.parent.name == "config" else path.stem
    )


def validator_entry(
    pub: bytes, power: int = DEFAULT_VALIDATOR_POWER, name: str = ""
) -> dict[str, Any]:
    """A genesis `validators` entry for the ed25519 public key `pub`."""
    return {
        "address": address_of(pub).hex().upper(),
        "pub_key": {"type": PUB_KEY_TYPE_ED25519, "value": base64.b64encode(pub).decode()},
        "power": str(power),
        "name": name,
    }


def _decode_pub_key(pub_obj: Any, where: str) -> bytes:
    if not isinstance(pub_obj, Mapping) or pub_obj.get("type") != PUB_KEY_TYPE_ED25519:
        kind = pub_obj.get("type") if isinstance(pub_obj, Mapping) else type(pub_obj).__name__
        raise GenesisError(
            f'{where}: pub_key must be {{"type": "{PUB_KEY_TYPE_ED25519}", "value": ...}}, '
            f"got type {kind!r}; DLBC validators use ed25519 keys"
        )
    value = pub_obj.get("value")
    try:
        pub = base64.b64decode(value if isinstance(value, str) else "", validate=True)
    except (binascii.Error, ValueError):
        raise GenesisError(f"{where}: pub_key.value is not valid base64") from None
    if len(pub) != 32:
        raise GenesisError(f"{where}: ed25519 pub_key must be 32 bytes, got {len(pub)}")
    return pub


def check_validators(validators: Any) -> None:
    """Each entry: ed25519 pub key, positive power, matching address; no duplicates."""
    if not isinstance(validators, list) or not validators:
        raise GenesisError(
            "genesis has no validators; fix: pass --validator PATH/priv_validator_key.json "
            "(one per validator node)"
        )
    seen: set[str] = set()
    for i, val in enumerate(validators):
        where = f"validators[{i}]"
        if not isinstance(val, Mapping):
            raise GenesisError(f"{where}: must be an object")
        pub = _decode_pub_key(val.get("pub_key"), where)
        address = address_of(pub).hex().upper()
        if "address" in val and str(val["address"]).upper() != address:
            raise GenesisError(f"{where}: address {val['address']!r} does not match pub_key")
        power = val.get("power")
        if (
            not isinstance(power, str | int)
            or isinstance(power, bool)
            or not _INT.match(str(power))
        ):
            raise GenesisError(f"{where}: power must be a string integer, got {power!r}")
        if int(power) <= 0:
            raise GenesisError(f"{where}: power must be positive, got {power}")
        if address in seen:
            raise GenesisError(f"{where}: validator {address} listed twice")
        seen.add(address)


# --------------------------------------------------------------------------- DLBC app_state


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
    if not _INT.match(amount) or int(amount) < 0:
        raise GenesisError(f"--account {text!r}: amount must be a non-negative integer")
    return addr.lower(), int(amount)


def parse_param(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` with VALUE read as int, bool, JSON or else a plain string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise GenesisError(f"--param {text!r}: expected NAME=VALUE, e.g. train_seconds=120")
    raw = raw.strip()
    value: Any
    if _INT.match(raw):
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
    _merge_balances(state, list(accounts))
    check_app_state(state)
    return state


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


# --------------------------------------------------------------------------- whole document


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
    _check_form(form)
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
    if not isinstance(height, str | int) or not _INT.match(str(height)) or int(height) < 0:
        raise GenesisError(f"initial_height must be a string integer >= 0, got {height!r}")
    params = doc.get("consensus_params")
    if not isinstance(params, Mapping):
        raise GenesisError("genesis has no consensus_params object")
    ve = vote_extensions_height(params, form)
    if ve < 1:
        raise GenesisError(
            f"vote extensions are disabled (consensus_params.{_VE_SECTION[form]}."
            "vote_extensions_enable_height is 0 or missing) but DLBC settles rounds through them; "
            "fix: run `dlbc genesis --genesis FILE` to enable them from height 1"
        )
    check_validators(doc.get("validators"))
    app_state = doc.get("app_state")
    if not isinstance(app_state, Mapping):
        raise GenesisError("genesis app_state must be a JSON object")
    check_app_state(app_state)
    check_settle_fits(params, app_state, doc.get("validators"))


def check_settle_fits(consensus_params: Mapping[str, Any], app_state: Mapping[str, Any],
                      validators: Any) -> None:
    """The largest honest Settle (every validator's fullest extension, settle.max_settle_bytes)
    plus one full tx must fit a block, and the validator set its bound; else a round could
    never settle."""
    from abci_app.dlbc.params import Params
    from abci_app.dlbc.settle import MAX_VALIDATORS, max_settle_bytes

    if isinstance(validators, list) and len(validators) > MAX_VALIDATORS:
        raise GenesisError(f"genesis has {len(validators)} validators; DLBC settles rounds with "
                           f"at most {MAX_VALIDATORS}")
    params = Params.from_json(app_state.get("params"))
    block = consensus_params.get("block")
    raw = block.get("max_bytes") if isinstance(block, Mapping) else None
    if raw is None or not _INT.match(str(raw)) or int(raw) == -1:
        return  # -1: CometBFT's 100 MiB hard cap
    need = max_settle_bytes(params) + params.max_tx_bytes
    if int(raw) < need:
        raise GenesisError(
            f"consensus_params.block.max_bytes {raw} cannot hold the largest Settle with a tx "
            f"({need} bytes: {MAX_VALIDATORS} validators x {params.max_reveals_per_round} "
            "verdicts); fix: raise block.max_bytes or lower params.max_reveals_per_round")


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


# --------------------------------------------------------------------------- CLI


def _resolve_form(explicit: str | None, existing: Mapping[str, Any] | None) -> str:
    if explicit:
        _check_form(explicit)
        return explicit
    # The file's own form first: it was written by the `cometbft init` that will run it, which
    # may not be the binary `find_cometbft` picks (two releases installed side by side).
    inferred = infer_form(existing) if existing else None
    if inferred is not None:
        return inferred
    version = detect_cometbft()
    if version is not None:
        return check_supported(version)
    return FORM_V038


def _parse_validator(text: str) -> dict[str, Any]:
    path, sep, power = text.rpartition("=")
    if not sep:
        return validator_from_key_file(text)
    if not _INT.match(power):
        raise GenesisError(f"--validator {text!r}: expected PATH or PATH=POWER")
    return validator_from_key_file(path, int(power))


def run_genesis(args: argparse.Namespace) -> int:
    """`dlbc genesis`: build, validate, then (only then) write."""
    try:
        existing = load_genesis(args.genesis) if args.genesis else None
        form = _resolve_form(args.cometbft_version, existing)
        validators = [_parse_validator(v) for v in args.validator] or None
        accounts = [parse_account(a) for a in args.account]
        params = [parse_param(p) for p in args.param]
        if existing is None:
            if validators is None:
                raise GenesisError(
                    "no --genesis to merge into and no --validator given; fix: pass "
                    "--genesis FILE, or --validator KEYFILE to create a new genesis"
                )
            existing = new_genesis(args.chain_id or "dlbc-local", validators, form)
        doc = apply_dlbc(
            existing,
            form,
            chain_id=args.chain_id,
            genesis_time=args.genesis_time,
            validators=validators,
            accounts=accounts,
            params=params,
        )
        text = dumps_genesis(doc)
        out: Path | None = args.out or args.genesis
        if out is None or str(out) == "-":
            sys.stdout.write(text)
            return 0
        try:
            write_text_atomic(Path(out), text)
        except OSError as exc:
            raise GenesisError(
                f"cannot write {out}: {exc.strerror}; fix: choose a writable --out path"
            ) from None
    except GenesisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {out}: chain_id={doc['chain_id']} validators={len(doc['validators'])} "
        f"vote extensions from height {VOTE_EXTENSIONS_HEIGHT} (CometBFT {form} form)",
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
