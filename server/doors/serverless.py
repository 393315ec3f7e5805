"""The RunPod serverless worker, run as ``python handler.py``.

A thin adapter over the same core as the HTTP server (:class:`server.core.engine.Engine`):
RunPod jobs come in, the turn's events are rendered by :mod:`server.chat.render`, and each
yielded item is one awaited POST to RunPod. Inputs (``job["input"]``):

- RunPod's OpenAI route, ``{"openai_route": "/v1/chat/completions", "openai_input":
  {...}}``: with ``"stream": true``, SSE text (``data: {chunk}\\n\\n`` events exactly as
  the HTTP server renders them, ending ``data: [DONE]\\n\\n``); without, one
  ``chat.completion`` object. ``{"openai_route": "/v1/models"}`` gives the models list.
- An OpenAI chat body, ``{"messages": [...], ...}``: ``chat.completion.chunk`` objects,
  the role chunk first (sent while Ollama reads the prompt), whatever ``stream`` says.
- ``{"type": "chat", "message": "Hello"}`` or ``{"prompt": "Hello"}``: one user message
  (other OpenAI fields such as ``max_tokens`` may sit beside it), answered as chunks.
- ``{"type": "vapi_webhook", "webhook_data": {"message": {...}}}``: a VAPI server
  message (the body VAPI posts to a server URL, as an object or its JSON text), answered
  by the HTTP server's webhook code (:class:`server.doors.vapi.WebhookAnswers`) as one
  item, ``{"webhook_response": <what VAPI expects>}``. RunPod's API key is the auth;
  the answer is wrapped because VAPI's own answers may carry an ``error`` key.

A chat body or message may carry ``"call_id"``: the turns of one call then stay on the
Ollama that holds its prompt (with several Ollamas), and its log lines carry that id.

Anything else, a field of the wrong type, or an error before the first token (Ollama
unreachable, model not warm, Ollama refusing, no first token in time) fails the job:
the handler yields ``{"error": "<reason>"}``. A failure after the first token ends the
answer cleanly (finish chunk, then ``[DONE]`` on the SSE route) and is logged.

The first token is yielded alone, at once; after it, events are gathered for
``STREAM_WINDOW`` seconds and consecutive text deltas merged into one chunk, so a yield
goes out at most once per window instead of once per token.

At startup the worker waits up to ``WARM_TIMEOUT`` seconds (default 300) for Ollama to
answer and the model to be warm, importing the RunPod SDK meanwhile, then serves
``MAX_CONCURRENCY`` jobs at once. If Ollama is not ready by then it serves anyway, and
jobs fail with the reason until Ollama is up. Every other setting is the HTTP server's,
from the environment (flags belong to the RunPod SDK: ``--rp_serve_api`` and so on).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from ..chat.prime import priming_turns
from ..chat.render import DONE, ChunkRenderer, collect_completion, models_list, sse
from ..chat.request import CHAT_PATHS, MODELS_PATHS, ChatRequest, parse_chat_request
from ..config import Config, ConfigError, environment_help, parse_config, version
from ..core.engine import Engine
from ..core.errors import ServiceError
from ..core.events import Event, Failure, Finish, TextDelta, Turn
from ..ops import pauses
from ..ops.logs import log_ready, setup_logging
from ..tools import load_tools
from .vapi import WebhookAnswers

__all__ = ["Worker", "current_worker", "handler", "main"]

log = logging.getLogger("handler")

EXPECTED_INPUT = (
    'expected an OpenAI chat body {"messages": [...]}, RunPod\'s OpenAI route '
    '{"openai_route": "/v1/chat/completions", "openai_input": {...}} or '
    '{"openai_route": "/v1/models"}, {"type": "chat", "message": "..."} '
    '(or {"prompt": "..."}), or {"type": "vapi_webhook", "webhook_data": {"message": ...}}'
)

# Seconds between checks while the worker waits for the model at startup.
_STARTUP_RETRY = 0.5
# What the SDK's log level is when neither RUNPOD_LOG_LEVEL nor RUNPOD_DEBUG_LEVEL is set.
# Its own default, DEBUG, logs every streamed item: the answers' text.
_RUNPOD_LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARN", "error": "ERROR"}

Output = Literal["models", "sse", "completion", "chunks", "webhook"]


@dataclass(frozen=True, slots=True)
class _Job:
    """What a job asks for: the output form and, for a chat, its request and turn."""

    output: Output
    request: ChatRequest | None = None
    turn: Turn | None = None
    webhook: object = None


def _bad_input(message: str, param: str | None = None) -> ServiceError:
    return ServiceError(400, "invalid_request", message, param=param)


def _parse_input(data: object, config: Config, turn_id: str | None) -> _Job:
    """Validate a job's input; raises :class:`ServiceError` saying what is expected."""
    if not isinstance(data, dict):
        raise _bad_input(f"the job input must be a JSON object: {EXPECTED_INPUT}")
    if "openai_route" in data:
        route = data["openai_route"]
        if not isinstance(route, str):
            raise _bad_input("openai_route must be a path such as /v1/chat/completions")
        if route in MODELS_PATHS:
            return _Job("models")
        if route not in CHAT_PATHS:
            raise _bad_input(
                f"openai_route {route!r} is not served: only /v1/chat/completions and "
                "/v1/models are",
                param="openai_route",
            )
        body = data.get("openai_input")
        if not isinstance(body, dict):
            raise _bad_input(
                "openai_input must be the chat completions request body (a JSON object)",
                param="openai_input",
            )
        request = parse_chat_request(body, config.max_messages, config.max_message_chars)
        turn = request.to_turn(config.system_prompt, turn_id)
        if not request.stream:
            return _Job("completion", request, replace(turn, live=False))
        return _Job("sse", request, turn)
    kind = data.get("type", "chat")
    if kind == "vapi_webhook":
        return _Job("webhook", webhook=_webhook_data(data))
    if kind != "chat":
        raise _bad_input(f"input type {kind!r} is not served: {EXPECTED_INPUT}", param="type")
    if "messages" not in data:
        field = "message" if "message" in data else "prompt" if "prompt" in data else None
        if field is None:
            raise _bad_input(f"the job input is not one this worker serves: {EXPECTED_INPUT}")
        text = data[field]
        if not isinstance(text, str) or not text.strip():
            raise ServiceError(
                400, "invalid_value", f"'{field}' must be a non-empty string", param=field
            )
        data = {k: v for k, v in data.items() if k not in ("type", "message", "prompt")}
        data["messages"] = [{"role": "user", "content": text}]
    request = parse_chat_request(data, config.max_messages, config.max_message_chars)
    turn = request.to_turn(config.system_prompt, turn_id)
    call_id = data.get("call_id")
    if isinstance(call_id, str) and call_id and turn.call_key is None:
        # The caller's own id for the conversation: its turns stay where its prompt is cached.
        turn = replace(turn, call_id=turn.call_id or call_id, call_key=call_id)
    return _Job("chunks", request, turn)


