"""Runs: the closed-loop load against one target at one concurrency, and its figures."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ..processes import Child
from .cpu import CpuSampler
from .http import http_get_json
from .settings import Settings
from .stats import percentile
from .streams import StreamFailed, StreamRecord
from .targets import TARGETS, Endpoints, Target, TargetClient

__all__ = ["RunResult", "plan_runs", "run_all", "run_once"]


# Pause after a failed stream before the client tries again, so that a refusing
# target cannot turn the load generator into a busy loop.
_ERROR_BACKOFF = 0.1


# Quiet time between two runs.
_SETTLE = 0.3


@dataclass
class RunResult:
    """Figures of one (target, concurrency) run; latencies in ms."""

    target: str
    concurrency: int
    repeat: int
    window_s: float
    window_note: str
    streams: int
    errors: int
    error_reasons: dict[str, int]
    tokens: int
    tokens_per_s: float
    tokens_per_stream: float
    chars_per_stream: float
    ttft_p50: float
    ttft_p90: float
    ttft_p99: float
    itl_p50: float
    itl_p99: float
    cpu_us_per_token: dict[str, float]
    cpu_busy_pct: dict[str, float]
    cpu_source: dict[str, str]
    sim_stats: dict[str, Any] | None
    ttfts: list[float] = field(repr=False)
    itls: list[float] = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        """The figures without the raw samples."""
        return {k: v for k, v in self.__dict__.items() if k not in ("ttfts", "itls")}


def plan_runs(settings: Settings) -> list[tuple[int, str, int]]:
    """(level, target, repeat) in run order: each level's targets, then direct again."""
    plan = []
    for level in settings.levels:
        for name in settings.targets:
            plan.append((level, name, 1))
        others = [n for n in settings.targets if n != "direct"]
        if settings.drift_check and "direct" in settings.targets and others:
            plan.append((level, "direct", 2))
    return plan


async def _virtual_client(
    index: int,
    client: TargetClient,
    records: list[StreamRecord],
    delay: float,
    settings: Settings,
    window: tuple[float, float] | None,
) -> None:
    """Stream one turn after another until the plan says stop; never raises."""
    await asyncio.sleep(delay)
    seq = 0
    planned = None if settings.streams is None else settings.warmup_streams + settings.streams
    while True:
        if window is not None:
            if time.perf_counter() >= window[1]:
                return
        elif planned is not None and seq >= planned:
            return
        record = StreamRecord(index, seq)
        records.append(record)
        # The target sets it again just before writing the request; this value stands
        # for a stream that fails before that (to connect, say).
        record.t_send = time.perf_counter()
        try:
            async with asyncio.timeout(settings.timeout):
                await client.stream(record)
            if not record.tokens:
                record.error = "stream had no content token"
        except TimeoutError:
            record.error = f"timeout after {settings.timeout:g} s"
        except StreamFailed as exc:
            record.error = str(exc)
        except Exception as exc:  # a failure is counted, never allowed to stop the run
            record.error = f"{type(exc).__name__}: {exc}"
        record.t_end = time.perf_counter()
        if window is not None:
            record.measured = record.t_send >= window[0]
        else:
            record.measured = seq >= settings.warmup_streams
        seq += 1
        if record.error is not None:
            client.close()
            await asyncio.sleep(_ERROR_BACKOFF)


def _streams_window(records: list[StreamRecord]) -> tuple[float, float, str]:
    """The steady window of a ``--streams`` run: every client is in its measured streams."""
    firsts: dict[int, float] = {}
    lasts: dict[int, float] = {}
    for r in records:
        if r.measured:
            firsts[r.client] = min(firsts.get(r.client, math.inf), r.t_send)
            lasts[r.client] = max(lasts.get(r.client, -math.inf), r.t_end)
    if not firsts:
        return 0.0, 0.0, "no measured stream"
    start, end = max(firsts.values()), min(lasts.values())
    if end - start >= 0.5:
        return start, end, "steady window (all clients in their measured streams)"
    start, end = min(firsts.values()), max(lasts.values())
    return start, end, "whole measured phase, with ramp-up/down (steady window too short)"


