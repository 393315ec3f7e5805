"""One Ollama: its connections, its warm model, its slots, its primed prompt cache, its health.

A :class:`Backend` preloads the model with the fixed load-time options and keeps it
loaded: it polls Ollama, and loads the model again whenever Ollama restarts or evicts
it. After each load it primes every slot's prompt cache with the configured prefix
(the system prompt and tools every call starts with), so a call's first turn already
finds that prefix cached. It admits at most ``max_concurrency`` turns at once and
says, for the router, whether it can take a turn (:attr:`Backend.ready`) and how busy
it is.

A backend whose turns time out before their first token while nothing else streams
from it is *stuck* (a slot held by a request Ollama lost, ollama/ollama#17131): it is
reported on ``/ping``, ``/health`` and ``/metrics``, takes no turns, and is probed
until it answers again (after Ollama is restarted, for instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
import orjson

from ..config import Config
from .errors import ServiceError
from .upstream import Connection, ConnectionPool, UpstreamClosed

__all__ = ["CONTROL_ERRORS", "Backend", "chat_head", "model_tag"]

log = logging.getLogger("server.backend")

# What a control-plane call to Ollama (preload, /api/ps) raises when Ollama is not ready.
CONTROL_ERRORS = (OSError, TimeoutError, httpx.HTTPError, ollama.ResponseError, ConnectionError)

_RETRY_AFTER = 2
# Consecutive first-token timeouts, with nothing streaming between them, that make a
# backend stuck: one can be a single huge prompt, two in a row with an idle GPU are not.
_STUCK_AFTER = 2
# Weight of the newest turn in a backend's running mean turn time.
_EWMA = 0.2


def chat_head(config: Config) -> dict[str, Any]:
    """What every ``/api/chat`` body starts with: the model, streaming, no thinking."""
    return {"model": config.model, "stream": True, "think": False, "keep_alive": config.keep_alive}


def model_tag(name: str) -> str:
    """Ollama's full name for a model: ``llama3.1`` is ``llama3.1:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class Backend:
    """One Ollama server, serving the configured model.

    Call :meth:`start` once inside the event loop; it preloads the model in the
    background and keeps it warm. The engine takes a slot with :meth:`admit`, sends
    the turn with :meth:`open`, and reports how the turn went (:meth:`first_token`,
    :meth:`first_token_timeout`, :meth:`finished_streaming`).
    """

    def __init__(self, config: Config, url: str) -> None:
        self.config = config
        self.url = url
        parts = urlsplit(url)
        self.pool = ConnectionPool(
            parts.hostname or "127.0.0.1", parts.port or 11434, config.connect_timeout
        )
        self._control = ollama.AsyncClient(host=url, timeout=600.0)
        self.slots = config.max_concurrency
        self._free = asyncio.Semaphore(self.slots)
        self.in_flight = 0
        self.waiting = 0
        self.streaming = 0
        self.reachable = False
        self.version: str | None = None
        self.missing = False
        self.load_error: str | None = None
        self.stuck: str | None = None
        self.loads = 0
        self.turn_seconds = 0.0
        self._silent_timeouts = 0
        self._prime: list[bytes] = []
        self._warm = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recheck = asyncio.Event()

    # Lifecycle

    def prime_with(self, bodies: list[bytes]) -> None:
        """The ``/api/chat`` bodies that prime the slots after each load (set before start)."""
        self._prime = bodies

    async def start(self) -> None:
        """Start warming the model in the background (returns at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._keep_warm(), name=f"keep-warm {self.url}")

    async def close(self) -> None:
        """Stop the warm-keeping task and close every idle connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.pool.close()
        await self._control.close()  # type: ignore[no-untyped-call]

    @property
    def warm(self) -> bool:
        """Whether the model is loaded in this Ollama."""
        return self._warm.is_set()

    @property
    def ready(self) -> bool:
        """Whether this backend takes turns: warm and not stuck."""
        return self._warm.is_set() and self.stuck is None

    @property
    def free_slots(self) -> int:
        """Slots free right now (none while turns wait for one)."""
        return 0 if self.waiting else self.slots - self.in_flight

    @property
    def load(self) -> float:
        """Turns streaming or waiting here, per slot."""
        return (self.in_flight + self.waiting) / self.slots

    def expected_wait(self) -> float:
        """Seconds a turn admitted now would wait for a slot, from the mean turn time."""
        if self.free_slots:
            return 0.0
        return (self.waiting + 1) * self.turn_seconds / self.slots

    async def wait_warm(self) -> None:
        """Return once the model is warm (bound the wait with ``asyncio.timeout``)."""
        await self._warm.wait()

    async def preload(self) -> None:
        """Load the model with exactly the options every turn sends, so no turn reloads it.

        Raises ``ollama.ResponseError`` (404) when Ollama has no such model, or another
        of :data:`CONTROL_ERRORS` when Ollama is not ready.
        """
        options = self.config.load_options
        await self._control.chat(
            model=self.config.model,
            messages=[],
            think=False,
            keep_alive=self.config.keep_alive,
            options=options or None,
        )

    def recheck(self) -> None:
        """Check Ollama and the model again now, rather than at the next interval."""
        self._recheck.set()

    def lost(self) -> None:
        """Ollama stopped answering: not warm until the model is seen loaded again."""
        self.reachable = False
        self._warm.clear()
        self._recheck.set()

    def missing_message(self) -> str:
        """What to do when Ollama has no such model."""
        model = self.config.model
        return f"model '{model}' is not in Ollama at {self.url}: run ollama pull {model}"

    async def _keep_warm(self) -> None:
        loaded = failing = False
        config = self.config
        while True:
            try:
                status, version = await self.pool.get_json("/api/version", config.connect_timeout)
                if status != 200:  # not Ollama itself: a proxy in front of it, say
                    raise ConnectionError(f"it answered {status} to GET /api/version")
                self.reachable = True
                if isinstance(version, dict):
                    self.version = str(version.get("version"))
                if loaded:
                    loaded = await self._loaded()
                    if not loaded:
                        log.warning(
                            "model %s is no longer loaded in Ollama at %s; reloading",
                            config.model,
                            self.url,
                        )
                if not loaded:
                    self._warm.clear()
                    await self._load()
                    loaded = True
                if self.stuck is not None:
                    await self._probe()
                self._warm.set()
                failing = False
            except ollama.ResponseError as exc:
                # Ollama answered, but cannot load the model: say what it said, once.
                self._warm.clear()
                loaded = False
                failing = True
                if exc.status_code == 404:
                    if not self.missing:
                        log.error("%s", self.missing_message())
                    self.missing = True
                elif str(exc) != self.load_error:
                    log.error("Ollama at %s cannot load model %s: %s", self.url, config.model, exc)
                    self.load_error = str(exc)
            except CONTROL_ERRORS as exc:
                failing = self._failed(exc, failing)
                loaded = False
            self._recheck.clear()
            delay = (
                config.warm_check_interval
                if self.ready and not failing
                else config.warm_retry_interval
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._recheck.wait()

    def _failed(self, exc: BaseException, failing: bool) -> bool:
        if not failing:  # once per outage, not at every retry
            log.warning("Ollama at %s is not ready: %s", self.url, exc or type(exc).__name__)
        self.reachable = False
        self._warm.clear()
        return True

    async def _loaded(self) -> bool:
        ps = await self._control.ps()
        wanted = model_tag(self.config.model)
        return any(model_tag(m.model or "") == wanted for m in ps.models)

    async def _load(self) -> None:
        started = asyncio.get_running_loop().time()
        await self.preload()
        self.missing = False
        self.load_error = None
        self.stuck = None
        self._silent_timeouts = 0
        self.loads += 1
        loaded_in = asyncio.get_running_loop().time() - started
        primed = await self._prime_slots()
        log.info(
            "model %s is warm in Ollama at %s (loaded in %.1f s%s)",
            self.config.model,
            self.url,
            loaded_in,
            f", {primed} slots primed" if self._prime else "",
        )

    async def _prime_slots(self) -> int:
        """Evaluate each priming prompt in every slot at once, so each lands in its own slot.

        Returns how many priming requests completed.
        """
        if not self._prime:
            return 0
        bodies = [self._prime[i % len(self._prime)] for i in range(self.slots)]
        return sum(await asyncio.gather(*(self._prime_one(body) for body in bodies)))

    async def _prime_one(self, body: bytes) -> bool:
        timeout = self.config.first_token_timeout
        try:
            conn = await self.pool.request("POST", "/api/chat", body, timeout, timeout)
        except (OSError, TimeoutError) as exc:
            log.warning("priming a slot of %s failed: %s", self.url, exc or type(exc).__name__)
            return False
        try:
            text = await conn.read_body()
        except (UpstreamClosed, TimeoutError) as exc:
            log.warning("priming a slot of %s failed: %s", self.url, exc)
            return False
        finally:
            self.pool.release(conn)
        if conn.status != 200:
            log.warning(
                "priming a slot of %s failed: Ollama answered %d: %s",
                self.url,
                conn.status,
                error_text(text),
            )
            return False
        return True

    async def _probe(self) -> None:
        """Send one short turn to a stuck backend; an answer means it is no longer stuck."""
        body = self._prime[0] if self._prime else None
        if body is None:
            config = self.config
            body = orjson.dumps(
                {
                    **chat_head(config),
                    "messages": [{"role": "user", "content": "Hello"}],
                    "options": {**config.load_options, "num_predict": 1},
                }
            )
        if await self._prime_one(body):
            log.info("Ollama at %s answers again; it is no longer stuck", self.url)
            self.stuck = None
            self._silent_timeouts = 0

    # Serving

    def not_ready(self) -> ServiceError:
        """Why this backend cannot take a turn now, as the error a turn gets."""
        if not self.reachable:
            return ServiceError(
                503,
                "ollama_unreachable",
                f"Ollama is not reachable at {self.url}",
                retry_after=_RETRY_AFTER,
            )
        if self.missing:
            return ServiceError(503, "model_missing", self.missing_message())
        if self.stuck is not None:
            return ServiceError(503, "ollama_stuck", self.stuck, retry_after=_RETRY_AFTER)
        if self.load_error is not None:
            return ServiceError(
                503,
                "model_not_warm",
                f"Ollama at {self.url} cannot load model {self.config.model}: {self.load_error}",
                retry_after=_RETRY_AFTER,
            )
        return ServiceError(
            503,
            "model_not_warm",
            f"model {self.config.model} is still loading",
            retry_after=_RETRY_AFTER,
        )

    async def admit(self, wait: float) -> None:
        """Take one of the ``max_concurrency`` slots, waiting up to ``wait`` seconds.

        Turns never queue inside Ollama, whose own queue has no bound.
        """
        free = self._free
        if not free.locked():
            await free.acquire()  # a free slot: returns without suspending
        else:
            self.waiting += 1
            try:
                async with asyncio.timeout(wait):
                    await free.acquire()
            except TimeoutError:
                raise ServiceError(
                    503,
                    "overloaded",
                    f"all {self.slots} slots of Ollama at {self.url} stayed busy for "
                    f"{wait:.3g} s: raise --max-concurrency (MAX_CONCURRENCY) to the "
                    "OLLAMA_NUM_PARALLEL that Ollama runs with, or add an Ollama",
                    retry_after=1,
                ) from None
            finally:
                self.waiting -= 1
        self.in_flight += 1

    def release(self, seconds: float) -> None:
        """Give back a slot taken by :meth:`admit`; the turn held it ``seconds``."""
        self.in_flight -= 1
        self._free.release()
        self.turn_seconds += _EWMA * (seconds - self.turn_seconds)

    async def open(self, body: bytes, first_timeout: float) -> tuple[Connection, bytes | None]:
        """Send a turn's ``/api/chat`` body; its connection and the answer's first line.

        A kept connection that turns out closed before any answer (closed at the other
        end while idle, by a proxy say) is given up and the body sent again on a new
        one. Raises a 503 :class:`ServiceError` if Ollama is unreachable; the reading
        raises as :meth:`Connection.readline` does, and then the connection is closed.
        """
        conn = await self._send(body, first_timeout)
        try:
            try:
                return conn, await conn.readline()
            except UpstreamClosed:
                if not conn.reused or conn.status:
                    raise
            self.pool.release(conn)
            conn = await self._send(body, first_timeout, fresh=True)
            return conn, await conn.readline()
        except BaseException as exc:
            self.pool.release(conn)
            if isinstance(exc, asyncio.CancelledError | GeneratorExit) and not conn.status:
                # Cancelled before Ollama answered: if this turn was what loaded the model,
                # closing it aborted the load (ollama/ollama's WaitUntilRunning), so the
                # warm loop looks now rather than at its next interval.
                self.recheck()
            raise

    async def _send(self, body: bytes, first_timeout: float, fresh: bool = False) -> Connection:
        try:
            return await self.pool.request(
                "POST", "/api/chat", body, first_timeout, self.config.token_timeout, fresh
            )
        except (OSError, TimeoutError):
            self.lost()
            raise self.not_ready() from None

    def first_token(self) -> None:
        """A turn here streams: the backend is evidently not stuck."""
        self.streaming += 1
        self._silent_timeouts = 0
        if self.stuck is not None:
            log.info("Ollama at %s streams again; it is no longer stuck", self.url)
            self.stuck = None

    def finished_streaming(self) -> None:
        """A turn that streamed here has ended."""
        self.streaming -= 1

    def first_token_timeout(self, seconds: float) -> None:
        """A turn got no first token within ``seconds``; with nothing streaming, count it."""
        if self.streaming:
            return
        self._silent_timeouts += 1
        if self._silent_timeouts >= _STUCK_AFTER and self.stuck is None:
            self.stuck = (
                f"Ollama at {self.url} accepts turns but sent no first token within "
                f"{seconds:.3g} s for {self._silent_timeouts} turns in a row while nothing "
                "streamed: a slot is likely held by a lost request (ollama/ollama#17131); "
                "restart Ollama"
            )
            log.error("%s", self.stuck)
            self._recheck.set()

    def status_error(self, status: int, text: str) -> ServiceError:
        """The error for a turn Ollama refused with ``status``."""
        if status == 503:
            return ServiceError(
                503, "ollama_busy", f"Ollama is busy: {text}", retry_after=_RETRY_AFTER
            )
        if status == 400:
            return ServiceError(400, "rejected_by_ollama", f"Ollama rejected the request: {text}")
        if status == 404:
            self._recheck.set()
        return ServiceError(502, "upstream_error", f"Ollama answered {status}: {text}")

    # Status

    async def health(self) -> dict[str, Any]:
        """This backend's state, with a fresh check that Ollama answers."""
        try:
            status, version = await self.pool.get_json("/api/version", self.config.connect_timeout)
            reachable = status == 200
            if reachable and isinstance(version, dict):
                self.version = str(version.get("version"))
        except (OSError, TimeoutError, UpstreamClosed):
            reachable = False
        if not reachable and self.reachable:
            self.lost()  # warmth follows what was just seen
        return {
            "url": self.url,
            "reachable": reachable,
            "version": self.version if reachable else None,
            "warm": self.warm and reachable,
            "model_missing": self.missing,
            "load_error": self.load_error,
            "stuck": self.stuck,
            "slots": self.slots,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
        }


def error_text(body: bytes) -> str:
    """The message of an Ollama error body (``{"error": "..."}``), or its text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace").strip()[:200] or "no details"
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else "no details"
