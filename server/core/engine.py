"""The streaming core: a :class:`Turn` goes in, typed events come out of a warm Ollama.

The engine owns everything about Ollama: the connections, the warm model and its
fixed load-time options, timeouts, and the mapping of Ollama's NDJSON chunks to
events. It knows nothing of HTTP servers, websockets or RunPod.

One turn is one ``POST /api/chat`` on its own connection. Closing the event stream
(``aclose()``, or cancelling the task that reads it) closes that connection at once,
which is what makes Ollama stop generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator
from time import time as wall_time
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
import orjson

from ..config import Config
from .errors import ServiceError
from .events import Event, Failure, Finish, TextDelta, ToolCall, Turn, Usage
from .stats import Stats
from .upstream import Connection, ConnectionPool, UpstreamClosed, UpstreamTimeout

__all__ = ["CONTROL_ERRORS", "Engine"]

log = logging.getLogger("server.engine")
# One JSON line per turn: ids, outcome, timings; message text only with log_content.
turn_log = logging.getLogger("server.turn")

_RETRY_AFTER = 2

# What a control-plane call to Ollama (preload, /api/ps) raises when Ollama is not ready.
CONTROL_ERRORS = (OSError, TimeoutError, httpx.HTTPError, ollama.ResponseError, ConnectionError)


def _model_tag(name: str) -> str:
    """Ollama's full name for a model: ``llama3.1`` is ``llama3.1:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _usage(chunk: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=chunk.get("prompt_eval_count", 0),
        completion_tokens=chunk.get("eval_count", 0),
        load_seconds=chunk.get("load_duration", 0) / 1e9,
        prompt_seconds=chunk.get("prompt_eval_duration", 0) / 1e9,
        eval_seconds=chunk.get("eval_duration", 0) / 1e9,
        total_seconds=chunk.get("total_duration", 0) / 1e9,
    )


def _error_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace").strip()[:200] or "no details"
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else "no details"


