"""In-process event bus for `/websocket` subscriptions (CometBFT's pubsub, minus the network).

Why bounded queues: a subscriber that does not read must not grow the node's memory; like
CometBFT, such a subscription is cancelled with "slow client" and the client is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlbc_ops.devnode.rpc_json import Query

log = logging.getLogger(__name__)

EVENT_NEW_BLOCK = "NewBlock"
EVENT_TX = "Tx"


@dataclass(eq=False)
class Subscriber:
    query: Query
    queue: asyncio.Queue[dict[str, Any] | None]
    cancelled: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class EventBus:
    def __init__(self, *, queue_size: int = 1000) -> None:
        self._subs: list[Subscriber] = []
        self._queue_size = queue_size

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, query: Query) -> Subscriber:
        sub = Subscriber(query=query, queue=asyncio.Queue(maxsize=self._queue_size))
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass

    def publish(self, event: str, value: Mapping[str, Any], events: Mapping[str, list[str]]) -> None:
        """Deliver `{"query", "data": {"type": "tendermint/event/<event>", "value"}, "events"}`."""
        for sub in list(self._subs):
            if not sub.query.matches(events):
                continue
            msg = {
                "query": sub.query.text,
                "data": {"type": f"tendermint/event/{event}", "value": value},
                "events": events,
            }
            try:
                sub.queue.put_nowait(msg)
            except asyncio.QueueFull:
                log.warning("cancelling subscription %r: slow client", sub.query.text)
                sub.cancelled = "slow client"
                self._subs.remove(sub)
                # make room for the sentinel so the pump wakes up and reports the cancel
                try:
                    sub.queue.get_nowait()
                except asyncio.QueueEmpty:
                    pass
                sub.queue.put_nowait(None)
