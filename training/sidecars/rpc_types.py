"""What the CometBFT RPC answers, decoded: errors, tx/block/query results, pushed events.

Why apart from the client: the HTTP client (`rpc_client`) and the `/websocket` subscription
(`subscription`) decode the same shapes, and a caller that only reads results (the sidecars,
tests) should not need either transport. Wire format (docs/wire.md): tx bytes base64,
`abci_query.data` hex, 64-bit integers as decimal strings; `checktx_rejection` folds the two
ways CometBFT v0.38 and v1.0 report a refused tx into one result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from abci_app import rfc3339

# --------------------------------------------------------------------------- errors


class RpcError(Exception):
    """The node answered with a JSON-RPC error (or something that is not JSON-RPC)."""

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        detail = f" ({data})" if data not in (None, "") else ""
        super().__init__(f"RPC error {code}: {message}{detail}" if code is not None else message)


class NodeUnreachable(RpcError):
    """No node answered at the RPC address after the bounded retries."""


class QueryError(RpcError):
    """`abci_query` reached the app, which answered with a non-zero code."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Event:
    """An ABCI event; attributes keep the app's order (keys may repeat)."""

    type: str
    attributes: tuple[tuple[str, str], ...] = ()

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.attributes:
            if k == key:
                return v
        return default

    def as_dict(self) -> dict[str, str]:
        return dict(self.attributes)


