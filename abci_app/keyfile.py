"""Ed25519 account key files in CometBFT's `priv_validator_key.json` format.

Why this format: an operator already knows it, `cometbft` tooling writes it, and one loader then
serves miner, publisher and validator keys alike (team contract, docs/processes.md). The file is

    {"address": HEX-UPPER,
     "pub_key":  {"type": "tendermint/PubKeyEd25519",  "value": base64(pub32)},
     "priv_key": {"type": "tendermint/PrivKeyEd25519", "value": base64(seed32 || pub32)}}

The account address is SHA-256(pub)[:20] (docs/wire.md, same as a CometBFT validator address).
That rule and the signature verification rule are abci_app.dlbc.crypto's, re-exported here as
`address_from_pubkey` and `verify_signature`: one definition for the chain and every tool.
Files are written 0600 via a temp file + `os.replace`, so a crash never leaves half a key behind.
Private key material is never logged or printed by anything in this module.

Named keys live in `<home>/keys/<NAME>.json` (`key_path`); home defaults to `$DLBC_HOME` or
`~/.dlbc`. The `dlbc keys new|show` command over them is `dlbc_ops.cli.keys`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from abci_app.dlbc.crypto import ADDRESS_LEN, address_of, public_key_bytes, verify_ed25519
from abci_app.dlbc.crypto import PUB_KEY_LEN as PUB_LEN
from abci_app.fsutil import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "ADDRESS_LEN",
    "PRIV_KEY_TYPE",
    "PUB_KEY_TYPE",
    "PUB_LEN",
    "SEED_LEN",
    "KeyFileError",
    "KeyPair",
    "address_from_pubkey",
    "default_home",
    "key_path",
    "load_key",
    "parse_key_json",
    "save_key",
    "verify_signature",
]

PUB_KEY_TYPE = "tendermint/PubKeyEd25519"
PRIV_KEY_TYPE = "tendermint/PrivKeyEd25519"
SEED_LEN = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: The address rule lives in abci_app.dlbc.crypto (consensus); this name is kept for callers.
address_from_pubkey = address_of

#: The signature rule is the chain's (abci_app.dlbc.crypto.verify_ed25519: S < L, canonical
#: key, no small-order key or R), not OpenSSL's laxer one: a sidecar must never accept a
#: signature that the chain would reject. Signature: (public_key, signature, message) -> bool.
verify_signature = verify_ed25519


class KeyFileError(ValueError):
    """A key file is missing, unreadable or malformed; the message names the file and the fault."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An ed25519 signing key with its derived public key and address."""

    private_key: Ed25519PrivateKey
    public_key: bytes  # 32 raw bytes
    address: bytes  # 20 bytes

    def __repr__(self) -> str:  # never show private material, even by accident in a traceback
        return f"KeyPair(address={self.address.hex()})"

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key from the OS CSPRNG."""
        return cls.from_private(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """Deterministic key from a 32-byte seed (tests, devnet fixtures)."""
        if len(seed) != SEED_LEN:
            raise ValueError(f"ed25519 seed must be {SEED_LEN} bytes, got {len(seed)}")
        return cls.from_private(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_private(cls, private_key: Ed25519PrivateKey) -> KeyPair:
        pub = public_key_bytes(private_key)
        return cls(private_key=private_key, public_key=pub, address=address_of(pub))

    @property
    def address_hex(self) -> str:
        """Lowercase hex address, the form shown to users and used in queries."""
        return self.address.hex()

    def seed(self) -> bytes:
        """The 32-byte private seed. Only for writing key files; never log it."""
        return self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> bytes:
        """64-byte ed25519 signature over `message`."""
        return self.private_key.sign(message)

    def to_json_dict(self) -> dict[str, Any]:
        """The key file's JSON object (contains the private key)."""
        return {
            "address": self.address.hex().upper(),
            "pub_key": {"type": PUB_KEY_TYPE, "value": base64.b64encode(self.public_key).decode()},
            "priv_key": {
                "type": PRIV_KEY_TYPE,
                "value": base64.b64encode(self.seed() + self.public_key).decode(),
            },
        }

    def public_info(self) -> dict[str, str]:
        """What `keys show` prints: address and public key, never the private key."""
        return {
            "address": self.address_hex,
            "pub_key": base64.b64encode(self.public_key).decode(),
            "pub_key_hex": self.public_key.hex(),
        }


