"""Localnet config generation on a generated `cometbft testnet` layout (issue 7)."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from abci_app.dlbc.genesis import validate_app_state
from dlbc_ops.localnet import layout, nodeconfig
from dlbc_ops.localnet import plan as lp

from .testnet_layout import GENESIS_TIME, write_testnet

VERSIONS = ["0.38.17", "1.0.1"]


def _form(version: str) -> str:
    return "1.0" if version.startswith("1.") else "0.38"


def _config(root: Path, i: int) -> dict:
    return tomllib.loads((root / f"node{i}" / "config" / "config.toml").read_text())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("validators", [1, 4])
def test_prepare_localnet_ports_peers_and_genesis(tmp_path: Path, version: str, validators: int):
    facts = write_testnet(tmp_path, validators, version)
    addr = "ab" * 20
    plan = lp.prepare_localnet(
        tmp_path,
        validators,
        _form(version),
        base_port=30000,
        chain_id="dlbc-test",
        accounts=[(addr, 5000)],
        params=[("train_seconds", 30)],
    )

    # Ports: every role of every node distinct, all on loopback, matching the plan.
    all_ports = [p for i in range(validators) for _, p in plan.node_ports(i).labelled()]
    assert len(all_ports) == len(set(all_ports)) == 5 * validators
    assert plan.node_ids == facts["node_ids"]
    for i in range(validators):
        cfg = _config(tmp_path, i)
        ports = plan.node_ports(i)
        assert cfg["proxy_app"] == f"tcp://127.0.0.1:{ports.abci}"
        assert cfg["rpc"]["laddr"] == f"tcp://127.0.0.1:{ports.rpc}"
        assert cfg["p2p"]["laddr"] == f"tcp://127.0.0.1:{ports.p2p}"
        assert cfg["instrumentation"]["prometheus_listen_addr"] == f"127.0.0.1:{ports.prometheus}"
        assert cfg["p2p"]["addr_book_strict"] is False
        assert cfg["p2p"]["allow_duplicate_ip"] is True
        assert cfg["consensus"]["create_empty_blocks"] is True
        assert cfg["consensus"]["timeout_commit"] == "1s"
        assert cfg["mempool"]["max_tx_bytes"] == 65_536  # the app's params.max_tx_bytes
        # Peers: every other node, by the ID derived from its node_key.json, on its p2p port.
        expected = {
            f"{facts['node_ids'][j]}@127.0.0.1:{plan.node_ports(j).p2p}"
            for j in range(validators)
            if j != i
        }
        peers = cfg["p2p"]["persistent_peers"]
        assert set(filter(None, peers.split(","))) == expected
    assert plan.node_ports(0).p2p == 30000 and plan.node_ports(0).rpc == 30001

    # Genesis: byte-identical everywhere, DLBC app_state valid, vote extensions in this form only.
    blobs = {
        (tmp_path / f"node{i}" / "config" / "genesis.json").read_bytes() for i in range(validators)
    }
    assert len(blobs) == 1
    blob = blobs.pop()
    assert hashlib.sha256(blob).hexdigest() == plan.genesis_sha256
    doc = json.loads(blob)
    assert doc["chain_id"] == "dlbc-test"
    assert doc["genesis_time"] == GENESIS_TIME  # testnet's shared time is kept
    assert [v["address"] for v in doc["validators"]] == facts["validator_addresses"]
    params = doc["consensus_params"]
    if _form(version) == "1.0":
        assert params["feature"]["vote_extensions_enable_height"] == "1"
        assert params["feature"]["pbts_enable_height"] == "0"
        assert "abci" not in params
    else:
        assert params["abci"] == {"vote_extensions_enable_height": "1"}
        assert "feature" not in params
    genesis = validate_app_state(doc["app_state"])
    assert genesis.params.train_seconds == 30
    assert genesis.balances == ((bytes.fromhex(addr), 5000),)

    # Manifest written for resume, app homes exist.
    saved = lp.load_plan(tmp_path)
    assert saved is not None and saved.node_ids == plan.node_ids and saved.form == _form(version)
    assert all(layout.app_home(tmp_path, i).is_dir() for i in range(validators))


@pytest.mark.parametrize("version", VERSIONS)
def test_config_patch_keeps_comments_and_other_keys(tmp_path: Path, version: str):
    write_testnet(tmp_path, 2, version)
    before = (tmp_path / "node0" / "config" / "config.toml").read_text()
    lp.prepare_localnet(tmp_path, 2, _form(version), chain_id="c")
    after = (tmp_path / "node0" / "config" / "config.toml").read_text()
    comments_before = [ln for ln in before.splitlines() if ln.lstrip().startswith("#")]
    comments_after = [ln for ln in after.splitlines() if ln.lstrip().startswith("#")]
    assert comments_before == comments_after
    old, new = tomllib.loads(before), tomllib.loads(after)
    assert new["mempool"]["cache_size"] == old["mempool"]["cache_size"]
    assert new["rpc"]["cors_allowed_methods"] == old["rpc"]["cors_allowed_methods"]
    assert new["version"] == old["version"]
    if version.startswith("1."):
        # v1.0 has no prevote/precommit timeouts: we never add keys that version lacks.
        assert "timeout_prevote" not in new["consensus"]
        assert new["consensus"]["timeout_vote"] == "1s"
        assert new["grpc"]["laddr"] == ""


def test_repatch_moves_ports_but_never_touches_genesis(tmp_path: Path):
    write_testnet(tmp_path, 3)
    plan = lp.prepare_localnet(tmp_path, 3, "0.38")
    genesis = (tmp_path / "node1" / "config" / "genesis.json").read_bytes()
    moved = lp.repatch_ports(tmp_path, plan, 40000, nodeconfig.ConsensusSettings())
    assert (tmp_path / "node1" / "config" / "genesis.json").read_bytes() == genesis
    assert _config(tmp_path, 2)["rpc"]["laddr"] == "tcp://127.0.0.1:40021"
    assert moved.node_ports(2).rpc == 40021
    assert f"@127.0.0.1:{40000}" in _config(tmp_path, 1)["p2p"]["persistent_peers"]
    # Idempotent: patching again with the same ports changes no byte.
    text = (tmp_path / "node2" / "config" / "config.toml").read_text()
    lp.repatch_ports(tmp_path, moved, 40000, nodeconfig.ConsensusSettings())
    assert (tmp_path / "node2" / "config" / "config.toml").read_text() == text


def test_node_id_matches_cometbft_rule():
    from testnet_layout import _keypair, _priv_json

    seed, pub = _keypair(b"\x07" * 32)
    assert nodeconfig.node_id_from_key({"priv_key": _priv_json(seed, pub)}) == (
        hashlib.sha256(pub).digest()[:20].hex()
    )


def test_invalid_node_key_length():
    with pytest.raises(layout.LocalnetError, match="64 bytes"):
        nodeconfig.node_id_from_key({"priv_key": {"value": "AAAA"}})


@pytest.mark.parametrize(
    ("validators", "base", "match"),
    [
        (0, 26656, "between 1 and"),
        (65, 26656, "between 1 and"),
        (2, 80, "base port"),
        (4, 65530, "base port"),
    ],
)
def test_invalid_port_plans(validators: int, base: int, match: str):
    with pytest.raises(layout.LocalnetError, match=match):
        layout.plan_ports(validators, base)


def test_default_ports_keep_cometbft_defaults_for_node0():
    p = layout.node_ports(0)
    assert (p.p2p, p.rpc, p.abci, p.prometheus) == (26656, 26657, 26658, 26660)


def test_invalid_layout_missing_files(tmp_path: Path):
    write_testnet(tmp_path, 2)
    (tmp_path / "node1" / "config" / "node_key.json").unlink()
    with pytest.raises(layout.LocalnetError, match="node_key.json"):
        lp.prepare_localnet(tmp_path, 2, "0.38")
    # Nothing was patched: node0's genesis still has vote extensions off.
    doc = json.loads((tmp_path / "node0" / "config" / "genesis.json").read_text())
    assert doc["consensus_params"]["abci"]["vote_extensions_enable_height"] == "0"


def test_invalid_layout_more_nodes_than_asked(tmp_path: Path):
    write_testnet(tmp_path, 3)
    with pytest.raises(layout.LocalnetError, match="more than 2 nodes"):
        lp.prepare_localnet(tmp_path, 2, "0.38")


def test_invalid_nodes_disagree_on_validators(tmp_path: Path):
    write_testnet(tmp_path, 2)
    path = tmp_path / "node1" / "config" / "genesis.json"
    doc = json.loads(path.read_text())
    doc["validators"] = doc["validators"][:1]
    path.write_text(json.dumps(doc))
    with pytest.raises(layout.LocalnetError, match="other validators"):
        lp.prepare_localnet(tmp_path, 2, "0.38")


def test_invalid_genesis_param_leaves_folder_untouched(tmp_path: Path):
    write_testnet(tmp_path, 2)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(layout.LocalnetError, match="invalid genesis"):
        lp.prepare_localnet(tmp_path, 2, "0.38", params=[("train_seconds", 0)])
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after
