"""Configuration: one typed object, built once at startup from flags and environment.

Every setting has a command-line flag and an environment variable; the flag wins.
No other module reads the environment: they receive a :class:`Config`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

__all__ = [
    "ROUTING_POLICIES",
    "Config",
    "ConfigError",
    "config_from",
    "environment_help",
    "parse_config",
    "settings_parser",
    "version",
]


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
    more_ollama_urls: tuple[str, ...] = ()
    model: str = "llama3.1:8b"
    api_key: str | None = None
    keep_alive: str | int = -1
    num_ctx: int | None = None
    system_prompt: str | None = None
    max_concurrency: int = 1
    queue_timeout: float = 10.0
    connect_timeout: float = 3.0
    first_token_timeout: float = 15.0
    token_timeout: float = 10.0
    shutdown_timeout: int = 20
    max_body_bytes: int = 16 * 1024 * 1024
    max_messages: int = 1000
    max_message_chars: int = 1_000_000
    max_connections: int = 2000
    stream_window: float = 0.04
    warm_retry_interval: float = 2.0
    warm_check_interval: float = 10.0
    warm_timeout: float = 300.0
    read_timeout: float = 10.0
    log_level: str = "info"
    log_format: str | None = None  # json or text; None: text on a terminal, else json
    log_content: bool = False
    public_url: str | None = None
    vapi_secret: str | None = None
    vapi_hmac_secret: str | None = None
    vapi_hmac_max_skew: float = 300.0
    assistant_file: str | None = None
    tools_module: str | None = None
    routing: str = "pinned"
    hedge_after: float | None = None
    prefill_rate: float = 5000.0
    fallback_message: str | None = None
    hold_message: str | None = None
    hold_after: float = 2.0

    @property
    def ollama_urls(self) -> tuple[str, ...]:
        """Every Ollama the server streams from: ``ollama_url`` first, then the others."""
        return (self.ollama_url, *self.more_ollama_urls)

    # Where max_concurrency came from: --max-concurrency, MAX_CONCURRENCY,
    # OLLAMA_NUM_PARALLEL or default.
    max_concurrency_from: str = "default"
    # The webhook's credential, named after VAPI's BearerAuthenticationPlan and
    # HMACAuthenticationPlan fields, and its answers that come from configuration.
    vapi_secret_header_name: str | None = None
    vapi_hmac_algorithm: str = "sha256"
    vapi_hmac_signature_header: str = "x-signature"
    vapi_hmac_timestamp_header: str = "x-timestamp"
    vapi_hmac_signature_prefix: str | None = None
    vapi_hmac_include_timestamp: bool = True
    vapi_hmac_payload_format: str = "{timestamp}.{body}"
    vapi_hmac_message_id_header: str | None = None
    vapi_hmac_secret_is_base64: bool = False
    vapi_endpointing_timeout: float = 0.5
    vapi_campaign_eligible: bool = True
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
    """An Ollama URL with its port, read as Ollama reads ``OLLAMA_HOST``.

    ``host:port`` and a bare ``host`` (port 11434) are accepted, as Ollama accepts them;
    ``http://host`` without a port is port 80, as Ollama reads it (``envconfig.Host``).
    """
    url = value.strip().rstrip("/")
    default_port = 80
    if "://" not in url:
        url = f"http://{url}"
        default_port = 11434
    parts = urlsplit(url)
    if "@" in parts.netloc:  # said without the URL: it would put the password on stderr
        raise ConfigError(
            f"the Ollama URL for {parts.hostname} holds a user name or password, which the "
            "server never sends and would show in its logs: give http://host:port"
        )
    if parts.scheme != "http" or not parts.hostname or parts.path or parts.query:
        raise ConfigError(f"Ollama URL {url!r} must look like http://host:port")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"Ollama URL {url!r} has an invalid port") from None
    return url if port is not None else f"http://{parts.netloc}:{default_port}"


def _boolean(value: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``)."""
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