def save_key(path: Path | str, key: KeyPair, *, overwrite: bool = False) -> Path:
    """Write `key` to `path` with mode 0600, atomically (temp file in the same dir + rename).

    Refuses to replace an existing file unless `overwrite`, because losing a funded key is not
    recoverable.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: key file already exists (refusing to overwrite)")
    data = (json.dumps(key.to_json_dict(), indent=2) + "\n").encode()
    return atomic_write(path, data, mode=0o600, durable_dir=True)


def _b64field(obj: Any, field: str, expected_type: str, path: Path) -> bytes:
    if not isinstance(obj, dict):
        raise KeyFileError(f"{path}: '{field}' must be an object with 'type' and 'value'")
    if obj.get("type") != expected_type:
        raise KeyFileError(
            f"{path}: '{field}.type' is {obj.get('type')!r}, expected {expected_type!r}"
        )
    value = obj.get("value")
    if not isinstance(value, str):
        raise KeyFileError(f"{path}: '{field}.value' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{path}: '{field}.value' is not valid base64") from exc


def parse_key_json(obj: Any, path: Path | str = "<key>") -> KeyPair:
    """Validate a decoded key-file object and build the `KeyPair`.

    Checks every length and that the stored public key and address agree with the private seed,
    so a hand-edited or mixed-up file fails here instead of producing unverifiable signatures.
    """
    path = Path(path)
    if not isinstance(obj, dict):
        raise KeyFileError(f"{path}: top level must be a JSON object")
    priv_raw = _b64field(obj.get("priv_key"), "priv_key", PRIV_KEY_TYPE, path)
    if len(priv_raw) not in (SEED_LEN, SEED_LEN + PUB_LEN):
        raise KeyFileError(
            f"{path}: priv_key must be {SEED_LEN + PUB_LEN} bytes (seed||pub), got {len(priv_raw)}"
        )
    key = KeyPair.from_seed(priv_raw[:SEED_LEN])
    if len(priv_raw) == SEED_LEN + PUB_LEN and priv_raw[SEED_LEN:] != key.public_key:
        raise KeyFileError(f"{path}: priv_key's public half does not match its seed")
    if "pub_key" in obj:
        pub = _b64field(obj["pub_key"], "pub_key", PUB_KEY_TYPE, path)
        if len(pub) != PUB_LEN:
            raise KeyFileError(f"{path}: pub_key must be {PUB_LEN} bytes, got {len(pub)}")
        if pub != key.public_key:
            raise KeyFileError(f"{path}: pub_key does not match priv_key")
    if "address" in obj:
        addr = obj["address"]
        if not isinstance(addr, str) or addr.lower() != key.address.hex():
            raise KeyFileError(
                f"{path}: address {addr!r} does not match the key (expected "
                f"{key.address.hex().upper()})"
            )
    return key


def load_key(path: Path | str) -> KeyPair:
    """Load and validate a key file; warns (does not fail) if group/other can read it."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot stat key file: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        log.warning(
            "key file %s has permissions %o; it should be readable by its owner only "
            "(fix: chmod 600 %s)",
            path,
            stat.S_IMODE(st.st_mode),
            path,
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    if len(raw) > 64 * 1024:
        raise KeyFileError(f"{path}: too large to be a key file ({len(raw)} bytes)")
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: not valid JSON ({exc})") from None
    return parse_key_json(obj, path)


# --------------------------------------------------------------------------- named keys


def default_home() -> Path:
    """`$DLBC_HOME` if set, else `~/.dlbc`."""
    env = os.environ.get("DLBC_HOME")
    return Path(env) if env else Path.home() / ".dlbc"


def key_path(home: Path | str, name: str) -> Path:
    """Where key `name` lives under `home`; rejects names that could escape the keys folder."""
    if not _NAME_RE.match(name):
        raise KeyFileError(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(not starting with '.' or '-')"
        )
    return Path(home) / "keys" / f"{name}.json"
