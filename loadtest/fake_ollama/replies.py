"""What a request asks for and the reply planned for it.

A chat or generate body is validated as Ollama validates it, in its order
(:func:`parse_inference`), the ``[[name:value]]`` directives in its last user
message are read (:class:`Directives`), and :func:`plan_reply` renders the
prompt and scripts the reply token by token: each token is a *step* of the
plan, which costs one inter-token delay and writes at most one line, as the
model's parser in Ollama would let it through:

* thinking, when on, arrives as ``message.thinking`` lines with empty content;
  a model that reasons with thinking off sends it as thinking lines too where
  its reasoning is parsed regardless (the native path, gpt-oss's harmony), and as
  plain content, tags and all, where it is not (llama3.1's template, qwen3's
  parser with thinking off: ``model/parsers/qwen3.go``);
* a tool call's JSON is held back until it is complete, then sent as one line
  with ``content: ""`` and the call (with its ``id`` and ``function.index``); on
  the native path (or ``[[tool:final]]``) calls come only on the ``done`` line;
  for a ``{`` tag, any text before the JSON switches tool parsing off and the JSON
  streams as content (``tools/tools.go``).

The reply's words are a fixed cycle (:func:`reply_text`).
"""

from __future__ import annotations

import dataclasses
import random
import re
import string
from typing import Any, Final

from .config import FailMode, SimConfig, ToolMode, parse_keep_alive
from .profiles import Profile, profile_for
from .prompt import THINK_MARKS, Message, call_text, chat_prompt, message_from
from .scheduler import LoadOptions
from .wire import HttpError, JsonObject, canonical_name, go_json, json_field, json_kind

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
THINK_VOCAB: Final = (
    " Okay",
    ",",
    " the",
    " caller",
    " wants",
    " a",
    " short",
    " answer",
    ".",
    " Keep",
    " it",
    " brief",
    ".",
)
_FIRST_TOKEN: Final = VOCAB[0].lstrip()
_TOOL_ID_LETTERS: Final = string.ascii_lowercase + string.digits
_NATIVE_ID_LETTERS: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
_THINK_LEVELS: Final = ("high", "medium", "low", "max")
_THINK_CHOICES: Final = '"high", "medium", "low", "max", true, or false'


def _chat_line(field: str, value: str) -> bytes:
    """What follows the timestamp in a ``done: false`` chat line."""
    if field == "content":
        body = b'"content":' + go_json(value)
    else:
        body = b'"content":"","thinking":' + go_json(value)
    return b'","message":{"role":"assistant",' + body + b'},"done":false}\n'


def _generate_line(field: str, value: str) -> bytes:
    """What follows the timestamp in a ``done: false`` generate line."""
    if field == "content":
        return b'","response":' + go_json(value) + b',"done":false}\n'
    return b'","response":"","thinking":' + go_json(value) + b',"done":false}\n'


# Token i's line is the line of VOCAB[i % len(VOCAB)], except the reply's first token.
_CONTENT_LINES: Final = tuple(_chat_line("content", word) for word in VOCAB)
_RESPONSE_LINES: Final = tuple(_generate_line("content", word) for word in VOCAB)
_FIRST_CONTENT_LINE: Final = _chat_line("content", _FIRST_TOKEN)
_FIRST_RESPONSE_LINE: Final = _generate_line("content", _FIRST_TOKEN)


def reply_text(tokens: int) -> str:
    """The whole content of a reply of ``tokens`` tokens."""
    return "".join(token_text(index) for index in range(tokens))


def token_text(index: int) -> str:
    """The text of token ``index`` of a reply."""
    return VOCAB[index % len(VOCAB)] if index else _FIRST_TOKEN


def thinking_text(tokens: int) -> str:
    """The whole thinking of ``tokens`` tokens."""
    return "".join(_think_token(index) for index in range(tokens))


def _think_token(index: int) -> str:
    word = THINK_VOCAB[index % len(THINK_VOCAB)]
    return word.lstrip() if not index else word


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
    think: int | None = None
    think_anyway: bool = False
    calls: int | None = None
    say_first: int | None = None
    load_fail: bool = False
    leak: bool = False

    @classmethod
    def parse(cls, text: str) -> Directives:
        """The directives in ``text``; ones with a malformed value are ignored."""
        if "[[" not in text:
            return _NO_DIRECTIVES
        values: dict[str, Any] = {}
        for name, argument in _DIRECTIVE.findall(text):
            if name in _FLAGS:
                values[_FLAGS[name]] = True
                continue
            if name == "tool":
                if argument in ("chunk", "final"):
                    values["tool_mode"] = argument
                continue
            try:
                number = float(argument)
            except ValueError:
                continue
            if number < 0:
                continue
            if name in ("ttft", "itl"):
                values[name] = number
            elif name in ("tokens", "think"):
                values[name] = int(number)
            elif name in ("calls", "say-first") and (name == "say-first" or number >= 1):
                values[name.replace("-", "_")] = int(number)
            elif name in ("error-after", "drop-after", "stall-after", "end-after"):
                values["failure"] = (name.partition("-")[0], int(number))
            elif name == "status" and 400 <= number <= 599:
                values["status"] = int(number)
        return cls(**values)


