"""The GPU's schedule: the loaded model (a runner), loads, reloads, keep-alive and crashes.

As Ollama's scheduler (``server/sched.go``) and runner (``llm/llama_server.go``):

* a request uses the loaded runner when it serves its model and load-time
  options (``needsReload``), and holds it until it ends; a load in progress is
  waited for;
* any other request queues for the scheduler (at most ``max_queue``), which
  takes one at a time: it asks the runner in the way to unload once its requests
  finish, waits for that (requests for the old options keep using it meanwhile,
  and one that sets ``keep_alive`` postpones the unload by as much, as
  ``useLoadedRunner`` resets the runner's duration), then loads for the request;
* a load belongs to the request that started it: when its client leaves, the
  load is aborted (``WaitUntilRunning``, "client connection closed before
  llama-server finished loading, aborting load") and the next request loads
  from zero; a load can fail, a 500 for the request that started it;
* a runner nobody holds unloads after its keep-alive (``keep_alive`` of the
  request, else the one it was loaded with; omitted, it stays as it was);
* a crash mid-stream (``unexpected EOF`` from llama-server) closes the runner:
  every request on it fails, and the next request loads again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol

from .config import SimConfig, parse_keep_alive
from .profiles import Profile
from .slots import Slots
from .wire import HttpError

LOAD_ERROR: Final = "llama-server process has terminated: exit status 2"
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


class Holder(Protocol):
    """A request holding a runner; told when the runner dies under it."""

    def runner_died(self) -> None:
        """The runner crashed or was closed while this request held it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Admission:
    """What a request needs from the scheduler."""

    model: str
    options: LoadOptions
    profile: Profile
    session: float | None  # keep-alive seconds, None for forever
    session_set: bool  # whether the request gave keep_alive
    fail_load: bool
    holder: Holder


RunnerState = Literal["loading", "ready", "gone"]


