"""Child processes for the benchmark, the soak and the load test: simulator and server.

Each child writes its output to a log file, dies with its parent, and is always
stopped (SIGTERM, then SIGKILL) by :meth:`Child.stop` or :func:`simulator_and_server`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "ROOT",
    "Child",
    "free_port",
    "simulator_and_server",
    "start_server",
    "start_simulator",
    "start_simulators",
]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child before exec: its own session (Ctrl-C reaches the parent only,
    # which then stops the child), and SIGTERM if the parent dies without cleaning up.
    os.setsid()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Child:
    """A started child process with its log file."""

    def __init__(
        self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,  # safe: callers start no thread before this
        )
        self.pid = self.popen.pid
        self.url = ""

    def log_text(self) -> str:
        """Everything the child has written so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise (after closing the log) if the child has exited."""
        code = self.popen.poll()
        if code is not None:
            tail = "\n".join(self.log_text().splitlines()[-20:])
            self._log.close()
            raise RuntimeError(f"{self.name} exited with code {code}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; always reaps the child."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


def start_simulator(args: Sequence[str], log_dir: Path) -> Child:
    """Start the simulator with ``args`` and wait for its ``listening on`` line (30 s)."""
    return start_simulators(1, args, log_dir)[0]


def start_simulators(count: int, args: Sequence[str], log_dir: Path) -> list[Child]:
    """Start ``count`` simulators with ``args`` at once; wait for each ``listening on`` line.

    One simulator logs to ``fake_ollama.log``, several to ``fake_ollama-1.log``... Within
    30 s every one has printed its address, or all are stopped and RuntimeError raised.
    """
    argv = [sys.executable, "-m", "loadtest.fake_ollama", "--port", "0", *args]
    names = ["fake_ollama"] if count == 1 else [f"fake_ollama-{i}" for i in range(1, count + 1)]
    children: list[Child] = []
    try:
        for name in names:
            children.append(Child(name, argv, log_dir))
        deadline = time.monotonic() + 30
        waiting = list(children)
        while waiting and time.monotonic() < deadline:
            for child in waiting[:]:
                for line in child.log_text().splitlines():
                    if "listening on" in line:
                        child.url = line.split("listening on", 1)[1].strip()
                        waiting.remove(child)
                        break
                else:
                    child.check_alive()
            if waiting:
                time.sleep(0.05)
        if waiting:
            raise RuntimeError(f"{waiting[0].name} did not print its address within 30 s")
    except BaseException:
        for child in children:
            child.stop()
        raise
    return children


def start_server(sim_url: str, args: Sequence[str], log_dir: Path) -> Child:
    """Start the server on a free port and wait until ``/ping`` answers 200 (60 s).

    ``API_KEY`` is removed from its environment: give a key in ``args``.
    """
    port = free_port()
    argv = [
        sys.executable, "-m", "server", "--port", str(port), "--ollama-url", sim_url, *args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    child = Child("server", argv, log_dir, env)
    child.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        child.check_alive()
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{child.url}/ping", timeout=1) as reply,  # noqa: S310
        ):
            if reply.status == 200:
                return child
        time.sleep(0.1)
    child.stop()
    raise RuntimeError("the server did not answer /ping with 200 within 60 s")


@contextlib.contextmanager
def simulator_and_server(
    sim_args: Sequence[str], server_args: Sequence[str]
) -> Iterator[tuple[Child, Child]]:
    """The simulator and a server pointed at it, stopped on exit; logs in a temp folder."""
    with tempfile.TemporaryDirectory(prefix="voice-llm-") as folder:
        simulator = start_simulator(sim_args, Path(folder))
        try:
            server = start_server(simulator.url, server_args, Path(folder))
            try:
                yield simulator, server
            finally:
                server.stop()
        finally:
            simulator.stop()
