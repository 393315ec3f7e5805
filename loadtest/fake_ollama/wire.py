"""Ollama's wire formats as its Go code reads and writes them.

Request bodies are decoded with the 400s and the wording of Go's
``encoding/json``; JSON is written as ``json.Marshal`` writes it (:func:`go_json`);
timestamps are written as Go writes a ``time.Time``; model names are resolved as
Ollama resolves them.
"""

from __future__ import annotations

import datetime
import email.utils
import time
from typing import Any, Final

import orjson

JsonObject = dict[str, Any]


# encoding/json's HTML-safe escaping (json.Marshal and json.Encoder escape these by default).
_GO_ESCAPES: Final = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def go_json(value: Any) -> bytes:
    """``value`` as Go's ``json.Marshal`` writes it: compact, with ``<``, ``>``, ``&`` escaped."""
    data = orjson.dumps(value)
    for raw, escaped in _GO_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


class HttpError(Exception):
    """An error answered before any token: an HTTP status and Ollama's ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_kind(value: object) -> str:
    """The JSON kind Go names in an unmarshal error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def decode_body(raw: bytes, go_type: str) -> JsonObject:
    """A request body as a JSON object, or the 400 Ollama (Go's encoding/json) answers."""
    if not raw.strip():
        raise HttpError(400, "missing request body")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise HttpError(400, _go_syntax_error(raw, error)) from None
    if not isinstance(value, dict):
        raise HttpError(
            400, f"json: cannot unmarshal {json_kind(value)} into Go value of type {go_type}"
        )
    return value


def _go_syntax_error(raw: bytes, error: orjson.JSONDecodeError) -> str:
    """Go's wording for a JSON syntax error, from orjson's diagnosis."""
    if "end of data" in error.msg:
        return "unexpected EOF"
    text = raw.decode("utf-8", "replace")
    character = text[error.pos] if error.pos < len(text) else " "
    if "after document" in error.msg:
        return f"invalid character {character!r} after top-level value"
    return f"invalid character {character!r} looking for beginning of value"


def json_field(body: JsonObject, key: str, kind: type, struct: str, go_type: str) -> Any:
    """``body[key]`` (None when absent or null) if it has the JSON kind Go expects, else a 400."""
    value = body.get(key)
    if value is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        return value
    raise HttpError(
        400,
        f"json: cannot unmarshal {json_kind(value)} into Go struct field {struct}.{key} "
        f"of type {go_type}",
    )


class Clock:
    """Timestamps as Go writes them, with the part that changes once a second cached."""

    __slots__ = ("_date", "_date_second", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""
        self._date_second = -1
        self._date = b""

    def stamp(self) -> bytes:
        """``time.Now().UTC()`` as Go's JSON encoder writes it (RFC 3339, nanoseconds)."""
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        if nanos:
            return self._prefix + (b".%09d" % nanos).rstrip(b"0") + b"Z"
        return self._prefix + b"Z"

    def http_date(self) -> bytes:
        """The current ``Date`` header value."""
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = email.utils.formatdate(second, usegmt=True).encode()
        return self._date


CLOCK: Final = Clock()


def go_local_time(timestamp: float) -> str:
    """A wall-clock time as Go's JSON encoder writes a local ``time.Time``."""
    moment = datetime.datetime.fromtimestamp(timestamp).astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset() or datetime.timedelta()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def canonical_name(name: str) -> str:
    """A model name as Ollama resolves it: lowercase, ``:latest`` when no tag is given."""
    name = name.lower()
    return name if ":" in name.rpartition("/")[2] else f"{name}:latest"
