"""What a request asks for and the reply planned for it.

A chat or generate body is validated as Ollama validates it
(:func:`parse_inference`), the ``[[name:value]]`` directives in its last user
message are read (:class:`Directives`), and :func:`plan_reply` scripts the
reply: how many tokens, at what pace, whether it calls a tool, and whether and
where it fails. The reply's words are a fixed cycle (:func:`reply_text`).
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Final

import orjson

from .config import FailMode, SimConfig, ToolMode, parse_keep_alive
from .scheduler import LoadOptions
from .wire import HttpError, JsonObject, canonical_name, json_field, json_kind

# The reply: token i is VOCAB[i % len(VOCAB)], the very first one without its space.
VOCAB: Final = (
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
_FIRST_TOKEN: Final = VOCAB[0].lstrip()
VOCAB_JSON: Final = tuple(orjson.dumps(word) for word in VOCAB)
FIRST_TOKEN_JSON: Final = orjson.dumps(_FIRST_TOKEN)


def reply_text(tokens: int) -> str:
    """The whole content of a reply of ``tokens`` tokens."""
    return "".join(token_text(index) for index in range(tokens))


def token_text(index: int) -> str:
    """The text of token ``index`` of a reply."""
    return VOCAB[index % len(VOCAB)] if index else _FIRST_TOKEN


@dataclasses.dataclass(frozen=True, slots=True)
class Directives:
    """Per-request behaviour asked for in the last user message, as ``[[name:value]]``."""

    tokens: int | None = None
    ttft: float | None = None
    itl: float | None = None
    failure: tuple[FailMode, int] | None = None
    tool_mode: ToolMode | None = None
    no_tool: bool = False
    status: int | None = None

    @classmethod
    def parse(cls, text: str) -> Directives:
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
_NO_DIRECTIVES: Final = Directives()


@dataclasses.dataclass(slots=True)
class Inference:
    """A validated /api/chat or /api/generate request."""

    chat: bool
    model: str
    canonical: str
    empty: bool
    session: float | None
    stream: bool = True
    load_options: LoadOptions = dataclasses.field(default_factory=LoadOptions)
    num_predict: int = -1
    stops: tuple[str, ...] = ()
    prompt_chars: int = 0
    last_text: str = ""
    tools: list[Any] = dataclasses.field(default_factory=list)
    calls_tool: bool = False


@dataclasses.dataclass(slots=True)
class Plan:
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


def parse_inference(body: JsonObject, *, chat: bool, config: SimConfig) -> Inference:
    """Validate a decoded chat or generate request the way Ollama does, in its order."""
    struct = "ChatRequest" if chat else "GenerateRequest"
    model = json_field(body, "model", str, struct, "string") or ""
    stream = json_field(body, "stream", bool, struct, "bool")
    options = json_field(body, "options", dict, struct, "map[string]interface {}") or {}
    keep_alive = body.get("keep_alive")
    try:
        session = (
            parse_keep_alive(config.keep_alive)
            if keep_alive is None
            else parse_keep_alive(keep_alive)
        )
    except ValueError as error:
        raise HttpError(400, str(error)) from None
    tools: list[Any] = []
    last_text = ""
    calls_tool = False
    if chat:
        messages = json_field(body, "messages", list, struct, "[]api.Message") or []
        tools = json_field(body, "tools", list, struct, "api.Tools") or []
        prompt_chars = 0
        for message in messages:
            if not isinstance(message, dict):
                raise HttpError(
                    400,
                    f"json: cannot unmarshal {json_kind(message)} into Go struct field "
                    f"ChatRequest.messages of type api.Message",
                )
            content = json_field(message, "content", str, "ChatRequest.messages", "string") or ""
            prompt_chars += len(content)
            if message.get("role") == "user":
                last_text = content
        empty = not messages
        calls_tool = bool(tools) and not empty and messages[-1].get("role") == "user"
    else:
        prompt = json_field(body, "prompt", str, struct, "string") or ""
        prompt_chars = len(prompt)
        last_text = prompt
        empty = not prompt
    if not model:
        raise HttpError(400, "model is required")
    canonical = canonical_name(model)
    if canonical not in {canonical_name(name) for name in config.models}:
        raise HttpError(404, f"model '{model}' not found")
    if session == 0 and empty:
        return Inference(chat=chat, model=model, canonical=canonical, empty=True, session=0.0)
    think = body.get("think")
    if think is True or (isinstance(think, str) and think):
        raise HttpError(400, f"{orjson.dumps(model).decode()} does not support thinking")
    num_predict = options.get("num_predict", -1)
    if isinstance(num_predict, bool) or not isinstance(num_predict, int | float):
        raise HttpError(500, 'option "num_predict" must be of type integer')
    stops = options.get("stop") or []
    if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
        raise HttpError(500, 'option "stop" must be of type array')
    return Inference(
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


def plan_reply(
    ask: Inference, directives: Directives, config: SimConfig, rng: random.Random
) -> Plan:
    """The reply to a generating request, from its directives and the knobs.

    ``rng`` decides whether the request fails (``fail_rate``) and after how many lines.
    """
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
    elif config.fail_rate and rng.random() < config.fail_rate:
        fail_after = rng.randint(0, max(emissions - 1, 0))
    return Plan(
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
