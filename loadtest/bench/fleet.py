"""Calls against a fleet of simulated Ollamas: round-robin, least-loaded and call-pinned routing.

``python -m loadtest.bench.fleet`` replays the same calls (:func:`~.calls.make_scripts`:
a shared system prompt, several turns each, the caller speaking a few seconds between
turns, more calls than slots in all) through the server in front of ``--backends``
simulators with llama-server's prompt cache (``--parallel`` slots each, timed as
:data:`~.calls.H100_8B`), once per configuration, each with fresh simulators and a fresh
server started with its ``--routing``:

- ``alone``: the baseline, every call on an Ollama of its own (as many one-slot
  simulators as calls; the server pins them, and the report says how many calls each
  simulator served);
- ``round-robin``, ``least-loaded``, ``pinned``: the server's routing policies, calls
  keyed by VAPI's ``call.id``;
- ``keyless``: pinned routing, no key (the conversation itself is the key);
- ``failover``: pinned and keyed; ``--kill-after`` seconds in, one simulator is killed
  (SIGKILL), its request log read just before.

Per configuration it reports TTFT p50/p99 of first turns and of later turns, how often a
later turn re-evaluated its conversation (its cache held none of the call's own messages:
cached tokens below the call's first prompt, so only what every call shares, the system
prompt, was reused), how often a turn evaluated its whole prompt (system prompt
included: cached tokens below the primed prompt), the mean tokens evaluated per later
turn, how often a later turn ran on another backend than the call's previous turn, and
the callers' errors (a failed turn ends its call). Then the targets: pinned TTFT p50 over
later turns at least 3x lower than round-robin and within 20% of ``alone``, and no
caller error in ``failover``. Exit status 0 when every target is met, 1 when one is
missed, 2 when a child fails, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    primed_tokens,
    run_call,
    served_turns,
    start_fleet,
    system_prompt,
    wait_warm,
)
from .settings import DEFAULT_MODEL
from .stats import percentile

__all__ = ["PHASES", "Phase", "main"]


@dataclass(frozen=True)
class Phase:
    """One configuration of the run."""

    name: str
    routing: str
    keyed: bool = True
    alone: bool = False
    kill: bool = False


PHASES = {
    phase.name: phase
    for phase in (
        Phase("alone", "pinned", alone=True),
        Phase("round-robin", "round-robin"),
        Phase("least-loaded", "least-loaded"),
        Phase("pinned", "pinned"),
        Phase("keyless", "pinned", keyed=False),
        Phase("failover", "pinned", kill=True),
    )
}


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


def _phases(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in PHASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {unknown}; known: {', '.join(PHASES)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Read the command line."""
    gpu = H100_8B
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench.fleet",
        description="Calls through the server in front of several simulated Ollamas with "
        "the prompt cache: round-robin, least-loaded and pinned routing, a calls-alone "
        "baseline, keyless calls and a backend killed mid-run.",
    )
    add = parser.add_argument
    add("--backends", type=int, default=3, help="simulated Ollamas (default 3)")
    add("--parallel", type=int, default=4, help="slots per Ollama, OLLAMA_NUM_PARALLEL (4)")
    add("--calls", type=int, default=24, help="concurrent calls (default 24)")
    add("--turns", type=int, default=6, help="turns per call (default 6)")
    add("--system-tokens", type=int, default=1500, help="system prompt tokens (1500)")
    # One sentence. The simulator streams the 22nd token of a reply (its word cycle's
    # first word) without the space its slot keeps, so history resent after a longer
    # reply stops matching the slot there.
    add("--tokens", type=int, default=21, help="tokens per reply (default 21)")
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
        default=tuple(PHASES),
        help=f"configurations to run, in order (default {','.join(PHASES)})",
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
    """What one configuration gave."""

    phase: Phase
    results: list[TurnResult]
    served: dict[tuple[int, int], list[Served]]
    primed: int | None
    seconds: float
    failovers: int  # the server's voice_llm_failovers_total
    killed: int | None = None  # the killed backend's index
    killed_at: float | None = None  # seconds after the run started
    per_backend: list[int] = field(default_factory=list)  # calls each backend served


async def _run_phase(
    settings: Settings, phase: Phase, scripts: list[CallScript], log_dir: Path
) -> PhaseResult:
    """Start the configuration's simulators and server, make every call, read the logs."""
    backends = settings.calls if phase.alone else settings.backends
    parallel = 1 if phase.alone else settings.parallel
    sim_args = [
        "--model", settings.model, "--tokens", str(settings.tokens),
        "--parallel", str(parallel), "--preloaded",
        *settings.gpu.simulator_args(), *settings.sim_args,
    ]  # fmt: skip
    server_args = [
        "--model", settings.model, "--max-concurrency", str(parallel),
        "--routing", phase.routing, "--system-prompt", scripts[0].system,
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
        primed_tokens(logs),
        seconds,
        int(metrics.get("voice_llm_failovers_total", 0)),
        killed,
        killed_at,
        per_backend,
    )


# Figures of one configuration


def _final(attempts: list[Served] | None) -> Served | None:
    """The attempt that answered: the last one that got as far as done, else the last."""
    if not attempts:
        return None
    done = [a for a in attempts if a.outcome == "done"]
    return done[-1] if done else attempts[-1]


