"""Which HTTP client should carry the token stream from Ollama? Measured, not guessed.

``python -m loadtest.clients [--streams 50] [--rounds 3]`` starts the simulator and
streams the same chats through three clients in this process, one after another:

- ``upstream``: the server's own client (:mod:`server.core.upstream`), lines parsed with orjson;
- ``aiohttp``: one ``aiohttp.ClientSession``, ``async for line in response.content``;
- ``ollama``: ``ollama.AsyncClient.chat(stream=True)`` (httpx underneath).

Connection-pool caps are lifted on both libraries so that none of them queues.

For each it prints the client process's CPU time per token (user + system, from
``/proc``) and the time to first token, so the cost of the streaming path alone is
compared under one load on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import ollama
import orjson
import uvloop

from server.core.upstream import ConnectionPool

from .processes import start_simulator

__all__ = ["main"]

MODEL = "llama3.1:8b"
Client = Callable[[int], Awaitable[tuple[int, float]]]


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _body(n: int) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"chat {n}"}],
        "stream": True,
        "think": False,
        "keep_alive": -1,
    }


async def _run(name: str, client: Client, streams: int, rounds: int) -> None:
    await client(-1)  # warm up: connections, imports, first-use caches
    tokens = 0
    ttfts: list[float] = []
    cpu = _cpu_seconds()
    for round_ in range(rounds):
        results = await asyncio.gather(*(client(round_ * streams + i) for i in range(streams)))
        tokens += sum(count for count, _ in results)
        ttfts.extend(ttft for _, ttft in results)
    cpu = _cpu_seconds() - cpu
    ttfts.sort()
    print(
        f"{name:9s} {tokens:6d} tokens  {cpu / tokens * 1e6:6.1f} us CPU/token  "
        f"TTFT p50 {ttfts[len(ttfts) // 2] * 1000:6.1f} ms  "
        f"p99 {ttfts[int(len(ttfts) * 0.99) - 1] * 1000:6.1f} ms"
    )


async def _compare(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="voice-llm-clients-") as folder:
        simulator = start_simulator(
            ["--model", MODEL, "--preloaded", "--parallel", str(args.streams),
             "--ttft", "50", "--itl", "20", "--tokens", "40"],
            Path(folder),
        )  # fmt: skip
        try:
            host, port = simulator.url.removeprefix("http://").rsplit(":", 1)
            pool = ConnectionPool(host, int(port), 5.0)

            async def upstream(n: int) -> tuple[int, float]:
                started = time.perf_counter()
                first = 0.0
                count = 0
                conn = await pool.request("POST", "/api/chat", orjson.dumps(_body(n)), 30, 30)
                while (line := await conn.readline()) is not None:
                    if orjson.loads(line)["message"]["content"]:
                        count += 1
                        first = first or time.perf_counter() - started
                pool.release(conn)
                return count, first

            # Both libraries cap their pools at 100 connections by default: lifted, so
            # that only the streaming path is compared.
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

            async def with_aiohttp(n: int) -> tuple[int, float]:
                started = time.perf_counter()
                first = 0.0
                count = 0
                async with session.post(f"{simulator.url}/api/chat", json=_body(n)) as response:
                    async for line in response.content:
                        if orjson.loads(line)["message"]["content"]:
                            count += 1
                            first = first or time.perf_counter() - started
                return count, first

            unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            control = ollama.AsyncClient(host=simulator.url, limits=unlimited)

            async def with_ollama(n: int) -> tuple[int, float]:
                started = time.perf_counter()
                first = 0.0
                count = 0
                stream = await control.chat(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"chat {n}"}],
                    stream=True,
                    think=False,
                    keep_alive=-1,
                )
                async for chunk in stream:
                    if chunk.message.content:
                        count += 1
                        first = first or time.perf_counter() - started
                return count, first

            print(f"{args.streams} concurrent streams of 40 tokens, {args.rounds} rounds each")
            for name, client in (
                ("upstream", upstream),
                ("aiohttp", with_aiohttp),
                ("ollama", with_ollama),
            ):
                await _run(name, client, args.streams, args.rounds)
            await session.close()
            pool.close()
        finally:
            simulator.stop()


def main(argv: list[str] | None = None) -> int:
    """Compare the three clients and print their figures."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.clients", description=__doc__)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(_compare(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
