"""The verdict file interface and the vote-extension handlers (verdicts.py, app.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from abci_app.dlbc.verdicts import Verdict, read_verdicts, verdict_path, write_verdicts
from abci_app.pb.dlbc.v1 import vote_pb2
from abci_app.pb.tendermint.abci import types_pb2 as abci

from .helpers import Node, app_state, verdict_set
from .rounds_fixture import BALANCES, HONEST, POWER, VALS, digest, submit_and_start

V1 = Verdict(b"\x01" * 20, b"\x02" * 32, True, 912_345)


def test_write_verdicts_round_trip_and_atomic_file(tmp_path: Path) -> None:
    path = write_verdicts(tmp_path, 7, [V1, V1.to_json()])
    assert path == tmp_path / "verdicts" / "round-7.json"
    assert oct(os.stat(path).st_mode)[-3:] in ("644", "600", "664")
    assert read_verdicts(tmp_path, 7) == [V1, V1]
    assert [p.name for p in path.parent.iterdir()] == ["round-7.json"]  # no temp left behind
    assert read_verdicts(tmp_path, 8) is None


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"round": 7}',
                                     b'{"round": 6, "verdicts": []}',
                                     b'{"round": 7, "verdicts": [{"miner": "zz"}]}'])
def test_read_verdicts_garbage_is_none(tmp_path: Path, content: bytes) -> None:
    p = verdict_path(tmp_path, 7)
    p.parent.mkdir(parents=True)
    p.write_bytes(content)
    assert read_verdicts(tmp_path, 7) is None


def test_invalid_write_verdicts_bad_entries(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_verdicts(tmp_path, 1, [{"miner": "00" * 20, "model_digest": "00" * 32,
                                      "watermark_ok": True, "score_ppm": 2_000_000}])
    with pytest.raises(ValueError):
        write_verdicts(tmp_path, 1, [{"miner": "00" * 19, "model_digest": "00" * 32,
                                      "watermark_ok": True, "score_ppm": 1}])
    assert read_verdicts(tmp_path, 1) is None


@pytest.fixture
def node(tmp_path: Path) -> Node:
    n = Node(tmp_path, [(k, POWER) for k in VALS], app_state(BALANCES))
    yield n
    n.close()


def extend(node: Node) -> bytes:
    return bytes(node.app.extend_vote(abci.RequestExtendVote(height=node.height + 1))
                 .vote_extension)


def test_extend_vote_reads_this_validators_verdicts(node: Node) -> None:
    assert extend(node) == b""  # no round yet
    rd = submit_and_start(node)
    assert extend(node) == b""  # no verdict file yet
    v = Verdict(HONEST.address, digest("h"), True, 900_000)
    write_verdicts(node.home, rd.round_no, [v])
    ext = vote_pb2.VerdictSet.FromString(extend(node))
    assert ext.round == rd.round_no and ext.verdicts[0].score_ppm == 900_000
    assert ext.verdicts[0].miner == HONEST.address


def test_extend_vote_garbage_file_gives_empty_extension(node: Node) -> None:
    rd = submit_and_start(node)
    p = verdict_path(node.home, rd.round_no)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"\x00garbage")
    assert extend(node) == b""


def test_verify_vote_extension_checks_shape(node: Node) -> None:
    def status(ext: bytes) -> int:
        return node.app.verify_vote_extension(
            abci.RequestVerifyVoteExtension(vote_extension=ext, height=1)).status

    ok, bad = abci.ResponseVerifyVoteExtension.ACCEPT, abci.ResponseVerifyVoteExtension.REJECT
    assert status(b"") == ok
    assert status(verdict_set(1, [(b"\x01" * 20, b"\x02" * 32, True, 5)])) == ok
    assert status(b"\xff\xff\xff") == bad
    assert status(verdict_set(1, [(b"\x01" * 19, b"\x02" * 32, True, 5)])) == bad
    assert status(verdict_set(1, [(b"\x01" * 20, b"\x02" * 32, True, 1_000_001)])) == bad
