"""The streaming core: a :class:`Turn` goes in, typed events come out of a warm Ollama.

The engine owns everything about Ollama: the backends (one or several Ollamas, each a
:class:`~server.core.backend.Backend`), the choice between them
(:class:`~server.core.router.Router`), timeouts, and the mapping of Ollama's NDJSON
chunks to events. It knows nothing of HTTP servers, websockets or RunPod.

One turn is one ``POST /api/chat`` on its own connection. Closing the event stream
(``aclose()``, or cancelling the task that reads it) closes that connection at once,
which is what makes Ollama stop generating.

Before its first event a turn may fail over: a backend that is unreachable, not
warm, refusing (5xx), full past the queue timeout, or sends no first token in time,
and the turn is retried once on another ready backend, unseen by the caller. With
``hedge_after``, a turn with no first token by then also starts on a second backend,
and the first to answer wins. With ``hold_message``, a turn whose first token is slow
gets that sentence first; with ``fallback_message``, a turn that cannot start at all
is answered with that sentence instead of an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import Config
from .backend import Backend, chat_head, error_text
from .decode import Decoder
from .errors import ServiceError
from .events import Event, Failure, Finish, TextDelta, Turn, Usage
from .router import CallKey, Router
from .stats import Stats
from .upstream import Connection, UpstreamClosed, UpstreamTimeout

__all__ = ["Engine"]

log = logging.getLogger("server.engine")
# One line per turn (its fields: ids, outcome, timings); message text only with log_content.
turn_log = logging.getLogger("server.turn")

_RETRY_AFTER = 2
# Failures before the first token that another backend may not share.
_RETRYABLE = frozenset(
    {
        "ollama_unreachable",
        "model_not_warm",
        "model_missing",
        "ollama_stuck",
        "overloaded",
        "ollama_busy",
        "upstream_error",
        "upstream_timeout",
    }
)


@dataclass(slots=True)
class _Started:
    """A turn that has its first events from one backend, and the connection for the rest."""

    backend: Backend
    conn: Connection
    decoder: Decoder
    events: tuple[Event, ...]
    admitted_at: float
    first_at: float

    def close(self, now: float, ended: bool = False) -> None:
        """Release the connection and the slot.

        The connection is closed unless read to its end, or to Ollama's done line
        (``ended``), whose message's end is then waited for.
        """
        self.backend.pool.release(self.conn, ended)
        self.backend.release(now - self.admitted_at)


class Engine:
    """Streams chat turns from the configured Ollama backends.

    Call :meth:`start` once inside the event loop; it preloads the model on every
    backend in the background and keeps it warm. :meth:`stream` serves turns.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.backends = tuple(Backend(config, url) for url in config.ollama_urls)
        self.router = Router(self.backends, config.routing, config.prefill_rate)
        self._head = chat_head(config)
        self._load_options = config.load_options
        self.stats = Stats()
        self._warned_thinking = False

    # Lifecycle

    def prime(self, turns: list[Turn]) -> None:
        """Prime every slot of every backend with these turns' prompts after each load.

        Each is sent with ``num_predict: 1``: Ollama drops a ``num_predict`` of 0
        (its ``n_predict`` is ``omitempty``), which would then generate without bound.
        Call before :meth:`start`.
        """
        bodies = [self.request_body(turn, num_predict=1) for turn in turns]
        for backend in self.backends:
            backend.prime_with(bodies)

    async def start(self) -> None:
        """Start warming the model on every backend (returns at once)."""
        for backend in self.backends:
            await backend.start()

    async def close(self) -> None:
        """Stop warming and close every idle connection."""
        for backend in self.backends:
            await backend.close()

    @property
    def warm(self) -> bool:
        """Whether the model is loaded in at least one Ollama."""
        return any(backend.warm for backend in self.backends)

    @property
    def ready(self) -> bool:
        """Whether at least one backend takes turns (warm, not stuck)."""
        return any(backend.ready for backend in self.backends)

    @property
    def reachable(self) -> bool:
        """Whether at least one Ollama answers."""
        return any(backend.reachable for backend in self.backends)

    @property
    def stuck(self) -> list[str]:
        """Why each stuck backend is stuck."""
        return [backend.stuck for backend in self.backends if backend.stuck is not None]

    @property
    def broken(self) -> list[str] | None:
        """Why no backend will take turns by waiting (each stuck, or without the model).

        None while some backend is ready or may become so (loading, or not answering
        yet: an Ollama still starting).
        """
        reasons = [
            backend.stuck if backend.stuck is not None else backend.missing_message()
            for backend in self.backends
            if backend.stuck is not None or (backend.missing and not backend.warm)
        ]
        return reasons if len(reasons) == len(self.backends) else None

    async def wait_warm(self) -> None:
        """Return once some backend is warm (bound the wait with ``asyncio.timeout``)."""
        waits = [asyncio.ensure_future(backend.wait_warm()) for backend in self.backends]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    # Serving

    def _not_ready(self) -> ServiceError:
        backends = self.backends
        if len(backends) == 1:
            return backends[0].not_ready()
        errors = [backend.not_ready() for backend in backends]
        first = errors[0]
        return ServiceError(
            503,
            first.code if all(e.code == first.code for e in errors) else "no_backend_ready",
            "no Ollama is ready: "
            + "; ".join(f"{b.url}: {e.message}" for b, e in zip(backends, errors, strict=True)),
            retry_after=_RETRY_AFTER,
        )

    def request_body(self, turn: Turn, num_predict: int | None = None) -> bytes:
        """The ``/api/chat`` body for a turn: configured model, fixed options, no thinking."""
        body: dict[str, Any] = dict(self._head)
        body["messages"] = turn.messages
        body["options"] = {**self._load_options, **turn.options}
        if num_predict is not None:
            body["options"]["num_predict"] = num_predict
        if turn.tools:
            body["tools"] = turn.tools
        if turn.format is not None:
            body["format"] = turn.format
        return orjson.dumps(body)

    async def stream(self, turn: Turn) -> AsyncGenerator[Event, None]:
        """Stream one turn as events, ending with exactly one :class:`Finish` or :class:`Failure`.

        Before the first event, problems raise :class:`ServiceError` (no backend ready,
        or every slot busy past the queue timeout: 503; Ollama refused the request: its
        4xx, or 502; no first token in time: 504), unless a fallback message is
        configured: then the turn is that message and a :class:`Finish` marked
        ``fallback``. After it, they end the stream with a :class:`Failure`. Every
        turn is counted and logged once.
        """
        loop = asyncio.get_running_loop()
        time = loop.time
        stats = self.stats
        config = self.config
        started = time()
        outcome = "ok"
        problem: str | None = None
        first: float | None = None
        streamed = 0
        held = finished = False
        usage: Usage | None = None
        begun: _Started | None = None
        call = self.router.key(turn)
        for kind in turn.normalised:
            stats.normalised[kind] = stats.normalised.get(kind, 0) + 1
        try:
            try:
                if config.hold_message is None or not turn.live:
                    begun = await self._begin(turn, call, started)
                else:
                    task = loop.create_task(self._begin(turn, call, started))
                    try:
                        await asyncio.wait({task}, timeout=config.hold_after)
                        if not task.done():
                            held = True
                            stats.holds += 1
                            yield TextDelta(_spaced(config.hold_message))
                        begun = await task
                    finally:
                        _settle(task, begun)
            except ServiceError as exc:
                if config.fallback_message is None:
                    if held:  # the stream began with the hold message: it ends as a failure
                        outcome, problem = _outcome(exc), exc.message
                        finished = True
                        yield Failure(outcome, problem, Usage())
                        return
                    raise
                outcome, problem = "fallback", f"{exc.code}: {exc.message}"
                finished = True
                yield TextDelta(config.fallback_message)
                yield Finish("stop", Usage(), fallback=True)
                return
            backend = begun.backend
            first = begun.first_at
            backend.first_token()
            self.router.pin(call, backend)
            itl = stats.itl.observe
            last = first
            try:
                events = begun.events
                decode = begun.decoder.feed
                conn = begun.conn
                while True:
                    for event in events:
                        if type(event) is TextDelta:
                            if streamed:
                                now = time()
                                itl(now - last)
                                last = now
                            streamed += 1
                        elif type(event) is Finish:
                            usage = event.usage
                            finished = True
                            self.router.pin(
                                call, backend, usage.prompt_tokens + usage.completion_tokens
                            )
                        yield event
                    if finished:
                        return
                    line = await conn.readline()
                    if line is None:
                        raise UpstreamClosed("Ollama ended the response without a done line")
                    events = decode(line)
            except UpstreamTimeout as exc:
                outcome, problem = "timeout", str(exc)
            except (UpstreamClosed, orjson.JSONDecodeError) as exc:
                if isinstance(exc, orjson.JSONDecodeError):
                    exc = UpstreamClosed(f"Ollama sent a line that is not JSON: {exc}")
                backend.recheck()
                outcome, problem = "upstream_error", str(exc)
            finished = True
            yield Failure(outcome, problem, Usage(completion_tokens=streamed))
        except ServiceError as exc:
            outcome, problem = _outcome(exc), exc.message
            raise
        except (GeneratorExit, asyncio.CancelledError):
            if not finished:  # closed after its last event is not a cancellation
                outcome = "cancelled"
            raise
        finally:
            if begun is not None:
                begun.backend.finished_streaming()
                begun.close(time(), ended=usage is not None)
                if begun.decoder.thinking:
                    self._thinking(begun.decoder.thinking)
                if begun.decoder.truncated:
                    stats.truncated_calls += 1
                    problem = problem or "the answer ended inside a tool call, which was dropped"
            if first is not None:
                stats.ttft.observe(first - started)
            stats.outcomes[outcome] += 1
            self._log_turn(turn, outcome, problem, started, first, streamed, usage, begun, held)

    async def _begin(self, turn: Turn, call: CallKey, started: float) -> _Started:
        """Route the turn and wait for its first events, failing over or hedging as set."""
        config = self.config
        deadline = started + config.first_token_timeout
        backend = self.router.choose(call)
        if backend is None:
            raise self._not_ready()
        ready = sum(1 for b in self.backends if b.ready)
        # With somewhere else to go, the first backend gets half the first-token budget.
        budget = deadline if ready == 1 else started + config.first_token_timeout / 2
        body = self.request_body(turn)
        if config.hedge_after is not None and ready > 1:
            return await self._hedged(body, turn, call, backend, budget, deadline)
        try:
            return await self._attempt(body, turn, backend, budget)
        except ServiceError as exc:
            return await self._fail_over(exc, body, turn, call, backend, deadline)

    async def _fail_over(
        self,
        error: ServiceError,
        body: bytes,
        turn: Turn,
        call: CallKey,
        failed: Backend,
        deadline: float,
    ) -> _Started:
        """Retry a turn that ``failed`` could not start on another ready backend, once.

        Raises ``error`` again when another backend would fail alike, or there is none.
        """
        if error.code not in _RETRYABLE:
            raise error
        other = self.router.choose(call, exclude=failed)
        if other is None:
            raise error
        self.stats.failovers += 1
        log.warning("turn %s: %s; retrying on %s", turn.turn_id, error.message, other.url)
        return await self._attempt(body, turn, other, deadline)

    async def _hedged(
        self,
        body: bytes,
        turn: Turn,
        call: CallKey,
        backend: Backend,
        budget: float,
        deadline: float,
    ) -> _Started:
        """Start on ``backend``; without a first token after ``hedge_after``, also elsewhere.

        The first attempt to produce a first event wins; the other is cancelled, which
        closes its connection at once. When the first attempt fails before a second one
        started, the turn fails over as it would unhedged.
        """
        assert self.config.hedge_after is not None
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._attempt(body, turn, backend, budget))]
        winner: _Started | None = None
        try:
            await asyncio.wait(tasks, timeout=self.config.hedge_after / 1000)
            if not tasks[0].done():
                other = self.router.choose(call, exclude=backend)
                if other is not None and other.free_slots:
                    self.stats.hedges += 1
                    tasks.append(loop.create_task(self._attempt(body, turn, other, deadline)))
            pending = set(tasks)
            error: BaseException | None = None
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:  # in the order they started, so a tie goes to the first
                    if task not in done:
                        continue
                    exc = task.exception()
                    if exc is not None:
                        error = error or exc
                    elif winner is None:
                        winner = task.result()
                        if task is not tasks[0]:
                            self.stats.hedge_wins += 1
            if winner is None:
                assert error is not None
                if len(tasks) == 1 and isinstance(error, ServiceError):
                    # It failed with no second attempt under way: fail over, as unhedged.
                    return await self._fail_over(error, body, turn, call, backend, deadline)
                raise error
            return winner
        finally:
            for task in tasks:
                _settle(task, winner)

    async def _attempt(
        self, body: bytes, turn: Turn, backend: Backend, deadline: float
    ) -> _Started:
        """One try on one backend: a slot, the request, and its first events by ``deadline``.

        What it holds (the slot, the connection) passes to the :class:`_Started` it
        returns; when it raises, it has released them.
        """
        loop = asyncio.get_running_loop()
        time = loop.time
        await backend.admit(min(self.config.queue_timeout, max(deadline - time(), 0.0)))
        admitted = time()
        conn: Connection | None = None
        started: _Started | None = None
        try:
            if not backend.ready:  # it went away while this turn waited for a slot
                raise backend.not_ready()
            conn, line = await backend.open(body, max(deadline - admitted, 0.001))
            names = [t["function"]["name"] for t in turn.tools] if turn.tools else None
            decoder = Decoder(turn.parallel_tool_calls, names)
            while True:
                if conn.status != 200:
                    rest = await conn.read_body()
                    raise backend.status_error(conn.status, error_text((line or b"") + rest))
                if line is None:
                    raise UpstreamClosed("Ollama ended the response without a done line")
                events = decoder.feed(line)
                now = time()
                if events:
                    started = _Started(backend, conn, decoder, events, admitted, now)
                    return started
                if now >= deadline:  # Ollama sends lines, but only thinking
                    raise UpstreamTimeout("no first token from Ollama in time")
                line = await conn.readline()
        except UpstreamTimeout as exc:
            backend.first_token_timeout(time() - admitted)
            raise ServiceError(504, "upstream_timeout", self._at(str(exc), backend)) from None
        except (UpstreamClosed, orjson.JSONDecodeError) as exc:
            backend.recheck()
            raise ServiceError(502, "upstream_error", self._at(str(exc), backend)) from None
        finally:
            if started is None:
                if conn is not None:
                    backend.pool.release(conn)
                backend.release(time() - admitted)

    def _at(self, message: str, backend: Backend) -> str:
        """``message``, saying which Ollama when there are several."""
        return message if len(self.backends) == 1 else f"{message} ({backend.url})"

    def _thinking(self, lines: int) -> None:
        self.stats.thinking_lines += lines
        if not self._warned_thinking:
            self._warned_thinking = True
            log.warning(
                "model %s thinks although every turn sends think: false; its thinking is "
                "not spoken, but it delays the first word",
                self.config.model,
            )

    def _log_turn(
        self,
        turn: Turn,
        outcome: str,
        problem: str | None,
        started: float,
        first: float | None,
        streamed: int,
        usage: Usage | None,
        begun: _Started | None,
        held: bool,
    ) -> None:
        ended = asyncio.get_running_loop().time()
        record: dict[str, Any] = {
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
        if begun is not None and len(self.backends) > 1:
            record["backend"] = begun.backend.url
        if held:
            record["held"] = True
        if turn.normalised:
            record["normalised"] = turn.normalised
        if problem is not None:
            record["error"] = problem
        if self.config.log_content:
            record["messages"] = turn.messages
        level = logging.INFO if outcome in ("ok", "cancelled") else logging.WARNING
        turn_log.log(level, "turn", extra={"fields": record})

    # Status

    async def health(self) -> dict[str, Any]:
        """Each backend's state, and whether the server can serve turns."""
        backends = await asyncio.gather(*(backend.health() for backend in self.backends))
        reachable = [b for b in backends if b["reachable"]]
        warm = any(b["warm"] for b in backends)
        ready = any(b["warm"] and b["stuck"] is None for b in backends)
        first = reachable[0] if reachable else backends[0]
        status = "ok" if ready else "stuck" if self.stuck and warm else "unavailable"
        return {
            "status": status,
            "ollama": {
                "url": self.config.ollama_url
                if len(backends) == 1
                else list(self.config.ollama_urls),
                "reachable": bool(reachable),
                "version": first["version"],
            },
            "model": {"name": self.config.model, "warm": warm},
            "backends": backends,
        }


def _outcome(error: ServiceError) -> str:
    if error.status == 504:
        return "timeout"
    if error.status == 502:
        return "upstream_error"
    return "rejected"


def _spaced(text: str) -> str:
    """``text`` with a trailing space, so the answer after it reads as a new sentence."""
    return text if text[-1:].isspace() else f"{text} "


def _settle(task: asyncio.Task[_Started], keep: _Started | None) -> None:
    """Give up an attempt unless it is ``keep``: cancel it if it is still running (it
    releases what it holds as it ends), else release what it got.

    Never suspends, so a cancellation cannot cut it short and leave a turn's slot held.
    """
    if not task.done():
        task.cancel()
    elif not task.cancelled() and task.exception() is None:
        started = task.result()
        if started is not keep:
            started.close(asyncio.get_running_loop().time())
