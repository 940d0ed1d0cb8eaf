"""asyncio ABCI socket server: CometBFT's four connections, each strictly in order.

Layering (STYLE): this module does sockets only; framing is `codec.FrameDecoder`, translation
of a Request into an app call is `connections.handle`.

Concurrency: every application call runs on the event loop's thread itself, inside the
connection protocol's `data_received`, one batch at a time. So consensus, mempool, query and
snapshot calls never interleave inside the app (no app-level locking needed). Each connection
answers *every frame it has read so far* as one batch and writes the batch's responses in
order before reading on; that keeps responses strictly ordered per connection and amortises
the system calls when CometBFT pipelines many CheckTx before a Flush. Flush is satisfied
because every batch's responses are written before the next read (and reading pauses while
the peer does not take our answers). Why no worker thread and no stream reader task: the
app can serve one call at a time anyway, frames that arrive meanwhile wait in the kernel's
socket buffer just as they waited for a worker, and the thread hops and per-read futures cost
more CPU than a whole CheckTx of the app when CometBFT sends one or two CheckTx per write
(bench/cometbft_throughput.py; about 115, 70 and 40 us of server CPU per echo round trip for
worker thread, stream task and plain protocol on the development machine).

Bad input (truncated or absurd frames, garbage protobuf, unknown methods) closes only that
connection, after logging it. An exception of the app in InitChain/FinalizeBlock/Commit/Info
is fatal: `serve()` returns exit code 1 (LMDB still holds the last committed block).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from abci_app.application import Application
from abci_app.codec import DEFAULT_MAX_MESSAGE_SIZE, FrameDecoder, FrameError, encode_uvarint
from abci_app.connections import FatalAppError, UnsupportedRequest, handle
from abci_app.pb.tendermint.abci import types_pb2 as abci

log = logging.getLogger("abci_app.server")
block_log = logging.getLogger("abci_app.blocks")

_FLUSH_REQUEST = abci.Request(flush=abci.RequestFlush()).SerializeToString()
_FLUSH_RESPONSE = abci.Response(flush=abci.ResponseFlush()).SerializeToString()
_FLUSH_RESPONSE_FRAME = encode_uvarint(len(_FLUSH_RESPONSE)) + _FLUSH_RESPONSE


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed listen/dial address: tcp://host:port or unix:///path."""

    scheme: str  # "tcp" | "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Address:
        if text.startswith("unix://"):
            path = text[len("unix://") :]
            if not path:
                raise ValueError(f"empty unix socket path in {text!r}")
            return cls("unix", path=path)
        rest = text.removeprefix("tcp://")
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"address must be tcp://HOST:PORT or unix:///path, got {text!r}")
        return cls("tcp", host=host.strip("[]") or "127.0.0.1", port=int(port))

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.scheme == "unix" else f"tcp://{self.host}:{self.port}"


class _BatchResult:
    __slots__ = ("close_reason", "fatal", "out")

    def __init__(self) -> None:
        self.out = bytearray()
        self.close_reason: str | None = None
        self.fatal: str | None = None


