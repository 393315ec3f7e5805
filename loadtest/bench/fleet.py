"""Calls through several simulated Ollamas: where pinning a call to its Ollama pays, and where not.

``python -m loadtest.bench.fleet`` replays the same calls (:func:`~.calls.make_scripts`:
a shared system prompt, several turns each, the caller speaking a few seconds between
turns) through the server in front of simulated Ollamas with llama-server's prompt cache
(timed as :data:`~.calls.H100_8B`), once per run, each run with fresh simulators and a
fresh server started with its ``--routing``. A run is a deployment with the calls'
prompts (:class:`Setup`) and a routing policy; the runs (:data:`PHASES`):

- ``alone``: the baseline, every call on a one-slot Ollama of its own (as many as
  calls), pinned; the report says how many calls each simulator served;
- ``round-robin``, ``least-loaded``, ``pinned``: ``--backends`` Ollamas of ``--parallel``
  slots, calls keyed by VAPI's ``call.id``; ``keyless``: pinned, no key (the
  conversation itself is the key); ``failover``: pinned, and ``--kill-after`` seconds in
  one simulator is killed (SIGKILL), its request log read just before;
- ``single-round-robin``: alone's one-slot Ollamas (``OLLAMA_NUM_PARALLEL=1``, several
  per GPU) with round-robin routing; ``single-shared-pinned`` and
  ``single-shared-round-robin``: as many one-slot Ollamas as the fleet has slots, fewer
  than the calls;
- ``unprimed-pinned``, ``unprimed-round-robin``: the fleet, the server not told the
  system prompt, so nothing is primed (as when it lives in VAPI's dashboard);
- ``per-call-alone``, ``per-call-pinned``, ``per-call-round-robin``: each call's system
  prompt ends with its caller's details (:func:`~.calls.with_caller_details`, as VAPI's
  dynamic variables fill them in); the server primes the shared part;
- ``lru-pinned``, ``lru-round-robin``: what-if, the fleet with the simulators'
  ``--slot-similarity 0`` (llama-server's ``--slot-prompt-similarity 0``: the least
  recently used slot, and the RAM cache restores the turn's own prefix), which Ollama
  0.32 does not set.

Per run it reports TTFT p50/p99 of first turns and of later turns, how often a later
turn re-evaluated its conversation (its cache held none of the call's own messages:
cached tokens below the call's first prompt), how often a turn evaluated its system
prompt (cached tokens below the shared system prompt's), the mean tokens evaluated per
later turn, how often a later turn ran on another backend than the call's previous
turn, and the callers' errors (a failed turn ends its call). Then the targets, for each
deployment with a pinned and a round-robin run (:data:`COMPARISONS`): pinned TTFT p50
over later turns at least 3x lower than round-robin and within 20% of the calls alone;
and no caller error in ``failover``. Exit status 0 when every target is met, 1 when one
is missed, 2 when a child fails, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import uvloop

from ..processes import Child
from .calls import (
    H100_8B,
    CallScript,
    Gpu,
    Served,
    TurnResult,
    api_key,
    fetch_log,
    fetch_metrics,
    make_scripts,
    run_call,
    run_scenario,
    served_turns,
    start_fleet,
    system_prompt,
    wait_warm,
    with_caller_details,
)
from .settings import DEFAULT_MODEL
from .stats import percentile

__all__ = ["COMPARISONS", "DEFAULT_PHASES", "PHASES", "Phase", "Setup", "main"]


@dataclass(frozen=True)
class Settings:
    """The command line."""

    backends: int
    parallel: int
    calls: int
    turns: int
    system_tokens: int
    tokens: int
    think: float
    jitter: float
    spread: float
    seed: int
    gpu: Gpu
    phases: tuple[str, ...]
    kill_after: float | None
    timeout: float
    model: str
    sim_args: tuple[str, ...]
    server_args: tuple[str, ...]
    json_path: Path | None

    @property
    def reply_seconds(self) -> float:
        """A reply's length without any prompt evaluation."""
        return (self.gpu.first_token_ms + self.gpu.itl_ms * max(self.tokens - 1, 0)) / 1000

    @property
    def call_seconds(self) -> float:
        """About how long a call lasts."""
        return self.think * (self.turns - 1) + self.reply_seconds * self.turns

    @property
    def kill_at(self) -> float:
        """When the failover run kills a simulator: by default halfway through."""
        if self.kill_after is not None:
            return self.kill_after
        return (self.spread + self.call_seconds) / 2


