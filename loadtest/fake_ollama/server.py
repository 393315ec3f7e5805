"""The running simulator: routing, the request log, statistics and live knobs."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from . import api, control
from .config import SimConfig
from .connection import TEXT_PLAIN_GIN, Connection, Request
from .profiles import profile_for
from .scheduler import ModelHost
from .wire import JsonObject, canonical_name

Outcome = Literal[
    "in_progress", "done", "client_closed", "error", "dropped", "stalled", "incomplete", "rejected"
]
Handler = Callable[["FakeOllama", Connection, bytes], None]
Routes = dict[bytes, dict[bytes, Handler]]

REQUEST_LOG_SIZE: Final = 10_000
_LOCAL_SUFFIXES: Final = (".localhost", ".local", ".internal")


@dataclasses.dataclass(slots=True)
class RequestRecord:
    """What happened to one /api/chat or /api/generate request (times from ``time.time()``).

    ``finished_at`` is when the server sent the end of its answer;
    ``client_closed_at`` when the client's connection went away before that
    end. ``tokens_sent`` counts the reply's lines before the ``done`` line (a
    tool call counts as one); for a non-streaming request, the tokens generated.
    Once the request has a slot: ``slot`` (its id), ``slot_selection``
    (``similarity`` or ``lru``), ``prompt_tokens`` (Ollama's ``prompt_eval_count``),
    ``cached_tokens`` (reused from the slot's cache), ``evaluated_tokens`` (the
    rest, which cost ``ttft_per_prompt_token``) and ``restored_tokens`` (brought
    back from the RAM prompt cache first); ``dropped_messages`` counts the
    messages trimmed to fit ``num_ctx``, ``slot_leaked`` whether the client left
    its slot held.
    """

    id: int
    path: str
    body: Any
    received_at: float
    first_byte_at: float | None = None
    finished_at: float | None = None
    client_closed_at: float | None = None
    tokens_sent: int = 0
    outcome: Outcome = "in_progress"
    profile: str | None = None
    dropped_messages: int = 0
    slot: int | None = None
    slot_selection: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    evaluated_tokens: int | None = None
    restored_tokens: int | None = None
    slot_leaked: bool = False


class FakeOllama:
    """A running simulator: its port, its live config, its statistics and request log."""

    def __init__(self, config: SimConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.port = 0
        self.host = ModelHost(config, loop)
        self.connections: set[Connection] = set()
        self.connections_total = 0  # accepted since the start or the last reset
        self.rng = random.Random(config.seed)
        self._log: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self._next_id = 1
        self._requests_total = 0
        self._server: asyncio.Server | None = None
        self._routes: Routes = {**api.ROUTES, **control.ROUTES}
        if config.preloaded:
            model = canonical_name(config.models[0])
            self.host.preload(model, profile_for(model, config))

    async def listen(self, host: str, port: int) -> None:
        """Accept connections on ``host:port`` (port 0 picks a free one)."""
        self._server = await self.loop.create_server(
            lambda: Connection(self), host, port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, close every connection and stop the timers."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.drop()
        self.host.close()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let the closed connections' connection_lost run

    def stats(self) -> JsonObject:
        """Counters and gauges, as ``GET /_sim/stats`` answers them.

        ``slots`` lists the loaded model's slots (``id``, ``busy``,
        ``cached_tokens``); ``leaked_slots`` counts permits never given back,
        ``ram_cache`` the prompts and tokens in llama-server's RAM prompt cache.
        """
        host = self.host
        loaded = host.loaded
        runner = host.runner
        slots: JsonObject = (
            runner.slots.describe()
            if runner is not None
            else {"slots": [], "leaked_slots": 0, "ram_cache": {"prompts": 0, "tokens": 0}}
        )
        return {
            "active": host.active,
            "queued": host.queued,
            "loaded": loaded is not None,
            "loaded_model": loaded.model if loaded is not None else None,
            "loading": runner is not None and runner.state == "loading",
            "reloads": host.reloads,
            "loads": host.loads,
            "connections_open": len(self.connections),
            "connections_total": self.connections_total,
            "requests_total": self._requests_total,
            **slots,
        }

    def requests(self) -> list[RequestRecord]:
        """The last /api/chat and /api/generate requests, oldest first."""
        return list(self._log)

    def log_request(self, path: str) -> RequestRecord:
        """Count a new /api/chat or /api/generate request and add its record to the log."""
        record = RequestRecord(id=self._next_id, path=path, body=None, received_at=time.time())
        self._next_id += 1
        self._requests_total += 1
        self._log.append(record)
        return record

    def update_config(self, changes: Mapping[str, Any]) -> None:
        """Change knobs live; raises ValueError (changing nothing) on a bad one."""
        self.config.apply(changes)
        if "seed" in changes:
            self.rng.seed(self.config.seed)
        if "parallel" in changes:
            self.host.resize(self.config.parallel)

    def evict(self) -> bool:
        """Unload the model now, as if evicted; returns whether one was loaded."""
        return self.host.unload()

    def reset(self) -> None:
        """Clear the request log and the counters, and reseed the random generator."""
        self._log.clear()
        self._requests_total = 0
        self.connections_total = 0
        self.host.loads = 0
        self.host.reloads = 0
        self.rng.seed(self.config.seed)

    def jittered(self, milliseconds: float) -> float:
        """``milliseconds`` plus the configured jitter, in seconds, never negative."""
        jitter = self.config.jitter
        if jitter:
            milliseconds += self.rng.uniform(-jitter, jitter)
        return milliseconds / 1000 if milliseconds > 0 else 0.0

    def dispatch(self, conn: Connection, request: Request) -> None:
        """Route one request to its handler, as Ollama's gin router would."""
        conn.keep_alive = request.keep_alive
        conn.head_only = request.method == b"HEAD"
        if self.config.check_host and not _host_allowed(request.host):
            conn.respond(403, b"", b"")
            return
        methods = self._routes.get(request.target.partition(b"?")[0])
        if methods is None:
            conn.respond(404, TEXT_PLAIN_GIN, b"404 page not found")
            return
        handler = methods.get(request.method)
        if handler is None:
            conn.respond(405, TEXT_PLAIN_GIN, b"405 method not allowed")
            return
        handler(self, conn, request.body)


def _host_allowed(host_header: bytes) -> bool:
    """Whether Ollama bound to loopback accepts this ``Host`` header (its allowedHosts rule)."""
    host = host_header.decode("latin-1").lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in ("", "localhost", socket.gethostname().lower()) or host.endswith(
            _LOCAL_SUFFIXES
        )
    return address.is_loopback or address.is_private or address.is_unspecified


async def start(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> FakeOllama:
    """Start a simulator on the running event loop; ``port`` 0 picks a free port."""
    sim = FakeOllama(config, asyncio.get_running_loop())
    await sim.listen(host, port)
    return sim
