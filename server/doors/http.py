"""The HTTP adapter: a plain ASGI application serving VAPI's custom-llm protocol.

Routes (one port, run by uvicorn):

- ``POST /chat/completions``, ``/v1/chat/completions`` and the doubled
  ``/chat/completions/chat/completions``: OpenAI chat completions; SSE when the body
  says ``"stream": true`` (never decided by ``Accept``), one JSON object otherwise.
- ``GET /v1/models`` (also ``/models``): the one served model.
- ``GET /health``: JSON about each Ollama and the model; ``GET /ping``: 204 while
  the model warms, 200 once an Ollama takes turns, 503 when none does and one is
  stuck (RunPod's load-balancer convention).
- ``/ws`` without a websocket upgrade: 426, with ``Upgrade: websocket``.
- websockets: ``/ws`` (:mod:`server.doors.ws`) and Retell's ``/llm-websocket/{call_id}``
  (:mod:`server.doors.retell`).

Every request refused with a 4xx is logged, one line each (:func:`log_rejection`).

A streamed response starts when the core yields its first event, so a request that
fails before any token gets a real HTTP status and an OpenAI error object. When the
caller goes away, the task serving it is cancelled, which closes the Ollama request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import orjson

from ..chat.prime import priming_turns
from ..chat.render import (
    DONE,
    ChunkRenderer,
    collect_completion,
    models_list,
    new_completion_id,
    sse,
)
from ..chat.request import CHAT_PATHS, MODELS_PATHS, parse_chat_request
from ..config import Config
from ..core.engine import Engine
from ..core.errors import ServiceError
from ..core.events import Event, Failure, Finish, TextDelta, ToolCall
from ..ops.logs import log_rejection
from ..ops.metrics import CONTENT_TYPE, Metrics
from ..tools import load_tools
from .asgi import JSON, Disconnected, Receive, Scope, Send, read_body, respond
from .auth import KeyCheck
from .retell import RETELL_PATH, RetellEndpoint
from .vapi import WEBHOOK_PATH, VapiWebhook
from .ws import WebSocketEndpoint

__all__ = ["App"]


_Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class App:
    """The ASGI application; ``App(config, engine)`` is what uvicorn runs.

    Its lifespan starts the engine (the model warms in the background) and closes it.
    """

    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self._keys = KeyCheck(config.api_key)
        self._websocket = WebSocketEndpoint(config, engine)
        tools = load_tools(config.tools_module) if config.tools_module else None
        self.vapi = VapiWebhook(config, tools)
        self.retell = RetellEndpoint(config, engine, tools)
        answers = self.vapi.answers
        engine.prime(
            priming_turns((answers.system_prompt, config.system_prompt), answers.model_tools)
        )
        self.metrics = Metrics(engine, lambda: self.vapi.counts, lambda: self.retell.frames)
        # path -> (method, handler, whether the API key is required)
        self._routes: dict[str, tuple[str, _Handler, bool]] = {
            "/health": ("GET", self._health, False),
            "/ping": ("GET", self._ping, False),
            "/metrics": ("GET", self._metrics, True),
            "/ws": ("GET", self._upgrade_required, False),
            # VAPI's webhook checks its own secret rather than the API key.
            WEBHOOK_PATH: ("POST", self.vapi, False),
        }
        for path in CHAT_PATHS:
            self._routes[path] = ("POST", self._chat, True)
        for path in MODELS_PATHS:
            self._routes[path] = ("GET", self._models, True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif scope["path"] == "/ws":
            await self._websocket(scope, receive, send)
        elif scope["path"].startswith(RETELL_PATH):
            await self.retell(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.engine.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.engine.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        route = self._routes.get(path)
        try:
            if route is None:
                raise ServiceError(404, "not_found", f"no route for {path}")
            method, handler, keyed = route
            if scope["method"] != method and not (method == "GET" and scope["method"] == "HEAD"):
                raise ServiceError(405, "method_not_allowed", f"{path} accepts {method} only")
            if keyed:
                self._keys.check(scope["headers"])
            await handler(scope, receive, send)
        except ServiceError as exc:
            log_rejection(exc, scope["method"], path)
            headers = []
            if exc.status == 405 and route is not None:
                headers.append((b"allow", route[0].encode()))
            elif exc.status == 426:
                headers.append((b"upgrade", b"websocket"))
            await self._error(send, exc, headers)

    # Simple routes

    async def _ping(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self.engine
        if engine.ready:
            await respond(send, 200, b'{"status":"ok"}')
        elif (broken := engine.broken) is not None:
            # Unhealthy, not initialising: waiting will not help, a supervisor should act.
            await respond(send, 503, orjson.dumps({"status": "unhealthy", "reasons": broken}))
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        health = await self.engine.health()
        await respond(send, 200 if health["status"] == "ok" else 503, orjson.dumps(health))

    async def _upgrade_required(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise ServiceError(
            426,
            "upgrade_required",
            "/ws is a websocket endpoint: connect with a websocket client (Upgrade: websocket)",
        )

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, self.metrics.render(), [(b"content-type", CONTENT_TYPE)])

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, orjson.dumps(models_list(self.config.model)))

    # Chat

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(scope, receive, self.config.max_body_bytes)
        except Disconnected:
            return
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ServiceError(400, "invalid_json", "the request body is not valid JSON") from None
        request = parse_chat_request(data, self.config.max_messages, self.config.max_message_chars)
        completion_id = new_completion_id()
        turn = request.to_turn(self.config.system_prompt, completion_id)
        if not request.stream:
            turn = replace(turn, live=False)  # one whole answer: no hold message in it

        task = asyncio.current_task()
        assert task is not None
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, task, gone))
        try:
            async with aclosing(self.engine.stream(turn)) as events:
                if request.stream:
                    renderer = ChunkRenderer(self.config.model, completion_id)
                    await self._stream(send, events, renderer, request.include_usage)
                else:
                    completion, _ = await collect_completion(
                        events, self.config.model, completion_id
                    )
                    await respond(send, 200, orjson.dumps(completion))
        except asyncio.CancelledError:
            if not gone.is_set():
                raise
            task.uncancel()
        finally:
            gone.set()
            watcher.cancel()

    async def _stream(
        self,
        send: Send,
        events: AsyncIterator[Event],
        renderer: ChunkRenderer,
        include_usage: bool,
    ) -> None:
        # Errors before the first event propagate from here as HTTP errors.
        event = await anext(events)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        pending = sse(renderer.role())
        text_sse = renderer.text_sse
        last: Finish | Failure | None = None
        try:
            while True:
                if type(event) is TextDelta:
                    data = text_sse(event.text)
                elif type(event) is ToolCall:
                    data = sse(renderer.tool_call(event))
                else:
                    assert isinstance(event, Finish | Failure)
                    last = event
                    break
                if pending:
                    data = pending + data
                    pending = b""
                await send({"type": "http.response.body", "body": data, "more_body": True})
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
        except asyncio.CancelledError:
            # Shutdown's deadline passed (or the caller left): end the stream properly.
            await send(
                {"type": "http.response.body", "body": pending + sse(renderer.end(None)) + DONE}
            )
            raise
        if last is not None:
            pending += sse(renderer.end(last))  # a Failure is logged by the engine
            if include_usage:
                pending += sse(renderer.usage(last.usage))
        await send({"type": "http.response.body", "body": pending + DONE, "more_body": False})

    async def _error(
        self, send: Send, error: ServiceError, headers: list[tuple[bytes, bytes]]
    ) -> None:
        headers.append(JSON)
        if error.retry_after is not None:
            headers.append((b"retry-after", str(error.retry_after).encode()))
        await respond(send, error.status, orjson.dumps(error.to_openai()), headers)


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], gone: asyncio.Event) -> None:
    """Cancel ``task`` when the caller disconnects before its response is complete."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not gone.is_set():
                gone.set()
                task.cancel()
            return
