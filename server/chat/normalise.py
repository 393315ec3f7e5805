"""The liberal shapes of a chat request, turned into Ollama's: messages, tools, options, format.

Clients other than OpenAI's own (VAPI, LiveKit, Pipecat, ElevenLabs) and older OpenAI
versions send bodies whose meaning is clear but whose shape is not today's OpenAI
shape. Each liberty taken is recorded as one of these kind names (never the content),
counted in ``voice_llm_requests_normalised_total{kind}`` and put in the turn's log line:

``object_arguments``
    an assistant tool call's ``arguments`` was a JSON object rather than a JSON string
``non_function_tools``
    tools whose ``type`` is not ``function`` (VAPI's ``transferCall``, ``endCall``,
    ``dtmf``...) were not offered to the model
``content_parts_dropped``
    content parts the model cannot read (``image_url``, ``input_audio``, ``file``,
    unknown types, parts without their text) were dropped; the text parts are kept
``refusal_text``
    a ``refusal`` content part was read as text
``opening_line``
    no conversation yet (no message, or system messages only): the model was asked
    for the opening line
``legacy_functions``
    OpenAI's legacy function calling: top-level ``functions`` and ``function_call``,
    an assistant's ``function_call``, a ``role: "function"`` result
``camel_case``
    ``toolCalls`` / ``toolCallId`` read as ``tool_calls`` / ``tool_call_id``
``float_max_tokens``
    ``max_tokens`` or ``max_completion_tokens`` was a float: rounded down
``clamped_sampling``
    ``temperature``, ``top_p`` or a penalty outside OpenAI's range: clamped into it
``tool_choice``
    a ``tool_choice`` Ollama cannot enforce: ``"required"`` offers every tool, a named
    function only that one, and the model may still answer in words
``reasoning_effort``
    ``reasoning_effort`` asked for reasoning; the model never thinks before speaking
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import orjson

from ..core.errors import ServiceError

if TYPE_CHECKING:
    from .request import Body, ContentPart, FunctionDef, Message

__all__ = [
    "KINDS",
    "OPENING_LINE",
    "call_id",
    "invalid",
    "messages",
    "options",
    "output_format",
    "tools",
]

KINDS = (
    "object_arguments",
    "non_function_tools",
    "content_parts_dropped",
    "refusal_text",
    "opening_line",
    "legacy_functions",
    "camel_case",
    "float_max_tokens",
    "clamped_sampling",
    "tool_choice",
    "reasoning_effort",
)

# Asked as the caller's turn when there is no conversation yet: every chat template
# renders the system prompt and the assistant's cue only before a user message (a
# system message alone renders as nothing, or as an unfinished instruction).
OPENING_LINE = {
    "role": "user",
    "content": "[The call has just connected. Greet the caller with your opening line.]",
}

# OpenAI's ranges, into which out-of-range sampling options are clamped.
_RANGES = (
    ("temperature", 0.0, 2.0),
    ("top_p", 0.0, 1.0),
    ("frequency_penalty", -2.0, 2.0),
    ("presence_penalty", -2.0, 2.0),
)
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def invalid(param: str, reason: str) -> ServiceError:
    """A 400 naming the field at fault."""
    return ServiceError(400, "invalid_value", f"'{param}' is invalid: {reason}", param=param)


def messages(entries: list[Message], kinds: list[str]) -> tuple[list[dict[str, Any]], bool, bool]:
    """Ollama's messages, one per entry, and whether a system and a conversation message
    (user, assistant or tool) were among them.

    Ollama names the tool a result answers rather than the call's id: the name comes
    from the result's ``name``, else from the assistant's call with that id.
    """
    out: list[dict[str, Any]] = []
    has_system = conversation = False
    names: dict[str, str] = {}
    for i, entry in enumerate(entries):
        text = _text(entry.content, kinds)
        role = entry.role
        if role == "user":
            out.append({"role": "user", "content": text})
            conversation = True
        elif role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            calls = _calls(i, entry, names, kinds)
            if calls:
                message["tool_calls"] = calls
            out.append(message)
            conversation = True
        elif role == "system" or role == "developer":
            out.append({"role": "system", "content": text})
            has_system = True
        else:  # a tool's result
            if role == "function":
                kinds.append("legacy_functions")
            call = entry.tool_call_id
            if call is None and entry.camel_tool_call_id is not None:
                call = entry.camel_tool_call_id
                kinds.append("camel_case")
            name = entry.name or names.get(call or "")
            result = {"role": "tool", "content": text}
            if name:
                result["tool_name"] = name
            out.append(result)
            conversation = True
    return out, has_system, conversation


def _text(content: str | list[ContentPart] | None, kinds: list[str]) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    texts = []
    dropped = False
    for part in content:
        kind = part.type
        if kind == "text" and part.text is not None:
            texts.append(part.text)
        elif kind == "refusal" and part.refusal is not None:
            texts.append(part.refusal)
            kinds.append("refusal_text")
        else:
            dropped = True
    if dropped:
        kinds.append("content_parts_dropped")
    return "".join(texts)


def _calls(
    index: int, entry: Message, names: dict[str, str], kinds: list[str]
) -> list[dict[str, Any]]:
    calls = entry.tool_calls
    field = "tool_calls"
    if calls is None and entry.camel_tool_calls is not None:
        calls, field = entry.camel_tool_calls, "toolCalls"
        kinds.append("camel_case")
    out = []
    for j, call in enumerate(calls or ()):
        function = call.function
        param = f"messages.{index}.{field}.{j}.function.arguments"
        arguments = _arguments(function.arguments, param, kinds)
        out.append({"function": {"name": function.name, "arguments": arguments}})
        if call.id:
            names[call.id] = function.name
    legacy = entry.function_call
    if legacy is not None:
        kinds.append("legacy_functions")
        param = f"messages.{index}.function_call.arguments"
        arguments = _arguments(legacy.arguments, param, kinds)
        out.append({"function": {"name": legacy.name, "arguments": arguments}})
    return out


def _arguments(value: str | dict[str, Any] | None, param: str, kinds: list[str]) -> Any:
    """A tool call's arguments as the JSON object Ollama takes."""
    if value is None:
        return {}
    if type(value) is not str:
        kinds.append("object_arguments")
        return value
    if not value.strip():
        return {}
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise invalid(param, "not valid JSON") from None
    if type(decoded) is not dict:
        raise invalid(param, "not a JSON object")
    return decoded


