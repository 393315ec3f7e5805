"""The GPU's schedule: which model is loaded, its parallel slots, its queue and its keep-alive."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from .config import SimConfig, parse_keep_alive
from .wire import HttpError

_FOREVER_SECONDS: Final = (2**63 - 1) / 1e9  # Go's time.Duration(math.MaxInt64)


@dataclasses.dataclass(frozen=True, slots=True)
class LoadOptions:
    """The load-time (runner) options a model is loaded with, defaults filled in."""

    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int = 0
    num_thread: int = 0
    use_mmap: bool | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LoadOptions:
        """The load-time part of a request's ``options``; a mistyped one is a 500, as in Ollama."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = options.get(field.name)
            if value is None:
                continue
            if field.name == "use_mmap":
                if not isinstance(value, bool):
                    raise HttpError(500, f'option "{field.name}" must be of type boolean')
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise HttpError(500, f'option "{field.name}" must be of type integer')
            values[field.name] = value if field.name == "use_mmap" else int(value)
        return cls(**values)

    def serves(self, wanted: LoadOptions) -> bool:
        """Whether a model loaded with these options serves ``wanted`` without a reload.

        As Ollama's scheduler: every option must match, except that a negative
        ``num_gpu`` (all layers) matches whatever was loaded.
        """
        if wanted.num_gpu < 0:
            return dataclasses.replace(self, num_gpu=-1) == wanted
        return self == wanted


@dataclasses.dataclass(frozen=True, slots=True)
class _Loaded:
    """The model in memory and the load-time options it was loaded with."""

    model: str
    options: LoadOptions


class ModelHost:
    """The GPU: one loaded model, its parallel slots, its FIFO queue and its keep-alive timer.

    As Ollama: a request first waits for the model (loading or reloading it;
    at most ``max_queue`` requests may wait there), then for a slot, in
    arrival order and without limit. The keep-alive timer runs only while no
    request uses the model; a request's ``keep_alive`` sets its length.
    """

    def __init__(self, config: SimConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._loop = loop
        self.loaded: _Loaded | None = None
        self.active = 0
        self.pending = 0
        self.loads = 0
        self.reloads = 0
        self._session: float | None = parse_keep_alive(config.keep_alive)
        self._loading: asyncio.Task[None] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._expires_at: float | None = None

    @property
    def queued(self) -> int:
        """Requests admitted but not generating: waiting for the model or for a slot."""
        return self.pending + len(self._waiters)

    def preload(self, model: str) -> None:
        """Start with ``model`` loaded with default options."""
        self.loaded = _Loaded(model, LoadOptions())
        self._arm_if_idle()

    def ready(self, model: str, options: LoadOptions) -> bool:
        """Whether ``model`` is loaded and serves ``options`` right now."""
        loaded = self.loaded
        return (
            self._loading is None
            and loaded is not None
            and loaded.model == model
            and loaded.options.serves(options)
        )

    async def prepare(self, model: str, options: LoadOptions, session: float | None) -> int:
        """Wait until ``model`` is loaded with ``options`` and mark it in use.

        Returns the nanoseconds spent (Ollama's ``load_duration``). A load
        goes on when the waiting client goes away.
        """
        started = time.perf_counter_ns()
        if not self.ready(model, options):
            self.pending += 1
            try:
                while not self.ready(model, options):
                    if self._loading is None:
                        self._loading = self._loop.create_task(self._load(model, options, session))
                    await asyncio.shield(self._loading)
            except asyncio.CancelledError:
                self.pending -= 1
                self._arm_if_idle()
                raise
            self.pending -= 1
        self._cancel_expiry()
        self._session = session
        return max(time.perf_counter_ns() - started, 1)

    async def _load(self, model: str, options: LoadOptions, session: float | None) -> None:
        """Load ``model``, evicting whatever is loaded."""
        if self.loaded is not None:
            self.reloads += 1
            self.unload()
        self.loads += 1
        try:
            await asyncio.sleep(self._config.load_ms / 1000)
        finally:
            self._loading = None
        self.loaded = _Loaded(model, options)
        self._session = session
        self._arm_if_idle()

    async def acquire_slot(self) -> None:
        """Wait for a generation slot, first come first served."""
        if self.active < self._config.parallel and not self._waiters:
            self.active += 1
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter, else free; start keep-alive when idle."""
        self.active -= 1
        self.grant()
        self._arm_if_idle()

    def grant(self) -> None:
        """Hand free slots to waiters in arrival order."""
        while self._waiters and self.active < self._config.parallel:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.active += 1

    def settle(self) -> None:
        """Start keep-alive after a request that only loaded the model."""
        self._arm_if_idle()

    def expire(self, model: str) -> None:
        """Unload ``model`` as soon as no request uses it (``keep_alive: 0``)."""
        if self.loaded is not None and self.loaded.model == model:
            self._session = 0.0
            self._arm_if_idle()

    def unload(self) -> bool:
        """Drop the loaded model now; returns whether one was loaded."""
        self._cancel_expiry()
        was_loaded = self.loaded is not None
        self.loaded = None
        return was_loaded

    def expires_at(self) -> float:
        """When the loaded model will be unloaded, as ``time.time()``."""
        if self._session is None:
            return time.time() + _FOREVER_SECONDS
        if self._expires_at is not None:
            return self._expires_at
        return time.time() + self._session

    def close(self) -> None:
        """Stop the timers and any load in progress."""
        self._cancel_expiry()
        if self._loading is not None:
            self._loading.cancel()

    def _arm_if_idle(self) -> None:
        if self.loaded is None or self.active or self.pending:
            return
        self._cancel_expiry()
        if self._session is None:
            return
        if self._session <= 0:
            self.unload()
            return
        self._expires_at = time.time() + self._session
        self._expiry = self._loop.call_later(self._session, self.unload)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._expires_at = None
