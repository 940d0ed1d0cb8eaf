"""A small read-only HTTP server for artifacts (models, encrypted data sets) on a localnet.

docs/artifacts.md: models and data travel by URI. Miners and publishers host their files with
``dlbc serve-artifacts DIR --port N`` (`dlbc_ops.cli.serve`, or in-process with `ArtifactServer`) and put
``http://host:port/<name>`` on chain; readers check size and SHA-256 themselves
(`training.artifacts.fetch`), so the server needs no authentication — but it must never serve
anything outside its root: ``..`` segments, absolute paths, NUL bytes and symlinks that leave
the root all get 404, with no hint of what exists elsewhere.

GET and HEAD only, regular files only, no directory listings.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)


def resolve_under_root(root: Path, url_path: str) -> Path | None:
    """The regular file `url_path` names inside `root`, or None if it is missing or escapes.

    Checked twice: textually (no `..`, no empty or absolute segments, no NUL or backslash) and
    after resolving symlinks (the real path must stay under the real root).
    """
    raw = unquote(urlsplit(url_path).path)
    if "\x00" in raw or "\\" in raw:
        return None
    segments = raw.lstrip("/").split("/")
    if not segments or any(s in ("", ".", "..") for s in segments):
        return None
    real_root = root.resolve()
    try:
        candidate = real_root.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(real_root) or not candidate.is_file():
        return None
    return candidate


class _Handler(BaseHTTPRequestHandler):
    server_version = "dlbc-artifacts/1"
    root: Path  # set on the per-server subclass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        path = resolve_under_root(self.root, self.path)
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the `with f` below
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return
        with f:
            size = path.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                try:
                    # Zero-copy where the OS allows; socket.sendfile falls back to send().
                    self.connection.sendfile(f)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (e.g. its size cap fired); not our problem

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class ArtifactServer:
    """Serve `root` over HTTP from a background thread; `port=0` picks a free port.

    Usable as a context manager: ``with ArtifactServer(d) as srv: fetch(srv.url_for("m"), ...)``.
    """

    def __init__(self, root: str | Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"artifact root {self.root} is not a directory")
        handler = type("ArtifactHandler", (_Handler,), {"root": self.root.resolve()})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_for(self, relpath: str | Path) -> str:
        """The URL of a file given relative to the root (or as an absolute path inside it)."""
        p = Path(relpath)
        if p.is_absolute():
            p = p.resolve().relative_to(self.root.resolve())
        return f"{self.base_url}/{quote(p.as_posix())}"

    def start(self) -> ArtifactServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                name="artifact-server", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the CLI)."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
