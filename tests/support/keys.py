"""Deterministic account keys for tests: the same name or seed gives the same address in every
run, so genesis balances, logs and failures are reproducible."""

from __future__ import annotations

import hashlib

from abci_app.keyfile import KeyPair


def keypair(seed: int) -> KeyPair:
    """Key number `seed` (0-255) of the sidecar and chain tests."""
    return KeyPair.from_seed(bytes([seed]) * 32)


def keypairs(n: int, tag: str) -> list[KeyPair]:
    """`n` distinct keys named by `tag` (one family per test that funds many accounts)."""
    return [KeyPair.from_seed(hashlib.sha256(f"{tag}-{i}".encode()).digest()) for i in range(n)]
