"""scripts/serve and scripts/venv run for real: the server's own settings, signals, no orphans."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest

from .conftest import ROOT, FakeOllama, free_port, get_json

SERVE = ROOT / "scripts" / "serve"


class Serve:
    """A running ``scripts/serve`` and its log."""

    def __init__(self, *args: str, **env: str) -> None:
        self.port = free_port()
        self.log: IO[bytes] = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log")  # noqa: SIM115
        environment = {
            k: v for k, v in os.environ.items() if k not in ("OLLAMA_HOST", "MODEL", "API_KEY")
        }
        environment.update(env)
        self.proc = subprocess.Popen(
            [str(SERVE), "--port", str(self.port), *args],
            cwd=tempfile.gettempdir(),  # the script finds the repository itself
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=environment,
        )

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def wait_warm(self) -> None:
        """Wait until the server it started answers ``/ping`` with 200."""
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1) as ping,
            ):
                if ping.status == 200:
                    return
            time.sleep(0.1)

    def descendants(self) -> list[psutil.Process]:
        children: list[psutil.Process] = psutil.Process(self.proc.pid).children(recursive=True)
        return children


@contextlib.contextmanager
def serve(*args: str, **env: str) -> Iterator[Serve]:
    """Run ``scripts/serve``; whatever is left of it afterwards is killed."""
    run = Serve(*args, **env)
    started: list[psutil.Process] = []
    try:
        yield run
    finally:
        with contextlib.suppress(psutil.Error):
            started = [psutil.Process(run.proc.pid), *run.descendants()]
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()
        run.proc.wait()
        run.log.close()


def command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_server_and_the_simulator_it_started(sig: signal.Signals) -> None:
    ollama_port = free_port()
    model = "qwen3:4b"  # not the default: the simulator must have the server's model
    with serve("--ollama-url", f"127.0.0.1:{ollama_port}", "--model", model) as run:
        run.wait_warm()  # so the simulator has the model the server preloads
        health = get_json(f"http://127.0.0.1:{run.port}/health")
        assert health["ollama"]["url"] == f"http://127.0.0.1:{ollama_port}"
        children = run.descendants()
        commands = [command(child) for child in children]
        assert any("loadtest.fake_ollama" in c and f"--port {ollama_port}" in c for c in commands)
        assert any("-m server" in c for c in commands)
        run.proc.send_signal(sig)
        assert run.proc.wait(timeout=30) == 0, run.output()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
        output = run.output()
    assert f"Starting the Ollama SIMULATOR on port {ollama_port} (model {model})" in output
    assert "scripts/venv: checking that .venv has everything in requirements.txt" in output


def test_a_live_ollama_is_used_as_is(fake: FakeOllama) -> None:
    with serve(OLLAMA_HOST=fake.url) as run:
        run.wait_warm()
        # No simulator: the script became the server.
        assert "-m server" in command(psutil.Process(run.proc.pid))
        assert run.descendants() == []
        run.proc.terminate()
        assert run.proc.wait(timeout=30) == 0, run.output()
        assert "SIMULATOR" not in run.output()


def test_bad_flags_start_nothing_and_say_why() -> None:
    with serve("--max-concurrency", "many") as run:
        assert run.proc.wait(timeout=60) == 2
        output = run.output()
    assert "python -m server: error: argument --max-concurrency: invalid int value: 'many'" in (
        output
    )
    assert "SIMULATOR" not in output


def test_shellcheck_passes() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    scripts = [str(path) for path in (ROOT / "scripts").iterdir()]
    done = subprocess.run(
        [str(shellcheck), *scripts], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
