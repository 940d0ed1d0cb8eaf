"""abci_app.rfc3339: CometBFT's nanosecond RFC 3339 times, parsed exactly and printed back."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abci_app.rfc3339 import format_rfc3339_ns, is_rfc3339, parse_rfc3339_ns

NS = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.000000001Z", NS + 1),
        ("2024-01-02T03:04:05.123456789Z", 1_704_164_645 * NS + 123_456_789),
        ("2024-05-01T12:00:00Z", 1_714_564_800 * NS),
        ("2024-05-01T14:00:00.5+02:00", 1_714_564_800 * NS + 500_000_000),
        ("2024-05-01T09:30:00.25-02:30", 1_714_564_800 * NS + 250_000_000),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("2000-02-29T00:00:00.1Z", 951_782_400 * NS + 100_000_000),  # leap day
    ],
)
def test_parse_exact(text: str, ns: int) -> None:
    assert parse_rfc3339_ns(text) == ns
    assert is_rfc3339(text)


def test_format_is_cometbft_block_time_form() -> None:
    assert format_rfc3339_ns(1_704_164_645 * NS + 123_456_789) == "2024-01-02T03:04:05.123456789Z"
    assert format_rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_rfc3339_ns(-1) == "1969-12-31T23:59:59.999999999Z"
    assert format_rfc3339_ns(1_000_000 * NS)[:4] == "1970"


def test_nanoseconds_survive_where_a_float_would_not() -> None:
    t = 1_732_430_000_123_456_789  # float64 keeps ~16 digits: the last ns would be lost
    assert float(t) != t
    assert parse_rfc3339_ns(format_rfc3339_ns(t)) == t


@given(st.integers(min_value=-(10**9) * NS, max_value=8 * 10**9 * NS))
def test_round_trip(t: int) -> None:
    assert parse_rfc3339_ns(format_rfc3339_ns(t)) == t


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
def test_agrees_with_datetime_to_the_microsecond(dt: datetime) -> None:
    aware = dt.replace(tzinfo=UTC)
    text = aware.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)
    assert parse_rfc3339_ns(text) == seconds * NS + aware.microsecond * 1000


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "2024-05-01",
        "2024-05-01T12:00:00",  # no zone
        "2024-05-01 12:00:00Z",  # space instead of T
        "2024-05-01t12:00:00z",  # lower case
        " 2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00Z\n",
        "2024-05-01T12:00:00.Z",  # a dot without digits
        "2024-05-01T12:00:00.1234567890Z",  # ten fractional digits
        "2024-02-30T00:00:00Z",  # no such day
        "2024-13-01T00:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:00:60Z",  # leap seconds are not in Go's time either
        "2024-05-01T12:00:00+0200",  # offset without colon
        "2024-05-01T12:00:00+25:00",
        "٢٠٢٤-05-01T12:00:00Z",  # non-ASCII digits
    ],
)
def test_invalid_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339_ns(bad)
    assert not is_rfc3339(bad)


def test_invalid_non_string() -> None:
    assert not is_rfc3339(None)
    assert not is_rfc3339(1_700_000_000)
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339_ns(None)  # type: ignore[arg-type]


def test_imports_without_torch() -> None:
    """The sidecars' RPC client and the genesis builder import it: it must stay stdlib-only."""
    code = "import sys, abci_app.rfc3339; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
