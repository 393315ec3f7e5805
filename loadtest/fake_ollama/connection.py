"""HTTP/1.1 on a raw ``asyncio.Protocol``: httptools parses, replies go out whole or chunked.

Responses are framed as Ollama's Go server (net/http and gin) frames them: a
handler's body of up to 2048 bytes gets a ``Content-Length``, a longer one goes
out chunked (net/http's ``bufferBeforeChunkingSize``), and a stream is chunked
from its first flush. Each write is one ``transport.write``, and a client that
goes away is seen at once in ``connection_lost``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from http import HTTPStatus
from typing import Any, Final, Protocol, cast

import httptools

from .wire import CLOCK, go_json

TEXT_PLAIN: Final = b"text/plain; charset=utf-8"
TEXT_PLAIN_GIN: Final = b"text/plain"
_JSON: Final = b"application/json; charset=utf-8"
JSON_BARE: Final = b"application/json"
CHUNK_END: Final = b"0\r\n\r\n"
# net/http buffers this much of a handler's body before it gives up on Content-Length.
_BUFFER_BEFORE_CHUNKING: Final = 2048
_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %b\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}


def _status_line(status: int) -> bytes:
    """The HTTP/1.1 status line for ``status``, worded as Go's net/http words it."""
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d status code %d\r\n" % (status, status)


@dataclasses.dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: bytes
    target: bytes
    host: bytes
    body: bytes
    keep_alive: bool


class Exchange(Protocol):
    """A reply in progress on a connection."""

    def client_lost(self) -> None:
        """The client's connection went away before the reply ended."""


class Dispatcher(Protocol):
    """What a connection needs from the server that accepted it."""

    connections: set[Connection]
    connections_total: int

    def dispatch(self, conn: Connection, request: Request) -> None:
        """Answer ``request``, received on ``conn``."""


class Connection(asyncio.Protocol):
    """One client connection: httptools parses requests, replies are written whole or chunked."""

    def __init__(self, server: Dispatcher) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self._url = b""
        self._host = b""
        self._body: list[bytes] = []
        self._ready: list[Request] = []
        self.exchange: Exchange | None = None
        self.keep_alive = True
        self.head_only = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection; tokens go out without Nagle delay."""
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)
        self._server.connections_total += 1

    def data_received(self, data: bytes) -> None:
        """Parse, then dispatch the requests completed by ``data`` in order."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self.exchange is None:
                self.keep_alive = False
                self.head_only = False
                self.respond(400, TEXT_PLAIN, b"400 Bad Request")
            else:
                self.drop()
            return
        ready, self._ready = self._ready, []
        for request in ready:
            if self._closing:
                return
            if self.exchange is not None:
                # A pipelined request while a reply is in flight: not supported.
                self.drop()
                return
            self._server.dispatch(self, request)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: cancel the reply in flight, if any."""
        self._closing = True
        self._server.connections.discard(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_lost()

    def on_message_begin(self) -> None:
        """httptools: a new request starts."""
        self._url = b""
        self._host = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        """httptools: (part of) the request target."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header; only Host and Expect matter here."""
        lowered = name.lower()
        if lowered == b"host":
            self._host = value
        elif (
            lowered == b"expect"
            and value.lower() == b"100-continue"
            and self._transport is not None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        """httptools: (part of) the request body."""
        self._body.append(body)

    def on_message_complete(self) -> None:
        """httptools: the request is complete."""
        self._ready.append(
            Request(
                method=self._parser.get_method(),
                target=self._url,
                host=self._host,
                body=b"".join(self._body),
                keep_alive=self._parser.should_keep_alive(),
            )
        )

    def write(self, data: bytes) -> None:
        """Send ``data`` unless the connection is closing."""
        if self._transport is not None and not self._closing:
            self._transport.write(data)

    def respond(self, status: int, content_type: bytes, body: bytes) -> None:
        """Send a whole response with Content-Length and end the exchange."""
        head = b"".join(
            (
                _status_line(status),
                b"Content-Type: " + content_type + b"\r\n" if content_type else b"",
                b"Date: ",
                CLOCK.http_date(),
                b"\r\nContent-Length: %d\r\n" % len(body),
                b"" if self.keep_alive else b"Connection: close\r\n",
                b"\r\n",
            )
        )
        self.write(head if self.head_only else head + body)
        self.end_exchange()

    def respond_json(self, status: int, value: Any) -> None:
        """Send a JSON response as gin's ``c.JSON`` does: one write of ``json.Marshal``'s bytes.

        net/http then sends up to 2048 bytes with a Content-Length and more
        chunked, the whole body in one chunk.
        """
        body = go_json(value)
        if len(body) <= _BUFFER_BEFORE_CHUNKING or self.head_only:
            self.respond(status, _JSON, body)
            return
        self.write(
            self.chunked_head(status, _JSON) + b"%x\r\n%b\r\n" % (len(body), body) + CHUNK_END
        )
        self.end_exchange()

    def chunked_head(
        self, status: int = 200, content_type: bytes = b"application/x-ndjson"
    ) -> bytes:
        """The head of a chunked response (by default a streaming NDJSON 200)."""
        return b"".join(
            (
                _status_line(status),
                b"Content-Type: ",
                content_type,
                b"\r\nDate: ",
                CLOCK.http_date(),
                b"\r\n" if self.keep_alive else b"\r\nConnection: close\r\n",
                b"Transfer-Encoding: chunked\r\n\r\n",
            )
        )

    def end_exchange(self) -> None:
        """The reply is complete: close if the client asked for it, else await the next request."""
        self.exchange = None
        if not self.keep_alive:
            self.drop()

    def drop(self) -> None:
        """Close the connection after what was written (mid-reply, that is abrupt)."""
        if self._transport is not None and not self._closing:
            self._closing = True
            self._transport.close()
