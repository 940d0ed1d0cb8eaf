"""Translate one decoded ABCI `Request` into a call on the application, and its result (or
failure) into the `Response` — the per-connection handlers of STYLE layer 1, with no I/O.

CometBFT's four connections (consensus, mempool, query, snapshot) are indistinguishable on the
socket, so the mapping is per *method*; the failure policy follows docs/wire.md "rules that bite":
we NEVER answer with `ResponseException` (CometBFT stops the node on it). Instead:

* consensus-critical calls (Info, InitChain, FinalizeBlock, Commit): an app exception is fatal:
  `FatalAppError` propagates and the server exits non-zero. LMDB still holds the last committed
  block intact, and CometBFT's handshake replays the rest on restart.
* CheckTx / Query: a non-zero code with a readable log.
* PrepareProposal: an empty block; ProcessProposal / VerifyVoteExtension: REJECT (never
  UNKNOWN); ExtendVote: an empty extension; snapshot calls: reject/abort.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf.message import Message

from abci_app.application import Application
from abci_app.pb.tendermint.abci import types_pb2 as abci

log = logging.getLogger("abci_app.connections")

#: Code returned by CheckTx/Query when the application itself raised (not the tx's fault).
CODE_INTERNAL_ERROR = 99

CONSENSUS_METHODS = (
    "init_chain",
    "prepare_proposal",
    "process_proposal",
    "extend_vote",
    "verify_vote_extension",
    "finalize_block",
    "commit",
)
MEMPOOL_METHODS = ("check_tx",)
INFO_METHODS = ("info", "query")
SNAPSHOT_METHODS = ("list_snapshots", "offer_snapshot", "load_snapshot_chunk", "apply_snapshot_chunk")
FATAL_METHODS = frozenset({"info", "init_chain", "finalize_block", "commit"})

_RESPONSE_TYPES: dict[str, type[Message]] = {
    "info": abci.ResponseInfo,
    "init_chain": abci.ResponseInitChain,
    "query": abci.ResponseQuery,
    "check_tx": abci.ResponseCheckTx,
    "commit": abci.ResponseCommit,
    "list_snapshots": abci.ResponseListSnapshots,
    "offer_snapshot": abci.ResponseOfferSnapshot,
    "load_snapshot_chunk": abci.ResponseLoadSnapshotChunk,
    "apply_snapshot_chunk": abci.ResponseApplySnapshotChunk,
    "prepare_proposal": abci.ResponsePrepareProposal,
    "process_proposal": abci.ResponseProcessProposal,
    "extend_vote": abci.ResponseExtendVote,
    "verify_vote_extension": abci.ResponseVerifyVoteExtension,
    "finalize_block": abci.ResponseFinalizeBlock,
}


def _fallback(method: str, error: str) -> Message:
    """The safe non-exception answer for a failed non-fatal call."""
    if method == "check_tx":
        return abci.ResponseCheckTx(code=CODE_INTERNAL_ERROR, log=f"internal error: {error}")
    if method == "query":
        return abci.ResponseQuery(code=CODE_INTERNAL_ERROR, log=f"internal error: {error}")
    if method == "prepare_proposal":
        return abci.ResponsePrepareProposal()
    if method == "process_proposal":
        return abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.REJECT)
    if method == "extend_vote":
        return abci.ResponseExtendVote()
    if method == "verify_vote_extension":
        return abci.ResponseVerifyVoteExtension(status=abci.ResponseVerifyVoteExtension.REJECT)
    if method == "offer_snapshot":
        return abci.ResponseOfferSnapshot(result=abci.ResponseOfferSnapshot.REJECT)
    if method == "apply_snapshot_chunk":
        return abci.ResponseApplySnapshotChunk(result=abci.ResponseApplySnapshotChunk.ABORT)
    return _RESPONSE_TYPES[method]()


class FatalAppError(RuntimeError):
    """The application failed in a call whose failure must stop the node."""


class UnsupportedRequest(ValueError):
    """A well-formed protobuf that carries no request we serve (peer's fault: close the connection)."""


def handle(app: Application, req: abci.Request) -> abci.Response:
    """Answer one request. Raises FatalAppError / UnsupportedRequest; never returns `exception`."""
    method = req.WhichOneof("value")
    if method is None:
        raise UnsupportedRequest("request carries no known method (empty or unknown oneof)")
    if method == "echo":
        return abci.Response(echo=abci.ResponseEcho(message=req.echo.message))
    if method == "flush":
        return abci.Response(flush=abci.ResponseFlush())
    expected = _RESPONSE_TYPES.get(method)
    if expected is None:
        raise UnsupportedRequest(f"unsupported request {method!r}")
    call: Callable[[Message], Message] = getattr(app, method)
    try:
        result = call(getattr(req, method))
        if not isinstance(result, expected):
            raise TypeError(f"{method} returned {type(result).__name__}, not {expected.__name__}")
    except Exception as exc:
        if method in FATAL_METHODS:
            log.critical("application failed in %s: %r", method, exc, exc_info=True)
            raise FatalAppError(f"{method} failed: {exc!r}") from exc
        log.exception("application failed in %s", method)
        result = _fallback(method, f"{type(exc).__name__}: {exc}")
    resp = abci.Response()
    getattr(resp, method).CopyFrom(result)
    return resp
