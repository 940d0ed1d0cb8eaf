"""ABCI socket framing: unsigned-varint length prefix + protobuf message, with no I/O.

docs/wire.md: every Request/Response on the ABCI socket is preceded by its length as a protobuf
uvarint. This module only turns bytes into frames and frames into bytes (h11 style: bytes in,
events out), so the server, the client and the fuzz tests share one implementation and the
decoder can be fed arbitrary chunks (one byte at a time included).

Errors say whose fault it was: a `FrameError` always means the *peer* sent bad bytes; the
connection that produced it must be closed (the stream cannot be resynchronised).
"""

from __future__ import annotations

from collections.abc import Iterator

# CometBFT's own reader caps a message at 100 MB (abci/types/messages.go maxMsgSize = 104857600).
DEFAULT_MAX_MESSAGE_SIZE = 104_857_600
# A uvarint for a 64-bit value needs at most 10 bytes; more continuation bytes is garbage.
_MAX_VARINT_BYTES = 10


class FrameError(ValueError):
    """The peer sent bytes that are not a valid length-prefixed stream (peer's fault)."""


def encode_uvarint(value: int) -> bytes:
    """Protobuf unsigned varint of a non-negative int (7 bits per byte, low group first)."""
    if value < 0:
        raise ValueError(f"uvarint cannot encode negative value {value}")
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Decode a uvarint at `pos`; return (value, new_pos), or None if `data` ends mid-varint.

    Raises FrameError when the varint is longer than 10 bytes or overflows 64 bits.
    """
    result = 0
    shift = 0
    end = len(data)
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            return None
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >> 64:
                raise FrameError("length prefix overflows 64 bits")
            return result, pos + i + 1
        shift += 7
    raise FrameError(f"length prefix longer than {_MAX_VARINT_BYTES} bytes")


def encode_frame(payload: bytes) -> bytes:
    """Length-prefix one serialized protobuf message."""
    return encode_uvarint(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: `feed(chunk)` returns every complete payload now available.

    Keeps at most one partial frame buffered. A length above `max_message_size` is rejected as
    soon as the prefix is readable, before any of the body is buffered, so an absurd prefix
    cannot make us allocate memory.
    """

    __slots__ = ("_broken", "_buf", "_max", "_need")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_message_size <= 0:
            raise ValueError("max_message_size must be positive")
        self._buf = bytearray()
        self._max = max_message_size
        self._need: int | None = None  # body length of the frame being assembled
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        return list(self.iter_feed(chunk))

    def iter_feed(self, chunk: bytes) -> Iterator[bytes]:
        if self._broken:
            raise FrameError("decoder already failed; the connection must be closed")
        self._buf += chunk
        pos = 0
        buf = self._buf
        try:
            while True:
                if self._need is None:
                    got = decode_uvarint(buf, pos)
                    if got is None:
                        break
                    length, pos = got
                    if length > self._max:
                        raise FrameError(
                            f"frame length {length} exceeds the maximum of {self._max} bytes"
                        )
                    self._need = length
                if len(buf) - pos < self._need:
                    break
                payload = bytes(buf[pos : pos + self._need])
                pos += self._need
                self._need = None
                yield payload
        except FrameError:
            self._broken = True
            raise
        finally:
            if pos:
                del buf[:pos]
