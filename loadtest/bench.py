"""Benchmark: the server against direct (simulated) Ollama under the same streaming load.

``python -m loadtest.bench`` starts the Ollama simulator (``loadtest.fake_ollama``) and
the server (``python -m server``) as child processes (:mod:`loadtest.processes`), then,
for each concurrency level, drives the same closed-loop load (N virtual clients, each
streaming one chat turn after another over its own keep-alive connection or websocket)
against each target in turn:

- ``direct``: ``POST /api/chat`` on the simulator, NDJSON; a token is a line with a
  non-empty ``message.content``;
- ``sse``: ``POST /v1/chat/completions`` on the server with a VAPI-shaped body, SSE; a
  token is a ``data:`` event with a non-empty ``choices[0].delta.content``;
- ``ws``: the server's ``/ws``, one socket per virtual client kept open across its turns;
  a turn is a ``chat`` frame with the same messages and settings as the SSE body, a
  token is a ``delta`` frame of that turn with non-empty ``content``, and the turn ends
  at its ``done`` (``stop`` or ``length``; anything else, or an ``error``, fails it).

By default the levels are 1, 50 and 200, and each level runs direct, then the server
targets, then direct again: the two direct runs bracket the server runs, are pooled as
their baseline, and their difference is printed as the drift of the machine over the
level. ``--scaling`` runs the levels 1, 10, 50, 200 and 500 instead and writes the
tables as markdown (``--markdown``, default ``bench-results/scaling.md``) and a PNG of
TTFT p50/p99 against concurrency per target (``--plot``, default
``bench-results/scaling.png``); either file is written by any run that is given its path.

Each run has a discarded warm-up, then a measured window in which the load is steady.
Per run it reports TTFT (request or chat frame sent to first non-empty content)
p50/p90/p99, ITL (gap between successive content tokens of a stream) p50/p99, content
tokens per second over the window, errors with their reasons, and CPU per content token
of the server, the simulator and the load generator itself (on-CPU time of each process
over the window: ``/proc/<pid>/task/*/schedstat``, nanosecond resolution, checked
against psutil's user+system, 10 ms ticks), and how busy the machine was, in total and
by programs other than these three. The "server vs direct" section checks the deltas
against the latency and CPU targets and marks each PASS or MISS.

The load generator is this process: uvloop, one :class:`asyncio.Protocol` per
connection. HTTP has a hand-written HTTP/1.1 response parser (chunked or sized bodies);
the websocket a minimal RFC 6455 client (:class:`WsConnection`: handshake, masked client
frames, unmasked server text frames, ping answered by pong, close). Both take one clock
reading per ``data_received`` and one ``orjson.loads`` per line, event or frame.

A target is "how one virtual client opens a stream and records its token arrival
times" (:class:`Target`, :class:`TargetClient`), registered in ``TARGETS``.

The children are always stopped: on return, on error, on Ctrl-C and SIGTERM, and (by
``PR_SET_PDEATHSIG``) if this process is killed. A stream that fails or exceeds
``--timeout`` counts as an error with its reason. Exit status: 0 when every checked
target passes, 1 when one is missed, 2 when a child fails, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import orjson
import psutil  # type: ignore[import-untyped,unused-ignore]
import uvloop

from .processes import Child, start_server, start_simulator

__all__ = [
    "TARGETS",
    "HttpConnection",
    "HttpTarget",
    "NdjsonTokens",
    "SseTokens",
    "StreamFailed",
    "StreamRecord",
    "Target",
    "TargetClient",
    "WsConnection",
    "WsTarget",
    "main",
    "percentile",
    "ws_connect",
    "ws_frame",
]

DEFAULT_MODEL = "llama3.1:8b"
DEFAULT_LEVELS = (1, 50, 200)
SCALING_LEVELS = (1, 10, 50, 200, 500)
SCALING_MARKDOWN = Path("bench-results/scaling.md")
SCALING_PLOT = Path("bench-results/scaling.png")

# Pause after a failed stream before the client tries again, so that a refusing
# target cannot turn the load generator into a busy loop.
_ERROR_BACKOFF = 0.1
# Interval of the background CPU sampler; figures are interpolated between samples.
_SAMPLE_INTERVAL = 0.25
# Quiet time between two runs.
_SETTLE = 0.3


# --------------------------------------------------------------------------- statistics


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of sorted values, linearly interpolated; NaN if empty."""
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --------------------------------------------------------------------------- streams


class StreamFailed(Exception):
    """A stream failed; the message is the reason counted in the report."""


class StreamRecord:
    """One stream as seen by the load generator.

    ``t_send`` is the clock (``time.perf_counter``) just before the request was written;
    ``tokens`` holds the arrival time of each content token; ``chars`` the total length
    of the content; ``error`` the reason the stream failed, ``None`` if it succeeded.
    """

    __slots__ = ("chars", "client", "error", "measured", "seq", "t_end", "t_send", "tokens")

    def __init__(self, client: int, seq: int) -> None:
        self.client = client
        self.seq = seq
        self.t_send = 0.0
        self.t_end = 0.0
        self.tokens: list[float] = []
        self.chars = 0
        self.error: str | None = None
        self.measured = False

    def reset(self) -> None:
        """Forget what a failed attempt recorded, before the same stream is retried."""
        self.tokens.clear()
        self.chars = 0
        self.error = None


class BodyParser(ABC):
    """Turns a response body, fed as it arrives, into token arrival times on a record."""

    @abstractmethod
    def feed(self, data: bytes, now: float) -> None:
        """Take the next piece of body that arrived at ``now``; raise :class:`StreamFailed`."""

    @abstractmethod
    def finish(self, now: float) -> None:
        """The body is complete; raise :class:`StreamFailed` if the stream did not end well."""


class _LineParser(BodyParser):
    """A body made of ``\\n``-separated lines, each handled on its own."""

    __slots__ = ("_partial", "record")

    def __init__(self, record: StreamRecord) -> None:
        self.record = record
        self._partial = b""

    def feed(self, data: bytes, now: float) -> None:
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.line(line, now)

    def finish(self, now: float) -> None:
        if self._partial:
            partial, self._partial = self._partial, b""
            self.line(partial, now)
        self.end()

    @abstractmethod
    def line(self, line: bytes, now: float) -> None:
        """Handle one complete line (without its ``\\n``)."""

    @abstractmethod
    def end(self) -> None:
        """Check that the stream ended with its proper end marker."""


