"""Genesis app_state parsing and validation (abci_app/dlbc/genesis.py, params.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abci_app.dlbc.genesis import default_app_state, parse_app_state, validate_app_state
from abci_app.dlbc.params import Params

from .helpers import Key, Node


def test_parse_app_state_empty_means_defaults() -> None:
    for raw in (b"", b"  ", b"{}", b"null"):
        g = parse_app_state(raw)
        assert g.params == Params() and g.balances == ()


def test_default_app_state_round_trips() -> None:
    obj = default_app_state()
    assert validate_app_state(json.loads(json.dumps(obj))).params == Params()


def test_validate_app_state_accepts_strings_for_integers() -> None:
    a = "ab" * 20
    g = validate_app_state({"params": {"block_reward": "5"},
                            "accounts": [{"address": a, "balance": "18446744073709551615"}]})
    assert g.params.block_reward == 5 and g.balances == ((bytes.fromhex(a), 2**64 - 1),)


@pytest.mark.parametrize("obj,needle", [
    ([], "JSON object"),
    ({"params": {"nope": 1}}, "unknown params: nope"),
    ({"params": {"max_queue_len": 1}}, "max_queue_len"),
    ({"params": {"k_ppm": 0}}, "k_ppm"),
    ({"params": {"tolerance_ppm": 2_000_000}}, "tolerance_ppm"),
    ({"params": {"train_seconds": -5}}, "train_seconds"),
    ({"params": {"train_seconds": True}}, "boolean"),
    ({"accounts": [{"address": "zz", "balance": 1}]}, "accounts[0].address"),
    ({"accounts": [{"address": "ab" * 20, "balance": 1},
                   {"address": "ab" * 20, "balance": 2}]}, "duplicate address"),
    ({"accounts": [{"address": "ab" * 20, "balance": 2**64}]}, "out of range"),
    ({"extra": 1}, "unknown app_state keys"),
])
def test_invalid_app_state(obj: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        validate_app_state(obj)


def test_invalid_app_state_not_json() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_app_state(b"{oops")


def test_init_chain_with_empty_app_state_uses_defaults(tmp_path: Path) -> None:
    node = Node(tmp_path, [(Key("v"), 10)], b"")
    try:
        assert node.query("params") == Params().to_json()
        node.finalize([])
        assert node.query("supply") == {"supply": 0, "escrow": 0, "fee_pool": 0,
                                        "pending_tasks": 0}
    finally:
        node.close()
