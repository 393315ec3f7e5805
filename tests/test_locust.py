"""The locust load test, run headless for a few seconds against the server and the simulator.

This is CI's smoke run: it fails on any failed request and on any missing voice metric.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import API_KEY, MODEL, ROOT, FakeOllama, Process, start_fake, start_server

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
SYSTEM_TOKENS = 300
# Short think times, so that a few seconds hold many turns, calls and barge-ins.
QUICK_CALLS = ("--think-min", "0.1", "--think-max", "0.3", "--turns", "4", "--barge-in", "0.5")


@pytest.fixture(scope="module")
def sim() -> Iterator[FakeOllama]:
    """A simulator slow enough that a barge-in lands mid-reply: 20 ms, then 10 ms a token."""
    process = start_fake(
        "--model", MODEL, "--ttft", "20", "--itl", "10", "--tokens", "20", "--load-ms", "20",
        "--parallel", "16",
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def target(sim: FakeOllama) -> Iterator[Process]:
    """The server under load, with a key, as a deployment has."""
    process = start_server(sim.url, "--max-concurrency", "16", "--api-key", API_KEY)
    yield process
    process.stop()


def run_locust(
    host: str | None, prefix: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the locustfile headless in ``prefix``'s folder, writing ``<prefix>_*.csv``."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("API_KEY", "MODEL") and not name.startswith(("CALL_", "LOCUST_"))
    }
    environment.update(env or {})
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    if host is not None:
        command += ["--host", host]
    command += ["--csv", str(prefix), "--only-summary", *args]
    return subprocess.run(
        command,
        cwd=prefix.parent,  # no locust.conf or pyproject.toml of ours is read
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of one of locust's CSV files, by column name."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_smoke_run_reports_every_voice_metric_without_failures(
    target: Process, sim: FakeOllama, tmp_path: Path
) -> None:
    result = run_locust(
        target.url,
        tmp_path / "smoke",
        *("-u", "6", "-r", "6", "-t", "8s", *QUICK_CALLS),
        env={"API_KEY": API_KEY},  # the key from the environment, as the docs say
    )
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report

    stats = {(row["Type"], row["Name"]): row for row in read_csv(tmp_path / "smoke_stats.csv")}
    failed = {
        key: row["Failure Count"] for key, row in stats.items() if row["Failure Count"] != "0"
    }
    assert not failed, report
    assert read_csv(tmp_path / "smoke_failures.csv") == [], report
    assert read_csv(tmp_path / "smoke_exceptions.csv") == [], report
    for kind in ("SSE", "WS", "Retell"):
        for name in ("ttft", "itl", "turn"):
            assert int(stats[kind, name]["Request Count"]) > 0, (kind, name, report)
    for kind, name in (("WS", "connect"), ("WS", "barge-in"), ("Retell", "connect")):
        assert int(stats[kind, name]["Request Count"]) > 0, (kind, name, report)
    for name in ("barge-in", "ping"):
        assert int(stats["Retell", name]["Request Count"]) > 0, (name, report)
    # A reply is the simulator's 20 tokens, each one SSE chunk or WS delta.
    assert float(stats["SSE", "turn"]["Average Content Size"]) == 20
    # Gaps are measured token by token: read in batches, most of them would be 0 ms.
    assert 5 <= float(stats["SSE", "itl"]["Median Response Time"]) < 100

    # The calls reached the simulator as calls: a system prompt and a growing history
    # (Retell's transcripts without one: this server has no --system-prompt).
    chats = [r["body"]["messages"] for r in sim.requests() if (r["body"] or {}).get("messages")]
    prompted = [messages for messages in chats if messages[0]["role"] == "system"]
    system = prompted[-1][0]
    assert SYSTEM_TOKENS * 4 - 100 <= len(system["content"]) <= SYSTEM_TOKENS * 4
    assert max(len(messages) for messages in prompted) >= 6  # system, then 3 turns or more
    transcripts = [messages for messages in chats if messages[0]["role"] != "system"]
    assert max(len(messages) for messages in transcripts) >= 5  # 3 turns or more


def test_failed_turns_fail_the_run_with_their_reasons(target: Process, tmp_path: Path) -> None:
    result = run_locust(
        target.url,
        tmp_path / "bad-key",
        *("-u", "3", "-r", "3", "-t", "2s", *QUICK_CALLS, "--api-key", "not-the-key"),
    )
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 1, report
    errors = {
        (row["Method"], row["Name"]): row["Error"]
        for row in read_csv(tmp_path / "bad-key_failures.csv")
    }
    assert errors["SSE", "turn"].startswith("HTTP 401 invalid_api_key"), report
    for kind in ("WS", "Retell"):
        assert errors[kind, "connect"] == (
            "connect failed: InvalidStatus: server rejected WebSocket connection: HTTP 401"
        ), report
    stats = {(row["Type"], row["Name"]): row for row in read_csv(tmp_path / "bad-key_stats.csv")}
    assert ("SSE", "ttft") not in stats, report


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--barge-in", "1.5"), {}, "--barge-in (CALL_BARGE_IN) is 1.5: must be between 0 and 1"),
        (("--think-min", "5", "--think-max", "1"), {}, "--think-max (CALL_THINK_MAX) is 1: "
         "must not be below 5"),
        ((), {"CALL_TURNS": "0"}, "--turns (CALL_TURNS) is 0: must be above zero"),
        ((), {"CALL_TOKEN_TIMEOUT": "-1"}, "--token-timeout (CALL_TOKEN_TIMEOUT) is -1: "
         "must be above zero"),
    ],
)  # fmt: skip
def test_bad_options_stop_locust_with_a_clear_error(
    target: Process, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_locust(target.url, tmp_path / "bad", "-t", "2s", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert f"locustfile: error: {message}\n" in result.stderr


def test_a_missing_host_is_a_clear_error(tmp_path: Path) -> None:
    result = run_locust(None, tmp_path / "no-host", "-t", "2s")
    assert result.returncode == 2, result.stderr
    assert "locustfile: error: give the server's base URL with --host (or LOCUST_HOST)\n" in (
        result.stderr
    )
