"""codec: uvarint framing, fed in arbitrary chunks, with clear errors for garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abci_app.codec import (
    FrameDecoder,
    FrameError,
    decode_uvarint,
    encode_frame,
    encode_uvarint,
)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uvarint_round_trip(value: int) -> None:
    raw = encode_uvarint(value)
    assert decode_uvarint(raw) == (value, len(raw))
    # Every strict prefix is "incomplete", not an error.
    for cut in range(len(raw)):
        assert decode_uvarint(raw[:cut]) is None


def test_uvarint_known_vectors() -> None:
    assert encode_uvarint(0) == b"\x00"
    assert encode_uvarint(1) == b"\x01"
    assert encode_uvarint(127) == b"\x7f"
    assert encode_uvarint(128) == b"\x80\x01"
    assert encode_uvarint(300) == b"\xac\x02"


def test_invalid_uvarint_negative() -> None:
    with pytest.raises(ValueError):
        encode_uvarint(-1)


def test_invalid_uvarint_too_long() -> None:
    with pytest.raises(FrameError, match="longer than 10 bytes"):
        decode_uvarint(b"\xff" * 11)


def test_invalid_uvarint_overflow() -> None:
    with pytest.raises(FrameError, match="overflows"):
        decode_uvarint(b"\xff" * 9 + b"\x7f")


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_decoder_fed_one_byte_at_a_time(payloads: list[bytes]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
    assert got == payloads
    assert dec.buffered == 0


@given(st.lists(st.binary(max_size=200), max_size=10), st.data())
def test_decoder_arbitrary_chunks(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    dec = FrameDecoder()
    got: list[bytes] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        got += dec.feed(stream[prev:c])
        prev = c
    assert got == payloads


def test_invalid_frame_absurd_prefix_rejected_before_buffering() -> None:
    dec = FrameDecoder(max_message_size=1024)
    with pytest.raises(FrameError, match="exceeds the maximum"):
        dec.feed(encode_uvarint(10**12))
    # The decoder stays failed: the stream cannot be resynchronised.
    with pytest.raises(FrameError):
        dec.feed(encode_frame(b"ok"))


def test_frame_at_the_size_limit_is_accepted() -> None:
    dec = FrameDecoder(max_message_size=5)
    assert dec.feed(encode_frame(b"12345")) == [b"12345"]
    with pytest.raises(FrameError):
        dec.feed(encode_frame(b"123456"))


def test_partial_frame_is_buffered_not_returned() -> None:
    dec = FrameDecoder()
    frame = encode_frame(b"hello")
    assert dec.feed(frame[:3]) == []
    assert dec.buffered == 2  # the 1-byte length prefix is consumed, 2 body bytes wait
    assert dec.feed(frame[3:] + frame) == [b"hello", b"hello"]
