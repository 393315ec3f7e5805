"""Smoke runs of the benchmark and the idle-websocket memory probe, with tiny settings.

They check that the tools run end to end and report every target without failed
streams, never the timing targets: those belong to a quiet machine, not to CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadtest.bench import parse_args
from loadtest.bench.settings import server_args
from loadtest.bench.targets import SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parent.parent
TARGET_NAMES = ("direct", "sse", "ws", "retell")
# A short answer, a few streams per client: the whole run takes a few seconds.
TINY = ("--streams", "2", "--warmup-streams", "1", "--tokens", "5", "--ttft", "5", "--itl", "2")


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` from the repository root, output captured."""
    environment = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def table_rows(output: str) -> dict[tuple[int, str], list[str]]:
    """The rows of the printed per-run table, by (concurrency, target)."""
    rows = {}
    for line in output.splitlines():
        cells = line.split()
        if len(cells) > 4 and cells[0].isdigit() and cells[1].split("#")[0] in TARGET_NAMES:
            rows[int(cells[0]), cells[1]] = cells
    return rows


def test_defaults_keep_the_plain_run_and_add_the_websocket_targets() -> None:
    plain = parse_args([])
    assert plain.levels == (1, 50, 200)
    assert plain.targets == ("direct", "sse", "ws", "retell")
    # Retell's transcript has no system message: the server adds the conversation's.
    assert server_args(plain)[-2:] == ["--system-prompt", SYSTEM_PROMPT]
    assert "--system-prompt" not in server_args(parse_args(["--targets", "direct,sse,ws"]))
    assert plain.markdown_path is None
    assert plain.plot_path is None
    scaling = parse_args(["--scaling"])
    assert scaling.levels == (1, 10, 50, 200, 500)
    assert scaling.markdown_path == Path("bench-results/scaling.md")
    assert scaling.plot_path == Path("bench-results/scaling.png")
    chosen = parse_args(["--scaling", "--levels", "2,4", "--markdown", "x.md"])
    assert chosen.levels == (2, 4)
    assert chosen.markdown_path == Path("x.md")


def test_scaling_run_reports_every_target_and_writes_markdown_and_plot(tmp_path: Path) -> None:
    markdown = tmp_path / "scaling.md"
    plot = tmp_path / "scaling.png"
    result = run_module(
        "loadtest.bench", "--scaling", "--levels", "1,3", *TINY,
        "--markdown", str(markdown), "--plot", str(plot),
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr
    rows = table_rows(result.stdout)
    expected = {(level, name) for level in (1, 3) for name in (*TARGET_NAMES, "direct#2")}
    assert set(rows) == expected, result.stdout
    for (level, _), cells in rows.items():
        assert int(cells[2]) == 2 * level  # measured streams: 2 per client
        assert cells[3] == "0", result.stdout  # no failed stream
    assert "failed streams" not in result.stdout
    assert "ws vs direct at 3 streams:" in result.stdout
    assert "retell vs direct at 3 streams:" in result.stdout
    text = markdown.read_text()
    assert "| 3 | ws | 6 | 0 |" in text
    assert "| 3 | sse |" in text
    assert "| 3 | retell | 6 | 0 |" in text
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_idle_websockets_are_opened_and_measured() -> None:
    result = run_module("loadtest.idle_ws", "--connections", "30", "--settle", "0")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "30 idle websockets (each streamed one turn first)" in result.stdout
    assert "RSS per idle websocket:" in result.stdout
