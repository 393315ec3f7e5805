"""A simulated Ollama server for tests, benchmarks and load tests.

It speaks Ollama's HTTP API (``/api/chat``, ``/api/generate``, ``/api/tags``,
``/api/ps``, ``/api/show``, ``/api/version``) with the same JSON shapes, status
codes and framing as the real server: NDJSON streams sent with chunked transfer
encoding, one chunk per line, and errors as ``{"error": "..."}``. Nothing is
generated: replies are a fixed cycle of words, written on timers that model
time to first token, inter-token latency, parallel slots with a FIFO queue,
model loading, keep-alive expiry and reloads on changed load-time options.

It runs on a raw ``asyncio.Protocol`` with httptools (uvloop from the command
line), so each token costs one ``transport.write`` and a client that goes away
is seen at once in ``connection_lost``.

Run it::

    python -m loadtest.fake_ollama --port 11434 --ttft 50 --itl 20 --tokens 40

It prints ``fake-ollama listening on http://HOST:PORT`` once it accepts
connections. Behaviour can be steered three ways:

* knobs: command-line flags, the same names in ``POST /_sim/config`` (for
  example ``{"itl": 5, "fail_rate": 0.1}``), or :class:`SimConfig` in-process;
* directives in the last user message (or the generate prompt):
  ``[[tokens:N]]``, ``[[ttft:MS]]``, ``[[itl:MS]]``, ``[[error-after:N]]``,
  ``[[drop-after:N]]``, ``[[stall-after:N]]``, ``[[tool:chunk]]``,
  ``[[tool:final]]``, ``[[no-tool]]``, ``[[status:CODE]]``;
* the control API under ``/_sim/``: ``GET requests``, ``GET stats``,
  ``GET|POST config``, ``POST evict``, ``POST reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import email.utils
import hashlib
import ipaddress
import math
import random
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final, Literal, Protocol, cast

import httptools
import orjson
import uvloop

FailMode = Literal["error", "stall", "drop"]
ToolMode = Literal["chunk", "final"]
Outcome = Literal["in_progress", "done", "client_closed", "error", "dropped", "stalled", "rejected"]
JsonObject = dict[str, Any]

REQUEST_LOG_SIZE: Final = 10_000
BUSY_MESSAGE: Final = "server busy, please try again.  maximum pending requests exceeded"
MIDSTREAM_ERROR: Final = "an error was encountered while running the model: unexpected EOF"

# The reply: token i is _VOCAB[i % len(_VOCAB)], the very first one without its space.
_VOCAB: Final = (
    " Sure",
    ",",
    " here",
    " is",
    " a",
    " short",
    " simulated",
    " reply",
    " from",
    " the",
    " fake",
    " model",
    ".",
    " It",
    " streams",
    " one",
    " word",
    " at",
    " a",
    " time",
    ".",
)
_FIRST_TOKEN: Final = _VOCAB[0].lstrip()
_VOCAB_JSON: Final = tuple(orjson.dumps(word) for word in _VOCAB)
_FIRST_TOKEN_JSON: Final = orjson.dumps(_FIRST_TOKEN)

# What the simulated models report about themselves (a llama3.1:8b Q4_K_M).
_MODEL_SIZE: Final = 4_920_753_328
_KV_BYTES_PER_TOKEN: Final = 131_072
_MODIFIED_AT: Final = "2025-10-01T09:30:12.418273915Z"
_DETAILS: Final[JsonObject] = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "8.0B",
    "quantization_level": "Q4_K_M",
}
_TEMPLATE: Final = (
    "{{- range $i, $_ := .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_STOPS: Final = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_PARAMETERS: Final = "\n".join(f'{"stop":<30} "{stop}"' for stop in _STOPS)
_MODEL_INFO: Final[JsonObject] = {
    "general.architecture": "llama",
    "general.basename": "Meta-Llama-3.1",
    "general.file_type": 15,
    "general.parameter_count": 8_030_261_248,
    "general.quantization_version": 2,
    "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 8,
    "llama.block_count": 32,
    "llama.context_length": 131_072,
    "llama.embedding_length": 4096,
    "llama.feed_forward_length": 14_336,
    "llama.vocab_size": 128_256,
}
_CAPABILITIES: Final = ["completion", "tools"]
_FOREVER_SECONDS: Final = (2**63 - 1) / 1e9  # Go's time.Duration(math.MaxInt64)

_TEXT_PLAIN: Final = b"text/plain; charset=utf-8"
_TEXT_PLAIN_GIN: Final = b"text/plain"
_JSON: Final = b"application/json; charset=utf-8"
_CHUNK_END: Final = b"0\r\n\r\n"
_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %b\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}
_LOCAL_SUFFIXES: Final = (".localhost", ".local", ".internal")


# ---------------------------------------------------------------------------
# Configuration


_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "fail_mode": ("error", "stall", "drop"),
    "tool_mode": ("chunk", "final"),
}
_MINIMUMS: Final[dict[str, float]] = {
    "ttft": 0,
    "ttft_per_prompt_token": 0,
    "itl": 0,
    "jitter": 0,
    "tokens": 0,
    "parallel": 1,
    "max_queue": 0,
    "slowdown": 0,
    "load_ms": 0,
    "fail_rate": 0,
}


@dataclasses.dataclass(slots=True)
class SimConfig:
    """Every knob of the simulator (times in milliseconds).

    Most knobs are read when a request arrives, so a change applies to the
    requests that start after it; ``jitter`` and ``slowdown`` are read at every
    token and ``parallel`` at every slot hand-over. The field names are the
    knob names of the command line (with dashes) and of ``POST /_sim/config``.
    """

    models: tuple[str, ...] = ("llama3.1:8b",)
    ttft: float = 50.0
    ttft_per_prompt_token: float = 0.0
    itl: float = 20.0
    jitter: float = 0.0
    seed: int = 0
    tokens: int = 40
    parallel: int = 4
    max_queue: int = 512
    slowdown: float = 0.0
    load_ms: float = 500.0
    preloaded: bool = False
    keep_alive: str = "5m"
    fail_rate: float = 0.0
    fail_mode: FailMode = "error"
    tool_mode: ToolMode = "chunk"
    version: str = "0.12.6"
    check_host: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, _checked_knob(field.name, getattr(self, field.name)))

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Set several knobs at once; raises ValueError (changing nothing) on a bad one."""
        checked = {name: _checked_knob(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)


_KNOB_DEFAULTS: Final[dict[str, Any]] = {
    field.name: field.default for field in dataclasses.fields(SimConfig)
}


def _checked_knob(name: str, value: Any) -> Any:
    """The value a knob takes from ``value``, or ValueError saying what is wrong."""
    if name not in _KNOB_DEFAULTS:
        raise ValueError(f"unknown knob {name!r}")
    default = _KNOB_DEFAULTS[name]
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError(f"knob {name!r} takes a list of names")
        names = tuple(value)
        if not names or not all(isinstance(item, str) and item for item in names):
            raise ValueError(f"knob {name!r} takes a non-empty list of names")
        return names
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"knob {name!r} takes true or false")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"knob {name!r} takes a string")
        choices = _CHOICES.get(name)
        if choices is not None and value not in choices:
            raise ValueError(f"knob {name!r} takes one of {', '.join(choices)}")
        if name == "keep_alive":
            parse_keep_alive(value)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"knob {name!r} takes a number")
    if isinstance(default, int) and not isinstance(value, int):
        raise ValueError(f"knob {name!r} takes an integer")
    if value < _MINIMUMS.get(name, -math.inf) or (name == "fail_rate" and value > 1):
        raise ValueError(f"knob {name!r} is out of range: {value}")
    return type(default)(value)


