"""`/websocket` event subscriptions (CometBFT's `subscribe`), on the `websockets` library.

Why a subscription at all: the sidecars act when the chain moves, and the chain only moves when a
block commits. `BlockSignal` wakes a sidecar's loop on every NewBlock event, so it reacts within
milliseconds instead of up to a poll interval later. Events can be lost (a dropped connection, a
node that cancels a slow subscriber), so nothing depends on them: the sidecar still polls its
`round` query, and the signal only shortens the wait. Against a node without `/websocket` the
loop simply polls.

The same code subscribes to a real `cometbft node` and to the dev node (`dlbc node`), which
serves the same JSON-RPC-over-websocket protocol (docs/wire.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from training.sidecars.rpc_types import EventMessage, RpcError

log = logging.getLogger(__name__)

#: Largest event accepted (a NewBlock event carries the whole block: up to max_block_bytes).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
NEW_BLOCK_QUERY = "tm.event='NewBlock'"


class SubscriptionClosed(RpcError):
    """The websocket could not be opened, or closed under a live subscription."""


class Subscription:
    """One `subscribe` on `/websocket`; `next(timeout)` or iterate for `EventMessage`s."""

    def __init__(self, conn: ClientConnection, query: str) -> None:
        self.query = query
        self._conn = conn

    @classmethod
    def open(cls, url: str, query: str, *, timeout: float = 5.0) -> Subscription:
        """Connect to `url` (ws://HOST:PORT/websocket) and subscribe; RpcError if refused."""
        try:
            # proxy=None: a node on localhost must not be reached through $HTTP_PROXY;
            # compression=None: CometBFT does not negotiate permessage-deflate.
            conn = connect(url, open_timeout=timeout, proxy=None, compression=None, legacy=True,
                           max_size=MAX_MESSAGE_BYTES, close_timeout=1.0)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise SubscriptionClosed(f"cannot open {url}: {exc}") from None
        sub = cls(conn, query)
        try:
            sub._subscribe(timeout)
        except BaseException:
            sub.close()
            raise
        return sub

    def _subscribe(self, timeout: float) -> None:
        self._send({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                    "params": {"query": self.query}})
        deadline = time.monotonic() + timeout
        while True:
            doc = self._recv(max(0.0, deadline - time.monotonic()))
            if doc is None:
                raise RpcError(f"no answer to subscribe {self.query!r} in {timeout}s")
            if doc.get("id") == 1 and not (doc.get("result") or {}).get("data"):
                return  # the empty acknowledgement

    def next(self, timeout: float | None = None) -> EventMessage | None:
        """The next event, or None after `timeout` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            doc = self._recv(remaining)
            if doc is None:
                return None
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

    def _send(self, doc: dict[str, Any]) -> None:
        try:
            self._conn.send(json.dumps(doc))
        except ConnectionClosed as exc:
            raise SubscriptionClosed(f"websocket closed: {exc}") from None

    def _recv(self, timeout: float | None) -> dict[str, Any] | None:
        """One JSON-RPC answer; None on timeout; a JSON-RPC error is raised as RpcError."""
        try:
            raw = self._conn.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            raise SubscriptionClosed(f"websocket closed: {exc}") from None
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RpcError(f"non-JSON websocket message: {str(raw)[:80]!r}") from None
        if not isinstance(doc, dict):
            raise RpcError(f"unexpected websocket message: {str(doc)[:80]!r}")
        err = doc.get("error")
        if err:
            if isinstance(err, dict):
                raise RpcError(str(err.get("message")), code=err.get("code"), data=err.get("data"))
            raise RpcError(str(err))
        return doc

    def __iter__(self) -> Iterator[EventMessage]:
        while True:
            ev = self.next()
            if ev is not None:
                yield ev

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockSignal:
    """Wakes `wait()` when the node commits a block; a background thread holds the subscription.

    While the subscription is down (node restarting, no `/websocket`) `wait` just times out, so
    a caller that waits `poll_seconds` polls exactly as it would without this class; the thread
    resubscribes every `retry_seconds`.
    """

    def __init__(self, websocket_url: str, *, retry_seconds: float = 5.0) -> None:
        self.url = websocket_url
        self.retry_seconds = retry_seconds
        self._woken = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="new-block-signal", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """Until the next block (True) or `timeout` seconds (False), whichever comes first."""
        woke = self._woken.wait(timeout)
        self._woken.clear()  # the caller reads chain state after this: nothing is missed
        return woke

    def wake(self) -> None:
        """End the current `wait` now (the sidecar is stopping)."""
        self._woken.set()

    def close(self) -> None:
        self._closing.set()
        self._woken.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                with Subscription.open(self.url, NEW_BLOCK_QUERY) as sub:
                    log.debug("woken by NewBlock events from %s", self.url)
                    while not self._closing.is_set():
                        if sub.next(timeout=1.0) is not None:
                            self._woken.set()
            except RpcError as exc:
                log.info("no NewBlock subscription (%s); polling, retry in %.0fs",
                         exc, self.retry_seconds)
            except Exception:  # a wake-up helper must never take the sidecar down
                log.exception("NewBlock subscription failed; polling, retry in %.0fs",
                              self.retry_seconds)
            self._closing.wait(self.retry_seconds)
