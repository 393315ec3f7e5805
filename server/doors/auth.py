"""The API key check shared by the HTTP and websocket adapters."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from ..core.errors import ServiceError

__all__ = ["KeyCheck"]


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
