"""The scaling plot: TTFT against concurrency per target, as a PNG."""

from __future__ import annotations

import math
from pathlib import Path

from .compare import LEVEL_TARGETS, pooled_figures
from .report import describe
from .run import RunResult
from .settings import Settings

__all__ = ["plot_scaling"]


_DELTA_TICKS = (-20, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def _by_target_level(results: list[RunResult]) -> dict[str, dict[int, list[RunResult]]]:
    grouped: dict[str, dict[int, list[RunResult]]] = {}
    for r in results:
        grouped.setdefault(r.target, {}).setdefault(r.concurrency, []).append(r)
    return grouped


def plot_scaling(settings: Settings, results: list[RunResult], path: Path) -> None:
    """A PNG: TTFT p50 and p99 against concurrency for each target (log-scale x), and
    beside it each server target's difference from direct."""
    # Imported here: only this report needs matplotlib, and it takes a while to load.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    grouped = _by_target_level(results)
    pooled = {
        name: {level: pooled_figures(runs) for level, runs in sorted(levels.items())}
        for name, levels in grouped.items()
    }
    fig, (absolute, delta) = plt.subplots(1, 2, figsize=(13, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    values: list[float] = []
    deltas: list[float] = []
    base = pooled.get("direct", {})
    for i, name in enumerate(settings.targets):
        figures = pooled.get(name)
        if not figures:
            continue
        color = colors[i % len(colors)]
        levels = list(figures)
        p50 = [figures[level]["ttft_p50"] for level in levels]
        p99 = [figures[level]["ttft_p99"] for level in levels]
        values += [v for v in p50 + p99 if not math.isnan(v)]
        absolute.plot(levels, p50, "o-", color=color, label=f"{name} p50")
        absolute.plot(levels, p99, "s--", color=color, label=f"{name} p99")
        shared = [level for level in levels if level in base]
        if name == "direct" or not shared:
            continue
        d50 = [figures[level]["ttft_p50"] - base[level]["ttft_p50"] for level in shared]
        d99 = [figures[level]["ttft_p99"] - base[level]["ttft_p99"] for level in shared]
        deltas += [v for v in d50 + d99 if not math.isnan(v)]
        delta.plot(shared, d50, "o-", color=color, label=f"{name} p50 - direct p50")
        delta.plot(shared, d99, "s--", color=color, label=f"{name} p99 - direct p99")
    labels = {"v": "target, p50", "^": "target, p99"}
    for level, goal in LEVEL_TARGETS.items():
        for limit, marker in ((goal.ttft_p50_ms, "v"), (goal.ttft_p99_ms, "^")):
            if limit is not None and level in settings.levels and deltas:
                label = labels.pop(marker, None)
                delta.plot([level], [limit], marker, color="black", markersize=8, label=label)
    delta.axhline(0.0, color="grey", linewidth=0.8)
    if values and max(values) > 20 * min(values):
        absolute.set_yscale("log")
    if deltas and max(abs(v) for v in deltas) > 25:
        # Linear up to 2 ms, where the targets are, logarithmic above.
        delta.set_yscale("symlog", linthresh=2.0, linscale=1.5)
        low = min(-0.5, 1.3 * min(deltas))
        high = 1.5 * max(deltas)
        delta.set_ylim(low, high)
        delta.set_yticks([t for t in _DELTA_TICKS if low <= t <= high])
        delta.yaxis.set_major_formatter(ScalarFormatter())
    for ax in (absolute, delta):
        ax.set_xscale("log")
        ax.set_xticks(list(settings.levels))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.minorticks_off()
        ax.set_xlabel("concurrent streams")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    absolute.set_ylabel("time to first token (ms)")
    absolute.set_title("TTFT against concurrency")
    delta.set_ylabel("added by the server (ms)")
    delta.set_title("server minus direct")
    others = [r.cpu_busy_pct.get("other", 0.0) for r in results]
    load = (
        f"; other programs busy: {min(others):.0f} to {max(others):.0f}% of all cores "
        f"(mean {sum(others) / len(others):.0f}%)"
        if others
        else ""
    )
    fig.suptitle(describe(settings)[0] + load, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