class Engine:
    """Streams chat turns from one warm Ollama model.

    Call :meth:`start` once inside the event loop; it preloads the model in the
    background and keeps it warm. :meth:`stream` serves turns.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        url = urlsplit(config.ollama_url)
        self._pool = ConnectionPool(
            url.hostname or "127.0.0.1", url.port or 11434, config.connect_timeout
        )
        self._control = ollama.AsyncClient(host=config.ollama_url, timeout=600.0)
        self._head = {
            "model": config.model,
            "stream": True,
            "think": False,
            "keep_alive": config.keep_alive,
        }
        self._load_options = config.load_options
        self._warm = asyncio.Event()
        self.reachable = False
        self.ollama_version: str | None = None
        self.stats = Stats()
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._warm_task: asyncio.Task[None] | None = None
        self._recheck = asyncio.Event()

    # Lifecycle

    async def start(self) -> None:
        """Start warming the model in the background (returns at once)."""
        if self._warm_task is None:
            self._warm_task = asyncio.create_task(self._keep_warm(), name="keep-warm")

    @property
    def warm(self) -> bool:
        """Whether the model is loaded in Ollama and turns can be served."""
        return self._warm.is_set()

    async def wait_warm(self) -> None:
        """Return once the model is warm (bound the wait with ``asyncio.timeout``)."""
        await self._warm.wait()

    def _set_warm(self, warm: bool) -> None:
        if warm:
            self._warm.set()
        else:
            self._warm.clear()

    async def close(self) -> None:
        """Stop the warm-keeping task and close every idle connection."""
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
            self._warm_task = None
        self._pool.close()
        await self._control.close()  # type: ignore[no-untyped-call]

    async def preload(self) -> None:
        """Load the model with exactly the options every turn sends, so no turn reloads it."""
        await self._control.chat(
            model=self.config.model,
            messages=[],
            think=False,
            keep_alive=self.config.keep_alive,
            options=self._load_options or None,
        )

    async def _keep_warm(self) -> None:
        loaded = failing = False
        while True:
            try:
                status, version = await self._pool.get_json(
                    "/api/version", self.config.connect_timeout
                )
                self.reachable = True
                if status == 200 and isinstance(version, dict):
                    self.ollama_version = str(version.get("version"))
                if loaded:
                    ps = await self._control.ps()
                    loaded = any(
                        _model_tag(m.model or "") == _model_tag(self.config.model)
                        for m in ps.models
                    )
                    if not loaded:
                        log.warning(
                            "model %s is no longer loaded in Ollama; reloading", self.config.model
                        )
                if not loaded:
                    self._set_warm(False)
                    started = asyncio.get_running_loop().time()
                    await self.preload()
                    loaded = True
                    log.info(
                        "model %s is warm (loaded in %.1f s)",
                        self.config.model,
                        asyncio.get_running_loop().time() - started,
                    )
                self._set_warm(True)
                failing = False
            except CONTROL_ERRORS as exc:
                if not failing:  # once per outage, not at every retry
                    log.warning(
                        "Ollama at %s is not ready: %s",
                        self.config.ollama_url,
                        exc or type(exc).__name__,
                    )
                self.reachable = loaded = False
                failing = True
                self._set_warm(False)
            self._recheck.clear()
            delay = (
                self.config.warm_check_interval if self.warm else self.config.warm_retry_interval
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._recheck.wait()

    # Serving

    def _not_ready(self) -> ServiceError:
        if not self.reachable:
            return ServiceError(
                503,
                "ollama_unreachable",
                f"Ollama is not reachable at {self.config.ollama_url}",
                retry_after=_RETRY_AFTER,
            )
        return ServiceError(
            503,
            "model_not_warm",
            f"model {self.config.model} is still loading",
            retry_after=_RETRY_AFTER,
        )

    def request_body(self, turn: Turn) -> bytes:
        """The ``/api/chat`` body for a turn: configured model, fixed options, no thinking."""
        body: dict[str, Any] = dict(self._head)
        body["messages"] = turn.messages
        body["options"] = {**self._load_options, **turn.options}
        if turn.tools:
            body["tools"] = turn.tools
        if turn.format is not None:
            body["format"] = turn.format
        return orjson.dumps(body)

    async def stream(self, turn: Turn) -> AsyncGenerator[Event, None]:
        """Stream one turn as events, ending with exactly one :class:`Finish` or :class:`Failure`.

        Before the first event, problems raise :class:`ServiceError` (Ollama unreachable,
        model not warm, or every slot busy past the queue timeout: 503; Ollama refused
        the request: its 4xx, or 502; no first token in time: 504). After it, they end
        the stream with a :class:`Failure`. Every turn is counted and logged once.
        """
        loop = asyncio.get_running_loop()
        time = loop.time
        stats = self.stats
        started = time()
        outcome = "ok"
        problem: str | None = None
        first: float | None = None
        streamed = 0
        usage: Usage | None = None
        admitted = finished = False
        conn: Connection | None = None
        for kind in turn.normalised:
            stats.normalised[kind] = stats.normalised.get(kind, 0) + 1
        try:
            if not self.warm:
                raise self._not_ready()
            await self._admit()
            admitted = True
            stats.in_flight += 1
            conn = await self._open(turn)
            calls = 0
            loads = orjson.loads
            itl = stats.itl.observe
            last = 0.0
            try:
                while (line := await conn.readline()) is not None:
                    if conn.status != 200:
                        rest = await conn.read_body()
                        raise self._status_error(conn.status, _error_text(line + rest))
                    chunk = loads(line)
                    message = chunk.get("message")
                    if message is not None:
                        content = message.get("content")
                        if content:
                            now = time()
                            if streamed:
                                itl(now - last)
                            else:
                                first = now
                            last = now
                            streamed += 1
                            yield TextDelta(content)
                        tool_calls = message.get("tool_calls")
                        if tool_calls:
                            if first is None:
                                first = time()
                            for call in tool_calls:
                                if calls and not turn.parallel_tool_calls:
                                    break  # the client takes one call per reply
                                yield self._tool_call(calls, call)
                                calls += 1
                    if chunk.get("done"):
                        usage = _usage(chunk)
                        reason = chunk.get("done_reason")
                        finished = True
                        yield Finish(
                            "tool_calls" if calls else "length" if reason == "length" else "stop",
                            usage,
                        )
                        return
                    error = chunk.get("error")
                    if error is not None:
                        raise UpstreamClosed(f"Ollama failed mid-stream: {error}")
                raise UpstreamClosed("Ollama ended the response without a done line")
            except UpstreamTimeout as exc:
                if first is None:
                    raise ServiceError(504, "upstream_timeout", str(exc)) from None
                outcome, problem = "timeout", str(exc)
            except (UpstreamClosed, orjson.JSONDecodeError) as exc:
                if isinstance(exc, orjson.JSONDecodeError):
                    exc = UpstreamClosed(f"Ollama sent a line that is not JSON: {exc}")
                self._recheck.set()
                if first is None:
                    raise ServiceError(502, "upstream_error", str(exc)) from None
                outcome, problem = "upstream_error", str(exc)
            finished = True
            yield Failure(outcome, problem, Usage(completion_tokens=streamed))
        except ServiceError as exc:
            outcome = (
                "timeout"
                if exc.status == 504
                else "upstream_error"
                if exc.status == 502
                else "rejected"
            )
            problem = exc.message
            raise
        except (GeneratorExit, asyncio.CancelledError):
            if not finished:  # closed after its last event is not a cancellation
                outcome = "cancelled"
            raise
        finally:
            if conn is not None:
                self._pool.release(conn)
            if admitted:
                self._slots.release()
                stats.in_flight -= 1
            if first is not None:
                stats.ttft.observe(first - started)
            stats.outcomes[outcome] += 1
            self._log_turn(turn, outcome, problem, started, first, streamed, usage)

    async def _admit(self) -> None:
        """Take one of the ``max_concurrency`` slots, waiting up to ``queue_timeout``.

        Turns never queue inside Ollama, whose own queue has no bound.
        """
        slots = self._slots
        if not slots.locked():
            await slots.acquire()  # a free slot: returns without suspending
            return
        self.stats.waiting += 1
        try:
            async with asyncio.timeout(self.config.queue_timeout):
                await slots.acquire()
        except TimeoutError:
            raise ServiceError(
                503,
                "overloaded",
                f"all {self.config.max_concurrency} streams to Ollama stayed busy for "
                f"{self.config.queue_timeout:g} s",
                retry_after=1,
            ) from None
        finally:
            self.stats.waiting -= 1

    async def _open(self, turn: Turn) -> Connection:
        config = self.config
        try:
            return await self._pool.request(
                "POST",
                "/api/chat",
                self.request_body(turn),
                config.first_token_timeout,
                config.token_timeout,
            )
        except (OSError, TimeoutError):
            self._lost_ollama()
            raise self._not_ready() from None

    def _log_turn(
        self,
        turn: Turn,
        outcome: str,
        problem: str | None,
        started: float,
        first: float | None,
        streamed: int,
        usage: Usage | None,
    ) -> None:
        ended = asyncio.get_running_loop().time()
        record: dict[str, Any] = {
            "ts": round(wall_time(), 3),
            "event": "turn",
            "call_id": turn.call_id,
            "turn_id": turn.turn_id,
            "model": self.config.model,
            "outcome": outcome,
            "ttft_ms": None if first is None else round((first - started) * 1000, 1),
            # Ollama's count when it sent one: a tool call is tokens, but no text delta.
            "tokens": streamed if usage is None else usage.completion_tokens,
            "duration_ms": round((ended - started) * 1000, 1),
        }
        if usage is not None:
            record["prompt_tokens"] = usage.prompt_tokens
        if turn.normalised:
            record["normalised"] = turn.normalised
        if problem is not None:
            record["error"] = problem
        if self.config.log_content:
            record["messages"] = turn.messages
        level = logging.INFO if outcome in ("ok", "cancelled") else logging.WARNING
        turn_log.log(level, orjson.dumps(record).decode())

    def _status_error(self, status: int, text: str) -> ServiceError:
        if status == 503:
            return ServiceError(
                503, "ollama_busy", f"Ollama is busy: {text}", retry_after=_RETRY_AFTER
            )
        if status == 400:
            return ServiceError(400, "rejected_by_ollama", f"Ollama rejected the request: {text}")
        if status == 404:
            self._recheck.set()
        return ServiceError(502, "upstream_error", f"Ollama answered {status}: {text}")

    @staticmethod
    def _tool_call(index: int, call: dict[str, Any]) -> ToolCall:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
        return ToolCall(
            index=index,
            id=f"call_{uuid.uuid4().hex[:24]}",
            name=str(function.get("name", "")),
            arguments=arguments,
        )

    def _lost_ollama(self) -> None:
        self.reachable = False
        self._set_warm(False)
        self._recheck.set()

    # Status

    async def health(self) -> dict[str, Any]:
        """Whether Ollama answers, its version, and whether the model is warm."""
        try:
            status, version = await self._pool.get_json("/api/version", self.config.connect_timeout)
            reachable = status == 200
            if reachable and isinstance(version, dict):
                self.ollama_version = str(version.get("version"))
        except (OSError, TimeoutError, UpstreamClosed):
            reachable = False
        return {
            "status": "ok" if reachable and self.warm else "unavailable",
            "ollama": {
                "url": self.config.ollama_url,
                "reachable": reachable,
                "version": self.ollama_version if reachable else None,
            },
            "model": {"name": self.config.model, "warm": self.warm},
        }
