"""What a turn is made of: the request that goes into the core and the events that come out.

These types know nothing of HTTP, websockets or RunPod. Every adapter renders the
same events for its own wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Event",
    "Failure",
    "Finish",
    "FinishReason",
    "TextDelta",
    "ToolCall",
    "Turn",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One chat turn, already translated to Ollama's message shape.

    ``messages`` and ``tools`` are sent to Ollama as they are; ``options`` holds the
    sampling options of this turn (``num_predict``, ``temperature``...), to which the
    core adds its fixed load-time options; ``format`` is Ollama's structured-output
    ``format`` (``"json"`` or a JSON schema), if the request asked for one.

    ``call_id`` (VAPI's ``call.id``) and ``turn_id`` label the turn's log line.
    ``call_key`` names the conversation the turn belongs to (a call id, a socket, a
    client's ``prompt_cache_key`` or ``user``), so its turns can be kept where its
    prompt is cached. ``normalised`` lists the kinds of liberties taken with the request
    (``object_arguments``, ``non_function_tools``...): counted and logged, never the content.
    Without ``parallel_tool_calls`` a reply carries at most one tool call. ``live``
    says whether the caller hears the answer as it streams: a hold message is spoken
    only then (a whole completion would carry it in its content).
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    format: str | dict[str, Any] | None = None
    call_id: str | None = None
    turn_id: str | None = None
    call_key: str | None = None
    normalised: tuple[str, ...] = ()
    parallel_tool_calls: bool = True
    live: bool = True


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the spoken answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole tool call; ``arguments`` is a JSON object serialised as a string."""

    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and Ollama's own timings of one turn, in seconds."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    load_seconds: float = 0.0
    prompt_seconds: float = 0.0
    eval_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Finish:
    """The turn ended normally.

    ``fallback`` marks a turn that could not start, answered with the configured
    fallback message instead of an error.
    """

    reason: FinishReason
    usage: Usage
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class Failure:
    """The turn ended because of an error after it began streaming.

    ``code`` is a short machine-readable word (``upstream_error``, ``timeout``...);
    ``message`` is a clear sentence for logs and clients. ``usage`` counts what was
    streamed before the failure.
    """

    code: str
    message: str
    usage: Usage


Event = TextDelta | ToolCall | Finish | Failure
