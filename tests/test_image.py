"""The container image: its entrypoint run for real, its Dockerfile's defaults, the linters.

``docker/entrypoint.sh`` runs from the repository (``APP_DIR``, ``PYTHON``) with
``tests/stub_ollama/`` first on ``PATH``: the stub's ``ollama serve`` starts the Ollama
simulator on the port of ``OLLAMA_HOST``, so the preloads, the server and a chat request
all go through a real process tree, one simulator per Ollama; the stub's ``nvidia-smi``
lists ``STUB_GPUS`` made-up GPUs. No Docker engine is needed: the image itself is never
built here. hadolint and shellcheck run as CI runs them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from server.config import parse_config

from .conftest import MODEL, ROOT, free_port, get_json, post_json, start_fake
from .runpod_jobs import JobServer

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
STUB_DIR = ROOT / "tests" / "stub_ollama"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent  # the venv's bin: hadolint and shellcheck live there
NUM_CTX = 2048
OLLAMA_PORTS = 4  # free ports kept for the Ollamas of one run


@dataclass(frozen=True)
class StubCall:
    """One start of the stub ``ollama``, as its log line records it."""

    when: float  # epoch seconds
    pid: int  # the simulator's (the stub execs it)
    host: str  # OLLAMA_HOST
    gpus: str  # CUDA_VISIBLE_DEVICES, "-" when unset
    vulkan: str  # OLLAMA_VULKAN, "-" when unset
    args: str


@dataclass
class Entrypoint:
    """A running ``docker/entrypoint.sh`` (leader of its own process group) and its log.

    ``ollama_url`` is the first Ollama's (``OLLAMA_HOST``); Ollama ``i`` of several is on
    its port + ``i``.
    """

    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    ollama_url: str
    url: str
    stub_log: Path

    def ollama_at(self, index: int) -> str:
        """The URL of this container's Ollama ``index``."""
        base, port = self.ollama_url.rsplit(":", 1)
        return f"{base}:{int(port) + index}"

    def output(self) -> str:
        """Everything the entrypoint and its children have written so far."""
        self.log.flush()
        return Path(self.log.name).read_text()

    def lines(self) -> list[str]:
        """The output, one line each."""
        return self.output().splitlines()

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Poll ``ready`` until true; fail with the output if the entrypoint exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if self.proc.poll() is not None:
                code = self.proc.returncode
                pytest.fail(f"the entrypoint exited ({code}) before {what}:\n{self.output()}")
            time.sleep(0.05)
        pytest.fail(f"no {what} within {timeout} s:\n{self.output()}")

    def wait_warm(self) -> None:
        """Wait until the server answers ``/ping`` with 200."""
        self.wait_until(lambda: ping(self.url) == 200, "warm /ping")

    def exit_code(self, timeout: float = 30) -> int:
        """Wait for the entrypoint to exit and return its status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the entrypoint did not exit within {timeout} s:\n{self.output()}")

    def child(self, marker: str) -> psutil.Process:
        """The entrypoint's child process whose command line contains ``marker``."""
        found: list[psutil.Process] = []

        def present() -> bool:
            found[:] = [
                c for c in psutil.Process(self.proc.pid).children() if marker in command_line(c)
            ]
            return bool(found)

        self.wait_until(present, f"child process {marker!r}")
        return found[0]

    def stub_calls(self) -> list[StubCall]:
        """Each call of the stub ``ollama``, oldest first."""
        if not self.stub_log.exists():
            return []
        calls = []
        for line in self.stub_log.read_text().splitlines():
            when, pid, host, gpus, vulkan, args = line.split(" ", 5)
            calls.append(StubCall(float(when), int(pid), host, gpus, vulkan, args))
        return calls

    def serves_on(self, index: int) -> list[StubCall]:
        """The starts of this container's Ollama ``index``."""
        host = self.ollama_at(index).removeprefix("http://")
        return [call for call in self.stub_calls() if call.host == host]

    def stop(self) -> None:
        """Kill whatever is left of the process group and of the simulators; close the log.

        Each Ollama runs in a session of its own, out of the entrypoint's process group.
        """
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for call in self.stub_calls():
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(call.pid)
                if abs(process.create_time() - call.when) < 5:  # that process, not a reused pid
                    process.kill()
        self.log.close()


