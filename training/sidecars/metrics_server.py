"""Prometheus text endpoint for the sidecars (issue 6, "Metrics for operators").

Operators run miners, verifiers and publishers beside their `cometbft node`; the usual way to watch
such processes is a Prometheus scrape. Pulling in `prometheus_client` for a handful of counters is
not worth a dependency, so this module implements the text exposition format 0.0.4 itself:

    # HELP dlbc_miner_commits_total Models committed on chain.
    # TYPE dlbc_miner_commits_total counter
    dlbc_miner_commits_total 3
    dlbc_miner_errors_total{kind="rpc"} 1

`Metrics` is a thread-safe registry (the sidecar loop writes, the HTTP thread reads);
`MetricsServer` serves `GET /metrics` from a stdlib `ThreadingHTTPServer` in a daemon thread, so a
scrape never blocks a training step. Binding port 0 picks a free port (tests).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Kind = Literal["counter", "gauge"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_label(value: str) -> str:
    # Exposition format: backslash, double quote and newline are escaped inside label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class _Family:
    name: str
    help: str
    kind: Kind
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


class Metrics:
    """A registry of counters and gauges named `<namespace>_<name>`.

    Counters only go up (`inc`); gauges are set (`set`). Labels are plain keyword arguments, e.g.
    `metrics.inc("errors_total", kind="digest")`. Families must be declared before use so that
    a typo is an error instead of a silently new time series.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

    def declare(self, name: str, kind: Kind, help: str) -> None:
        with self._lock:
            if name not in self._families:
                self._families[name] = _Family(f"{self.namespace}_{name}", help, kind)

    def _family(self, name: str, kind: Kind) -> _Family:
        fam = self._families.get(name)
        if fam is None:
            raise KeyError(f"metric {name!r} was not declared on {self.namespace!r}")
        if fam.kind != kind:
            raise TypeError(f"metric {name!r} is a {fam.kind}, not a {kind}")
        return fam

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        key = tuple(sorted(labels.items()))
        with self._lock:
            fam = self._family(name, "counter")
            fam.samples[key] = fam.samples.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._family(name, "gauge").samples[key] = float(value)

    def get(self, name: str, **labels: str) -> float:
        """Current value of one sample (0 when never touched); used by tests and the devnet."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            fam = self._families.get(name)
            return 0.0 if fam is None else fam.samples.get(key, 0.0)

    def total(self, name: str) -> float:
        """Sum over all label sets of one family (e.g. all error kinds)."""
        with self._lock:
            fam = self._families.get(name)
            return 0.0 if fam is None else sum(fam.samples.values())

    def render(self) -> str:
        """The exposition text, families and samples in sorted order (stable scrapes/diffs)."""
        lines: list[str] = []
        with self._lock:
            for key in sorted(self._families):
                fam = self._families[key]
                lines.append(f"# HELP {fam.name} {fam.help}")
                lines.append(f"# TYPE {fam.name} {fam.kind}")
                samples = fam.samples or {(): 0.0}  # an untouched family still shows up as 0
                for labels, value in sorted(samples.items()):
                    if labels:
                        inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                        lines.append(f"{fam.name}{{{inner}}} {_format_value(value)}")
                    else:
                        lines.append(f"{fam.name} {_format_value(value)}")
        return "\n".join(lines) + "\n"


def sidecar_metrics(role: str) -> Metrics:
    """The families every sidecar exposes (issue 6: rounds seen, commits, reveals, verdicts,
    training seconds, wins) plus errors by kind, under the namespace `dlbc_<role>`."""
    m = Metrics(f"dlbc_{role}")
    m.declare("rounds_seen_total", "counter", "Rounds this sidecar has observed on chain.")
    m.declare("commits_total", "counter", "CommitModel transactions accepted by the node.")
    m.declare("reveals_total", "counter", "RevealModel/RevealTestSet transactions accepted.")
    m.declare("verdicts_total", "counter", "Model verdicts written for ExtendVote.")
    m.declare("training_seconds_total", "counter", "Wall-clock seconds spent training.")
    m.declare("wins_total", "counter", "Rounds won by this sidecar's account.")
    m.declare("errors_total", "counter", "Errors handled without stopping, by kind.")
    m.declare("txs_total", "counter", "Transactions broadcast, by message type.")
    m.declare("current_round", "gauge", "Round number last seen on chain.")
    m.declare("balance", "gauge", "Account balance last seen on chain.")
    return m


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics  # set on the subclass built per server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics is served")
            return
        body = self.metrics.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Scrapes every few seconds would drown the sidecar's own log.
        return


class MetricsServer:
    """Serve one `Metrics` registry over HTTP in a daemon thread."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("MetricsHandler", (_Handler,), {"metrics": metrics})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                "pick another --metrics-port (0 = any free port)"
            ) from exc
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"metrics-{metrics.namespace}", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:  # noqa: PYI034 - start() returns self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
