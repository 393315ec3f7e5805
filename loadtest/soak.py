"""A bounded soak: thousands of turns with cancellations and Ollama faults mixed in.

``python -m loadtest.soak [--turns 4000] [--concurrency 40]`` starts the Ollama
simulator and the server, then plays turns over SSE and websockets. Some callers
hang up mid-answer, some barge in, and the simulator fails some streams (error
lines, dropped connections, stalls). It prints the server's resident memory as the
turns go by; at the end, its garbage-collector pauses during the soak, and whether
anything leaked: streams still in flight or waiting, and connections from the server
still open at the simulator beyond the server's idle pool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field

import httpx
import psutil
import uvloop
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from .processes import simulator_and_server

__all__ = ["main"]


@dataclass
class Tally:
    """What the soak saw."""

    turns: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        """Count one turn."""
        self.turns += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _body(rng: random.Random, stream: bool = True) -> bytes:
    tokens = rng.randint(5, 60)
    return json.dumps(
        {
            "messages": [{"role": "user", "content": f"Hello [[tokens:{tokens}]]"}],
            "stream": stream,
            "call": {"id": f"soak-{rng.randrange(10**6)}"},
        }
    ).encode()


async def _sse_turn(port: int, rng: random.Random, tally: Tally) -> None:
    body = _body(rng)
    hang_up_after = rng.randint(1, 10) if rng.random() < 0.2 else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status = (await reader.readline()).split(b" ")[1]
        if status != b"200":
            tally.add(f"sse_{status.decode()}")
            return
        events = 0
        async with asyncio.timeout(30):
            while line := await reader.readline():
                if line.startswith(b"data: "):
                    events += 1
                    if line.startswith(b"data: [DONE]"):
                        tally.add("sse_done")
                        return
                    if hang_up_after is not None and events >= hang_up_after:
                        tally.add("sse_hung_up")
                        return
        tally.add("sse_cut")
    finally:
        writer.close()


async def _ws_call(port: int, rng: random.Random, tally: Tally, turns: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/ws", compression=None) as ws:
        for n in range(turns):
            turn_id = f"t{n}"
            messages = [{"role": "user", "content": f"Hi [[tokens:{rng.randint(5, 60)}]]"}]
            await ws.send(json.dumps({"type": "chat", "id": turn_id, "messages": messages}))
            barge = rng.random() < 0.15
            async with asyncio.timeout(30):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "delta" and barge:
                        barge = False
                        await ws.send(json.dumps({"type": "cancel", "id": turn_id}))
                    elif frame["type"] in ("done", "error") and frame["id"] == turn_id:
                        reason = frame.get("finish_reason") or frame.get("code")
                        tally.add(f"ws_{frame['type']}_{reason}")
                        break
        if rng.random() < 0.3:
            # Hang up with a turn in flight.
            await ws.send(json.dumps({"type": "chat", "id": "last", "messages": messages}))
            await ws.recv()
            tally.add("ws_hung_up")


# Fast, 3 % of requests failing; an error leaves the model loaded (no crash), so
# each fault hits one stream.
_SIMULATOR_ARGS = [
    "--ttft", "20", "--itl", "5", "--parallel", "256", "--fail-rate", "0.03", "--preloaded",
    "--no-crash-on-error",
]  # fmt: skip


async def _soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    tally = Tally()
    with simulator_and_server(
        _SIMULATOR_ARGS,
        ["--max-concurrency", "256", "--token-timeout", "1"],
    ) as (simulator, server):
        sim_url, server_url = simulator.url, server.url
        port = int(server_url.rsplit(":", 1)[1])
        process = psutil.Process(server.pid)
        http = httpx.AsyncClient(timeout=10)
        modes = ["error", "drop", "stall"]
        started = time.monotonic()
        rss_start = process.memory_info().rss
        pauses_start = _gc_pauses((await http.get(f"{server_url}/metrics")).text)
        print(f"server RSS at start: {rss_start / 2**20:.1f} MiB")
        semaphore = asyncio.Semaphore(args.concurrency)
        next_report = args.turns // 8

        async def one() -> None:
            async with semaphore:
                try:
                    if rng.random() < 0.6:
                        await _sse_turn(port, rng, tally)
                    else:
                        await _ws_call(port, rng, tally, rng.randint(1, 4))
                except (OSError, TimeoutError, ValueError) as exc:
                    tally.add(f"client_error_{type(exc).__name__}")

        tasks: set[asyncio.Task[None]] = set()
        launched = 0
        while tally.turns < args.turns:
            while len(tasks) < args.concurrency and launched < args.turns:
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                launched += 1
            await asyncio.sleep(0.01)
            if tally.turns >= next_report:
                mode = modes[(next_report // max(1, args.turns // 8)) % len(modes)]
                await http.post(f"{sim_url}/_sim/config", json={"fail_mode": mode})
                rss = process.memory_info().rss
                print(
                    f"{tally.turns:6d} turns  {time.monotonic() - started:6.1f} s  "
                    f"RSS {rss / 2**20:6.1f} MiB  faults now: {mode}"
                )
                next_report += args.turns // 8
            if not tasks and launched >= args.turns:
                break
        await asyncio.gather(*tasks)
        await asyncio.sleep(1.5)  # let stalled streams hit the token timeout
        rss_end = process.memory_info().rss
        metrics = (await http.get(f"{server_url}/metrics")).text
        sim = (await http.get(f"{sim_url}/_sim/stats")).json()
        await http.aclose()

    in_flight = _sample(metrics, "voice_llm_streams_in_flight")
    waiting = _sample(metrics, "voice_llm_streams_waiting")
    print(f"\n{tally.turns} turns in {time.monotonic() - started:.1f} s")
    for outcome, count in sorted(tally.outcomes.items()):
        print(f"  {outcome:28s} {count}")
    print(
        f"server RSS: {rss_start / 2**20:.1f} MiB at start, {rss_end / 2**20:.1f} MiB at end "
        f"({(rss_end - rss_start) / 2**20:+.1f} MiB)"
    )
    print(f"server streams in flight {in_flight:.0f}, waiting {waiting:.0f}")
    for generation, end in sorted(_gc_pauses(metrics).items()):
        start = pauses_start[generation]
        collections = end.count - start.count
        line = (
            f"server GC generation {generation}: {collections:.0f} collections, "
            f"{(end.sum - start.sum) * 1000:.1f} ms paused in all"
        )
        if collections:
            # The smallest bucket bound that holds every pause of the soak.
            longest = min(b for b, n in end.buckets.items() if n - start.buckets[b] >= collections)
            line += f", the longest at most {longest * 1000:g} ms"
        print(line)
    print(
        f"simulator: {sim['active']} generations active, {sim['connections_open']} connections "
        "open (the server keeps up to 64 idle for reuse)"
    )
    leaked = in_flight or waiting or sim["active"] or sim["connections_open"] > 64
    print("LEAK" if leaked else "no leaks")
    return 1 if leaked else 0


@dataclass
class _Pauses:
    """One generation's ``voice_llm_gc_pause_seconds``: count, sum, cumulative buckets."""

    count: float = 0.0
    sum: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)


def _gc_pauses(text: str) -> dict[str, _Pauses]:
    found: dict[str, _Pauses] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "voice_llm_gc_pause_seconds":
            continue
        for sample in family.samples:
            entry = found.setdefault(sample.labels["generation"], _Pauses())
            if sample.name.endswith("_count"):
                entry.count = sample.value
            elif sample.name.endswith("_sum"):
                entry.sum = sample.value
            elif sample.name.endswith("_bucket"):
                entry.buckets[float(sample.labels["le"])] = sample.value
    return found


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise ValueError(f"{name} missing from /metrics")


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures; exit 1 if anything leaked."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__)
    parser.add_argument("--turns", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    return uvloop.run(_soak(args))


if __name__ == "__main__":
    sys.exit(main())