def tools(
    body: Body, functions: list[FunctionDef], kinds: list[str]
) -> list[dict[str, Any]] | None:
    """The tools offered to the model: the function tools, then legacy ``functions``,
    narrowed by ``tool_choice`` (or legacy ``function_call``).

    Ollama has no ``tool_choice``: ``"none"`` offers no tool, ``"required"`` every tool,
    a named function only that one (every tool when none has that name); the model
    decides whether to call it.
    """
    offered = [_tool(function) for function in functions]
    if body.functions:
        kinds.append("legacy_functions")
        offered.extend(_tool(function) for function in body.functions)
    choice: str | dict[str, Any] | None = body.tool_choice
    param = "tool_choice"
    if choice is None and body.function_call is not None:
        choice, param = body.function_call, "function_call"
        kinds.append("legacy_functions")
    if choice is None or choice == "auto":
        return offered or None
    if choice == "none":
        return None
    if choice == "required":
        kinds.append("tool_choice")
        return offered or None
    name = _chosen(choice)
    if name is None:
        raise invalid(param, "expected 'none', 'auto', 'required' or a named function")
    kinds.append("tool_choice")
    named = [tool for tool in offered if tool["function"]["name"] == name]
    return named or offered or None


def _tool(function: FunctionDef) -> dict[str, Any]:
    """A function tool as Ollama takes it (``strict`` and other keys left out)."""
    definition: dict[str, Any] = {"name": function.name}
    if function.description is not None:
        definition["description"] = function.description
    parameters = function.parameters
    definition["parameters"] = _NO_PARAMETERS if parameters is None else parameters
    return {"type": "function", "function": definition}


def _chosen(choice: object) -> str | None:
    """The function a named choice names: ``{"type": "function", "function": {"name"}}``,
    or legacy ``{"name"}``."""
    if type(choice) is not dict:
        return None
    function = choice.get("function") if choice.get("type") == "function" else choice
    name = function.get("name") if type(function) is dict else None
    return name if isinstance(name, str) and name else None


def options(body: Body, kinds: list[str]) -> dict[str, Any]:
    """Ollama's sampling options from the request's (load-time options are the engine's)."""
    result: dict[str, Any] = {}
    limit = None
    for name in ("max_tokens", "max_completion_tokens"):  # the newer name wins
        value = getattr(body, name)
        if value is None:
            continue
        if type(value) is float:
            if not math.isfinite(value):
                raise invalid(name, "must be a whole number of tokens")
            value = math.floor(value)
            kinds.append("float_max_tokens")
        if value < 1:
            raise invalid(name, "must be at least 1")
        limit = value
    if limit is not None:
        result["num_predict"] = limit
    for name, low, high in _RANGES:
        number = getattr(body, name)
        if number is not None:
            if not low <= number <= high:
                number = min(max(number, low), high)
                kinds.append("clamped_sampling")
            result[name] = number
    if body.seed is not None:
        result["seed"] = body.seed
    if body.stop is not None:
        result["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    return result


def output_format(response_format: dict[str, Any] | None) -> str | dict[str, Any] | None:
    """Ollama's ``format`` for ``response_format``: ``json_object`` is ``"json"``,
    ``json_schema`` its schema (``"json"`` without one), ``text`` none."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if type(spec) is dict else None
        return schema if type(schema) is dict else "json"
    raise invalid("response_format.type", "expected 'text', 'json_object' or 'json_schema'")


def call_id(call: object) -> str | None:
    """VAPI's call id: ``call.id``, or ``call.callId`` in older bodies."""
    if type(call) is not dict:
        return None
    for key in ("id", "callId"):
        value = call.get(key)
        if isinstance(value, str) and value:
            return value
    return None
