"""Server against direct: each server run checked against its level's pooled direct runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .run import RunResult
from .stats import percentile

__all__ = ["LEVEL_TARGETS", "Check", "LevelTargets", "compare", "drift", "pooled_figures"]


@dataclass(frozen=True)
class Check:
    """One server-vs-direct figure, with its target if it has one."""

    label: str
    value: float
    unit: str
    limit: float | None
    passed: bool | None

    def as_json(self) -> dict[str, Any]:
        """The check as plain data."""
        return self.__dict__.copy()


def pooled_figures(runs: list[RunResult]) -> dict[str, float]:
    """TTFT p50/p99 and ITL p99 of the runs' samples taken together; their mean tokens/s."""
    ttfts = sorted(v for r in runs for v in r.ttfts)
    itls = sorted(v for r in runs for v in r.itls)
    return {
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        "itl_p99": percentile(itls, 99),
        "tokens_per_s": sum(r.tokens_per_s for r in runs) / len(runs),
    }


@dataclass(frozen=True)
class LevelTargets:
    """The most the server may add at one concurrency level (None: not checked)."""

    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    itl_p99_ms: float | None = None
    cpu_us_per_token: float | None = None


# At 1 stream the TTFT p99 of a run is its slowest stream of about ten, and every token
# is a wake-up from idle (the simulator spends as much CPU per token there as the
# server): those figures are shown for information. CPU per token is checked under load.
LEVEL_TARGETS: dict[int, LevelTargets] = {
    1: LevelTargets(ttft_p50_ms=1.0),
    50: LevelTargets(ttft_p50_ms=2.0, ttft_p99_ms=10.0, itl_p99_ms=5.0, cpu_us_per_token=25.0),
}


def _check(label: str, value: float, unit: str, limit: float | None) -> Check:
    passed = None if limit is None else (not math.isnan(value) and value <= limit)
    return Check(label, value, unit, limit, passed)


def compare(direct: list[RunResult], other: RunResult) -> list[Check]:
    """The checks of one server run against its pooled direct baseline."""
    base = pooled_figures(direct)
    goal = LEVEL_TARGETS.get(other.concurrency)
    limits = goal or LevelTargets()
    ratio = other.tokens_per_s / base["tokens_per_s"] if base["tokens_per_s"] else math.nan
    return [
        _check("TTFT p50 delta", other.ttft_p50 - base["ttft_p50"], "ms", limits.ttft_p50_ms),
        _check("TTFT p99 delta", other.ttft_p99 - base["ttft_p99"], "ms", limits.ttft_p99_ms),
        _check("ITL p99 delta", other.itl_p99 - base["itl_p99"], "ms", limits.itl_p99_ms),
        _check("throughput ratio", ratio, "x", None),
        _check(
            "server CPU per token",
            other.cpu_us_per_token.get("server", math.nan),
            "us",
            limits.cpu_us_per_token,
        ),
        _check("errors", float(other.errors), "", 0.0 if goal is not None else None),
    ]


def drift(direct: list[RunResult]) -> dict[str, float] | None:
    """Second direct run minus the first: how much the machine moved over the level."""
    if len(direct) < 2:
        return None
    a, b = direct[0], direct[-1]
    return {
        "ttft_p50": b.ttft_p50 - a.ttft_p50,
        "ttft_p99": b.ttft_p99 - a.ttft_p99,
        "itl_p99": b.itl_p99 - a.itl_p99,
        "throughput_ratio": b.tokens_per_s / a.tokens_per_s if a.tokens_per_s else math.nan,
    }