class Runner:
    """One loaded (or loading) model: its options, slots, holders and keep-alive."""

    def __init__(
        self,
        model: str,
        options: LoadOptions,
        profile: Profile,
        session: float | None,
        slots: Slots,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.model = model
        self.options = options
        self.profile = profile
        self.session = session
        self.slots = slots
        self.state: RunnerState = "loading"
        self.refs = 0
        self.holders: set[Holder] = set()
        self.loaded: asyncio.Future[bool] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.load_task: asyncio.Task[bool] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.expires_at: float | None = None

    def serves(self, model: str, options: LoadOptions) -> bool:
        """Whether this runner answers a request for ``model`` with ``options``."""
        return self.state != "gone" and self.model == model and self.options.serves(options)


class ModelHost:
    """The GPU: one runner at a time, the scheduler's queue, keep-alive and crashes."""

    def __init__(self, config: SimConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._loop = loop
        self.runner: Runner | None = None
        self.pending = 0
        self.loads = 0
        self.reloads = 0
        self._turn = asyncio.Lock()

    @property
    def loaded(self) -> Runner | None:
        """The runner ready to generate, if any."""
        runner = self.runner
        return runner if runner is not None and runner.state == "ready" else None

    @property
    def active(self) -> int:
        """Requests generating (slots busy)."""
        runner = self.runner
        return runner.slots.busy if runner is not None else 0

    @property
    def queued(self) -> int:
        """Requests admitted but not generating: waiting for the model or for a slot."""
        runner = self.runner
        return self.pending + (runner.slots.waiting if runner is not None else 0)

    def _new_runner(self, model: str, options: LoadOptions, profile: Profile) -> Runner:
        session = parse_keep_alive(self._config.keep_alive)
        slots = Slots(self._config.parallel, self._loop)
        return Runner(model, options, profile, session, slots, self._loop)

    def preload(self, model: str, profile: Profile) -> None:
        """Start with ``model`` loaded with default options."""
        runner = self._new_runner(model, LoadOptions(), profile)
        runner.state = "ready"
        runner.loaded.set_result(True)
        self.runner = runner
        self._arm_if_idle(runner)

    def ready(self, model: str, options: LoadOptions) -> bool:
        """Whether ``model`` is loaded and serves ``options`` right now."""
        runner = self.loaded
        return runner is not None and runner.serves(model, options)

    async def admit(self, request: Admission) -> tuple[Runner, int]:
        """Wait until a runner serves ``request``, and hold it.

        Returns the runner and the nanoseconds spent (Ollama's ``load_duration``).
        """
        started = time.perf_counter_ns()
        while True:
            runner = self.runner
            if runner is None or not runner.serves(request.model, request.options):
                break
            if runner.state == "ready":
                self._hold(runner, request)
                return runner, max(time.perf_counter_ns() - started, 1)
            await asyncio.shield(runner.loaded)
        self.pending += 1
        try:
            async with self._turn:
                runner = await self._schedule(request)
        finally:
            self.pending -= 1
        return runner, max(time.perf_counter_ns() - started, 1)

    async def _schedule(self, request: Admission) -> Runner:
        """The scheduler's turn for ``request``: make room, then load (``processPending``)."""
        evicted = False
        while True:
            runner = self.runner
            if runner is not None and runner.serves(request.model, request.options):
                if runner.state == "loading":
                    await asyncio.shield(runner.loaded)
                    continue
                self._hold(runner, request)
                return runner
            if runner is None:
                return await self._load(request, evicted)
            evicted = True
            runner.session = 0.0
            self._arm_if_idle(runner)
            await asyncio.shield(runner.gone)

    async def _load(self, request: Admission, evicted: bool) -> Runner:
        runner = self._new_runner(request.model, request.options, request.profile)
        if request.session_set:
            runner.session = request.session
        self.runner = runner
        self.loads += 1
        self.reloads += evicted
        task = self._loop.create_task(self._run_load(runner, request.fail_load))
        runner.load_task = task
        try:
            ready = await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._config.abort_load:
                task.cancel()
            else:
                task.add_done_callback(lambda _: self._orphaned(runner))
            raise
        if not ready:
            raise HttpError(500, LOAD_ERROR)
        self._adopt(runner, request)
        return runner

    async def _run_load(self, runner: Runner, fail: bool) -> bool:
        """Load; the runner is held (for its requester) the moment it is ready."""
        try:
            await asyncio.sleep(self._config.load_ms / 1000)
        except asyncio.CancelledError:
            self._discard(runner)
            raise
        if fail:
            self._discard(runner)
            return False
        runner.state = "ready"
        runner.refs += 1
        runner.loaded.set_result(True)
        return True

    def _orphaned(self, runner: Runner) -> None:
        """A load whose requester left finished: let the runner go idle."""
        if runner.state == "ready":
            runner.refs -= 1
            self._arm_if_idle(runner)

    def _adopt(self, runner: Runner, request: Admission) -> None:
        """Take over the hold the load made for ``request``."""
        runner.holders.add(request.holder)

    def _hold(self, runner: Runner, request: Admission) -> None:
        runner.refs += 1
        runner.holders.add(request.holder)
        self._cancel_expiry(runner)
        if request.session_set:
            runner.session = request.session

    def release(self, runner: Runner, holder: Holder) -> None:
        """A request holding ``runner`` ended; keep-alive starts when it was the last."""
        runner.holders.discard(holder)
        runner.refs -= 1
        self._arm_if_idle(runner)

    def crash(self, runner: Runner, cause: Holder) -> None:
        """The runner died under ``cause``: close it and fail every other request on it."""
        if runner.state == "gone":
            return
        self._discard(runner)
        for holder in list(runner.holders):
            if holder is not cause:
                holder.runner_died()

    def expire(self, model: str) -> None:
        """Unload ``model`` as soon as no request uses it (``keep_alive: 0``)."""
        runner = self.loaded
        if runner is not None and runner.model == model:
            runner.session = 0.0
            self._arm_if_idle(runner)

    def unload(self) -> bool:
        """Drop the loaded model now; returns whether one was loaded."""
        runner = self.loaded
        if runner is None:
            return False
        self._discard(runner)
        return True

    def resize(self, parallel: int) -> None:
        """Resize the loaded model's slots to ``parallel``."""
        if self.runner is not None:
            self.runner.slots.resize(parallel)

    def expires_at(self) -> float:
        """When the loaded model will be unloaded, as ``time.time()``."""
        runner = self.runner
        session = runner.session if runner is not None else None
        if runner is None or session is None:
            return time.time() + _FOREVER_SECONDS
        if runner.expires_at is not None:
            return runner.expires_at
        return time.time() + session

    def close(self) -> None:
        """Stop the timers and any load in progress."""
        runner = self.runner
        if runner is not None:
            self._cancel_expiry(runner)
            if runner.load_task is not None:
                runner.load_task.cancel()

    def _discard(self, runner: Runner) -> None:
        """The runner is gone (unloaded, crashed, aborted or failed to load)."""
        self._cancel_expiry(runner)
        runner.state = "gone"
        if self.runner is runner:
            self.runner = None
        if not runner.loaded.done():
            runner.loaded.set_result(False)
        if not runner.gone.done():
            runner.gone.set_result(None)

    def _arm_if_idle(self, runner: Runner) -> None:
        if runner.state != "ready" or runner.refs > 0:
            return
        self._cancel_expiry(runner)
        session = runner.session
        if session is None:
            return
        if session <= 0:
            self._discard(runner)
            return
        runner.expires_at = time.time() + session
        runner.expiry = self._loop.call_later(session, self._discard, runner)

    def _cancel_expiry(self, runner: Runner) -> None:
        if runner.expiry is not None:
            runner.expiry.cancel()
            runner.expiry = None
        runner.expires_at = None
