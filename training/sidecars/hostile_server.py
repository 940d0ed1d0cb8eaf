"""An artifact server that misbehaves the ways a hostile miner's does (issue 13 "Verifier"), for
the verifier's tests and `bench/verifier.py`, as `watermark/attacks.py` is for the watermark.

One threaded HTTP server on 127.0.0.1 serving the files of a folder under three prefixes:

* ``/files/<name>``: the file, at full speed (honest servers, digest mismatches, pickles,
  truncated files and lying claims are all served like this: the file is what is hostile);
* ``/drip/<name>``: the true Content-Length, then one byte every `drip_seconds` (a slow drip
  that would hold a download for hours);
* ``/huge/<name>``: a Content-Length of 1 TiB, then the file (a declared size over any cap).

Every handler thread ends when the server is closed (the drip loop waits on a stop event), so a
test that closes it leaves no thread behind.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

HUGE = 1 << 40


class HostileServer:
    def __init__(self, root: Path, *, drip_seconds: float = 1.0) -> None:
        self.root = Path(root)
        self.drip_seconds = drip_seconds
        self.stop = threading.Event()
        self.requests: dict[str, int] = {}
        """Path -> how many GETs it got (a reveal the verifier never fetched reads 0)."""
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._count(self.path)
                server._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="hostile-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url_for(self, kind: str, name: str) -> str:
        """`kind` is "files", "drip" or "huge"."""
        return f"{self.url}/{kind}/{name}"

    def _count(self, path: str) -> None:
        with self._lock:
            self.requests[path] = self.requests.get(path, 0) + 1
            self._threads.append(threading.current_thread())

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = h.path.lstrip("/").split("/", 1)
        if len(parts) != 2 or "/" in parts[1] or parts[1].startswith("."):
            h.send_error(404)
            return
        kind, name = parts
        path = self.root / name
        if kind not in ("files", "drip", "huge") or not path.is_file():
            h.send_error(404)
            return
        data = path.read_bytes()
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(HUGE if kind == "huge" else len(data)))
        h.end_headers()
        try:
            if kind != "drip":
                h.wfile.write(data)
                return
            for i in range(len(data)):
                if self.stop.wait(self.drip_seconds):
                    return
                h.wfile.write(data[i:i + 1])
                h.wfile.flush()
        except OSError:
            return  # the client gave up: exactly what the verifier should do

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        with self._lock:
            handlers = list(self._threads)
        for t in handlers:
            if t is not threading.current_thread():
                t.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