def command_line(process: psutil.Process) -> str:
    """The process's command line; empty once it has exited (short-lived probes do)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def ping(url: str) -> int | None:
    """The status of ``GET /ping``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:  # noqa: S310
            status: int = response.status
            return status
    except OSError:
        return None


def gone(process: psutil.Process, timeout: float = 10) -> bool:
    """Whether the process has exited (and was reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports that are free on loopback right now."""
    while True:
        first = free_port()
        if first + count <= 65536 and all(bindable(first + i) for i in range(1, count)):
            return first


def bindable(port: int) -> bool:
    """Whether ``port`` is free on loopback right now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_entrypoint(tmp: Path, *args: str, **env: str) -> Entrypoint:
    """Run the entrypoint from the repository, the stubs first on PATH.

    The server's port and OLLAMA_HOST's (with the three after it, for more Ollamas) are
    free loopback ports; ``env`` adds to or overrides the environment.
    """
    ollama_port, port = free_ports(OLLAMA_PORTS), free_port()
    while ollama_port <= port < ollama_port + OLLAMA_PORTS:
        port = free_port()
    stub_log = tmp / "stub-ollama.log"
    environment = {
        "PATH": f"{STUB_DIR}{os.pathsep}{os.environ['PATH']}",
        "APP_DIR": str(ROOT),
        "PYTHON": sys.executable,
        "OLLAMA_HOST": f"127.0.0.1:{ollama_port}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MODEL": MODEL,
        "OLLAMA_NUM_PARALLEL": "2",
        "STUB_OLLAMA_LOG": str(stub_log),
        **env,
    }
    log = tempfile.NamedTemporaryFile(prefix="entrypoint-", suffix=".log", dir=tmp)  # noqa: SIM115
    proc = subprocess.Popen(
        [str(ENTRYPOINT), *args],
        cwd=tmp,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Entrypoint(
        proc, log, f"http://127.0.0.1:{ollama_port}", f"http://127.0.0.1:{port}", stub_log
    )


@contextlib.contextmanager
def entrypoint(tmp: Path, *args: str, **env: str) -> Iterator[Entrypoint]:
    """:func:`start_entrypoint`, stopped (and its process group killed) on the way out."""
    run = start_entrypoint(tmp, *args, **env)
    try:
        yield run
    finally:
        run.stop()


def chat(url: str, content: str) -> list[dict[str, Any]]:
    """Stream one chat turn through the server; the decoded chunks, ``[DONE]`` checked."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        events = [
            line.removeprefix("data: ")
            for line in response.read().decode().splitlines()
            if line.startswith("data: ")
        ]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def sim_requests(url: str) -> list[dict[str, Any]]:
    """The request log of the simulator at ``url``; empty while nothing listens there."""
    try:
        records: list[dict[str, Any]] = get_json(f"{url}/_sim/requests")
    except OSError:
        return []
    return records


def text_of(chunks: list[dict[str, Any]]) -> str:
    """The streamed reply's text."""
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def index_of(lines: list[str], text: str) -> int:
    """The index of the first line containing ``text``."""
    return next(i for i, line in enumerate(lines) if text in line)


# ---------------------------------------------------------------------------
# Server mode: one run shared by the tests that only look at it


@pytest.fixture(scope="module")
def server_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Entrypoint]:
    """The entrypoint in server mode on two GPUs, its one Ollama answering after a second."""
    tmp = tmp_path_factory.mktemp("server-mode")
    with entrypoint(tmp, STUB_OLLAMA_DELAY="1", NUM_CTX=str(NUM_CTX), STUB_GPUS="2") as run:
        run.wait_warm()
        yield run


