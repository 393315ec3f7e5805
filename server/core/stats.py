"""What the engine counts as it serves: outcomes, queue depth, latency histograms.

Plain data, updated on the hot path at the cost of a few attribute writes; the
metrics endpoint reads it when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["OUTCOMES", "Histogram", "Stats"]

# How a turn can end.
OUTCOMES = ("ok", "cancelled", "rejected", "upstream_error", "timeout", "fallback")

_TTFT_BOUNDS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 20.0)
_ITL_BOUNDS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 5.0)


class Histogram:
    """Bucket counts for a Prometheus histogram; ``observe`` is a bisect and two adds."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last bucket is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value (seconds) into the first bucket whose bound is at least it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


@dataclass(slots=True)
class Stats:
    """Running totals of one engine."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    normalised: dict[str, int] = field(default_factory=dict)  # by kind; the kinds are bounded
    holds: int = 0  # turns that spoke the hold message while their first token was slow
    failovers: int = 0  # turns retried on another backend before their first token
    hedges: int = 0  # turns started on a second backend too
    hedge_wins: int = 0  # hedged turns the second backend answered first
    thinking_lines: int = 0  # thinking lines Ollama sent, which were not spoken
    truncated_calls: int = 0  # answers that ended inside a tool call written as text
    ttft: Histogram = field(default_factory=lambda: Histogram(_TTFT_BOUNDS))
    itl: Histogram = field(default_factory=lambda: Histogram(_ITL_BOUNDS))
