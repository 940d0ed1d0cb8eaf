"""HTTP + websocket JSON-RPC server on asyncio streams: CometBFT's RPC transport for the dev node.

Why: clients (our sidecars, curl, any CometBFT tooling) must not care whether they talk to the
dev node or a real `cometbft node` (docs/processes.md, docs/wire.md). This module only moves bytes
and translates JSON-RPC into calls on a method table; the node implements the methods.

Served: JSON-RPC 2.0 on `POST /`; URI form `GET /<method>?k=v` (strings quoted, bytes `0x…`);
`GET /websocket` with `subscribe` / `unsubscribe` / `unsubscribe_all` and every other method.
HTTP/1.1 keep-alive; request sizes are capped; a bad request gets an error answer and the server
keeps serving. The websocket protocol itself (handshake, framing, masking, ping/pong, close) is
the `websockets` library's I/O-free `ServerProtocol`; this module only moves its bytes. The HTTP
side stays here because no library serves JSON-RPC POSTs and websocket upgrades on one asyncio
port without a framework (`websockets`' own server answers GET only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from dlbc_ops.devnode.events import EventBus, Subscriber
from dlbc_ops.devnode.rpc_json import Query, QuerySyntaxError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

# JSON-RPC 2.0 error codes, as CometBFT uses them
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024  # > mempool max_tx_bytes in base64
MAX_SUBSCRIPTIONS_PER_CLIENT = 10

# URI-form parameters that are []byte in CometBFT (0x-hex on the URI, base64 in JSON)
_BYTES_PARAMS = frozenset({"tx", "hash"})


class RpcFault(Exception):
    """An error answer: (code, message, data) exactly as put in the JSON-RPC `error` object."""

    def __init__(self, code: int, message: str, data: str = "") -> None:
        super().__init__(f"{code} {message}: {data}")
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.data}


def internal(data: str) -> RpcFault:
    return RpcFault(INTERNAL_ERROR, "Internal error", data)


def invalid_params(data: str) -> RpcFault:
    return RpcFault(INVALID_PARAMS, "Invalid params", data)


def uri_params(query: str) -> dict[str, Any]:
    """URI form → JSON-RPC params: `"str"` unquoted, `0xHEX` bytes → base64 (or hex for data)."""
    out: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        value: Any = raw
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            value = raw[1:-1]
            if key in _BYTES_PARAMS:  # tx="k=v": the quoted string's bytes
                value = base64.b64encode(value.encode()).decode()
        elif raw.lower().startswith("0x"):
            hexpart = raw[2:]
            if key in _BYTES_PARAMS:
                try:
                    value = base64.b64encode(bytes.fromhex(hexpart)).decode()
                except ValueError:
                    raise invalid_params(f"{key}: bad hex") from None
            else:
                value = hexpart
        elif raw in ("true", "false"):
            value = raw == "true"
        out[key] = value
    return out


class RpcServer:
    """Serves `methods` (name -> async handler(params) -> result) and `/websocket` events."""

    def __init__(self, methods: Mapping[str, Handler], bus: EventBus) -> None:
        self.methods = dict(methods)
        self.bus = bus
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._on_conn, host, port, limit=MAX_HEADER_BYTES)
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task

    # -- dispatch

    async def dispatch(self, req: Any) -> dict[str, Any] | None:
        """One JSON-RPC request object → response object (None for notifications)."""
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or "method" not in req:
            rid = req.get("id") if isinstance(req, dict) else None
            return _error(rid, RpcFault(INVALID_REQUEST, "Invalid Request", "not a JSON-RPC 2.0 request"))
        rid = req.get("id")
        method = req.get("method")
        params = req.get("params") or {}
        if not isinstance(params, dict):
            return _error(rid, invalid_params("params must be an object"))
        handler = self.methods.get(method) if isinstance(method, str) else None
        if handler is None:
            return _error(rid, RpcFault(METHOD_NOT_FOUND, "Method not found", str(method)))
        try:
            result = await handler(params)
        except RpcFault as fault:
            return _error(rid, fault)
        except Exception as exc:  # never let one bad call take the server down
            log.exception("rpc %s failed", method)
            return _error(rid, internal(f"{type(exc).__name__}: {exc}"))
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    # -- HTTP

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve_http(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("rpc connection failed")
        finally:
            self._conns.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                await _respond(writer, 431, b'{"error":"request headers too large"}', close=True)
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                await _respond(writer, 400, b'{"error":"bad request line"}', close=True)
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            parts = urlsplit(target)

            if parts.path == "/websocket" and headers.get("upgrade", "").lower() == "websocket":
                await self._serve_websocket(reader, writer, head)
                return

            body = b""
            if method == "POST":
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    await _respond(writer, 411, b'{"error":"chunked bodies not supported"}', close=True)
                    return
                try:
                    length = int(headers.get("content-length", "0"))
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY_BYTES:
                    await _respond(writer, 413, b'{"error":"body too large or bad length"}', close=True)
                    return
                body = await reader.readexactly(length)
                answer = await self._answer_post(body)
            elif method == "GET":
                answer = await self._answer_get(parts.path, parts.query)
            else:
                await _respond(writer, 405, b'{"error":"method not allowed"}', close=not keep_alive)
                if not keep_alive:
                    return
                continue
            status, payload = answer
            await _respond(writer, status, payload, close=not keep_alive)
            if not keep_alive:
                return

    async def _answer_post(self, body: bytes) -> tuple[int, bytes]:
        try:
            req = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return 200, _dumps(_error(None, RpcFault(PARSE_ERROR, "Parse error", str(exc))))
        if isinstance(req, list):  # batch
            if not req or len(req) > 100:
                return 200, _dumps(_error(None, RpcFault(INVALID_REQUEST, "Invalid Request", "batch of 1..100")))
            answers = [a for a in [await self.dispatch(r) for r in req] if a is not None]
            return 200, _dumps(answers)
        return 200, _dumps(await self.dispatch(req))

    async def _answer_get(self, path: str, query: str) -> tuple[int, bytes]:
        name = unquote(path.strip("/"))
        if not name:
            listing = {"methods": sorted(self.methods), "websocket": "/websocket"}
            return 200, _dumps(listing)
        try:
            params = uri_params(query)
        except RpcFault as fault:
            return 200, _dumps(_error(-1, fault))
        return 200, _dumps(await self.dispatch({"jsonrpc": "2.0", "id": -1, "method": name, "params": params}))

    # -- websocket

    async def _serve_websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        proto = ServerProtocol(max_size=MAX_BODY_BYTES)
        proto.receive_data(head)  # the upgrade request we already read
        request = proto.events_received()[0]
        assert isinstance(request, Request)
        response = proto.accept(request)  # a bad handshake gets the library's 400/426 answer
        proto.send_response(response)
        ws = _WsConn(writer, proto)
        await ws.flush()
        if proto.state is not State.OPEN:
            return
        subs: dict[str, tuple[Subscriber, asyncio.Task[None]]] = {}
        fragments = bytearray()
        try:
            while proto.state is State.OPEN:
                chunk = await reader.read(65536)
                if chunk:
                    proto.receive_data(chunk)
                else:
                    proto.receive_eof()
                for event in proto.events_received():
                    if not isinstance(event, Frame) or event.opcode not in _DATA_OPCODES:
                        continue  # ping/pong/close: the protocol answers them itself
                    fragments += event.data
                    if len(fragments) > MAX_BODY_BYTES:
                        proto.fail(1009, "message too big")
                        break
                    if event.fin:
                        payload, fragments = bytes(fragments), bytearray()
                        await self._ws_request(ws, payload, subs)
                await ws.flush()  # pongs, close replies, protocol-error closes
        finally:
            for sub, pump in subs.values():
                self.bus.unsubscribe(sub)
                pump.cancel()

    async def _ws_request(
        self, ws: _WsConn, payload: bytes, subs: dict[str, tuple[Subscriber, asyncio.Task[None]]]
    ) -> None:
        try:
            req = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            await ws.send_json(_error(None, RpcFault(PARSE_ERROR, "Parse error", str(exc))))
            return
        if not isinstance(req, dict):
            await ws.send_json(_error(None, RpcFault(INVALID_REQUEST, "Invalid Request", "")))
            return
        method, rid = req.get("method"), req.get("id")
        params = req.get("params") or {}
        if method == "subscribe":
            qtext = params.get("query") if isinstance(params, dict) else None
            try:
                if not isinstance(qtext, str):
                    raise QuerySyntaxError("params.query (string) is required")
                query = Query.parse(qtext)
            except QuerySyntaxError as exc:
                await ws.send_json(_error(rid, invalid_params(f"failed to parse query: {exc}")))
                return
            if qtext in subs:
                await ws.send_json(_error(rid, internal("already subscribed")))
                return
            if len(subs) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
                await ws.send_json(_error(rid, internal("max_subscriptions_per_client reached")))
                return
            sub = self.bus.subscribe(query)
            await ws.send_json({"jsonrpc": "2.0", "id": rid, "result": {}})
            subs[qtext] = (sub, asyncio.create_task(self._pump(ws, sub, rid)))
        elif method == "unsubscribe":
            qtext = params.get("query") if isinstance(params, dict) else None
            entry = subs.pop(qtext, None) if isinstance(qtext, str) else None
            if entry is None:
                await ws.send_json(_error(rid, internal("subscription not found")))
                return
            self.bus.unsubscribe(entry[0])
            entry[1].cancel()
            await ws.send_json({"jsonrpc": "2.0", "id": rid, "result": {}})
        elif method == "unsubscribe_all":
            for sub, pump in subs.values():
                self.bus.unsubscribe(sub)
                pump.cancel()
            subs.clear()
            await ws.send_json({"jsonrpc": "2.0", "id": rid, "result": {}})
        else:
            answer = await self.dispatch(req)
            if answer is not None:
                await ws.send_json(answer)

    async def _pump(self, ws: _WsConn, sub: Subscriber, rid: Any) -> None:
        try:
            while True:
                msg = await sub.queue.get()
                if msg is None:
                    if sub.cancelled:
                        await ws.send_json(
                            _error(rid, internal(f"subscription was cancelled (reason: {sub.cancelled})"))
                        )
                    return
                await ws.send_json({"jsonrpc": "2.0", "id": rid, "result": msg})
        except (ConnectionError, asyncio.CancelledError):
            return


_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class _WsConn:
    """Serialises writes from the request loop and the subscription pumps onto one socket."""

    def __init__(self, writer: asyncio.StreamWriter, proto: ServerProtocol) -> None:
        self.writer = writer
        self.proto = proto
        self.lock = asyncio.Lock()

    async def flush(self) -> None:
        async with self.lock:
            for data in self.proto.data_to_send():
                if data:  # b"" asks for a half-close; the connection closes right after anyway
                    self.writer.write(data)
            await self.writer.drain()

    async def send_json(self, obj: Any) -> None:
        try:
            self.proto.send_text(_dumps(obj))
        except InvalidState:  # the client is closing: nothing more to say
            raise ConnectionResetError("websocket closing") from None
        await self.flush()


def _error(rid: Any, fault: RpcFault) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": fault.to_json()}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


_REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 411: "Length Required",
            413: "Payload Too Large", 431: "Request Header Fields Too Large"}


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, *, close: bool) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    writer.write(head.encode("ascii") + body)
    await writer.drain()