def test_waits_for_ollama_then_preloads_then_serves(server_run: Entrypoint) -> None:
    lines = server_run.lines()
    steps = [
        "entrypoint: MODE=server: starting ollama serve",
        "entrypoint: Ollama answers after",
        f"model {MODEL} is warm in Ollama at {server_run.ollama_url}",  # the preload's own line
        f"entrypoint: model {MODEL} is warm",
        "entrypoint: starting python -m server",
        "Application startup complete",  # the server's
    ]
    positions = [index_of(lines, step) for step in steps]
    assert positions == sorted(positions), server_run.output()
    waited = re.search(r"Ollama answers after (\d+) ms", server_run.output())
    assert waited is not None
    assert int(waited.group(1)) >= 1000  # the stub listens only after STUB_OLLAMA_DELAY=1
    (call,) = server_run.stub_calls()
    assert (call.args, call.gpus, call.vulkan) == ("serve", "-", "-")  # it sees every GPU
    assert (
        "entrypoint: nvidia-smi lists 2 GPUs and one Ollama sees them all (OLLAMA_GPUS=1); "
        "for a model that fits one GPU, OLLAMA_GPUS=auto runs one Ollama per GPU"
    ) in lines


def test_preload_uses_the_servers_load_options(server_run: Entrypoint) -> None:
    records = get_json(f"{server_run.ollama_url}/_sim/requests")
    preload = records[0]
    assert preload["path"] == "/api/chat"
    assert preload["body"]["messages"] == []
    assert preload["body"]["model"] == MODEL
    assert preload["body"]["keep_alive"] == -1
    assert preload["body"]["think"] is False
    assert preload["body"]["options"] == {"num_ctx": NUM_CTX}
    assert preload["outcome"] == "done"
    (call,) = server_run.stub_calls()
    assert preload["received_at"] > call.when


def test_server_mode_answers_ping_and_chat(server_run: Entrypoint) -> None:
    assert ping(server_run.url) == 200
    chunks = chat(server_run.url, "Say hello.")
    assert text_of(chunks).startswith("Sure, here is a short simulated reply")
    records = get_json(f"{server_run.ollama_url}/_sim/requests")
    turn = next(r for r in records if r["body"].get("messages"))
    assert turn["body"]["options"]["num_ctx"] == NUM_CTX
    stats = get_json(f"{server_run.ollama_url}/_sim/stats")
    assert (stats["loads"], stats["reloads"]) == (1, 0)  # warmed once, never reloaded


# ---------------------------------------------------------------------------
# Several Ollamas: one per GPU, Ollamas elsewhere, Ollama alone


@pytest.mark.parametrize(
    ("setting", "env", "gpus"),
    [
        (
            "auto",
            {"STUB_GPUS": "2"},
            [f"GPU-{0x5EED0000 + i:08x}-0000-4000-8000-{i:012x}" for i in (0, 1)],
        ),
        ("2", {}, ["0", "1"]),  # no GPU listed: CUDA's own numbering
    ],
    ids=["auto", "two-without-nvidia-smi"],
)
def test_one_ollama_per_gpu_each_warmed_all_given_to_the_server(
    tmp_path: Path, setting: str, env: dict[str, str], gpus: list[str]
) -> None:
    with entrypoint(tmp_path, OLLAMA_GPUS=setting, NUM_CTX=str(NUM_CTX), **env) as run:
        run.wait_warm()
        urls = [run.ollama_at(i) for i in (0, 1)]
        calls = [run.serves_on(i) for i in (0, 1)]
        assert [[(c.args, c.gpus, c.vulkan) for c in on] for on in calls] == [
            [("serve", gpu, "0")]
            for gpu in gpus  # one GPU each, through CUDA only
        ]
        assert len(run.stub_calls()) == 2
        assert (
            f"entrypoint: MODE=server: starting 2 ollama serve, one per GPU (model {MODEL}): "
            f"{urls[0]} on GPU {gpus[0]}, {urls[1]} on GPU {gpus[1]}"
        ) in run.lines()
        for url in urls:
            assert f"model {MODEL} is warm in Ollama at {url}" in run.lines()  # its preload
            preload = get_json(f"{url}/_sim/requests")[0]
            assert (preload["body"]["messages"], preload["body"]["options"]) == (
                [],
                {"num_ctx": NUM_CTX},
            )
        assert index_of(run.lines(), "entrypoint: 2 Ollamas answer after") < index_of(
            run.lines(), "entrypoint: starting python -m server"
        )

        health = get_json(f"{run.url}/health")
        assert health["status"] == "ok"
        assert [(b["url"], b["warm"], b["slots"]) for b in health["backends"]] == [
            (url, True, 2)
            for url in urls  # MAX_CONCURRENCY follows OLLAMA_NUM_PARALLEL
        ]
        for n in range(4):  # new calls spread over both
            assert text_of(chat(run.url, f"Hello {n}")).startswith("Sure")
        for url in urls:
            assert any(r["body"].get("messages") for r in get_json(f"{url}/_sim/requests"))

        simulators = [psutil.Process(on[0].pid) for on in calls]
        run.proc.send_signal(signal.SIGTERM)
        assert run.exit_code() == 0, run.output()
        assert all(gone(simulator) for simulator in simulators)
        assert "entrypoint: stopped cleanly" in run.output()


