"""Prometheus endpoint for the sidecars (issue 6, "Metrics for operators"), on `prometheus_client`.

Operators run miners, verifiers and publishers beside their `cometbft node`; the usual way to watch
such processes is a Prometheus scrape of `GET /metrics`:

    # HELP dlbc_miner_commits_total CommitModel transactions accepted by the node.
    # TYPE dlbc_miner_commits_total counter
    dlbc_miner_commits_total 3.0
    dlbc_miner_errors_total{kind="rpc"} 1.0

`Metrics` is one sidecar's registry: its own `CollectorRegistry` (several sidecars share a process
in `dlbc devnet` and the tests, so the global default registry would mix them), with families
declared up front so a typo is an error instead of a silently new time series. `MetricsServer`
serves it from a daemon thread, so a scrape never blocks a training step; port 0 picks a free
port (tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

Kind = Literal["counter", "gauge"]

#: What a plain scrape (no OpenMetrics Accept header) gets: the text format 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# `<name>_created` timestamps per counter double a scrape for nothing an operator reads.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """A registry of counters and gauges named `<namespace>_<name>`.

    Counters only go up (`inc`); gauges are set (`set`). Labels are keyword arguments, e.g.
    `metrics.inc("errors_total", kind="digest")`, and must be the ones `declare` named.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}

    def declare(self, name: str, kind: Kind, help: str, labels: Sequence[str] = ()) -> None:
        full = f"{self.namespace}_{name}"
        with self._lock:
            if name in self._counters or name in self._gauges:
                return
            if kind == "counter":
                self._counters[name] = Counter(full, help, labels, registry=self.registry)
            else:
                self._gauges[name] = Gauge(full, help, labels, registry=self.registry)

    def _undeclared(self, name: str, kind: Kind) -> Exception:
        if name in self._counters or name in self._gauges:
            return TypeError(f"metric {name!r} is not a {kind}")
        return KeyError(f"metric {name!r} was not declared on {self.namespace!r}")

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        counter = self._counters.get(name)
        if counter is None:
            raise self._undeclared(name, "counter")
        if amount < 0:
            raise ValueError("counters only go up")
        (counter.labels(**labels) if labels else counter).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        gauge = self._gauges.get(name)
        if gauge is None:
            raise self._undeclared(name, "gauge")
        (gauge.labels(**labels) if labels else gauge).set(value)

    def get(self, name: str, **labels: str) -> float:
        """Current value of one sample (0 when never touched); used by tests and the devnet."""
        value = self.registry.get_sample_value(f"{self.namespace}_{name}", labels)
        return 0.0 if value is None else value

    def total(self, name: str) -> float:
        """Sum over all label sets of one family (e.g. all error kinds)."""
        sample = f"{self.namespace}_{name}"
        return sum(s.value for fam in self.registry.collect() for s in fam.samples
                   if s.name == sample)

    def render(self) -> str:
        """The exposition text, as a scrape sees it."""
        return prometheus_client.generate_latest(self.registry).decode()


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
    m.declare("errors_total", "counter", "Errors handled without stopping, by kind.", ["kind"])
    m.declare("txs_total", "counter", "Transactions broadcast, by message type.", ["type"])
    m.declare("current_round", "gauge", "Round number last seen on chain.")
    m.declare("balance", "gauge", "Account balance last seen on chain.")
    return m


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return  # scrapes every few seconds would drown the sidecar's own log


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _metrics_only(app: WsgiApp) -> WsgiApp:
    """`/metrics` (and `/`) only; anything else is a 404, so a wrong scrape path shows up."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics is served\n"]
        return app(environ, start_response)

    return serve


class MetricsServer:
    """Serve one `Metrics` registry over HTTP in a daemon thread."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            self._httpd = make_server(host, port, _metrics_only(make_wsgi_app(metrics.registry)),
                                      _ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                "pick another --metrics-port (0 = any free port)"
            ) from exc
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"metrics-{metrics.namespace}", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._httpd.server_address[0]!s}:{self.port}/metrics"

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
