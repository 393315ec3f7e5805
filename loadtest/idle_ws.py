"""Resident memory of idle websocket connections on the server.

``python -m loadtest.idle_ws [--connections 1000] [--no-turn] [--settle 3] [--api-key KEY]``
starts the Ollama simulator and the server (:mod:`loadtest.processes`), warms the
server up with a few connections that stream a turn and close, and measures the
server's memory: RSS, and USS and PSS where psutil can read them. It then opens N
websockets to ``/ws``; each completes the handshake and streams one short turn (unless
``--no-turn``), then stays open and idle. After ``--settle`` seconds the memory is
measured again: the growth divided by N is what one idle connection costs. Last, the
connections are closed and RSS is shown once more (Python keeps much of what it
freed, so this is for information).

The client's file-descriptor limit is raised (up to the hard limit) to hold N sockets,
and the server, which inherits it, is started with ``--max-connections`` above N.

Exit status: 0 when an idle connection costs less than 64 KiB of RSS, 1 when it costs
more, 2 when a child process fails or a connection cannot be opened or kept open.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import psutil  # type: ignore[import-untyped,unused-ignore]
import uvloop

from .bench import StreamFailed, StreamRecord, WsConnection, ws_connect
from .processes import simulator_and_server

__all__ = ["GOAL_KIB", "Memory", "main", "raise_fd_limit"]

GOAL_KIB = 64
MODEL = "llama3.1:8b"
# Connections opened, and turns streamed, before the first measurement.
_WARMUP_CONNECTIONS = 20
# Handshakes (and first turns) in flight at once while connections are opened.
_OPENING_AT_ONCE = 50
# File descriptors kept free beside the sockets (logs, pipes, the server's own).
_FD_MARGIN = 256
# The short turn each connection streams first.
_CHAT = {
    "type": "chat",
    "id": "1",
    "messages": [
        {"role": "system", "content": "You are a friendly receptionist. Answer briefly."},
        {"role": "user", "content": "Hi, are you open on Saturday?"},
    ],
    "max_tokens": 20,
}


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft limit on open files to ``needed``; returns the limit.

    Raises :class:`RuntimeError` when the hard limit is lower than ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"{needed} open files are needed but the hard limit is {hard}: "
            "raise it (ulimit -Hn) or open fewer connections"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


@dataclass(frozen=True)
class Memory:
    """One reading of a process's memory, in bytes (``None``: not available here)."""

    rss: int
    uss: int | None
    pss: int | None

    @classmethod
    def of(cls, pid: int) -> Memory:
        """Read the memory of process ``pid``."""
        process = psutil.Process(pid)
        try:
            full = process.memory_full_info()
        except psutil.AccessDenied:
            return cls(process.memory_info().rss, None, None)
        return cls(full.rss, getattr(full, "uss", None), getattr(full, "pss", None))


async def _open(
    host: str, port: int, headers: Sequence[str], turn: bool, gate: asyncio.Semaphore
) -> WsConnection:
    """One websocket, after its handshake and, with ``turn``, one streamed turn."""
    async with gate:
        conn = await ws_connect(host, port, "/ws", headers)
        if turn:
            try:
                async with asyncio.timeout(20):
                    await conn.turn("1", orjson.dumps(_CHAT), StreamRecord(0, 0))
            except BaseException:
                conn.close()
                raise
        return conn


async def _open_many(
    count: int, host: str, port: int, headers: Sequence[str], turn: bool
) -> list[WsConnection]:
    """``count`` websockets, opened ``_OPENING_AT_ONCE`` at a time; all or none."""
    gate = asyncio.Semaphore(_OPENING_AT_ONCE)
    results = await asyncio.gather(
        *(_open(host, port, headers, turn, gate) for _ in range(count)), return_exceptions=True
    )
    conns = [r for r in results if isinstance(r, WsConnection)]
    failures = [r for r in results if not isinstance(r, WsConnection)]
    if failures:
        for conn in conns:
            conn.close()
        reasons = sorted({str(f) or type(f).__name__ for f in failures})
        raise RuntimeError(f"{len(failures)} of {count} websockets failed: {'; '.join(reasons)}")
    return conns


