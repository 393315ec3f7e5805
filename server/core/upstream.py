"""A small HTTP/1.1 client for Ollama's streaming endpoints, built for the hot path.

Each token costs one ``data_received`` call, one C-level parse (httptools) and one
wake-up of the reader: no stream reader layers, no per-chunk coroutines. Idle
connections are kept for reuse; a response that was not read to its end is never
reused: its connection is closed, which is what makes Ollama stop generating. One
read to Ollama's done line is kept once the message's last chunk, which Ollama writes
separately, arrives (:meth:`ConnectionPool.release`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import httptools
import orjson

__all__ = ["Connection", "ConnectionPool", "UpstreamClosed", "UpstreamTimeout"]

# More lines than this waiting for the reader pauses reading from Ollama.
_HIGH_WATER = 64


class UpstreamClosed(ConnectionError):
    """Ollama closed the connection before the response was complete."""


class UpstreamTimeout(TimeoutError):
    """Ollama sent nothing within the allowed time."""


class _Detached:
    """Callbacks for the parser of a closed connection: none."""


# A closed connection swaps its parser (which holds the connection) for this one, so
# the two do not keep each other alive until a garbage collection.
_DETACHED = httptools.HttpResponseParser(_Detached())


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to Ollama carrying one request at a time.

    The response body is split into lines as it arrives; :meth:`readline` hands them
    out. A watchdog fails the response when no data arrives for too long.

    Nothing here forms a reference cycle once the connection is closed, so a closed
    connection is freed at once rather than by a garbage collection (whose pause
    stops every stream).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._lines: deque[bytes] = deque()
        self._partial = b""
        self._waiter: asyncio.Future[None] | None = None
        self._error: UpstreamClosed | UpstreamTimeout | None = None
        self._paused = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._gap_timeout = 0.0
        self._started = False
        self.status = 0
        self.complete = False
        self.keep_alive = False
        self.reused = False  # whether this request went on a connection kept from before
        # Called with this connection once its response has ended, whole or not (the
        # connection lost); set by the pool.
        self.on_end: Callable[[Connection], None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"Ollama sent an invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._parser = _DETACHED
        if not self.complete and self._error is None:
            self._error = UpstreamClosed("Ollama closed the connection mid-response")
        self._wake()
        self._ended()

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if not self._started:
            # The first bytes of the answer: from now on, watch the gaps between tokens.
            self._started = True
            self._stop_watchdog()
            self._watchdog = self._loop.call_at(
                self._last_data + self._gap_timeout, self._check_gap
            )
        if self._partial:
            body = self._partial + body
        *lines, self._partial = body.split(b"\n")
        for line in lines:
            if line:
                self._lines.append(line)
        if len(self._lines) > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._partial:
            self._lines.append(self._partial)
            self._partial = b""
        self.complete = True
        self._wake()
        self._ended()

    # Reader side

    @property
    def ending(self) -> bool:
        """Whether every line so far was read and only the message's end is still to come."""
        return not self.complete and not self._partial and self._drained

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another request."""
        return self.complete and self.keep_alive and self._drained

    @property
    def _drained(self) -> bool:
        # Open, without an error, and every line received so far handed out.
        return (
            not self._lines
            and self._error is None
            and self._transport is not None
            and not self._transport.is_closing()
        )

    def send(self, request: bytes, first_timeout: float, gap_timeout: float) -> None:
        """Write a request and arm the watchdog for its response."""
        assert self._transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.complete = False
        self.keep_alive = False
        self.on_end = None
        self._started = False
        self._gap_timeout = gap_timeout
        self._last_data = self._loop.time()
        self._transport.write(request)
        self._watchdog = self._loop.call_later(first_timeout, self._check_first)

    async def readline(self) -> bytes | None:
        """Return the next body line, or ``None`` at the end of the response.

        Raises :class:`UpstreamClosed` or :class:`UpstreamTimeout` when the response
        cannot be completed.
        """
        lines = self._lines
        while not lines:
            if self._error is not None:
                # A new instance: one kept here would hold, by its traceback, this frame.
                raise type(self._error)(*self._error.args)
            if self.complete:
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
        if self._paused and len(lines) < _HIGH_WATER // 2 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return lines.popleft()

    async def read_body(self) -> bytes:
        """Read the rest of the response body as one bytes object."""
        parts = []
        while (line := await self.readline()) is not None:
            parts.append(line)
        return b"\n".join(parts)

    def close(self) -> None:
        """Close the connection now; Ollama cancels a generation whose connection closes."""
        self._stop_watchdog()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or closing."""
        return self._transport is None or self._transport.is_closing()

    # Internals

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self.complete or self._error is not None:
            self._stop_watchdog()

    def _ended(self) -> None:
        if self.on_end is not None:
            callback, self.on_end = self.on_end, None
            callback(self)

    def _fail(self, error: UpstreamClosed | UpstreamTimeout) -> None:
        if self._error is None:
            self._error = error
        self.close()
        self._wake()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _check_first(self) -> None:
        # Fires at the first-token deadline unless the answer began before it.
        self._watchdog = None
        self._fail(UpstreamTimeout("no first token from Ollama in time"))

    def _check_gap(self) -> None:
        # One timer per response, re-armed at the latest deadline rather than per token.
        deadline = self._last_data + self._gap_timeout
        now = self._loop.time()
        if now >= deadline:
            self._watchdog = None
            self._fail(UpstreamTimeout("Ollama stopped sending tokens"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_gap)


class ConnectionPool:
    """Connections to one Ollama server, reused while they stay healthy."""

    def __init__(self, host: str, port: int, connect_timeout: float, max_idle: int = 64) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._idle: list[Connection] = []
        self._ending: set[Connection] = set()  # released at their done line, end to come
        self._closed = False
        self.host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        first_timeout: float,
        gap_timeout: float,
        fresh: bool = False,
    ) -> Connection:
        """Send one request and return its connection, ready for :meth:`Connection.readline`.

        An idle connection is reused when it is still open (unless ``fresh``); otherwise
        a new one is made.
        """
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            "User-Agent: voice-llm-server\r\nAccept: application/x-ndjson, application/json\r\n"
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        request = (head + "\r\n").encode() + (body or b"")
        while self._idle and not fresh:
            conn = self._idle.pop()
            if not conn.closed:
                conn.send(request, first_timeout, gap_timeout)
                conn.reused = True
                return conn
        conn = await self._connect()
        conn.send(request, first_timeout, gap_timeout)
        return conn

    def release(self, conn: Connection, ended: bool = False) -> None:
        """Return a connection after use: kept if its response was read whole, else closed.

        ``ended`` says the caller has read the answer's last line (Ollama's done line).
        The end of the HTTP message (the last, empty chunk) comes in a write of its own
        and is often still on its way; such a connection is kept once it arrives,
        rather than closed, which would make the next turn connect afresh. Any other
        connection not read whole is closed now, which makes Ollama stop generating.
        """
        if conn.reusable:
            self._keep(conn)
        elif ended and conn.ending:
            self._ending.add(conn)
            conn.on_end = self._keep
        else:
            conn.close()

    def _keep(self, conn: Connection) -> None:
        self._ending.discard(conn)
        if conn.reusable and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def get_json(self, path: str, wait: float) -> tuple[int, Any]:
        """GET a small JSON document, waiting at most ``wait`` seconds for an answer.

        Returns the status and the parsed body: None when it is empty or not JSON (a
        proxy's HTML error page, say).
        """
        conn = await self.request("GET", path, None, wait, wait)
        try:
            body = await conn.read_body()
        finally:
            self.release(conn)
        try:
            return conn.status, orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return conn.status, None

    def close(self) -> None:
        """Close every idle connection, and those whose response's end is still to come."""
        self._closed = True
        for conn in [*self._idle, *self._ending]:
            conn.close()
        self._idle.clear()
        self._ending.clear()

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(lambda: Connection(loop), self._host, self._port)
        return conn
