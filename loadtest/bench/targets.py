"""Targets: how one virtual client opens a stream and records its token arrival times.

``direct`` (the simulator's ``/api/chat``), ``sse`` (the server's
``/v1/chat/completions``), ``ws`` (the server's ``/ws``) and ``retell`` (the server's
``/llm-websocket/{call_id}``) are registered in ``TARGETS``; all send the same
conversation (``retell`` as Retell's transcript, the server adding the system prompt,
:data:`SYSTEM_PROMPT`, from its ``--system-prompt``).
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .http import HttpConnection, http_connect
from .streams import BodyParser, NdjsonTokens, SseTokens, StreamFailed, StreamRecord
from .websocket import RetellConnection, WsConnection, ws_connect

__all__ = [
    "SYSTEM_PROMPT",
    "TARGETS",
    "Endpoints",
    "HttpTarget",
    "RetellTarget",
    "Target",
    "TargetClient",
    "WsTarget",
    "direct_target",
    "retell_target",
    "sse_target",
    "ws_target",
]


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
                    conn = await http_connect(target.host, target.port)
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
SYSTEM_PROMPT: str = _MESSAGES[0]["content"]
"""The conversation's system prompt: the server's ``--system-prompt`` for ``retell``."""


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

    connection: type[WsConnection] = WsConnection

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

    def path(self) -> str:
        """The path a new socket opens."""
        return "/ws"

    def turn_frame(self, turn_id: str) -> bytes:
        """The frame that starts one turn, as UTF-8 JSON."""
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
            conn = await ws_connect(
                target.host, target.port, target.path(), target.headers, target.connection
            )
            self._conn = conn
        self._turns += 1
        turn_id = str(self._turns)
        await conn.turn(turn_id, target.turn_frame(turn_id), record)

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


class RetellTarget(WsTarget):
    """The server's ``/llm-websocket/{call_id}``: a call per socket, as Retell opens them.

    A turn is a ``response_required`` frame with the conversation as Retell's transcript
    (``agent`` and ``user`` utterances, no system message) and the turn number as its
    ``response_id``.
    """

    connection = RetellConnection

    def __init__(
        self,
        name: str,
        description: str,
        host: str,
        port: int,
        headers: Sequence[str],
        transcript: list[dict[str, str]],
    ) -> None:
        super().__init__(name, description, host, port, headers, {})
        # '{"interaction_type":"response_required","response_id":' + '7' + ',"transcript":...}'
        self._rest = b"," + orjson.dumps({"transcript": transcript})[1:]
        self._calls = itertools.count(1)

    def path(self) -> str:
        return f"/llm-websocket/call_bench_{next(self._calls)}"

    def turn_frame(self, turn_id: str) -> bytes:
        return (
            b'{"interaction_type":"response_required","response_id":'
            + turn_id.encode()
            + self._rest
        )


def retell_target(ends: Endpoints) -> Target:
    """``/llm-websocket/{call_id}`` on the server: the SSE target's conversation, as Retell
    sends it."""
    assert ends.server_host is not None
    assert ends.server_port is not None
    headers = [f"Authorization: Bearer {ends.api_key}"] if ends.api_key else []
    roles = {"assistant": "agent", "user": "user"}
    transcript = [
        {"role": roles[m["role"]], "content": m["content"]}
        for m in _MESSAGES
        if m["role"] != "system"
    ]
    return RetellTarget(
        "retell",
        "server, /llm-websocket/{call_id}, Retell's frames",
        ends.server_host,
        ends.server_port,
        headers,
        transcript,
    )


# Target name -> (whether it needs the server started, factory).
TARGETS: dict[str, tuple[bool, Callable[[Endpoints], Target]]] = {
    "direct": (False, direct_target),
    "sse": (True, sse_target),
    "ws": (True, ws_target),
    "retell": (True, retell_target),
}