def test_a_stuck_ollama_is_restarted_alone_and_warmed_again(tmp_path: Path) -> None:
    settings = {"OLLAMA_GPUS": "2", "FIRST_TOKEN_TIMEOUT": "1", "HEALTH_INTERVAL": "1"}
    with entrypoint(tmp_path, **settings) as run:
        run.wait_warm()
        (first,), (second,) = run.serves_on(0), run.serves_on(1)
        healthy, stuck = psutil.Process(first.pid), psutil.Process(second.pid)
        stuck_url = run.ollama_at(1)

        def make_stuck_until_restarted(starts: int) -> None:
            """Silence the second Ollama, as a leaked slot does, and talk until it restarts.

            Two turns that time out there while nothing streams make the server report it;
            no error reaches the caller, since a silent Ollama's turns fail over.
            """
            post_json(f"{stuck_url}/_sim/config", {"ttft": 600_000})
            deadline = time.monotonic() + 30
            turn = 0
            while len(run.serves_on(1)) < starts:
                assert time.monotonic() < deadline, run.output()
                assert text_of(chat(run.url, f"Hello {starts} {turn}")).startswith("Sure")
                turn += 1

        def both_warm() -> bool:
            health = get_json(f"{run.url}/health")
            return health["status"] == "ok" and all(
                b["warm"] and b["stuck"] is None for b in health["backends"]
            )

        make_stuck_until_restarted(2)
        assert (
            f"entrypoint: the server reports ollama serve at {stuck_url} (GPU 1) stuck; "
            "restarting it"
        ) in run.lines()
        assert gone(stuck)
        assert run.serves_on(0) == [first]  # the other one is left alone
        assert healthy.is_running()
        run.wait_until(both_warm, "the restarted Ollama warm again")
        assert sim_requests(stuck_url)[0]["body"]["messages"] == []  # the server warmed it
        assert len(run.serves_on(1)) == 2  # once: the old report was not taken for new

        # Once warm again, the new process is watched like the old one.
        make_stuck_until_restarted(3)
        run.wait_until(both_warm, "the Ollama restarted twice warm again")
        assert run.serves_on(0) == [first]


def test_mode_ollama_runs_the_ollamas_alone(tmp_path: Path) -> None:
    with entrypoint(tmp_path, MODE="ollama", OLLAMA_GPUS="2") as run:
        run.wait_until(lambda: "entrypoint: 2 Ollamas answer after" in run.output(), "Ollamas")
        assert (
            "entrypoint: warning: MODE=ollama with Ollama on loopback (OLLAMA_HOST="
            f"{run.ollama_url.removeprefix('http://')}): nothing outside this container can reach "
            "it; set OLLAMA_HOST=0.0.0.0:11434"
        ) in run.lines()
        assert f"the server in front warms {MODEL}" in run.output()
        for i in (0, 1):
            assert get_json(f"{run.ollama_at(i)}/_sim/requests") == []  # no preload here
        assert ping(run.url) is None  # and no server
        simulators = [psutil.Process(run.serves_on(i)[0].pid) for i in (0, 1)]
        run.proc.send_signal(signal.SIGTERM)
        assert run.exit_code() == 0, run.output()
        assert all(gone(simulator) for simulator in simulators)
        assert "entrypoint: stopped cleanly" in run.output()