# (flag, environment variable, type, help); the default comes from Config.
_SETTINGS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("host", "HOST", str, "address to listen on"),
    ("port", "PORT", int, "port for HTTP and websockets"),
    ("health_port", "PORT_HEALTH", int, "a second port serving every route, for health checkers"),
    (
        "ollama_url",
        "OLLAMA_HOST",
        str,
        "Ollama's base URL (host:port accepted); repeat the flag for several",
    ),
    ("model", "MODEL", str, "the one model served, whatever a request names"),
    (
        "api_key",
        "API_KEY",
        str,
        "key clients must send as 'Authorization: Bearer <key>' (on websockets also ?api_key=)",
    ),
    (
        "keep_alive",
        "KEEP_ALIVE",
        str,
        "how long Ollama keeps the model loaded: forever, seconds, or a duration like 30m",
    ),
    ("num_ctx", "NUM_CTX", int, "context window, a load-time option"),
    ("system_prompt", "SYSTEM_PROMPT", str, "system message used when a request has none"),
    ("max_concurrency", "MAX_CONCURRENCY", int, "turns streamed from each Ollama at once"),
    ("queue_timeout", "QUEUE_TIMEOUT", float, "seconds a turn may wait for a free slot"),
    ("connect_timeout", "CONNECT_TIMEOUT", float, "seconds to connect to Ollama"),
    ("first_token_timeout", "FIRST_TOKEN_TIMEOUT", float, "seconds to wait for the first token"),
    ("token_timeout", "TOKEN_TIMEOUT", float, "seconds to wait between tokens"),
    ("shutdown_timeout", "SHUTDOWN_TIMEOUT", int, "seconds in-flight turns get on SIGTERM"),
    ("read_timeout", "READ_TIMEOUT", float, "seconds a client may take to send its headers"),
    (
        "warm_check_interval",
        "WARM_CHECK_INTERVAL",
        float,
        "seconds between checks that the model is still loaded",
    ),
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
    ("log_format", "LOG_FORMAT", str, "json (one object per line) or text"),
    ("public_url", "PUBLIC_URL", str, "this server's public base URL, for VAPI's assistant"),
    ("vapi_secret", "VAPI_SECRET", str, "webhook secret: x-vapi-secret header or bearer"),
    ("vapi_hmac_secret", "VAPI_HMAC_SECRET", str, "webhook HMAC signing secret (secretKey)"),
    ("vapi_hmac_max_skew", "VAPI_HMAC_MAX_SKEW", float, "seconds a signed webhook may be off"),
    ("assistant_file", "ASSISTANT_FILE", str, "JSON file: first message, voice, transcriber"),
    ("tools_module", "TOOLS_MODULE", str, "module whose 'tools' registry serves tool calls"),
    ("routing", "ROUTING", str, "how a turn picks its Ollama: pinned, least-loaded or round-robin"),
    (
        "hedge_after",
        "HEDGE_AFTER",
        float,
        "milliseconds without a first token before a turn also starts on a second Ollama",
    ),
    ("prefill_rate", "PREFILL_RATE", float, "prompt tokens per second an Ollama evaluates"),
    ("fallback_message", "FALLBACK_MESSAGE", str, "sentence spoken when a turn cannot start"),
    ("hold_message", "HOLD_MESSAGE", str, "sentence spoken while a slow first token is awaited"),
    ("hold_after", "HOLD_AFTER", float, "seconds without a first token before the hold message"),
    # VAPI's webhook credential: BearerAuthenticationPlan.headerName, HMACAuthenticationPlan.*
    ("vapi_secret_header_name", "VAPI_SECRET_HEADER_NAME", str, "another header with VAPI_SECRET"),
    ("vapi_hmac_algorithm", "VAPI_HMAC_ALGORITHM", str, "webhook HMAC: sha256, sha512 or sha1"),
    ("vapi_hmac_signature_header", "VAPI_HMAC_SIGNATURE_HEADER", str, "webhook HMAC header"),
    ("vapi_hmac_timestamp_header", "VAPI_HMAC_TIMESTAMP_HEADER", str, "webhook timestamp header"),
    ("vapi_hmac_signature_prefix", "VAPI_HMAC_SIGNATURE_PREFIX", str, "text before the HMAC"),
    (
        "vapi_hmac_include_timestamp",
        "VAPI_HMAC_INCLUDE_TIMESTAMP",
        _boolean,
        "whether the webhook HMAC signs a timestamp",
    ),
    ("vapi_hmac_payload_format", "VAPI_HMAC_PAYLOAD_FORMAT", str, "what the webhook HMAC signs"),
    (
        "vapi_hmac_message_id_header",
        "VAPI_HMAC_MESSAGE_ID_HEADER",
        str,
        "header of the message id that {svix-id} signs",
    ),
    (
        "vapi_hmac_secret_is_base64",
        "VAPI_HMAC_SECRET_IS_BASE64",
        _boolean,
        "whether VAPI_HMAC_SECRET is base64 of the key",
    ),
    (
        "vapi_endpointing_timeout",
        "VAPI_ENDPOINTING_TIMEOUT",
        float,
        "seconds answered to call.endpointing.request (0 to 15)",
    ),
    (
        "vapi_campaign_eligible",
        "VAPI_CAMPAIGN_ELIGIBLE",
        _boolean,
        "what campaign.predial is answered",
    ),
    ("retell_begin_message", "RETELL_BEGIN_MESSAGE", str, "Retell: what the agent says first"),
    ("retell_auto_reconnect", "RETELL_AUTO_RECONNECT", _boolean, "Retell: pings both ways"),
    ("retell_call_details", "RETELL_CALL_DETAILS", _boolean, "Retell: ask for the call's details"),
    ("retell_ping_interval", "RETELL_PING_INTERVAL", float, "Retell: seconds between pings"),
]

