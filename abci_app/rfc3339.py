"""RFC 3339 timestamps as CometBFT writes them, to and from integer nanoseconds since the epoch.

Why our own (and only one): block times and genesis times carry up to nine fractional digits
("2024-01-02T03:04:05.123456789Z", Go's RFC3339Nano), which `datetime` cannot hold (microseconds)
and a float cannot round-trip. The app's round schedule works in integer nanoseconds of BFT time
(docs/rounds.md), so the dev node, the genesis builder and the RPC client all parse and print
through these two functions. Standard library only: the sidecars import this without torch.

Strict on purpose: `YYYY-MM-DDTHH:MM:SS[.F{1,9}](Z|±HH:MM)`, upper-case `T` and `Z`, no spaces;
anything else (including an impossible date such as February 30) is a ValueError.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

NS_PER_S = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_rfc3339_ns(text: str) -> int:
    """`text` → ns since 1970-01-01T00:00:00Z, exactly (no float anywhere); ValueError if bad."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            f"bad RFC 3339 time {text!r} (expected e.g. 2024-01-02T03:04:05.123456789Z)"
        )
    base, frac, tz = m.groups()
    try:
        dt = datetime.fromisoformat(base + ("+00:00" if tz == "Z" else tz))
    except ValueError as exc:
        raise ValueError(f"bad RFC 3339 time {text!r}: {exc}") from None
    delta = dt - _EPOCH  # whole seconds: no fraction was given to datetime
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + int((frac or "0").ljust(9, "0"))


def format_rfc3339_ns(time_ns: int) -> str:
    """ns since the epoch → UTC with all nine fractional digits, as the dev node serves block
    times; `parse_rfc3339_ns(format_rfc3339_ns(t)) == t` for every int t in datetime's range."""
    secs, ns = divmod(int(time_ns), NS_PER_S)
    d = _EPOCH + timedelta(seconds=secs)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        f".{ns:09d}Z"
    )


def is_rfc3339(text: object) -> bool:
    """Whether `parse_rfc3339_ns` accepts `text` (a str it can parse)."""
    if not isinstance(text, str):
        return False
    try:
        parse_rfc3339_ns(text)
    except ValueError:
        return False
    return True
