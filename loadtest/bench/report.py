"""The report: the printed tables, checks and observations, and the markdown document."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

from .compare import Check, compare, drift
from .run import RunResult, plan_runs
from .settings import Settings, server_args
from .targets import TARGETS

__all__ = [
    "describe",
    "format_checks",
    "format_markdown",
    "format_table",
    "observations",
    "report",
]


def _f(value: float, digits: int = 1, sign: bool = False) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_table(results: list[RunResult]) -> str:
    """The per-run table."""
    head = (
        f"{'conc':>4} {'target':<9} {'streams':>7} {'err':>4} "
        f"{'TTFT p50':>8} {'p90':>7} {'p99':>7}  {'ITL p50':>7} {'p99':>6}  "
        f"{'tok/s':>7} {'tok/str':>7}  {'server':>6} {'sim':>6} {'bench':>6}  "
        f"{'busy':>5} {'other':>5}"
    )
    units = (
        f"{'':>4} {'':<9} {'':>7} {'':>4} {'ms':>8} {'ms':>7} {'ms':>7}  {'ms':>7} {'ms':>6}  "
        f"{'':>7} {'':>7}  {'CPU us per token':>20}  {'% of all cores':>11}"
    )
    lines = [head, units, "-" * len(head)]
    for r in results:
        name = r.target if r.repeat == 1 else f"{r.target}#{r.repeat}"
        cpu = r.cpu_us_per_token
        server = _f(cpu.get("server", math.nan)) if r.target != "direct" else "-"
        lines.append(
            f"{r.concurrency:>4} {name:<9} {r.streams:>7} {r.errors:>4} "
            f"{_f(r.ttft_p50, 2):>8} {_f(r.ttft_p90, 2):>7} {_f(r.ttft_p99, 2):>7}  "
            f"{_f(r.itl_p50, 2):>7} {_f(r.itl_p99, 2):>6}  "
            f"{_f(r.tokens_per_s, 0):>7} {_f(r.tokens_per_stream, 1):>7}  "
            f"{server:>6} {_f(cpu.get('sim', math.nan)):>6} {_f(cpu.get('bench', math.nan)):>6}  "
            f"{_f(r.cpu_busy_pct.get('machine', math.nan), 0):>5} "
            f"{_f(r.cpu_busy_pct.get('other', math.nan), 0):>5}"
        )
    return "\n".join(lines)


def format_checks(
    level: int, name: str, checks: list[Check], moved: dict[str, float] | None
) -> str:
    """The server-vs-direct block of one level."""
    lines = [f"{name} vs direct at {level} stream{'s' if level != 1 else ''}:"]
    for c in checks:
        if c.unit == "x":
            value = f"{c.value:.3f}x"
        elif c.unit == "ms":
            value = f"{_f(c.value, 2, sign=True)} ms"
        elif c.unit == "us":
            value = f"{_f(c.value, 1)} us/token"
        else:
            value = f"{c.value:.0f}"
        if c.limit is None:
            target = "(information)"
        elif c.unit == "ms":
            target = f"target <= +{c.limit:g} ms"
        elif c.unit == "us":
            target = f"target <= {c.limit:g} us"
        else:
            target = f"target {c.limit:g}"
        mark = "" if c.passed is None else ("PASS" if c.passed else "MISS")
        lines.append(f"  {c.label:<22} {value:>16}   {target:<20} {mark}")
    if moved is not None:
        lines.append(
            "  drift (direct#2 - direct#1): "
            f"TTFT p50 {_f(moved['ttft_p50'], 2, True)} ms, "
            f"TTFT p99 {_f(moved['ttft_p99'], 2, True)} ms, "
            f"ITL p99 {_f(moved['itl_p99'], 2, True)} ms, "
            f"throughput x{moved['throughput_ratio']:.3f}"
        )
        margins = {"ttft_p50": checks[0].limit, "ttft_p99": checks[1].limit}
        margins["itl_p99"] = checks[2].limit
        for key, margin in margins.items():
            if margin is not None and abs(moved[key]) > margin / 2:
                lines.append(
                    f"  ! drift of {key} ({moved[key]:+.2f} ms) is over half its margin: "
                    "this comparison is within the noise, run again"
                )
    return "\n".join(lines)


def observations(results: list[RunResult]) -> list[str]:
    """Things in the figures that make them less trustworthy."""
    notes = []
    for r in results:
        name = f"{r.target}#{r.repeat} at {r.concurrency}"
        machine = r.cpu_busy_pct.get("machine", 0.0)
        bench = r.cpu_busy_pct.get("bench", 0.0)
        other = r.cpu_busy_pct.get("other", 0.0)
        if other >= 10.0:
            notes.append(
                f"{name}: other programs kept {other:.0f}% of the machine's cores busy "
                "during the window: its figures are disturbed"
            )
        if machine >= 90.0:
            notes.append(
                f"{name}: the machine was {machine:.0f}% busy (server "
                f"{r.cpu_busy_pct.get('server', 0):.0f}%, simulator "
                f"{r.cpu_busy_pct.get('sim', 0):.0f}%, load generator {bench:.0f}% of a core): "
                "CPU-saturated, its latencies include waiting for a core"
            )
        elif bench >= 50.0:
            notes.append(f"{name}: the load generator used {bench:.0f}% of a core")
        sim_busy = r.cpu_busy_pct.get("sim", 0.0)
        if sim_busy >= 80.0:
            notes.append(
                f"{name}: the simulator used {sim_busy:.0f}% of its one core: the baseline "
                "itself is CPU-bound at this level"
            )
        mid = (r.sim_stats or {}).get("mid")
        if isinstance(mid, dict) and mid.get("queued"):
            notes.append(
                f"{name}: the simulator had {mid['queued']} requests queued for a slot "
                "halfway through the window (Ollama-side queueing)"
            )
        if r.errors:
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(r.error_reasons.items()))
            notes.append(f"{name}: {r.errors} failed streams: {reasons}")
        elif r.error_reasons:
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(r.error_reasons.items()))
            notes.append(f"{name}: {reasons}")
        if r.window_note.startswith("whole"):
            notes.append(f"{name}: {r.window_note}")
        if "psutil" in r.cpu_source.values():
            notes.append(f"{name}: CPU from psutil ticks (10 ms resolution) for {r.cpu_source}")
    by_level: dict[int, dict[str, float]] = {}
    for r in results:
        by_level.setdefault(r.concurrency, {})[r.target] = r.chars_per_stream
    for level, chars in by_level.items():
        values = [v for v in chars.values() if not math.isnan(v)]
        if values and max(values) - min(values) > 0.5:
            notes.append(f"at {level}: content per stream differs between targets: {chars}")
    return notes


def _cell(check: dict[str, Any]) -> str:
    value = float(check["value"])
    if check["unit"] == "ms":
        text = _f(value, 2, sign=True)
    elif check["unit"] == "x":
        text = "-" if math.isnan(value) else f"{value:.3f}x"
    elif check["unit"] == "us":
        text = _f(value, 1)
    else:
        text = f"{value:.0f}"
    if check["passed"] is None:
        return text
    limit = f"{check['limit']:g}"
    return f"{text} (≤ {limit}) PASS" if check["passed"] else f"{text} (≤ {limit}) **MISS**"


def format_markdown(
    settings: Settings, results: list[RunResult], data: dict[str, Any], when: str
) -> str:
    """The runs, the server-vs-direct checks and the observations as a markdown document."""
    lines = [
        "# Benchmark: the server against direct (simulated) Ollama",
        "",
        f"Run {when}, total time {data['elapsed_s']:.0f} s; "
        f"targets: {data['passed']} PASS, {data['missed']} MISS.",
        "",
        *(f"- {line}" for line in describe(settings)),
        "",
        "## Runs",
        "",
        "TTFT and ITL in ms; CPU in µs per content token; busy and other in % of all cores "
        "(other: busy time of programs outside the benchmark).",
        "",
        "| streams | target | measured | errors | TTFT p50 | TTFT p90 | TTFT p99 | ITL p50 "
        "| ITL p99 | tokens/s | server CPU | sim CPU | bench CPU | busy | other |",
        "| ---: | :--- |" + " ---: |" * 13,
    ]
    for r in results:
        cpu = r.cpu_us_per_token
        server = _f(cpu.get("server", math.nan)) if r.target != "direct" else "-"
        name = r.target if r.repeat == 1 else f"{r.target}#{r.repeat}"
        cells = [
            str(r.concurrency), name, str(r.streams), str(r.errors),
            _f(r.ttft_p50, 2), _f(r.ttft_p90, 2), _f(r.ttft_p99, 2),
            _f(r.itl_p50, 2), _f(r.itl_p99, 2), _f(r.tokens_per_s, 0),
            server, _f(cpu.get("sim", math.nan)), _f(cpu.get("bench", math.nan)),
            _f(r.cpu_busy_pct.get("machine", math.nan), 0),
            _f(r.cpu_busy_pct.get("other", math.nan), 0),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if data["comparisons"]:
        lines += [
            "",
            "## Server against direct",
            "",
            "Differences from the pooled direct runs of the same level (ms), throughput "
            "ratio, the server's CPU per token (µs), failed streams; a target in brackets "
            "where one applies. Drift: the second direct run minus the first (TTFT p50 / p99).",
            "",
            "| streams | target | TTFT p50 | TTFT p99 | ITL p99 | throughput | server CPU "
            "| errors | drift |",
            "| ---: | :--- |" + " ---: |" * 7,
        ]
        for comp in data["comparisons"]:
            moved = comp["drift"]
            shift = (
                "-"
                if moved is None
                else f"{_f(moved['ttft_p50'], 2, True)} / {_f(moved['ttft_p99'], 2, True)}"
            )
            cells = [str(comp["level"]), comp["target"], *map(_cell, comp["checks"]), shift]
            lines.append("| " + " | ".join(cells) + " |")
    if data["observations"]:
        lines += ["", "## Observations", ""]
        lines += [f"- {note}" for note in data["observations"]]
    return "\n".join(lines) + "\n"


def describe(settings: Settings) -> list[str]:
    """The lines that say how the figures were produced."""
    mode = (
        f"{settings.duration:g} s window after a {settings.warmup:g} s warm-up"
        if settings.streams is None
        else f"{settings.streams} streams per client after {settings.warmup_streams} warm-up"
    )
    lines = [
        f"simulator: {settings.ttft_ms:g} ms to first token, {settings.itl_ms:g} ms between "
        f"tokens, {settings.tokens} tokens, {settings.parallel} slots"
        + (f", jitter {settings.jitter_ms:g} ms" if settings.jitter_ms is not None else ""),
        f"load: closed loop, one keep-alive connection or websocket per client, starts spread "
        f"over one stream; {mode}; per-stream timeout {settings.timeout:g} s",
    ]
    first = [
        (name, repeat) for level, name, repeat in plan_runs(settings) if level == settings.levels[0]
    ]
    order = ", ".join(name if repeat == 1 else f"{name}#{repeat}" for name, repeat in first)
    lines.append(f"order per level: {order}")
    if any(repeat == 2 for _, _, repeat in plan_runs(settings)):
        lines.append(
            "baseline: the direct runs before and after the server are pooled; "
            "their difference is printed as the drift"
        )
    lines.append(
        "CPU: on-CPU time per content token over the window (schedstat ns, psutil checked); "
        "busy: whole machine; other: busy time no watched process accounts for"
    )
    if any(TARGETS[name][0] for name in settings.targets):
        shown = server_args(settings)
        for i, arg in enumerate(shown):
            if shown[i - 1] == "--api-key" and i:
                shown[i] = "***"
            elif arg.startswith("--api-key="):
                shown[i] = "--api-key=***"
        lines.append(f"server arguments: {' '.join(shown)}")
    lines.append(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    return lines


def report(settings: Settings, results: list[RunResult], elapsed: float) -> dict[str, Any]:
    """Print the tables and return every figure as plain data."""
    print()
    for line in describe(settings):
        print(line)
    print()
    print(format_table(results))
    comparisons: list[dict[str, Any]] = []
    for level in settings.levels:
        direct = [r for r in results if r.concurrency == level and r.target == "direct"]
        if not direct:
            continue
        for r in results:
            if r.concurrency != level or r.target == "direct":
                continue
            checks = compare(direct, r)
            moved = drift(direct)
            print()
            print(format_checks(level, r.target, checks, moved))
            comparisons.append(
                {
                    "level": level,
                    "target": r.target,
                    "checks": [c.as_json() for c in checks],
                    "drift": moved,
                }
            )
    verdicts = [c["passed"] for comp in comparisons for c in comp["checks"]]
    passed = sum(1 for v in verdicts if v is True)
    missed = sum(1 for v in verdicts if v is False)
    notes = observations(results)
    if notes:
        print()
        print("observations:")
        for note in notes:
            print(f"  - {note}")
    print()
    print(f"targets: {passed} PASS, {missed} MISS; total time {elapsed:.0f} s")
    return {
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in settings.__dict__.items()
            if k != "api_key"
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": [r.as_json() for r in results],
        "comparisons": comparisons,
        "observations": notes,
        "passed": passed,
        "missed": missed,
        "elapsed_s": elapsed,
    }