_DIRECTIVE: Final = re.compile(r"\[\[([a-z-]+)(?::([^\]]*))?\]\]")
_FLAGS: Final = {
    "no-tool": "no_tool",
    "think-anyway": "think_anyway",
    "load-fail": "load_fail",
    "leak": "leak",
}
_NO_DIRECTIVES: Final = Directives()


@dataclasses.dataclass(slots=True)
class Inference:
    """A validated /api/chat or /api/generate request."""

    chat: bool
    model: str
    canonical: str
    profile: Profile
    empty: bool
    session: float | None
    session_set: bool = False
    stream: bool = True
    load_options: LoadOptions = dataclasses.field(default_factory=LoadOptions)
    num_predict: int = -1
    stops: tuple[str, ...] = ()
    messages: list[Message] = dataclasses.field(default_factory=list)
    last_text: str = ""
    tools: list[Any] = dataclasses.field(default_factory=list)
    calls_tool: bool = False
    think: object = None  # the effective think value: None, a bool or a level
    truncate: bool = True


@dataclasses.dataclass(slots=True)
class Plan:
    """The scripted reply of one generating request, one step per generated token.

    ``lines[i]`` is what follows the timestamp in step i's line (None: the
    token writes nothing); ``raw`` is what the model generated (it stays in the
    slot's cache); ``content``, ``thinking`` and ``calls`` are what the client
    sees; ``final_calls`` and ``leftover`` go on the ``done`` line.
    """

    chat: bool
    stream: bool
    model: str
    canonical: str
    profile: Profile
    load_options: LoadOptions
    session: float | None
    session_set: bool
    prompt: str
    dropped: int
    lines: list[bytes | None]
    raw: list[str]
    content: list[str]
    thinking: list[str]
    calls: dict[int, list[JsonObject]]
    final_calls: list[JsonObject]
    leftover: str
    done_reason: str
    ttft_ms: float
    itl_ms: float
    fail_mode: FailMode
    fail_after: int | None
    fail_load: bool
    leak: bool


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


def _tool_call(tool: object) -> tuple[str, JsonObject] | None:
    """A call of ``tool`` (an Ollama/OpenAI tool definition): its name and example arguments."""
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
    return function["name"], arguments


def _think_value(body: JsonObject) -> object:
    """The request's ``think`` as api.ThinkValue reads it; a bad one is Ollama's 400."""
    think = body.get("think")
    if think is None or isinstance(think, bool):
        return think
    if isinstance(think, str):
        if think not in _THINK_LEVELS:
            raise HttpError(
                400,
                f"invalid think value: {go_json(think).decode()} (must be {_THINK_CHOICES})",
            )
        return think
    raise HttpError(400, f"think must be a boolean or string ({_THINK_CHOICES})")


