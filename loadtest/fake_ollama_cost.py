"""Measure the Ollama simulator's CPU time per streamed token.

Starts ``loadtest.fake_ollama`` as a subprocess, runs rounds of concurrent
streaming chats against it over raw asyncio sockets, and reads the
simulator's user + system CPU time from ``/proc/PID/stat`` around the
measured rounds (a first, unmeasured round warms it up)::

    python -m loadtest.fake_ollama_cost --streams 200 --tokens 40 --itl 20

The figure includes everything the simulator does for those requests:
accepting connections, parsing requests, timers and writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

_REPO: Path = Path(__file__).resolve().parent.parent
_ANNOUNCEMENT = "fake-ollama listening on http://127.0.0.1:"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15
    return ticks / os.sysconf("SC_CLK_TCK")


async def stream_chat(port: int, request: bytes) -> int:
    """Send one streaming chat and read it to the end; returns the token lines received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    received = await reader.read()
    writer.close()
    await writer.wait_closed()
    return received.count(b'"done":false')


async def run_round(port: int, streams: int) -> int:
    """``streams`` concurrent chats; returns the tokens received in all."""
    body = orjson.dumps(
        {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "Hello there"}]}
    )
    request = (
        b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(body), body)
    )
    counts = await asyncio.gather(*(stream_chat(port, request) for _ in range(streams)))
    return sum(counts)


async def measure(pid: int, port: int, streams: int, rounds: int) -> tuple[int, float, float]:
    """Tokens, CPU seconds of the simulator and wall seconds over the measured rounds."""
    await run_round(port, streams)
    cpu_before = cpu_seconds(pid)
    wall_before = time.perf_counter()
    tokens = 0
    for _ in range(rounds):
        tokens += await run_round(port, streams)
    return tokens, cpu_seconds(pid) - cpu_before, time.perf_counter() - wall_before


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m loadtest.fake_ollama_cost``."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.fake_ollama_cost")
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams per round")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per stream")
    parser.add_argument("--itl", type=float, default=20.0, help="ms between tokens")
    parser.add_argument("--ttft", type=float, default=50.0, help="ms to the first token")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds")
    args = parser.parse_args(argv)
    command = [
        sys.executable,
        "-m",
        "loadtest.fake_ollama",
        "--port",
        "0",
        "--preloaded",
        f"--parallel={args.streams}",
        f"--tokens={args.tokens}",
        f"--itl={args.itl}",
        f"--ttft={args.ttft}",
    ]
    process = subprocess.Popen(command, cwd=_REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith(_ANNOUNCEMENT):
            raise SystemExit(f"unexpected first line from the simulator: {line!r}")
        port = int(line.removeprefix(_ANNOUNCEMENT))
        tokens, cpu, wall = asyncio.run(measure(process.pid, port, args.streams, args.rounds))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    expected = args.streams * args.tokens * args.rounds
    print(
        f"{args.rounds} rounds of {args.streams} streams x {args.tokens} tokens "
        f"at {args.itl:g} ms: {tokens}/{expected} tokens in {wall:.2f} s; "
        f"simulator CPU {cpu:.2f} s ({100 * cpu / wall:.0f}% of a core), "
        f"{1e6 * cpu / max(tokens, 1):.1f} us per token"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
