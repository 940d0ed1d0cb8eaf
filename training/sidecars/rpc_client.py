"""CometBFT RPC client for the sidecars (miner, verifier, publisher) — sync, on httpx.

Why sync: the sidecars are simple loops (follow blocks → act → broadcast), and a blocking API keeps
them easy to read and to stop. The same code talks to a real `cometbft node` and to the embedded
devnet node (`dlbc node`), which serves the same RPC subset (DESIGN §1).

Wire format (DESIGN §2): JSON-RPC 2.0 over HTTP POST `/`; tx bytes base64, `abci_query.data` hex,
64-bit integers as decimal strings; events over `/websocket` with `subscribe`. Our app answers
queries with JSON in `value` (`query_json`).

Following the chain: `follow_blocks()` yields every block in height order with its tx results and
FinalizeBlock events, fetched by `block` + `block_results` per height, so no height is ever skipped
even if a websocket event is lost; a `/websocket` NewBlock subscription is used only as a wake-up
signal (falls back to polling when it is unavailable). When the node is down, every call retries
with bounded exponential backoff (logged), then raises `NodeUnreachable`; `follow_blocks` keeps
waiting for the node to come back unless `give_up_after` is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from abci_app import rfc3339
from dlbc_ops.devnode.websocket import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameDecoder,
    Message,
    WebSocketProtocolError,
    accept_key,
    encode_close,
    encode_frame,
    new_client_key,
)

log = logging.getLogger(__name__)

DEFAULT_RPC_URL = "http://127.0.0.1:26657"
# CometBFT's default `timeout_broadcast_tx_commit` is 10 s; the HTTP wait must outlast it.
BROADCAST_COMMIT_HTTP_TIMEOUT = 15.0


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

    def all_events(self) -> Iterator[tuple[BlockTx | None, Event]]:
        """Block-level events (tx None) then each tx's events, in order."""
        for e in self.events:
            yield None, e
        for t in self.txs:
            for e in t.result.events:
                yield t, e


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
            return _int(self.value["TxResult"].get("height"))
        header = (self.value.get("block") or {}).get("header") or {}
        return _int(header.get("height")) if header else None

    def tx(self) -> BlockTx | None:
        """The committed tx of a `tm.event='Tx'` event (None for other events)."""
        r = self.value.get("TxResult")
        if not isinstance(r, Mapping):
            return None
        raw = _b64(r.get("tx"))
        return BlockTx(height=_int(r.get("height")), index=_int(r.get("index")),
                       hash=tx_hash(raw), tx=raw, result=parse_tx_result(r.get("result")))


# --------------------------------------------------------------------------- decoding helpers


def tx_hash(tx: bytes) -> str:
    """CometBFT's tx hash: SHA-256 of the tx bytes, upper hex."""
    return hashlib.sha256(tx).hexdigest().upper()


def _int(v: Any, default: int = 0) -> int:
    if v is None or v == "":
        return default
    return int(v)


def _b64(v: Any) -> bytes:
    if not v:
        return b""
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise RpcError(f"node sent invalid base64: {str(v)[:40]!r}") from None


def _hex(v: Any) -> bytes:
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
        code=_int(obj.get("code")),
        data=_b64(obj.get("data")),
        log=str(obj.get("log") or ""),
        info=str(obj.get("info") or ""),
        gas_wanted=_int(obj.get("gas_wanted")),
        gas_used=_int(obj.get("gas_used")),
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


# --------------------------------------------------------------------------- retry policy


@dataclass(frozen=True, slots=True)
class Backoff:
    """Bounded exponential backoff: `attempts` tries, delays initial·factor^k capped at max_delay."""

    attempts: int = 6
    initial: float = 0.2
    factor: float = 2.0
    max_delay: float = 3.0

    def delays(self) -> Iterator[float]:
        d = self.initial
        for _ in range(max(0, self.attempts - 1)):
            yield min(d, self.max_delay)
            d *= self.factor


_TRANSIENT = (httpx.TransportError,)  # connect/read/write errors, timeouts, protocol errors
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)  # safe to retry even for broadcasts


# --------------------------------------------------------------------------- client


