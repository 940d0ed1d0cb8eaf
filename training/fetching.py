"""Streaming a URI someone else named: size-capped, address-checked, rate- and time-bounded.

docs/artifacts.md "Fetching from strangers". `stream_uri` feeds the bytes at a `file://` or
`http(s)://` URI to a callback; `training.artifacts.fetch`/`fetch_bytes` add the digest check
and the destination. What each guard is for:

* **Addresses** (`training.netguard`): every hop's host is resolved once here and must be public
  unless the operator allowed private networks; the connection then goes to *those* addresses
  (a network backend that ignores the name it is given), while the Host header and the TLS
  certificate check still use the host name. A second DNS answer cannot redirect the socket.
* **Redirects**: followed by hand, at most `NetPolicy.max_redirects`, each hop re-checked
  (scheme, host, address); https → http is refused, so a TLS download never continues in clear.
* **Rate and deadline**: every socket read is given at most the time until the next moment the
  transfer would be too slow (`min_rate_bps` averaged since the first connect, after a grace) or
  past `deadline`, so a server that drips a byte just before each read timeout is cut off on
  time. Everything runs in the caller's thread: when an error is raised, nothing is left running.
* **Size**: the declared Content-Length is checked first and the cap is enforced while
  streaming; ``Accept-Encoding: identity`` and raw reads mean nothing is ever inflated.
"""

from __future__ import annotations

import base64
import dataclasses
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpcore

from training.artifact_errors import ArtifactError, TooLarge, TooSlow
from training.netguard import IPAddress, NetPolicy, checked_addresses

READ_CHUNK = 4 << 20
RATE_GRACE_S = 5.0
"""Seconds before `min_rate_bps` applies: connection set-up and TCP slow start are not slowness."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Budget:
    """The time a transfer may still take: a fixed deadline and a minimum average rate."""

    def __init__(self, deadline: float | None, min_rate_bps: float, grace: float) -> None:
        self.start = time.monotonic()
        self.deadline = deadline
        self.min_rate_bps = min_rate_bps
        self.grace = grace
        self.received = 0

    def until(self) -> float | None:
        """The monotonic time by which more bytes must have arrived (None: no limit)."""
        limits = []
        if self.deadline is not None:
            limits.append(self.deadline)
        if self.min_rate_bps > 0:
            # Average rate received/elapsed drops below the minimum at start + received/rate.
            limits.append(self.start + max(self.grace, self.received / self.min_rate_bps))
        return min(limits) if limits else None

    def over(self) -> bool:
        """Whether the transfer is already over its time."""
        until = self.until()
        return until is not None and time.monotonic() >= until

    def check(self) -> None:
        """Raise TooSlow if the transfer is already over its time."""
        if self.over():
            raise self.too_slow()

    def clamp(self, timeout: float | None) -> float | None:
        """`timeout` shortened to what is left; TooSlow if nothing is."""
        until = self.until()
        if until is None:
            return timeout
        left = until - time.monotonic()
        if left <= 0:
            raise self.too_slow()
        return left if timeout is None else min(timeout, left)

    def too_slow(self) -> TooSlow:
        elapsed = time.monotonic() - self.start
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return TooSlow(f"download ran past its deadline ({self.received} bytes in "
                           f"{elapsed:.1f} s)")
        return TooSlow(f"download too slow: {self.received} bytes in {elapsed:.1f} s, under the "
                       f"minimum of {self.min_rate_bps:.0f} B/s")


class _BudgetedStream(httpcore.NetworkStream):
    """A socket stream whose every read and write fits the transfer's budget."""

    def __init__(self, inner: httpcore.NetworkStream, budget: _Budget) -> None:
        self._inner = inner
        self._budget = budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            data = self._inner.read(max_bytes, self._budget.clamp(timeout))
        except httpcore.ReadTimeout:
            if self._budget.over():  # our own limit, not the server's read timeout: say so
                raise self._budget.too_slow() from None
            raise
        self._budget.received += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._budget.clamp(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, self._budget.clamp(timeout))
        return _BudgetedStream(tls, self._budget)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.SyncBackend):
    """Connects to the checked addresses only, whatever host name httpcore asks for."""

    def __init__(self, addresses: Iterable[IPAddress], budget: _Budget) -> None:
        self._addresses = list(addresses)
        self._budget = budget

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        last: Exception | None = None
        for ip in self._addresses:
            try:
                inner = super().connect_tcp(str(ip), port, self._budget.clamp(timeout),
                                            local_address, socket_options)
            except httpcore.ConnectTimeout:
                if self._budget.over():
                    raise self._budget.too_slow() from None
                raise
            except httpcore.ConnectError as exc:
                last = exc
                continue
            return _BudgetedStream(inner, self._budget)
        raise last if last is not None else httpcore.ConnectError("no address to connect to")


@dataclasses.dataclass(frozen=True)
class _Hop:
    """One checked request target: the URL as sent, and the addresses it may reach."""

    scheme: str
    host: str
    port: int
    target: str
    auth: str | None
    addresses: list[IPAddress]


