"""Genesis validators: entries from key files, and the checks CometBFT would make at start.

Only public fields are read, so the same code takes a full `priv_validator_key.json` or just its
public half; every stored address must agree with SHA-256(pub)[:20] (docs/wire.md).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from abci_app.dlbc.crypto import address_of
from dlbc_ops.genesis.errors import GenesisError, is_int_text

# CometBFT's JSON conventions (types/genesis.go).
PUB_KEY_TYPE_ED25519 = "tendermint/PubKeyEd25519"
DEFAULT_VALIDATOR_POWER = 10


def validator_from_key_file(
    path: Path | str, power: int = DEFAULT_VALIDATOR_POWER
) -> dict[str, Any]:
    """A genesis validator entry from a `priv_validator_key.json` (or `show-validator` JSON)."""
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
    pub = decode_pub_key(pub_obj, str(path))
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


def decode_pub_key(pub_obj: Any, where: str) -> bytes:
    """The 32 bytes of a `{"type": "tendermint/PubKeyEd25519", "value": BASE64}` object."""
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
        pub = decode_pub_key(val.get("pub_key"), where)
        address = address_of(pub).hex().upper()
        if "address" in val and str(val["address"]).upper() != address:
            raise GenesisError(f"{where}: address {val['address']!r} does not match pub_key")
        power = val.get("power")
        if not is_int_text(power):
            raise GenesisError(f"{where}: power must be a string integer, got {power!r}")
        if int(power) <= 0:
            raise GenesisError(f"{where}: power must be positive, got {power}")
        if address in seen:
            raise GenesisError(f"{where}: validator {address} listed twice")
        seen.add(address)