def _kib(value: int | None, count: int) -> str:
    return "-" if value is None else f"{value / 1024 / count:.1f} KiB"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


async def _measure(
    pid: int, host: str, port: int, headers: Sequence[str], args: argparse.Namespace
) -> tuple[Memory, Memory, Memory]:
    """Memory before, with the idle connections open, and after closing them."""
    warm = await _open_many(_WARMUP_CONNECTIONS, host, port, headers, turn=True)
    for conn in warm:
        conn.close()
    await asyncio.sleep(1.0)
    before = Memory.of(pid)
    started = time.perf_counter()
    conns = await _open_many(args.connections, host, port, headers, args.turn)
    opened = time.perf_counter() - started
    print(f"opened {len(conns)} websockets in {opened:.1f} s; idling {args.settle:g} s", flush=True)
    await asyncio.sleep(args.settle)
    during = Memory.of(pid)
    dropped = sum(1 for conn in conns if conn.closed)
    for conn in conns:
        conn.close()
    if dropped:
        raise RuntimeError(f"{dropped} of {len(conns)} idle websockets were closed by the server")
    await asyncio.sleep(1.0)
    return before, during, Memory.of(pid)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.idle_ws",
        description="Measure the server's resident memory per idle websocket connection.",
    )
    parser.add_argument(
        "--connections", type=int, default=1000, help="idle websockets to open (default 1000)"
    )
    parser.add_argument(
        "--no-turn",
        dest="turn",
        action="store_false",
        help="only the handshake: do not stream a turn on each connection first",
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds idle before measuring (default 3)"
    )
    parser.add_argument(
        "--api-key", default=None, help="start the server with this key and authenticate"
    )
    args = parser.parse_args(argv)
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    if args.settle < 0:
        parser.error("--settle must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start the children, open the idle websockets, report the memory per connection."""
    args = parse_args(argv)
    count = args.connections
    sim_args = ["--model", MODEL, "--ttft", "5", "--itl", "2", "--tokens", "5"]
    sim_args += ["--parallel", "16", "--preloaded"]
    server_args = ["--model", MODEL, "--max-concurrency", "16"]
    server_args += ["--max-connections", str(count + _WARMUP_CONNECTIONS + 100)]
    headers: list[str] = []
    if args.api_key:
        server_args += ["--api-key", args.api_key]
        headers.append(f"Authorization: Bearer {args.api_key}")
    try:
        limit = raise_fd_limit(count + _FD_MARGIN)
        with simulator_and_server(sim_args, server_args) as (_, server):
            host, port = server.url.split("://", 1)[1].rsplit(":", 1)
            print(f"server pid {server.pid} at {server.url}; open-files limit {limit}", flush=True)
            before, during, after = uvloop.run(_measure(server.pid, host, int(port), headers, args))
            server.check_alive()
    except (RuntimeError, StreamFailed) as exc:
        print(f"idle_ws: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    what = "each streamed one turn first" if args.turn else "handshake only"
    print(f"\n{count} idle websockets ({what}), server memory:")
    print(f"{'':>4} {'before':>10} {'idle open':>10} {'per connection':>15} {'after close':>12}")
    for name in ("rss", "uss", "pss"):
        old, new, end = getattr(before, name), getattr(during, name), getattr(after, name)
        growth = None if old is None or new is None else new - old
        print(
            f"{name.upper():>4} {_mib(old):>10} {_mib(new):>10} {_kib(growth, count):>15} "
            f"{_mib(end):>12}"
        )
    per_connection = (during.rss - before.rss) / 1024 / count
    verdict = "PASS" if per_connection < GOAL_KIB else "MISS"
    print(
        f"\nRSS per idle websocket: {per_connection:.1f} KiB (goal: under {GOAL_KIB} KiB) {verdict}"
    )
    return 0 if per_connection < GOAL_KIB else 1


if __name__ == "__main__":
    sys.exit(main())
