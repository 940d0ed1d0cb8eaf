"""server over real sockets: ordering, Flush/Echo, bad frames, app failures, v1.0 CheckTx."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abci_app.application import Application
from abci_app.codec import FrameDecoder, encode_frame, encode_uvarint
from abci_app.connections import CODE_INTERNAL_ERROR
from abci_app.kvstore import KVStoreApplication
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.server import Address

from .helpers import _Running, roundtrip, running


def test_echo_flush_and_order_pipelined(tmp_path: Path) -> None:
    with running(KVStoreApplication(tmp_path)) as srv, srv.connect() as s:
        reqs = [abci.Request(echo=abci.RequestEcho(message=f"m{i}")) for i in range(50)]
        reqs.insert(25, abci.Request(check_tx=abci.RequestCheckTx(tx=b"a=b")))
        out = roundtrip(s, reqs)
        kinds = [r.WhichOneof("value") for r in out]
        assert kinds == [r.WhichOneof("value") for r in reqs] + ["flush"]
        echoes = [r.echo.message for r in out if r.WhichOneof("value") == "echo"]
        assert echoes == [f"m{i}" for i in range(50)]


def test_v1_shaped_check_tx_type_in_field_3_is_accepted(tmp_path: Path) -> None:
    # Hand-encoded v1.0 CheckTxRequest{tx=1:"k=v", type=3:CHECK(2)} inside Request field 8.
    inner = b"\x0a\x03k=v" + b"\x18\x02"
    raw_request = b"\x42" + encode_uvarint(len(inner)) + inner
    with running(KVStoreApplication(tmp_path)) as srv, srv.connect() as s:
        s.sendall(encode_frame(raw_request) + encode_frame(abci.Request(flush=abci.RequestFlush()).SerializeToString()))
        dec = FrameDecoder()
        frames: list[bytes] = []
        while len(frames) < 2:
            frames += dec.feed(s.recv(4096))
        resp = abci.Response()
        resp.ParseFromString(frames[0])
        assert resp.WhichOneof("value") == "check_tx"
        assert resp.check_tx.code == 0 and resp.check_tx.info == ""
        # RECHECK (1) in field 3 is understood as recheck.
        recheck = abci.Request(check_tx=abci.RequestCheckTx(tx=b"k=v", type_v1=abci.CHECK_TX_TYPE_RECHECK))
        assert roundtrip(s, [recheck])[0].check_tx.info == "recheck"


def test_unix_socket_and_stale_socket_file(tmp_path: Path) -> None:
    sock_path = tmp_path / "app.sock"
    sock_path.write_text("stale")  # left over by a killed predecessor
    with running(KVStoreApplication(tmp_path / "h"), f"unix://{sock_path}") as srv, srv.connect() as s:
        out = roundtrip(s, [abci.Request(info=abci.RequestInfo())])
        assert out[0].info.version == "kvstore-0.1.0"


def _garbage_then_alive(srv: _Running, garbage: bytes) -> None:
    with srv.connect() as bad:
        bad.sendall(garbage)
        bad.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            try:
                chunk = bad.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        # Whatever came back decodes as responses, and none is an `exception`.
        dec = FrameDecoder()
        for frame in dec.feed(data):
            r = abci.Response()
            r.ParseFromString(frame)
            assert r.WhichOneof("value") != "exception"
    with srv.connect() as good:
        assert roundtrip(good, [abci.Request(echo=abci.RequestEcho(message="alive"))])[0].echo.message == "alive"


@pytest.mark.parametrize(
    "garbage",
    [
        encode_uvarint(10**15),  # absurd length prefix
        b"\xff" * 12,  # overlong varint
        encode_frame(b"\xff\xff\xff\xff"),  # garbage protobuf
        encode_frame(b""),  # empty Request: no method
        encode_frame(b"\x3a\x00"),  # field 7 = removed BeginBlock
        encode_frame(b"\x0a\x05ab"),  # truncated inner message
        encode_uvarint(100) + b"short",  # truncated frame, then EOF
    ],
)
def test_invalid_frames_close_only_that_connection(tmp_path: Path, garbage: bytes) -> None:
    with running(KVStoreApplication(tmp_path)) as srv:
        _garbage_then_alive(srv, garbage)
        assert srv.thread.is_alive() and srv.server.fatal_error is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.one_of(
    st.binary(min_size=1, max_size=200),
    st.builds(lambda body: encode_frame(body), st.binary(max_size=100)),
    st.builds(lambda n, body: encode_uvarint(n) + body,
              st.integers(0, 2**63), st.binary(max_size=50)),
))
def test_fuzz_malformed_frames_leave_server_serving(tmp_path: Path, garbage: bytes) -> None:
    with running(Application()) as srv:
        _garbage_then_alive(srv, garbage)
        assert srv.thread.is_alive() and srv.server.fatal_error is None


class _Faulty(Application):
    def check_tx(self, req: abci.RequestCheckTx) -> abci.ResponseCheckTx:
        raise ValueError("boom in check")

    def query(self, req: abci.RequestQuery) -> abci.ResponseQuery:
        raise KeyError("boom in query")

    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        raise RuntimeError("boom in process")

    def extend_vote(self, req: abci.RequestExtendVote) -> abci.ResponseExtendVote:
        return "not a response"  # type: ignore[return-value]

    def finalize_block(self, req: abci.RequestFinalizeBlock) -> abci.ResponseFinalizeBlock:
        raise RuntimeError("boom in finalize")


def test_app_exception_in_check_tx_query_becomes_error_code() -> None:
    with running(_Faulty()) as srv, srv.connect() as s:
        out = roundtrip(s, [
            abci.Request(check_tx=abci.RequestCheckTx(tx=b"x")),
            abci.Request(query=abci.RequestQuery(path="/x")),
            abci.Request(process_proposal=abci.RequestProcessProposal()),
            abci.Request(extend_vote=abci.RequestExtendVote(height=1)),
        ])
        assert out[0].check_tx.code == CODE_INTERNAL_ERROR and "boom in check" in out[0].check_tx.log
        assert out[1].query.code == CODE_INTERNAL_ERROR
        assert out[2].process_proposal.status == abci.ResponseProcessProposal.REJECT
        assert out[3].extend_vote.vote_extension == b""
        assert srv.server.fatal_error is None


def test_app_exception_in_finalize_block_is_fatal() -> None:
    with running(_Faulty()) as srv, srv.connect() as s:
        out = roundtrip(s, [abci.Request(finalize_block=abci.RequestFinalizeBlock(height=1))])
        assert out == []  # no `exception` response: the connection just ends
        srv.thread.join(10)
        assert srv.result["code"] == 1
        assert "finalize_block" in (srv.server.fatal_error or "")


def test_address_parsing() -> None:
    assert Address.parse("tcp://0.0.0.0:26658") == Address("tcp", host="0.0.0.0", port=26658)
    assert Address.parse("unix:///tmp/x.sock") == Address("unix", path="/tmp/x.sock")
    for bad in ("tcp://host", "unix://", "nonsense"):
        with pytest.raises(ValueError):
            Address.parse(bad)


def test_query_and_check_tx_never_see_half_staged_block(tmp_path: Path) -> None:
    """Consensus stages a block on one connection; the query connection still reads committed state."""
    with running(KVStoreApplication(tmp_path)) as srv, srv.connect() as consensus, \
            srv.connect() as query:
        roundtrip(consensus, [abci.Request(init_chain=abci.RequestInitChain())])
        fin = abci.RequestFinalizeBlock(height=1, txs=[b"k=staged"])
        assert roundtrip(consensus, [abci.Request(finalize_block=fin)])[0].finalize_block.app_hash
        q = abci.Request(query=abci.RequestQuery(path="/key", data=b"k"))
        assert roundtrip(query, [q])[0].query.code != 0  # staged, not committed
        info = roundtrip(query, [abci.Request(info=abci.RequestInfo())])[0].info
        assert info.last_block_height == 0
        roundtrip(consensus, [abci.Request(commit=abci.RequestCommit())])
        assert roundtrip(query, [q])[0].query.value == b"staged"


def test_unix_socket_file_removed_on_stop(tmp_path: Path) -> None:
    sock_path = tmp_path / "gone.sock"
    with running(Application(), f"unix://{sock_path}"):
        assert sock_path.exists()
    assert not sock_path.exists()
