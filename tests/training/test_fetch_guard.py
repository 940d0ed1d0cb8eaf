"""Fetching from strangers (docs/artifacts.md): addresses, DNS rebinding, redirects, rate, deadline.

Real sockets and real HTTP(S) servers on loopback throughout. To stand in for "the internet"
without reaching it, tests that need a public server bind it to 127.0.0.2 and inject a
`NetPolicy` whose predicate calls only that address public; the default predicate itself is
unit-tested on addresses below.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from training.artifacts import (
    AddressRefused,
    ArtifactError,
    NetPolicy,
    TooSlow,
    fetch,
    fetch_bytes,
)
from training.netguard import IPAddress, checked_addresses, ip_literal, is_public_address
from training.sidecars.task_inputs import check_remote_uri

BODY = b"the artifact " * 100
DIGEST = hashlib.sha256(BODY).hexdigest()
PUBLIC = ipaddress.ip_address("127.0.0.2")  # "the internet" in these tests


class _Server:
    """A real HTTP server on `host` whose GET handler is a plain function; records every path."""

    def __init__(self, host: str, handler: Callable[[BaseHTTPRequestHandler], None],
                 port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.paths: list[str] = []
        self.hosts: list[str | None] = []
        self.closed_by_peer = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                outer.hosts.append(self.headers.get("Host"))
                try:
                    handler(self)
                except (BrokenPipeError, ConnectionResetError):
                    outer.closed_by_peer.set()

            def log_message(self, *args: object) -> None:
                pass

        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self.httpd = server_class((host, port), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextmanager
def serve(host: str, handler: Callable[[BaseHTTPRequestHandler], None], port: int = 0,
          tls: ssl.SSLContext | None = None) -> Iterator[_Server]:
    srv = _Server(host, handler, port, tls)
    try:
        yield srv
    finally:
        srv.close()


def body(data: bytes = BODY) -> Callable[[BaseHTTPRequestHandler], None]:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    return handle


def redirect(location: str) -> Callable[[BaseHTTPRequestHandler], None]:
    """302 to `location`."""
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return handle


def public_only(resolve: dict[str, list[IPAddress]] | None = None) -> NetPolicy:
    """The strict policy, except that 127.0.0.2 counts as public and names resolve from a table."""
    table = resolve or {}

    def lookup(host: str, port: int) -> list[IPAddress]:
        if host not in table:
            raise ArtifactError(f"cannot resolve host {host!r}")
        return table[host]

    return NetPolicy(resolve=lookup, is_public=lambda ip: ip == PUBLIC)


# --------------------------------------------------------------------------------------------
# The default address policy


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "192.168.1.1",  # loopback, RFC 1918
    "169.254.169.254", "169.254.170.2", "169.254.1.1",                    # metadata, link-local
    "100.64.0.1", "100.100.100.200",                                      # shared (CGNAT), Alibaba
    "0.0.0.0", "0.1.2.3", "255.255.255.255", "240.0.0.1",                 # unspecified, reserved
    "224.0.0.1", "239.255.255.250",                                       # multicast
    "192.0.2.1", "198.18.0.1", "192.0.0.8",                               # documentation, benchmark
    "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "fec0::1",        # IPv6 local forms
    "ff02::1", "ff0e::1", "2001:db8::1",                                  # multicast, documentation
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",      # IPv4-mapped
    "2002:7f00:1::1", "2002:a9fe:a9fe::1",                                # 6to4 of private
    "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "::127.0.0.1", "::8.8.8.8",    # NAT64, IPv4-compatible
    "2001::1",                                                            # Teredo
])
def test_invalid_address_is_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::200e",
    "::ffff:8.8.8.8", "2002:808:808::1",
])
def test_is_public_address_accepts_global_unicast(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(("host", "address"), [
    ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0X7F000001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0177.0.0.01", "127.0.0.1"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"), ("127.0.0.1.", "127.0.0.1"),
    ("[::1]", "::1"), ("::ffff:7f00:1", "::ffff:127.0.0.1"),
])
def test_ip_literal_reads_every_numeric_form(host: str, address: str) -> None:
    assert ip_literal(host) == ipaddress.ip_address(address)


def test_ip_literal_leaves_names_to_dns() -> None:
    assert ip_literal("example.com") is None
    assert ip_literal("0xfeed.example") is None
    with pytest.raises(ArtifactError, match="neither"):
        ip_literal("0x1.0x1000000")  # out of range for a 3-byte tail: no address at all


def test_invalid_numeric_host_forms_refused() -> None:
    for host in ("2130706433", "0x7f.1", "017700000001", "0xa9fea9fe", "[::ffff:127.0.0.1]"):
        with pytest.raises(AddressRefused):
            checked_addresses(host, 80, NetPolicy())


def test_invalid_every_resolved_address_must_be_public() -> None:
    def lookup(answer: list[str]) -> NetPolicy:
        return NetPolicy(resolve=lambda h, p: [ipaddress.ip_address(a) for a in answer])

    assert checked_addresses("ok.test", 80, lookup(["8.8.8.8"])) == [ipaddress.ip_address("8.8.8.8")]
    for answer in (["169.254.169.254"], ["8.8.8.8", "10.0.0.1"], ["fd00:ec2::254"],
                   ["::ffff:127.0.0.1"]):
        with pytest.raises(AddressRefused, match="not a public address"):
            checked_addresses("evil.test", 80, lookup(answer))
    with pytest.raises(ArtifactError, match="no address"):
        checked_addresses("empty.test", 80, lookup([]))


def test_invalid_localhost_name_refused_by_system_resolver() -> None:
    with pytest.raises(AddressRefused):
        checked_addresses("localhost", 80, NetPolicy())


# --------------------------------------------------------------------------------------------
# Real servers: loopback refused by default, served when the operator allows it


def test_invalid_loopback_server_refused_without_allow_private(tmp_path: Path) -> None:
    with serve("127.0.0.1", body()) as srv:
        for host in ("127.0.0.1", "localhost", "2130706433", "0x7f.1", "127.1"):
            url = f"http://{host}:{srv.port}/m"
            with pytest.raises(AddressRefused):
                fetch_bytes(url, max_bytes=10_000, sha256=DIGEST)
            with pytest.raises(AddressRefused):
                fetch(url, max_bytes=10_000, sha256=DIGEST, dest=tmp_path / "m")
        assert srv.paths == []  # refused before connecting: nothing answered, nothing to leak
        assert fetch_bytes(f"http://2130706433:{srv.port}/m", max_bytes=10_000, sha256=DIGEST,
                           allow_private=True) == BODY
        assert fetch_bytes(f"http://127.0.0.1:{srv.port}/m", max_bytes=10_000, sha256=DIGEST,
                           allow_private=True) == BODY
    assert list(tmp_path.iterdir()) == []


def test_invalid_ipv6_loopback_refused_and_served_when_allowed() -> None:
    try:
        srv_cm = serve("::1", body())
        srv = srv_cm.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        url = f"http://[::1]:{srv.port}/m"
        with pytest.raises(AddressRefused):
            fetch_bytes(url, max_bytes=10_000, sha256=DIGEST)
        assert srv.paths == []
        assert fetch_bytes(url, max_bytes=10_000, sha256=DIGEST, allow_private=True) == BODY
        assert srv.hosts == [f"[::1]:{srv.port}"]  # a well-formed Host for an IPv6 literal
    finally:
        srv_cm.__exit__(None, None, None)


def test_credentials_and_odd_ports_judged_by_the_real_host() -> None:
    auth: list[str | None] = []

    def handle(h: BaseHTTPRequestHandler) -> None:
        auth.append(h.headers.get("Authorization"))
        body()(h)

    with serve("127.0.0.1", handle) as srv:
        # The part before "@" is a user name, not the host: 127.0.0.1 is what would answer.
        for url in (f"http://8.8.8.8@127.0.0.1:{srv.port}/m",
                    f"http://user:pw@127.0.0.1:{srv.port}/m"):
            with pytest.raises(AddressRefused, match="127.0.0.1"):
                fetch_bytes(url, max_bytes=10_000, sha256=DIGEST)
        got = fetch_bytes(f"http://user:pw@127.0.0.1:{srv.port}/m", max_bytes=10_000,
                          sha256=DIGEST, allow_private=True)
        assert got == BODY and auth == ["Basic dXNlcjpwdw=="]


def test_invalid_check_remote_uri_refuses_private_hosts() -> None:
    for uri in ("http://127.0.0.1:8080/x", "https://169.254.169.254/latest/meta-data/",
                "http://[::1]/x", "http://0x7f.1/x", "http://10.1.2.3/x"):
        with pytest.raises(AddressRefused):
            check_remote_uri(uri, allow_file=False)
        check_remote_uri(uri, allow_file=False, allow_private=True)
    with pytest.raises(ArtifactError, match="only http"):
        check_remote_uri("file:///etc/passwd", allow_file=False, allow_private=True)


def test_public_server_is_served() -> None:
    with serve(str(PUBLIC), body()) as srv:
        policy = public_only({"files.test": [PUBLIC]})
        got = fetch_bytes(f"http://files.test:{srv.port}/m", max_bytes=10_000, sha256=DIGEST,
                          network=policy)
        assert got == BODY and srv.paths == ["/m"]


def test_invalid_dns_rebinding_connects_to_the_checked_address() -> None:
    secret = b"loopback-only secret"
    answers: list[list[IPAddress]] = [[PUBLIC], [ipaddress.ip_address("127.0.0.1")]]
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        return answers[min(len(calls) - 1, 1)]  # public first, loopback ever after

    policy = NetPolicy(resolve=rebinding, is_public=lambda ip: ip == PUBLIC)
    with serve(str(PUBLIC), body()) as public, \
            serve("127.0.0.1", body(secret), port=public.port) as private:
        got = fetch_bytes(f"http://rebind.test:{public.port}/m", max_bytes=10_000,
                          sha256=DIGEST, network=policy)
        assert got == BODY
        assert calls == ["rebind.test"]  # resolved once, and only that answer was used
        assert public.paths == ["/m"] and private.paths == []


def test_invalid_redirect_to_private_address_refused() -> None:
    with serve("127.0.0.1", body()) as private:
        target = f"http://127.0.0.1:{private.port}/secret"
        with serve(str(PUBLIC), redirect(target)) as public:
            policy = public_only({"files.test": [PUBLIC]})
            with pytest.raises(AddressRefused):
                fetch_bytes(f"http://files.test:{public.port}/m", max_bytes=10_000,
                            sha256=DIGEST, network=policy)
            assert public.paths == ["/m"] and private.paths == []
            # a name on the redirect is resolved and checked too
            policy = public_only({"files.test": [PUBLIC],
                                  "internal.test": [ipaddress.ip_address("127.0.0.1")]})
            to_name = redirect(f"http://internal.test:{private.port}/s")
            with serve(str(PUBLIC), to_name) as public2, pytest.raises(AddressRefused):
                fetch_bytes(f"http://files.test:{public2.port}/m", max_bytes=10_000,
                            sha256=DIGEST, network=policy)
            assert private.paths == []


def _chain(h: BaseHTTPRequestHandler) -> None:
    """/r/N redirects to /r/N-1; /r/0 is the artifact."""
    n = int(h.path.rsplit("/", 1)[-1])
    if n == 0:
        body()(h)
    else:
        redirect(f"/r/{n - 1}")(h)


def test_redirects_followed_up_to_the_cap() -> None:
    with serve("127.0.0.1", _chain) as srv:
        got = fetch_bytes(f"http://127.0.0.1:{srv.port}/r/3", max_bytes=10_000, sha256=DIGEST,
                          allow_private=True)
        assert got == BODY and srv.paths == ["/r/3", "/r/2", "/r/1", "/r/0"]


def test_invalid_redirect_cap() -> None:
    with serve("127.0.0.1", _chain) as srv:
        with pytest.raises(ArtifactError, match="more than 3 redirects"):
            fetch_bytes(f"http://127.0.0.1:{srv.port}/r/4", max_bytes=10_000, sha256=DIGEST,
                        allow_private=True)
        assert len(srv.paths) == 4  # the fifth hop was never requested
        with pytest.raises(ArtifactError, match="redirects"):
            fetch_bytes(f"http://127.0.0.1:{srv.port}/r/1", max_bytes=10_000, sha256=DIGEST,
                        network=NetPolicy(allow_private=True, max_redirects=0))


def test_invalid_redirect_to_other_scheme_refused() -> None:
    for location in ("file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:6379/_"):
        with serve("127.0.0.1", redirect(location)) as srv, \
                pytest.raises(ArtifactError, match="only http"):
            fetch_bytes(f"http://127.0.0.1:{srv.port}/m", max_bytes=10_000, sha256=DIGEST,
                        allow_private=True)


# --------------------------------------------------------------------------------------------
# HTTPS: connect to the pinned address, verify the certificate against the host name


def _tls_pair(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a certificate for `name`, client context trusting only its CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


def test_https_verifies_the_host_name_on_the_pinned_address(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_pair(tmp_path, "files.test")
    with serve(str(PUBLIC), body(), tls=server_ctx) as srv:
        table: dict[str, list[IPAddress]] = {"files.test": [PUBLIC], "other.test": [PUBLIC]}
        policy = NetPolicy(resolve=lambda h, p: table[h], is_public=lambda ip: ip == PUBLIC,
                           ssl_context=client_ctx)
        got = fetch_bytes(f"https://files.test:{srv.port}/m", max_bytes=10_000, sha256=DIGEST,
                          network=policy)
        assert got == BODY
        # Same address, a name the certificate does not carry: verification must fail.
        with pytest.raises(ArtifactError, match="(?i)certificate"):
            fetch_bytes(f"https://other.test:{srv.port}/m", max_bytes=10_000, sha256=DIGEST,
                        network=policy)
        assert srv.paths == ["/m"]


def test_invalid_https_to_http_downgrade_refused(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_pair(tmp_path, "files.test")
    with serve(str(PUBLIC), body()) as plain:
        location = f"http://files.test:{plain.port}/m"
        with serve(str(PUBLIC), redirect(location), tls=server_ctx) as tls:
            policy = NetPolicy(resolve=lambda h, p: [PUBLIC], is_public=lambda ip: ip == PUBLIC,
                               ssl_context=client_ctx)
            with pytest.raises(ArtifactError, match="https to plain http"):
                fetch_bytes(f"https://files.test:{tls.port}/m", max_bytes=10_000, sha256=DIGEST,
                            network=policy)
            assert tls.paths == ["/m"] and plain.paths == []


# --------------------------------------------------------------------------------------------
# Slow servers: minimum rate and deadline


def _drip(size: int, every: float, step: int,
          stop: threading.Event) -> Callable[[BaseHTTPRequestHandler], None]:
    """Declare `size` bytes, then send `step` bytes every `every` seconds until stopped."""
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(size))
        h.end_headers()
        h.wfile.flush()
        for _ in range(size // step):
            if stop.wait(every):
                return
            h.wfile.write(b"x" * step)
            h.wfile.flush()
    return handle


@contextmanager
def serve_drip(size: int, every: float, step: int = 1) -> Iterator[_Server]:
    stop = threading.Event()
    with serve("127.0.0.1", _drip(size, every, step, stop)) as srv:
        try:
            yield srv
        finally:
            stop.set()  # before the server closes: its handler threads return at once


def test_invalid_slow_drip_aborted_after_grace(tmp_path: Path) -> None:
    with serve_drip(10_000, every=0.25) as srv:  # 4 B/s, far under the minimum
        t0 = time.monotonic()
        with pytest.raises(TooSlow, match="too slow"):
            fetch(f"http://127.0.0.1:{srv.port}/m", max_bytes=10_000, sha256=DIGEST,
                  dest=tmp_path / "m", allow_private=True, min_rate_bps=1000, timeout=30)
        elapsed = time.monotonic() - t0
        assert 4.5 <= elapsed < 7.0, elapsed  # the default grace is 5 s, then cut at once
        assert srv.closed_by_peer.wait(3)  # our side hung up: nothing left downloading
    assert list(tmp_path.iterdir()) == []


def test_invalid_silent_server_aborted_by_min_rate() -> None:
    with serve_drip(10_000, every=60) as srv:  # headers, then nothing: read timeout is 30 s
        from training.fetching import stream_uri

        t0 = time.monotonic()
        with pytest.raises(TooSlow, match="too slow"):
            stream_uri(f"http://127.0.0.1:{srv.port}/m", lambda _: None, max_bytes=10_000,
                       policy=NetPolicy(allow_private=True), min_rate_bps=1000, rate_grace_s=1.0)
        assert time.monotonic() - t0 < 2.5


def test_invalid_deadline_beats_a_trickle_that_dodges_the_read_timeout() -> None:
    # 100 bytes every 0.3 s: each read returns well inside the 2 s read timeout, forever.
    with serve_drip(1_000_000, every=0.3, step=100) as srv:
        t0 = time.monotonic()
        with pytest.raises(TooSlow, match="deadline"):
            fetch_bytes(f"http://127.0.0.1:{srv.port}/m", max_bytes=1_000_000, sha256=DIGEST,
                        allow_private=True, timeout=2, deadline=time.monotonic() + 1.5)
        elapsed = time.monotonic() - t0
        assert 1.4 <= elapsed < 2.5, elapsed
        assert srv.closed_by_peer.wait(3)


def test_invalid_deadline_already_past() -> None:
    with serve("127.0.0.1", body()) as srv:
        with pytest.raises(TooSlow, match="deadline"):
            fetch_bytes(f"http://127.0.0.1:{srv.port}/m", max_bytes=10_000, sha256=DIGEST,
                        allow_private=True, deadline=time.monotonic() - 1)
        assert srv.paths == []


def test_fast_transfer_passes_min_rate_and_deadline() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB
    with serve("127.0.0.1", body(big)) as srv:
        got = fetch_bytes(f"http://127.0.0.1:{srv.port}/m", max_bytes=len(big),
                          sha256=hashlib.sha256(big).hexdigest(), allow_private=True,
                          min_rate_bps=1_000_000, deadline=time.monotonic() + 10)
        assert got == big
