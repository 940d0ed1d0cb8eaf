"""Signatures and addresses of DLBC (DESIGN §2-§3). Public contract for other engineers.

- `address_of(pub)`: SHA-256(ed25519 public key)[:20], the account and validator address.
- Tx signatures: ed25519 over `TX_SIGN_DOMAIN || TxBody bytes`. The domain prefix keeps a tx
  signature from ever being valid as a vote-extension or any other signature made with the same
  key; chain id and nonce are inside TxBody (replay protection across chains and within one).
- Vote-extension signatures: ed25519 by the validator's consensus key over the
  uvarint-length-prefixed encoding of `CanonicalVoteExtension{extension, height, round,
  chain_id}`, exactly as CometBFT v0.38 signs them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from abci_app.pb.tendermint.types import canonical_pb2

TX_SIGN_DOMAIN = b"dlbc/v1/tx\x00"
ADDRESS_LEN = 20
PUB_KEY_LEN = 32
SIGNATURE_LEN = 64


class HasPrivateKey(Protocol):  # abci_app.keyfile.KeyPair
    private_key: Ed25519PrivateKey


Signer = Ed25519PrivateKey | HasPrivateKey


def _private(signer: Signer) -> Ed25519PrivateKey:
    return signer if isinstance(signer, Ed25519PrivateKey) else signer.private_key


def address_of(public_key: bytes) -> bytes:
    """First 20 bytes of SHA-256(public key) (CometBFT validator address rule)."""
    return hashlib.sha256(public_key).digest()[:ADDRESS_LEN]


def public_key_bytes(signer: Signer) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return _private(signer).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_tx_body(signer: Signer, body: bytes) -> bytes:
    return _private(signer).sign(TX_SIGN_DOMAIN + body)


@lru_cache(maxsize=4096)
def _load_public(public_key: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff `signature` is a valid ed25519 signature; never raises on bad input."""
    if len(public_key) != PUB_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        _load_public(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@lru_cache(maxsize=50_000)
def verify_tx_body(public_key: bytes, body: bytes, signature: bytes) -> bool:
    """Tx signature check, memoised: a tx is verified at CheckTx and ProcessProposal, so
    FinalizeBlock of the same block finds the (deterministic) answer cached."""
    return verify_ed25519(public_key, signature, TX_SIGN_DOMAIN + body)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vote_extension_sign_bytes(extension: bytes, height: int, round_: int, chain_id: str) -> bytes:
    """What CometBFT signs for a vote extension (DESIGN §2)."""
    msg = canonical_pb2.CanonicalVoteExtension(
        extension=extension, height=height, round=round_, chain_id=chain_id
    ).SerializeToString()
    return _uvarint(len(msg)) + msg


def sign_vote_extension(signer: Signer, extension: bytes, height: int, round_: int,
                        chain_id: str) -> bytes:
    return _private(signer).sign(vote_extension_sign_bytes(extension, height, round_, chain_id))


def verify_vote_extension(public_key: bytes, signature: bytes, extension: bytes, height: int,
                          round_: int, chain_id: str) -> bool:
    return verify_ed25519(public_key, signature,
                          vote_extension_sign_bytes(extension, height, round_, chain_id))
