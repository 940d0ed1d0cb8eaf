"""Genesis app_state parsing and validation (abci_app/dlbc/genesis.py, params.py)."""

from __future__ import annotations

import json
from dataclasses import fields
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
    """A new chain's genesis names every param, pipelines its rounds (issue 14) and checks
    training trajectories (issue 15)."""
    obj = default_app_state()
    assert set(obj["params"]) == {f.name for f in fields(Params)}
    assert validate_app_state(json.loads(json.dumps(obj))).params == Params(
        rounds_in_flight=2, proof_of_learning=4)


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
    ({"params": {"watermark_matrix": "dense"}}, "watermark_matrix must be one of direct"),
    ({"params": {"watermark_matrix": 1}}, "watermark_matrix must be a string"),
    ({"params": {"watermark_bits": 0}}, "watermark_bits must be in"),
    ({"params": {"watermark_bits": 4097}}, "watermark_bits must be in"),
    ({"params": {"watermark_bits": "many"}}, "watermark_bits"),
    ({"params": {"watermark_gain": 0}}, "watermark_gain must be in"),
    ({"params": {"watermark_gain": 1_000_001}}, "watermark_gain must be in"),
    ({"params": {"watermark_gain": 2.5}}, "watermark_gain"),
    ({"params": {"watermark_threshold_ppm": 499_999}}, "watermark_threshold_ppm must be in"),
    ({"params": {"watermark_threshold_ppm": 1_000_000}}, "watermark_threshold_ppm must be in"),
])
def test_invalid_app_state(obj: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        validate_app_state(obj)


WATERMARK = {"watermark_bits": 128, "watermark_matrix": "diff", "watermark_gain": 250,
             "watermark_threshold_ppm": 990_000}


def test_watermark_params_defaults_and_round_trip() -> None:
    """The scheme is chain params (docs/watermark.md), today's watermark behaviour the defaults."""
    p = Params()
    assert (p.watermark_bits, p.watermark_matrix, p.watermark_gain,
            p.watermark_threshold_ppm) == (256, "diff", 1000, 999_900)
    raw = json.dumps({"params": {**WATERMARK, "watermark_bits": "128"}}).encode()
    g = parse_app_state(raw)
    assert {k: getattr(g.params, k) for k in WATERMARK} == WATERMARK
    assert Params.from_json(json.loads(json.dumps(g.params.to_json()))) == g.params
    for edge in ({"watermark_bits": 1}, {"watermark_bits": 4096}, {"watermark_gain": 1},
                 {"watermark_gain": 1_000_000}, {"watermark_threshold_ppm": 500_000},
                 {"watermark_threshold_ppm": 999_999}, {"watermark_matrix": "random"}):
        assert validate_app_state({"params": edge}).params == Params(**edge)


def test_watermark_params_reach_the_params_query(tmp_path: Path) -> None:
    node = Node(tmp_path, [(Key("v"), 10)], json.dumps({"params": WATERMARK}).encode())
    try:
        answer = node.query("params")
        assert {k: answer[k] for k in WATERMARK} == WATERMARK
        assert answer == Params(**WATERMARK).to_json()
    finally:
        node.close()


def test_invalid_app_state_not_json() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_app_state(b"{oops")


def test_invalid_app_state_nested_too_deep_is_refused_before_parsing() -> None:
    """The same verdict on every Python, whatever its recursion limit."""
    deep = b'{"params": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(ValueError, match="nested deeper"):
        parse_app_state(deep)


def test_invalid_app_state_huge_integer_is_refused_before_parsing() -> None:
    text = b'{"accounts": [{"address": "' + b"ab" * 20 + b'", "balance": ' + b"9" * 5000 + b"}]}"
    with pytest.raises(ValueError, match="longer than 20 digits"):
        parse_app_state(text)
    with pytest.raises(ValueError, match="non-negative integer"):
        parse_app_state(text.replace(b"9" * 5000, b'"' + b"9" * 5000 + b'"'))


def test_init_chain_with_empty_app_state_uses_defaults(tmp_path: Path) -> None:
    node = Node(tmp_path, [(Key("v"), 10)], b"")
    try:
        assert node.query("params") == Params().to_json()
        node.finalize([])
        assert node.query("supply") == {"supply": 0, "escrow": 0, "fee_pool": 0, "bonded": 0,
                                        "unbonding": 0, "deposits": 0,
                                        "pending_tasks": 0}
    finally:
        node.close()