def _p(values: list[float], q: float) -> float:
    return percentile(sorted(values), q)


def figures(result: PhaseResult, settings: Settings) -> dict[str, Any]:
    """The table's figures of one configuration."""
    turns = result.results
    first = [t.ttft_ms for t in turns if t.turn == 1 and t.ttft_ms is not None]
    later = [t.ttft_ms for t in turns if t.turn > 1 and t.ttft_ms is not None]
    served = result.served
    history_lost = whole = later_served = moved = 0
    evaluated: list[int] = []
    all_served = 0
    for turn in turns:
        final = _final(served.get((turn.call, turn.turn)))
        if final is None:
            continue
        all_served += 1
        if result.primed is not None and final.cached < result.primed - 1:
            whole += 1
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
        "whole_prompt": _share(whole, all_served),
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


def report(settings: Settings, results: list[PhaseResult], load: tuple[float, float]) -> int:
    """Print the tables and the targets; returns the exit status (0 met, 1 missed)."""
    rows = {r.phase.name: figures(r, settings) for r in results}
    gpu = settings.gpu
    print(
        f"\n{settings.calls} calls of {settings.turns} turns, {settings.system_tokens}-token "
        f"system prompt, {settings.tokens}-token replies, caller speaking "
        f"{settings.think:g} ± {settings.jitter:g} s between turns; {settings.backends} "
        f"simulated Ollamas x {settings.parallel} slots ({settings.backends * settings.parallel}"
        f" slots in all); first token {gpu.first_token_ms:g} ms + {gpu.prefill_ms_per_token:g}"
        f" ms per evaluated prompt token + {gpu.restore_ms_per_token:g} ms per restored token,"
        f" {gpu.itl_ms:g} ms between tokens; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after\n"
    )
    later = f"turns 2-{settings.turns}" if settings.turns > 2 else "turn 2"
    print(
        f"| routing | turns | errors | turn 1 p50 | turn 1 p99 | {later} p50 | {later} p99 "
        "| conversation re-evaluated | whole prompt evaluated | evaluated tokens per later "
        "turn | later turns moved |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(
            f"| {name} | {row['turns']} | {row['errors']} | {_ms(row['turn1_p50'])} "
            f"| {_ms(row['turn1_p99'])} | {_ms(row['later_p50'])} | {_ms(row['later_p99'])} "
            f"| {_pct(row['history_lost'])} | {_pct(row['whole_prompt'])} "
            f"| {_count(row['evaluated'])} "
            f"| {_pct(row['moved'])} |"
        )
    print("\nTTFT p50 by turn, ms:\n")
    numbers = range(1, settings.turns + 1)
    print("| routing | " + " | ".join(f"turn {k}" for k in numbers) + " |")
    print("| --- |" + " ---: |" * settings.turns)
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(_ms(v) for v in row["per_turn_p50"]) + " |")
    print()
    for name, row in rows.items():
        if row["errors"]:
            print(f"{name}: {row['errors']} failed turns: {'; '.join(row['error_reasons'][:3])}")
        if row["cut"]:
            print(f"{name}: {row['cut']} replies cut short (fewer than {settings.tokens} tokens)")
    if "alone" in rows:
        most = max(rows["alone"]["per_backend"], default=0)
        print(f"alone: at most {most} call(s) on one simulator")
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
    missed = _targets(rows, later)
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


def _targets(rows: dict[str, dict[str, Any]], later: str) -> bool:
    """Print each target that the run can check; whether one was missed."""
    checks: list[tuple[str, bool]] = []
    pinned = rows.get("pinned")
    if pinned is not None and "round-robin" in rows:
        ratio = rows["round-robin"]["later_p50"] / pinned["later_p50"]
        checks.append(
            (f"pinned {later} TTFT p50 {ratio:.2f}x lower than round-robin (≥ 3x)", ratio >= 3)
        )
    if pinned is not None and "alone" in rows:
        ratio = pinned["later_p50"] / rows["alone"]["later_p50"]
        checks.append(
            (f"pinned {later} TTFT p50 {ratio:.2f}x the calls-alone one (≤ 1.2x)", ratio <= 1.2)
        )
    if "failover" in rows:
        errors = rows["failover"]["errors"]
        checks.append((f"failover: {errors} caller errors (none)", errors == 0))
    if checks:
        print()
    for text, passed in checks:
        print(f"{'PASS' if passed else 'MISS'}  {text}")
    return any(not passed for _, passed in checks)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every configuration, print the tables, stop every child."""
    settings = parse_args(argv)
    system = system_prompt(settings.system_tokens)
    scripts = make_scripts(
        settings.calls,
        settings.turns,
        system,
        settings.think,
        settings.jitter,
        settings.spread,
        settings.seed,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    failed = False
    load_before = os.getloadavg()[0]
    print(
        f"{len(settings.phases)} configurations of about "
        f"{settings.spread + settings.call_seconds:.0f} s each",
        file=sys.stderr,
    )
    try:
        results = []
        for name in settings.phases:
            print(f"running {name}", file=sys.stderr)
            results.append(uvloop.run(_run_phase(settings, PHASES[name], scripts, log_dir)))
        return report(settings, results, (load_before, os.getloadavg()[0]))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        failed = True
        return 130
    except RuntimeError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        failed = True
        return 2
    finally:
        if failed:
            print(f"child logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
