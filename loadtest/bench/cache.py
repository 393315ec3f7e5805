"""The prompt cache at work on one Ollama: a multi-turn call's TTFT, turn by turn.

``python -m loadtest.bench.cache`` starts one simulator with one slot (Ollama's default
``OLLAMA_NUM_PARALLEL``) and llama-server's prompt cache, timed as
:data:`~.calls.H100_8B`, and the server in front of it with the call's system prompt
configured (so the slot is primed with it after the model loads). Then, each time with a
fresh simulator and server, a call of ``--turns`` turns goes through the server:

- ``warm``: alone, its slot holding its own last turn every time;
- ``same assistant``: its turns alternate with another call's, with the same system
  prompt, so the slot holds the other call's conversation when each turn arrives;
- ``other assistant``: its turns alternate with a call to another assistant (a different
  system prompt of the same length).

For every turn it prints the TTFT the caller saw, beside what the simulator's request
log says the turn cost: prompt tokens, cached in the slot, restored from llama-server's
RAM prompt cache, evaluated, how the slot was chosen, and the TTFT the simulated GPU
gives for that (fixed part + evaluated and restored tokens). Exit status 0, 2 when a
child or a turn fails, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import uvloop

from ..processes import Child
from .calls import (
    H100_8B,
    CallScript,
    Conversation,
    Gpu,
    TurnResult,
    api_key,
    fetch_log,
    make_scripts,
    run_scenario,
    served_turns,
    start_fleet,
    system_prompt,
    wait_warm,
)
from .settings import DEFAULT_MODEL

__all__ = ["CASES", "main"]

# Case name -> the other call's assistant (None: the call is alone).
CASES: dict[str, int | None] = {"warm": None, "same assistant": 0, "other assistant": 1}


@dataclass(frozen=True)
class Settings:
    """The command line."""

    turns: int
    system_tokens: int
    tokens: int
    pause: float
    gpu: Gpu
    timeout: float
    model: str
    sim_args: tuple[str, ...]
    server_args: tuple[str, ...]


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Read the command line."""
    gpu = H100_8B
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench.cache",
        description="A multi-turn call through the server to one simulated Ollama with the "
        "prompt cache: TTFT per turn with its slot warm, and with the slot taken by "
        "another call between its turns.",
    )
    add = parser.add_argument
    add("--turns", type=int, default=6, help="turns of the call (default 6)")
    add("--system-tokens", type=int, default=1500, help="system prompt tokens (1500)")
    add("--tokens", type=int, default=40, help="tokens per reply (default 40)")
    add("--pause", type=float, default=0.5, help="seconds between turns (0.5)")
    add("--ttft", type=float, default=gpu.first_token_ms, help="fixed ms to first token")
    add("--prefill", type=float, default=gpu.prefill_ms_per_token, help="ms per prompt token")
    add("--restore", type=float, default=gpu.restore_ms_per_token, help="ms per restored token")
    add("--itl", type=float, default=gpu.itl_ms, help="ms between tokens")
    add("--timeout", type=float, default=30.0, help="seconds a turn may take (30)")
    add("--model", default=DEFAULT_MODEL, help="model name")
    add("--sim-arg", action="append", default=[], metavar="ARG", help="simulator argument")
    add("--server-arg", action="append", default=[], metavar="ARG", help="server argument")
    args = parser.parse_args(argv)
    if args.turns < 1 or args.tokens < 1:
        parser.error("--turns and --tokens must be at least 1")
    return Settings(
        turns=args.turns,
        system_tokens=args.system_tokens,
        tokens=args.tokens,
        pause=args.pause,
        gpu=Gpu(args.ttft, args.prefill, args.restore, args.itl),
        timeout=args.timeout,
        model=args.model,
        sim_args=tuple(args.sim_arg),
        server_args=tuple(args.server_arg),
    )


@dataclass(frozen=True)
class Row:
    """One turn of a case, as the caller saw it and as the simulator logged it."""

    name: str  # which call: "A", or "B" for the one in between
    result: TurnResult
    prompt: int | None
    cached: int | None
    restored: int | None
    evaluated: int | None
    selection: str | None


