"""RFC 6455 websocket framing with no I/O: bytes in, frames out (h11 style).

Why our own: CometBFT streams events over `/websocket` (DESIGN §2) and the project takes no new
dependencies, and httpx has none. Both the RPC client (client side, masks its frames) and the
devnet RPC server (server side, unmasked frames) use this one codec, so they cannot disagree.
Only what JSON-RPC needs: text/binary messages (with fragmentation), ping/pong, close.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)
_KNOWN = (OP_CONT, OP_TEXT, OP_BINARY, *_CONTROL)

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009

DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024


class WebSocketProtocolError(ValueError):
    """The peer sent bytes that are not valid websocket framing (the peer's fault)."""


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message, or a control frame (ping/pong/close)."""

    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])


def accept_key(sec_websocket_key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(sec_websocket_key.encode("ascii") + GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def new_client_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def encode_frame(opcode: int, payload: bytes, *, mask: bool, fin: bool = True) -> bytes:
    """One frame. Clients MUST mask (`mask=True`), servers MUST NOT (RFC 6455 §5.1)."""
    if opcode in _CONTROL and len(payload) > 125:
        raise ValueError("control frame payload must be <= 125 bytes")
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 1 << 16:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + _apply_mask(payload, key)


def encode_close(code: int = CLOSE_NORMAL, reason: str = "", *, mask: bool) -> bytes:
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120], mask=mask)


def _apply_mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    full = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(full, "little")).to_bytes(n, "little")


class FrameDecoder:
    """Incremental decoder: `feed(bytes)` then iterate `messages()`.

    `expect_masked` is True on the server side (client frames must be masked) and False on the
    client side. Fragmented data messages are reassembled; control frames may interleave.
    """

    def __init__(self, *, expect_masked: bool, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._expect_masked = expect_masked
        self._max = max_message
        self._frag_opcode: int | None = None
        self._frag = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def messages(self) -> list[Message]:
        """All complete messages decoded from what was fed so far."""
        out: list[Message] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            if opcode in _CONTROL:
                if not fin:
                    raise WebSocketProtocolError("fragmented control frame")
                out.append(Message(opcode, payload))
            elif opcode == OP_CONT:
                if self._frag_opcode is None:
                    raise WebSocketProtocolError("continuation frame without a message start")
                self._frag += payload
                if len(self._frag) > self._max:
                    raise WebSocketProtocolError("message too big")
                if fin:
                    out.append(Message(self._frag_opcode, bytes(self._frag)))
                    self._frag_opcode, self._frag = None, bytearray()
            else:
                if self._frag_opcode is not None:
                    raise WebSocketProtocolError("new message before the previous one finished")
                if fin:
                    out.append(Message(opcode, payload))
                else:
                    self._frag_opcode, self._frag = opcode, bytearray(payload)

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise WebSocketProtocolError("reserved bits set (no extensions negotiated)")
        opcode = b0 & 0x0F
        if opcode not in _KNOWN:
            raise WebSocketProtocolError(f"unknown opcode {opcode:#x}")
        masked = bool(b1 & 0x80)
        if masked != self._expect_masked:
            raise WebSocketProtocolError(
                "client frame not masked" if self._expect_masked else "server frame masked"
            )
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        if opcode in _CONTROL and n > 125:
            raise WebSocketProtocolError("control frame too long")
        if n > self._max:
            raise WebSocketProtocolError(f"frame of {n} bytes exceeds limit {self._max}")
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        if masked:
            payload = _apply_mask(payload, key)
        return bool(b0 & 0x80), opcode, payload
