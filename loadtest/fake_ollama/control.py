"""The control API under ``/_sim/``: the request log, statistics, live knobs, eviction, reset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .connection import Connection
from .wire import HttpError, decode_body

if TYPE_CHECKING:
    from .server import FakeOllama, Routes


def _requests(sim: FakeOllama, conn: Connection, body: bytes) -> None:
    conn.respond_json(200, sim.requests())


def _stats(sim: FakeOllama, conn: Connection, body: bytes) -> None:
    conn.respond_json(200, sim.stats())


def _config(sim: FakeOllama, conn: Connection, raw: bytes) -> None:
    if raw.strip():
        try:
            sim.update_config(decode_body(raw, "config"))
        except HttpError as error:
            conn.respond_json(error.status, {"error": error.message})
            return
        except ValueError as error:
            conn.respond_json(400, {"error": str(error)})
            return
    conn.respond_json(200, sim.config)


def _evict(sim: FakeOllama, conn: Connection, body: bytes) -> None:
    conn.respond_json(200, {"evicted": sim.evict()})


def _reset(sim: FakeOllama, conn: Connection, body: bytes) -> None:
    sim.reset()
    conn.respond_json(200, sim.stats())


ROUTES: Final[Routes] = {
    b"/_sim/requests": {b"GET": _requests},
    b"/_sim/stats": {b"GET": _stats},
    b"/_sim/config": {b"GET": _config, b"POST": _config},
    b"/_sim/evict": {b"POST": _evict},
    b"/_sim/reset": {b"POST": _reset},
}
