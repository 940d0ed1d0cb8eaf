"""Which network addresses a URI from another account may make this machine connect to.

docs/artifacts.md "Fetching from strangers": publishers and miners name the URIs that miners and
validators download. Without a check, any of them could point a validator at its own loopback,
its private network or the cloud metadata service, and read what answered from the verdict the
validator puts on chain: a port scanner and request forger aimed at every validator host. So a
host is resolved *here*, every address it resolves to must be public, and the caller connects to
exactly those checked addresses (`training.fetching`), so a second DNS answer cannot swap in
127.0.0.1 afterwards (DNS rebinding).

`is_public_address` is the strict default; single-machine setups (`dlbc devnet`, `dlbc
localnet`, tests) opt out with `--allow-private-networks`. Tests that need a "public" server
without the internet inject their own resolver or address predicate through `NetPolicy`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from training.artifact_errors import AddressRefused, ArtifactError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services. Most already fall in a refused range (link-local, ULA, CGNAT); they
# are named so that no future change to those ranges can let them through.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset({
    ipaddress.IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
    ipaddress.IPv4Address("169.254.170.2"),    # AWS ECS task metadata
    ipaddress.IPv4Address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.IPv6Address("fd00:ec2::254"),    # AWS over IPv6
})
# RFC 6598 shared address space: carrier NAT, and where some clouds put their own services; and
# RFC 6890 IETF protocol assignments (older Pythons call parts of it global), less the two
# anycast services in it that really are global (RFC 7723 PCP, RFC 8155 TURN).
_NOT_GLOBAL_V4 = (ipaddress.IPv4Network("100.64.0.0/10"), ipaddress.IPv4Network("192.0.0.0/24"))
_GLOBAL_ANYCAST_V4 = frozenset({ipaddress.IPv4Address("192.0.0.9"),
                                ipaddress.IPv4Address("192.0.0.10")})
# IPv6 forms that reach an IPv4 address through a translator or tunnel we cannot see through.
_TRANSLATED = (
    ipaddress.IPv6Network("64:ff9b::/96"),    # NAT64 well-known prefix (RFC 6052)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
    ipaddress.IPv6Network("::/96"),           # deprecated IPv4-compatible addresses
)
# What glibc's inet_aton reads as an IPv4 address: 1-4 parts, each decimal, octal or hex.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$")


def is_public_address(ip: IPAddress) -> bool:
    """Whether `ip` is a globally routable unicast address that is no one's internal service.

    `ipaddress.is_global` alone is not enough: it calls multicast, 6to4 and some reserved IPv6
    forms global, and an IPv4-mapped or 6to4 IPv6 address is only as public as the IPv4
    address inside it.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
        if ip.teredo is not None or ip.is_site_local or any(ip in n for n in _TRANSLATED):
            return False
    elif any(ip in n for n in _NOT_GLOBAL_V4) and ip not in _GLOBAL_ANYCAST_V4:
        return False
    if ip in METADATA_ADDRESSES:
        return False
    return ip.is_global and not (
        ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_private
        or ip.is_reserved or ip.is_unspecified
    )


def ip_literal(host: str) -> IPAddress | None:
    """The address `host` denotes by itself, without DNS, or None for a host name.

    Besides dotted quads and IPv6 this reads the numeric forms the C library accepts
    (``2130706433``, ``0x7f.1``, ``017700000001`` are all 127.0.0.1), so such a host is judged
    by the address a connection would really reach. A numeric host the C library refuses (a
    part out of range, ``0x1.0x1000000``) is refused rather than handed to DNS.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if not _NUMERIC_HOST.match(bare.lower()):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare.rstrip(".")))
    except OSError:
        raise ArtifactError(f"host {host[:80]!r} is neither a name nor an IP address") from None


def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host` (TCP), in its order, deduplicated."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise ArtifactError(f"cannot resolve host {host[:80]!r}: {exc}") from None
    seen: dict[IPAddress, None] = {}
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            seen.setdefault(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), None)
    return list(seen)


@dataclass(frozen=True)
class NetPolicy:
    """How a fetch chooses the addresses it may connect to (the strict policy by default)."""

    allow_private: bool = False
    """Connect to any address (operator's `--allow-private-networks`; single-machine setups)."""
    resolve: Callable[[str, int], Sequence[IPAddress]] = system_resolve
    """Host name → addresses; called once per hop, and only its answer is connected to."""
    is_public: Callable[[IPAddress], bool] = is_public_address
    """Which addresses count as public; tests stand in a loopback address for "the internet"."""
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    """Trust store for https (None: the certifi bundle httpx ships)."""
    max_redirects: int = 3
    """Redirect hops followed, each re-checked; more is an error."""


def checked_addresses(host: str, port: int, policy: NetPolicy) -> list[IPAddress]:
    """Resolve `host` once and return its addresses if every one of them may be connected to.

    All addresses must pass, not just one: which one a connection uses is the resolver's and the
    network's choice, and a host with a private address among its public ones is suspect.
    """
    literal = ip_literal(host)
    addresses = [literal] if literal is not None else list(policy.resolve(host, port))
    if not addresses:
        raise ArtifactError(f"host {host[:80]!r} resolves to no address")
    if policy.allow_private:
        return addresses
    for ip in addresses:
        if not policy.is_public(ip):
            raise AddressRefused(
                f"refusing host {host[:80]!r}: it resolves to {ip}, which is not a public address "
                "(loopback, private, link-local, shared, multicast, reserved or metadata); "
                "only an operator's --allow-private-networks permits it"
            )
    return addresses
