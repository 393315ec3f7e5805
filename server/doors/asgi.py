"""The ASGI types the adapters are written against, and the helpers they share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from ..core.errors import ServiceError

__all__ = [
    "JSON",
    "Disconnected",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "read_body",
    "reap",
    "respond",
    "websocket_texts",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = (b"content-type", b"application/json")

log = logging.getLogger("server.doors")


class Disconnected(Exception):
    """The caller went away before its request body was read."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; a 413 :class:`ServiceError` as soon as it is over ``limit``.

    Raises :class:`Disconnected` if the caller leaves first.
    """
    too_large = ServiceError(413, "body_too_large", f"the request body is over {limit} bytes")
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise too_large
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a whole response (JSON unless ``headers`` say otherwise)."""
    await send({"type": "http.response.start", "status": status, "headers": headers or [JSON]})
    await send({"type": "http.response.body", "body": body})


async def websocket_texts(receive: Receive) -> AsyncIterator[str | None]:
    """The text of each frame an accepted websocket receives (None for a binary frame),
    until the peer disconnects."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            yield message.get("text")
        elif kind == "websocket.disconnect":
            return


def reap(task: asyncio.Task[Any]) -> None:
    """A done callback for a door's background task: read how it ended, so nothing is lost.

    A client gone mid-send (``OSError``) is routine; anything else is a bug, logged with
    its traceback rather than left for the garbage collector to report.
    """
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, OSError):
        log.debug("%s ended: the client went away (%s)", task.get_name(), exc)
    elif exc is not None:
        log.error("%s failed", task.get_name(), exc_info=exc)