class RpcClient:
    """Blocking CometBFT JSON-RPC client.

    >>> rpc = RpcClient("http://127.0.0.1:26657")
    >>> rpc.broadcast_tx_commit(tx).ok
    """

    def __init__(
        self,
        url: str = DEFAULT_RPC_URL,
        *,
        timeout: float = 10.0,
        backoff: Backoff = Backoff(),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = url.replace("tcp://", "http://", 1) if url.startswith("tcp://") else url
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.backoff = backoff
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        idempotent: bool = True,
        backoff: Backoff | None = None,
    ) -> Any:
        """One JSON-RPC call → `result`; retries transport failures with backoff.

        Non-idempotent calls (broadcasts) are retried only when the request was certainly not
        sent (connection refused); a retried broadcast of a tx that did land is harmless anyway
        (the mempool cache rejects duplicates), but we do not lean on that.
        """
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or {}}
        policy = backoff or self.backoff
        delays = policy.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._http.post(
                    self.url + "/", json=body, timeout=timeout if timeout else self.timeout
                )
            except _TRANSIENT as exc:
                retryable = idempotent or isinstance(exc, _NOT_SENT)
                delay = next(delays, None) if retryable else None
                if delay is None:
                    raise NodeUnreachable(
                        f"{method}: node at {self.url} unreachable after {attempt} attempt(s): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                log.warning(
                    "rpc %s to %s failed (%s: %s); retry %d/%d in %.1fs",
                    method, self.url, type(exc).__name__, exc, attempt, policy.attempts - 1, delay,
                )
                time.sleep(delay)
                continue
            return self._unwrap(method, resp)

    def _unwrap(self, method: str, resp: httpx.Response) -> Any:
        try:
            doc = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise RpcError(
                f"{method}: HTTP {resp.status_code} with a non-JSON body: {resp.text[:200]!r}"
            ) from None
        if not isinstance(doc, dict):
            raise RpcError(f"{method}: unexpected JSON-RPC answer {str(doc)[:200]!r}")
        err = doc.get("error")
        if err:
            if isinstance(err, dict):
                raise RpcError(
                    str(err.get("message") or "error"), code=err.get("code"), data=err.get("data")
                )
            raise RpcError(str(err))
        if "result" not in doc:
            raise RpcError(f"{method}: answer has neither result nor error")
        return doc["result"]

    # -- info

    def health(self) -> bool:
        """True if the node answers `health` (single try: a probe, not a wait)."""
        try:
            self.call("health", backoff=Backoff(attempts=1))
        except RpcError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("status")
        return result

    def latest_height(self) -> int:
        return _int(self.status()["sync_info"]["latest_block_height"])

    def chain_id(self) -> str:
        return str(self.status()["node_info"]["network"])

    def abci_info(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("abci_info")["response"]
        return result

    def wait_for_height(self, height: int, timeout: float = 30.0, poll: float = 0.1) -> int:
        """Block until the chain reaches `height`; returns the latest height."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.latest_height()
            if h >= height:
                return h
            if time.monotonic() >= deadline:
                raise TimeoutError(f"height {height} not reached in {timeout}s (at {h})")
            time.sleep(poll)

    # -- transactions

    def broadcast_tx_async(self, tx: bytes) -> BroadcastResult:
        r = self.call("broadcast_tx_async", {"tx": base64.b64encode(tx).decode()}, idempotent=False)
        return BroadcastResult(hash=str(r.get("hash") or tx_hash(tx)))

    def broadcast_tx_sync(self, tx: bytes) -> BroadcastResult:
        """Waits for CheckTx only; `code != 0` means the mempool refused the tx (both the v0.38
        result and the v1.0 error form of a refusal come back as such a result)."""
        try:
            r = self.call(
                "broadcast_tx_sync", {"tx": base64.b64encode(tx).decode()}, idempotent=False
            )
        except RpcError as exc:
            refused = checktx_rejection(exc)
            if refused is None:
                raise
            return BroadcastResult(
                hash=tx_hash(tx), code=refused.code, log=refused.log, codespace=refused.codespace
            )
        return BroadcastResult(
            hash=str(r.get("hash") or tx_hash(tx)),
            code=_int(r.get("code")),
            log=str(r.get("log") or ""),
            data=_hex(r.get("data")),  # HexBytes here, unlike ExecTxResult.data (base64)
            codespace=str(r.get("codespace") or ""),
        )

    def broadcast_tx_commit(self, tx: bytes, *, timeout: float | None = None) -> CommitResult:
        """Waits for the block; check `.ok` (CheckTx and FinalizeBlock codes both zero). A tx
        refused by CheckTx comes back with `check_tx.code != 0` and height 0 on both v0.38 and
        v1.0 (see `checktx_rejection`)."""
        try:
            r = self.call(
                "broadcast_tx_commit",
                {"tx": base64.b64encode(tx).decode()},
                timeout=timeout or max(self.timeout, BROADCAST_COMMIT_HTTP_TIMEOUT),
                idempotent=False,
            )
        except RpcError as exc:
            refused = checktx_rejection(exc)
            if refused is None:
                raise
            return CommitResult(hash=tx_hash(tx), height=0, check_tx=refused, tx_result=TxResult())
        return CommitResult(
            hash=str(r.get("hash") or tx_hash(tx)),
            height=_int(r.get("height")),
            check_tx=parse_tx_result(r.get("check_tx")),
            tx_result=parse_tx_result(r.get("tx_result") or r.get("deliver_tx")),
        )

    def tx(self, hash_hex: str) -> BlockTx:
        """A committed tx by hash (needs the node's tx indexer; on by default)."""
        r = self.call("tx", {"hash": base64.b64encode(bytes.fromhex(hash_hex)).decode()})
        return BlockTx(
            height=_int(r.get("height")),
            index=_int(r.get("index")),
            hash=str(r.get("hash") or hash_hex).upper(),
            tx=_b64(r.get("tx")),
            result=parse_tx_result(r.get("tx_result")),
        )

    def wait_for_tx(self, hash_hex: str, timeout: float = 30.0, poll: float = 0.2) -> BlockTx:
        """Block until the tx with this hash is committed (after a `broadcast_tx_sync|async`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.tx(hash_hex)
            except NodeUnreachable:
                raise
            except RpcError as exc:
                if "not found" not in f"{exc.message} {exc.data}":
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"tx {hash_hex} not committed within {timeout}s")
            time.sleep(poll)

    # -- queries

    def abci_query(
        self, path: str, data: bytes = b"", *, height: int = 0, prove: bool = False
    ) -> QueryResult:
        r = self.call(
            "abci_query",
            {"path": path, "data": data.hex(), "height": str(height), "prove": prove},
        )["response"]
        return QueryResult(
            code=_int(r.get("code")),
            log=str(r.get("log") or ""),
            info=str(r.get("info") or ""),
            key=_b64(r.get("key")),
            value=_b64(r.get("value")),
            height=_int(r.get("height")),
            codespace=str(r.get("codespace") or ""),
        )

    def query_json(self, path: str, data: bytes = b"", *, height: int = 0) -> Any:
        """`abci_query` whose answer is JSON; raises `QueryError` on a non-zero code."""
        q = self.abci_query(path, data, height=height)
        if not q.ok:
            raise QueryError(q.log or f"query {path} failed", code=q.code, data=q.info or None)
        return q.json()

    # -- blocks

    def block(self, height: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "block", {"height": str(height)} if height is not None else {}
        )
        return result

    def block_results(self, height: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "block_results", {"height": str(height)} if height is not None else {}
        )
        return result

    def get_block(self, height: int) -> Block:
        """`block` + `block_results` of one height, decoded."""
        b = self.block(height)
        br = self.block_results(height)
        header = b["block"]["header"]
        raw_txs = [_b64(t) for t in (b["block"].get("data") or {}).get("txs") or []]
        results = br.get("txs_results") or []
        if len(results) != len(raw_txs):
            raise RpcError(
                f"block {height}: {len(raw_txs)} txs but {len(results)} results from the node"
            )
        events = br.get("finalize_block_events")
        if events is None:  # CometBFT v0.37-style answer
            events = (br.get("begin_block_events") or []) + (br.get("end_block_events") or [])
        h = _int(header["height"])
        return Block(
            height=h,
            hash=str(b["block_id"]["hash"]).upper(),
            time=str(header["time"]),
            time_ns=parse_rfc3339_ns(str(header["time"])),
            chain_id=str(header.get("chain_id") or ""),
            proposer_address=str(header.get("proposer_address") or "").upper(),
            app_hash=str(header.get("app_hash") or "").upper(),
            txs=tuple(
                BlockTx(height=h, index=i, hash=tx_hash(t), tx=t, result=parse_tx_result(res))
                for i, (t, res) in enumerate(zip(raw_txs, results, strict=True))
            ),
            events=tuple(parse_event(e) for e in events),
        )

    def follow_blocks(
        self,
        from_height: int | None = None,
        *,
        poll_interval: float = 0.5,
        use_websocket: bool = True,
        stop: threading.Event | None = None,
        give_up_after: float | None = None,
    ) -> Iterator[Block]:
        """Yield every committed block from `from_height` on (default: the next new block).

        Never skips a height: each is fetched by number. A NewBlock websocket subscription only
        shortens the wait between blocks. While the node is down the loop keeps retrying (logged),
        raising `NodeUnreachable` only once it has been unreachable for `give_up_after` seconds.
        Returns when `stop` is set.
        """
        stop = stop or threading.Event()
        next_h = None if from_height is None else max(1, from_height)  # heights start at 1
        ws: Subscription | None = None
        ws_retry_at = 0.0
        down_since: float | None = None
        try:
            while not stop.is_set():
                try:
                    latest = self.latest_height()
                    if next_h is None:
                        next_h = latest + 1
                    while next_h <= latest and not stop.is_set():
                        try:
                            block = self.get_block(next_h)
                        except RpcError as exc:
                            lowest = _lowest_available(exc)
                            if lowest is None or isinstance(exc, NodeUnreachable):
                                raise
                            log.warning("blocks below %d are pruned; skipping to it", lowest)
                            next_h = max(next_h + 1, lowest)
                            continue
                        yield block
                        next_h += 1
                    down_since = None
                except NodeUnreachable:
                    now = time.monotonic()
                    down_since = down_since or now
                    if give_up_after is not None and now - down_since >= give_up_after:
                        raise
                    log.warning("node %s still unreachable; following keeps waiting", self.url)
                    if ws is not None:
                        ws.close()
                        ws = None
                    stop.wait(self.backoff.max_delay)
                    continue
                # wait for the next block: websocket wake-up if we have one, else a poll sleep
                if use_websocket and ws is None and time.monotonic() >= ws_retry_at:
                    try:
                        ws = self.subscribe("tm.event='NewBlock'", timeout=2.0)
                    except (OSError, RpcError, WebSocketProtocolError) as exc:
                        log.info("websocket unavailable (%s); polling every %.1fs", exc, poll_interval)
                        ws_retry_at = time.monotonic() + 30.0
                if ws is not None:
                    try:
                        if ws.next(timeout=max(poll_interval, 2.0)) is not None:
                            # drain what piled up while the caller was busy: heights are
                            # fetched by number anyway, one wake-up is enough
                            while ws.next(timeout=0) is not None:
                                pass
                    except (OSError, RpcError, WebSocketProtocolError) as exc:
                        log.info("websocket dropped (%s); will resubscribe", exc)
                        ws.close()
                        ws = None
                        stop.wait(poll_interval)
                else:
                    stop.wait(poll_interval)
        finally:
            if ws is not None:
                ws.close()

    def follow_txs(self, from_height: int | None = None, **kw: Any) -> Iterator[BlockTx]:
        """Every committed tx with its result, in chain order (see `follow_blocks`)."""
        for block in self.follow_blocks(from_height, **kw):
            yield from block.txs

    # -- websocket

    def websocket_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}/websocket"

    def subscribe(self, query: str, *, timeout: float = 5.0) -> Subscription:
        """Open `/websocket` and `subscribe` to `query` (e.g. "tm.event='Tx'")."""
        sub = Subscription(self.websocket_url(), query, timeout=timeout)
        try:
            sub.start()
        except BaseException:
            sub.close()
            raise
        return sub


def _lowest_available(exc: RpcError) -> int | None:
    m = re.search(r"lowest height is (\d+)", f"{exc.message} {exc.data}")
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- websocket client


class WebSocketClosed(OSError):
    """The server closed the websocket."""


class WebSocketClient:
    """Minimal blocking RFC 6455 client (text frames, masking, ping/pong, close)."""

    def __init__(self, url: str, *, timeout: float = 5.0, max_message: int = 16 << 20) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"only ws:// is supported, got {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.timeout = timeout
        self._decoder = FrameDecoder(expect_masked=False, max_message=max_message)
        self._pending: list[Message] = []
        self._sock: socket.socket | None = None

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock = sock
        key = new_client_key()
        req = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(req.encode("ascii"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise WebSocketProtocolError("connection closed during websocket handshake")
            buf += chunk
            if len(buf) > 65536:
                raise WebSocketProtocolError("websocket handshake response too large")
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise WebSocketProtocolError(f"websocket upgrade refused: {lines[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if headers.get("sec-websocket-accept") != accept_key(key):
            raise WebSocketProtocolError("bad Sec-WebSocket-Accept from server")
        self._decoder.feed(rest)

    def send_text(self, text: str) -> None:
        self._send(encode_frame(OP_TEXT, text.encode(), mask=True))

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise WebSocketClosed("websocket not connected")
        self._sock.sendall(data)

    def recv(self, timeout: float | None = None) -> str | None:
        """Next text message, or None if none arrived within `timeout`. Answers pings itself."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._pending:
                msg = self._pending.pop(0)
                if msg.opcode == OP_PING:
                    self._send(encode_frame(0xA, msg.payload, mask=True))
                elif msg.opcode == OP_CLOSE:
                    try:
                        self._send(encode_close(msg.close_code or 1000, mask=True))
                    except OSError:
                        pass
                    self._shutdown()
                    raise WebSocketClosed(f"server closed websocket (code {msg.close_code})")
                elif msg.opcode == OP_TEXT:
                    return msg.text
            if self._sock is None:
                raise WebSocketClosed("websocket not connected")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._sock.settimeout(remaining)  # 0.0: one non-blocking read of what has arrived
            try:
                chunk = self._sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return None
            if not chunk:
                self._shutdown()
                raise WebSocketClosed("server dropped the websocket connection")
            self._decoder.feed(chunk)
            self._pending.extend(self._decoder.messages())

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.sendall(encode_close(mask=True))
            except OSError:
                pass
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


class Subscription:
    """A `subscribe` on `/websocket`; iterate for `EventMessage`s, or call `next(timeout)`."""

    def __init__(self, url: str, query: str, *, timeout: float = 5.0) -> None:
        self.query = query
        self.ws = WebSocketClient(url, timeout=timeout)
        self.timeout = timeout

    def start(self) -> None:
        self.ws.connect()
        self.ws.send_text(
            json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"query": self.query}}
            )
        )
        deadline = time.monotonic() + self.timeout
        while True:
            text = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            if text is None:
                raise RpcError(f"no answer to subscribe {self.query!r} in {self.timeout}s")
            doc = json.loads(text)
            if doc.get("error"):
                err = doc["error"]
                raise RpcError(str(err.get("message")), code=err.get("code"), data=err.get("data"))
            if doc.get("id") == 1 and not (doc.get("result") or {}).get("data"):
                return  # the empty ack

    def next(self, timeout: float | None = None) -> EventMessage | None:
        """The next event, or None after `timeout` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            text = self.ws.recv(timeout=remaining)
            if text is None:
                return None
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                raise WebSocketProtocolError("non-JSON websocket message") from None
            if doc.get("error"):
                err = doc["error"]
                raise RpcError(str(err.get("message")), code=err.get("code"), data=err.get("data"))
            result = doc.get("result") or {}
            data = result.get("data")
            if not data:
                continue
            return EventMessage(
                query=str(result.get("query") or self.query),
                type=str(data.get("type") or ""),
                value=data.get("value") or {},
                events=result.get("events") or {},
            )

    def __iter__(self) -> Iterator[EventMessage]:
        while True:
            ev = self.next()
            if ev is not None:
                yield ev

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
