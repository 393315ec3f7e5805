"""The load generator's websocket clients: minimal RFC 6455 clients for the server's
``/ws`` (:class:`WsConnection`) and Retell's ``/llm-websocket/{call_id}``
(:class:`RetellConnection`).

Handshake, masked client frames, unmasked server text frames, ping answered by pong,
close; one clock reading per ``data_received`` and one ``orjson.loads`` per frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from .http import ERROR_BODY_LIMIT
from .streams import StreamFailed, StreamRecord, decode_json

__all__ = ["RetellConnection", "WsConnection", "ws_connect", "ws_frame"]


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10
_CLOSE_NORMAL = 1000


def ws_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One final client frame (RFC 6455 5.2): ``payload`` masked with the 4-byte ``mask``."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    return head + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")


def _masked(opcode: int, payload: bytes) -> bytes:
    return ws_frame(opcode, payload, os.urandom(4))


class WsConnection(asyncio.Protocol):
    """One client websocket (RFC 6455) carrying one turn of the ``/ws`` protocol at a time.

    It writes the opening handshake as soon as the TCP connection is made and checks
    ``Sec-WebSocket-Accept``; :attr:`opened` resolves then, or fails with the refusal
    (status and the start of its body). Afterwards it reads unmasked server frames
    (text, fragmented or not; ping, answered with a pong; close, answered and then
    the connection closed) and writes masked client frames. No extension is offered.

    A turn's text frames are decoded one ``orjson.loads`` each: a ``delta`` with that
    turn's id and non-empty ``content`` is a token (its arrival time goes to the
    record), ``done`` or ``error`` with its id ends it. Frames of other ids (an older
    turn's) are ignored.
    """

    def __init__(self, host: str, port: int, path: str, headers: Sequence[str] = ()) -> None:
        key = base64.b64encode(os.urandom(16))
        digest = hashlib.sha1(key + _WS_GUID, usedforsecurity=False).digest()
        self._accept = base64.b64encode(digest)
        head = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "User-Agent: loadtest-bench",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
            *headers,
        ]
        self._handshake = ("\r\n".join(head) + "\r\n\r\n").encode()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._open = False
        self._buf = b""
        self._fragments: list[bytes] | None = None
        self._turn_id = ""
        self._record: StreamRecord | None = None
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        where = "mid-turn" if self._open else "during the handshake"
        self._fail(StreamFailed(f"connection closed {where}"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self._buf + data if self._buf else data
        try:
            if not self._open:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self._buf = buf
                    return
                self._head(buf[:end], buf[end + 4 :])
                buf = buf[end + 4 :]
            self._buf = self._frames(buf, now)
        except StreamFailed as exc:
            self._fail(exc)
        except (ValueError, IndexError) as exc:
            self._fail(StreamFailed(f"invalid websocket data: {exc}"))

    # Turns

    def turn(self, turn_id: str, frame: bytes, record: StreamRecord) -> asyncio.Future[None]:
        """Send a ``chat`` text frame; the future resolves at the turn's ``done``."""
        if self.transport is None or self.closed:
            raise StreamFailed("websocket is closed")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._record = record
        self._turn_id = turn_id
        record.t_send = time.perf_counter()
        self.transport.write(_masked(_OP_TEXT, frame))
        return waiter

    def close(self) -> None:
        """Send a close frame (1000) if the socket is open, then close the connection."""
        self.closed = True
        transport, self.transport = self.transport, None
        if transport is not None:
            if self._open:
                transport.write(_masked(_OP_CLOSE, _CLOSE_NORMAL.to_bytes(2, "big")))
            transport.close()
        self._fail(StreamFailed("websocket closed by the client"))

    # Internals

    def _head(self, head: bytes, rest: bytes) -> None:
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        if status != 101:
            detail = rest[:ERROR_BODY_LIMIT].decode(errors="replace").strip()
            raise StreamFailed(f"HTTP {status}: {detail}")
        accept = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept":
                accept = value.strip()
        if accept != self._accept:
            raise StreamFailed("handshake answered with a wrong Sec-WebSocket-Accept")
        self._open = True
        if not self.opened.done():
            self.opened.set_result(None)

    def _frames(self, buf: bytes, now: float) -> bytes:
        """Handle every complete frame in ``buf`` (none after a close); returns the rest."""
        pos = 0
        size = len(buf)
        while size - pos >= 2 and not self.closed:
            first, second = buf[pos], buf[pos + 1]
            if first & 0x70:
                raise StreamFailed("frame with reserved bits set (no extension was agreed)")
            if second & 0x80:
                raise StreamFailed("masked frame from the server")
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            self._frame(first & 0x80, first & 0x0F, buf[start:end], now)
            pos = end
        return buf[pos:]

    def _frame(self, fin: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode == _OP_TEXT:
            if self._fragments is not None:
                raise StreamFailed("new text frame inside a fragmented message")
            if fin:
                self._message(payload, now)
            else:
                self._fragments = [payload]
        elif opcode == _OP_CONTINUATION:
            if self._fragments is None:
                raise StreamFailed("continuation frame outside a fragmented message")
            self._fragments.append(payload)
            if fin:
                message, self._fragments = b"".join(self._fragments), None
                self._message(message, now)
        elif opcode == _OP_PING:
            if self.transport is not None:
                self.transport.write(_masked(_OP_PONG, payload))
        elif opcode == _OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            reason = payload[2:].decode(errors="replace")
            transport, self.transport = self.transport, None
            self.closed = True
            if transport is not None:
                transport.write(_masked(_OP_CLOSE, payload[:2]))
                transport.close()
            self._fail(StreamFailed(f"server closed the websocket: {code} {reason}".strip()))
        elif opcode == _OP_BINARY:
            raise StreamFailed("binary frame from the server")
        elif opcode != _OP_PONG:
            raise StreamFailed(f"unknown websocket opcode {opcode}")

    def _message(self, data: bytes, now: float) -> None:
        obj = decode_json(data, "websocket frame")
        if not isinstance(obj, dict):
            raise StreamFailed(f"websocket frame is not an object: {data[:80]!r}")
        self.frame(obj, now)

    def frame(self, obj: dict[str, Any], now: float) -> None:
        """One decoded frame of the ``/ws`` protocol, arrived at ``now``."""
        record = self._record
        kind = obj.get("type")
        turn_id = obj.get("id")
        if record is None or turn_id != self._turn_id:
            if kind == "error" and turn_id is None:
                raise StreamFailed(f"error frame: {obj.get('code')}: {obj.get('message')}")
            return
        if kind == "delta":
            content = obj.get("content")
            if content:
                record.tokens.append(now)
                record.chars += len(content)
        elif kind == "done":
            reason = obj.get("finish_reason")
            if reason not in ("stop", "length"):
                raise StreamFailed(f"turn ended with finish_reason {reason!r}")
            self._done()
        elif kind == "error":
            message = str(obj.get("message"))[:120]
            raise StreamFailed(f"error frame: {obj.get('code')}: {message}")

    def _done(self) -> None:
        """The turn in flight ended well."""
        self._record = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: StreamFailed) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()  # retrieved: nobody may be waiting any more
        self._record = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if not self.closed:
            self.close()


class RetellConnection(WsConnection):
    """Retell's LLM websocket, held as Retell holds it: one socket per call.

    A turn is a ``response_required`` frame whose ``response_id`` is the turn id (1,
    2...); a token is a ``response`` frame of that id with non-empty ``content``, and the
    frame with ``content_complete: true`` ends it (an empty response fails it: silence
    on a call). The config, the opening response (id 0) and the server's pings are
    ignored.
    """

    def __init__(self, host: str, port: int, path: str, headers: Sequence[str] = ()) -> None:
        super().__init__(host, port, path, headers)
        self._response_id = -1

    def turn(self, turn_id: str, frame: bytes, record: StreamRecord) -> asyncio.Future[None]:
        self._response_id = int(turn_id)
        return super().turn(turn_id, frame, record)

    def frame(self, obj: dict[str, Any], now: float) -> None:
        record = self._record
        if record is None or obj.get("response_id") != self._response_id:
            return
        if obj.get("response_type") != "response":
            return
        content = obj.get("content")
        if content:
            record.tokens.append(now)
            record.chars += len(content)
        if obj.get("content_complete"):
            if not record.tokens:
                raise StreamFailed("a complete response without content")
            self._done()


async def ws_connect(
    host: str,
    port: int,
    path: str,
    headers: Sequence[str] = (),
    connection: Callable[[str, int, str, Sequence[str]], WsConnection] = WsConnection,
) -> WsConnection:
    """Open a websocket (a ``connection``) and wait for the handshake; raise
    :class:`StreamFailed`."""
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_connection(
            lambda: connection(host, port, path, headers), host, port
        )
    except OSError as exc:
        raise StreamFailed(f"connect failed: {exc.strerror or exc}") from None
    try:
        await conn.opened
    except BaseException:
        conn.close()
        raise
    return conn