def parse_inference(body: JsonObject, *, chat: bool, config: SimConfig) -> Inference:
    """Validate a decoded chat or generate request the way Ollama does, in its order."""
    struct = "ChatRequest" if chat else "GenerateRequest"
    model = json_field(body, "model", str, struct, "string") or ""
    stream = json_field(body, "stream", bool, struct, "bool")
    options = json_field(body, "options", dict, struct, "map[string]interface {}") or {}
    truncate = json_field(body, "truncate", bool, struct, "bool")
    top_logprobs = json_field(body, "top_logprobs", int, struct, "int") or 0
    keep_alive = body.get("keep_alive")
    try:
        session = (
            parse_keep_alive(config.keep_alive)
            if keep_alive is None
            else parse_keep_alive(keep_alive)
        )
    except ValueError as error:
        raise HttpError(400, str(error)) from None
    think = _think_value(body)
    tools: list[Any] = []
    messages: list[Message] = []
    last_text = ""
    calls_tool = False
    if chat:
        raw_messages = json_field(body, "messages", list, struct, "[]api.Message") or []
        tools = json_field(body, "tools", list, struct, "api.Tools") or []
        for item in raw_messages:
            if not isinstance(item, dict):
                raise HttpError(
                    400,
                    f"json: cannot unmarshal {json_kind(item)} into Go struct field "
                    f"ChatRequest.messages of type api.Message",
                )
            json_field(item, "content", str, "ChatRequest.messages", "string")
            message = message_from(item)
            messages.append(message)
            if message.role == "user":
                last_text = message.content
        empty = not messages
        calls_tool = bool(tools) and not empty and messages[-1].role == "user"
    else:
        prompt = json_field(body, "prompt", str, struct, "string") or ""
        system = json_field(body, "system", str, struct, "string") or ""
        if system:
            messages.append(Message("system", system))
        messages.append(Message("user", prompt))
        last_text = prompt
        empty = not prompt
    if not 0 <= top_logprobs <= 20:
        raise HttpError(400, "top_logprobs must be between 0 and 20")
    if not model:
        raise HttpError(400, "model is required")
    canonical = canonical_name(model)
    if canonical not in {canonical_name(name) for name in config.models}:
        raise HttpError(404, f"model '{model}' not found")
    profile = profile_for(canonical, config)
    if session == 0 and empty and keep_alive is not None:
        return Inference(
            chat=chat,
            model=model,
            canonical=canonical,
            profile=profile,
            empty=True,
            session=0.0,
            session_set=True,
        )
    if profile.thinking:
        think = True if think is None else think
    elif think is True or isinstance(think, str):
        raise HttpError(400, f"{go_json(model).decode()} does not support thinking")
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
        profile=profile,
        empty=empty,
        session=session,
        session_set=keep_alive is not None,
        stream=stream is not False,
        load_options=LoadOptions.from_options(options),
        num_predict=int(num_predict),
        stops=tuple(stop for stop in stops if stop),
        messages=messages,
        last_text=last_text,
        tools=tools,
        calls_tool=calls_tool,
        think=think,
        truncate=truncate is not False,
    )


class _Script:
    """The steps of a reply as they are built."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.lines: list[bytes | None] = []
        self.raw: list[str] = []
        self.content: list[str] = []
        self.thinking: list[str] = []
        self.calls: dict[int, list[JsonObject]] = {}
        self.spoke = False  # whether any content came before
        self.held_from: int | None = None  # where a ``{`` tag parser starts holding text back

    def step(self, raw: str, line: bytes | None, content: str = "", thinking: str = "") -> None:
        self.lines.append(line)
        self.raw.append(raw)
        self.content.append(content)
        self.thinking.append(thinking)

    def say(self, text: str) -> None:
        """A token of content."""
        line = _chat_line("content", text) if self.chat else _generate_line("content", text)
        self.step(text, line, content=text)
        self.spoke = True

    def think(self, text: str) -> None:
        """A token of thinking."""
        line = _chat_line("thinking", text) if self.chat else _generate_line("thinking", text)
        self.step(text, line, thinking=text)

    def say_words(self, count: int) -> None:
        """The first ``count`` tokens of the reply's words (the common case, in bulk)."""
        lines = _CONTENT_LINES if self.chat else _RESPONSE_LINES
        words = [token_text(index) for index in range(count)]
        self.lines += [lines[index % len(VOCAB)] for index in range(count)]
        if count:
            self.lines[-count] = _FIRST_CONTENT_LINE if self.chat else _FIRST_RESPONSE_LINE
        self.raw += words
        self.content += words
        self.thinking += [""] * count
        self.spoke = self.spoke or count > 0

    def silent(self, raw: str) -> None:
        """A token the parser holds back."""
        self.step(raw, None)

    def call(self, raw: str, calls: list[JsonObject]) -> None:
        """The token completing a tool call: one line with it and empty content."""
        self.calls[len(self.lines)] = calls
        line = b'","message":{"role":"assistant","content":"","tool_calls":' + go_json(calls)
        self.step(raw, line + b'},"done":false}\n')


def _chunks(text: str) -> list[str]:
    """``text`` cut into four-character tokens."""
    return [text[start : start + 4] for start in range(0, len(text), 4)] or [""]


def _call_id(rng: random.Random, native: bool) -> str:
    """A tool call id: Ollama's ``toolCallId`` (routes.go), or llama-server's on the native path."""
    if native:
        return "call_" + "".join(rng.choices(_NATIVE_ID_LETTERS, k=32))
    return "call_" + "".join(rng.choices(_TOOL_ID_LETTERS, k=8))


def _script_thinking(script: _Script, ask: Inference, count: int, as_lines: bool) -> None:
    opening, closing = THINK_MARKS[ask.profile.template]
    if as_lines:
        script.silent(opening)
        for index in range(count):
            script.think(_think_token(index))
        script.silent(closing)
        return
    script.say(opening)
    for index in range(count):
        script.say(_think_token(index))
    script.say(closing)


