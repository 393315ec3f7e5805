"""The API key check shared by the HTTP and websocket adapters."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs

import orjson

from ..core.errors import ServiceError
from ..ops.logs import log_rejection
from .asgi import Receive, Scope, Send

__all__ = ["KeyCheck", "admit_websocket"]


def _given_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key in an ``Authorization`` header: ``Bearer <key>`` or the bare key.

    None when there is no header, or it is empty, or ``Bearer`` with nothing after it.
    """
    for name, value in headers:
        if name == b"authorization":
            value = value.strip()
            scheme, _, rest = value.partition(b" ")
            return (rest.strip() if scheme.lower() == b"bearer" else value) or None
    return None


class KeyCheck:
    """Checks requests against the configured key, in constant time; no key, no check."""

    def __init__(self, key: str | None) -> None:
        self._key = key.encode() if key else None

    def check(self, headers: Iterable[tuple[bytes, bytes]], fallback: bytes | None = None) -> None:
        """Raise a 401 :class:`ServiceError` unless the headers (or ``fallback``) hold the key.

        ``fallback`` is a key given elsewhere, such as a websocket URL's query string.
        """
        if self._key is None:
            return
        given = _given_key(headers)
        if given is None:
            given = fallback
        if given is None:
            raise ServiceError(
                401, "missing_api_key", "send the API key as 'Authorization: Bearer <key>'"
            )
        if not hmac.compare_digest(given, self._key):
            raise ServiceError(401, "invalid_api_key", "the API key is not valid")


async def admit_websocket(keys: KeyCheck, scope: Scope, receive: Receive, send: Send) -> bool:
    """Read a websocket's handshake and check its key: in a header, or ``?api_key=``.

    Returns True when it may be accepted; otherwise the connection is done (the
    refusal, 401 and an OpenAI error object, has been sent).
    """
    if (await receive())["type"] != "websocket.connect":
        return False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    query_key = query.get("api_key", [None])[-1]
    try:
        keys.check(scope["headers"], query_key.encode() if query_key else None)
    except ServiceError as exc:
        log_rejection(exc, "GET", scope["path"])
        body = orjson.dumps(exc.to_openai())
        await send(
            {
                "type": "websocket.http.response.start",
                "status": exc.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return False
    return True
