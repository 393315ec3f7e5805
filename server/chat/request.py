"""The OpenAI chat-completions request, validated at the edge and turned into a :class:`Turn`.

Shared by every adapter, so a body means the same thing over HTTP, over a websocket
and on RunPod. Fields OpenAI or VAPI send that the server does not use (``call``,
``customer``, ``phoneNumber``, ``metadata``, ``tool_choice``...) are accepted and
ignored. Types are checked strictly: ``"stream": "yes"`` is an error, not a guess.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import ServiceError
from ..core.events import Turn

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
    arguments: str = "{}"


class ToolCallIn(_Model):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(_Model):
    type: str
    text: str | None = None


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Model):
    include_usage: bool | None = None


class FunctionDef(_Model):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(_Model):
    type: Literal["function"]
    function: FunctionDef


class ChatRequest(_Model):
    """An OpenAI chat-completions request body (the fields the server acts on)."""

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[ToolDef] | None = None
    call: Any = None  # VAPI's call object; only its id is read, for the logs

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for a usage chunk at the end of the stream."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_turn(self, system_prompt: str | None = None, turn_id: str | None = None) -> Turn:
        """Translate to Ollama's message shape; ``system_prompt`` fills in a missing one.

        ``turn_id`` labels the turn in the logs, with VAPI's ``call.id`` when present.

        Raises :class:`ServiceError` (400) for content Ollama cannot take.
        """
        messages: list[dict[str, Any]] = []
        if system_prompt and not any(m.role in ("system", "developer") for m in self.messages):
            messages.append({"role": "system", "content": system_prompt})
        tool_names: dict[str, str] = {}
        for i, message in enumerate(self.messages):
            messages.append(_to_ollama(i, message, tool_names))

        options: dict[str, Any] = {}
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        for name in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        if self.stop is not None:
            options["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop

        tools = [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None
        call_id = self.call.get("id") if isinstance(self.call, dict) else None
        return Turn(
            messages=messages,
            tools=tools,
            options=options,
            call_id=call_id if isinstance(call_id, str) else None,
            turn_id=turn_id,
        )


def _text(index: int, content: str | list[ContentPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise ServiceError(
                400,
                "unsupported_content",
                f"messages.{index}.content.{j}: only text parts are supported, not {part.type!r}",
                param=f"messages.{index}.content",
            )
        texts.append(part.text)
    return "".join(texts)


def _to_ollama(index: int, message: Message, tool_names: dict[str, str]) -> dict[str, Any]:
    role = message.role
    content = _text(index, message.content)
    if role in ("system", "developer"):
        return {"role": "system", "content": content}
    if role == "user":
        return {"role": "user", "content": content}
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": content}
        if message.tool_calls:
            calls = []
            for j, call in enumerate(message.tool_calls):
                param = f"messages.{index}.tool_calls.{j}.function.arguments"
                try:
                    arguments = orjson.loads(call.function.arguments or "{}")
                except orjson.JSONDecodeError:
                    raise ServiceError(
                        400, "invalid_value", f"{param} is not valid JSON", param=param
                    ) from None
                if call.id:
                    tool_names[call.id] = call.function.name
                calls.append({"function": {"name": call.function.name, "arguments": arguments}})
            out["tool_calls"] = calls
        return out
    # A tool result: Ollama names the tool it answers rather than the call's id.
    name = message.name if role == "function" else tool_names.get(message.tool_call_id or "")
    out = {"role": "tool", "content": content}
    if name:
        out["tool_name"] = name
    return out


def field_error(exc: ValidationError, names: frozenset[str], prefix: str = "") -> ServiceError:
    """A 400 that names the first invalid field of a validation error.

    ``names`` are the models' field names: pydantic also puts union members (``str``,
    ``list[ContentPart]``) in an error's location, and those are left out of ``param``.
    """
    error = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in error["loc"] if isinstance(part, int) or part in names)
    param = prefix + path
    if error["type"] == "missing":
        message = f"'{param}' is required"
    else:
        message = f"'{param}' is invalid: {error['msg']}"
    return ServiceError(400, "invalid_value", message, param=param)


_MODELS = (ChatRequest, Message, ContentPart, ToolCallIn, FunctionCall, StreamOptions, ToolDef)
_FIELD_NAMES = frozenset(name for model in (*_MODELS, FunctionDef) for name in model.model_fields)


def parse_chat_request(
    data: object, max_messages: int | None = None, max_message_chars: int | None = None
) -> ChatRequest:
    """Validate a decoded JSON body; raises :class:`ServiceError` (400) naming the field.

    ``max_messages`` bounds the conversation's length and ``max_message_chars`` each
    message's text.
    """
    if not isinstance(data, dict):
        raise ServiceError(
            400, "invalid_request", "the request body must be a JSON object", param=None
        )
    messages = data.get("messages")
    if max_messages is not None and isinstance(messages, list) and len(messages) > max_messages:
        raise ServiceError(
            400,
            "too_many_messages",
            f"'messages' has {len(messages)} messages; the limit is {max_messages}",
            param="messages",
        )
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise field_error(exc, _FIELD_NAMES) from None
    if max_message_chars is not None:
        for i, entry in enumerate(request.messages):
            size = len(_text(i, entry.content))
            if size > max_message_chars:
                raise ServiceError(
                    400,
                    "message_too_long",
                    f"'messages.{i}.content' has {size} characters; the limit is "
                    f"{max_message_chars}",
                    param=f"messages.{i}.content",
                )
    return request