class AbciServer:
    """Serve one `Application` on one address until stopped or a fatal app error."""

    def __init__(
        self,
        app: Application,
        address: str | Address,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.app = app
        self.address = address if isinstance(address, Address) else Address.parse(address)
        self.max_message_size = max_message_size
        self._server: asyncio.base_events.Server | None = None
        self._stopped: asyncio.Event | None = None
        self._transports: set[asyncio.Transport] = set()
        self.fatal_error: str | None = None
        self.bound_port: int | None = None
        # Last FinalizeBlock seen, for the one-line-per-block log at Commit.
        self._last_block: tuple[int, int, bytes] | None = None
        self.connections_served = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self.address.scheme == "unix":
            path = Path(self.address.path)
            if path.exists() or path.is_symlink():
                path.unlink()  # a stale socket from a killed predecessor
            self._server = await loop.create_unix_server(
                lambda: _Connection(self), path=str(path))
        else:
            self._server = await loop.create_server(
                lambda: _Connection(self), host=self.address.host, port=self.address.port,
                reuse_address=True,
            )
            sock = self._server.sockets[0]
            self.bound_port = int(sock.getsockname()[1])
        log.info("ABCI server listening on %s", self.listen_address)

    @property
    def listen_address(self) -> str:
        if self.address.scheme == "tcp" and self.bound_port is not None:
            return f"tcp://{self.address.host}:{self.bound_port}"
        return str(self.address)

    async def wait_stopped(self) -> None:
        if self._stopped is None:
            raise RuntimeError("server not started")
        await self._stopped.wait()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._transports):
            t.close()
        if self._stopped is not None:
            self._stopped.set()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self.address.scheme == "unix":
            with contextlib.suppress(OSError):
                Path(self.address.path).unlink()

    async def serve(self) -> int:
        """Run until stopped; return the process exit code (1 after a fatal app error)."""
        await self.start()
        try:
            await self.wait_stopped()
        finally:
            await self.stop()
        return 1 if self.fatal_error else 0

    # -- per connection ----------------------------------------------------------------------
    def _process(self, payloads: list[bytes]) -> _BatchResult:
        """Decode and answer a batch of frames in order (on the event loop's thread)."""
        result = _BatchResult()
        out = result.out
        app = self.app
        for payload in payloads:
            if payload == _FLUSH_REQUEST:  # half of CometBFT's frames: answered without parsing
                out += _FLUSH_RESPONSE_FRAME
                continue
            req = abci.Request()
            try:
                req.ParseFromString(payload)
                resp = handle(app, req)
            except DecodeError as exc:
                result.close_reason = f"undecodable protobuf Request ({len(payload)} bytes): {exc}"
                return result
            except UnsupportedRequest as exc:
                result.close_reason = str(exc)
                return result
            except FatalAppError as exc:
                result.fatal = str(exc)
                return result
            method = req.WhichOneof("value")
            if method == "finalize_block":
                fb = req.finalize_block
                self._last_block = (fb.height, len(fb.txs), resp.finalize_block.app_hash)
            elif method == "commit" and self._last_block is not None:
                height, ntx, app_hash = self._last_block
                block_log.info("committed height=%d txs=%d app_hash=%s", height, ntx, app_hash.hex()[:16])
                self._last_block = None
            body = resp.SerializeToString()
            out += encode_uvarint(len(body))
            out += body
        return result

    def _on_fatal(self, reason: str) -> None:
        if self.fatal_error is None:
            self.fatal_error = reason
            log.critical("fatal application error, stopping: %s", reason)
        if self._stopped is not None:
            self._stopped.set()


class _Connection(asyncio.Protocol):
    """One ABCI connection: frames in, the batch's responses out, strictly in order.

    A plain protocol, not streams: each read is answered inside `data_received` itself, which
    costs a fraction of a reader task's per-read machinery (futures, wake-ups), and CometBFT's
    mempool connection sends one or two CheckTx per write. Back-pressure as with `drain()`:
    while the peer does not read our answers (transport above its high-water mark) we stop
    reading its requests."""

    def __init__(self, server: AbciServer) -> None:
        self.server = server
        self.decoder = FrameDecoder(server.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer: object = "unix"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername") or "unix"
        self.server._transports.add(transport)
        self.server.connections_served += 1
        log.debug("connection from %s", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("connection from %s dropped: %s", self.peer, exc)
        if self.transport is not None:
            self.server._transports.discard(self.transport)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        server = self.server
        if transport is None or transport.is_closing():
            return
        if server.fatal_error is not None:
            transport.close()
            return
        try:
            payloads = self.decoder.feed(data)
        except FrameError as exc:
            log.warning("closing ABCI connection from %s: bad frame: %s", self.peer, exc)
            transport.close()
            return
        if not payloads:
            return
        result = server._process(payloads)
        if result.out:
            transport.write(result.out)
        if result.fatal is not None:
            server._on_fatal(result.fatal)
            transport.close()
        elif result.close_reason is not None:
            log.warning("closing ABCI connection from %s: %s", self.peer, result.close_reason)
            transport.close()


