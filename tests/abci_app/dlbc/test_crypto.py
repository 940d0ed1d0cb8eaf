"""ed25519 verification rule of abci_app/dlbc/crypto.py: one accept set whatever the backend.

The small-order list is re-derived here on the curve itself (pure-Python Edwards arithmetic),
so a typo in a constant cannot hide; the backends are compared on forged, malleated, tampered
and honest signatures.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from abci_app.dlbc import crypto, txs
from abci_app.dlbc.codes import Code
from abci_app.pb.dlbc.v1 import tx_pb2

from .helpers import CHAIN_ID, Key, Node, app_state

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1)


def _add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    """Affine addition on -x^2 + y^2 = 1 + d x^2 y^2 (complete for this curve)."""
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P
    return x3, y3


def _mul(k: int, pt: tuple[int, int]) -> tuple[int, int]:
    acc = IDENTITY
    while k:
        if k & 1:
            acc = _add(acc, pt)
        pt = _add(pt, pt)
        k >>= 1
    return acc


def _point_with_y(y: int) -> tuple[int, int] | None:
    u = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(u, (P + 3) // 8, P)
    if x * x % P != u:
        x = x * SQRT_M1 % P
    return (x, y) if x * x % P == u else None


def _order_8_point() -> tuple[int, int]:
    for y in range(2, 1000):
        pt = _point_with_y(y)
        if pt is None:
            continue
        q = _mul(L, pt)  # kills the prime-order part: q lies in the 8-torsion
        if _mul(4, q) != IDENTITY:
            return q
    raise AssertionError("no point of order 8 found")


def _encode(pt: tuple[int, int]) -> bytes:
    x, y = pt
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def test_small_order_list_is_every_torsion_point_encoding() -> None:
    q = _order_8_point()
    torsion = [_mul(i, q) for i in range(8)]
    assert len(set(torsion)) == 8 and _mul(8, q) == IDENTITY
    ys = {y for _x, y in torsion}
    # the canonical y of all 8 small-order points, plus the non-canonical encodings of y=0, 1
    assert crypto.SMALL_ORDER_Y == ys | {P, P + 1}


def test_invalid_small_order_key_forgery_is_rejected() -> None:
    """A = R = identity, S = 0 satisfies the cofactorless equation for EVERY message: OpenSSL
    alone accepts it (anyone could spend from that key's address); the rule does not."""
    identity = _encode(IDENTITY)
    forged = identity + bytes(32)
    assert crypto.verify_openssl(identity, forged, b"any message")  # why the rule exists
    assert not crypto.verify_ed25519(identity, forged, b"any message")
    for pt in (_mul(i, _order_8_point()) for i in range(8)):
        assert not crypto.is_strict_encoding(_encode(pt), forged)  # small-order A
        honest_key = bytes(crypto.public_key_bytes(Ed25519PrivateKey.generate()))
        assert not crypto.is_strict_encoding(honest_key, _encode(pt) + bytes(32))  # small R


def test_invalid_malleated_signature_and_noncanonical_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    pub, msg = crypto.public_key_bytes(key), b"dlbc"
    sig = key.sign(msg)
    assert crypto.verify_ed25519(pub, sig, msg)
    s = int.from_bytes(sig[32:], "little")
    malleated = sig[:32] + (s + L).to_bytes(32, "little")  # same point equation, S >= L
    assert not crypto.verify_ed25519(pub, malleated, msg)
    assert not crypto.verify_openssl(pub, malleated, msg)
    noncanonical = (P + 5).to_bytes(32, "little")  # y = 5 written as p + 5
    assert not crypto.is_strict_encoding(noncanonical, sig)


@pytest.mark.skipif(crypto.ED25519_BACKEND != "libsodium", reason="PyNaCl not installed")
def test_backends_agree_under_the_rule() -> None:
    keys = [Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"k%d" % i).digest())
            for i in range(8)]
    q = _order_8_point()
    cases: list[tuple[bytes, bytes, bytes]] = []
    for i, k in enumerate(keys):
        pub, msg = crypto.public_key_bytes(k), b"m%d" % i
        sig = k.sign(msg)
        cases += [(pub, sig, msg), (pub, sig, msg + b"!"), (pub, sig[:63] + b"\x00", msg),
                  (pub, hashlib.sha512(msg).digest(), msg)]
    for i in range(8):
        enc = _encode(_mul(i, q))
        cases += [(enc, enc + bytes(32), b"x"), (enc, _encode(IDENTITY) + bytes(32), b"x")]
    for pub, sig, msg in cases:
        strict = crypto.is_strict_encoding(pub, sig)
        assert (strict and crypto.verify_openssl(pub, sig, msg)) == crypto.verify_sodium(
            pub, sig, msg), (pub.hex(), sig.hex())
    assert sum(crypto.verify_ed25519(*c) for c in cases) == len(keys)  # only the honest ones


def test_invalid_tx_from_small_order_key_is_rejected(tmp_path: Path) -> None:
    """End to end: a SignedTx 'signed' by the identity key is BAD_SIGNATURE in CheckTx and in
    a block, so its address can never spend."""
    identity = _encode(IDENTITY)
    body = tx_pb2.TxBody(chain_id=CHAIN_ID, nonce=0,
                         transfer=txs.transfer(b"\x01" * 20, 1)).SerializeToString()
    raw = tx_pb2.SignedTx(body=body, public_key=identity,
                          signature=identity + bytes(32)).SerializeToString()
    victim = crypto.address_of(identity)
    node = Node(tmp_path, [(Key("v0"), 10)], app_state({victim: 1_000}))
    try:
        assert node.check(raw).code == Code.BAD_SIGNATURE
        assert [r.code for r in node.finalize([raw]).tx_results] == [Code.BAD_SIGNATURE]
    finally:
        node.close()


def test_verified_tx_cache_is_bounded_and_remembers_only_successes() -> None:
    cache = crypto.VerifiedTxCache(maxsize=3)
    key = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    pub = crypto.public_key_bytes(key)
    bodies = [b"body-%d" % i + b"\x00" * 60_000 for i in range(5)]  # big txs, small entries
    sigs = [crypto.sign_tx_body(key, b) for b in bodies]
    assert all(cache(pub, b, s) for b, s in zip(bodies, sigs, strict=True))
    assert len(cache) == 3  # oldest evicted; each entry is a 32-byte digest, not the tx
    assert not cache(pub, bodies[0], sigs[1])  # wrong signature: rejected, not remembered
    assert not cache(pub, bodies[0] + b"!", sigs[0])
    assert not cache(pub[:31], bodies[0], sigs[0]) and len(cache) == 3
    assert cache(pub, bodies[4], sigs[4]) and len(cache) == 3  # a hit
    cache.cache_clear()
    assert len(cache) == 0