def _script_calls(
    script: _Script, ask: Inference, count: int, final: bool, rng: random.Random
) -> list[JsonObject]:
    """Script ``count`` calls of the offered tools; returns those for the ``done`` line."""
    profile = ask.profile
    spoke_first = script.spoke
    final_calls: list[JsonObject] = []
    tools = [call for call in map(_tool_call, ask.tools) if call is not None]
    for index in range(count if tools else 0):
        name, arguments = tools[index % len(tools)]
        call = {
            "id": _call_id(rng, final),
            "function": {"index": index, "name": name, "arguments": arguments},
        }
        separator = "\n" if profile.template == "chatml" and (index or spoke_first) else ""
        pieces = _chunks(separator + call_text(profile.template, name, arguments))
        if final:
            for piece in pieces:
                script.silent(piece)
            final_calls.append(call)
        elif profile.tool_tag == "{" and spoke_first:
            for piece in pieces:
                script.say(piece)
        else:
            if profile.tool_tag == "{" and script.held_from is None:
                script.held_from = len(script.lines)
            for piece in pieces[:-1]:
                script.silent(piece)
            script.call(pieces[-1], [call])
    return final_calls


def _cut_at_stop(script: _Script, stops: tuple[str, ...]) -> bool:
    """End the reply where its content first holds a stop string; True if it did."""
    so_far = ""
    for index, text in enumerate(script.content):
        if not text:
            continue
        candidate = so_far + text
        cuts = [position for position in map(candidate.find, stops) if position >= 0]
        if cuts:
            kept = candidate[len(so_far) : min(cuts)]
            _truncate(script, index)
            if kept:
                script.say(kept)
            return True
        so_far = candidate
    return False


def _truncate(script: _Script, steps: int) -> None:
    """Keep the first ``steps`` steps."""
    del script.lines[steps:], script.raw[steps:], script.content[steps:], script.thinking[steps:]
    script.calls = {index: calls for index, calls in script.calls.items() if index < steps}


def plan_reply(
    ask: Inference, directives: Directives, config: SimConfig, rng: random.Random
) -> Plan:
    """The reply to a generating request, from its directives and the knobs.

    ``rng`` decides whether the request fails (``fail_rate``), after how many
    tokens, and the tool calls' ids.
    """
    profile = ask.profile
    prompt, dropped = chat_prompt(
        profile,
        ask.messages,
        ask.tools,
        ask.think,
        ask.load_options.num_ctx,
        ask.truncate,
    )
    script = _Script(ask.chat)
    thinking_on = bool(ask.think) or profile.always_thinks
    thinks = thinking_on or directives.think_anyway or config.think_anyway
    think_count = config.think_tokens if directives.think is None else directives.think
    if thinks and think_count:
        _script_thinking(script, ask, think_count, thinking_on or profile.native)
    tool_mode = directives.tool_mode or config.tool_mode
    calls = config.tool_calls if directives.calls is None else directives.calls
    final_calls: list[JsonObject] = []
    if ask.calls_tool and not directives.no_tool:
        say_first = directives.say_first
        for index in range(config.text_before_call if say_first is None else say_first):
            script.say(token_text(index))
        final = tool_mode == "final" or (tool_mode == "auto" and profile.native)
        final_calls = _script_calls(script, ask, calls, final, rng)
    else:
        script.say_words(config.tokens if directives.tokens is None else directives.tokens)
    done_reason = "stop"
    stopped = bool(ask.stops) and _cut_at_stop(script, ask.stops)
    leftover = ""
    if not stopped and 0 <= ask.num_predict < len(script.lines):
        # Cut short: a call not yet complete is lost; a ``{`` parser that found none
        # hands back what it held as content (tools.Parser.Content).
        done_reason = "length"
        cut = ask.num_predict
        _truncate(script, cut)
        if script.held_from is not None and not script.calls:
            leftover = "".join(script.raw[script.held_from :])
        final_calls = []
    emissions = len(script.lines)
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
        profile=profile,
        load_options=ask.load_options,
        session=ask.session,
        session_set=ask.session_set,
        prompt=prompt,
        dropped=dropped,
        lines=script.lines,
        raw=script.raw,
        content=script.content,
        thinking=script.thinking,
        calls=script.calls,
        final_calls=final_calls,
        leftover=leftover,
        done_reason=done_reason,
        ttft_ms=config.ttft if directives.ttft is None else directives.ttft,
        itl_ms=config.itl if directives.itl is None else directives.itl,
        fail_mode=fail_mode,
        fail_after=None if fail_after is None else min(fail_after, emissions),
        fail_load=directives.load_fail or config.load_fail,
        leak=directives.leak or config.slot_leak,
    )
