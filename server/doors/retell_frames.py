"""The frames of Retell's LLM websocket, both ways, as typed models.

Retell → server, by ``interaction_type`` (:data:`RETELL_FRAME`, :func:`parse_frame`):
``ping_pong``, ``call_details``, ``update_only``, ``response_required`` and
``reminder_required``. Fields the server does not use are accepted and ignored, the
transcript's word timings (``words``) among them, so that reading a long call's
transcript costs no more than it must. Types are checked strictly.

Server → Retell, by ``response_type``: ``config``, ``ping_pong``, ``response``,
``tool_call_invocation`` and ``tool_call_result``, each serialised without its unset
optional fields (:func:`dump`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)

__all__ = [
    "INTERACTION_TYPES",
    "RETELL_FRAME",
    "CallDetails",
    "ConfigFrame",
    "FrameError",
    "PingPong",
    "PingPongFrame",
    "ResponseFrame",
    "ResponseRequired",
    "RetellConfig",
    "RetellFrame",
    "ToolCallInvocation",
    "ToolCallInvocationFrame",
    "ToolCallResult",
    "ToolCallResultFrame",
    "TranscriptItem",
    "UnknownFrame",
    "UpdateOnly",
    "Utterance",
    "dump",
    "parse_frame",
]


# Retell → server


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Utterance(_In):
    """What one party said: ``role`` is ``agent``, ``user``, ``transfer_target``...

    In ``transcript_with_tool_calls`` every item that is not a tool call or result
    is read as an utterance (``node_transition``, ``dtmf``... have no content).
    """

    role: str
    content: str = ""


class ToolCallInvocation(_In):
    """A tool call in ``transcript_with_tool_calls``; ``arguments`` is a JSON string."""

    role: Literal["tool_call_invocation"]
    tool_call_id: str
    name: str
    arguments: str = "{}"


class ToolCallResult(_In):
    """A tool call's result in ``transcript_with_tool_calls``."""

    role: Literal["tool_call_result"]
    tool_call_id: str
    content: str = ""


def _item_kind(item: Any) -> str:
    role = item.get("role") if isinstance(item, dict) else None
    return role if role in ("tool_call_invocation", "tool_call_result") else "utterance"


TranscriptItem = Annotated[
    Annotated[Utterance, Tag("utterance")]
    | Annotated[ToolCallInvocation, Tag("tool_call_invocation")]
    | Annotated[ToolCallResult, Tag("tool_call_result")],
    Discriminator(_item_kind),
]


class PingPong(_In):
    """Retell's keep-alive; answered with the same ``timestamp``."""

    interaction_type: Literal["ping_pong"]
    timestamp: int


class Call(_In):
    """The call object of ``call_details`` (only what the server reads)."""

    call_id: str | None = None
    retell_llm_dynamic_variables: dict[str, Any] | None = None


class CallDetails(_In):
    """Sent once after the config asks for it: the call, with its dynamic variables."""

    interaction_type: Literal["call_details"]
    call: Call


class UpdateOnly(_In):
    """The transcript so far; no answer expected."""

    interaction_type: Literal["update_only"]
    transcript: list[Utterance] = Field(default_factory=list)
    transcript_with_tool_calls: list[TranscriptItem] | None = None


class ResponseRequired(_In):
    """Retell wants the agent's answer (or, after silence, a reminder) as ``response_id``.

    A frame without a transcript answers the last one Retell sent.
    """

    interaction_type: Literal["response_required", "reminder_required"]
    response_id: int = Field(ge=0)
    transcript: list[Utterance] | None = None
    transcript_with_tool_calls: list[TranscriptItem] | None = None


RetellFrame = PingPong | CallDetails | UpdateOnly | ResponseRequired

INTERACTION_TYPES = (
    "ping_pong",
    "call_details",
    "update_only",
    "response_required",
    "reminder_required",
)

RETELL_FRAME: TypeAdapter[RetellFrame] = TypeAdapter(
    Annotated[RetellFrame, Field(discriminator="interaction_type")]
)


class UnknownFrame(Exception):
    """A well-formed frame of an ``interaction_type`` this server does not know."""

    def __init__(self, interaction_type: str) -> None:
        super().__init__(interaction_type)
        self.interaction_type = interaction_type


class FrameError(Exception):
    """A frame that cannot be read; the message says why and names the field.

    ``kind`` says what is wrong without the details (``invalid_json``,
    ``not_an_object``, ``no_interaction_type``, or the frame's type and field).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_frame(text: str) -> RetellFrame:
    """Read one text frame; raises :class:`UnknownFrame` or :class:`FrameError`."""
    try:
        return RETELL_FRAME.validate_json(text)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        kind = error["type"]
        if kind == "union_tag_invalid":
            raise UnknownFrame(str(error.get("ctx", {}).get("tag", ""))) from None
        if kind == "union_tag_not_found":
            raise FrameError("no_interaction_type", "'interaction_type' is required") from None
        if kind == "json_invalid":
            raise FrameError("invalid_json", "the frame is not valid JSON") from None
        if not error["loc"]:
            raise FrameError("not_an_object", "a frame must be a JSON object") from None
        interaction, *path = error["loc"]
        parts = [str(part) for part in path if part not in _TAGS]
        field = ".".join(parts)
        where = f"{interaction}.{'.'.join(p for p in parts if not p.isdigit())}"
        if kind == "missing":
            raise FrameError(where, f"{interaction}: '{field}' is required") from None
        raise FrameError(where, f"{interaction}: '{field}' is invalid: {error['msg']}") from None


# Location parts that name a member of the transcript item union rather than a field.
_TAGS = frozenset({"utterance", "tool_call_invocation", "tool_call_result"})


# Server → Retell


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetellConfig(_Out):
    """What the server asks of Retell for this call."""

    auto_reconnect: bool
    call_details: bool
    transcript_with_tool_calls: bool


class ConfigFrame(_Out):
    """Sent first on every socket."""

    response_type: Literal["config"] = "config"
    config: RetellConfig


class PingPongFrame(_Out):
    """A keep-alive, or the answer to Retell's (same ``timestamp``, in ms)."""

    response_type: Literal["ping_pong"] = "ping_pong"
    timestamp: int


class ResponseFrame(_Out):
    """A piece of the agent's answer ``response_id``; the last has ``content_complete``."""

    response_type: Literal["response"] = "response"
    response_id: int
    content: str
    content_complete: bool
    end_call: bool | None = None
    transfer_number: str | None = None


class ToolCallInvocationFrame(_Out):
    """A tool call the server is about to run, for Retell's transcript."""

    response_type: Literal["tool_call_invocation"] = "tool_call_invocation"
    tool_call_id: str
    name: str
    arguments: str


class ToolCallResultFrame(_Out):
    """What that tool call gave, for Retell's transcript."""

    response_type: Literal["tool_call_result"] = "tool_call_result"
    tool_call_id: str
    content: str


def dump(frame: _Out) -> str:
    """The frame as the JSON text Retell reads, unset optional fields left out."""
    return frame.model_dump_json(exclude_none=True)