def test_no_ollama_here_serves_from_the_ollamas_of_ollama_hosts(tmp_path: Path) -> None:
    elsewhere = start_fake("--model", MODEL, "--ttft", "5", "--itl", "5", "--load-ms", "20")
    try:
        with entrypoint(tmp_path, OLLAMA_GPUS="0", OLLAMA_HOSTS=elsewhere.url) as run:
            run.wait_warm()
            assert run.stub_calls() == []
            assert (
                f"entrypoint: MODE=server: no Ollama in this container (OLLAMA_GPUS=0); the server "
                f"warms {MODEL} in the Ollamas of OLLAMA_HOSTS: {elsewhere.url}"
            ) in run.lines()
            assert text_of(chat(run.url, "Hello")).startswith("Sure")
            health = get_json(f"{run.url}/health")
            assert [b["url"] for b in health["backends"]] == [elsewhere.url]
    finally:
        elsewhere.stop()


def test_local_ollamas_come_first_then_those_of_ollama_hosts(tmp_path: Path) -> None:
    elsewhere = start_fake("--model", MODEL, "--ttft", "5", "--itl", "5", "--load-ms", "20")
    try:
        settings = {"OLLAMA_HOSTS": elsewhere.url, "MAX_CONCURRENCY": "1"}
        with entrypoint(tmp_path, **settings) as run:
            run.wait_warm()
            health = get_json(f"{run.url}/health")
            assert [(b["url"], b["slots"]) for b in health["backends"]] == [
                (run.ollama_url, 1),
                (elsewhere.url, 1),
            ]
            assert (
                "entrypoint: warning: the server's MAX_CONCURRENCY=1 turns per Ollama differs "
                "from each Ollama's OLLAMA_NUM_PARALLEL=2 slots here; set them equal"
            ) in run.lines()
            # Only this container's Ollama gets a preload; the server warms the other itself.
            assert f"model {MODEL} is warm in Ollama at {run.ollama_url}" in run.lines()
            assert f"model {MODEL} is warm in Ollama at {elsewhere.url}" not in run.lines()
    finally:
        elsewhere.stop()


# ---------------------------------------------------------------------------
# Serverless mode


def test_serverless_mode_runs_the_handler_on_the_warm_model(tmp_path: Path) -> None:
    jobs = JobServer()  # RunPod's job queue, on loopback
    settings = {
        **jobs.env(),
        # The SDK's start-up checks probe the GPU and connect to 8.8.8.8: not in tests.
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_SKIP_GPU_CHECK": "true",
        "HOME": str(tmp_path),
    }
    try:
        with entrypoint(tmp_path, MODE="serverless", NUM_CTX=str(NUM_CTX), **settings) as run:
            handler = run.child("handler.py")
            ollama = run.child("loadtest.fake_ollama")
            jobs.wait_polled()
            result = jobs.result(jobs.submit({"prompt": "Hello [[tokens:4]]"})).body
            assert text_of(result["output"]) == "Sure, here is"
            lines = run.lines()
            warm = index_of(lines, f"model {MODEL} is warm in Ollama at {run.ollama_url}")
            assert warm < index_of(lines, "entrypoint: starting python handler.py")
            assert ping(run.url) is None  # no HTTP server of ours in this mode
            stats = get_json(f"{run.ollama_url}/_sim/stats")
            assert (stats["loads"], stats["reloads"]) == (1, 0)  # the preload's load served it

            run.proc.send_signal(signal.SIGTERM)
            assert run.exit_code() == 0, run.output()
            assert gone(handler)
            assert gone(ollama)
            assert "entrypoint: stopped cleanly" in run.output()
    finally:
        jobs.close()


# ---------------------------------------------------------------------------
# Stopping: SIGTERM drains; a dying Ollama is started again, a dying server ends it all


def test_sigterm_drains_the_stream_then_stops_ollama(tmp_path: Path) -> None:
    with entrypoint(tmp_path) as run:
        run.wait_warm()
        server = run.child("-m server")
        ollama = run.child("loadtest.fake_ollama")
        port = int(run.url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = {
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": "[[tokens:30]] [[itl:60]] Count."}],
        }
        connection.request("POST", "/v1/chat/completions", json.dumps(body))
        response = connection.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"data: ")  # the first token is out

        run.proc.send_signal(signal.SIGTERM)  # about 1.7 s of the reply still to come
        rest = response.read().decode()
        connection.close()

        events = [line.removeprefix("data: ") for line in rest.splitlines() if line]
        assert events.pop() == "[DONE]"
        tokens = [c for c in map(json.loads, events) if c["choices"][0]["delta"].get("content")]
        assert len(tokens) == 30  # every token arrived: Ollama outlived the drain
        assert run.exit_code() == 0, run.output()
        assert gone(server)
        assert gone(ollama)
        lines = run.lines()
        stopping = index_of(lines, "entrypoint: SIGTERM received: stopping python -m server")
        assert stopping < index_of(lines, "entrypoint: stopped cleanly")


