"""A validator's consensus key with its voting power, as the driver's validator set needs it.

Why its own module: the key file format, addresses and signatures belong to
`abci_app.keyfile` / `abci_app.dlbc.crypto`; the driver and its tests only need the power
CometBFT's validator set carries beside the key and the ABCI shapes a vote names it by.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from abci_app.keyfile import KeyPair, load_key, save_key
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.pb.tendermint.crypto import keys_pb2

DEFAULT_POWER = 10


class ValidatorKey:
    """A validator's consensus key with its voting power.

    The key itself is an `abci_app.keyfile.KeyPair` (file format, address and signatures live
    there and in abci_app.dlbc.crypto); this class only adds the power CometBFT's validator set
    carries and the ValidatorUpdate InitChain needs.
    """

    __slots__ = ("key", "power")

    def __init__(self, private_key: Ed25519PrivateKey | KeyPair,
                 power: int = DEFAULT_POWER) -> None:
        self.key = (private_key if isinstance(private_key, KeyPair)
                    else KeyPair.from_private(private_key))
        self.power = power

    @classmethod
    def generate(cls, seed: bytes | None = None, power: int = DEFAULT_POWER) -> ValidatorKey:
        """Deterministic from `seed` (for tests: SHA-256(seed) is the ed25519 seed); random if None."""
        if seed is None:
            return cls(KeyPair.generate(), power)
        return cls(KeyPair.from_seed(hashlib.sha256(b"dlbc/validator-key/" + seed).digest()), power)

    @classmethod
    def load(cls, path: Path | str, power: int = DEFAULT_POWER) -> ValidatorKey:
        """Read a priv_validator_key.json-format file (raises keyfile.KeyFileError, a ValueError)."""
        return cls(load_key(path), power)

    def save(self, path: Path | str, *, overwrite: bool = False) -> Path:
        """Write the key file (mode 0600, atomic; refuses to replace a key unless `overwrite`)."""
        return save_key(path, self.key, overwrite=overwrite)

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self.key.private_key

    @property
    def pub_key(self) -> bytes:
        return self.key.public_key

    @property
    def address(self) -> bytes:
        return self.key.address

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def abci_validator(self) -> abci.Validator:
        """How a vote names this validator in CommitInfo / ExtendedCommitInfo."""
        return abci.Validator(address=self.address, power=self.power)

    def validator_update(self) -> abci.ValidatorUpdate:
        return abci.ValidatorUpdate(pub_key=keys_pb2.PublicKey(ed25519=self.pub_key), power=self.power)

    def __repr__(self) -> str:  # never shows the private key
        return f"ValidatorKey(address={self.address.hex()}, power={self.power})"