@dataclass(frozen=True)
class Setup:
    """A deployment and what the calls send it.

    ``ollamas``: ``fleet`` is ``--backends`` Ollamas of ``--parallel`` slots; ``per-call``
    one one-slot Ollama per call; ``single`` as many one-slot Ollamas as the fleet has
    slots. ``primed``: the server is told the shared system prompt. ``per_call``: each
    call's system prompt ends with its caller's details. ``lru``: the simulators choose
    slots without similarity (``--slot-similarity 0``).
    """

    ollamas: Literal["fleet", "per-call", "single"]
    primed: bool = True
    per_call: bool = False
    lru: bool = False

    def shape(self, settings: Settings) -> tuple[int, int]:
        """How many Ollamas, and slots in each."""
        if self.ollamas == "per-call":
            return settings.calls, 1
        if self.ollamas == "single":
            return settings.backends * settings.parallel, 1
        return settings.backends, settings.parallel

    def describe(self, settings: Settings) -> str:
        """The deployment and prompts in a few words."""
        count, slots = self.shape(settings)
        text = f"{count} Ollamas x {slots} slot{'s' if slots > 1 else ''}"
        if self.ollamas == "per-call":
            text += ", one per call"
        elif self.ollamas == "single":
            text += f", {settings.calls} calls"
        if not self.primed:
            text += ", not primed"
        if self.per_call:
            text += ", per-call prompts"
        if self.lru:
            text = "what-if: " + text + ", slot similarity 0"
        return text


@dataclass(frozen=True)
class Phase:
    """One run: a setup and a routing policy."""

    name: str
    setup: Setup
    routing: str
    keyed: bool = True
    kill: bool = False

    @property
    def how(self) -> str:
        """The routing as the table shows it."""
        if not self.keyed:
            return f"{self.routing}, keyless"
        if self.kill:
            return f"{self.routing}, one Ollama killed"
        return self.routing


_FLEET = Setup("fleet")
_ALONE = Setup("per-call")
PHASES = {
    phase.name: phase
    for phase in (
        Phase("alone", _ALONE, "pinned"),
        Phase("round-robin", _FLEET, "round-robin"),
        Phase("least-loaded", _FLEET, "least-loaded"),
        Phase("pinned", _FLEET, "pinned"),
        Phase("keyless", _FLEET, "pinned", keyed=False),
        Phase("failover", _FLEET, "pinned", kill=True),
        Phase("single-round-robin", _ALONE, "round-robin"),
        Phase("single-shared-pinned", Setup("single"), "pinned"),
        Phase("single-shared-round-robin", Setup("single"), "round-robin"),
        Phase("unprimed-pinned", Setup("fleet", primed=False), "pinned"),
        Phase("unprimed-round-robin", Setup("fleet", primed=False), "round-robin"),
        Phase("per-call-alone", Setup("per-call", per_call=True), "pinned"),
        Phase("per-call-pinned", Setup("fleet", per_call=True), "pinned"),
        Phase("per-call-round-robin", Setup("fleet", per_call=True), "round-robin"),
        Phase("lru-pinned", Setup("fleet", lru=True), "pinned"),
        Phase("lru-round-robin", Setup("fleet", lru=True), "round-robin"),
    )
}
# Without least-loaded and keyless, which route as round-robin and pinned do here.
DEFAULT_PHASES = tuple(name for name in PHASES if name not in ("least-loaded", "keyless"))

# Deployments whose pinned run is held to the targets: (pinned, round-robin, alone).
# The calls alone are primed; their later turns do not depend on priming (each finds
# its own conversation in its slot), nor on how a one-slot Ollama chooses its slot.
COMPARISONS = (
    ("pinned", "round-robin", "alone"),
    ("alone", "single-round-robin", "alone"),
    ("single-shared-pinned", "single-shared-round-robin", "alone"),
    ("unprimed-pinned", "unprimed-round-robin", "alone"),
    ("per-call-pinned", "per-call-round-robin", "per-call-alone"),
    ("lru-pinned", "lru-round-robin", "alone"),
)


