"""Shared fixtures: the Ollama simulator and the server, each started for real as a process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "llama3.1:8b"
API_KEY = "test-key-123"


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a URL and decode its JSON body (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def post_json(url: str, body: dict[str, Any], timeout: float = 5.0) -> Any:
    """POST a JSON body and decode the JSON answer."""
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.load(response)


@dataclass
class Process:
    """A started child process, the URL it serves, and the file that holds its logs."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: IO[bytes]
    final_output: bytes = b""

    def output(self) -> bytes:
        """Everything the process has logged so far (all of it, once stopped)."""
        if self.log.closed:
            return self.final_output
        self.log.flush()
        return Path(self.log.name).read_bytes()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self.log.closed:
            self.final_output = self.output()
            self.log.close()


class FakeOllama(Process):
    """The simulator, with helpers for its observation API."""

    def requests(self) -> list[dict[str, Any]]:
        """Every chat request the simulator has seen, oldest first."""
        result: list[dict[str, Any]] = get_json(f"{self.url}/_sim/requests")
        return result

    def stats(self) -> dict[str, Any]:
        """The simulator's counters."""
        result: dict[str, Any] = get_json(f"{self.url}/_sim/stats")
        return result

    def configure(self, **knobs: Any) -> None:
        """Change knobs live."""
        post_json(f"{self.url}/_sim/config", knobs)

    def last_chat(self) -> dict[str, Any]:
        """The newest ``/api/chat`` request that carried messages."""
        chats = [
            r for r in self.requests() if r["path"] == "/api/chat" and r["body"].get("messages")
        ]
        return chats[-1]


def start_fake(*args: str) -> FakeOllama:
    """Start the simulator on a free port and wait until it listens."""
    log = tempfile.NamedTemporaryFile(prefix="fake-ollama-", suffix=".log")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.fake_ollama", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        output = Path(log.name).read_text()
        log.close()
        raise RuntimeError(f"the simulator did not start: {line!r} {output}")
    url = line.split("listening on", 1)[1].strip()
    return FakeOllama(proc, url, int(url.rsplit(":", 1)[1]), log)


def start_server(ollama_url: str, *args: str, wait_warm: bool = True, **env: str) -> Process:
    """Start ``python -m server`` on a free port; by default wait until ``/ping`` says warm.

    With ``wait_warm=False``, return once it answers ``/ping`` at all.
    """
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log")  # noqa: SIM115
    environment = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "MODEL")}
    environment.update(env)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "--port",
            str(port),
            "--ollama-url",
            ollama_url,
            "--model",
            MODEL,
            *args,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=environment,
    )
    server = Process(proc, f"http://127.0.0.1:{port}", port, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"the server exited: {server.output().decode()}")
        try:
            with urllib.request.urlopen(f"{server.url}/ping", timeout=1) as response:  # noqa: S310
                if response.status == 200 or not wait_warm:
                    return server
        except urllib.error.HTTPError:  # a 503: listening, but no Ollama will take turns
            if not wait_warm:
                return server
        except OSError:
            pass  # not listening yet
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"the server did not become ready in 20 s: {server.output().decode()}")


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeOllama]:
    """A fast simulator shared by the session: 5 ms to first token, 2 ms between tokens.

    Its mid-stream errors leave the model loaded (``--no-crash-on-error``), so one
    test's ``[[error-after:N]]`` does not make the next one load it again.
    """
    process = start_fake(
        "--model", MODEL, "--ttft", "5", "--itl", "2", "--tokens", "12", "--load-ms", "20",
        "--parallel", "16", "--no-crash-on-error",
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="session")
def server(fake: FakeOllama) -> Iterator[Process]:
    """The server, without an API key, pointed at the shared simulator."""
    process = start_server(fake.url, "--max-concurrency", "8")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def keyed_server(fake: FakeOllama) -> Iterator[Process]:
    """The server with an API key."""
    process = start_server(fake.url, "--api-key", API_KEY, "--max-concurrency", "8")
    yield process
    process.stop()
