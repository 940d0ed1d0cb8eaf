"""ABCI socket client: CometBFT's side of the four connections (used by the driver and bench).

Like CometBFT's socket client, each connection carries requests strictly in order; a
synchronous call is "request, then Flush, wait for both responses". `request_many` pipelines
many requests before a single Flush, as CometBFT's mempool does with CheckTx.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import cast

from google.protobuf.message import Message

from abci_app.codec import DEFAULT_MAX_MESSAGE_SIZE, FrameDecoder, encode_frame
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.server import Address

__all__ = ["CONNECTIONS", "AbciClient", "AbciClientError", "connection_for"]

CONNECTIONS = ("consensus", "mempool", "query", "snapshot")

_METHOD_CONNECTION = {
    "init_chain": "consensus",
    "prepare_proposal": "consensus",
    "process_proposal": "consensus",
    "extend_vote": "consensus",
    "verify_vote_extension": "consensus",
    "finalize_block": "consensus",
    "commit": "consensus",
    "check_tx": "mempool",
    "info": "query",
    "query": "query",
    "echo": "query",
    "list_snapshots": "snapshot",
    "offer_snapshot": "snapshot",
    "load_snapshot_chunk": "snapshot",
    "apply_snapshot_chunk": "snapshot",
}

_FLUSH_FRAME = encode_frame(abci.Request(flush=abci.RequestFlush()).SerializeToString())


def connection_for(method: str) -> str:
    """Which of CometBFT's connections carries `method` (oneof name, e.g. "check_tx")."""
    return _METHOD_CONNECTION[method]


class AbciClientError(RuntimeError):
    """The app closed the connection, answered `exception`, or answered out of order."""


class _Conn:
    def __init__(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_message_size: int) -> None:
        self.name = name
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(max_message_size)
        self.ready: list[bytes] = []
        self.lock = asyncio.Lock()

    async def read_response(self) -> abci.Response:
        while not self.ready:
            data = await self.reader.read(1 << 16)
            if not data:
                raise AbciClientError(f"{self.name} connection closed by the app")
            self.ready.extend(self.decoder.feed(data))
        resp = abci.Response()
        resp.ParseFromString(self.ready.pop(0))
        if resp.WhichOneof("value") == "exception":
            raise AbciClientError(f"app answered exception on {self.name}: {resp.exception.error}")
        return resp


class AbciClient:
    """Four ABCI connections to one app at `address` (tcp://HOST:PORT or unix:///path)."""

    def __init__(self, address: str, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.address = address
        self._addr = Address.parse(address)
        self._max = max_message_size
        self._conns: dict[str, _Conn] = {}

    async def _open_one(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._addr.scheme == "unix":
            return await asyncio.open_unix_connection(self._addr.path, limit=1 << 22)
        return await asyncio.open_connection(self._addr.host, self._addr.port, limit=1 << 22)

    async def connect(self, timeout: float = 30.0) -> None:
        """Open the four connections, retrying while the app process is still starting."""
        deadline = time.monotonic() + timeout
        for name in CONNECTIONS:
            while True:
                try:
                    reader, writer = await self._open_one()
                    break
                except (ConnectionError, FileNotFoundError, OSError):
                    if time.monotonic() > deadline:
                        raise AbciClientError(f"cannot connect to ABCI app at {self.address}") from None
                    await asyncio.sleep(0.05)
            self._conns[name] = _Conn(name, reader, writer, self._max)

    @property
    def connected(self) -> bool:
        return bool(self._conns)

    async def request(self, conn_name: str, req: abci.Request) -> abci.Response:
        """Send one request followed by Flush; return its response (after the Flush answer)."""
        return (await self.request_many(conn_name, [req]))[0]

    async def request_many(self, conn_name: str, reqs: Sequence[abci.Request]) -> list[abci.Response]:
        """Pipeline `reqs` then one Flush on `conn_name`; return the responses in order."""
        conn = self._conns.get(conn_name)
        if conn is None:
            raise AbciClientError(f"no {conn_name!r} connection (connect() first)")
        async with conn.lock:
            payload = b"".join(encode_frame(r.SerializeToString()) for r in reqs) + _FLUSH_FRAME
            conn.writer.write(payload)
            await conn.writer.drain()
            out: list[abci.Response] = []
            for req in reqs:
                resp = await conn.read_response()
                want = req.WhichOneof("value")
                got = resp.WhichOneof("value")
                if got != want:
                    raise AbciClientError(f"{conn_name}: expected {want} response, got {got}")
                out.append(resp)
            flush = await conn.read_response()
            if flush.WhichOneof("value") != "flush":
                raise AbciClientError(f"{conn_name}: expected flush response, got {flush.WhichOneof('value')}")
            return out

    async def call(self, method: str, msg: Message) -> Message:
        """Typed convenience: `await client.call("info", RequestInfo(...))` -> ResponseInfo."""
        req = abci.Request()
        getattr(req, method).CopyFrom(msg)
        resp = await self.request(connection_for(method), req)
        return cast(Message, getattr(resp, method))

    async def close(self) -> None:
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            conn.writer.close()
        for conn in conns.values():
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