def _phases(text: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return tuple(PHASES)
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in PHASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown run(s) {unknown}; known: all, {', '.join(PHASES)}"
        )
    return names


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Read the command line."""
    gpu = H100_8B
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench.fleet",
        description="Calls through the server in front of several simulated Ollamas with "
        "the prompt cache: round-robin and pinned routing on a fleet of multi-slot "
        "Ollamas, on one-slot Ollamas, without priming, with per-call system prompts and "
        "with llama-server's slot similarity off; a calls-alone baseline and a backend "
        "killed mid-run.",
    )
    add = parser.add_argument
    add("--backends", type=int, default=3, help="simulated Ollamas of the fleet (default 3)")
    add("--parallel", type=int, default=4, help="slots per Ollama, OLLAMA_NUM_PARALLEL (4)")
    add("--calls", type=int, default=24, help="concurrent calls (default 24)")
    add("--turns", type=int, default=6, help="turns per call (default 6)")
    add("--system-tokens", type=int, default=1500, help="system prompt tokens (1500)")
    add("--tokens", type=int, default=40, help="tokens per reply (default 40)")
    add("--think", type=float, default=3.0, help="seconds the caller speaks between turns (3)")
    add("--think-jitter", type=float, default=1.0, help="± uniform jitter on --think (1)")
    add("--spread", type=float, default=None, help="seconds over which calls start (--think)")
    add("--seed", type=int, default=1, help="seed of the calls' scripts (default 1)")
    add("--ttft", type=float, default=gpu.first_token_ms, help="fixed ms to first token")
    add("--prefill", type=float, default=gpu.prefill_ms_per_token, help="ms per prompt token")
    add("--restore", type=float, default=gpu.restore_ms_per_token, help="ms per restored token")
    add("--itl", type=float, default=gpu.itl_ms, help="ms between tokens")
    add(
        "--phases",
        type=_phases,
        default=DEFAULT_PHASES,
        help=f"runs, in order, or all (default {','.join(DEFAULT_PHASES)})",
    )
    add("--kill-after", type=float, default=None, help="seconds into failover (halfway)")
    add("--timeout", type=float, default=30.0, help="seconds a turn may take (30)")
    add("--model", default=DEFAULT_MODEL, help="model name")
    add("--sim-arg", action="append", default=[], metavar="ARG", help="simulator argument")
    add("--server-arg", action="append", default=[], metavar="ARG", help="server argument")
    add("--json", type=Path, default=None, metavar="PATH", help="write every turn as JSON")
    args = parser.parse_args(argv)
    for name in ("backends", "parallel", "calls", "turns", "tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.backends < 2 and any(PHASES[p].kill for p in args.phases):
        parser.error("failover needs --backends of at least 2")
    return Settings(
        backends=args.backends,
        parallel=args.parallel,
        calls=args.calls,
        turns=args.turns,
        system_tokens=args.system_tokens,
        tokens=args.tokens,
        think=args.think,
        jitter=args.think_jitter,
        spread=args.think if args.spread is None else args.spread,
        seed=args.seed,
        gpu=Gpu(args.ttft, args.prefill, args.restore, args.itl),
        phases=args.phases,
        kill_after=args.kill_after,
        timeout=args.timeout,
        model=args.model,
        sim_args=tuple(args.sim_arg),
        server_args=tuple(args.server_arg),
        json_path=args.json,
    )


@dataclass
class PhaseResult:
    """What one run gave."""

    phase: Phase
    results: list[TurnResult]
    served: dict[tuple[int, int], list[Served]]
    seconds: float
    failovers: int  # the server's voice_llm_failovers_total
    killed: int | None = None  # the killed backend's index
    killed_at: float | None = None  # seconds after the run started
    per_backend: list[int] = field(default_factory=list)  # calls each backend served


async def _run_phase(
    settings: Settings, phase: Phase, scripts: list[CallScript], shared: str, log_dir: Path
) -> PhaseResult:
    """Start the run's simulators and server, make every call, read the logs.

    ``shared`` is the system prompt all calls start with, which a primed run's server is
    told.
    """
    setup = phase.setup
    backends, parallel = setup.shape(settings)
    sim_args = [
        "--model", settings.model, "--tokens", str(settings.tokens),
        "--parallel", str(parallel), "--preloaded", *settings.gpu.simulator_args(),
        *(["--slot-similarity", "0"] if setup.lru else []), *settings.sim_args,
    ]  # fmt: skip
    server_args = [
        "--model", settings.model, "--max-concurrency", str(parallel),
        "--routing", phase.routing, *(["--system-prompt", shared] if setup.primed else []),
        "--prefill-rate", f"{settings.gpu.prefill_rate:.0f}", *settings.server_args,
    ]  # fmt: skip
    folder = log_dir / phase.name
    folder.mkdir()
    sims, server = start_fleet(backends, sim_args, server_args, folder)
    children: list[Child] = [*sims, server]
    killed: int | None = None
    killed_at: float | None = None
    killed_log: list[dict[str, Any]] = []
    key = api_key(settings.server_args)
    calls: list[asyncio.Task[list[TurnResult]]] = []
    try:
        await wait_warm(server, backends)
        host, port = server.url.split("://", 1)[1].rsplit(":", 1)
        started = time.perf_counter()
        calls = [
            asyncio.create_task(
                run_call(s, host, int(port), key, phase.keyed, started, settings.timeout)
            )
            for s in scripts
        ]
        if phase.kill:
            killed = 1
            await asyncio.sleep(max(0.0, started + settings.kill_at - time.perf_counter()))
            killed_log = await fetch_log(sims[killed])
            sims[killed].popen.kill()
            killed_at = time.perf_counter() - started
        results = [turn for call in await asyncio.gather(*calls) for turn in call]
        seconds = time.perf_counter() - started
        metrics = await fetch_metrics(server, key)
        logs = [killed_log if i == killed else await fetch_log(sim) for i, sim in enumerate(sims)]
        for i, child in enumerate(children):
            if i != killed:
                child.check_alive()
    finally:
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        for child in reversed(children):
            child.stop()
    served = served_turns(logs, scripts)
    per_backend = [
        len(
            {
                call
                for (call, _), attempts in served.items()
                if any(a.backend == b for a in attempts)
            }
        )
        for b in range(backends)
    ]
    return PhaseResult(
        phase,
        results,
        served,
        seconds,
        int(metrics.get("voice_llm_failovers_total", 0)),
        killed,
        killed_at,
        per_backend,
    )


# Figures of one run


def _final(attempts: list[Served] | None) -> Served | None:
    """The attempt that answered: the last one that got as far as done, else the last."""
    if not attempts:
        return None
    done = [a for a in attempts if a.outcome == "done"]
    return done[-1] if done else attempts[-1]


def _p(values: list[float], q: float) -> float:
    return percentile(sorted(values), q)


def figures(result: PhaseResult, settings: Settings, system_tokens: int) -> dict[str, Any]:
    """The table's figures of one run (``system_tokens``: the shared system prompt's)."""
    turns = result.results
    first = [t.ttft_ms for t in turns if t.turn == 1 and t.ttft_ms is not None]
    later = [t.ttft_ms for t in turns if t.turn > 1 and t.ttft_ms is not None]
    served = result.served
    history_lost = system = later_served = moved = 0
    evaluated: list[int] = []
    all_served = 0
    for turn in turns:
        final = _final(served.get((turn.call, turn.turn)))
        if final is None:
            continue
        all_served += 1
        if final.cached < system_tokens:
            system += 1
        if turn.turn == 1:
            continue
        opening = _final(served.get((turn.call, 1)))
        previous = _final(served.get((turn.call, turn.turn - 1)))
        later_served += 1
        evaluated.append(final.evaluated)
        if opening is not None and final.cached < opening.prompt - 1:
            history_lost += 1
        if previous is not None and previous.backend != final.backend:
            moved += 1
    errors = [t for t in turns if t.error is not None]
    cut = [t for t in turns if t.error is None and t.tokens < settings.tokens]
    return {
        "phase": result.phase.name,
        "setup": result.phase.setup.describe(settings),
        "shape": "{} x {}".format(*result.phase.setup.shape(settings)),
        "routing": result.phase.how,
        "calls": len({t.call for t in turns}),
        "turns": len(turns),
        "errors": len(errors),
        "error_reasons": sorted({t.error for t in errors if t.error}),
        "cut": len(cut),
        "turn1_p50": _p(first, 50),
        "turn1_p99": _p(first, 99),
        "later_p50": _p(later, 50),
        "later_p99": _p(later, 99),
        "history_lost": _share(history_lost, later_served),
        "system_prompt": _share(system, all_served),
        "evaluated": sum(evaluated) / len(evaluated) if evaluated else math.nan,
        "moved": _share(moved, later_served),
        "per_turn_p50": [
            _p([t.ttft_ms for t in turns if t.turn == k and t.ttft_ms is not None], 50)
            for k in range(1, settings.turns + 1)
        ],
        "per_backend": result.per_backend,
        "seconds": result.seconds,
    }


def _share(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else math.nan


def failover_figures(result: PhaseResult) -> dict[str, Any]:
    """What the killed backend's calls saw: the turns that moved off it."""
    assert result.killed is not None
    assert result.killed_at is not None
    served = result.served
    moved: list[float] = []
    evaluated: list[int] = []
    for turn in result.results:
        previous = _final(served.get((turn.call, turn.turn - 1)))
        if (
            turn.sent_at >= result.killed_at
            and previous is not None
            and previous.backend == result.killed
            and turn.ttft_ms is not None
        ):
            moved.append(turn.ttft_ms)
            final = _final(served.get((turn.call, turn.turn)))
            if final is not None:
                evaluated.append(final.evaluated)
    return {
        "killed_backend": result.killed + 1,
        "killed_at": result.killed_at,
        "failovers": result.failovers,
        "moved_turns": len(moved),
        "moved_p50": _p(moved, 50),
        "moved_max": max(moved) if moved else math.nan,
        "moved_evaluated": sum(evaluated) / len(evaluated) if evaluated else math.nan,
    }