ROUTING_POLICIES = ("pinned", "least-loaded", "round-robin")

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
    "hedge_after",
    "prefill_rate",
    "hold_after",
    "retell_ping_interval",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag or value is one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Version(argparse.Action):
    """``--version``: the project's version, read from pyproject.toml when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        print(f"voice-llm-server {version()}")
        parser.exit()


def version() -> str:
    """The version in the checkout's pyproject.toml, or ``unknown`` where there is none."""
    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _default_text(name: str, default: object, env: Mapping[str, str]) -> str:
    """A setting's default as help shows it: what the server will use when it is not set."""
    if name == "max_concurrency":
        slots = env.get("OLLAMA_NUM_PARALLEL", "")
        if slots.isdigit():
            return f"{slots}, from OLLAMA_NUM_PARALLEL"
        return f"{default}, or OLLAMA_NUM_PARALLEL when set"
    shown = {
        "keep_alive": "forever",
        "num_ctx": "Ollama's",
        "log_format": "text on a terminal, else json",
    }
    if isinstance(default, bool):
        return "yes" if default else "no"
    if isinstance(default, float):
        return f"{default:g}"
    return shown.get(name, "none" if default is None else str(default))


def settings_parser(
    prog: str = "python -m server",
    description: str = (
        "OpenAI-compatible streaming server for VAPI custom-llm, in front of Ollama.\n"
        "Every setting is a flag and an environment variable (in parentheses); the flag wins."
    ),
    env: Mapping[str, str] | None = None,
) -> argparse.ArgumentParser:
    """A parser with a flag for every setting, ``--version``, and one-line errors.

    ``env`` is what the help's defaults are worked out from (``os.environ`` if None).
    """
    env = os.environ if env is None else env
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [options]",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action=_Version)
    defaults = Config()
    for name, env_name, kind, text in _SETTINGS:
        shown = _default_text(name, getattr(defaults, name), env)
        if name == "ollama_url":
            env_name = "OLLAMA_HOSTS (comma-separated) or OLLAMA_HOST"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            dest=name,
            action="append" if name == "ollama_url" else "store",
            help=f"{text} ({env_name}, default {shown})",
        )
    parser.add_argument(
        "--log-content",
        action="store_true",
        default=None,
        help="log message text in turn logs, for debugging only (LOG_CONTENT=1)",
    )
    return parser


