"""abci_app.keyfile: the team key-file format, atomic 0600 writes, clear errors, `dlbc keys`."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from abci_app.dlbc import crypto
from abci_app.keyfile import (
    KeyFileError,
    KeyPair,
    address_from_pubkey,
    load_key,
    parse_key_json,
    save_key,
    verify_signature,
)


def test_save_key_round_trip_and_mode(tmp_path: Path) -> None:
    key = KeyPair.from_seed(bytes(range(32)))
    path = save_key(tmp_path / "k" / "a.json", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_key(path)
    assert loaded.public_key == key.public_key
    assert loaded.address == hashlib.sha256(key.public_key).digest()[:20]
    sig = loaded.sign(b"msg")
    assert verify_signature(key.public_key, sig, b"msg")
    assert not verify_signature(key.public_key, sig, b"other")
    # no temp files left behind
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_key_file_is_cometbft_format(tmp_path: Path) -> None:
    key = KeyPair.from_seed(b"\x07" * 32)
    obj = json.loads(save_key(tmp_path / "a.json", key).read_text())
    assert obj["address"] == key.address.hex().upper()
    assert obj["pub_key"]["type"] == "tendermint/PubKeyEd25519"
    assert base64.b64decode(obj["pub_key"]["value"]) == key.public_key
    priv = base64.b64decode(obj["priv_key"]["value"])
    assert obj["priv_key"]["type"] == "tendermint/PrivKeyEd25519"
    assert priv == b"\x07" * 32 + key.public_key


def test_parse_real_cometbft_priv_validator_key() -> None:
    # Shape written by `cometbft init` (address upper hex, 64-byte priv).
    key = KeyPair.from_seed(b"\x01" * 32)
    obj = {
        "address": key.address.hex().upper(),
        "pub_key": {"type": "tendermint/PubKeyEd25519",
                    "value": base64.b64encode(key.public_key).decode()},
        "priv_key": {"type": "tendermint/PrivKeyEd25519",
                     "value": base64.b64encode(b"\x01" * 32 + key.public_key).decode()},
    }
    assert parse_key_json(obj).address == key.address


def test_repr_hides_private_key() -> None:
    key = KeyPair.from_seed(b"\x05" * 32)
    assert base64.b64encode(key.seed()).decode() not in repr(key)
    assert key.seed().hex() not in repr(key)


def test_invalid_overwrite_refused(tmp_path: Path) -> None:
    p = save_key(tmp_path / "a.json", KeyPair.generate())
    before = p.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        save_key(p, KeyPair.generate())
    assert p.read_bytes() == before


def _good(tmp_path: Path) -> dict:
    return json.loads(save_key(tmp_path / "g.json", KeyPair.from_seed(b"\x02" * 32)).read_text())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda o: o.__setitem__("address", "00" * 20), "address"),
        (lambda o: o["pub_key"].__setitem__("value", base64.b64encode(b"x" * 31).decode()),
         "pub_key must be 32"),
        (lambda o: o["pub_key"].__setitem__("value", base64.b64encode(b"x" * 32).decode()),
         "does not match"),
        (lambda o: o["priv_key"].__setitem__("value", base64.b64encode(b"x" * 40).decode()),
         "priv_key must be 64"),
        (lambda o: o["priv_key"].__setitem__("value", "!!notb64"), "base64"),
        (lambda o: o["priv_key"].__setitem__("type", "tendermint/PrivKeySecp256k1"), "type"),
        (lambda o: o.pop("priv_key"), "priv_key"),
    ],
)
def test_invalid_key_json(tmp_path: Path, mutate, match: str) -> None:
    obj = _good(tmp_path)
    mutate(obj)
    with pytest.raises(KeyFileError, match=match):
        parse_key_json(obj, tmp_path / "g.json")


def test_invalid_not_json_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(KeyFileError, match="not valid JSON"):
        load_key(bad)
    with pytest.raises(KeyFileError, match="not found"):
        load_key(tmp_path / "missing.json")


def test_loose_permissions_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = save_key(tmp_path / "a.json", KeyPair.generate())
    p.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="abci_app.keyfile"):
        load_key(p)
    assert "chmod 600" in caplog.text
    assert "priv" not in caplog.text.lower().replace("private", "")


def test_address_from_pubkey_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        address_from_pubkey(b"\x00" * 31)
    with pytest.raises(ValueError):
        address_from_pubkey(b"\x00" * 33)


def test_invalid_small_order_forgery_rejected_like_the_chain() -> None:
    """verify_signature is the chain's strict rule, not OpenSSL's: the identity point as key
    and as R with S = 0 'signs' every message for OpenSSL alone, never here or on the chain."""
    identity = (1).to_bytes(32, "little")  # y = 1, x = 0
    forged = identity + bytes(32)
    assert crypto.verify_openssl(identity, forged, b"pay me")  # the laxer rule would accept
    assert not verify_signature(identity, forged, b"pay me")
    assert not crypto.verify_ed25519(identity, forged, b"pay me")
    key = KeyPair.from_seed(b"\x05" * 32)
    sig = key.sign(b"m")
    assert verify_signature(key.public_key, sig, b"m")
    # S + L is the same equation for OpenSSL's math but a malleated encoding: rejected.
    s_plus_l = (int.from_bytes(sig[32:], "little") + crypto._L).to_bytes(32, "little")
    assert not verify_signature(key.public_key, sig[:32] + s_plus_l, b"m")
    assert not verify_signature(key.public_key[:31], sig, b"m")  # bad length: False, no raise
    assert key.address == crypto.address_of(key.public_key)


def test_cli_keys_new_show(tmp_path: Path) -> None:
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "dlbc_ops.cli.main", "keys", *a, "--home", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    r = run("new", "alice", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    key = load_key(tmp_path / "keys" / "alice.json")
    assert info["address"] == key.address_hex
    r2 = run("show", "alice", "--json")
    assert json.loads(r2.stdout)["address"] == key.address_hex
    # the private key never appears in output
    priv_b64 = json.loads((tmp_path / "keys" / "alice.json").read_text())["priv_key"]["value"]
    assert priv_b64 not in r.stdout + r2.stdout + r.stderr + r2.stderr
    assert key.seed().hex() not in r.stdout + r2.stdout
    r3 = run("new", "alice")
    assert r3.returncode == 1 and "already exists" in r3.stderr
    # a NAME never leaves the keys folder; a spec with "/" is a PATH, as `--key` reads it
    r4 = run("show", ".hidden")
    assert r4.returncode == 1 and "invalid key name" in r4.stderr
    r5 = run("show", "/etc/passwd")
    assert r5.returncode == 1 and "not valid JSON" in r5.stderr
    assert "root:" not in r5.stdout + r5.stderr  # a file that is not a key is never echoed
