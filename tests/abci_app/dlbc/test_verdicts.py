"""The verdict file interface and the vote-extension handlers (verdicts.py, app.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from abci_app.dlbc.verdicts import (
    Verdict,
    VerdictFile,
    read_verdicts,
    verdict_path,
    write_verdicts,
)
from abci_app.pb.dlbc.v1 import vote_pb2
from abci_app.pb.tendermint.abci import types_pb2 as abci

from .helpers import Node, app_state, verdict_set
from .rounds_fixture import (
    BALANCES,
    HONEST,
    OVERCLAIM,
    POWER,
    VALS,
    digest,
    reveal,
    submit_and_start,
    to_verify,
    train_and_commit,
)

V1 = Verdict(b"\x01" * 20, b"\x02" * 32, True, 912_345)


def test_write_verdicts_round_trip_and_atomic_file(tmp_path: Path) -> None:
    path = write_verdicts(tmp_path, 7, [V1, V1.to_json()], complete=False)
    assert path == tmp_path / "verdicts" / "round-7.json"
    assert oct(os.stat(path).st_mode)[-3:] in ("644", "600", "664")
    assert read_verdicts(tmp_path, 7) == VerdictFile((V1, V1), complete=False)
    assert [p.name for p in path.parent.iterdir()] == ["round-7.json"]  # no temp left behind
    assert read_verdicts(tmp_path, 8) is None
    write_verdicts(tmp_path, 7, [], test_set_unusable=True)
    assert read_verdicts(tmp_path, 7) == VerdictFile((), complete=True, test_set_unusable=True)
    # a file of the earlier format (no flags) is a complete set, as that verifier wrote it
    verdict_path(tmp_path, 9).write_text('{"round": 9, "verdicts": []}')
    assert read_verdicts(tmp_path, 9) == VerdictFile((), complete=True)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"round": 7}',
                                     b'{"round": 6, "verdicts": []}',
                                     b'{"round": 7, "verdicts": [{"miner": "zz"}]}',
                                     # nested past any recursion limit; not UTF-8
                                     b'{"round": 7, "verdicts": ' + b"[" * 200_000 + b"}",
                                     b'{"round": 7, "verdicts": [], "x": "\xff"}'])
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
    with pytest.raises(ValueError, match="no scores"):
        write_verdicts(tmp_path, 1, [V1], test_set_unusable=True)
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
    assert extend(node) == b""  # TRAIN: nothing to say yet
    v = Verdict(HONEST.address, digest("h"), True, 900_000)
    write_verdicts(node.home, rd.round_no, [v])
    assert extend(node) == b""  # a verdict on a model not revealed (still TRAIN) is left out
    train_and_commit(rd)
    assert reveal(rd)[:3] == [0, 0, 0]
    to_verify(rd)
    stray = Verdict(b"\x09" * 20, digest("nobody"), True, 1)
    write_verdicts(node.home, rd.round_no, [stray, v, v], complete=False)
    ext = vote_pb2.VerdictSet.FromString(extend(node))
    assert ext.round == rd.round_no and not ext.complete
    assert [(x.miner, x.score_ppm) for x in ext.verdicts] == [(HONEST.address, 900_000)]


def test_extend_vote_garbage_file_gives_empty_extension(node: Node) -> None:
    rd = submit_and_start(node)
    p = verdict_path(node.home, rd.round_no)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"\x00garbage")
    assert extend(node) == b""


def test_verify_vote_extension_accepts_only_canonical_sets_on_revealed_models(node: Node) -> None:
    def status(ext: bytes) -> int:
        return node.app.verify_vote_extension(
            abci.RequestVerifyVoteExtension(vote_extension=ext, height=node.height + 1)).status

    ok, bad = abci.ResponseVerifyVoteExtension.ACCEPT, abci.ResponseVerifyVoteExtension.REJECT
    assert status(b"") == ok
    rd = submit_and_start(node)
    h = (HONEST.address, digest("h"), True, 900_000)
    assert status(verdict_set(rd.round_no, [h])) == bad  # TRAIN: no verdict can be valid yet
    train_and_commit(rd)
    assert reveal(rd)[:3] == [0, 0, 0]
    to_verify(rd)
    o = (OVERCLAIM.address, digest("o"), True, 700_000)
    good = verdict_set(rd.round_no, [h, o])
    assert status(good) == ok
    assert status(verdict_set(rd.round_no, [], test_set_unusable=True)) == ok
    assert status(b"\xff\xff\xff") == bad


def test_invalid_vote_extension_padding_duplicates_and_strays(node: Node) -> None:
    """Class 6: unknown fields, a second encoding, duplicated or unsorted verdicts, verdicts on
    models nobody revealed, the wrong round, scores over 1e6: each REJECTed."""
    def status(ext: bytes) -> int:
        return node.app.verify_vote_extension(
            abci.RequestVerifyVoteExtension(vote_extension=ext, height=node.height + 1)).status

    bad = abci.ResponseVerifyVoteExtension.REJECT
    rd = submit_and_start(node)
    train_and_commit(rd)
    assert reveal(rd)[:3] == [0, 0, 0]
    to_verify(rd)
    n = rd.round_no
    h = (HONEST.address, digest("h"), True, 900_000)
    o = (OVERCLAIM.address, digest("o"), True, 700_000)
    good = verdict_set(n, [h, o])
    unsorted = vote_pb2.VerdictSet(round=n, complete=True, verdicts=[
        vote_pb2.Verdict(miner=m, model_digest=d, watermark_ok=w, score_ppm=sc)
        for m, d, w, sc in sorted([h, o], key=lambda v: v[0] + v[1], reverse=True)]
    ).SerializeToString()
    dup = vote_pb2.VerdictSet(round=n, complete=True, verdicts=[
        vote_pb2.Verdict(miner=h[0], model_digest=h[1], watermark_ok=True, score_ppm=1)] * 2
    ).SerializeToString()
    for ext in (
        good + b"\xfa\x3f\x80\x80\x08" + b"\x00" * 131_072,  # 128 KiB of unknown-field padding
        good + bytes([0x18, 0x00]),                    # complete=false sent again: non-canonical
        unsorted, dup,
        verdict_set(n, [h, (b"\x07" * 20, digest("x"), True, 5)]),  # a model nobody revealed
        verdict_set(n + 1, [h]),
        verdict_set(n, [(h[0], h[1], True, 1_000_001)]),
        verdict_set(n, [h], test_set_unusable=True),    # a complaint carries no scores
    ):
        assert status(ext) == bad, ext[:40]
    assert len(verdict_set(n, [h, o])) < 200  # what an honest validator sends for two reveals