@dataclass(frozen=True, slots=True)
class TxResult:
    """`ResponseCheckTx` / `ExecTxResult` as returned by the RPC."""

    code: int = 0
    data: bytes = b""
    log: str = ""
    info: str = ""
    gas_wanted: int = 0
    gas_used: int = 0
    events: tuple[Event, ...] = ()
    codespace: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    def events_of(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """`broadcast_tx_sync|async`: CheckTx outcome (sync) and the tx hash (upper hex)."""

    hash: str
    code: int = 0
    log: str = ""
    data: bytes = b""
    codespace: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass(frozen=True, slots=True)
class CommitResult:
    """`broadcast_tx_commit`: CheckTx and, if admitted, the tx's result in its block."""

    hash: str
    height: int
    check_tx: TxResult
    tx_result: TxResult

    @property
    def ok(self) -> bool:
        return self.check_tx.ok and self.tx_result.ok


@dataclass(frozen=True, slots=True)
class QueryResult:
    code: int
    log: str
    info: str
    key: bytes
    value: bytes
    height: int
    codespace: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    def json(self) -> Any:
        """Decode `value` as JSON (our app's query answers are JSON documents)."""
        try:
            return json.loads(self.value) if self.value else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RpcError(f"query value is not JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class BlockTx:
    """One tx of a block with its FinalizeBlock result."""

    height: int
    index: int
    hash: str
    tx: bytes
    result: TxResult


@dataclass(frozen=True, slots=True)
class Block:
    """A committed block with everything a sidecar reacts to."""

    height: int
    hash: str
    time: str  # RFC 3339 as the node sent it
    time_ns: int  # BFT time, ns since the Unix epoch
    chain_id: str
    proposer_address: str
    app_hash: str  # of the previous block's state (header field), upper hex
    txs: tuple[BlockTx, ...] = ()
    events: tuple[Event, ...] = ()  # finalize_block_events (begin/end-block style events)


@dataclass(frozen=True, slots=True)
class EventMessage:
    """One event pushed on a `/websocket` subscription."""

    query: str
    type: str  # e.g. "tendermint/event/NewBlock"
    value: Mapping[str, Any]
    events: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def height(self) -> int | None:
        """Block height of a NewBlock or Tx event."""
        if "TxResult" in self.value:
            return int_field(self.value["TxResult"].get("height"))
        header = (self.value.get("block") or {}).get("header") or {}
        return int_field(header.get("height")) if header else None

    def tx(self) -> BlockTx | None:
        """The committed tx of a `tm.event='Tx'` event (None for other events)."""
        r = self.value.get("TxResult")
        return parse_committed_tx(r) if isinstance(r, Mapping) else None


# --------------------------------------------------------------------------- decoding helpers


def tx_hash(tx: bytes) -> str:
    """CometBFT's tx hash: SHA-256 of the tx bytes, upper hex."""
    return hashlib.sha256(tx).hexdigest().upper()


def int_field(v: Any, default: int = 0) -> int:
    """An int64 field (CometBFT sends decimal strings; missing or empty is `default`)."""
    if v is None or v == "":
        return default
    return int(v)


def b64_field(v: Any) -> bytes:
    """A []byte field (base64); bad base64 from the node is an RpcError, not a crash."""
    if not v:
        return b""
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise RpcError(f"node sent invalid base64: {str(v)[:40]!r}") from None


def hex_field(v: Any) -> bytes:
    """A HexBytes field (e.g. `broadcast_tx_sync`'s data)."""
    if not v:
        return b""
    try:
        return bytes.fromhex(str(v))
    except ValueError:
        raise RpcError(f"node sent invalid hex: {str(v)[:40]!r}") from None


def parse_rfc3339_ns(s: str) -> int:
    """`abci_app.rfc3339.parse_rfc3339_ns`; a time the node sent that it rejects is an RpcError."""
    try:
        return rfc3339.parse_rfc3339_ns(s)
    except ValueError as exc:
        raise RpcError(str(exc)) from None


def parse_event(obj: Mapping[str, Any]) -> Event:
    attrs: list[tuple[str, str]] = []
    for a in obj.get("attributes") or []:
        attrs.append((str(a.get("key") or ""), str(a.get("value") or "")))
    return Event(type=str(obj.get("type") or ""), attributes=tuple(attrs))


def parse_tx_result(obj: Mapping[str, Any] | None) -> TxResult:
    if not obj:
        return TxResult()
    return TxResult(
        code=int_field(obj.get("code")),
        data=b64_field(obj.get("data")),
        log=str(obj.get("log") or ""),
        info=str(obj.get("info") or ""),
        gas_wanted=int_field(obj.get("gas_wanted")),
        gas_used=int_field(obj.get("gas_used")),
        events=tuple(parse_event(e) for e in obj.get("events") or []),
        codespace=str(obj.get("codespace") or ""),
    )


_REJECTED_RE = re.compile(
    r"tx (?P<hash>[0-9A-Fa-f]+) is invalid: code=(?P<code>\d+), data=(?P<data>[^,]*), "
    r"log='(?P<log>.*)', codespace='(?P<codespace>[^']*)'\s*$",
    re.DOTALL,
)


#: `code` of a tx the node's mempool refused before the app saw it (a resent tx still in the
#: mempool cache, a full mempool, a tx over max_tx_bytes). ABCI codes are uint32, so -1 never
#: collides with one of the app's codes; `codespace` is "mempool".
MEMPOOL_REFUSED = -1
_MEMPOOL_ERRORS = ("tx already exists in cache", "mempool is full", "tx too large")


def checktx_rejection(err: RpcError) -> TxResult | None:
    """The refusal inside a broadcast error, as a TxResult; None when `err` is something else.

    CometBFT v0.38 answers a tx that CheckTx refuses with a *result* whose code is non-zero;
    v1.0 answers `broadcast_tx_sync`/`_commit` with a JSON-RPC error -32603 whose data reads
    "broadcast error on transaction validation: tx <HASH> is invalid: code=1, data=, log='...',
    codespace='...'". Both mean the same thing to a caller: the tx was refused. Refusals by the
    mempool itself (both versions answer them as -32603 errors) come back as `MEMPOOL_REFUSED`."""
    if err.code != -32603:
        return None
    text = f"{err.data if isinstance(err.data, str) else ''} {err.message}"
    match = _REJECTED_RE.search(err.data) if isinstance(err.data, str) else None
    if match is not None:
        return TxResult(code=int(match["code"]), log=match["log"], codespace=match["codespace"])
    for needle in _MEMPOOL_ERRORS:
        if needle in text:
            return TxResult(code=MEMPOOL_REFUSED, log=text.strip(), codespace="mempool")
    return None


def parse_block(block: Mapping[str, Any], results: Mapping[str, Any]) -> Block:
    """The `block` and `block_results` answers of one height as one `Block`."""
    header = block["block"]["header"]
    raw_txs = [b64_field(t) for t in (block["block"].get("data") or {}).get("txs") or []]
    tx_results = results.get("txs_results") or []
    h = int_field(header["height"])
    if len(tx_results) != len(raw_txs):
        raise RpcError(
            f"block {h}: {len(raw_txs)} txs but {len(tx_results)} results from the node"
        )
    events = results.get("finalize_block_events")
    if events is None:  # CometBFT v0.37-style answer
        events = (results.get("begin_block_events") or []) + (results.get("end_block_events") or [])
    return Block(
        height=h,
        hash=str(block["block_id"]["hash"]).upper(),
        time=str(header["time"]),
        time_ns=parse_rfc3339_ns(str(header["time"])),
        chain_id=str(header.get("chain_id") or ""),
        proposer_address=str(header.get("proposer_address") or "").upper(),
        app_hash=str(header.get("app_hash") or "").upper(),
        txs=tuple(
            BlockTx(height=h, index=i, hash=tx_hash(t), tx=t, result=parse_tx_result(res))
            for i, (t, res) in enumerate(zip(raw_txs, tx_results, strict=True))
        ),
        events=tuple(parse_event(e) for e in events),
    )


def parse_committed_tx(r: Mapping[str, Any], hash_hex: str = "") -> BlockTx:
    """The `tx` answer (or a Tx event's `TxResult`) as a `BlockTx`."""
    raw = b64_field(r.get("tx"))
    return BlockTx(
        height=int_field(r.get("height")),
        index=int_field(r.get("index")),
        hash=str(r.get("hash") or hash_hex or tx_hash(raw)).upper(),
        tx=raw,
        result=parse_tx_result(r.get("tx_result") or r.get("result")),
    )
