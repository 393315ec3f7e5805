"""The websocket adapter: ``/ws``, one socket per call, many turns, barge-in.

Client → server, JSON text frames::

    {"type": "chat", "id": "<turn id>", "messages": [...], ...}   # any OpenAI field beside
    {"type": "cancel", "id": "<turn id>"}

Server → client::

    {"type": "delta", "id": ..., "content": "<text>"}
    {"type": "tool_call", "id": ..., "tool_call": {"id", "type": "function", "function": {...}}}
    {"type": "done", "id": ..., "finish_reason": "stop"|"length"|"tool_calls"|"cancelled",
     "usage": {...}}
    {"type": "error", "id": <turn id or null>, "code": "<short code>", "message": "<text>"}

Every turn ends with exactly one ``done`` or ``error``. At most one turn is in flight:
a new ``chat`` while one streams is a barge-in, and the older turn is cancelled (its
``done``/``cancelled`` is sent, and its Ollama request closed) before the newer one
starts. A ``cancel`` for a turn that is not in flight is ignored. Bad frames get an
``error`` frame and the socket stays open.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import orjson

from ..chat.render import usage_dict
from ..chat.request import parse_chat_request
from ..config import Config
from ..core.engine import Engine
from ..core.errors import ServiceError
from ..core.events import Failure, Finish, TextDelta, ToolCall, Turn, Usage
from .asgi import Receive, Scope, Send, reap, websocket_texts
from .auth import KeyCheck, admit_websocket

__all__ = ["WebSocketEndpoint"]

log = logging.getLogger("server.ws")


def _frame(obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": "websocket.send", "text": orjson.dumps(obj).decode()}


class WebSocketEndpoint:
    """Serves ``/ws`` connections for one engine."""

    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self._keys = KeyCheck(config.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await admit_websocket(self._keys, scope, receive, send):
            return
        await send({"type": "websocket.accept"})
        session = _Session(self, send)
        try:
            async for text in websocket_texts(receive):
                if text is None:
                    await session.error(None, "binary_frame", "send JSON text frames, not binary")
                else:
                    await session.handle(text)
        finally:
            await session.stop(notify=False)


class _Session:
    """The turns of one socket."""

    def __init__(self, endpoint: WebSocketEndpoint, send: Send) -> None:
        self._endpoint = endpoint
        self._send = send
        self._turn: asyncio.Task[None] | None = None
        self._turn_id: str | None = None
        self._notify = True
        self._call_key = f"ws-{uuid.uuid4().hex}"

    async def error(self, turn_id: str | None, code: str, message: str) -> None:
        """Send an ``error`` frame."""
        await self._send(_frame({"type": "error", "id": turn_id, "code": code, "message": message}))

    async def handle(self, text: str) -> None:
        """Act on one client frame."""
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.error(None, "invalid_json", "the frame is not valid JSON")
            return
        if not isinstance(frame, dict):
            await self.error(None, "invalid_frame", "a frame must be a JSON object")
            return
        kind = frame.get("type")
        turn_id = frame.get("id")
        if not isinstance(turn_id, str) or not turn_id:
            await self.error(None, "invalid_id", "'id' must be a non-empty string")
            return
        if kind == "cancel":
            if turn_id == self._turn_id:
                await self.stop(notify=True)
            return
        if kind != "chat":
            await self.error(
                turn_id, "unknown_type", f"unknown frame type {kind!r}: send 'chat' or 'cancel'"
            )
            return
        del frame["type"], frame["id"]
        try:
            config = self._endpoint.config
            request = parse_chat_request(frame, config.max_messages, config.max_message_chars)
            turn = request.to_turn(config.system_prompt, turn_id)
            if turn.call_key is None:  # the socket is the call
                turn = replace(turn, call_key=self._call_key)
        except ServiceError as exc:
            await self.error(turn_id, exc.code, exc.message)
            return
        await self.stop(notify=True)
        self._turn_id = turn_id
        self._turn = asyncio.create_task(self._run(turn_id, turn), name=f"/ws turn {turn_id!r}")
        self._turn.add_done_callback(reap)

    async def stop(self, notify: bool) -> None:
        """Cancel the turn in flight, if any, and wait until it has ended.

        With ``notify`` its ``done``/``cancelled`` frame is sent first.
        """
        task = self._turn
        if task is None or task.done():
            return
        self._notify = notify
        task.cancel()
        await asyncio.wait({task})

    async def _run(self, turn_id: str, turn: Turn) -> None:
        send = self._send
        prefix = '{"type":"delta","id":' + orjson.dumps(turn_id).decode() + ',"content":'
        dumps = orjson.dumps
        streamed = 0
        try:
            async with aclosing(self._endpoint.engine.stream(turn)) as events:
                async for event in events:
                    if type(event) is TextDelta:
                        streamed += 1
                        await send(
                            {
                                "type": "websocket.send",
                                "text": prefix + dumps(event.text).decode() + "}",
                            }
                        )
                    elif type(event) is ToolCall:
                        call = {
                            "id": event.id,
                            "type": "function",
                            "function": {"name": event.name, "arguments": event.arguments},
                        }
                        await send(_frame({"type": "tool_call", "id": turn_id, "tool_call": call}))
                    elif type(event) is Finish:
                        done: dict[str, Any] = {
                            "type": "done",
                            "id": turn_id,
                            "finish_reason": event.reason,
                            "usage": usage_dict(event.usage),
                        }
                        if event.fallback:
                            done["fallback"] = True
                        await send(_frame(done))
                    elif type(event) is Failure:
                        await self.error(turn_id, event.code, event.message)
        except ServiceError as exc:
            await self.error(turn_id, exc.code, exc.message)
        except asyncio.CancelledError:
            if self._notify:
                frame = {
                    "type": "done",
                    "id": turn_id,
                    "finish_reason": "cancelled",
                    "usage": usage_dict(Usage(completion_tokens=streamed)),
                }
                await send(_frame(frame))
            raise
        except OSError:
            log.debug("turn %s: the client went away", turn_id)
        finally:
            if self._turn is asyncio.current_task():
                self._turn = self._turn_id = None
