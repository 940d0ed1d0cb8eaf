"""`dlbc genesis`: building, merging and refusing genesis documents (issue 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abci_app.dlbc.genesis import default_app_state, validate_app_state
from abci_app.keyfile import KeyPair, save_key
from dlbc_ops import genesis as gen
from dlbc_ops.cli import main as cli
from tests.support import REPO

from .testnet_layout import GENESIS_TIME, consensus_params


def _key(tmp_path: Path, name: str, seed: int) -> tuple[Path, KeyPair]:
    key = KeyPair.from_seed(bytes([seed]) * 32)
    return save_key(tmp_path / f"{name}.json", key), key


def _init_genesis(path: Path, version: str = "0.38.17") -> bytes:
    """What `cometbft init` writes: one validator, no app_state, vote extensions off."""
    key = KeyPair.from_seed(b"\x09" * 32)
    doc = {
        "genesis_time": GENESIS_TIME,
        "chain_id": "test-chain-Xy12Ab",
        "initial_height": "0",
        "consensus_params": consensus_params(version),
        "validators": [
            {
                "address": key.address.hex().upper(),
                "pub_key": key.to_json_dict()["pub_key"],
                "power": "10",
                "name": "",
            }
        ],
        "app_hash": "",
    }
    text = json.dumps(doc, indent=2).encode()
    path.write_bytes(text)
    return text


def test_genesis_created_from_key_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    k1, key1 = _key(tmp_path, "v1", 1)
    k2, key2 = _key(tmp_path, "v2", 2)
    out = tmp_path / "genesis.json"
    rc = cli.main(
        [
            "genesis",
            "--validator",
            str(k1),
            "--validator",
            f"{k2}=5",
            "--chain-id",
            "dlbc-9",
            "--account",
            f"{key1.address_hex}=1000",
            "--account",
            f"{k2}=7",
            "--param",
            "train_seconds=60",
            "--cometbft-version",
            "1.0",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["chain_id"] == "dlbc-9"
    assert [v["address"] for v in doc["validators"]] == [
        key1.address.hex().upper(),
        key2.address.hex().upper(),
    ]
    assert [v["power"] for v in doc["validators"]] == ["10", "5"]
    assert doc["consensus_params"]["feature"]["vote_extensions_enable_height"] == "1"
    assert "abci" not in doc["consensus_params"]
    genesis = validate_app_state(doc["app_state"])
    assert dict(genesis.balances) == {key1.address: 1000, key2.address: 7}
    assert genesis.params.train_seconds == 60
    gen.validate_genesis(doc, "1.0")


@pytest.mark.parametrize("version", ["0.38.17", "1.0.1"])
def test_genesis_merged_in_place_keeps_cometbft_fields(
    tmp_path: Path, version: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no cometbft: form from the file
    path = tmp_path / "genesis.json"
    _init_genesis(path, version)
    before = json.loads(path.read_text())
    assert cli.main(["genesis", "--genesis", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["initial_height"] == "1"  # "0" means 1 to CometBFT; written explicitly
    for key in ("genesis_time", "chain_id", "validators", "app_hash"):
        assert doc[key] == before[key]
    assert list(doc)[:6] == list(before)[:6]  # CometBFT's field order kept
    section = "feature" if version.startswith("1.") else "abci"
    assert doc["consensus_params"][section]["vote_extensions_enable_height"] == "1"
    assert doc["consensus_params"]["evidence"] == before["consensus_params"]["evidence"]
    validate_app_state(doc["app_state"])
    # Running it again changes nothing (safe to re-run on every node).
    text = path.read_text()
    assert cli.main(["genesis", "--genesis", str(path)]) == 0
    assert path.read_text() == text


def test_genesis_switches_form_between_versions():
    params = consensus_params("1.0.1")
    gen.enable_vote_extensions(params, "0.38")
    assert params["abci"] == {"vote_extensions_enable_height": "1"} and "feature" not in params
    gen.enable_vote_extensions(params, "1.0")
    assert params["feature"]["vote_extensions_enable_height"] == "1" and "abci" not in params


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--param", "train_second=5"], "unknown parameter; known:"),
        (["--param", "train_seconds=abc"], "expected an integer like the default 300"),
        (["--param", "train_seconds=0"], "train_seconds must be > 0"),
        (["--param", "nonsense"], "expected NAME=VALUE"),
        (["--account", "xyz=5"], "neither a 40-hex-char address nor a key file"),
        (["--account", "ab" * 20 + "=-5"], "non-negative integer"),
        (["--account", "ab" * 20 + "=1", "--account", "AB" * 20 + "=2"], "given twice"),
        (["--chain-id", "c" * 51], "at most 50"),
        (["--chain-id", " "], "chain_id is empty"),
        (["--genesis-time", "yesterday"], "not RFC 3339"),
    ],
)
def test_invalid_genesis_arguments_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
):
    path = tmp_path / "genesis.json"
    original = _init_genesis(path)
    rc = cli.main(["genesis", "--genesis", str(path), "--cometbft-version", "0.38", *extra])
    assert rc == 1
    assert message in capsys.readouterr().err
    assert path.read_bytes() == original


def test_invalid_existing_app_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "genesis.json"
    doc = json.loads(_init_genesis(path))
    doc["app_state"] = {"params": {"k_ppm": "lots"}}
    path.write_text(json.dumps(doc))
    assert cli.main(["genesis", "--genesis", str(path), "--cometbft-version", "0.38"]) == 1
    assert "params.k_ppm" in capsys.readouterr().err


def test_invalid_validator_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    k1, _ = _key(tmp_path, "v1", 1)
    obj = json.loads(k1.read_text())
    obj["address"] = "00" * 20
    k1.write_text(json.dumps(obj))
    rc = cli.main(
        [
            "genesis",
            "--validator",
            str(k1),
            "--cometbft-version",
            "0.38",
            "--out",
            str(tmp_path / "g.json"),
        ]
    )
    assert rc == 1
    assert "does not match its pub_key" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_invalid_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["genesis", "--genesis", str(tmp_path / "nope.json")]) == 1
    assert "cometbft init" in capsys.readouterr().err
    assert cli.main(["genesis", "--cometbft-version", "0.38"]) == 1
    assert "--validator KEYFILE" in capsys.readouterr().err


def test_invalid_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    k1, _ = _key(tmp_path, "v1", 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli.main(
        [
            "genesis",
            "--validator",
            str(k1),
            "--cometbft-version",
            "0.38",
            "--out",
            str(blocker / "genesis.json"),
        ]
    )
    assert rc == 1
    assert "choose a writable --out" in capsys.readouterr().err


def test_validate_genesis_requires_vote_extensions(tmp_path: Path):
    doc = json.loads(_init_genesis(tmp_path / "g.json"))
    doc["app_state"] = {}
    with pytest.raises(gen.GenesisError, match="vote extensions are disabled"):
        gen.validate_genesis(doc, "0.38")
    doc["validators"] = []
    gen.enable_vote_extensions(doc["consensus_params"], "0.38")
    with pytest.raises(gen.GenesisError, match="no validators"):
        gen.validate_genesis(doc, "0.38")


def test_genesis_example_is_valid():
    """cometbft/genesis.example.json stays in step with the builder and the app's validator."""
    path = REPO / "cometbft" / "genesis.example.json"
    doc = json.loads(path.read_text())
    gen.validate_genesis(doc, "0.38")
    assert set(doc["app_state"]["params"]) == set(default_app_state()["params"]), (
        "regenerate it with the command in cometbft/README.md (section Genesis)"
    )