def _decode(data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise StreamFailed(f"invalid {what}: {data[:80]!r}") from None


class NdjsonTokens(_LineParser):
    """Ollama's ``/api/chat`` NDJSON: a token per line with non-empty ``message.content``."""

    __slots__ = ("_done",)

    def __init__(self, record: StreamRecord) -> None:
        super().__init__(record)
        self._done = False

    def line(self, line: bytes, now: float) -> None:
        if not line.strip():
            return
        obj = _decode(line, "NDJSON line")
        if not isinstance(obj, dict):
            raise StreamFailed(f"NDJSON line is not an object: {line[:80]!r}")
        if "error" in obj:
            raise StreamFailed(f"error line: {str(obj['error'])[:120]}")
        message = obj.get("message")
        if message:
            content = message.get("content")
            if content:
                self.record.tokens.append(now)
                self.record.chars += len(content)
        if obj.get("done"):
            self._done = True

    def end(self) -> None:
        if not self._done:
            raise StreamFailed("NDJSON ended without a done line")


class SseTokens(_LineParser):
    """OpenAI chat-completion chunks over SSE: a token per event with non-empty content.

    Each event is expected on one ``data:`` line (as the server sends it); the stream
    must end with ``data: [DONE]``, and every chunk must carry a ``choices`` list.
    """

    __slots__ = ("_done",)

    def __init__(self, record: StreamRecord) -> None:
        super().__init__(record)
        self._done = False

    def line(self, line: bytes, now: float) -> None:
        if not line.startswith(b"data:"):
            return  # blank separators, comments, event/id fields
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self._done = True
            return
        obj = _decode(payload, "SSE data")
        if not isinstance(obj, dict):
            raise StreamFailed(f"SSE data is not an object: {payload[:80]!r}")
        choices = obj.get("choices")
        if not isinstance(choices, list):
            if "error" in obj:
                raise StreamFailed(f"error event: {str(obj['error'])[:120]}")
            raise StreamFailed("SSE chunk without a choices list")
        if choices:
            delta = choices[0].get("delta")
            if delta:
                content = delta.get("content")
                if content:
                    self.record.tokens.append(now)
                    self.record.chars += len(content)

    def end(self) -> None:
        if not self._done:
            raise StreamFailed("SSE ended without data: [DONE]")


class _CollectBody(BodyParser):
    """Keeps the whole body (for small control requests)."""

    def __init__(self) -> None:
        self.body = bytearray()

    def feed(self, data: bytes, now: float) -> None:
        self.body += data

    def finish(self, now: float) -> None:
        pass


# --------------------------------------------------------------------------- HTTP/1.1 client

# Response parser states.
_IDLE, _HEAD, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _SIZED, _TO_EOF = range(8)
_ERROR_BODY_LIMIT = 300


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
        elif len(self._error_body) < _ERROR_BODY_LIMIT:
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
                detail = self._error_body[:_ERROR_BODY_LIMIT].decode(errors="replace").strip()
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


async def _connect(host: str, port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(HttpConnection, host, port)
    return conn


async def http_get_json(host: str, port: int, path: str, wait: float = 5.0) -> Any:
    """GET a small JSON document over a fresh connection; ``None`` if anything fails."""
    conn: HttpConnection | None = None
    try:
        async with asyncio.timeout(wait):
            conn = await _connect(host, port)
            body = _CollectBody()
            request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
            await conn.request(request.encode(), body)
        return orjson.loads(bytes(body.body))
    except (OSError, TimeoutError, StreamFailed, orjson.JSONDecodeError):
        return None
    finally:
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------- websocket client

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
            detail = rest[:_ERROR_BODY_LIMIT].decode(errors="replace").strip()
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
        obj = _decode(data, "websocket frame")
        if not isinstance(obj, dict):
            raise StreamFailed(f"websocket frame is not an object: {data[:80]!r}")
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
            self._record = None
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == "error":
            message = str(obj.get("message"))[:120]
            raise StreamFailed(f"error frame: {obj.get('code')}: {message}")

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


async def ws_connect(host: str, port: int, path: str, headers: Sequence[str] = ()) -> WsConnection:
    """Open a websocket and wait for the handshake; raise :class:`StreamFailed`."""
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_connection(
            lambda: WsConnection(host, port, path, headers), host, port
        )
    except OSError as exc:
        raise StreamFailed(f"connect failed: {exc.strerror or exc}") from None
    try:
        await conn.opened
    except BaseException:
        conn.close()
        raise
    return conn


# --------------------------------------------------------------------------- targets


class TargetClient(ABC):
    """One virtual client's connection(s) to a target."""

    @abstractmethod
    async def stream(self, record: StreamRecord) -> None:
        """Run one stream to its end, filling ``record``; raise :class:`StreamFailed`.

        Sets ``record.t_send`` just before the request goes out and appends each content
        token's arrival time to ``record.tokens``. The caller bounds it with a timeout.
        """

    @abstractmethod
    def close(self) -> None:
        """Close the client's connection(s) at once."""


class Target(ABC):
    """A way to open streams: what a virtual client connects to and how tokens arrive."""

    name: str
    description: str

    @abstractmethod
    def client(self) -> TargetClient:
        """A new virtual client (connecting lazily, on its first stream)."""


class HttpTarget(Target):
    """A streaming HTTP endpoint: one prepared request, one body parser per stream."""

    def __init__(
        self,
        name: str,
        description: str,
        host: str,
        port: int,
        request: bytes,
        parser: Callable[[StreamRecord], BodyParser],
    ) -> None:
        self.name = name
        self.description = description
        self.host = host
        self.port = port
        self.request = request
        self.parser = parser

    def client(self) -> TargetClient:
        return _HttpClient(self)


class _HttpClient(TargetClient):
    """A virtual client holding one keep-alive connection, reopened after a failure."""

    def __init__(self, target: HttpTarget) -> None:
        self._target = target
        self._conn: HttpConnection | None = None

    async def stream(self, record: StreamRecord) -> None:
        target = self._target
        for attempt in range(2):
            conn = self._conn
            reused = conn is not None and not conn.closed
            if conn is None or conn.closed:
                try:
                    conn = await _connect(target.host, target.port)
                except OSError as exc:
                    raise StreamFailed(f"connect failed: {exc.strerror or exc}") from None
                self._conn = conn
            record.t_send = time.perf_counter()
            try:
                await conn.request(target.request, target.parser(record))
            except StreamFailed:
                # An idle keep-alive connection the peer closed before answering: retry
                # once on a new connection (any HTTP client does the same).
                if attempt == 0 and reused and not conn.received_any and conn.closed:
                    record.reset()
                    continue
                raise
            return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class Endpoints:
    """Where the children listen, and what the targets need to know to reach them."""

    model: str
    sim_host: str
    sim_port: int
    server_host: str | None = None
    server_port: int | None = None
    api_key: str | None = None


def _post(host: str, port: int, path: str, body: Any, headers: Sequence[str] = ()) -> bytes:
    data = orjson.dumps(body)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "User-Agent: loadtest-bench",
        "Content-Type: application/json",
        *headers,
        f"Content-Length: {len(data)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


# A voice-agent turn: a system prompt and a short conversation, as VAPI sends it.
_MESSAGES = [
    {
        "role": "system",
        "content": (
            "You are Riley, the receptionist of Bright Smile Dental. You speak on the phone: "
            "answer in one or two short sentences, no lists, no markdown. Opening hours are "
            "Monday to Friday, 8 am to 6 pm. You can book cleanings, check-ups and emergency "
            "visits; ask for the caller's name and a preferred day before booking."
        ),
    },
    {"role": "assistant", "content": "Bright Smile Dental, this is Riley. How can I help?"},
    {"role": "user", "content": "Hi, I'd like to book a cleaning, please."},
    {"role": "assistant", "content": "Of course. May I have your name, please?"},
    {"role": "user", "content": "It's Sam Taylor. Do you have anything next Tuesday afternoon?"},
]


def direct_target(ends: Endpoints) -> Target:
    """``POST /api/chat`` on the simulator, with the body the server itself would send."""
    body = {
        "model": ends.model,
        "stream": True,
        "think": False,
        "keep_alive": -1,
        "messages": _MESSAGES,
        "options": {"temperature": 0.5, "num_predict": 250},
    }
    request = _post(ends.sim_host, ends.sim_port, "/api/chat", body)
    return HttpTarget(
        "direct",
        "Ollama simulator, POST /api/chat, NDJSON",
        ends.sim_host,
        ends.sim_port,
        request,
        NdjsonTokens,
    )


def sse_target(ends: Endpoints) -> Target:
    """``POST /v1/chat/completions`` on the server, VAPI-shaped body, SSE answer."""
    assert ends.server_host is not None
    assert ends.server_port is not None
    body = {
        "model": "gpt-4o",
        "messages": _MESSAGES,
        "temperature": 0.5,
        "max_tokens": 250,
        "stream": True,
        "call": {
            "id": "0c9e1f3a-bench-4c1e-9d2a-5f6b7c8d9e0f",
            "orgId": "bench-org",
            "type": "webCall",
            "status": "in-progress",
            "monitor": {"controlUrl": "https://example.invalid/control"},
        },
        "metadata": {},
        "timestamp": 1767225600000,
    }
    headers = ["Accept: */*"]
    if ends.api_key:
        headers.append(f"Authorization: Bearer {ends.api_key}")
    request = _post(ends.server_host, ends.server_port, "/v1/chat/completions", body, headers)
    return HttpTarget(
        "sse",
        "server, POST /v1/chat/completions, SSE",
        ends.server_host,
        ends.server_port,
        request,
        SseTokens,
    )


class WsTarget(Target):
    """The server's ``/ws``: one socket per virtual client, kept open across its turns."""

    def __init__(
        self,
        name: str,
        description: str,
        host: str,
        port: int,
        headers: Sequence[str],
        fields: dict[str, Any],
    ) -> None:
        self.name = name
        self.description = description
        self.host = host
        self.port = port
        self.headers = tuple(headers)
        # A chat frame is this prefix, the turn id (digits, nothing to escape), and the
        # rest of the object: '{"type":"chat","id":"7",' + '"messages":[...],...}'.
        self._rest = b'",' + orjson.dumps(fields)[1:]

    def chat_frame(self, turn_id: str) -> bytes:
        """The ``chat`` frame of one turn, as UTF-8 JSON."""
        return b'{"type":"chat","id":"' + turn_id.encode() + self._rest

    def client(self) -> TargetClient:
        return _WsClient(self)


class _WsClient(TargetClient):
    """A virtual client holding one websocket, reopened after a failure; turn ids 1, 2..."""

    def __init__(self, target: WsTarget) -> None:
        self._target = target
        self._conn: WsConnection | None = None
        self._turns = 0

    async def stream(self, record: StreamRecord) -> None:
        target = self._target
        conn = self._conn
        if conn is None or conn.closed:
            conn = await ws_connect(target.host, target.port, "/ws", target.headers)
            self._conn = conn
        self._turns += 1
        turn_id = str(self._turns)
        await conn.turn(turn_id, target.chat_frame(turn_id), record)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def ws_target(ends: Endpoints) -> Target:
    """``/ws`` on the server: ``chat`` frames with the SSE target's messages and settings."""
    assert ends.server_host is not None
    assert ends.server_port is not None
    headers = [f"Authorization: Bearer {ends.api_key}"] if ends.api_key else []
    fields = {"messages": _MESSAGES, "temperature": 0.5, "max_tokens": 250}
    return WsTarget(
        "ws",
        "server, /ws, JSON text frames",
        ends.server_host,
        ends.server_port,
        headers,
        fields,
    )


# Target name -> (whether it needs the server started, factory).
TARGETS: dict[str, tuple[bool, Callable[[Endpoints], Target]]] = {
    "direct": (False, direct_target),
    "sse": (True, sse_target),
    "ws": (True, ws_target),
}


# --------------------------------------------------------------------------- child processes


def simulator_args(settings: Settings) -> list[str]:
    """The simulator's arguments: the simulated model, timings and slots, already loaded."""
    args = [
        "--model", settings.model,
        "--ttft", f"{settings.ttft_ms:g}", "--itl", f"{settings.itl_ms:g}",
        "--tokens", str(settings.tokens), "--parallel", str(settings.parallel),
        "--preloaded",
    ]  # fmt: skip
    if settings.jitter_ms is not None:
        args += ["--jitter", f"{settings.jitter_ms:g}"]
    return args


def server_args(settings: Settings) -> list[str]:
    """The server's arguments: ``--model``, the ``--server-arg`` ones, ``--max-concurrency``.

    Unless given, ``--max-concurrency`` is the simulator's slot count (as one matches it
    to ``OLLAMA_NUM_PARALLEL``), so the server admits every stream the simulator serves.
    """
    args = ["--model", settings.model, *settings.server_args]
    if not any(a == "--max-concurrency" or a.startswith("--max-concurrency=") for a in args):
        args += ["--max-concurrency", str(settings.parallel)]
    return args


# --------------------------------------------------------------------------- CPU accounting


def _schedstat_seconds(pid: int) -> float | None:
    """On-CPU time of all a process's live threads, in seconds (ns resolution), or None."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as stat:
                total += int(stat.read().split(maxsplit=1)[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


class CpuSampler:
    """Samples CPU time of the watched processes and of the whole machine.

    Samples are taken every 250 ms and on demand; :meth:`spent` interpolates linearly
    between them, so a window's CPU time does not depend on when its edges fall.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._pids = pids
        self.times: list[float] = []
        self.values: dict[str, list[float]] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Record one sample now."""
        now = time.perf_counter()
        row: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                cpu = proc.cpu_times()
                row[f"{name}.psutil"] = cpu.user + cpu.system
            except psutil.Error:
                row[f"{name}.psutil"] = math.nan
            precise = _schedstat_seconds(self._pids[name])
            row[f"{name}.sched"] = math.nan if precise is None else precise
        machine = psutil.cpu_times()
        row["machine.busy"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        self.times.append(now)
        for key, value in row.items():
            self.values.setdefault(key, []).append(value)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(_SAMPLE_INTERVAL)

    def start(self) -> None:
        """Start sampling in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _at(self, key: str, t: float) -> float:
        times, values = self.times, self.values[key]
        i = bisect_left(times, t)
        if i <= 0:
            return values[0]
        if i >= len(times):
            return values[-1]
        t0, t1 = times[i - 1], times[i]
        v0, v1 = values[i - 1], values[i]
        return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def spent(self, name: str, start: float, end: float) -> tuple[float, str]:
        """CPU seconds a process spent in ``[start, end]``, and the source used.

        The schedstat figure is used when available and consistent with psutil's
        (a thread that exits in the window drops out of the schedstat sum).
        """
        coarse = self._at(f"{name}.psutil", end) - self._at(f"{name}.psutil", start)
        fine = self._at(f"{name}.sched", end) - self._at(f"{name}.sched", start)
        if not math.isnan(fine) and fine >= 0 and abs(fine - coarse) <= 0.03 + 0.1 * coarse:
            return fine, "schedstat"
        return coarse, "psutil"

    def machine_busy(self, start: float, end: float) -> float:
        """Busy CPU seconds of the whole machine (all cores) in ``[start, end]``."""
        return self._at("machine.busy", end) - self._at("machine.busy", start)


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Settings:
    """Everything the command line decides."""

    levels: tuple[int, ...]
    targets: tuple[str, ...]
    model: str
    ttft_ms: float
    itl_ms: float
    tokens: int
    jitter_ms: float | None
    parallel: int
    duration: float | None
    streams: int | None
    warmup: float
    warmup_streams: int
    timeout: float
    drift_check: bool
    server_args: tuple[str, ...]
    api_key: str | None
    json_path: Path | None
    markdown_path: Path | None
    plot_path: Path | None

    @property
    def stream_seconds(self) -> float:
        """How long one simulated stream takes without any overhead."""
        return (self.ttft_ms + self.itl_ms * max(self.tokens - 1, 0)) / 1000.0


@dataclass
class RunResult:
    """Figures of one (target, concurrency) run; latencies in ms."""

    target: str
    concurrency: int
    repeat: int
    window_s: float
    window_note: str
    streams: int
    errors: int
    error_reasons: dict[str, int]
    tokens: int
    tokens_per_s: float
    tokens_per_stream: float
    chars_per_stream: float
    ttft_p50: float
    ttft_p90: float
    ttft_p99: float
    itl_p50: float
    itl_p99: float
    cpu_us_per_token: dict[str, float]
    cpu_busy_pct: dict[str, float]
    cpu_source: dict[str, str]
    sim_stats: dict[str, Any] | None
    ttfts: list[float] = field(repr=False)
    itls: list[float] = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        """The figures without the raw samples."""
        return {k: v for k, v in self.__dict__.items() if k not in ("ttfts", "itls")}


async def _virtual_client(
    index: int,
    client: TargetClient,
    records: list[StreamRecord],
    delay: float,
    settings: Settings,
    window: tuple[float, float] | None,
) -> None:
    """Stream one turn after another until the plan says stop; never raises."""
    await asyncio.sleep(delay)
    seq = 0
    planned = None if settings.streams is None else settings.warmup_streams + settings.streams
    while True:
        if window is not None:
            if time.perf_counter() >= window[1]:
                return
        elif planned is not None and seq >= planned:
            return
        record = StreamRecord(index, seq)
        records.append(record)
        # The target sets it again just before writing the request; this value stands
        # for a stream that fails before that (to connect, say).
        record.t_send = time.perf_counter()
        try:
            async with asyncio.timeout(settings.timeout):
                await client.stream(record)
            if not record.tokens:
                record.error = "stream had no content token"
        except TimeoutError:
            record.error = f"timeout after {settings.timeout:g} s"
        except StreamFailed as exc:
            record.error = str(exc)
        except Exception as exc:  # a failure is counted, never allowed to stop the run
            record.error = f"{type(exc).__name__}: {exc}"
        record.t_end = time.perf_counter()
        if window is not None:
            record.measured = record.t_send >= window[0]
        else:
            record.measured = seq >= settings.warmup_streams
        seq += 1
        if record.error is not None:
            client.close()
            await asyncio.sleep(_ERROR_BACKOFF)


def _streams_window(records: list[StreamRecord]) -> tuple[float, float, str]:
    """The steady window of a ``--streams`` run: every client is in its measured streams."""
    firsts: dict[int, float] = {}
    lasts: dict[int, float] = {}
    for r in records:
        if r.measured:
            firsts[r.client] = min(firsts.get(r.client, math.inf), r.t_send)
            lasts[r.client] = max(lasts.get(r.client, -math.inf), r.t_end)
    if not firsts:
        return 0.0, 0.0, "no measured stream"
    start, end = max(firsts.values()), min(lasts.values())
    if end - start >= 0.5:
        return start, end, "steady window (all clients in their measured streams)"
    start, end = min(firsts.values()), max(lasts.values())
    return start, end, "whole measured phase, with ramp-up/down (steady window too short)"


async def run_once(
    target: Target,
    concurrency: int,
    repeat: int,
    settings: Settings,
    sampler: CpuSampler,
    sim: Endpoints,
) -> RunResult:
    """Drive ``concurrency`` virtual clients against one target and compute its figures."""
    sim_before = await http_get_json(sim.sim_host, sim.sim_port, "/_sim/stats")
    period = settings.stream_seconds
    records: list[StreamRecord] = []
    clients = [target.client() for _ in range(concurrency)]
    t0 = time.perf_counter()
    window: tuple[float, float] | None = None
    markers: asyncio.Task[None] | None = None
    sim_mid: Any = None
    if settings.streams is None:
        assert settings.duration is not None
        start = t0 + max(settings.warmup, period + 0.2)
        window = (start, start + settings.duration)

        async def mark() -> None:
            # CPU samples exactly at the window's edges; the simulator's gauges halfway.
            nonlocal sim_mid
            start, end = window
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            sampler.sample()
            await asyncio.sleep(max(0.0, (start + end) / 2 - time.perf_counter()))
            sim_mid = await http_get_json(sim.sim_host, sim.sim_port, "/_sim/stats", 1.0)
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
            sampler.sample()

        markers = asyncio.create_task(mark())
    # Client starts are spread over one stream's duration, so that the streams do not
    # march in lockstep (a real caller population arrives at random moments).
    tasks = [
        asyncio.create_task(
            _virtual_client(i, c, records, i * period / concurrency, settings, window)
        )
        for i, c in enumerate(clients)
    ]
    try:
        await asyncio.gather(*tasks)
        if markers is not None:
            await markers
    finally:
        for task in tasks:
            task.cancel()
        if markers is not None:
            markers.cancel()
        for client in clients:
            client.close()
    sampler.sample()
    sim_after = await http_get_json(sim.sim_host, sim.sim_port, "/_sim/stats")

    if window is not None:
        start, end = window
        note = "fixed window after the warm-up"
    else:
        start, end, note = _streams_window(records)
    span = max(end - start, 1e-9)
    measured = [r for r in records if r.measured]
    good = [r for r in measured if r.error is None]
    ttfts = sorted((r.tokens[0] - r.t_send) * 1000.0 for r in good)
    itls = sorted((b - a) * 1000.0 for r in good for a, b in pairwise(r.tokens))
    tokens = sum(bisect_right(r.tokens, end) - bisect_left(r.tokens, start) for r in records)
    reasons = Counter(r.error for r in measured if r.error is not None)
    warm_reasons = Counter(r.error for r in records if not r.measured and r.error is not None)
    for reason, count in warm_reasons.items():
        reasons[f"(warm-up) {reason}"] += count

    cpu_us: dict[str, float] = {}
    busy: dict[str, float] = {}
    source: dict[str, str] = {}
    for name in ("server", "sim", "bench"):
        if f"{name}.psutil" not in sampler.values:
            continue  # no server in a direct-only benchmark
        seconds, source[name] = sampler.spent(name, start, end)
        cpu_us[name] = seconds * 1e6 / tokens if tokens else math.nan
        busy[name] = 100.0 * seconds / span
    # Machine-wide busy time, and the part of it no watched process accounts for
    # (other programs on the machine), both as % of all cores.
    all_cores = span * (os.cpu_count() or 1)
    machine = sampler.machine_busy(start, end)
    watched = sum(busy.values()) * span / 100.0
    busy["machine"] = 100.0 * machine / all_cores
    busy["other"] = max(0.0, 100.0 * (machine - watched) / all_cores)

    return RunResult(
        target=target.name,
        concurrency=concurrency,
        repeat=repeat,
        window_s=span,
        window_note=note,
        streams=len(measured),
        errors=sum(1 for r in measured if r.error is not None),
        error_reasons=dict(reasons),
        tokens=tokens,
        tokens_per_s=tokens / span,
        tokens_per_stream=sum(len(r.tokens) for r in good) / len(good) if good else math.nan,
        chars_per_stream=sum(r.chars for r in good) / len(good) if good else math.nan,
        ttft_p50=percentile(ttfts, 50),
        ttft_p90=percentile(ttfts, 90),
        ttft_p99=percentile(ttfts, 99),
        itl_p50=percentile(itls, 50),
        itl_p99=percentile(itls, 99),
        cpu_us_per_token=cpu_us,
        cpu_busy_pct=busy,
        cpu_source=source,
        sim_stats=_stats_delta(sim_before, sim_mid, sim_after),
        ttfts=ttfts,
        itls=itls,
    )


def _stats_delta(before: Any, mid: Any, after: Any) -> dict[str, Any] | None:
    """The simulator's gauges halfway through the window and after the run, with the change
    of each numeric counter over the run."""
    if not isinstance(after, dict):
        return None
    result: dict[str, Any] = {"mid": mid, "after": after}
    if isinstance(before, dict):
        result["delta"] = {
            k: v - before[k]
            for k, v in after.items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and isinstance(before.get(k), int | float)
        }
    return result


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Check:
    """One server-vs-direct figure, with its target if it has one."""

    label: str
    value: float
    unit: str
    limit: float | None
    passed: bool | None

    def as_json(self) -> dict[str, Any]:
        """The check as plain data."""
        return self.__dict__.copy()


def _pooled(runs: list[RunResult]) -> dict[str, float]:
    ttfts = sorted(v for r in runs for v in r.ttfts)
    itls = sorted(v for r in runs for v in r.itls)
    return {
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        "itl_p99": percentile(itls, 99),
        "tokens_per_s": sum(r.tokens_per_s for r in runs) / len(runs),
    }


@dataclass(frozen=True)
class LevelTargets:
    """The most the server may add at one concurrency level (None: not checked)."""

    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    itl_p99_ms: float | None = None
    cpu_us_per_token: float | None = None


# At 1 stream the TTFT p99 of a run is its slowest stream of about ten, and every token
# is a wake-up from idle (the simulator spends as much CPU per token there as the
# server): those figures are shown for information. CPU per token is checked under load.
LEVEL_TARGETS: dict[int, LevelTargets] = {
    1: LevelTargets(ttft_p50_ms=1.0),
    50: LevelTargets(ttft_p50_ms=2.0, ttft_p99_ms=10.0, itl_p99_ms=5.0, cpu_us_per_token=25.0),
}


def _check(label: str, value: float, unit: str, limit: float | None) -> Check:
    passed = None if limit is None else (not math.isnan(value) and value <= limit)
    return Check(label, value, unit, limit, passed)


def compare(direct: list[RunResult], other: RunResult) -> list[Check]:
    """The checks of one server run against its pooled direct baseline."""
    base = _pooled(direct)
    goal = LEVEL_TARGETS.get(other.concurrency)
    limits = goal or LevelTargets()
    ratio = other.tokens_per_s / base["tokens_per_s"] if base["tokens_per_s"] else math.nan
    return [
        _check("TTFT p50 delta", other.ttft_p50 - base["ttft_p50"], "ms", limits.ttft_p50_ms),
        _check("TTFT p99 delta", other.ttft_p99 - base["ttft_p99"], "ms", limits.ttft_p99_ms),
        _check("ITL p99 delta", other.itl_p99 - base["itl_p99"], "ms", limits.itl_p99_ms),
        _check("throughput ratio", ratio, "x", None),
        _check(
            "server CPU per token",
            other.cpu_us_per_token.get("server", math.nan),
            "us",
            limits.cpu_us_per_token,
        ),
        _check("errors", float(other.errors), "", 0.0 if goal is not None else None),
    ]


def drift(direct: list[RunResult]) -> dict[str, float] | None:
    """Second direct run minus the first: how much the machine moved over the level."""
    if len(direct) < 2:
        return None
    a, b = direct[0], direct[-1]
    return {
        "ttft_p50": b.ttft_p50 - a.ttft_p50,
        "ttft_p99": b.ttft_p99 - a.ttft_p99,
        "itl_p99": b.itl_p99 - a.itl_p99,
        "throughput_ratio": b.tokens_per_s / a.tokens_per_s if a.tokens_per_s else math.nan,
    }


# --------------------------------------------------------------------------- report


def _f(value: float, digits: int = 1, sign: bool = False) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_table(results: list[RunResult]) -> str:
    """The per-run table."""
    head = (
        f"{'conc':>4} {'target':<9} {'streams':>7} {'err':>4} "
        f"{'TTFT p50':>8} {'p90':>7} {'p99':>7}  {'ITL p50':>7} {'p99':>6}  "
        f"{'tok/s':>7} {'tok/str':>7}  {'server':>6} {'sim':>6} {'bench':>6}  "
        f"{'busy':>5} {'other':>5}"
    )
    units = (
        f"{'':>4} {'':<9} {'':>7} {'':>4} {'ms':>8} {'ms':>7} {'ms':>7}  {'ms':>7} {'ms':>6}  "
        f"{'':>7} {'':>7}  {'CPU us per token':>20}  {'% of all cores':>11}"
    )
    lines = [head, units, "-" * len(head)]
    for r in results:
        name = r.target if r.repeat == 1 else f"{r.target}#{r.repeat}"
        cpu = r.cpu_us_per_token
        server = _f(cpu.get("server", math.nan)) if r.target != "direct" else "-"
        lines.append(
            f"{r.concurrency:>4} {name:<9} {r.streams:>7} {r.errors:>4} "
            f"{_f(r.ttft_p50, 2):>8} {_f(r.ttft_p90, 2):>7} {_f(r.ttft_p99, 2):>7}  "
            f"{_f(r.itl_p50, 2):>7} {_f(r.itl_p99, 2):>6}  "
            f"{_f(r.tokens_per_s, 0):>7} {_f(r.tokens_per_stream, 1):>7}  "
            f"{server:>6} {_f(cpu.get('sim', math.nan)):>6} {_f(cpu.get('bench', math.nan)):>6}  "
            f"{_f(r.cpu_busy_pct.get('machine', math.nan), 0):>5} "
            f"{_f(r.cpu_busy_pct.get('other', math.nan), 0):>5}"
        )
    return "\n".join(lines)


def format_checks(
    level: int, name: str, checks: list[Check], moved: dict[str, float] | None
) -> str:
    """The server-vs-direct block of one level."""
    lines = [f"{name} vs direct at {level} stream{'s' if level != 1 else ''}:"]
    for c in checks:
        if c.unit == "x":
            value = f"{c.value:.3f}x"
        elif c.unit == "ms":
            value = f"{_f(c.value, 2, sign=True)} ms"
        elif c.unit == "us":
            value = f"{_f(c.value, 1)} us/token"
        else:
            value = f"{c.value:.0f}"
        if c.limit is None:
            target = "(information)"
        elif c.unit == "ms":
            target = f"target <= +{c.limit:g} ms"
        elif c.unit == "us":
            target = f"target <= {c.limit:g} us"
        else:
            target = f"target {c.limit:g}"
        mark = "" if c.passed is None else ("PASS" if c.passed else "MISS")
        lines.append(f"  {c.label:<22} {value:>16}   {target:<20} {mark}")
    if moved is not None:
        lines.append(
            "  drift (direct#2 - direct#1): "
            f"TTFT p50 {_f(moved['ttft_p50'], 2, True)} ms, "
            f"TTFT p99 {_f(moved['ttft_p99'], 2, True)} ms, "
            f"ITL p99 {_f(moved['itl_p99'], 2, True)} ms, "
            f"throughput x{moved['throughput_ratio']:.3f}"
        )
        margins = {"ttft_p50": checks[0].limit, "ttft_p99": checks[1].limit}
        margins["itl_p99"] = checks[2].limit
        for key, margin in margins.items():
            if margin is not None and abs(moved[key]) > margin / 2:
                lines.append(
                    f"  ! drift of {key} ({moved[key]:+.2f} ms) is over half its margin: "
                    "this comparison is within the noise, run again"
                )
    return "\n".join(lines)


def observations(results: list[RunResult]) -> list[str]:
    """Things in the figures that make them less trustworthy."""
    notes = []
    for r in results:
        name = f"{r.target}#{r.repeat} at {r.concurrency}"
        machine = r.cpu_busy_pct.get("machine", 0.0)
        bench = r.cpu_busy_pct.get("bench", 0.0)
        other = r.cpu_busy_pct.get("other", 0.0)
        if other >= 10.0:
            notes.append(
                f"{name}: other programs kept {other:.0f}% of the machine's cores busy "
                "during the window: its figures are disturbed"
            )
        if machine >= 90.0:
            notes.append(
                f"{name}: the machine was {machine:.0f}% busy (server "
                f"{r.cpu_busy_pct.get('server', 0):.0f}%, simulator "
                f"{r.cpu_busy_pct.get('sim', 0):.0f}%, load generator {bench:.0f}% of a core): "
                "CPU-saturated, its latencies include waiting for a core"
            )
        elif bench >= 50.0:
            notes.append(f"{name}: the load generator used {bench:.0f}% of a core")
        sim_busy = r.cpu_busy_pct.get("sim", 0.0)
        if sim_busy >= 80.0:
            notes.append(
                f"{name}: the simulator used {sim_busy:.0f}% of its one core: the baseline "
                "itself is CPU-bound at this level"
            )
        mid = (r.sim_stats or {}).get("mid")
        if isinstance(mid, dict) and mid.get("queued"):
            notes.append(
                f"{name}: the simulator had {mid['queued']} requests queued for a slot "
                "halfway through the window (Ollama-side queueing)"
            )
        if r.errors:
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(r.error_reasons.items()))
            notes.append(f"{name}: {r.errors} failed streams: {reasons}")
        elif r.error_reasons:
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(r.error_reasons.items()))
            notes.append(f"{name}: {reasons}")
        if r.window_note.startswith("whole"):
            notes.append(f"{name}: {r.window_note}")
        if "psutil" in r.cpu_source.values():
            notes.append(f"{name}: CPU from psutil ticks (10 ms resolution) for {r.cpu_source}")
    by_level: dict[int, dict[str, float]] = {}
    for r in results:
        by_level.setdefault(r.concurrency, {})[r.target] = r.chars_per_stream
    for level, chars in by_level.items():
        values = [v for v in chars.values() if not math.isnan(v)]
        if values and max(values) - min(values) > 0.5:
            notes.append(f"at {level}: content per stream differs between targets: {chars}")
    return notes


