"""The OpenAI chat-completions request, validated at the edge and turned into a :class:`Turn`.

Shared by every adapter, so a body means the same thing over HTTP, over a websocket
and on RunPod. Liberal where a body's meaning is clear: the shapes other clients send
are normalised once, here and in :mod:`.normalise`, each kind counted and logged.
Strict where it is not: a body that is not an object, ``messages`` that is not a list,
a message without a valid ``role``, a field of the wrong JSON type with no obvious
conversion (``"stream": "yes"``) is a 400 naming the field. Fields the server does
not use (``model``, ``service_tier``, VAPI's ``customer`` and ``phoneNumber``,
ElevenLabs' ``elevenlabs_extra_body``...) are accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic_core import ErrorDetails

from ..core.errors import ServiceError
from ..core.events import Turn
from . import normalise

__all__ = [
    "CHAT_PATHS",
    "MODELS_PATHS",
    "ChatRequest",
    "field_error",
    "parse_chat_request",
]

# Where OpenAI clients post chats: VAPI appends /chat/completions to the URL it is
# given, and users paste the full path as that URL too.
CHAT_PATHS = frozenset(
    {
        "/chat/completions",
        "/v1/chat/completions",
        "/chat/completions/chat/completions",
        "/v1/chat/completions/chat/completions",
    }
)
MODELS_PATHS = frozenset({"/v1/models", "/models"})


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class FunctionCall(_Model):
    name: str
    arguments: str | dict[str, Any] | None = None  # a JSON string, or the object itself


class ToolCallIn(_Model):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(_Model):
    type: str
    text: str | None = None
    refusal: str | None = None


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None
    camel_tool_calls: list[ToolCallIn] | None = Field(default=None, alias="toolCalls")
    camel_tool_call_id: str | None = Field(default=None, alias="toolCallId")


class FunctionDef(_Model):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class FunctionTool(_Model):
    type: Literal["function"]
    function: FunctionDef


class OtherTool(_Model):
    """A tool of a type the model is not offered (VAPI's ``transferCall``...)."""

    type: str


def _tool_kind(value: object) -> str:
    return "function-tool" if type(value) is dict and value.get("type") == "function" else "other"


# Only a "function" tool's definition is validated. The tags stay out of error params.
ToolIn = Annotated[
    Annotated[FunctionTool, Tag("function-tool")] | Annotated[OtherTool, Tag("other")],
    Discriminator(_tool_kind),
]


class StreamOptions(_Model):
    include_usage: bool | None = None


class Body(_Model):
    """An OpenAI chat-completions request body: the fields the server acts on."""

    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | float | None = None
    max_completion_tokens: int | float | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    user_id: str | None = None  # ElevenLabs' end user
    call: Any = None  # VAPI's call object; only its id is read


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request, already in Ollama's shapes.

    ``messages`` holds no configured system prompt yet (:meth:`to_turn` adds it);
    ``normalised`` lists the kinds of :mod:`.normalise` applied, in order, once each.
    """

    messages: list[dict[str, Any]]
    has_system: bool
    tools: list[dict[str, Any]] | None
    options: dict[str, Any]
    format: str | dict[str, Any] | None
    stream: bool
    include_usage: bool
    parallel_tool_calls: bool
    call_id: str | None
    call_key: str | None
    normalised: tuple[str, ...]

    def to_turn(self, system_prompt: str | None = None, turn_id: str | None = None) -> Turn:
        """The turn for the core; ``system_prompt`` fills in a missing system message.

        ``turn_id`` labels the turn in the logs, with VAPI's call id when present.
        """
        messages = self.messages
        if system_prompt and not self.has_system:
            messages = [{"role": "system", "content": system_prompt}, *messages]
        return Turn(
            messages=messages,
            tools=self.tools,
            options=self.options,
            format=self.format,
            call_id=self.call_id,
            turn_id=turn_id,
            call_key=self.call_key,
            normalised=self.normalised,
            parallel_tool_calls=self.parallel_tool_calls,
        )


def field_error(exc: ValidationError, names: frozenset[str], prefix: str = "") -> ServiceError:
    """A 400 that names the first invalid field of a validation error.

    ``names`` are the models' field names: pydantic also puts union members (``str``,
    ``list[ContentPart]``) in an error's location, and those are left out of ``param``.
    Of a union's errors, the one that reaches deepest names the field (a content part's
    ``text`` rather than the whole ``content``).
    """

    def path(error: ErrorDetails) -> str:
        return ".".join(str(p) for p in error["loc"] if isinstance(p, int) or p in names)

    errors = exc.errors(include_url=False)
    error, where = errors[0], path(errors[0])
    for other in errors[1:]:
        deeper = path(other)
        if deeper.startswith(where + ".") or (not where and deeper):
            error, where = other, deeper
    param = prefix + where if where else prefix.rstrip(".")
    if error["type"] == "missing":
        message = f"'{param}' is required"
    else:
        message = f"'{param}' is invalid: {error['msg']}"
    return ServiceError(400, "invalid_value", message, param=param)


_MODELS = (
    Body,
    Message,
    ContentPart,
    ToolCallIn,
    FunctionCall,
    StreamOptions,
    FunctionTool,
    FunctionDef,
)
_FIELD_NAMES = frozenset(
    field.alias or name for model in _MODELS for name, field in model.model_fields.items()
)


def parse_chat_request(
    data: object, max_messages: int | None = None, max_message_chars: int | None = None
) -> ChatRequest:
    """Validate and normalise a decoded JSON body; raises :class:`ServiceError` (400) naming
    the field.

    ``max_messages`` bounds the conversation's length and ``max_message_chars`` each
    message's text.
    """
    if not isinstance(data, dict):
        raise ServiceError(
            400, "invalid_request", "the request body must be a JSON object", param=None
        )
    entries = data.get("messages")
    if max_messages is not None and isinstance(entries, list) and len(entries) > max_messages:
        raise ServiceError(
            400,
            "too_many_messages",
            f"'messages' has {len(entries)} messages; the limit is {max_messages}",
            param="messages",
        )
    try:
        body = Body.model_validate(data)
    except ValidationError as exc:
        raise field_error(exc, _FIELD_NAMES) from None
    kinds: list[str] = []
    messages, has_system, conversation = normalise.messages(body.messages, kinds)
    if max_message_chars is not None:
        for i, message in enumerate(messages):
            size = len(message["content"])
            if size > max_message_chars:
                raise ServiceError(
                    400,
                    "message_too_long",
                    f"'messages.{i}.content' has {size} characters; the limit is "
                    f"{max_message_chars}",
                    param=f"messages.{i}.content",
                )
    if not conversation:
        messages.append(normalise.OPENING_LINE)
        kinds.append("opening_line")
    tools = normalise.tools(body, _function_tools(body.tools, kinds), kinds)
    options = normalise.options(body, kinds)
    output_format = normalise.output_format(body.response_format)
    if body.reasoning_effort is not None and body.reasoning_effort != "none":
        kinds.append("reasoning_effort")
    call_id = normalise.call_id(body.call)
    return ChatRequest(
        messages=messages,
        has_system=has_system,
        tools=tools,
        options=options,
        format=output_format,
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        parallel_tool_calls=body.parallel_tool_calls is not False,
        call_id=call_id,
        call_key=call_id or body.prompt_cache_key or body.user or body.user_id,
        normalised=tuple(dict.fromkeys(kinds)),
    )


def _function_tools(tools: list[ToolIn] | None, kinds: list[str]) -> list[FunctionDef]:
    """The definitions of the function tools; tools of other types are left out."""
    functions = []
    for tool in tools or ():
        if isinstance(tool, FunctionTool):
            functions.append(tool.function)
        else:
            kinds.append("non_function_tools")
    return functions
