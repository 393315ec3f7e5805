"""``GET /metrics``: the engine's counters in Prometheus' text format.

The engine keeps plain numbers (:mod:`server.core.stats`); this collector turns them into
metric families only when Prometheus scrapes, so serving tokens never touches
prometheus-client.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ..core.engine import Engine
from ..core.stats import Histogram
from . import pauses

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


def _buckets(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    """Prometheus' cumulative buckets of a histogram, and its sum."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return buckets, histogram.sum


def _histogram(name: str, text: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets, sum_value = _buckets(histogram)
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=sum_value)


class _EngineCollector(Collector):
    def __init__(
        self,
        engine: Engine,
        webhooks: Callable[[], Mapping[str, int]] | None,
        retell: Callable[[], Mapping[str, int]] | None,
    ) -> None:
        self._engine = engine
        self._webhooks = webhooks
        self._retell = retell

    def collect(self) -> Iterator[Metric]:
        engine = self._engine
        stats = engine.stats
        turns = CounterMetricFamily(
            "voice_llm_turns", "Turns by how they ended.", labels=["outcome"]
        )
        for outcome, count in stats.outcomes.items():
            turns.add_metric([outcome], count)
        yield turns
        normalised = CounterMetricFamily(
            "voice_llm_requests_normalised",
            "Turns whose request was accepted after normalising it, by what was normalised.",
            labels=["kind"],
        )
        for kind, count in stats.normalised.items():
            normalised.add_metric([kind], count)
        yield normalised
        backends = engine.backends
        yield GaugeMetricFamily(
            "voice_llm_streams_in_flight",
            "Turns streaming from Ollama now.",
            value=sum(b.in_flight for b in backends),
        )
        yield GaugeMetricFamily(
            "voice_llm_streams_waiting",
            "Turns waiting for a free slot.",
            value=sum(b.waiting for b in backends),
        )
        yield GaugeMetricFamily(
            "voice_llm_model_warm", "1 when the model is loaded in Ollama.", value=int(engine.warm)
        )
        yield GaugeMetricFamily(
            "voice_llm_ollama_reachable", "1 when Ollama answers.", value=int(engine.reachable)
        )
        per_backend = (
            ("in_flight", "Turns streaming from this Ollama now.", lambda b: b.in_flight),
            ("waiting", "Turns waiting for a slot of this Ollama.", lambda b: b.waiting),
            ("slots", "Turns this Ollama may stream at once.", lambda b: b.slots),
            ("warm", "1 when the model is loaded in this Ollama.", lambda b: int(b.warm)),
            ("reachable", "1 when this Ollama answers.", lambda b: int(b.reachable)),
            (
                "stuck",
                "1 when this Ollama takes turns but starts none.",
                lambda b: int(bool(b.stuck)),
            ),
            ("model_missing", "1 when this Ollama has no such model.", lambda b: int(b.missing)),
        )
        for name, text, value in per_backend:
            family = GaugeMetricFamily(f"voice_llm_backend_{name}", text, labels=["backend"])
            for backend in backends:
                family.add_metric([backend.url], value(backend))
            yield family
        loads = CounterMetricFamily(
            "voice_llm_backend_loads", "Model loads this server made.", labels=["backend"]
        )
        for backend in backends:
            loads.add_metric([backend.url], backend.loads)
        yield loads
        for name, text, count in (
            ("holds", "Turns that spoke the hold message first.", stats.holds),
            (
                "failovers",
                "Turns retried on another Ollama before their first token.",
                stats.failovers,
            ),
            ("hedges", "Turns also started on a second Ollama.", stats.hedges),
            ("hedge_wins", "Hedged turns the second Ollama answered first.", stats.hedge_wins),
            (
                "routing_moves",
                "Turns of a known call moved off their full Ollama.",
                engine.router.moved,
            ),
            ("thinking_lines", "Thinking lines Ollama sent, never spoken.", stats.thinking_lines),
            (
                "truncated_tool_calls",
                "Answers that ended inside a tool call written as text (dropped).",
                stats.truncated_calls,
            ),
        ):
            yield CounterMetricFamily(f"voice_llm_{name}", text, value=count)
        yield GaugeMetricFamily(
            "voice_llm_pinned_calls",
            "Calls whose Ollama is remembered.",
            value=engine.router.pinned_calls,
        )
        yield _histogram(
            "voice_llm_ttft_seconds", "Time from a turn's arrival to its first token.", stats.ttft
        )
        yield _histogram(
            "voice_llm_inter_token_seconds", "Gap between consecutive tokens.", stats.itl
        )
        gc_pauses = HistogramMetricFamily(
            "voice_llm_gc_pause_seconds",
            "Garbage-collector pauses (the event loop stops; every stream waits), by generation.",
            labels=["generation"],
        )
        for generation, histogram in enumerate(pauses.PAUSES):
            gc_pauses.add_metric([str(generation)], *_buckets(histogram))
        yield gc_pauses
        yield GaugeMetricFamily(
            "voice_llm_gc_frozen_objects",
            "Objects exempted from garbage collection at startup.",
            value=gc.get_freeze_count(),
        )
        if self._webhooks is not None:
            webhooks = CounterMetricFamily(
                "voice_llm_webhooks", "VAPI webhook messages by type.", labels=["type"]
            )
            for kind, count in self._webhooks().items():
                webhooks.add_metric([kind], count)
            yield webhooks
        if self._retell is not None:
            frames = CounterMetricFamily(
                "voice_llm_retell_frames",
                "Frames from Retell by interaction_type (unknown types, unreadable frames).",
                labels=["interaction_type"],
            )
            for kind, count in self._retell().items():
                frames.add_metric([kind], count)
            yield frames


class Metrics:
    """The registry behind ``/metrics`` for one engine (and its webhook and Retell counts)."""

    def __init__(
        self,
        engine: Engine,
        webhooks: Callable[[], Mapping[str, int]] | None = None,
        retell: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine, webhooks, retell))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
