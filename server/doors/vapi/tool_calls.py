"""The tool calls of a ``tool-calls`` message, and the results VAPI expects for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...chat.request import field_error
from ...core.errors import ServiceError
from ...tools import ToolOutcome

__all__ = ["Call", "parse_calls", "result"]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Function(_Model):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str | None = None
    parameters: dict[str, Any] | None = None


class _ToolCall(_Model):
    # VAPI sends {id, type, function: {name, arguments}}; its docs also show
    # {id, name, arguments} and {id, name, parameters}.
    id: str = Field(min_length=1)
    function: _Function | None = None
    name: str | None = Field(default=None, min_length=1)
    arguments: dict[str, Any] | str | None = None
    parameters: dict[str, Any] | None = None


class _ToolCalls(_Model):
    toolCallList: list[_ToolCall]


_FIELD_NAMES = frozenset(
    name for model in (_Function, _ToolCall, _ToolCalls) for name in model.model_fields
)


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call to run: its arguments, or why they are unusable."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    problem: str | None = None


def parse_calls(message: dict[str, Any]) -> list[Call]:
    """The tool calls of a ``tool-calls`` message; raises a 400 naming a bad field."""
    try:
        parsed = _ToolCalls.model_validate(message)
    except ValidationError as exc:
        raise field_error(exc, _FIELD_NAMES, "message.") from None
    calls = []
    for i, item in enumerate(parsed.toolCallList):
        name = item.function.name if item.function is not None else item.name
        if name is None:
            param = f"message.toolCallList.{i}.function.name"
            raise ServiceError(400, "invalid_value", f"'{param}' is required", param=param)
        raw: dict[str, Any] | str | None = None
        for value in (
            item.function.arguments if item.function else None,
            item.function.parameters if item.function else None,
            item.arguments,
            item.parameters,
        ):
            if value is not None:
                raw = value
                break
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw) if raw.strip() else {}
            except orjson.JSONDecodeError:
                calls.append(Call(item.id, name, None, "the arguments are not valid JSON"))
                continue
        if raw is not None and not isinstance(raw, dict):
            calls.append(Call(item.id, name, None, "the arguments are not a JSON object"))
            continue
        calls.append(Call(item.id, name, raw or {}))
    return calls


def result(call: Call, outcome: ToolOutcome) -> dict[str, Any]:
    result: dict[str, Any] = {"name": call.name, "toolCallId": call.id}
    if outcome.error is not None:
        result["error"] = outcome.error
    else:
        result["result"] = outcome.result
    return result