# Report


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _count(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f} %"


def report(
    settings: Settings, results: list[PhaseResult], system_tokens: int, load: tuple[float, float]
) -> int:
    """Print the tables and the targets; returns the exit status (0 met, 1 missed)."""
    rows = {r.phase.name: figures(r, settings, system_tokens) for r in results}
    gpu = settings.gpu
    print(
        f"\n{settings.calls} calls of {settings.turns} turns, {settings.system_tokens}-token "
        f"system prompt, {settings.tokens}-token replies, caller speaking "
        f"{settings.think:g} ± {settings.jitter:g} s between turns; first token "
        f"{gpu.first_token_ms:g} ms + {gpu.prefill_ms_per_token:g} ms per evaluated prompt "
        f"token + {gpu.restore_ms_per_token:g} ms per restored token, {gpu.itl_ms:g} ms "
        f"between tokens; load average {load[0]:.2f} before, {load[1]:.2f} after\n"
    )
    for row in rows.values():
        print(f"- {row['phase']}: {row['setup']}, {row['routing']}")
    later = f"turns 2-{settings.turns}" if settings.turns > 2 else "turn 2"
    print(
        f"\n| run | Ollamas x slots | routing | turns | errors | turn 1 p50 | turn 1 p99 "
        f"| {later} p50 | {later} p99 | conversation re-evaluated | system prompt evaluated "
        "| evaluated tokens per later turn | later turns moved |"
    )
    print("| --- | --- | --- |" + " ---: |" * 10)
    for name, row in rows.items():
        print(
            f"| {name} | {row['shape']} | {row['routing']} | {row['turns']} | {row['errors']} "
            f"| {_ms(row['turn1_p50'])} | {_ms(row['turn1_p99'])} | {_ms(row['later_p50'])} "
            f"| {_ms(row['later_p99'])} | {_pct(row['history_lost'])} "
            f"| {_pct(row['system_prompt'])} | {_count(row['evaluated'])} "
            f"| {_pct(row['moved'])} |"
        )
    print("\nTTFT p50 by turn, ms:\n")
    numbers = range(1, settings.turns + 1)
    print("| run | " + " | ".join(f"turn {k}" for k in numbers) + " |")
    print("| --- |" + " ---: |" * settings.turns)
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(_ms(v) for v in row["per_turn_p50"]) + " |")
    print()
    for name, row in rows.items():
        if row["errors"]:
            print(f"{name}: {row['errors']} failed turns: {'; '.join(row['error_reasons'][:3])}")
        if row["cut"]:
            print(f"{name}: {row['cut']} replies cut short (fewer than {settings.tokens} tokens)")
    spread = [
        f"{name} {min(row['per_backend'], default=0)}-{max(row['per_backend'], default=0)}"
        for name, row in rows.items()
        if PHASES[name].routing == "pinned" and not PHASES[name].kill
    ]
    if spread:
        print(f"calls served per simulator, fewest-most: {', '.join(spread)}")
    failover: dict[str, Any] | None = None
    for result in results:
        if result.phase.kill:
            failover = failover_figures(result)
            print(
                f"failover: simulator {failover['killed_backend']} of {settings.backends} "
                f"killed {failover['killed_at']:.1f} s in; {failover['failovers']} turns "
                f"failed over before their first token; {failover['moved_turns']} later turns "
                f"of its calls moved: TTFT p50 {_ms(failover['moved_p50'])} ms, max "
                f"{_ms(failover['moved_max'])} ms, {_ms(failover['moved_evaluated'])} tokens "
                "evaluated on average"
            )
    missed = _targets(settings, rows, later)
    if settings.json_path is not None:
        data = {
            "settings": {k: v for k, v in settings.__dict__.items() if k != "json_path"},
            "load": load,
            "figures": rows,
            "failover": failover,
            "turns": {r.phase.name: r.results for r in results},
            "served": {
                r.phase.name: [
                    {"call": call, "turn": turn, "attempts": attempts}
                    for (call, turn), attempts in sorted(r.served.items())
                ]
                for r in results
            },
        }
        settings.json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str))
        print(f"figures written to {settings.json_path}")
    return 1 if missed else 0


