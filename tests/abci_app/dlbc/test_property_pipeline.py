"""Whatever ProcessProposal accepts, FinalizeBlock executes; CheckTx and the block agree.

Property tests over arbitrary tx bytes and arbitrary user data in every field (deep, wide and
odd-unicode JSON in hyperparams, odd URIs and names), pushed through CheckTx ->
PrepareProposal -> ProcessProposal -> FinalizeBlock on a real app. The app must never raise,
never REJECT a proposal it built itself, and give a kept tx the same code in CheckTx and in its
block. Validity must not depend on the stack: the same pipeline runs again from deep inside a
recursion, where a `json.loads` that recursed on user depth used to fail one frame deeper.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abci_app.dlbc import txs
from abci_app.dlbc.codes import Code
from abci_app.dlbc.wire import MAX_JSON_DEPTH, WireError, check_json_shape, parse_json_object
from abci_app.pb.tendermint.abci import types_pb2 as abci

from .helpers import Key, Node, app_state, spec_for

T = TypeVar("T")
ACCEPT = abci.ResponseProcessProposal.ACCEPT
PUB = Key("property-publisher")
VAL = Key("property-validator")

ODD_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=64)


def deep_json(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return '{"x":' + "[" * depth + "0" + "]" * depth + "}"


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                      st.floats(allow_nan=False), ODD_TEXT)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(ODD_TEXT, inner, max_size=6)), max_leaves=40)

hyperparams = st.one_of(
    json_value.map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.builds(deep_json, st.integers(1, 5000), st.sampled_from(["list", "object", "mixed"])),
    st.sampled_from(["NaN", '{"a": NaN}', '{"a": Infinity}', '{"a": 1' + "0" * 5000 + "}",
                     '{"a": "\\ud800"}', "{", "", "[]", '{"a":1,"a":2}', "\u2028{}"]),
    ODD_TEXT,
)
uris = st.one_of(ODD_TEXT, st.sampled_from([
    "file:///data/x.bin", "http://127.0.0.1/x", "https://example.org/" + "a" * 2000,
    "ftp://x", "http://[::1]/", "file:///\u00e9", "http://a b"]))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    n = Node(tmp_path_factory.mktemp("prop"), [(VAL, 10)],
             app_state({PUB.address: 10**12}))
    yield n
    n.close()


NODE_NONCE = [0]  # the publisher's next nonce as the chain says (read after every block)


def run_pipeline(node: Node, tx: bytes) -> None:
    """One tx through the four calls; asserts the pipeline's promises."""
    try:
        _run_pipeline(node, tx)
    finally:
        NODE_NONCE[0] = int(node.query(f"accounts/{PUB.address.hex()}")["nonce"])


def _run_pipeline(node: Node, tx: bytes) -> None:
    check = node.check(tx)
    kept = node.prepare([tx], node.time_ns + 1_000_000_000)
    assert kept in ([], [tx]), "PrepareProposal may only keep or drop the tx"
    assert (check.code == 0) == (kept == [tx]), (check.code, check.log)
    assert node.process(kept, node.time_ns + 1_000_000_000) == ACCEPT
    result = node.finalize(kept, node.time_ns + 1_000_000_000)
    assert len(result.tx_results) == len(kept)
    if kept:
        assert result.tx_results[0].code == check.code == 0, result.tx_results[0].log


def at_depth(depth: int, fn: Callable[[], T]) -> T:
    """Call `fn` with `depth` extra Python frames on the stack."""
    if depth <= 0:
        return fn()
    return at_depth(depth - 1, fn)


def submit(hp: str, data_uri: str, test_uri: str, arch: str) -> bytes:
    spec = spec_for("p", train_key=b"k" * 32, test_key=b"t" * 32)
    spec.hyperparams_json = hp
    spec.data_uri = data_uri
    spec.test_uri = test_uri
    spec.architecture = arch
    return PUB.tx(txs.submit_task(spec, 10_000), nonce=NODE_NONCE[0])


PIPELINE = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@PIPELINE
@given(raw=st.binary(max_size=512))
def test_arbitrary_bytes_never_break_the_pipeline(node: Node, raw: bytes) -> None:
    run_pipeline(node, raw)


@PIPELINE
@given(hp=hyperparams, data_uri=uris, test_uri=uris,
       arch=st.one_of(st.sampled_from(["cnn", "unet2d"]), ODD_TEXT))
def test_arbitrary_user_data_in_every_field_never_breaks_the_pipeline(
        node: Node, hp: str, data_uri: str, test_uri: str, arch: str) -> None:
    run_pipeline(node, submit(hp, data_uri, test_uri, arch))


@PIPELINE
@given(hp=hyperparams)
def test_validity_of_user_json_does_not_depend_on_the_stack(node: Node, hp: str) -> None:
    """The same verdict on a hyperparams value from a shallow and from a nearly full stack."""
    deep = sys.getrecursionlimit() - 150

    def verdict() -> str:
        try:
            parse_json_object(hp)
        except WireError as exc:
            return str(exc)
        return "ok"

    assert at_depth(deep, verdict) == verdict()


@pytest.mark.parametrize("kind", ["list", "object", "mixed"])
def test_invalid_deeply_nested_hyperparams_are_refused_everywhere(node: Node, kind: str) -> None:
    """The chain-halt class: accepted by CheckTx and PrepareProposal, raising one frame deeper
    in FinalizeBlock. Now refused up front, the same at any stack depth."""
    tx = submit(deep_json(300, kind), "file:///d", "file:///t", "cnn")
    check = at_depth(sys.getrecursionlimit() - 150, lambda: node.check(tx))
    assert check.code == Code.BAD_TASK_SPEC and "nested deeper" in check.log
    run_pipeline(node, tx)
    # Just inside the bound is accepted.
    ok = submit(deep_json(MAX_JSON_DEPTH - 1, "object"), "file:///d", "file:///t", "cnn")
    before = NODE_NONCE[0]
    run_pipeline(node, ok)
    assert NODE_NONCE[0] == before + 1  # executed in its block


def test_invalid_json_that_parses_differently_by_environment_is_refused() -> None:
    """Huge integers (their parsing is capped by PYTHONINTMAXSTRDIGITS), NaN and Infinity."""
    for text in ('{"a": 1' + "0" * 30 + "}", '{"a": NaN}', '{"a": -Infinity}'):
        with pytest.raises(WireError):
            parse_json_object(text)
    assert parse_json_object('{"lr": 0.001, "w": [1, 2]}') == {"lr": "0.001", "w": [1, 2]}
    with pytest.raises(WireError, match="more than"):
        check_json_shape("[" + ",".join(["1"] * 2000) + "]")


def test_tampered_or_padded_protobuf_is_refused(node: Node, tmp_path: Path) -> None:
    """Unknown fields and non-canonical encodings say something the fields do not."""
    good = PUB.tx(txs.transfer(VAL.address, 1), nonce=NODE_NONCE[0])
    padded = good + b"\xfa\x3f\x03abc"  # an unknown field 1023 on the SignedTx
    assert node.check(padded).code == Code.MALFORMED_TX
    run_pipeline(node, padded)