def test_a_dying_ollama_is_started_again_until_its_restarts_run_out(tmp_path: Path) -> None:
    with entrypoint(tmp_path, OLLAMA_RESTARTS="1", WARM_CHECK_INTERVAL="0.5") as run:
        run.wait_warm()
        server = run.child("-m server")
        psutil.Process(run.serves_on(0)[0].pid).kill()  # SIGKILL: status 137
        run.wait_until(lambda: len(run.serves_on(0)) == 2, "a second ollama serve")
        assert (
            f"entrypoint: ollama serve at {run.ollama_url} exited with status 137; starting it "
            "again (restart 1 of OLLAMA_RESTARTS=1)"
        ) in run.lines()
        restarted = run.serves_on(0)[1]

        def warm_again() -> bool:  # the server has loaded the model in the new Ollama
            return any(r["body"]["messages"] == [] for r in sim_requests(run.ollama_url))

        run.wait_until(warm_again, "the server's preload of the new Ollama")
        run.wait_warm()
        assert text_of(chat(run.url, "Hello")).startswith("Sure")  # the same server serves
        assert server.is_running()

        psutil.Process(restarted.pid).kill()
        assert run.exit_code() == 1, run.output()
        assert (
            f"entrypoint: error: ollama serve at {run.ollama_url} exited with status 137, after "
            "1 restart (OLLAMA_RESTARTS=1); stopping"
        ) in run.lines()
        assert gone(server)


@pytest.mark.parametrize(
    ("dies", "survivor", "code", "message"),
    [
        ("loadtest.fake_ollama", "-m server", 1, "exited with status 137 (OLLAMA_RESTARTS=0)"),
        ("-m server", "loadtest.fake_ollama", 137, "python -m server exited with status 137"),
    ],
    ids=["ollama-dies", "server-dies"],
)
def test_a_dying_child_stops_the_container(
    tmp_path: Path, dies: str, survivor: str, code: int, message: str
) -> None:
    with entrypoint(tmp_path, OLLAMA_RESTARTS="0") as run:
        run.wait_warm()
        victim, other = run.child(dies), run.child(survivor)
        victim.kill()  # SIGKILL: status 137
        assert run.exit_code() == code, run.output()
        assert message in run.output()
        assert gone(other)


# ---------------------------------------------------------------------------
# Startup failures


def test_ollama_exiting_at_start_fails_the_container(tmp_path: Path) -> None:
    with entrypoint(tmp_path, STUB_OLLAMA_BEHAVIOUR="exit") as run:
        code = run.exit_code()
        output = run.output()
        assert code == 1, output
        assert (
            f"entrypoint: error: ollama serve at {run.ollama_url} exited with status 1 before "
            "answering"
        ) in output
        assert "starting python" not in output


def test_ollama_never_answering_fails_the_container_in_time(tmp_path: Path) -> None:
    with entrypoint(tmp_path, STUB_OLLAMA_BEHAVIOUR="hang", OLLAMA_START_TIMEOUT="2") as run:
        stub = run.child("socket")  # accepts connections, never answers
        code = run.exit_code()
        output = run.output()
        assert code == 1, output
        assert (
            f"entrypoint: error: Ollama did not answer at {run.ollama_url} within 2 s "
            "(OLLAMA_START_TIMEOUT)"
        ) in output
        assert "starting python" not in output
        assert gone(stub)


def test_a_preload_that_fails_fails_the_container(tmp_path: Path) -> None:
    with entrypoint(tmp_path, STUB_OLLAMA_MODEL="other:1b", PRELOAD_TIMEOUT="2") as run:
        ollama = run.child("loadtest.fake_ollama")
        code = run.exit_code()
        output = run.output()
        assert code == 1, output
        assert (
            f"python -m server preload: model '{MODEL}' is not in Ollama at {run.ollama_url}: "
            f"run ollama pull {MODEL}"
        ) in output
        assert (
            f"model {MODEL} is not warm in Ollama at {run.ollama_url}: the preload says why "
            "above (it waits up to PRELOAD_TIMEOUT=2 s)"
        ) in output
        assert "starting python -m server" not in output
        assert gone(ollama)