def _verdict(ratio: float, passed: bool) -> str:
    return "-" if math.isnan(ratio) else f"{ratio:.2f}x {'PASS' if passed else '**MISS**'}"


def _targets(settings: Settings, rows: dict[str, dict[str, Any]], later: str) -> bool:
    """Print the targets of every deployment the run can check; whether one was missed."""
    checks: list[tuple[str, str, str]] = []
    missed = False
    for pinned, round_robin, alone in COMPARISONS:
        if not all(name in rows for name in (pinned, round_robin, alone)):
            continue
        lower = rows[round_robin]["later_p50"] / rows[pinned]["later_p50"]
        above = rows[pinned]["later_p50"] / rows[alone]["later_p50"]
        missed = missed or not (lower >= 3 and above <= 1.2)
        checks.append(
            (
                f"{rows[pinned]['setup']} ({pinned})",
                _verdict(lower, lower >= 3),
                _verdict(above, above <= 1.2),
            )
        )
    if checks:
        print(
            f"\n| deployment (pinned run) | round-robin / pinned, {later} TTFT p50 (≥ 3x) "
            f"| pinned / alone, {later} TTFT p50 (≤ 1.2x) |"
        )
        print("| --- | ---: | ---: |")
        for text, lower_text, above_text in checks:
            print(f"| {text} | {lower_text} | {above_text} |")
    if "failover" in rows:
        errors = rows["failover"]["errors"]
        missed = missed or errors > 0
        print(
            f"\n{'PASS' if errors == 0 else 'MISS'}  failover: {errors} caller errors when one "
            f"Ollama of {settings.backends} dies (none)"
        )
    return missed


def main(argv: Sequence[str] | None = None) -> int:
    """Run every configuration, print the tables, stop every child."""
    settings = parse_args(argv)
    shared = system_prompt(settings.system_tokens)
    scripts = make_scripts(
        settings.calls,
        settings.turns,
        shared,
        settings.think,
        settings.jitter,
        settings.spread,
        settings.seed,
    )
    personal = with_caller_details(scripts)
    print(
        f"{len(settings.phases)} runs of about "
        f"{settings.spread + settings.call_seconds:.0f} s each",
        file=sys.stderr,
    )

    def work(log_dir: Path, load_before: float) -> int:
        results = []
        for name in settings.phases:
            print(f"running {name}", file=sys.stderr)
            phase = PHASES[name]
            calls = personal if phase.setup.per_call else scripts
            results.append(uvloop.run(_run_phase(settings, phase, calls, shared, log_dir)))
        # Four characters a token: what the simulator counts of the shared prompt.
        system_tokens = len(shared) // 4
        return report(settings, results, system_tokens, (load_before, os.getloadavg()[0]))

    return run_scenario("fleet", work)


if __name__ == "__main__":
    sys.exit(main())
