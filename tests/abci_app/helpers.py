"""Shared helpers for the foundation tests: real `python -m abci_app` subprocesses (started by
`dlbc_ops.supervisor`, like every process of the project), in-process servers, raw frames."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from abci_app.application import Application
from abci_app.codec import FrameDecoder, encode_frame
from abci_app.kvstore import HANG_AT_ENV
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.server import AbciServer
from dlbc_ops.supervisor import Child, Supervisor
from tests.support import GENESIS_NS

HANG_AT = HANG_AT_ENV  # kvstore test hook: sleep inside that ABCI call ("" = never)


def block_time(height: int) -> int:
    return GENESIS_NS + height * 1_000_000_000


def app_supervisor(root: Path) -> Supervisor:
    """The project's one launcher for a test's app processes (logs in root/logs/<name>.log);
    `stop()` it in `finally`: every app is stopped, none orphaned."""
    return Supervisor(root / "logs", grace_s=5.0)


def spawn_app(sup: Supervisor, home: Path, address: str, *, name: str | None = None,
              app: str = "kvstore", env: dict[str, str] | None = None,
              log_level: str = "warning", python: str = sys.executable) -> Child:
    """Start a real ABCI app process (kvstore unless told otherwise) as `name` (default: the
    home folder's name; starting an exited name again is a restart)."""
    argv = [python, "-m", "abci_app", "--home", str(home), "--address", address,
            "--app", app, "--log-level", log_level]
    return sup.start(name or home.name, argv, env={HANG_AT: "", **(env or {})})


def txs_for(height: int) -> list[bytes]:
    """Deterministic workload: two sets and one overwrite per height, plus a garbage tx."""
    return [b"k%d=v%d" % (height, height), b"shared=%d" % height, b"no-equals-sign"]


class _Running:
    def __init__(self, server: AbciServer, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread, result: dict[str, int]) -> None:
        self.server, self.loop, self.thread, self.result = server, loop, thread, result

    def connect(self) -> socket.socket:
        addr = self.server.address
        if addr.scheme == "unix":
            s = socket.socket(socket.AF_UNIX)
            s.connect(addr.path)
        else:
            s = socket.create_connection((addr.host, self.server.bound_port or addr.port))
        s.settimeout(10)
        return s


@contextmanager
def running(app: Application, address: str = "tcp://127.0.0.1:0") -> Iterator[_Running]:
    """Serve `app` on a background event loop thread for the duration of the block."""
    server = AbciServer(app, address)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    result: dict[str, int] = {}

    async def main() -> None:
        await server.start()
        started.set()
        try:
            await server.wait_stopped()
        finally:
            await server.stop()
        result["code"] = 1 if server.fatal_error else 0

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield _Running(server, loop, thread, result)
    finally:
        if thread.is_alive():
            asyncio.run_coroutine_threadsafe(server.stop(), loop)
            thread.join(10)
        loop.close()


def roundtrip(sock: socket.socket, reqs: list[abci.Request], *, flush: bool = True) -> list[abci.Response]:
    wire = b"".join(encode_frame(r.SerializeToString()) for r in reqs)
    if flush:
        reqs = [*reqs, abci.Request(flush=abci.RequestFlush())]
        wire += encode_frame(reqs[-1].SerializeToString())
    sock.sendall(wire)
    dec = FrameDecoder()
    got: list[bytes] = []
    while len(got) < len(reqs):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += dec.feed(chunk)
    out = []
    for g in got:
        r = abci.Response()
        r.ParseFromString(g)
        out.append(r)
    return out