def environment_help(names: Collection[str], env: Mapping[str, str] | None = None) -> str:
    """The settings named (by environment variable), one a line, as the flags' help says.

    ``env`` is what the defaults are worked out from (``os.environ`` if None).
    """
    env = os.environ if env is None else env
    defaults = Config()
    lines = [
        f"  {env_name:<20} {text} (default {_default_text(name, getattr(defaults, name), env)})"
        for name, env_name, _, text in _SETTINGS
        if env_name in names
    ]
    if "LOG_CONTENT" in names:
        lines.append(f"  {'LOG_CONTENT=1':<20} log message text in turn logs, for debugging only")
    return "\n".join(lines)


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from command-line flags over environment variables.

    Exits with status 2 and a one-line reason on stderr when a flag is unknown or its
    value is not of its type (as argparse does); raises :class:`ConfigError` with a
    one-line reason when a setting is invalid.
    """
    env = os.environ if env is None else env
    return config_from(settings_parser(env=env).parse_args(argv), env)


def config_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """The configuration from the flags parsed by :func:`settings_parser`, over ``env``.

    Raises :class:`ConfigError` with a one-line reason when a setting is invalid.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    urls: list[str] = args.ollama_url or [
        url.strip() for url in env.get("OLLAMA_HOSTS", "").split(",") if url.strip()
    ]
    if urls:
        values["ollama_url"], *more = urls
        values["more_ollama_urls"] = tuple(more)
    for name, env_name, kind, _ in _SETTINGS:
        value = getattr(args, name) if name != "ollama_url" else None
        if name in values:
            continue
        if value is None and env.get(env_name):
            try:
                value = kind(env[env_name])
            except ValueError:
                expected = {int: "a whole number", _boolean: "true or false"}.get(kind, "a number")
                raise ConfigError(f"{env_name}={env[env_name]!r} is not {expected}") from None
        if value is not None:
            values[name] = value

    # Ollama's own parallel slots are the natural default for our admission limit.
    if args.max_concurrency is not None:
        values["max_concurrency_from"] = "--max-concurrency"
    elif "max_concurrency" in values:
        values["max_concurrency_from"] = "MAX_CONCURRENCY"
    elif env.get("OLLAMA_NUM_PARALLEL", "").isdigit():
        values["max_concurrency"] = int(env["OLLAMA_NUM_PARALLEL"])
        values["max_concurrency_from"] = "OLLAMA_NUM_PARALLEL"
    log_content = bool(args.log_content)
    if not log_content and env.get("LOG_CONTENT"):
        try:
            log_content = _boolean(env["LOG_CONTENT"])
        except ValueError:
            raise ConfigError(f"LOG_CONTENT={env['LOG_CONTENT']!r} is not true or false") from None
    config = Config(**values, log_content=log_content)
    _validate(config)
    urls = [_ollama_url(url) for url in config.ollama_urls]
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise ConfigError(f"Ollama URL {repeated[0]} is given more than once")
    return replace(
        config,
        ollama_url=urls[0],
        more_ollama_urls=tuple(urls[1:]),
        keep_alive=parse_keep_alive(str(config.keep_alive)),
        log_level=config.log_level.lower(),
        log_format=None if config.log_format is None else config.log_format.lower(),
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
    if config.routing not in ROUTING_POLICIES:
        raise ConfigError(f"routing {config.routing!r} is not one of {', '.join(ROUTING_POLICIES)}")
    for name in ("fallback_message", "hold_message"):
        text = getattr(config, name)
        if text is not None and not text.strip():
            raise ConfigError(f"{name.replace('_', '-')} is empty")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log level {config.log_level!r} is not debug, info, warning or error")
    if config.log_format is not None and config.log_format.lower() not in ("json", "text"):
        raise ConfigError(f"log format {config.log_format!r} is not json or text")
