"""uvicorn's protocols, with what they lack here.

HTTP (httptools): a deadline on a request's headers. uvicorn times out idle
keep-alive connections but not a client that connects and then sends its headers
slowly, or never: each such client holds a connection slot. This protocol gives every
request ``read_timeout`` seconds from its first byte (or from the connection's start)
to its last header, then answers 408.

Websockets (websockets-sansio): a handshake refused with a response of its own (a
401) counts as complete, so uvicorn does not log "ASGI callable returned without
completing handshake" at ERROR for it; and the websockets library logs only warnings
and errors, never its per-connection lines (the request line with its query string
and every header, an ``Authorization`` among them, at DEBUG; frames with the caller's
words).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from ..core.errors import ServiceError
from ..ops.logs import log_rejection

__all__ = ["WebSocketProtocol", "http_protocol"]

_TIMEOUT = ServiceError(408, "request_timeout", "the request headers took too long")
_BODY = orjson.dumps(_TIMEOUT.to_openai())
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

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The websocket protocol has the connection now and uvicorn never calls this
        # one's connection_lost: drop the parser, whose callbacks would keep this
        # protocol alive in a cycle until a garbage collection.
        self.parser = None  # type: ignore[assignment]

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log_rejection(_TIMEOUT, None, None)
            self.transport.write(_408)
            self.transport.close()


def http_protocol(read_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with this header deadline."""
    return type("HttpProtocol", (_HeaderDeadlineProtocol,), {"header_timeout": read_timeout})


# The websockets library's own logger; uvicorn would give it uvicorn's.
_websockets_log = logging.getLogger("websockets.server")
_websockets_log.setLevel(logging.WARNING)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol; see the module's docstring.

    A closed connection leaves no reference cycle behind (its own wrapper of the
    application, the websockets library's parser generator), so it is freed at once
    rather than by a garbage collection, whose pause stops every stream.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.logger = _websockets_log
        self.conn.debug = False
        self._app, self.app = self.app, self._run_app

    async def _run_app(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)
        if self.initial_response is not None and self.close_sent:
            # The denial response went out whole, as uvicorn's wsproto protocol counts it.
            self.handshake_complete = True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.app = self._app  # the bound method _run_app holds this protocol
        self.conn.parser.close()  # its frame holds the websockets protocol; no data comes now
