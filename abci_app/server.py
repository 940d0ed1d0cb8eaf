"""asyncio ABCI socket server: CometBFT's four connections, each strictly in order.

Layering (STYLE): this module does sockets only; framing is `codec.FrameDecoder`, translation
of a Request into an app call is `connections.handle`.

Concurrency: every connection gets its own reader task, but all application calls run on ONE
worker thread. So consensus, mempool, query and snapshot calls never interleave inside the
app (no app-level locking needed), while the event loop stays free to accept and read. Each
connection hands the worker *every frame it has read so far* as one batch and writes the
batch's responses in order before reading on; that keeps responses strictly ordered per
connection and amortises the thread hop when CometBFT pipelines many CheckTx before a Flush.
Flush is satisfied because every batch's responses are written and drained before the next read.

Bad input (truncated or absurd frames, garbage protobuf, unknown methods) closes only that
connection, after logging it. An exception of the app in InitChain/FinalizeBlock/Commit/Info
is fatal: `serve()` returns exit code 1 (LMDB still holds the last committed block).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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

_READ_CHUNK = 1 << 16


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
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="abci-app")
        self._server: asyncio.base_events.Server | None = None
        self._stopped: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.fatal_error: str | None = None
        self.bound_port: int | None = None
        # Last FinalizeBlock seen, for the one-line-per-block log at Commit.
        self._last_block: tuple[int, int, bytes] | None = None
        self.connections_served = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopped = asyncio.Event()
        if self.address.scheme == "unix":
            path = Path(self.address.path)
            if path.exists() or path.is_symlink():
                path.unlink()  # a stale socket from a killed predecessor
            self._server = await asyncio.start_unix_server(self._serve_conn, path=str(path))
        else:
            self._server = await asyncio.start_server(
                self._serve_conn, host=self.address.host, port=self.address.port,
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
        for w in list(self._writers):
            w.close()
        if self._stopped is not None:
            self._stopped.set()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self._worker.shutdown(wait=False, cancel_futures=True)
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
    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or "unix"
        self._writers.add(writer)
        self.connections_served += 1
        decoder = FrameDecoder(self.max_message_size)
        loop = asyncio.get_running_loop()
        log.debug("connection from %s", peer)
        try:
            while self.fatal_error is None:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    break
                try:
                    payloads = decoder.feed(data)
                except FrameError as exc:
                    log.warning("closing ABCI connection from %s: bad frame: %s", peer, exc)
                    break
                if not payloads:
                    continue
                result = await loop.run_in_executor(self._worker, self._process, payloads)
                if result.out:
                    writer.write(result.out)
                    await writer.drain()
                if result.fatal is not None:
                    await self._on_fatal(result.fatal)
                    break
                if result.close_reason is not None:
                    log.warning("closing ABCI connection from %s: %s", peer, result.close_reason)
                    break
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("connection from %s dropped: %s", peer, exc)
        except RuntimeError as exc:  # executor shut down while stopping
            log.debug("connection from %s ended: %s", peer, exc)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _process(self, payloads: list[bytes]) -> _BatchResult:
        """Worker thread: decode and answer a batch of frames in order."""
        result = _BatchResult()
        out = result.out
        app = self.app
        for payload in payloads:
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

    async def _on_fatal(self, reason: str) -> None:
        if self.fatal_error is None:
            self.fatal_error = reason
            log.critical("fatal application error, stopping: %s", reason)
        if self._stopped is not None:
            self._stopped.set()