def test_a_failed_preload_still_starts_the_serverless_worker(tmp_path: Path) -> None:
    env = {"MODE": "serverless", "STUB_OLLAMA_MODEL": "other:1b", "PRELOAD_TIMEOUT": "2"}
    with entrypoint(tmp_path, **env, WARM_TIMEOUT="1") as run:
        deadline = time.monotonic() + 30
        while "starting python handler.py" not in run.output():
            assert run.proc.poll() is None, run.output()
            assert time.monotonic() < deadline, run.output()
            time.sleep(0.1)
        assert (
            f"model {MODEL} is not warm in Ollama at {run.ollama_url} (the preload says why "
            "above); starting the worker anyway"
        ) in run.output()
        time.sleep(1.5)
        assert run.proc.poll() is None, run.output()  # serving, not crash-looping


def test_sigterm_while_waiting_for_ollama_stops_cleanly(tmp_path: Path) -> None:
    with entrypoint(tmp_path, STUB_OLLAMA_BEHAVIOUR="hang") as run:
        stub = run.child("socket")
        run.proc.send_signal(signal.SIGTERM)
        assert run.exit_code(timeout=10) == 0, run.output()
        assert gone(stub)
        assert "starting python" not in run.output()


def test_several_ollamas_per_gpu_each_on_its_own_port(tmp_path: Path) -> None:
    with entrypoint(tmp_path, OLLAMA_PER_GPU="3", OLLAMA_NUM_PARALLEL="1") as run:
        run.wait_warm()
        urls = [run.ollama_at(i) for i in range(3)]
        assert [[(c.args, c.gpus) for c in run.serves_on(i)] for i in range(3)] == [
            [("serve", "-")]  # one GPU on the pod, seen by each (no CUDA_VISIBLE_DEVICES)
        ] * 3
        assert (
            f"entrypoint: MODE=server: starting 3 ollama serve, 3 per GPU (model {MODEL}): "
            + ", ".join(urls)
        ) in run.lines()
        health = get_json(f"{run.url}/health")
        assert [(b["url"], b["warm"], b["slots"]) for b in health["backends"]] == [
            (url, True, 1) for url in urls
        ]
        run.proc.send_signal(signal.SIGTERM)
        assert run.exit_code() == 0, run.output()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"MODE": "pod"}, "MODE=pod is not 'server', 'serverless' or 'ollama'"),
        ((), {"OLLAMA_PER_GPU": "0"}, "OLLAMA_PER_GPU=0 is not a whole number of Ollamas"),
        (("--port", "9000"), {}, "no arguments are taken (got: --port 9000)"),
        ((), {"OLLAMA_START_TIMEOUT": "0"}, "OLLAMA_START_TIMEOUT=0 is not a whole number"),
        ((), {"PRELOAD_TIMEOUT": "soon"}, "PRELOAD_TIMEOUT=soon is not a whole number"),
        ((), {"HEALTH_INTERVAL": "0.5"}, "HEALTH_INTERVAL=0.5 is not a whole number"),
        ((), {"OLLAMA_RESTARTS": "-1"}, "OLLAMA_RESTARTS=-1 is not a whole number"),
        ((), {"OLLAMA_GPUS": "all"}, "OLLAMA_GPUS=all is not 'auto' or a whole number"),
        ((), {"OLLAMA_GPUS": "3", "STUB_GPUS": "2"}, "OLLAMA_GPUS=3, but nvidia-smi lists 2 GPUs"),
        (
            (),
            {"OLLAMA_GPUS": "0"},
            "invalid settings: OLLAMA_GPUS=0 starts no Ollama here: list the Ollamas to use in "
            "OLLAMA_HOSTS",
        ),
        ((), {"MODE": "ollama", "OLLAMA_GPUS": "0"}, "MODE=ollama with OLLAMA_GPUS=0 would run"),
        (
            (),
            {"OLLAMA_GPUS": "2", "OLLAMA_HOST": "127.0.0.1:40000", "PORT": "40001"},
            "invalid settings: the server would listen on the port of the Ollama at "
            "http://127.0.0.1:40001",
        ),
        ((), {"PORT": "eighty"}, "invalid settings: PORT='eighty' is not a whole number"),
        ((), {"PYTHON": "/nonexistent/python"}, "PYTHON=/nonexistent/python is not an executable"),
    ],
    ids=[
        "mode",
        "per-gpu",
        "arguments",
        "start-timeout",
        "preload-timeout",
        "health-interval",
        "restarts",
        "gpus",
        "more-gpus-than-listed",
        "no-ollama-anywhere",
        "ollama-mode-without-ollama",
        "server-port-taken",
        "server-setting",
        "python",
    ],
)
def test_bad_settings_exit_2_before_starting_ollama(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    with entrypoint(tmp_path, *args, **env) as run:
        code = run.exit_code()
        output = run.output()
        assert code == 2, output
        assert f"entrypoint: error: {message}" in output
        assert run.stub_calls() == []  # Ollama was never started


# ---------------------------------------------------------------------------
# The Dockerfile's defaults and the linters


def dockerfile_final_stage() -> tuple[dict[str, str], dict[str, str], list[str]]:
    """The Dockerfile's global ARG defaults, its final stage's ENV and all FROM images."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    images: list[str] = []
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "FROM":
            images.append(rest.split()[0])
            env = {}
        elif instruction == "ARG" and "=" in rest and not images:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instruction == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), value)
    return args, env, [re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], i) for i in images]


def test_the_image_defaults_configure_a_warm_single_model_server() -> None:
    args, env, images = dockerfile_final_stage()
    assert images == [f"ollama/ollama:{args['OLLAMA_VERSION']}"] * 3
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["OLLAMA_VERSION"])  # pinned, never latest
    assert env["MODEL"] == args["MODEL"] == MODEL
    models = Path(env["OLLAMA_MODELS"])
    assert models.is_absolute()
    for volume in ("/runpod-volume", "/workspace"):  # where RunPod mounts network volumes
        assert not models.is_relative_to(volume)
    assert (env["OLLAMA_KEEP_ALIVE"], env["OLLAMA_NO_CLOUD"]) == ("-1", "1")
    assert "OLLAMA_FLASH_ATTENTION" not in env  # Ollama 0.32 turns it on where supported
    assert (env["MODE"], env["OLLAMA_GPUS"], env["APP_DIR"], env["PYTHON"]) == (
        "server",
        "1",  # one Ollama, every GPU, as before OLLAMA_GPUS existed
        "/app",
        "/opt/venv/bin/python",
    )

    config = parse_config([], env=env)
    assert (config.host, config.port, config.model) == ("0.0.0.0", 80, MODEL)
    assert config.keep_alive == -1
    # A fixed context: Ollama 0.32's own default grows with the GPU's memory.
    assert config.load_options == {"num_ctx": 8192}
    assert config.max_concurrency == int(env["OLLAMA_NUM_PARALLEL"]) == 4
    assert config.ollama_url == "http://127.0.0.1:11434"  # Ollama stays on loopback
    # A deployment that changes OLLAMA_NUM_PARALLEL moves the server's admission with it.
    assert parse_config([], env={**env, "OLLAMA_NUM_PARALLEL": "8"}).max_concurrency == 8


def run_linter(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a linter from the venv's bin from the repository root."""
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_passes_at_warning_level() -> None:
    result = run_linter("hadolint", "--no-color", "--failure-threshold", "warning", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_dockerfile_with_warnings() -> None:
    bad = "FROM ollama/ollama:latest\nRUN apt-get update && apt-get install -y python3\n"
    result = run_linter("hadolint", "--no-color", "--failure-threshold", "warning", "-", stdin=bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3009", "DL3015"):
        assert rule in result.stdout


def test_shellcheck_passes() -> None:
    scripts = ["docker/entrypoint.sh", "tests/stub_ollama/ollama", "tests/stub_ollama/nvidia-smi"]
    result = run_linter("shellcheck", *scripts)
    assert result.returncode == 0, result.stdout + result.stderr
