"""The load generator's HTTP/1.1 client: one :class:`asyncio.Protocol` per connection.

The response head is parsed by hand and the body (chunked, sized, or up to the close)
goes to the request's :class:`~loadtest.bench.streams.BodyParser` with one clock reading
per ``data_received``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import orjson

from .streams import BodyParser, StreamFailed

__all__ = ["ERROR_BODY_LIMIT", "HttpConnection", "http_connect", "http_get_json"]


# Response parser states.
_IDLE, _HEAD, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _SIZED, _TO_EOF = range(8)
# Bytes of a refused request's answer kept for the failure reason.
ERROR_BODY_LIMIT = 300


class _CollectBody(BodyParser):
    """Keeps the whole body (for small control requests)."""

    def __init__(self) -> None:
        self.body = bytearray()

    def feed(self, data: bytes, now: float) -> None:
        self.body += data

    def finish(self, now: float) -> None:
        pass


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time.

    The response head is parsed by hand; the body (chunked, sized, or up to the close)
    goes to the request's :class:`BodyParser` with the time its bytes arrived. A
    response other than 200 fails with its status and the start of its body.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received_any = False
        self._buf = b""
        self._state = _IDLE
        self._status = 0
        self._remaining = 0
        self._keep_alive = True
        self._body: BodyParser | None = None
        self._error_body = b""
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self._state == _TO_EOF:
            self._complete(time.perf_counter())
        elif self._state != _IDLE:
            where = "mid-response" if self.received_any else "before the response"
            self._fail(StreamFailed(f"connection closed {where}"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.received_any = True
        try:
            self._parse(self._buf + data if self._buf else data, now)
        except StreamFailed as exc:
            self._fail(exc)
        except (ValueError, IndexError) as exc:
            self._fail(StreamFailed(f"invalid HTTP response: {exc}"))

    # Requests

    def request(self, data: bytes, body: BodyParser) -> asyncio.Future[None]:
        """Write a whole request; the future resolves when its response has been read."""
        if self.transport is None or self.closed:
            raise StreamFailed("connection is closed")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._body = body
        self._state = _HEAD
        self._status = 0
        self._error_body = b""
        self.received_any = False
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        """Drop the connection at once (the peer sees the stream abandoned)."""
        self.closed = True
        self._state = _IDLE
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    # Internals

    def _parse(self, buf: bytes, now: float) -> None:
        pos = 0
        size = len(buf)
        while pos < size:
            state = self._state
            if state in (_CHUNK_DATA, _SIZED):
                take = min(self._remaining, size - pos)
                if take:
                    self._deliver(buf[pos : pos + take], now)
                    pos += take
                    self._remaining -= take
                if self._remaining:
                    break
                if state == _SIZED:
                    self._complete(now)
                else:
                    self._state = _CHUNK_END
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                length = int(buf[pos:end].split(b";", 1)[0], 16)
                pos = end + 2
                if length:
                    self._remaining = length
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILER
            elif state == _CHUNK_END:
                if size - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise StreamFailed("invalid chunked encoding")
                pos += 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                blank = end == pos
                pos = end + 2
                if blank:
                    self._complete(now)
            elif state == _HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                self._head(buf[pos:end], now)
                pos = end + 4
            elif state == _TO_EOF:
                self._deliver(buf[pos:], now)
                pos = size
            else:
                if buf[pos:].strip():
                    raise StreamFailed("data after the end of the response")
                pos = size
        self._buf = buf[pos:] if pos < size else b""

    def _head(self, head: bytes, now: float) -> None:
        lines = head.split(b"\r\n")
        version, status = lines[0].split(b" ", 2)[:2]
        self._status = int(status)
        self._keep_alive = version == b"HTTP/1.1"
        chunked = False
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-length":
                length = int(value)
            elif name == b"connection":
                self._keep_alive = b"keep-alive" in value.lower() or (
                    self._keep_alive and b"close" not in value.lower()
                )
        if 100 <= self._status < 200:
            self._state = _HEAD  # an interim response; the real one follows
        elif self._status in (204, 304):
            self._complete(now)
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length == 0:
            self._complete(now)
        elif length > 0:
            self._remaining = length
            self._state = _SIZED
        else:
            self._keep_alive = False
            self._state = _TO_EOF

    def _deliver(self, data: bytes, now: float) -> None:
        if self._status == 200:
            assert self._body is not None
            self._body.feed(data, now)
        elif len(self._error_body) < ERROR_BODY_LIMIT:
            self._error_body += data

    def _complete(self, now: float) -> None:
        self._state = _IDLE
        body = self._body
        self._body = None
        if not self._keep_alive:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        try:
            if self._status != 200:
                detail = self._error_body[:ERROR_BODY_LIMIT].decode(errors="replace").strip()
                raise StreamFailed(f"HTTP {self._status}: {detail}")
            if body is not None:
                body.finish(now)
        except StreamFailed as exc:
            self._fail(exc)
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: StreamFailed) -> None:
        self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


async def http_connect(host: str, port: int) -> HttpConnection:
    """A new :class:`HttpConnection` to ``host:port``; raises :class:`OSError`."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(HttpConnection, host, port)
    return conn


async def http_get_json(host: str, port: int, path: str, wait: float = 5.0) -> Any:
    """GET a small JSON document over a fresh connection; ``None`` if anything fails."""
    conn: HttpConnection | None = None
    try:
        async with asyncio.timeout(wait):
            conn = await http_connect(host, port)
            body = _CollectBody()
            request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
            await conn.request(request.encode(), body)
        return orjson.loads(bytes(body.body))
    except (OSError, TimeoutError, StreamFailed, orjson.JSONDecodeError):
        return None
    finally:
        if conn is not None:
            conn.close()
