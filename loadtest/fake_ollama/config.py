"""The simulator's knobs (:class:`SimConfig`) and the Go durations some of them take."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

FailMode = Literal["error", "stall", "drop", "end"]
ToolMode = Literal["auto", "chunk", "final"]
ProfileName = Literal["llama3.1", "qwen3", "gpt-oss", "native"]

CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "fail_mode": ("error", "stall", "drop", "end"),
    "tool_mode": ("auto", "chunk", "final"),
    "profiles": ("llama3.1", "qwen3", "gpt-oss", "native"),
}
_MINIMUMS: Final[dict[str, float]] = {
    "ttft": 0,
    "ttft_per_prompt_token": 0,
    "cache_restore_per_token": 0,
    "itl": 0,
    "jitter": 0,
    "tokens": 0,
    "think_tokens": 0,
    "tool_calls": 1,
    "text_before_call": 0,
    "parallel": 1,
    "max_queue": 0,
    "slowdown": 0,
    "load_ms": 0,
    "fail_rate": 0,
    "slot_similarity": 0,
    "cache_ram_mib": 0,
}
_MAXIMUMS: Final[dict[str, float]] = {"fail_rate": 1, "slot_similarity": 1}


@dataclasses.dataclass(slots=True)
class SimConfig:
    """Every knob of the simulator (times in milliseconds); defaults as Ollama 0.32.

    Most knobs are read when a request arrives, so a change applies to the
    requests that start after it; ``jitter`` and ``slowdown`` are read at every
    token, and ``parallel`` resizes the loaded model's slots at once. The field
    names are the knob names of the command line (with dashes) and of
    ``POST /_sim/config``.
    """

    models: tuple[str, ...] = ("llama3.1:8b",)
    profiles: dict[str, str] = dataclasses.field(default_factory=dict)
    ttft: float = 50.0
    ttft_per_prompt_token: float = 0.0
    cache_restore_per_token: float = 0.0
    itl: float = 20.0
    jitter: float = 0.0
    seed: int = 0
    tokens: int = 40
    think_tokens: int = 16
    think_anyway: bool = False
    tool_calls: int = 1
    text_before_call: int = 0
    parallel: int = 1
    max_queue: int = 512
    slowdown: float = 0.0
    load_ms: float = 500.0
    preloaded: bool = False
    keep_alive: str = "5m"
    prompt_cache: bool = True
    slot_similarity: float = 0.1
    cache_ram_mib: int = 8192
    abort_load: bool = True
    load_fail: bool = False
    crash_on_error: bool = True
    slot_leak: bool = False
    fail_rate: float = 0.0
    fail_mode: FailMode = "error"
    tool_mode: ToolMode = "auto"
    version: str = "0.32.15"
    check_host: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, _checked_knob(field.name, getattr(self, field.name)))

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Set several knobs at once; raises ValueError (changing nothing) on a bad one."""
        checked = {name: _checked_knob(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


_KNOB_DEFAULTS: Final[dict[str, Any]] = {
    field.name: _default(field) for field in dataclasses.fields(SimConfig)
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
    if isinstance(default, dict):
        return _checked_profiles(name, value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"knob {name!r} takes true or false")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"knob {name!r} takes a string")
        choices = CHOICES.get(name)
        if choices is not None and value not in choices:
            raise ValueError(f"knob {name!r} takes one of {', '.join(choices)}")
        if name == "keep_alive":
            parse_keep_alive(value)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"knob {name!r} takes a number")
    if isinstance(default, int) and not isinstance(value, int):
        raise ValueError(f"knob {name!r} takes an integer")
    if value < _MINIMUMS.get(name, -math.inf) or value > _MAXIMUMS.get(name, math.inf):
        raise ValueError(f"knob {name!r} is out of range: {value}")
    return type(default)(value)


def _checked_profiles(name: str, value: Any) -> dict[str, str]:
    """A ``{model: profile}`` mapping, or ValueError."""
    choices = CHOICES["profiles"]
    if not isinstance(value, Mapping):
        raise ValueError(f"knob {name!r} takes an object of model names to profiles")
    for model, profile in value.items():
        if not isinstance(model, str) or not model or profile not in choices:
            raise ValueError(f"knob {name!r}: {model!r} takes one of {', '.join(choices)}")
    return dict(value)


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
