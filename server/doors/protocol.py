"""uvicorn's httptools protocol with a deadline on a request's headers.

uvicorn times out idle keep-alive connections but not a client that connects and
then sends its headers slowly, or never: each such client holds a connection
slot. This protocol gives every request ``read_timeout`` seconds from its first
byte (or from the connection's start) to its last header, then answers 408.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..core.errors import ServiceError

__all__ = ["http_protocol"]

_BODY = orjson.dumps(
    ServiceError(408, "request_timeout", "the request headers took too long").to_openai()
)
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class _HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(_408)
            self.transport.close()


def http_protocol(read_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with this header deadline."""
    return type("HttpProtocol", (_HeaderDeadlineProtocol,), {"header_timeout": read_timeout})
