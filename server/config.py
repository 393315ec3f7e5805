"""Configuration: one typed object, built once at startup from flags and environment.

Every setting has a command-line flag and an environment variable; the flag wins.
No other module reads the environment: they receive a :class:`Config`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Config", "ConfigError", "parse_config"]


class ConfigError(ValueError):
    """Invalid configuration; the message is one line that names the setting."""


_DURATION = re.compile(r"^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one server process (or one RunPod worker)."""

    host: str = "127.0.0.1"
    port: int = 8000
    health_port: int | None = None
    ollama_url: str = "http://127.0.0.1:11434"
    model: str = "llama3.1:8b"
    api_key: str | None = None
    keep_alive: str | int = -1
    num_ctx: int | None = None
    system_prompt: str | None = None
    max_concurrency: int = 1
    queue_timeout: float = 5.0
    connect_timeout: float = 3.0
    first_token_timeout: float = 15.0
    token_timeout: float = 10.0
    shutdown_timeout: int = 20
    max_body_bytes: int = 16 * 1024 * 1024
    max_messages: int = 1000
    max_message_chars: int = 100_000
    max_connections: int = 2000
    stream_window: float = 0.04
    warm_retry_interval: float = 2.0
    warm_check_interval: float = 10.0
    warm_timeout: float = 300.0
    read_timeout: float = 10.0
    log_level: str = "info"
    log_content: bool = False
    public_url: str | None = None
    vapi_secret: str | None = None
    vapi_hmac_secret: str | None = None
    vapi_hmac_max_skew: float = 300.0
    assistant_file: str | None = None
    tools_module: str | None = None
    # Retell's LLM websocket (/llm-websocket/{call_id})
    retell_begin_message: str | None = None
    retell_auto_reconnect: bool = True
    retell_call_details: bool = True
    retell_ping_interval: float = 2.0

    @property
    def load_options(self) -> dict[str, int]:
        """Ollama options fixed at model load: sent identically on preload and every turn.

        Changing any of them between requests makes Ollama reload the model.
        """
        return {} if self.num_ctx is None else {"num_ctx": self.num_ctx}

    @property
    def loopback(self) -> bool:
        """Whether the server listens on loopback only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_keep_alive(value: str) -> str | int:
    """Parse a keep-alive setting into what Ollama accepts.

    ``forever`` (or any negative number) keeps the model loaded for good; a whole
    number is seconds; otherwise a Go duration string such as ``30m`` or ``1h``.
    """
    text = value.strip().lower()
    if text in ("forever", "-1", "inf", "infinite"):
        return -1
    try:
        seconds = int(text)
    except ValueError:
        pass
    else:
        return -1 if seconds < 0 else seconds
    if not _DURATION.match(text):
        raise ConfigError(
            f"keep-alive {value!r} is not 'forever', a number of seconds or a duration like '30m'"
        )
    return text


def _ollama_url(value: str) -> str:
    url = value.rstrip("/")
    if "://" not in url:
        # OLLAMA_HOST is often written as host:port, as Ollama itself accepts it.
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path or parts.query:
        raise ConfigError(f"Ollama URL {url!r} must look like http://host:port")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"Ollama URL {url!r} has an invalid port") from None
    # Without a port, Ollama's own default, as its CLI assumes.
    return url if port is not None else f"http://{parts.netloc}:11434"


def yes_no(value: str) -> bool:
    """A yes/no setting: ``yes``, ``true``, ``on``, ``1`` or ``no``, ``false``, ``off``, ``0``."""
    text = value.strip().lower()
    if text in ("yes", "true", "on", "1"):
        return True
    if text in ("no", "false", "off", "0"):
        return False
    raise ValueError(value)


# (flag, environment variable, type, help); the default comes from Config.
_SETTINGS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("host", "HOST", str, "address to listen on"),
    ("port", "PORT", int, "port for HTTP and websockets"),
    ("health_port", "PORT_HEALTH", int, "also answer /ping and /health on this port"),
    ("ollama_url", "OLLAMA_HOST", str, "Ollama base URL"),
    ("model", "MODEL", str, "the one model served, whatever a request names"),
    ("api_key", "API_KEY", str, "key clients must send"),
    ("keep_alive", "KEEP_ALIVE", str, "how long Ollama keeps the model loaded"),
    ("num_ctx", "NUM_CTX", int, "context window, a load-time option"),
    ("system_prompt", "SYSTEM_PROMPT", str, "system message used when a request has none"),
    ("max_concurrency", "MAX_CONCURRENCY", int, "turns streamed from Ollama at once"),
    ("queue_timeout", "QUEUE_TIMEOUT", float, "seconds a turn may wait for a free slot"),
    ("connect_timeout", "CONNECT_TIMEOUT", float, "seconds to connect to Ollama"),
    ("first_token_timeout", "FIRST_TOKEN_TIMEOUT", float, "seconds to wait for the first token"),
    ("token_timeout", "TOKEN_TIMEOUT", float, "seconds to wait between tokens"),
    ("shutdown_timeout", "SHUTDOWN_TIMEOUT", int, "seconds in-flight turns get on SIGTERM"),
    ("read_timeout", "READ_TIMEOUT", float, "seconds a client may take to send its headers"),
    ("warm_check_interval", "WARM_CHECK_INTERVAL", float, "seconds between checks of /api/ps"),
    (
        "warm_timeout",
        "WARM_TIMEOUT",
        float,
        "RunPod: seconds the worker waits at start for the model",
    ),
    ("max_body_bytes", "MAX_BODY_BYTES", int, "largest request body or websocket frame"),
    ("max_messages", "MAX_MESSAGES", int, "most messages in one request"),
    ("max_message_chars", "MAX_MESSAGE_CHARS", int, "longest message, in characters"),
    ("max_connections", "MAX_CONNECTIONS", int, "most open connections"),
    ("stream_window", "STREAM_WINDOW", float, "RunPod: seconds of tokens coalesced per yield"),
    ("log_level", "LOG_LEVEL", str, "debug, info, warning or error"),
    ("public_url", "PUBLIC_URL", str, "this server's public base URL, for VAPI's assistant"),
    ("vapi_secret", "VAPI_SECRET", str, "webhook secret: x-vapi-secret header or bearer"),
    ("vapi_hmac_secret", "VAPI_HMAC_SECRET", str, "webhook HMAC-SHA256 signing secret"),
    ("vapi_hmac_max_skew", "VAPI_HMAC_MAX_SKEW", float, "seconds a signed webhook may be off"),
    ("assistant_file", "ASSISTANT_FILE", str, "JSON file: first message, voice, transcriber"),
    ("tools_module", "TOOLS_MODULE", str, "module whose 'tools' registry serves tool calls"),
    ("retell_begin_message", "RETELL_BEGIN_MESSAGE", str, "Retell: what the agent says first"),
    ("retell_auto_reconnect", "RETELL_AUTO_RECONNECT", yes_no, "Retell: pings both ways"),
    ("retell_call_details", "RETELL_CALL_DETAILS", yes_no, "Retell: ask for the call's details"),
    ("retell_ping_interval", "RETELL_PING_INTERVAL", float, "Retell: seconds between pings"),
]

_POSITIVE = {
    "max_concurrency",
    "queue_timeout",
    "connect_timeout",
    "first_token_timeout",
    "token_timeout",
    "read_timeout",
    "warm_check_interval",
    "max_messages",
    "max_message_chars",
    "max_connections",
    "num_ctx",
    "vapi_hmac_max_skew",
    "retell_ping_interval",
}


def _build_parser(defaults: Config) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="OpenAI-compatible streaming server for VAPI custom-llm, in front of Ollama.",
    )
    for name, env_name, kind, text in _SETTINGS:
        default = getattr(defaults, name)
        shown = "forever" if name == "keep_alive" else "none" if default is None else default
        if kind is yes_no:
            shown = "yes" if default else "no"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            dest=name,
            help=f"{text} ({env_name}, default {shown})",
        )
    parser.add_argument(
        "--log-content",
        action="store_true",
        default=None,
        help="log message text in turn logs, for debugging only (LOG_CONTENT=1)",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from command-line flags over environment variables.

    Raises :class:`ConfigError` with a one-line reason when a setting is invalid.
    """
    env = os.environ if env is None else env
    defaults = Config()
    args = _build_parser(defaults).parse_args(argv)
    values: dict[str, Any] = {}
    for name, env_name, kind, _ in _SETTINGS:
        value = getattr(args, name)
        if value is None and env.get(env_name):
            try:
                value = kind(env[env_name])
            except ValueError:
                expected = "a whole number" if kind is int else "a number"
                if kind is yes_no:
                    expected = "yes or no"
                raise ConfigError(f"{env_name}={env[env_name]!r} is not {expected}") from None
        if value is not None:
            values[name] = value

    # Ollama's own parallel slots are the natural default for our admission limit.
    if "max_concurrency" not in values and env.get("OLLAMA_NUM_PARALLEL", "").isdigit():
        values["max_concurrency"] = int(env["OLLAMA_NUM_PARALLEL"])
    log_content = args.log_content or env.get("LOG_CONTENT", "").lower() in ("1", "true", "yes")
    config = Config(**values, log_content=log_content)
    _validate(config)
    return replace(
        config,
        ollama_url=_ollama_url(config.ollama_url),
        keep_alive=parse_keep_alive(str(config.keep_alive)),
        log_level=config.log_level.lower(),
    )


def _validate(config: Config) -> None:
    for name in ("port", "health_port"):
        port = getattr(config, name)
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"{name.replace('_', '-')} {port} is not between 0 and 65535")
    for name in _POSITIVE:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name.replace('_', '-')} {value} must be above zero")
    if config.stream_window < 0:
        raise ConfigError(f"stream-window {config.stream_window} must not be negative")
    if config.warm_timeout < 0:
        raise ConfigError(f"warm-timeout {config.warm_timeout} must not be negative")
    if config.shutdown_timeout < 0:
        raise ConfigError(f"shutdown-timeout {config.shutdown_timeout} must not be negative")
    if not config.model.strip() or any(c.isspace() for c in config.model):
        raise ConfigError(f"model name {config.model!r} is empty or contains spaces")
    if config.max_body_bytes < 1024:
        raise ConfigError(f"max-body-bytes {config.max_body_bytes} is below 1024")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log level {config.log_level!r} is not debug, info, warning or error")
