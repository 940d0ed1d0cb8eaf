"""CometBFT RPC client for the sidecars (miner, verifier, publisher) — sync, on httpx.

Why sync: the sidecars are simple loops (poll the round → act → broadcast), and a blocking API
keeps them easy to read and to stop. The same code talks to a real `cometbft node` and to the
embedded dev node (`dlbc node`), which serves the same RPC subset (docs/processes.md).

JSON-RPC 2.0 over HTTP POST `/` (docs/wire.md); the answers are decoded by `rpc_types`, events over
`/websocket` come from `subscription`. Our app answers queries with JSON in `value`
(`query_json`). When the node is down, every call retries with bounded exponential backoff
(logged), then raises `NodeUnreachable`.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from training.sidecars.rpc_types import (
    Block,
    BlockTx,
    BroadcastResult,
    CommitResult,
    NodeUnreachable,
    QueryError,
    QueryResult,
    RpcError,
    TxResult,
    b64_field,
    checktx_rejection,
    hex_field,
    int_field,
    parse_block,
    parse_committed_tx,
    parse_tx_result,
    tx_hash,
)
from training.sidecars.subscription import Subscription

log = logging.getLogger(__name__)

DEFAULT_RPC_URL = "http://127.0.0.1:26657"
# CometBFT's default `timeout_broadcast_tx_commit` is 10 s; the HTTP wait must outlast it.
BROADCAST_COMMIT_HTTP_TIMEOUT = 15.0


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
        return int_field(self.status()["sync_info"]["latest_block_height"])

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
            code=int_field(r.get("code")),
            log=str(r.get("log") or ""),
            data=hex_field(r.get("data")),  # HexBytes here, unlike ExecTxResult.data (base64)
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
            height=int_field(r.get("height")),
            check_tx=parse_tx_result(r.get("check_tx")),
            tx_result=parse_tx_result(r.get("tx_result") or r.get("deliver_tx")),
        )

    def tx(self, hash_hex: str) -> BlockTx:
        """A committed tx by hash (needs the node's tx indexer; on by default)."""
        r = self.call("tx", {"hash": base64.b64encode(bytes.fromhex(hash_hex)).decode()})
        return parse_committed_tx(r, hash_hex)

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
            code=int_field(r.get("code")),
            log=str(r.get("log") or ""),
            info=str(r.get("info") or ""),
            key=b64_field(r.get("key")),
            value=b64_field(r.get("value")),
            height=int_field(r.get("height")),
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
        return parse_block(self.block(height), self.block_results(height))

    # -- websocket

    def websocket_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}/websocket"

    def subscribe(self, query: str, *, timeout: float = 5.0) -> Subscription:
        """Open `/websocket` and `subscribe` to `query` (e.g. "tm.event='Tx'")."""
        return Subscription.open(self.websocket_url(), query, timeout=timeout)
