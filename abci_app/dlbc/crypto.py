"""Signatures and addresses of DLBC (docs/wire.md, docs/transactions.md). Public contract for
other engineers.

This module is the one home of every ed25519 fact in the project: the address rule, the
signature verification rule and the vote-extension sign bytes. `abci_app.keyfile` (key files)
and `dlbc_ops.devnode.driver` (the CometBFT stand-in) re-export these names rather than re-implement
them, so the chain, the sidecars and the driver can never disagree on what a valid signature
or an address is.

- `address_of(pub)`: SHA-256(ed25519 public key)[:20], the account and validator address.
- Tx signatures: ed25519 over `TX_SIGN_DOMAIN || TxBody bytes`. The domain prefix keeps a tx
  signature from ever being valid as a vote-extension or any other signature made with the same
  key; chain id and nonce are inside TxBody (replay protection across chains and within one).
- Verification rule (`verify_ed25519`, consensus-critical): a signature is valid iff S < L,
  the public key A is a canonical encoding, neither A nor R is a point of small order, and the
  cofactorless equation [S]B = R + [H(R||A||M)]A holds, with R compared byte for byte. This is
  libsodium's rule; OpenSSL alone would also accept small-order keys and R, so the encoding
  checks are done here, in Python, before either library runs: every node accepts exactly the
  same signatures whichever backend it has.
- Backend: libsodium (PyNaCl) when installed, else OpenSSL (`cryptography`). One ed25519 verify
  is most of a CheckTx and of a replayed block, and libsodium's costs ~0.55x OpenSSL's on this
  machine (issue 8, bench/abci_throughput.py prints both).
- Vote-extension signatures: ed25519 by the validator's consensus key over the
  uvarint-length-prefixed encoding of `CanonicalVoteExtension{extension, height, round,
  chain_id}`, exactly as CometBFT v0.38 signs them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from abci_app.codec import encode_uvarint
from abci_app.dlbc.records import Address
from abci_app.pb.tendermint.types import canonical_pb2

TX_SIGN_DOMAIN = b"dlbc/v1/tx\x00"
ADDRESS_LEN = 20
PUB_KEY_LEN = 32
SIGNATURE_LEN = 64


class HasPrivateKey(Protocol):
    """Anything holding an ed25519 key (abci_app.keyfile.KeyPair, driver.ValidatorKey)."""

    @property
    def private_key(self) -> Ed25519PrivateKey: ...


Signer = Ed25519PrivateKey | HasPrivateKey


def private_key_of(signer: Signer) -> Ed25519PrivateKey:
    """The ed25519 key behind any `Signer`."""
    return signer if isinstance(signer, Ed25519PrivateKey) else signer.private_key


def address_of(public_key: bytes) -> Address:
    """First 20 bytes of SHA-256(public key) (CometBFT validator address rule, docs/wire.md).

    Raises ValueError unless `public_key` is 32 bytes: an address of anything else names an
    account no ed25519 signature can ever spend from (consensus callers check length first).
    """
    if len(public_key) != PUB_KEY_LEN:
        raise ValueError(f"ed25519 public key must be {PUB_KEY_LEN} bytes, got {len(public_key)}")
    if type(public_key) is bytes:  # hashable: memoised (every tx of an account hashes its key)
        return Address(_address_of_key(public_key))
    return Address(hashlib.sha256(public_key).digest()[:ADDRESS_LEN])


@lru_cache(maxsize=4096)
def _address_of_key(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()[:ADDRESS_LEN]


def public_key_bytes(signer: Signer) -> bytes:
    """The raw 32-byte public key of `signer`."""
    return private_key_of(signer).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_tx_body(signer: Signer, body: bytes) -> bytes:
    return private_key_of(signer).sign(TX_SIGN_DOMAIN + body)


_P = 2**255 - 19  # the field prime
_L = 2**252 + 27742317777372353535851937790883648493  # the prime order of the base point
_Y_MASK = (1 << 255) - 1  # an encoding without its x sign bit: the y coordinate
#: Every encoding (sign bit ignored) of a point of order 1, 2, 4 or 8: y = 1, p-1, 0, the two
#: y of the order-8 points, and the non-canonical p (= 0) and p+1 (= 1). libsodium's
#: `ge25519_has_small_order` list; tests/abci_app/dlbc/test_crypto.py re-derives it on the curve.
SMALL_ORDER_Y: frozenset[int] = frozenset((
    0, 1, _P - 1, _P, _P + 1,
    int.from_bytes(bytes.fromhex(
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"),
    int.from_bytes(bytes.fromhex(
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"),
))


def is_strict_encoding(public_key: bytes, signature: bytes) -> bool:
    """The encoding checks of the verification rule (module docstring), on 32/64-byte input."""
    # Verify S < L (a signature is not malleable into another valid one)
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    # Verify A is canonical (y < p) and neither A nor R has small order
    a_y = int.from_bytes(public_key, "little") & _Y_MASK
    r_y = int.from_bytes(signature[:32], "little") & _Y_MASK
    return a_y < _P and a_y not in SMALL_ORDER_Y and r_y not in SMALL_ORDER_Y


@lru_cache(maxsize=4096)
def _load_public(public_key: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify_openssl(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """OpenSSL's ed25519 equation check alone (no encoding rules): the fallback backend."""
    try:
        _load_public(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


_sodium_open: Callable[[bytes, bytes], bytes] | None
try:
    from nacl.bindings import crypto_sign_open as _nacl_open
    from nacl.exceptions import CryptoError as _SodiumError
except ImportError:  # PyNaCl not installed: OpenSSL does the equation check
    _sodium_open = None
    ED25519_BACKEND = "openssl"
else:
    _sodium_open = _nacl_open
    ED25519_BACKEND = "libsodium"


def verify_sodium(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """libsodium's ed25519 verification (requires PyNaCl)."""
    if _sodium_open is None:
        raise RuntimeError("PyNaCl (libsodium) is not installed")
    try:
        _sodium_open(signature + message, public_key)
    except (_SodiumError, ValueError, TypeError):
        return False
    return True


_verify_equation = verify_sodium if _sodium_open is not None else verify_openssl


def verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff `signature` is valid by the verification rule; never raises on bad input."""
    if len(public_key) != PUB_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    if not is_strict_encoding(public_key, signature):
        return False
    return _verify_equation(public_key, signature, message)


class VerifiedTxCache:
    """Tx signature check, memoised: a tx is verified at CheckTx and ProcessProposal, so
    FinalizeBlock of the same block finds the (deterministic) answer cached.

    Only successes are remembered, keyed by SHA-256(public key || signature || body): 32 bytes
    per entry whatever the tx size. (Keying on the bytes themselves, as an lru_cache does, let
    50,000 self-signed 64 KiB txs pin 3 GiB of memory through CheckTx alone.) Oldest first out.

    Thread-safe (one process may serve several apps on several threads, as the tests do, and
    they share this cache): the verification runs outside the lock; only the bookkeeping of
    the ordered dict is serialised.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._clear_hooks: list[Callable[[], None]] = []

    def __call__(self, public_key: bytes, body: bytes, signature: bytes) -> bool:
        if len(public_key) != PUB_KEY_LEN or len(signature) != SIGNATURE_LEN:
            return False  # also keeps the concatenation below unambiguous
        key = hashlib.sha256(public_key + signature + body).digest()
        ok = self._ok
        with self._lock:
            if key in ok:
                ok.move_to_end(key)
                return True
        if not verify_ed25519(public_key, signature, TX_SIGN_DOMAIN + body):
            return False
        with self._lock:
            ok[key] = None
            if len(ok) > self.maxsize:
                ok.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ok)

    def on_clear(self, hook: Callable[[], None]) -> None:
        """Also run `hook` on `cache_clear()` (caches holding results of verified txs)."""
        self._clear_hooks.append(hook)

    def cache_clear(self) -> None:
        with self._lock:
            self._ok.clear()
        for hook in self._clear_hooks:
            hook()


verify_tx_body = VerifiedTxCache(maxsize=50_000)


def vote_extension_sign_bytes(extension: bytes, height: int, round_: int, chain_id: str) -> bytes:
    """What CometBFT signs for a vote extension (docs/wire.md): the uvarint-length-prefixed
    CanonicalVoteExtension (CometBFT's `VoteExtensionSignBytes`, protoio.MarshalDelimited)."""
    msg: bytes = canonical_pb2.CanonicalVoteExtension(
        extension=extension, height=height, round=round_, chain_id=chain_id
    ).SerializeToString()
    return encode_uvarint(len(msg)) + msg


def sign_vote_extension(signer: Signer, extension: bytes, height: int, round_: int,
                        chain_id: str) -> bytes:
    """A validator's extension signature, as CometBFT's privval makes it."""
    return private_key_of(signer).sign(vote_extension_sign_bytes(extension, height, round_, chain_id))


def verify_vote_extension(public_key: bytes, signature: bytes, extension: bytes, height: int,
                          round_: int, chain_id: str) -> bool:
    """Check an extension signature by the verification rule; never raises on bad input."""
    return verify_ed25519(public_key, signature,
                          vote_extension_sign_bytes(extension, height, round_, chain_id))