def _webhook_data(data: dict[str, Any]) -> object:
    """A webhook job's body: ``webhook_data``, an object or the JSON text of one."""
    body = data.get("webhook_data")
    if isinstance(body, str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            body = None
    if not isinstance(body, dict):
        raise _bad_input(
            'webhook_data must be the body VAPI posts, {"message": {"type": ...}}',
            param="webhook_data",
        )
    return body


def _take(item: Event | Exception) -> Event:
    if isinstance(item, Exception):
        raise item
    return item


def _ends(event: Event) -> bool:
    return isinstance(event, Finish | Failure)


def _chunks(
    renderer: ChunkRenderer, events: list[Event], include_usage: bool
) -> list[dict[str, Any]]:
    """The chunks for a batch of events, with consecutive text deltas merged into one."""
    chunks: list[dict[str, Any]] = []
    texts: list[str] = []
    for event in events:
        if isinstance(event, TextDelta):
            texts.append(event.text)
            continue
        if texts:
            chunks.append(renderer.text("".join(texts)))
            texts = []
        chunks.extend(renderer.event(event))
        if include_usage and isinstance(event, Finish | Failure):
            chunks.append(renderer.usage(event.usage))
    if texts:
        chunks.append(renderer.text("".join(texts)))
    return chunks


class _Batches:
    """The events of one turn, read by a task of their own and handed out in batches.

    The first event is handed out alone as soon as it arrives. After that, a batch is
    everything that arrived by ``window`` seconds after the previous hand-out (at once
    when the turn ends), so a consumer slower than the window gets all that piled up.
    A task reads the events because cancelling a read of the engine's stream midway
    would end the turn: the batches wait on the queue instead.

    The reading stops when the task that iterates the batches ends. The SDK cancels a
    stopped job's task wherever it waits, often in the POST of an item: the cancellation
    then never reaches the suspended generator, which is only closed when garbage
    collected, and the turn's Ollama request must not stay open until then.
    """

    def __init__(self, engine: Engine, turn: Turn, window: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event | Exception] = asyncio.Queue()
        self._window = window
        self._handed_at = 0.0
        self._reader = self._loop.create_task(self._read(engine, turn), name="turn-reader")
        self._owner = asyncio.current_task()
        if self._owner is not None:
            self._owner.add_done_callback(self._owner_done)

    def _owner_done(self, owner: asyncio.Task[Any]) -> None:
        self._reader.cancel()

    async def _read(self, engine: Engine, turn: Turn) -> None:
        put = self._queue.put_nowait
        try:
            async with aclosing(engine.stream(turn)) as events:
                async for event in events:
                    put(event)
        except Exception as exc:  # handed to the consumer: a ServiceError before the first token
            put(exc)

    async def first(self) -> Event:
        """The first event; raises the turn's :class:`ServiceError` if it failed before one."""
        event = _take(await self._queue.get())
        self._handed_at = self._loop.time()
        return event

    async def next(self) -> list[Event]:
        """The next batch: at least one event, the last batch ending with the turn's end."""
        events = [_take(await self._queue.get())]
        if not _ends(events[0]):
            wait = self._handed_at + self._window - self._loop.time()
            if wait > 0:
                await asyncio.wait({self._reader}, timeout=wait)
            queue = self._queue
            while not queue.empty():
                events.append(_take(queue.get_nowait()))
        self._handed_at = self._loop.time()
        return events

    async def close(self) -> None:
        """Stop reading; an unfinished turn's Ollama request is closed."""
        if self._owner is not None:
            self._owner.remove_done_callback(self._owner_done)
        if not self._reader.done():
            self._reader.cancel()
            await asyncio.wait({self._reader})


async def _close_with_loop(engine: Engine) -> None:
    """Close ``engine`` when its event loop shuts down (which cancels this task)."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await engine.close()


# The tasks closing engines, kept alive until their loop ends (a loop holds its tasks weakly).
_closers: set[asyncio.Task[None]] = set()


class Worker:
    """Serves RunPod jobs from one configuration.

    The engine is made in the event loop that serves the jobs, on the first job: the
    SDK runs its own loop, and an engine's connections and events belong to one loop.
    A job in a new loop gets a new engine; the old one was closed with its loop.
    """

    def __init__(self, config: Config) -> None:
        """Raises :class:`ConfigError` when the assistant file or tools module is invalid."""
        self.config = config
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        tools = load_tools(config.tools_module) if config.tools_module else None
        self.webhooks = WebhookAnswers(config, tools)

    def concurrency(self, current: int) -> int:
        """The SDK's ``concurrency_modifier``: the slots of every Ollama together."""
        return self.config.max_concurrency * len(self.config.ollama_urls)

    async def engine(self) -> Engine:
        """The engine of the running loop, started on first use, waited for while it warms.

        Waits up to ``queue_timeout`` seconds for the model to be warm, unless Ollama does
        not answer at all: then the turn fails at once.
        """
        loop = asyncio.get_running_loop()
        engine = self._engine
        if engine is None or self._loop is not loop:
            engine = self._engine = Engine(self.config)
            answers = self.webhooks
            prompts = (answers.system_prompt, self.config.system_prompt)
            engine.prime(priming_turns(prompts, answers.model_tools))
            self._loop = loop
            await engine.start()
            closer = loop.create_task(_close_with_loop(engine), name="close-engine")
            _closers.add(closer)
            closer.add_done_callback(_closers.discard)
        if not engine.warm and (await engine.health())["ollama"]["reachable"]:
            # If it is still not warm, the turn fails with the engine's own reason.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.queue_timeout):
                    await engine.wait_warm()
        return engine

    async def handle(self, job: Mapping[str, Any]) -> AsyncGenerator[str | dict[str, Any], None]:
        """Serve one job: the items to yield to RunPod (see the module's docstring).

        Logs one line per job: how it ended, how many items it yielded and when.
        """
        job_id = job.get("id")
        started = time.perf_counter()
        first_at: float | None = None
        count = 0
        outcome = "done"
        problem = ""
        try:
            turn_id = None if job_id is None else str(job_id)
            async with aclosing(self._items(turn_id, job.get("input"))) as items:
                async for item in items:
                    if first_at is None:
                        first_at = time.perf_counter()
                    count += 1
                    if isinstance(item, dict) and "error" in item:
                        outcome, problem = "failed", f": {item['error']}"
                    yield item
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            log.log(
                logging.WARNING if problem else logging.INFO,
                "job %s %s: %d items, the first after %.0f ms, %.2f s in all%s",
                job_id,
                outcome,
                count,
                0.0 if first_at is None else (first_at - started) * 1000,
                time.perf_counter() - started,
                problem,
            )

    async def _items(
        self, job_id: str | None, data: object
    ) -> AsyncGenerator[str | dict[str, Any], None]:
        try:
            job = _parse_input(data, self.config, job_id)
        except ServiceError as exc:
            yield _failed(exc)
            return
        if job.output == "models":
            yield models_list(self.config.model)
            return
        if job.output == "webhook":
            try:
                answer = await self.webhooks.answer(job.webhook)
            except ServiceError as exc:
                yield _failed(exc)
                return
            yield {"webhook_response": answer}
            return
        assert job.request is not None
        assert job.turn is not None
        engine = await self.engine()
        if job.output == "completion":
            try:
                async with aclosing(engine.stream(job.turn)) as stream:
                    completion, _ = await collect_completion(stream, self.config.model)
            except ServiceError as exc:
                yield _failed(exc)
                return
            yield completion
            return

        renderer = ChunkRenderer(self.config.model)
        include_usage = job.request.include_usage
        batches = _Batches(engine, job.turn, self.config.stream_window)
        try:
            if job.output == "chunks":
                yield renderer.role()  # while Ollama reads the prompt
            try:
                events = [await batches.first()]
            except ServiceError as exc:
                yield _failed(exc)
                return
            head = [renderer.role()] if job.output == "sse" else []
            while True:
                chunks = head + _chunks(renderer, events, include_usage)
                head = []
                ended = _ends(events[-1])
                if job.output == "sse":
                    text = b"".join(sse(chunk) for chunk in chunks) + (DONE if ended else b"")
                    yield text.decode()
                else:
                    for chunk in chunks:
                        yield chunk
                if ended:
                    return
                events = await batches.next()
        finally:
            await batches.close()


def _failed(error: ServiceError) -> dict[str, str]:
    """The item that fails a job: a truthy ``error`` (RunPod keeps only its text)."""
    return {"error": error.message}


_worker: Worker | None = None


def current_worker() -> Worker:
    """The worker :func:`handler` serves with; made from the environment on first use."""
    global _worker
    if _worker is None:
        _worker = Worker(parse_config(argv=[], env=os.environ))
    return _worker


async def handler(job: dict[str, Any]) -> AsyncGenerator[str | dict[str, Any], None]:
    """The RunPod handler: an async generator, so jobs run concurrently in the SDK's loop."""
    async with aclosing(current_worker().handle(job)) as items:
        async for item in items:
            yield item


# Startup


async def _warm_up(config: Config, wait: float) -> str | None:
    """Wait up to ``wait`` seconds for the model to be warm; returns why not, or None."""
    engine = Engine(replace(config, warm_retry_interval=_STARTUP_RETRY))
    await engine.start()
    try:
        async with asyncio.timeout(wait):
            await engine.wait_warm()
    except TimeoutError:
        if engine.reachable:
            return f"model {config.model} is not warm in Ollama at {', '.join(config.ollama_urls)}"
        return f"Ollama is not reachable at {', '.join(config.ollama_urls)}"
    finally:
        await engine.close()
    return None


_HELP = """\
usage: python handler.py [RunPod SDK flags]

The RunPod serverless worker: RunPod jobs in, each turn streamed from a warm Ollama by
the same core as python -m server. At start it waits up to WARM_TIMEOUT seconds for the
model, then takes MAX_CONCURRENCY jobs at once.

Flags are the RunPod SDK's: --rp_serve_api (with --rp_api_port) serves jobs over a local
HTTP API for testing; --rp_log_level sets the SDK's own log level (LOG_LEVEL's by default).

Settings are environment variables (the others of python -m server do not apply here):
{settings}
"""
# The settings the worker uses, for its help.
_WORKER_SETTINGS = (
    "OLLAMA_HOST", "MODEL", "KEEP_ALIVE", "NUM_CTX", "SYSTEM_PROMPT", "MAX_CONCURRENCY",
    "QUEUE_TIMEOUT", "CONNECT_TIMEOUT", "FIRST_TOKEN_TIMEOUT", "TOKEN_TIMEOUT",
    "WARM_CHECK_INTERVAL", "WARM_TIMEOUT", "MAX_MESSAGES", "MAX_MESSAGE_CHARS",
    "STREAM_WINDOW", "LOG_LEVEL", "LOG_FORMAT", "LOG_CONTENT",
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Wait for the model (bounded), then run the RunPod SDK's worker with :func:`handler`.

    ``--help`` and ``--version`` answer at once; every other flag is the SDK's.
    """
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print(_HELP.format(settings=environment_help(_WORKER_SETTINGS, os.environ)), end="")
        return 0
    if "--version" in args:
        print(f"voice-llm-server {version()}")
        return 0
    started = time.perf_counter()
    try:
        config = parse_config(argv=[], env=os.environ)
        setup_logging(config)
        worker = Worker(config)
    except ConfigError as exc:
        print(f"handler.py: error: {exc}", file=sys.stderr)
        return 2
    if "RUNPOD_LOG_LEVEL" not in os.environ and "RUNPOD_DEBUG_LEVEL" not in os.environ:
        os.environ["RUNPOD_LOG_LEVEL"] = _RUNPOD_LOG_LEVELS[config.log_level]

    # The SDK takes over a second to import (most of it a CPU probe in a child process):
    # import it while Ollama loads the model rather than after.
    importer = threading.Thread(
        target=importlib.import_module, args=("runpod",), name="import-runpod", daemon=True
    )
    importer.start()
    problem = asyncio.run(_warm_up(config, config.warm_timeout))
    importer.join()
    import runpod

    global _worker
    _worker = worker
    if problem is not None:
        log.error(
            "%s after %g s: serving anyway; jobs fail with this reason until it is ready",
            problem,
            config.warm_timeout,
        )
    log_ready(
        config,
        "serverless",
        ready_s=round(time.perf_counter() - started, 2),
        stream_window_ms=round(config.stream_window * 1000),
    )
    pauses.freeze_startup()  # the SDK is imported: what exists now lives for ever
    runpod.serverless.start(
        {
            "handler": handler,
            "return_aggregate_stream": True,
            "concurrency_modifier": worker.concurrency,
        }
    )
    return 0
