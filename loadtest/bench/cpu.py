"""CPU accounting: on-CPU time of the watched processes and busy time of the machine.

Per process from ``/proc/<pid>/task/*/schedstat`` (nanosecond resolution), checked
against psutil's user+system (10 ms ticks); for the machine from psutil.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from bisect import bisect_left

import psutil  # type: ignore[import-untyped,unused-ignore]

__all__ = ["CpuSampler"]


# Interval of the background CPU sampler; figures are interpolated between samples.
_SAMPLE_INTERVAL = 0.25


def _schedstat_seconds(pid: int) -> float | None:
    """On-CPU time of all a process's live threads, in seconds (ns resolution), or None."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as stat:
                total += int(stat.read().split(maxsplit=1)[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


class CpuSampler:
    """Samples CPU time of the watched processes and of the whole machine.

    Samples are taken every 250 ms and on demand; :meth:`spent` interpolates linearly
    between them, so a window's CPU time does not depend on when its edges fall.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._pids = pids
        self.times: list[float] = []
        self.values: dict[str, list[float]] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Record one sample now."""
        now = time.perf_counter()
        row: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                cpu = proc.cpu_times()
                row[f"{name}.psutil"] = cpu.user + cpu.system
            except psutil.Error:
                row[f"{name}.psutil"] = math.nan
            precise = _schedstat_seconds(self._pids[name])
            row[f"{name}.sched"] = math.nan if precise is None else precise
        machine = psutil.cpu_times()
        row["machine.busy"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        self.times.append(now)
        for key, value in row.items():
            self.values.setdefault(key, []).append(value)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(_SAMPLE_INTERVAL)

    def start(self) -> None:
        """Start sampling in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _at(self, key: str, t: float) -> float:
        times, values = self.times, self.values[key]
        i = bisect_left(times, t)
        if i <= 0:
            return values[0]
        if i >= len(times):
            return values[-1]
        t0, t1 = times[i - 1], times[i]
        v0, v1 = values[i - 1], values[i]
        return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def spent(self, name: str, start: float, end: float) -> tuple[float, str]:
        """CPU seconds a process spent in ``[start, end]``, and the source used.

        The schedstat figure is used when available and consistent with psutil's
        (a thread that exits in the window drops out of the schedstat sum).
        """
        coarse = self._at(f"{name}.psutil", end) - self._at(f"{name}.psutil", start)
        fine = self._at(f"{name}.sched", end) - self._at(f"{name}.sched", start)
        if not math.isnan(fine) and fine >= 0 and abs(fine - coarse) <= 0.03 + 0.1 * coarse:
            return fine, "schedstat"
        return coarse, "psutil"

    def machine_busy(self, start: float, end: float) -> float:
        """Busy CPU seconds of the whole machine (all cores) in ``[start, end]``."""
        return self._at("machine.busy", end) - self._at("machine.busy", start)