# ---------------------------------------------------------------------------
# Wire formats


class _HttpError(Exception):
    """An error answered before any token: an HTTP status and Ollama's ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_DURATION_PART: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_NUMBER: Final = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")
_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string, read as Go's ``time.ParseDuration`` does.

    Raises ValueError with Go's message, e.g. ``time: missing unit in duration "-1"``.
    """
    rest = text[1:] if text[:1] in ("-", "+") else text
    sign = -1.0 if text[:1] == "-" else 1.0
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f'time: invalid duration "{text}"')
    seconds = 0.0
    position = 0
    while position < len(rest):
        part = _DURATION_PART.match(rest, position)
        if part is None:
            number = _DURATION_NUMBER.match(rest, position)
            if number is None:
                raise ValueError(f'time: invalid duration "{text}"')
            if not number[2]:
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: unknown unit "{number[2]}" in duration "{text}"')
        seconds += float(part[1]) * _DURATION_UNITS[part[2]]
        position = part.end()
    return sign * seconds


def parse_keep_alive(value: object) -> float | None:
    """Seconds a ``keep_alive`` value keeps the model loaded; None means forever.

    Ollama takes a number of seconds or a Go duration string; any negative
    value means forever. Raises ValueError with Ollama's message.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"Unsupported type: '{_go_type_name(value)}'")
    seconds = parse_go_duration(value) if isinstance(value, str) else float(value)
    return None if seconds < 0 else seconds


def _go_type_name(value: object) -> str:
    """The Go type ``encoding/json`` decodes a JSON value into, as ``reflect`` prints it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