def _check_hop(url: str, policy: NetPolicy, previous_scheme: str | None) -> _Hop:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ArtifactError(f"refusing {url[:80]!r}: only http(s) is fetched over the network")
    if previous_scheme == "https" and scheme == "http":
        raise ArtifactError(f"refusing redirect from https to plain http ({url[:80]!r})")
    try:
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        host = host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise ArtifactError(f"refusing {url[:80]!r}: bad host or port ({exc})") from None
    if not host:
        raise ArtifactError(f"refusing {url[:80]!r}: no host")
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(pair).decode("ascii")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Hop(scheme, host, port, target, auth,
                checked_addresses(host, port, policy))


def _ssl_context(policy: NetPolicy) -> ssl.SSLContext:
    if policy.ssl_context is not None:
        return policy.ssl_context
    import httpx  # its certifi-backed default trust store

    return httpx.create_ssl_context()


_HTTP_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                httpcore.UnsupportedProtocol, ssl.SSLError, OSError)


def _stream_http(uri: str, max_bytes: int, timeout: float, consume: Callable[[bytes], None],
                 policy: NetPolicy, budget: _Budget) -> None:
    url, previous = uri, None
    for _ in range(policy.max_redirects + 1):
        hop = _check_hop(url, policy, previous)
        budget.check()
        # Host written here: httpcore leaves the brackets off an IPv6 literal.
        authority = f"[{hop.host}]" if ":" in hop.host else hop.host
        if hop.port != (443 if hop.scheme == "https" else 80):
            authority += f":{hop.port}"
        headers = [("Host", authority), ("Accept-Encoding", "identity"),
                   ("User-Agent", "dlbc-fetch")]
        if hop.auth is not None:
            headers.append(("Authorization", hop.auth))
        conn = httpcore.HTTPConnection(
            origin=httpcore.Origin(hop.scheme.encode(), hop.host.encode(), hop.port),
            ssl_context=_ssl_context(policy) if hop.scheme == "https" else None,
            network_backend=_PinnedBackend(hop.addresses, budget),
        )
        try:
            url_obj = httpcore.URL(scheme=hop.scheme.encode(), host=hop.host.encode(),
                                   port=hop.port, target=hop.target.encode())
            with conn.stream("GET", url_obj, headers=headers,
                             extensions={"timeout": {"connect": timeout, "read": timeout,
                                                     "write": timeout, "pool": timeout}}) as resp:
                if resp.status in _REDIRECTS:
                    location = _header(resp.headers, b"location")
                    if location is None:
                        raise ArtifactError(f"GET {url[:80]}: HTTP {resp.status} without Location")
                    url, previous = urljoin(url, location), hop.scheme
                    continue
                if resp.status != 200:
                    raise ArtifactError(f"GET {url[:80]}: HTTP {resp.status}")
                declared = _header(resp.headers, b"content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise TooLarge(f"{uri[:80]} declares {declared} bytes, over the cap of "
                                   f"{max_bytes}")
                for chunk in resp.iter_stream():
                    consume(chunk)
                    budget.check()
                return
        except _HTTP_ERRORS as exc:
            raise ArtifactError(f"GET {url[:80]} failed: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
    raise ArtifactError(f"GET {uri[:80]}: more than {policy.max_redirects} redirects")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _file_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ArtifactError(f"file:// URI with a remote host is not supported: {uri!r}")
    path = Path(unquote(parts.path))
    if not path.is_file():
        raise ArtifactError(f"no such file: {path}")
    return path


def _iter_file(path: Path) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


def stream_uri(
    uri: str, consume: Callable[[bytes], None], *, max_bytes: int, timeout: float = 30.0,
    policy: NetPolicy | None = None, min_rate_bps: float = 0, deadline: float | None = None,
    rate_grace_s: float = RATE_GRACE_S,
) -> None:
    """Feed the bytes at `uri` to `consume`, raising TooLarge as soon as the cap is passed.

    `timeout` bounds each connect and each read; `deadline` (a `time.monotonic()` value) bounds
    the whole transfer, redirects included; `min_rate_bps` aborts a transfer whose average rate
    since the first connect is below it once `rate_grace_s` have passed.
    """
    policy = policy or NetPolicy()
    budget = _Budget(deadline, min_rate_bps, rate_grace_s)
    budget.check()
    total = 0

    def take(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"{uri[:80]} is larger than the cap of {max_bytes} bytes")
        consume(chunk)

    scheme = urlsplit(uri).scheme.lower()
    if scheme == "file":
        path = _file_path(uri)
        if path.stat().st_size > max_bytes:
            raise TooLarge(f"{uri} is {path.stat().st_size} bytes, over the cap of {max_bytes}")
        for chunk in _iter_file(path):
            take(chunk)
        return
    if scheme in ("http", "https"):
        _stream_http(uri, max_bytes, timeout, take, policy, budget)
        return
    raise ArtifactError(f"unsupported URI scheme in {uri[:80]!r}; use file://, http:// or https://")