async def run_once(
    target: Target,
    concurrency: int,
    repeat: int,
    settings: Settings,
    sampler: CpuSampler,
    sim: Endpoints,
) -> RunResult:
    """Drive ``concurrency`` virtual clients against one target and compute its figures."""
    sim_before = await http_get_json(sim.sim_host, sim.sim_port, "/_sim/stats")
    period = settings.stream_seconds
    records: list[StreamRecord] = []
    clients = [target.client() for _ in range(concurrency)]
    t0 = time.perf_counter()
    window: tuple[float, float] | None = None
    markers: asyncio.Task[None] | None = None
    sim_mid: Any = None
    if settings.streams is None:
        assert settings.duration is not None
        start = t0 + max(settings.warmup, period + 0.2)
        window = (start, start + settings.duration)

        async def mark() -> None:
            # CPU samples exactly at the window's edges; the simulator's gauges halfway.
            nonlocal sim_mid
            start, end = window
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            sampler.sample()
            await asyncio.sleep(max(0.0, (start + end) / 2 - time.perf_counter()))
            sim_mid = await http_get_json(sim.sim_host, sim.sim_port, "/_sim/stats", 1.0)
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
            sampler.sample()

        markers = asyncio.create_task(mark())
    # Client starts are spread over one stream's duration, so that the streams do not
    # march in lockstep (a real caller population arrives at random moments).
    tasks = [
        asyncio.create_task(
            _virtual_client(i, c, records, i * period / concurrency, settings, window)
        )
        for i, c in enumerate(clients)
    ]
    try:
        await asyncio.gather(*tasks)
        if markers is not None:
            await markers
    finally:
        for task in tasks:
            task.cancel()
        if markers is not None:
            markers.cancel()
        for client in clients:
            client.close()
    sampler.sample()
    sim_after = await http_get_json(sim.sim_host, sim.sim_port, "/_sim/stats")

    if window is not None:
        start, end = window
        note = "fixed window after the warm-up"
    else:
        start, end, note = _streams_window(records)
    span = max(end - start, 1e-9)
    measured = [r for r in records if r.measured]
    good = [r for r in measured if r.error is None]
    ttfts = sorted((r.tokens[0] - r.t_send) * 1000.0 for r in good)
    itls = sorted((b - a) * 1000.0 for r in good for a, b in pairwise(r.tokens))
    tokens = sum(bisect_right(r.tokens, end) - bisect_left(r.tokens, start) for r in records)
    reasons = Counter(r.error for r in measured if r.error is not None)
    warm_reasons = Counter(r.error for r in records if not r.measured and r.error is not None)
    for reason, count in warm_reasons.items():
        reasons[f"(warm-up) {reason}"] += count

    cpu_us: dict[str, float] = {}
    busy: dict[str, float] = {}
    source: dict[str, str] = {}
    for name in ("server", "sim", "bench"):
        if f"{name}.psutil" not in sampler.values:
            continue  # no server in a direct-only benchmark
        seconds, source[name] = sampler.spent(name, start, end)
        cpu_us[name] = seconds * 1e6 / tokens if tokens else math.nan
        busy[name] = 100.0 * seconds / span
    # Machine-wide busy time, and the part of it no watched process accounts for
    # (other programs on the machine), both as % of all cores.
    all_cores = span * (os.cpu_count() or 1)
    machine = sampler.machine_busy(start, end)
    watched = sum(busy.values()) * span / 100.0
    busy["machine"] = 100.0 * machine / all_cores
    busy["other"] = max(0.0, 100.0 * (machine - watched) / all_cores)

    return RunResult(
        target=target.name,
        concurrency=concurrency,
        repeat=repeat,
        window_s=span,
        window_note=note,
        streams=len(measured),
        errors=sum(1 for r in measured if r.error is not None),
        error_reasons=dict(reasons),
        tokens=tokens,
        tokens_per_s=tokens / span,
        tokens_per_stream=sum(len(r.tokens) for r in good) / len(good) if good else math.nan,
        chars_per_stream=sum(r.chars for r in good) / len(good) if good else math.nan,
        ttft_p50=percentile(ttfts, 50),
        ttft_p90=percentile(ttfts, 90),
        ttft_p99=percentile(ttfts, 99),
        itl_p50=percentile(itls, 50),
        itl_p99=percentile(itls, 99),
        cpu_us_per_token=cpu_us,
        cpu_busy_pct=busy,
        cpu_source=source,
        sim_stats=_stats_delta(sim_before, sim_mid, sim_after),
        ttfts=ttfts,
        itls=itls,
    )


def _stats_delta(before: Any, mid: Any, after: Any) -> dict[str, Any] | None:
    """The simulator's gauges halfway through the window and after the run, with the change
    of each numeric counter over the run."""
    if not isinstance(after, dict):
        return None
    result: dict[str, Any] = {"mid": mid, "after": after}
    if isinstance(before, dict):
        result["delta"] = {
            k: v - before[k]
            for k, v in after.items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and isinstance(before.get(k), int | float)
        }
    return result


async def run_all(
    settings: Settings, ends: Endpoints, pids: dict[str, int], children: list[Child]
) -> list[RunResult]:
    """Every run of the plan, in order; stops early if a child process dies."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    targets = {name: TARGETS[name][1](ends) for name in settings.targets}
    sampler = CpuSampler(pids)
    sampler.start()
    results: list[RunResult] = []
    try:
        for level, name, repeat in plan_runs(settings):
            if any(child.popen.poll() is not None for child in children):
                break
            label = name if repeat == 1 else f"{name}#{repeat}"
            print(f"  running {label} at {level} ...", file=sys.stderr, flush=True)
            result = await run_once(targets[name], level, repeat, settings, sampler, ends)
            results.append(result)
            await asyncio.sleep(_SETTLE)
    finally:
        await sampler.stop()
    return results