def _json_kind(value: object) -> str:
    """The JSON kind Go names in an unmarshal error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _decode_body(raw: bytes, go_type: str) -> JsonObject:
    """A request body as a JSON object, or the 400 Ollama (Go's encoding/json) answers."""
    if not raw.strip():
        raise _HttpError(400, "missing request body")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise _HttpError(400, _go_syntax_error(raw, error)) from None
    if not isinstance(value, dict):
        raise _HttpError(
            400, f"json: cannot unmarshal {_json_kind(value)} into Go value of type {go_type}"
        )
    return value


def _go_syntax_error(raw: bytes, error: orjson.JSONDecodeError) -> str:
    """Go's wording for a JSON syntax error, from orjson's diagnosis."""
    if "end of data" in error.msg:
        return "unexpected EOF"
    text = raw.decode("utf-8", "replace")
    character = text[error.pos] if error.pos < len(text) else " "
    if "after document" in error.msg:
        return f"invalid character {character!r} after top-level value"
    return f"invalid character {character!r} looking for beginning of value"


def _field(body: JsonObject, key: str, kind: type, struct: str, go_type: str) -> Any:
    """``body[key]`` (None when absent or null) if it has the JSON kind Go expects, else a 400."""
    value = body.get(key)
    if value is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        return value
    raise _HttpError(
        400,
        f"json: cannot unmarshal {_json_kind(value)} into Go struct field {struct}.{key} "
        f"of type {go_type}",
    )


class _Clock:
    """Timestamps as Go writes them, with the part that changes once a second cached."""

    __slots__ = ("_date", "_date_second", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""
        self._date_second = -1
        self._date = b""

    def stamp(self) -> bytes:
        """``time.Now().UTC()`` as Go's JSON encoder writes it (RFC 3339, nanoseconds)."""
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        if nanos:
            return self._prefix + (b".%09d" % nanos).rstrip(b"0") + b"Z"
        return self._prefix + b"Z"

    def http_date(self) -> bytes:
        """The current ``Date`` header value."""
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = email.utils.formatdate(second, usegmt=True).encode()
        return self._date


_CLOCK: Final = _Clock()


def _go_local_time(timestamp: float) -> str:
    """A wall-clock time as Go's JSON encoder writes a local ``time.Time``."""
    moment = datetime.datetime.fromtimestamp(timestamp).astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset() or datetime.timedelta()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _status_line(status: int) -> bytes:
    """The HTTP/1.1 status line for ``status``, worded as Go's net/http words it."""
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d status code %d\r\n" % (status, status)


def _digest(model: str) -> str:
    """A stable sha256-looking digest for a model name."""
    return hashlib.sha256(model.encode()).hexdigest()


def _canonical_name(name: str) -> str:
    """A model name as Ollama resolves it: lowercase, ``:latest`` when no tag is given."""
    name = name.lower()
    return name if ":" in name.rpartition("/")[2] else f"{name}:latest"


def reply_text(tokens: int) -> str:
    """The whole content of a reply of ``tokens`` tokens."""
    return "".join(_token_text(index) for index in range(tokens))


def _token_text(index: int) -> str:
    """The text of token ``index`` of a reply."""
    return _VOCAB[index % len(_VOCAB)] if index else _FIRST_TOKEN


def _host_allowed(host_header: bytes) -> bool:
    """Whether Ollama bound to loopback accepts this ``Host`` header (its allowedHosts rule)."""
    host = host_header.decode("latin-1").lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in ("", "localhost", socket.gethostname().lower()) or host.endswith(
            _LOCAL_SUFFIXES
        )
    return address.is_loopback or address.is_private or address.is_unspecified


# ---------------------------------------------------------------------------
# Requests, directives and the request log


@dataclasses.dataclass(frozen=True, slots=True)
class LoadOptions:
    """The load-time (runner) options a model is loaded with, defaults filled in."""

    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int = 0
    num_thread: int = 0
    use_mmap: bool | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LoadOptions:
        """The load-time part of a request's ``options``; a mistyped one is a 500, as in Ollama."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = options.get(field.name)
            if value is None:
                continue
            if field.name == "use_mmap":
                if not isinstance(value, bool):
                    raise _HttpError(500, f'option "{field.name}" must be of type boolean')
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise _HttpError(500, f'option "{field.name}" must be of type integer')
            values[field.name] = value if field.name == "use_mmap" else int(value)
        return cls(**values)

    def serves(self, wanted: LoadOptions) -> bool:
        """Whether a model loaded with these options serves ``wanted`` without a reload.

        As Ollama's scheduler: every option must match, except that a negative
        ``num_gpu`` (all layers) matches whatever was loaded.
        """
        if wanted.num_gpu < 0:
            return dataclasses.replace(self, num_gpu=-1) == wanted
        return self == wanted


@dataclasses.dataclass(frozen=True, slots=True)
class _Directives:
    """Per-request behaviour asked for in the last user message, as ``[[name:value]]``."""

    tokens: int | None = None
    ttft: float | None = None
    itl: float | None = None
    failure: tuple[FailMode, int] | None = None
    tool_mode: ToolMode | None = None
    no_tool: bool = False
    status: int | None = None

    @classmethod
    def parse(cls, text: str) -> _Directives:
        """The directives in ``text``; ones with a malformed value are ignored."""
        if "[[" not in text:
            return _NO_DIRECTIVES
        values: dict[str, Any] = {}
        for name, argument in _DIRECTIVE.findall(text):
            if name in ("tool", "no-tool"):
                if name == "no-tool":
                    values["no_tool"] = True
                elif argument in ("chunk", "final"):
                    values["tool_mode"] = argument
                continue
            try:
                number = float(argument)
            except ValueError:
                continue
            if name in ("ttft", "itl") and number >= 0:
                values[name] = number
            elif name == "tokens" and number >= 0:
                values["tokens"] = int(number)
            elif name in ("error-after", "drop-after", "stall-after") and number >= 0:
                values["failure"] = (name.partition("-")[0], int(number))
            elif name == "status" and 400 <= number <= 599:
                values["status"] = int(number)
        return cls(**values)


_DIRECTIVE: Final = re.compile(r"\[\[([a-z-]+)(?::([^\]]*))?\]\]")
_NO_DIRECTIVES: Final = _Directives()


@dataclasses.dataclass(slots=True)
class RequestRecord:
    """What happened to one /api/chat or /api/generate request (times from ``time.time()``).

    ``finished_at`` is when the server sent the end of its answer;
    ``client_closed_at`` when the client's connection went away before that
    end. ``tokens_sent`` counts the reply's lines (a tool call counts as one);
    for a non-streaming request, the tokens generated.
    """

    id: int
    path: str
    body: Any
    received_at: float
    first_byte_at: float | None = None
    finished_at: float | None = None
    client_closed_at: float | None = None
    tokens_sent: int = 0
    outcome: Outcome = "in_progress"


@dataclasses.dataclass(slots=True)
class _Request:
    """One parsed HTTP request."""

    method: bytes
    target: bytes
    host: bytes
    body: bytes
    keep_alive: bool


@dataclasses.dataclass(slots=True)
class _Inference:
    """A validated /api/chat or /api/generate request."""

    chat: bool
    model: str
    canonical: str
    empty: bool
    session: float | None
    stream: bool = True
    load_options: LoadOptions = LoadOptions()
    num_predict: int = -1
    stops: tuple[str, ...] = ()
    prompt_chars: int = 0
    last_text: str = ""
    tools: list[Any] = dataclasses.field(default_factory=list)
    calls_tool: bool = False


@dataclasses.dataclass(slots=True)
class _Plan:
    """The scripted reply of one generating request."""

    chat: bool
    stream: bool
    model: str
    canonical: str
    load_options: LoadOptions
    session: float | None
    emissions: int
    done_reason: str
    first_delay_ms: float
    itl_ms: float
    prompt_tokens: int
    stops: tuple[str, ...]
    tool_call: JsonObject | None
    tool_on_final: bool
    tool_tokens: int
    fail_mode: FailMode
    fail_after: int | None


def _example_value(schema: object) -> Any:
    """A value fitting a JSON schema property, as a model calling a tool might give."""
    if not isinstance(schema, dict):
        return "example"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "string")
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "object":
        return {}
    if kind == "array":
        return []
    return "example"


def _tool_call(tool: object) -> JsonObject | None:
    """A call of ``tool`` (an Ollama/OpenAI tool definition) with arguments from its schema."""
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return None
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    arguments = (
        {name: _example_value(schema) for name, schema in properties.items()}
        if isinstance(properties, dict)
        else {}
    )
    return {"function": {"name": function["name"], "arguments": arguments}}


def _parse_inference(body: JsonObject, *, chat: bool, config: SimConfig) -> _Inference:
    """Validate a decoded chat or generate request the way Ollama does, in its order."""
    struct = "ChatRequest" if chat else "GenerateRequest"
    model = _field(body, "model", str, struct, "string") or ""
    stream = _field(body, "stream", bool, struct, "bool")
    options = _field(body, "options", dict, struct, "map[string]interface {}") or {}
    keep_alive = body.get("keep_alive")
    try:
        session = (
            parse_keep_alive(config.keep_alive)
            if keep_alive is None
            else parse_keep_alive(keep_alive)
        )
    except ValueError as error:
        raise _HttpError(400, str(error)) from None
    tools: list[Any] = []
    last_text = ""
    calls_tool = False
    if chat:
        messages = _field(body, "messages", list, struct, "[]api.Message") or []
        tools = _field(body, "tools", list, struct, "api.Tools") or []
        prompt_chars = 0
        for message in messages:
            if not isinstance(message, dict):
                raise _HttpError(
                    400,
                    f"json: cannot unmarshal {_json_kind(message)} into Go struct field "
                    f"ChatRequest.messages of type api.Message",
                )
            content = _field(message, "content", str, "ChatRequest.messages", "string") or ""
            prompt_chars += len(content)
            if message.get("role") == "user":
                last_text = content
        empty = not messages
        calls_tool = bool(tools) and not empty and messages[-1].get("role") == "user"
    else:
        prompt = _field(body, "prompt", str, struct, "string") or ""
        prompt_chars = len(prompt)
        last_text = prompt
        empty = not prompt
    if not model:
        raise _HttpError(400, "model is required")
    canonical = _canonical_name(model)
    if canonical not in {_canonical_name(name) for name in config.models}:
        raise _HttpError(404, f"model '{model}' not found")
    if session == 0 and empty:
        return _Inference(chat=chat, model=model, canonical=canonical, empty=True, session=0.0)
    think = body.get("think")
    if think is True or (isinstance(think, str) and think):
        raise _HttpError(400, f"{orjson.dumps(model).decode()} does not support thinking")
    num_predict = options.get("num_predict", -1)
    if isinstance(num_predict, bool) or not isinstance(num_predict, int | float):
        raise _HttpError(500, 'option "num_predict" must be of type integer')
    stops = options.get("stop") or []
    if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
        raise _HttpError(500, 'option "stop" must be of type array')
    return _Inference(
        chat=chat,
        model=model,
        canonical=canonical,
        empty=empty,
        session=session,
        stream=stream is not False,
        load_options=LoadOptions.from_options(options),
        num_predict=int(num_predict),
        stops=tuple(stop for stop in stops if stop),
        prompt_chars=prompt_chars,
        last_text=last_text,
        tools=tools,
        calls_tool=calls_tool,
    )


# ---------------------------------------------------------------------------
# The model host: loading, keep-alive, slots and the queue


@dataclasses.dataclass(frozen=True, slots=True)
class _Loaded:
    """The model in memory and the load-time options it was loaded with."""

    model: str
    options: LoadOptions


class _ModelHost:
    """The GPU: one loaded model, its parallel slots, its FIFO queue and its keep-alive timer.

    As Ollama: a request first waits for the model (loading or reloading it;
    at most ``max_queue`` requests may wait there), then for a slot, in
    arrival order and without limit. The keep-alive timer runs only while no
    request uses the model; a request's ``keep_alive`` sets its length.
    """

    def __init__(self, config: SimConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._loop = loop
        self.loaded: _Loaded | None = None
        self.active = 0
        self.pending = 0
        self.loads = 0
        self.reloads = 0
        self._session: float | None = parse_keep_alive(config.keep_alive)
        self._loading: asyncio.Task[None] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._expires_at: float | None = None

    @property
    def queued(self) -> int:
        """Requests admitted but not generating: waiting for the model or for a slot."""
        return self.pending + len(self._waiters)

    def preload(self, model: str) -> None:
        """Start with ``model`` loaded with default options."""
        self.loaded = _Loaded(model, LoadOptions())
        self._arm_if_idle()

    def ready(self, model: str, options: LoadOptions) -> bool:
        """Whether ``model`` is loaded and serves ``options`` right now."""
        loaded = self.loaded
        return (
            self._loading is None
            and loaded is not None
            and loaded.model == model
            and loaded.options.serves(options)
        )

    async def prepare(self, model: str, options: LoadOptions, session: float | None) -> int:
        """Wait until ``model`` is loaded with ``options`` and mark it in use.

        Returns the nanoseconds spent (Ollama's ``load_duration``). A load
        goes on when the waiting client goes away.
        """
        started = time.perf_counter_ns()
        if not self.ready(model, options):
            self.pending += 1
            try:
                while not self.ready(model, options):
                    if self._loading is None:
                        self._loading = self._loop.create_task(self._load(model, options, session))
                    await asyncio.shield(self._loading)
            except asyncio.CancelledError:
                self.pending -= 1
                self._arm_if_idle()
                raise
            self.pending -= 1
        self._cancel_expiry()
        self._session = session
        return max(time.perf_counter_ns() - started, 1)

    async def _load(self, model: str, options: LoadOptions, session: float | None) -> None:
        """Load ``model``, evicting whatever is loaded."""
        if self.loaded is not None:
            self.reloads += 1
            self.unload()
        self.loads += 1
        try:
            await asyncio.sleep(self._config.load_ms / 1000)
        finally:
            self._loading = None
        self.loaded = _Loaded(model, options)
        self._session = session
        self._arm_if_idle()

    async def acquire_slot(self) -> None:
        """Wait for a generation slot, first come first served."""
        if self.active < self._config.parallel and not self._waiters:
            self.active += 1
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter, else free; start keep-alive when idle."""
        self.active -= 1
        self.grant()
        self._arm_if_idle()

    def grant(self) -> None:
        """Hand free slots to waiters in arrival order."""
        while self._waiters and self.active < self._config.parallel:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.active += 1

    def settle(self) -> None:
        """Start keep-alive after a request that only loaded the model."""
        self._arm_if_idle()

    def expire(self, model: str) -> None:
        """Unload ``model`` as soon as no request uses it (``keep_alive: 0``)."""
        if self.loaded is not None and self.loaded.model == model:
            self._session = 0.0
            self._arm_if_idle()

    def unload(self) -> bool:
        """Drop the loaded model now; returns whether one was loaded."""
        self._cancel_expiry()
        was_loaded = self.loaded is not None
        self.loaded = None
        return was_loaded

    def expires_at(self) -> float:
        """When the loaded model will be unloaded, as ``time.time()``."""
        if self._session is None:
            return time.time() + _FOREVER_SECONDS
        if self._expires_at is not None:
            return self._expires_at
        return time.time() + self._session

    def close(self) -> None:
        """Stop the timers and any load in progress."""
        self._cancel_expiry()
        if self._loading is not None:
            self._loading.cancel()

    def _arm_if_idle(self) -> None:
        if self.loaded is None or self.active or self.pending:
            return
        self._cancel_expiry()
        if self._session is None:
            return
        if self._session <= 0:
            self.unload()
            return
        self._expires_at = time.time() + self._session
        self._expiry = self._loop.call_later(self._session, self.unload)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._expires_at = None


# ---------------------------------------------------------------------------
# Replies


class _Exchange(Protocol):
    """A reply in progress on a connection."""

    def client_lost(self) -> None:
        """The client's connection went away before the reply ended."""


def _metrics(**values: int) -> JsonObject:
    """Ollama's metrics fields, zeros left out as Go's ``omitempty`` leaves them out."""
    return {name: value for name, value in values.items() if value}


def _done_object(chat: bool, model: str, reason: str) -> JsonObject:
    """The one-line answer to a load or unload request."""
    stamp = _CLOCK.stamp().decode()
    if chat:
        return {
            "model": model,
            "created_at": stamp,
            "message": {"role": "assistant", "content": ""},
            "done_reason": reason,
            "done": True,
        }
    return {
        "model": model,
        "created_at": stamp,
        "response": "",
        "done": True,
        "done_reason": reason,
    }


class _LoadReply:
    """An empty chat or generate request: load the model, then answer ``done_reason: load``."""

    def __init__(
        self, sim: FakeOllama, conn: _Connection, record: RequestRecord, ask: _Inference
    ) -> None:
        self._sim = sim
        self._conn = conn
        self._record = record
        self._ask = ask
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        """Start waiting for the model."""
        self._task = self._sim.loop.create_task(self._run())

    async def _run(self) -> None:
        ask = self._ask
        host = self._sim.host
        await host.prepare(ask.canonical, ask.load_options, ask.session)
        host.settle()
        self._task = None
        record = self._record
        record.outcome = "done"
        record.first_byte_at = record.finished_at = time.time()
        self._conn.respond_json(200, _done_object(ask.chat, ask.model, "load"))

    def client_lost(self) -> None:
        """Stop waiting; the load itself goes on."""
        if self._record.outcome == "in_progress":
            self._record.outcome = "client_closed"
            self._record.client_closed_at = time.time()
        if self._task is not None:
            self._task.cancel()
            self._task = None


class _Generation:
    """A generating request: wait for the model and a slot, then write the reply on timers.

    Streaming replies are chunked NDJSON, one chunk per line and one write per
    token; non-streaming ones are generated on the same timers and sent whole.
    """

    def __init__(
        self,
        sim: FakeOllama,
        conn: _Connection,
        record: RequestRecord,
        plan: _Plan,
        received_ns: int,
    ) -> None:
        self._sim = sim
        self._conn = conn
        self._record = record
        self._plan = plan
        self._received_ns = received_ns
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._has_slot = False
        self._headers_sent = False
        self._sent = 0
        self._text: list[str] = []
        self._load_ns = 0
        self._slot_ns = 0
        self._first_ns = 0
        model_json = orjson.dumps(plan.model)
        self._head = b'{"model":' + model_json + b',"created_at":"'
        if plan.chat:
            self._middle = b'","message":{"role":"assistant","content":'
            self._tail = b'},"done":false}\n'
        else:
            self._middle = b'","response":'
            self._tail = b',"done":false}\n'

    def begin(self) -> None:
        """Start waiting for the model and a slot."""
        self._task = self._sim.loop.create_task(self._admit())

    async def _admit(self) -> None:
        plan = self._plan
        host = self._sim.host
        self._load_ns = await host.prepare(plan.canonical, plan.load_options, plan.session)
        await host.acquire_slot()
        self._has_slot = True
        self._task = None
        self._slot_ns = time.perf_counter_ns()
        delay = self._sim.jittered(plan.first_delay_ms)
        self._timer = self._sim.loop.call_later(delay, self._tick)

    def client_lost(self) -> None:
        """Cancel the generation and free its slot (or its place in the queue)."""
        record = self._record
        if record.outcome not in ("in_progress", "stalled"):
            return
        record.client_closed_at = time.time()
        if record.outcome == "in_progress":
            record.outcome = "client_closed"
        self._stop()

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._has_slot:
            self._has_slot = False
            self._sim.host.release()

    def _tick(self) -> None:
        self._timer = None
        plan = self._plan
        sent = self._sent
        if sent == plan.fail_after:
            self._fail()
            return
        if sent == plan.emissions:
            self._finish(plan.done_reason)
            return
        if not sent:
            self._first_ns = time.perf_counter_ns()
        if plan.tool_call is not None:
            self._emit_tool_call(plan.tool_call)
        elif plan.stops:
            if self._emit_until_stop(sent, plan.stops):
                return
        elif plan.stream:
            self._write_line(
                b"".join(
                    (
                        self._head,
                        _CLOCK.stamp(),
                        self._middle,
                        _VOCAB_JSON[sent % len(_VOCAB)] if sent else _FIRST_TOKEN_JSON,
                        self._tail,
                    )
                )
            )
        else:
            self._text.append(_token_text(sent))
        self._sent = self._record.tokens_sent = sent + 1
        self._timer = self._sim.loop.call_later(self._next_delay(), self._tick)

    def _next_delay(self) -> float:
        config = self._sim.config
        itl = self._plan.itl_ms
        if config.slowdown:
            itl *= 1.0 + config.slowdown * self._sim.host.active / config.parallel
        return self._sim.jittered(itl)

    def _emit_text(self, text: str) -> None:
        self._text.append(text)
        if self._plan.stream:
            self._write_line(
                b"".join((self._head, _CLOCK.stamp(), self._middle, orjson.dumps(text), self._tail))
            )

    def _emit_until_stop(self, index: int, stops: tuple[str, ...]) -> bool:
        """Emit token ``index`` unless the text would then hold a stop string; True if it ended."""
        so_far = "".join(self._text)
        candidate = so_far + _token_text(index)
        cuts = [position for position in map(candidate.find, stops) if position >= 0]
        if not cuts:
            self._emit_text(candidate[len(so_far) :])
            return False
        cut = min(cuts)
        if cut > len(so_far):
            self._emit_text(candidate[len(so_far) : cut])
            self._sent = self._record.tokens_sent = index + 1
        self._finish("stop")
        return True

    def _emit_tool_call(self, call: JsonObject) -> None:
        if self._plan.stream:
            self._write_line(
                orjson.dumps(
                    {
                        "model": self._plan.model,
                        "created_at": _CLOCK.stamp().decode(),
                        "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                        "done": False,
                    }
                )
                + b"\n"
            )

    def _write_line(self, line: bytes) -> None:
        chunk = b"%x\r\n%b\r\n" % (len(line), line)
        if not self._headers_sent:
            self._headers_sent = True
            self._record.first_byte_at = time.time()
            chunk = self._conn.chunked_head() + chunk
        self._conn.write(chunk)

    def _final_object(self, reason: str) -> JsonObject:
        plan = self._plan
        now = time.perf_counter_ns()
        first = self._first_ns or now
        metrics = _metrics(
            total_duration=now - self._received_ns,
            load_duration=self._load_ns,
            prompt_eval_count=plan.prompt_tokens,
            prompt_eval_duration=first - self._slot_ns,
            eval_count=plan.tool_tokens if plan.tool_call is not None else self._sent,
            eval_duration=now - first,
        )
        content = "" if plan.stream else "".join(self._text)
        stamp = _CLOCK.stamp().decode()
        if not plan.chat:
            return {
                "model": plan.model,
                "created_at": stamp,
                "response": content,
                "done": True,
                "done_reason": reason,
                **metrics,
            }
        message: JsonObject = {"role": "assistant", "content": content}
        if plan.tool_call is not None and (plan.tool_on_final or not plan.stream):
            message["tool_calls"] = [plan.tool_call]
        return {
            "model": plan.model,
            "created_at": stamp,
            "message": message,
            "done_reason": reason,
            "done": True,
            **metrics,
        }

    def _finish(self, reason: str) -> None:
        final = self._final_object(reason)
        self._settle("done")
        if self._plan.stream:
            self._write_line(orjson.dumps(final) + b"\n")
            self._conn.write(_CHUNK_END)
            self._conn.end_exchange()
        else:
            self._record.first_byte_at = self._record.finished_at
            self._conn.respond_json(200, final)

    def _fail(self) -> None:
        mode = self._plan.fail_mode
        if mode == "stall":
            self._record.outcome = "stalled"
        elif mode == "drop":
            self._settle("dropped")
            self._conn.drop()
        elif self._headers_sent:
            self._settle("error")
            self._write_line(orjson.dumps({"error": MIDSTREAM_ERROR}) + b"\n")
            self._conn.write(_CHUNK_END)
            self._conn.end_exchange()
        else:
            self._settle("error")
            self._record.first_byte_at = self._record.finished_at
            self._conn.respond_json(500, {"error": MIDSTREAM_ERROR})

    def _settle(self, outcome: Outcome) -> None:
        self._record.outcome = outcome
        self._record.finished_at = time.time()
        if self._has_slot:
            self._has_slot = False
            self._sim.host.release()


# ---------------------------------------------------------------------------
# HTTP


class _Connection(asyncio.Protocol):
    """One client connection: httptools parses requests, replies are written whole or chunked."""

    def __init__(self, sim: FakeOllama) -> None:
        self._sim = sim
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self._url = b""
        self._host = b""
        self._body: list[bytes] = []
        self._ready: list[_Request] = []
        self.exchange: _Exchange | None = None
        self.keep_alive = True
        self.head_only = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection; tokens go out without Nagle delay."""
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sim.connections.add(self)

    def data_received(self, data: bytes) -> None:
        """Parse, then dispatch the requests completed by ``data`` in order."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self.exchange is None:
                self.keep_alive = False
                self.head_only = False
                self.respond(400, _TEXT_PLAIN, b"400 Bad Request")
            else:
                self.drop()
            return
        ready, self._ready = self._ready, []
        for request in ready:
            if self._closing:
                return
            if self.exchange is not None:
                # A pipelined request while a reply is in flight: not supported.
                self.drop()
                return
            self._sim.dispatch(self, request)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: cancel the reply in flight, if any."""
        self._closing = True
        self._sim.connections.discard(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_lost()

    def on_message_begin(self) -> None:
        """httptools: a new request starts."""
        self._url = b""
        self._host = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        """httptools: (part of) the request target."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header; only Host and Expect matter here."""
        lowered = name.lower()
        if lowered == b"host":
            self._host = value
        elif (
            lowered == b"expect"
            and value.lower() == b"100-continue"
            and self._transport is not None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        """httptools: (part of) the request body."""
        self._body.append(body)

    def on_message_complete(self) -> None:
        """httptools: the request is complete."""
        self._ready.append(
            _Request(
                method=self._parser.get_method(),
                target=self._url,
                host=self._host,
                body=b"".join(self._body),
                keep_alive=self._parser.should_keep_alive(),
            )
        )

    def write(self, data: bytes) -> None:
        """Send ``data`` unless the connection is closing."""
        if self._transport is not None and not self._closing:
            self._transport.write(data)

    def respond(self, status: int, content_type: bytes, body: bytes) -> None:
        """Send a whole response with Content-Length and end the exchange."""
        head = b"".join(
            (
                _status_line(status),
                b"Content-Type: " + content_type + b"\r\n" if content_type else b"",
                b"Date: ",
                _CLOCK.http_date(),
                b"\r\nContent-Length: %d\r\n" % len(body),
                b"" if self.keep_alive else b"Connection: close\r\n",
                b"\r\n",
            )
        )
        self.write(head if self.head_only else head + body)
        self.end_exchange()

    def respond_json(self, status: int, value: Any) -> None:
        """Send a JSON response as gin's ``c.JSON`` does."""
        self.respond(status, _JSON, orjson.dumps(value))

    def chunked_head(self) -> bytes:
        """The head of a streaming (NDJSON, chunked) 200 response."""
        return b"".join(
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nDate: ",
                _CLOCK.http_date(),
                b"\r\n" if self.keep_alive else b"\r\nConnection: close\r\n",
                b"Transfer-Encoding: chunked\r\n\r\n",
            )
        )

    def end_exchange(self) -> None:
        """The reply is complete: close if the client asked for it, else await the next request."""
        self.exchange = None
        if not self.keep_alive:
            self.drop()

    def drop(self) -> None:
        """Close the connection after what was written (mid-reply, that is abrupt)."""
        if self._transport is not None and not self._closing:
            self._closing = True
            self._transport.close()


_Handler = Callable[[_Connection, bytes], None]


# ---------------------------------------------------------------------------
# The server


class FakeOllama:
    """A running simulator: its port, its live config, its statistics and request log."""

    def __init__(self, config: SimConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.port = 0
        self.host = _ModelHost(config, loop)
        self.connections: set[_Connection] = set()
        self.rng = random.Random(config.seed)
        self._log: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self._next_id = 1
        self._requests_total = 0
        self._server: asyncio.Server | None = None
        self._routes: dict[bytes, dict[bytes, _Handler]] = {
            b"/": {b"GET": self._root, b"HEAD": self._root},
            b"/api/version": {b"GET": self._version, b"HEAD": self._version},
            b"/api/tags": {b"GET": self._tags, b"HEAD": self._tags},
            b"/api/ps": {b"GET": self._ps},
            b"/api/show": {b"POST": self._show},
            b"/api/chat": {b"POST": self._chat},
            b"/api/generate": {b"POST": self._generate},
            b"/_sim/requests": {b"GET": self._sim_requests},
            b"/_sim/stats": {b"GET": self._sim_stats},
            b"/_sim/config": {b"GET": self._sim_config, b"POST": self._sim_config},
            b"/_sim/evict": {b"POST": self._sim_evict},
            b"/_sim/reset": {b"POST": self._sim_reset},
        }
        if config.preloaded:
            self.host.preload(_canonical_name(config.models[0]))

    async def listen(self, host: str, port: int) -> None:
        """Accept connections on ``host:port`` (port 0 picks a free one)."""
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, close every connection and stop the timers."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.drop()
        self.host.close()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let the closed connections' connection_lost run

    def stats(self) -> JsonObject:
        """Counters and gauges, as ``GET /_sim/stats`` answers them."""
        loaded = self.host.loaded
        return {
            "active": self.host.active,
            "queued": self.host.queued,
            "loaded": loaded is not None,
            "loaded_model": loaded.model if loaded is not None else None,
            "reloads": self.host.reloads,
            "loads": self.host.loads,
            "connections_open": len(self.connections),
            "requests_total": self._requests_total,
        }

    def requests(self) -> list[RequestRecord]:
        """The last /api/chat and /api/generate requests, oldest first."""
        return list(self._log)

    def update_config(self, changes: Mapping[str, Any]) -> None:
        """Change knobs live; raises ValueError (changing nothing) on a bad one."""
        self.config.apply(changes)
        if "seed" in changes:
            self.rng.seed(self.config.seed)
        if "parallel" in changes:
            self.host.grant()

    def evict(self) -> bool:
        """Unload the model now, as if evicted; returns whether one was loaded."""
        return self.host.unload()

    def reset(self) -> None:
        """Clear the request log and the counters, and reseed the random generator."""
        self._log.clear()
        self._requests_total = 0
        self.host.loads = 0
        self.host.reloads = 0
        self.rng.seed(self.config.seed)

    def jittered(self, milliseconds: float) -> float:
        """``milliseconds`` plus the configured jitter, in seconds, never negative."""
        jitter = self.config.jitter
        if jitter:
            milliseconds += self.rng.uniform(-jitter, jitter)
        return milliseconds / 1000 if milliseconds > 0 else 0.0

    def dispatch(self, conn: _Connection, request: _Request) -> None:
        """Route one request to its handler, as Ollama's gin router would."""
        conn.keep_alive = request.keep_alive
        conn.head_only = request.method == b"HEAD"
        if self.config.check_host and not _host_allowed(request.host):
            conn.respond(403, b"", b"")
            return
        methods = self._routes.get(request.target.partition(b"?")[0])
        if methods is None:
            conn.respond(404, _TEXT_PLAIN_GIN, b"404 page not found")
            return
        handler = methods.get(request.method)
        if handler is None:
            conn.respond(405, _TEXT_PLAIN_GIN, b"405 method not allowed")
            return
        handler(conn, request.body)

    # Ollama's endpoints

    def _root(self, conn: _Connection, body: bytes) -> None:
        conn.respond(200, _TEXT_PLAIN, b"Ollama is running")

    def _version(self, conn: _Connection, body: bytes) -> None:
        conn.respond_json(200, {"version": self.config.version})

    def _tags(self, conn: _Connection, body: bytes) -> None:
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": _MODIFIED_AT,
                "size": _MODEL_SIZE,
                "digest": _digest(name),
                "details": _DETAILS,
            }
            for name in self.config.models
        ]
        conn.respond_json(200, {"models": models})

    def _ps(self, conn: _Connection, body: bytes) -> None:
        loaded = self.host.loaded
        models = []
        if loaded is not None:
            size = _MODEL_SIZE + loaded.options.num_ctx * _KV_BYTES_PER_TOKEN
            models.append(
                {
                    "name": loaded.model,
                    "model": loaded.model,
                    "size": size,
                    "digest": _digest(loaded.model),
                    "details": _DETAILS,
                    "expires_at": _go_local_time(self.host.expires_at()),
                    "size_vram": size,
                    "context_length": loaded.options.num_ctx,
                }
            )
        conn.respond_json(200, {"models": models})

    def _show(self, conn: _Connection, raw: bytes) -> None:
        try:
            body = _decode_body(raw, "api.ShowRequest")
            model = _field(body, "model", str, "ShowRequest", "string") or ""
            model = model or _field(body, "name", str, "ShowRequest", "string") or ""
            if not model:
                raise _HttpError(400, "model is required")
            canonical = _canonical_name(model)
            if canonical not in {_canonical_name(name) for name in self.config.models}:
                raise _HttpError(404, f"model '{model}' not found")
        except _HttpError as error:
            conn.respond_json(error.status, {"error": error.message})
            return
        digest = _digest(canonical)
        conn.respond_json(
            200,
            {
                "license": "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT",
                "modelfile": (
                    '# Modelfile generated by "ollama show"\n'
                    "# To build a new Modelfile based on this, replace FROM with:\n"
                    f"# FROM {model}\n\n"
                    f"FROM /root/.ollama/models/blobs/sha256-{digest}\n"
                    f'TEMPLATE """{_TEMPLATE}"""\n'
                    + "".join(f'PARAMETER stop "{stop}"\n' for stop in _STOPS)
                ),
                "parameters": _PARAMETERS,
                "template": _TEMPLATE,
                "details": _DETAILS,
                "model_info": _MODEL_INFO,
                "capabilities": _CAPABILITIES,
                "modified_at": _MODIFIED_AT,
            },
        )

    def _chat(self, conn: _Connection, raw: bytes) -> None:
        self._inference(conn, raw, chat=True)

    def _generate(self, conn: _Connection, raw: bytes) -> None:
        self._inference(conn, raw, chat=False)

    def _inference(self, conn: _Connection, raw: bytes, *, chat: bool) -> None:
        received_ns = time.perf_counter_ns()
        record = RequestRecord(
            id=self._next_id,
            path="/api/chat" if chat else "/api/generate",
            body=None,
            received_at=time.time(),
        )
        self._next_id += 1
        self._requests_total += 1
        self._log.append(record)
        try:
            body = _decode_body(raw, "api.ChatRequest" if chat else "api.GenerateRequest")
            record.body = body
            ask = _parse_inference(body, chat=chat, config=self.config)
            directives = _Directives.parse(ask.last_text)
            if directives.status is not None:
                raise _HttpError(directives.status, self._status_message(directives.status, ask))
            if ask.empty and ask.session == 0:
                self.host.expire(ask.canonical)
                record.outcome = "done"
                record.first_byte_at = record.finished_at = time.time()
                conn.respond_json(200, _done_object(chat, ask.model, "unload"))
                return
            if (
                not self.host.ready(ask.canonical, ask.load_options)
                and self.host.pending >= self.config.max_queue
            ):
                raise _HttpError(503, BUSY_MESSAGE)
        except _HttpError as error:
            record.outcome = "rejected"
            record.first_byte_at = record.finished_at = time.time()
            conn.respond_json(error.status, {"error": error.message})
            return
        exchange: _LoadReply | _Generation
        if ask.empty:
            exchange = _LoadReply(self, conn, record, ask)
        else:
            exchange = _Generation(self, conn, record, self._plan(ask, directives), received_ns)
        conn.exchange = exchange
        exchange.begin()

    def _status_message(self, status: int, ask: _Inference) -> str:
        if status == 404:
            return f"model '{ask.model}' not found"
        if status == 503:
            return BUSY_MESSAGE
        if status == 500:
            return "llama runner process has terminated: exit status 2"
        try:
            return HTTPStatus(status).phrase.lower()
        except ValueError:
            return f"status code {status}"

    def _plan(self, ask: _Inference, directives: _Directives) -> _Plan:
        config = self.config
        tokens = config.tokens if directives.tokens is None else directives.tokens
        done_reason = "stop"
        if 0 <= ask.num_predict < tokens:
            tokens = ask.num_predict
            done_reason = "length"
        itl_ms = config.itl if directives.itl is None else directives.itl
        prompt_tokens = max(ask.prompt_chars // 4, 1)
        first_delay_ms = config.ttft if directives.ttft is None else directives.ttft
        first_delay_ms += config.ttft_per_prompt_token * prompt_tokens
        tool_call = _tool_call(ask.tools[0]) if ask.calls_tool and not directives.no_tool else None
        tool_mode = directives.tool_mode or config.tool_mode
        tool_tokens = 0
        emissions = tokens
        if tool_call is not None:
            tool_tokens = max(len(orjson.dumps(tool_call)) // 4, 1)
            first_delay_ms += (tool_tokens - 1) * itl_ms
            emissions = 1 if tool_mode == "chunk" else 0
            done_reason = "stop"
        fail_mode: FailMode = config.fail_mode
        fail_after: int | None = None
        if directives.failure is not None:
            fail_mode, fail_after = directives.failure
        elif config.fail_rate and self.rng.random() < config.fail_rate:
            fail_after = self.rng.randint(0, max(emissions - 1, 0))
        return _Plan(
            chat=ask.chat,
            stream=ask.stream,
            model=ask.model,
            canonical=ask.canonical,
            load_options=ask.load_options,
            session=ask.session,
            emissions=emissions,
            done_reason=done_reason,
            first_delay_ms=first_delay_ms,
            itl_ms=itl_ms,
            prompt_tokens=prompt_tokens,
            stops=ask.stops,
            tool_call=tool_call,
            tool_on_final=tool_mode == "final",
            tool_tokens=tool_tokens,
            fail_mode=fail_mode,
            fail_after=None if fail_after is None else min(fail_after, emissions),
        )

    # The control API

    def _sim_requests(self, conn: _Connection, body: bytes) -> None:
        conn.respond_json(200, self.requests())

    def _sim_stats(self, conn: _Connection, body: bytes) -> None:
        conn.respond_json(200, self.stats())

    def _sim_config(self, conn: _Connection, raw: bytes) -> None:
        if raw.strip():
            try:
                self.update_config(_decode_body(raw, "config"))
            except _HttpError as error:
                conn.respond_json(error.status, {"error": error.message})
                return
            except ValueError as error:
                conn.respond_json(400, {"error": str(error)})
                return
        conn.respond_json(200, self.config)

    def _sim_evict(self, conn: _Connection, body: bytes) -> None:
        conn.respond_json(200, {"evicted": self.evict()})

    def _sim_reset(self, conn: _Connection, body: bytes) -> None:
        self.reset()
        conn.respond_json(200, self.stats())


async def start(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> FakeOllama:
    """Start a simulator on the running event loop; ``port`` 0 picks a free port."""
    sim = FakeOllama(config, asyncio.get_running_loop())
    await sim.listen(host, port)
    return sim


# ---------------------------------------------------------------------------
# Command line


def build_arg_parser() -> argparse.ArgumentParser:
    """The command-line interface; every knob of SimConfig is a flag."""
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.fake_ollama",
        description="A simulated Ollama server speaking Ollama's HTTP API with scripted timing.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=11434, help="port; 0 picks a free one")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME",
        help=f"a model that exists (repeatable; default {defaults.models[0]})",
    )
    milliseconds: list[tuple[str, str]] = [
        ("ttft", "time to first token"),
        ("ttft-per-prompt-token", "extra time to first token per prompt token (chars / 4)"),
        ("itl", "time between tokens"),
        ("jitter", "uniform +- jitter on every delay"),
        ("load-ms", "time to load a cold model"),
    ]
    for flag, meaning in milliseconds:
        default = getattr(defaults, flag.replace("-", "_"))
        parser.add_argument(
            f"--{flag}",
            type=float,
            default=default,
            metavar="MS",
            help=f"{meaning} (ms, default %(default)s)",
        )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--tokens", type=int, default=defaults.tokens, help="reply length in tokens"
    )
    parser.add_argument("--parallel", type=int, default=defaults.parallel, help="generation slots")
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="requests that may wait for a load",
    )
    parser.add_argument(
        "--slowdown",
        type=float,
        default=defaults.slowdown,
        help="F: time between tokens grows by the factor 1 + F * busy_slots / parallel",
    )
    parser.add_argument("--preloaded", action="store_true", help="start with the model loaded")
    parser.add_argument(
        "--keep-alive", default=defaults.keep_alive, help="default keep_alive (Go duration)"
    )
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=defaults.fail_rate,
        help="probability of a failure per request",
    )
    parser.add_argument("--fail-mode", choices=_CHOICES["fail_mode"], default=defaults.fail_mode)
    parser.add_argument("--tool-mode", choices=_CHOICES["tool_mode"], default=defaults.tool_mode)
    parser.add_argument("--version", default=defaults.version, help="version /api/version reports")
    parser.add_argument(
        "--check-host", action="store_true", help="answer 403 to a non-local Host header"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """A SimConfig from parsed command-line arguments; raises ValueError on a bad knob."""
    knobs = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(SimConfig)
        if getattr(args, field.name) is not None
    }
    return SimConfig(**knobs)


async def serve(config: SimConfig, host: str, port: int) -> None:
    """Run until SIGTERM or SIGINT, announcing the address on stdout once listening."""
    sim = await start(config, host, port)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"fake-ollama listening on http://{shown_host}:{sim.port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        sim.loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m loadtest.fake_ollama``."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    uvloop.run(serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