async def _run_case(
    settings: Settings, name: str, calls: list[CallScript], log_dir: Path
) -> list[Row]:
    """Run the calls' turns alternately (A1, B1, A2, B2...) on a fresh simulator and server."""
    sim_args = [
        "--model", settings.model, "--tokens", str(settings.tokens),
        "--parallel", "1", "--preloaded", *settings.gpu.simulator_args(), *settings.sim_args,
    ]  # fmt: skip
    server_args = [
        "--model", settings.model, "--max-concurrency", "1",
        "--system-prompt", calls[0].system, *settings.server_args,
    ]  # fmt: skip
    folder = log_dir / name.replace(" ", "-")
    folder.mkdir()
    sims, server = start_fleet(1, sim_args, server_args, folder)
    children: list[Child] = [*sims, server]
    conversations: list[Conversation] = []
    try:
        await wait_warm(server, 1)
        host, port = server.url.split("://", 1)[1].rsplit(":", 1)
        key = api_key(settings.server_args)
        conversations = [Conversation(c, host, int(port), key, True) for c in calls]
        started = time.perf_counter()
        results: list[tuple[int, TurnResult]] = []
        for _ in range(settings.turns):
            for index, call in enumerate(conversations):
                result = await call.turn(started, settings.timeout)
                if result.error is not None:
                    raise RuntimeError(f"{name}: turn {result.turn} failed: {result.error}")
                results.append((index, result))
                await asyncio.sleep(settings.pause)
        log = await fetch_log(sims[0])
        for child in children:
            child.check_alive()
    finally:
        for call in conversations:
            call.close()
        for child in reversed(children):
            child.stop()
    served = served_turns([log], calls)
    rows = []
    for index, result in results:
        attempts = served.get((result.call, result.turn))
        last = attempts[-1] if attempts else None
        rows.append(
            Row(
                name="AB"[index],
                result=result,
                prompt=None if last is None else last.prompt,
                cached=None if last is None else last.cached,
                restored=None if last is None else last.restored,
                evaluated=None if last is None else last.evaluated,
                selection=None if last is None else last.selection,
            )
        )
    return rows


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def report(settings: Settings, cases: dict[str, list[Row]], load: tuple[float, float]) -> None:
    """Print one table per case."""
    gpu = settings.gpu
    print(
        f"\nOne simulated Ollama, 1 slot; a call of {settings.turns} turns, "
        f"{settings.system_tokens}-token system prompt (primed), {settings.tokens}-token "
        f"replies; first token {gpu.first_token_ms:g} ms + {gpu.prefill_ms_per_token:g} ms "
        f"per evaluated prompt token + {gpu.restore_ms_per_token:g} ms per restored token; "
        f"load average {load[0]:.2f} before, {load[1]:.2f} after"
    )
    for name, rows in cases.items():
        title = {
            "warm": "warm: the call alone",
            "same assistant": "same assistant: call B's turn between each of A's",
            "other assistant": "other assistant: call B (another system prompt) between A's",
        }[name]
        print(f"\n{title}\n")
        print(
            "| call | turn | TTFT ms | simulated ms | prompt | cached | restored | evaluated "
            "| slot chosen by |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for row in rows:
            ttft = row.result.ttft_ms
            simulated = (
                "-"
                if row.evaluated is None or row.restored is None
                else f"{gpu.first_token(row.evaluated, row.restored):.1f}"
            )
            print(
                f"| {row.name} | {row.result.turn} "
                f"| {'-' if ttft is None or math.isnan(ttft) else f'{ttft:.1f}'} "
                f"| {simulated} | {_cell(row.prompt)} | {_cell(row.cached)} "
                f"| {_cell(row.restored)} | {_cell(row.evaluated)} | {row.selection or '-'} |"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the three cases, print their tables, stop every child."""
    settings = parse_args(argv)
    systems = [system_prompt(settings.system_tokens, assistant) for assistant in (0, 1)]
    scripts = make_scripts(3, settings.turns, systems[0], 0.0, 0.0, 0.0, seed=7)
    caller, same, other = scripts[0], scripts[1], replace(scripts[2], system=systems[1])

    def work(log_dir: Path, load_before: float) -> int:
        cases = {}
        for name, assistant in CASES.items():
            print(f"running {name}", file=sys.stderr)
            calls = [caller] if assistant is None else [caller, same if assistant == 0 else other]
            cases[name] = uvloop.run(_run_case(settings, name, calls, log_dir))
        report(settings, cases, (load_before, os.getloadavg()[0]))
        return 0

    return run_scenario("cache", work)


if __name__ == "__main__":
    sys.exit(main())
