"""The calls of ``tool-calls`` (and legacy ``function-call``) messages, and their results.

VAPI sends ``{"toolCallList": [{id, type, function: {name, arguments}}]}``; its docs also
show ``{id, name, arguments}`` and ``{id, name, parameters}``. The legacy
``function-call`` message carries one ``{"functionCall": {name, parameters}}``. Arguments
may be a JSON object or a JSON string of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...chat.request import field_error
from ...core.errors import ServiceError
from ...tools import ToolOutcome, ToolRegistry

__all__ = ["Call", "parse_calls", "parse_function_call", "result", "run"]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Function(_Model):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str | None = None
    parameters: dict[str, Any] | str | None = None


class _ToolCall(_Model):
    id: str = Field(min_length=1)
    function: _Function | None = None
    name: str | None = Field(default=None, min_length=1)
    arguments: dict[str, Any] | str | None = None
    parameters: dict[str, Any] | None = None


class _ToolCalls(_Model):
    toolCallList: list[_ToolCall]


class _FunctionCall(_Model):
    functionCall: _Function


_FIELD_NAMES = frozenset(
    name
    for model in (_Function, _ToolCall, _ToolCalls, _FunctionCall)
    for name in model.model_fields
)


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call to run: its arguments, or why they are unusable."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    problem: str | None = None


def _call(call_id: str, name: str, *given: dict[str, Any] | str | None) -> Call:
    """The call with the first arguments given, decoded from JSON if need be."""
    raw = next((value for value in given if value is not None), None)
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return Call(call_id, name, None, "the arguments are not valid JSON")
    if raw is not None and not isinstance(raw, dict):
        return Call(call_id, name, None, "the arguments are not a JSON object")
    return Call(call_id, name, raw or {})


def parse_calls(message: dict[str, Any]) -> list[Call]:
    """The tool calls of a ``tool-calls`` message; raises a 400 naming a bad field."""
    try:
        parsed = _ToolCalls.model_validate(message)
    except ValidationError as exc:
        raise field_error(exc, _FIELD_NAMES, "message.") from None
    calls = []
    for i, item in enumerate(parsed.toolCallList):
        function = item.function
        name = function.name if function is not None else item.name
        if name is None:
            param = f"message.toolCallList.{i}.function.name"
            raise ServiceError(400, "invalid_value", f"'{param}' is required", param=param)
        calls.append(
            _call(
                item.id,
                name,
                function.arguments if function else None,
                function.parameters if function else None,
                item.arguments,
                item.parameters,
            )
        )
    return calls


def parse_function_call(message: dict[str, Any]) -> Call:
    """The call of a legacy ``function-call`` message; raises a 400 naming a bad field."""
    try:
        function = _FunctionCall.model_validate(message).functionCall
    except ValidationError as exc:
        raise field_error(exc, _FIELD_NAMES, "message.") from None
    return _call("", function.name, function.parameters, function.arguments)


async def run(tools: ToolRegistry, call: Call) -> ToolOutcome:
    """Run one call with the registry; unusable arguments are its error."""
    if call.arguments is None:
        return ToolOutcome(error=call.problem)
    return await tools.call(call.name, call.arguments)


def result(call: Call, outcome: ToolOutcome) -> dict[str, Any]:
    """One entry of a ``tool-calls`` answer: ``{name, toolCallId, result | error}``."""
    entry: dict[str, Any] = {"name": call.name, "toolCallId": call.id}
    if outcome.error is not None:
        entry["error"] = outcome.error
    else:
        entry["result"] = outcome.result
    return entry
