"""Smoke runs of the multi-turn call scenarios (prompt cache, fleet routing), tiny settings.

They check that each scenario runs end to end and prints its tables with a row for
every case and turn, never the figures in them: those belong to a quiet machine.
"""

from __future__ import annotations

from loadtest.bench.calls import make_scripts, system_prompt, with_caller_details
from loadtest.bench.fleet import COMPARISONS, PHASES

from .test_bench import run_module

# Short prompts and replies, fast simulated timings, callers that barely pause.
TINY = (
    "--system-tokens", "100", "--tokens", "5", "--ttft", "2", "--prefill", "0.01",
    "--itl", "1",
)  # fmt: skip


def table(output: str, first_cell: str) -> list[list[str]]:
    """The cells of the markdown rows of ``output`` whose first cell is ``first_cell``."""
    rows = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            rows.append(cells)
    return rows


def test_system_prompts_have_their_size_and_calls_are_replayable() -> None:
    prompt = system_prompt(1500)
    assert len(prompt) <= 6000
    assert len(prompt) > 5900
    assert prompt[:8] == system_prompt(1500, 1)[:8]
    assert prompt[8:20] != system_prompt(1500, 1)[8:20]
    scripts = make_scripts(30, 6, prompt, 3.0, 1.0, 3.0, seed=5)
    assert scripts == make_scripts(30, 6, prompt, 3.0, 1.0, 3.0, seed=5)
    assert len({script.users[0] for script in scripts}) == 30  # the logs are joined on it
    assert len({script.call_id for script in scripts}) == 30
    for script in scripts:
        assert len(script.users) == 6
        assert all(2.0 <= think <= 4.0 for think in script.thinks)
        assert 0.0 <= script.start <= 3.0
    personal = with_caller_details(scripts)
    assert len({script.system for script in personal}) == 30
    for script, own in zip(scripts, personal, strict=True):
        assert own.system.startswith(prompt)
        assert 200 < len(own.system) - len(prompt) < 300  # about 60 tokens
        assert own.users == script.users


def test_cache_scenario_prints_every_turn_of_every_case() -> None:
    result = run_module("loadtest.bench.cache", "--turns", "2", "--pause", "0", *TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for title in ("warm: the call alone", "same assistant:", "other assistant:"):
        assert title in out
    calls = [row[:2] for row in table(out, "A") + table(out, "B")]
    # A alone (2 turns), then A and B in each interleaved case (2 turns each).
    assert sorted(calls) == sorted([["A", "1"], ["A", "2"]] * 3 + [["B", "1"], ["B", "2"]] * 2)
    for row in table(out, "A") + table(out, "B"):
        assert len(row) == 9
        assert row[8] in ("similarity", "lru"), out  # the simulator logged the turn


def test_fleet_scenario_prints_every_run_and_its_targets() -> None:
    result = run_module(
        "loadtest.bench.fleet", "--backends", "2", "--parallel", "1", "--calls", "3",
        "--turns", "2", "--think", "0.2", "--think-jitter", "0", "--spread", "0.1",
        "--kill-after", "0.3", "--phases", "all", *TINY,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr
    out = result.stdout
    for name, phase in PHASES.items():
        rows = table(out, name)
        assert len(rows) == 2, out  # the summary and the per-turn TTFT
        summary, per_turn = rows
        assert len(summary) == 13
        assert len(per_turn) == 3  # the name, turn 1, turn 2
        if name != "failover":
            assert summary[3:5] == ["6", "0"], out  # 3 calls x 2 turns, no error
        # Only a server not told the system prompt leaves a slot without it.
        assert (summary[10] != "0 %") == (not phase.setup.primed), out
    assert "calls served per simulator, fewest-most: alone 1-1," in out
    assert "failover: simulator 2 of 2 killed" in out
    for pinned, _, _ in COMPARISONS:
        assert f"({pinned}) |" in out
    assert "caller errors when one Ollama of 2 dies" in out
