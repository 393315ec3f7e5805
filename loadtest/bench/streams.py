"""One stream as the load generator sees it, and the parsers that find its tokens.

A :class:`StreamRecord` holds the clock readings of one stream; a :class:`BodyParser`
turns a streamed response body, fed as it arrives, into token arrival times on it
(:class:`NdjsonTokens` for Ollama's NDJSON, :class:`SseTokens` for OpenAI-style SSE).
A stream that goes wrong raises :class:`StreamFailed` with the reason to report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import orjson

__all__ = [
    "BodyParser",
    "NdjsonTokens",
    "SseTokens",
    "StreamFailed",
    "StreamRecord",
    "decode_json",
]


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


def decode_json(data: bytes, what: str) -> Any:
    """``data`` parsed as JSON; :class:`StreamFailed` naming ``what`` if it is not JSON."""
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
        obj = decode_json(line, "NDJSON line")
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
        obj = decode_json(payload, "SSE data")
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