def _by_target_level(results: list[RunResult]) -> dict[str, dict[int, list[RunResult]]]:
    grouped: dict[str, dict[int, list[RunResult]]] = {}
    for r in results:
        grouped.setdefault(r.target, {}).setdefault(r.concurrency, []).append(r)
    return grouped


def _cell(check: dict[str, Any]) -> str:
    value = float(check["value"])
    if check["unit"] == "ms":
        text = _f(value, 2, sign=True)
    elif check["unit"] == "x":
        text = "-" if math.isnan(value) else f"{value:.3f}x"
    elif check["unit"] == "us":
        text = _f(value, 1)
    else:
        text = f"{value:.0f}"
    if check["passed"] is None:
        return text
    limit = f"{check['limit']:g}"
    return f"{text} (≤ {limit}) PASS" if check["passed"] else f"{text} (≤ {limit}) **MISS**"


def format_markdown(
    settings: Settings, results: list[RunResult], data: dict[str, Any], when: str
) -> str:
    """The runs, the server-vs-direct checks and the observations as a markdown document."""
    lines = [
        "# Benchmark: the server against direct (simulated) Ollama",
        "",
        f"Run {when}, total time {data['elapsed_s']:.0f} s; "
        f"targets: {data['passed']} PASS, {data['missed']} MISS.",
        "",
        *(f"- {line}" for line in describe(settings)),
        "",
        "## Runs",
        "",
        "TTFT and ITL in ms; CPU in µs per content token; busy and other in % of all cores "
        "(other: busy time of programs outside the benchmark).",
        "",
        "| streams | target | measured | errors | TTFT p50 | TTFT p90 | TTFT p99 | ITL p50 "
        "| ITL p99 | tokens/s | server CPU | sim CPU | bench CPU | busy | other |",
        "| ---: | :--- |" + " ---: |" * 13,
    ]
    for r in results:
        cpu = r.cpu_us_per_token
        server = _f(cpu.get("server", math.nan)) if r.target != "direct" else "-"
        name = r.target if r.repeat == 1 else f"{r.target}#{r.repeat}"
        cells = [
            str(r.concurrency), name, str(r.streams), str(r.errors),
            _f(r.ttft_p50, 2), _f(r.ttft_p90, 2), _f(r.ttft_p99, 2),
            _f(r.itl_p50, 2), _f(r.itl_p99, 2), _f(r.tokens_per_s, 0),
            server, _f(cpu.get("sim", math.nan)), _f(cpu.get("bench", math.nan)),
            _f(r.cpu_busy_pct.get("machine", math.nan), 0),
            _f(r.cpu_busy_pct.get("other", math.nan), 0),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if data["comparisons"]:
        lines += [
            "",
            "## Server against direct",
            "",
            "Differences from the pooled direct runs of the same level (ms), throughput "
            "ratio, the server's CPU per token (µs), failed streams; a target in brackets "
            "where one applies. Drift: the second direct run minus the first (TTFT p50 / p99).",
            "",
            "| streams | target | TTFT p50 | TTFT p99 | ITL p99 | throughput | server CPU "
            "| errors | drift |",
            "| ---: | :--- |" + " ---: |" * 7,
        ]
        for comp in data["comparisons"]:
            moved = comp["drift"]
            shift = (
                "-"
                if moved is None
                else f"{_f(moved['ttft_p50'], 2, True)} / {_f(moved['ttft_p99'], 2, True)}"
            )
            cells = [str(comp["level"]), comp["target"], *map(_cell, comp["checks"]), shift]
            lines.append("| " + " | ".join(cells) + " |")
    if data["observations"]:
        lines += ["", "## Observations", ""]
        lines += [f"- {note}" for note in data["observations"]]
    return "\n".join(lines) + "\n"


_DELTA_TICKS = (-20, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def plot_scaling(settings: Settings, results: list[RunResult], path: Path) -> None:
    """A PNG: TTFT p50 and p99 against concurrency for each target (log-scale x), and
    beside it each server target's difference from direct."""
    # Imported here: only this report needs matplotlib, and it takes a while to load.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    grouped = _by_target_level(results)
    pooled = {
        name: {level: _pooled(runs) for level, runs in sorted(levels.items())}
        for name, levels in grouped.items()
    }
    fig, (absolute, delta) = plt.subplots(1, 2, figsize=(13, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    values: list[float] = []
    deltas: list[float] = []
    base = pooled.get("direct", {})
    for i, name in enumerate(settings.targets):
        figures = pooled.get(name)
        if not figures:
            continue
        color = colors[i % len(colors)]
        levels = list(figures)
        p50 = [figures[level]["ttft_p50"] for level in levels]
        p99 = [figures[level]["ttft_p99"] for level in levels]
        values += [v for v in p50 + p99 if not math.isnan(v)]
        absolute.plot(levels, p50, "o-", color=color, label=f"{name} p50")
        absolute.plot(levels, p99, "s--", color=color, label=f"{name} p99")
        shared = [level for level in levels if level in base]
        if name == "direct" or not shared:
            continue
        d50 = [figures[level]["ttft_p50"] - base[level]["ttft_p50"] for level in shared]
        d99 = [figures[level]["ttft_p99"] - base[level]["ttft_p99"] for level in shared]
        deltas += [v for v in d50 + d99 if not math.isnan(v)]
        delta.plot(shared, d50, "o-", color=color, label=f"{name} p50 - direct p50")
        delta.plot(shared, d99, "s--", color=color, label=f"{name} p99 - direct p99")
    labels = {"v": "target, p50", "^": "target, p99"}
    for level, goal in LEVEL_TARGETS.items():
        for limit, marker in ((goal.ttft_p50_ms, "v"), (goal.ttft_p99_ms, "^")):
            if limit is not None and level in settings.levels and deltas:
                label = labels.pop(marker, None)
                delta.plot([level], [limit], marker, color="black", markersize=8, label=label)
    delta.axhline(0.0, color="grey", linewidth=0.8)
    if values and max(values) > 20 * min(values):
        absolute.set_yscale("log")
    if deltas and max(abs(v) for v in deltas) > 25:
        # Linear up to 2 ms, where the targets are, logarithmic above.
        delta.set_yscale("symlog", linthresh=2.0, linscale=1.5)
        low = min(-0.5, 1.3 * min(deltas))
        high = 1.5 * max(deltas)
        delta.set_ylim(low, high)
        delta.set_yticks([t for t in _DELTA_TICKS if low <= t <= high])
        delta.yaxis.set_major_formatter(ScalarFormatter())
    for ax in (absolute, delta):
        ax.set_xscale("log")
        ax.set_xticks(list(settings.levels))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.minorticks_off()
        ax.set_xlabel("concurrent streams")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    absolute.set_ylabel("time to first token (ms)")
    absolute.set_title("TTFT against concurrency")
    delta.set_ylabel("added by the server (ms)")
    delta.set_title("server minus direct")
    others = [r.cpu_busy_pct.get("other", 0.0) for r in results]
    load = (
        f"; other programs busy: {min(others):.0f} to {max(others):.0f}% of all cores "
        f"(mean {sum(others) / len(others):.0f}%)"
        if others
        else ""
    )
    fig.suptitle(describe(settings)[0] + load, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("levels must be positive integers")
    return values


def _csv_targets(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in TARGETS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(
            f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}"
        )
    return values


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="Compare the server with direct (simulated) Ollama under the same load.",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="the scaling run: levels 1,10,50,200,500 (unless --levels), markdown table "
        "and plot written (default paths under bench-results/)",
    )
    parser.add_argument(
        "--levels",
        type=_csv_ints,
        default=None,
        help="concurrent streams per level (default 1,50,200; with --scaling 1,10,50,200,500)",
    )
    parser.add_argument(
        "--targets",
        type=_csv_targets,
        default=("direct", "sse", "ws"),
        help=f"targets, in order (default direct,sse,ws; known: {','.join(TARGETS)})",
    )
    parser.add_argument("--ttft", type=float, default=50.0, help="simulated ms to first token")
    parser.add_argument("--itl", type=float, default=20.0, help="simulated ms between tokens")
    parser.add_argument("--tokens", type=int, default=40, help="simulated tokens per answer")
    parser.add_argument("--jitter", type=float, default=None, help="simulator jitter, ms")
    parser.add_argument(
        "--parallel", type=int, default=None, help="simulator slots (default: the highest level)"
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--duration", type=float, default=None, help="measured seconds per run (default 8)"
    )
    amount.add_argument(
        "--streams",
        type=int,
        default=None,
        help="measured streams per client per run, instead of --duration",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.5,
        help="discarded seconds before the window (--duration mode; default "
        "1.5, at least one stream's length)",
    )
    parser.add_argument(
        "--warmup-streams",
        type=int,
        default=1,
        help="discarded streams per client (--streams mode; default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds a stream may take before it counts as failed",
    )
    parser.add_argument(
        "--no-drift-check",
        action="store_true",
        help="do not run direct again after the server at each level",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="argument passed to the server, repeatable; write --server-arg=--flag=value",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write all figures as JSON here",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"also write the tables as markdown here (with --scaling default {SCALING_MARKDOWN})",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="also plot TTFT against concurrency as a PNG here "
        f"(with --scaling default {SCALING_PLOT})",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.streams is None and args.duration is None:
        args.duration = 8.0
    if args.levels is None:
        args.levels = SCALING_LEVELS if args.scaling else DEFAULT_LEVELS
    if args.scaling:
        args.markdown = args.markdown or SCALING_MARKDOWN
        args.plot = args.plot or SCALING_PLOT
    server_args = tuple(args.server_arg)
    api_key = None
    for i, arg in enumerate(server_args):
        if arg == "--api-key" and i + 1 < len(server_args):
            api_key = server_args[i + 1]
        elif arg.startswith("--api-key="):
            api_key = arg.split("=", 1)[1]
    return Settings(
        levels=args.levels,
        targets=args.targets,
        model=args.model,
        ttft_ms=args.ttft,
        itl_ms=args.itl,
        tokens=args.tokens,
        jitter_ms=args.jitter,
        parallel=args.parallel or max(args.levels),
        duration=args.duration,
        streams=args.streams,
        warmup=args.warmup,
        warmup_streams=args.warmup_streams,
        timeout=args.timeout,
        drift_check=not args.no_drift_check,
        server_args=server_args,
        api_key=api_key,
        json_path=args.json,
        markdown_path=args.markdown,
        plot_path=args.plot,
    )


def _plan(settings: Settings) -> list[tuple[int, str, int]]:
    """(level, target, repeat) in run order: each level's targets, then direct again."""
    plan = []
    for level in settings.levels:
        for name in settings.targets:
            plan.append((level, name, 1))
        others = [n for n in settings.targets if n != "direct"]
        if settings.drift_check and "direct" in settings.targets and others:
            plan.append((level, "direct", 2))
    return plan


async def _bench(
    settings: Settings, ends: Endpoints, pids: dict[str, int], children: list[Child]
) -> list[RunResult]:
    """Every run of the plan, in order; stops early if a child process dies."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    targets = {name: TARGETS[name][1](ends) for name in settings.targets}
    sampler = CpuSampler(pids)
    sampler.start()
    results: list[RunResult] = []
    try:
        for level, name, repeat in _plan(settings):
            if any(child.popen.poll() is not None for child in children):
                break
            label = name if repeat == 1 else f"{name}#{repeat}"
            print(f"  running {label} at {level} ...", file=sys.stderr, flush=True)
            result = await run_once(targets[name], level, repeat, settings, sampler, ends)
            results.append(result)
            await asyncio.sleep(_SETTLE)
    finally:
        await sampler.stop()
    return results


def describe(settings: Settings) -> list[str]:
    """The lines that say how the figures were produced."""
    mode = (
        f"{settings.duration:g} s window after a {settings.warmup:g} s warm-up"
        if settings.streams is None
        else f"{settings.streams} streams per client after {settings.warmup_streams} warm-up"
    )
    lines = [
        f"simulator: {settings.ttft_ms:g} ms to first token, {settings.itl_ms:g} ms between "
        f"tokens, {settings.tokens} tokens, {settings.parallel} slots"
        + (f", jitter {settings.jitter_ms:g} ms" if settings.jitter_ms is not None else ""),
        f"load: closed loop, one keep-alive connection or websocket per client, starts spread "
        f"over one stream; {mode}; per-stream timeout {settings.timeout:g} s",
    ]
    first = [
        (name, repeat) for level, name, repeat in _plan(settings) if level == settings.levels[0]
    ]
    order = ", ".join(name if repeat == 1 else f"{name}#{repeat}" for name, repeat in first)
    lines.append(f"order per level: {order}")
    if any(repeat == 2 for _, _, repeat in _plan(settings)):
        lines.append(
            "baseline: the direct runs before and after the server are pooled; "
            "their difference is printed as the drift"
        )
    lines.append(
        "CPU: on-CPU time per content token over the window (schedstat ns, psutil checked); "
        "busy: whole machine; other: busy time no watched process accounts for"
    )
    if any(TARGETS[name][0] for name in settings.targets):
        shown = server_args(settings)
        for i, arg in enumerate(shown):
            if shown[i - 1] == "--api-key" and i:
                shown[i] = "***"
            elif arg.startswith("--api-key="):
                shown[i] = "--api-key=***"
        lines.append(f"server arguments: {' '.join(shown)}")
    lines.append(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    return lines


def report(settings: Settings, results: list[RunResult], elapsed: float) -> dict[str, Any]:
    """Print the tables and return every figure as plain data."""
    print()
    for line in describe(settings):
        print(line)
    print()
    print(format_table(results))
    comparisons: list[dict[str, Any]] = []
    for level in settings.levels:
        direct = [r for r in results if r.concurrency == level and r.target == "direct"]
        if not direct:
            continue
        for r in results:
            if r.concurrency != level or r.target == "direct":
                continue
            checks = compare(direct, r)
            moved = drift(direct)
            print()
            print(format_checks(level, r.target, checks, moved))
            comparisons.append(
                {
                    "level": level,
                    "target": r.target,
                    "checks": [c.as_json() for c in checks],
                    "drift": moved,
                }
            )
    verdicts = [c["passed"] for comp in comparisons for c in comp["checks"]]
    passed = sum(1 for v in verdicts if v is True)
    missed = sum(1 for v in verdicts if v is False)
    notes = observations(results)
    if notes:
        print()
        print("observations:")
        for note in notes:
            print(f"  - {note}")
    print()
    print(f"targets: {passed} PASS, {missed} MISS; total time {elapsed:.0f} s")
    return {
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in settings.__dict__.items()
            if k != "api_key"
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": [r.as_json() for r in results],
        "comparisons": comparisons,
        "observations": notes,
        "passed": passed,
        "missed": missed,
        "elapsed_s": elapsed,
    }


def _log_warnings(child: Child) -> list[str]:
    return [
        line
        for line in child.log_text().splitlines()
        if " WARNING " in line or " ERROR " in line or "Traceback" in line
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Start the children, run every level against every target, report, stop the children."""
    settings = parse_args(argv)
    started = time.perf_counter()
    wall_start = time.time()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    children: list[Child] = []
    failed = False
    try:
        sim = start_simulator(simulator_args(settings), log_dir)
        children.append(sim)
        sim_host, sim_port = sim.url.split("://", 1)[1].rsplit(":", 1)
        pids = {"sim": sim.pid, "bench": os.getpid()}
        ends = Endpoints(settings.model, sim_host, int(sim_port), api_key=settings.api_key)
        server: Child | None = None
        if any(TARGETS[name][0] for name in settings.targets):
            server = start_server(sim.url, server_args(settings), log_dir)
            children.append(server)
            pids["server"] = server.pid
            host, port = server.url.split("://", 1)[1].rsplit(":", 1)
            ends = Endpoints(
                settings.model, sim_host, int(sim_port), host, int(port), settings.api_key
            )
        print(
            f"simulator pid {sim.pid} at {sim.url}"
            + (f"; server pid {server.pid} at {server.url}" if server else ""),
            file=sys.stderr,
        )
        results = uvloop.run(_bench(settings, ends, pids, children))
        data = report(settings, results, time.perf_counter() - started)
        if server is not None:
            warnings = _log_warnings(server)
            if warnings:
                print(f"server log: {len(warnings)} warning/error lines, first ones:")
                for line in warnings[:5]:
                    print(f"  {line}")
            data["server_log_warnings"] = warnings[:50]
        if settings.json_path is not None:
            settings.json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            print(f"figures written to {settings.json_path}")
        if settings.markdown_path is not None:
            when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(wall_start))
            settings.markdown_path.parent.mkdir(parents=True, exist_ok=True)
            settings.markdown_path.write_text(format_markdown(settings, results, data, when))
            print(f"markdown table written to {settings.markdown_path}")
        if settings.plot_path is not None:
            plot_scaling(settings, results, settings.plot_path)
            print(f"plot written to {settings.plot_path}")
        for child in children:
            child.check_alive()  # a child that died mid-run makes the figures suspect
        return 1 if data["missed"] else 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        failed = True
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        failed = True
        return 2
    finally:
        for child in reversed(children):
            child.stop()
        if failed:
            print(f"child logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
