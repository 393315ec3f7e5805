"""Configuration from flags and environment, and its one-line startup errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.config import Config, ConfigError, parse_config

from .conftest import ROOT


def test_defaults() -> None:
    config = parse_config([], {})
    assert config == Config()
    assert config.keep_alive == -1
    assert config.load_options == {}
    assert config.loopback


def test_environment_and_flags_flags_win() -> None:
    env = {
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "OLLAMA_HOST": "10.0.0.5",
        "MODEL": "qwen2.5:7b",
        "API_KEY": "k",
        "KEEP_ALIVE": "30m",
        "NUM_CTX": "8192",
        "SYSTEM_PROMPT": "Be brief.",
    }
    config = parse_config([], env)
    assert config.host == "0.0.0.0"
    assert not config.loopback
    assert config.port == 9000
    assert config.ollama_url == "http://10.0.0.5:11434"
    # Read as Ollama reads OLLAMA_HOST: a scheme without a port is that scheme's port.
    assert parse_config([], {"OLLAMA_HOST": "http://10.0.0.5"}).ollama_url == "http://10.0.0.5:80"
    assert parse_config([], {"OLLAMA_HOST": " 10.0.0.5:1234 "}).ollama_url == (
        "http://10.0.0.5:1234"
    )
    assert config.model == "qwen2.5:7b"
    assert config.api_key == "k"
    assert config.keep_alive == "30m"
    assert config.load_options == {"num_ctx": 8192}
    assert config.system_prompt == "Be brief."
    config = parse_config(["--port", "9100", "--model", "llama3.2:3b", "--keep-alive", "600"], env)
    assert (config.port, config.model, config.keep_alive) == (9100, "llama3.2:3b", 600)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "70000"], {}, "port 70000"),
        ([], {"PORT": "http"}, "PORT=.http. is not a whole number"),
        (["--ollama-url", "https://x:1"], {}, "must look like http://host:port"),
        (["--ollama-url", "http://x:1/api"], {}, "must look like http://host:port"),
        (["--ollama-url", "http://x:port"], {}, "invalid port"),
        ([], {"OLLAMA_HOSTS": "x:1,http://me:secret@y:2"}, "^the Ollama URL for y holds a user"),
        (["--model", "two words"], {}, "model name"),
        (["--keep-alive", "soon"], {}, "keep-alive 'soon'"),
        (["--num-ctx", "0"], {}, "num-ctx 0"),
        (["--first-token-timeout", "0"], {}, "first-token-timeout"),
        (["--max-body-bytes", "10"], {}, "max-body-bytes 10"),
        (["--log-level", "loud"], {}, "log level 'loud'"),
        ([], {"LOG_CONTENT": "maybe"}, "LOG_CONTENT='maybe' is not true or false"),
    ],
)
def test_invalid_settings_name_the_setting(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(argv, env)


def test_an_ollama_url_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(["--ollama-url", "http://me:hunter2@10.0.0.5:11434/v1"], {})
    assert "hunter2" not in str(refused.value)


def test_log_content_takes_the_yes_no_words() -> None:
    assert parse_config([], {"LOG_CONTENT": "on"}).log_content is True
    assert parse_config([], {"LOG_CONTENT": "no"}).log_content is False


def test_invalid_configuration_fails_at_startup_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--keep-alive", "soon"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("python -m server: error: keep-alive 'soon'")
