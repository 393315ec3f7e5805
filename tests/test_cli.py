"""The command lines: python -m server, its subcommands, handler.py; help, version, errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib

import pytest

from .conftest import MODEL, ROOT, FakeOllama, free_port


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` from the repository, with ``env`` over a settings-free environment."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("API_KEY", "MODEL", "OLLAMA_HOST", "OLLAMA_NUM_PARALLEL", "LOG_FORMAT")
    }
    environment.update(env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_names_the_subcommands_and_says_what_the_defaults_will_be() -> None:
    done = run("-m", "server", "--help", OLLAMA_NUM_PARALLEL="4")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())  # as one line, whatever argparse's wrapping
    assert "python -m server preload " in text
    assert "python -m server vapi-assistant " in text
    assert "--version" in text
    assert "--log-format LOG_FORMAT json (one object per line) or text" in text
    assert "(MAX_CONCURRENCY, default 4, from OLLAMA_NUM_PARALLEL)" in text
    assert "a second port serving every route" in text
    unset = " ".join(run("-m", "server", "--help").stdout.split())
    assert "(MAX_CONCURRENCY, default 1, or OLLAMA_NUM_PARALLEL when set)" in unset


def test_version_is_the_projects() -> None:
    with (ROOT / "pyproject.toml").open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    for args in (("-m", "server"), ("-m", "server", "preload"), ("handler.py",)):
        done = run(*args, "--version")
        assert (done.returncode, done.stdout) == (0, f"voice-llm-server {version}\n")


def test_preload_has_its_own_help() -> None:
    done = run("-m", "server", "preload", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m server preload [options]\n")
    assert "--wait SECONDS" in done.stdout
    assert "--model MODEL" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "abc"], "python -m server: error: argument --port: invalid int value: 'abc'"),
        (["--nope"], "python -m server: error: unrecognized arguments: --nope"),
        (["prelaod"], "python -m server: error: unrecognized arguments: prelaod"),
        (
            ["preload", "--wait", "abc"],
            "python -m server preload: error: argument --wait: "
            "'abc' is not a number of seconds above zero",
        ),
        (
            ["preload", "--wait", "0"],
            "python -m server preload: error: argument --wait: "
            "'0' is not a number of seconds above zero",
        ),
        (
            ["preload", "--keep-alive", "soon"],
            "python -m server preload: error: keep-alive 'soon' is not 'forever', a number of "
            "seconds or a duration like '30m'",
        ),
    ],
)
def test_a_bad_flag_or_value_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = run("-m", "server", *args)
    assert done.returncode == 2
    assert done.stderr == message + "\n"


def test_preload_takes_wait_anywhere(fake: FakeOllama) -> None:
    done = run(
        "-m", "server", "preload", "--model", MODEL, "--wait", "10", "--ollama-url", fake.url
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"model {MODEL} is warm in Ollama at {fake.url}\n"


def test_preload_of_a_model_ollama_lacks_fails_at_once_saying_how_to_fix_it(
    fake: FakeOllama,
) -> None:
    # Well within its wait: a 404 is not retried.
    done = run("-m", "server", "preload", "--wait", "300", OLLAMA_HOST=fake.url, MODEL="nope:1b")
    assert done.returncode == 1
    assert done.stderr == (
        f"python -m server preload: model 'nope:1b' is not in Ollama at {fake.url}: "
        "run ollama pull nope:1b\n"
    )


def test_a_busy_port_names_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("-m", "server", "--port", str(port), "--ollama-url", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert done.stderr == (
        f"python -m server: error: cannot listen on 127.0.0.1:{port} (--port/PORT): "
        "Address already in use\n"
    )


def test_handler_help_answers_at_once_with_the_workers_settings() -> None:
    # Without --help the worker would wait WARM_TIMEOUT (300 s) for this dead Ollama.
    done = run("handler.py", "--help", OLLAMA_HOST=f"127.0.0.1:{free_port()}", WARM_TIMEOUT="300")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python handler.py [RunPod SDK flags]\n")
    settings = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert {"MODEL", "OLLAMA_HOST", "WARM_TIMEOUT", "STREAM_WINDOW", "LOG_FORMAT"} <= set(settings)
    assert not {"PORT", "API_KEY", "VAPI_SECRET"} & set(settings)  # the server's, not the worker's
