"""The prompt a request becomes, and how many tokens it is.

Messages and tools are rendered in the shape of the model's template
(:func:`render`), so that consecutive turns of a conversation share the prefix
the real template gives them, and no more:

* **llama3** (Ollama's Go template for llama3.1): system messages joined at the
  top; the tools are written into the *last* user message, so the next turn,
  where that message is no longer last, renders it without them;
* **chatml** (qwen3, and llama-server's own template on the native path): tools in
  the system block; qwen3 with thinking off ends the prompt with an empty
  ``<think></think>`` block that later turns do not repeat;
* **harmony** (gpt-oss): tools in the developer message.

Tokens are approximated as four characters each, of the rendered text: a text
of ``n`` characters is ``ceil(n / 4)`` tokens, and two texts sharing their
first ``c`` characters share ``c // 4`` tokens. History beyond ``num_ctx`` is
trimmed as ``server/prompt.go`` (``chatPrompt``) trims it: whole messages from
the front, the system messages among them kept, the last message always kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from .profiles import Profile
from .wire import go_json

CHARS_PER_TOKEN: Final = 4


def count_tokens(text: str) -> int:
    """Tokens in ``text``: four characters each, the last one partial."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def common_prefix(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share (by halving, comparisons in C)."""
    size = min(len(a), len(b))
    if a[:size] == b[:size]:
        return size
    low, high = 0, size  # a[:low] == b[:low] and a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    return low


def shared_tokens(a: str, b: str) -> int:
    """Whole tokens ``a`` and ``b`` share at their start."""
    return common_prefix(a, b) // CHARS_PER_TOKEN


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One chat message as a template sees it."""

    role: str
    content: str
    calls: tuple[tuple[str, Any], ...] = ()  # (name, arguments) of an assistant's tool calls
    tool_name: str = ""


def message_from(body: dict[str, Any]) -> Message:
    """A :class:`Message` from a validated ``messages`` item (role lowercased, as api.Message)."""
    calls: list[tuple[str, Any]] = []
    for call in body.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            calls.append((str(function.get("name") or ""), function.get("arguments") or {}))
    role = body.get("role")
    return Message(
        role=role.lower() if isinstance(role, str) else "",
        content=body.get("content") or "",
        calls=tuple(calls),
        tool_name=str(body.get("tool_name") or ""),
    )


def call_text(template: str, name: str, arguments: Any) -> str:
    """A tool call as the model writes it, and as its template renders it in the history."""
    args = go_json(arguments).decode()
    if template == "llama3":
        return f'{{"name": "{name}", "parameters": {args}}}'
    if template == "harmony":
        return (
            f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{args}<|call|>"
        )
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def calls_text(template: str, calls: Sequence[tuple[str, Any]], after_text: bool) -> str:
    """Several calls as the model writes them, after some content or not."""
    texts = [call_text(template, name, arguments) for name, arguments in calls]
    if template == "chatml":
        return ("\n" if after_text else "") + "\n".join(texts)
    return "".join(texts)


THINK_MARKS: Final[dict[str, tuple[str, str]]] = {
    "llama3": ("<think>", "</think>"),
    "chatml": ("<think>\n", "\n</think>\n\n"),
    "harmony": (
        "<|channel|>analysis<|message|>",
        "<|end|><|start|>assistant<|channel|>final<|message|>",
    ),
}

_LLAMA_HEADER: Final = "<|start_header_id|>{}<|end_header_id|>"
_LLAMA_ASSISTANT: Final = "<|start_header_id|>assistant<|end_header_id|>\n\n"
_LLAMA_TOOLS_SYSTEM: Final = (
    "\n\nCutting Knowledge Date: December 2023\n\n"
    "When a tool answers, use its output to answer the user's question.\n\n"
    "You can call tools."
)
_LLAMA_TOOLS_USER: Final = (
    "Call one of these functions if it answers the question best, as JSON in the "
    'form {"name": function name, "parameters": dictionary of arguments}.\n\n'
)


def _collate(messages: Sequence[Message]) -> list[Message]:
    """Consecutive messages of one role merged (tool results excepted), as template.collate."""
    merged: list[Message] = []
    for message in messages:
        if merged and merged[-1].role == message.role and message.role != "tool":
            previous = merged[-1]
            content = previous.content + "\n\n" + message.content
            merged[-1] = dataclasses.replace(previous, content=content)
        else:
            merged.append(message)
    return merged


def _llama3(messages: Sequence[Message], tools: Sequence[Any]) -> str:
    system = "\n\n".join(message.content for message in messages if message.role == "system")
    parts: list[str] = []
    if system or tools:
        parts.append(_LLAMA_HEADER.format("system"))
        if system:
            parts.append("\n\n" + system)
        if tools:
            parts.append(_LLAMA_TOOLS_SYSTEM)
        parts.append("<|eot_id|>")
    collated = _collate(messages)
    for index, message in enumerate(collated):
        last = index == len(collated) - 1
        if message.role == "user":
            parts.append(_LLAMA_HEADER.format("user") + "\n\n")
            if tools and last:
                parts.append(_LLAMA_TOOLS_USER)
                parts.extend(go_json(tool).decode() + "\n" for tool in tools)
                parts.append("\nQuestion: ")
            parts.append(message.content + "<|eot_id|>")
            if last:
                parts.append(_LLAMA_ASSISTANT)
        elif message.role == "assistant":
            parts.append(_LLAMA_ASSISTANT)
            parts.append(
                calls_text("llama3", message.calls, False) if message.calls else message.content
            )
            if not last:
                parts.append("<|eot_id|>")
        elif message.role == "tool":
            parts.append(_LLAMA_HEADER.format("ipython") + "\n\n" + message.content + "<|eot_id|>")
            if last:
                parts.append(_LLAMA_ASSISTANT)
    return "".join(parts)


def _chatml(messages: Sequence[Message], tools: Sequence[Any], empty_think_block: bool) -> str:
    parts: list[str] = []
    rest = list(messages)
    system = rest.pop(0).content if rest and rest[0].role == "system" else ""
    if tools:
        parts.append("<|im_start|>system\n" + (system + "\n\n" if system else ""))
        parts.append("# Tools\n\nYou may call one or more functions.\n\n<tools>\n")
        parts.extend(go_json(tool).decode() + "\n" for tool in tools)
        parts.append("</tools>\n\nWrite each call in <tool_call></tool_call> tags.<|im_end|>\n")
    elif system:
        parts.append("<|im_start|>system\n" + system + "<|im_end|>\n")
    for message in rest:
        if message.role == "assistant":
            calls = calls_text("chatml", message.calls, bool(message.content))
            parts.append("<|im_start|>assistant\n" + message.content + calls + "<|im_end|>\n")
        elif message.role == "tool":
            parts.append(
                "<|im_start|>user\n<tool_response>\n"
                + message.content
                + "\n</tool_response><|im_end|>\n"
            )
        else:
            parts.append(f"<|im_start|>{message.role}\n{message.content}<|im_end|>\n")
    if not messages or messages[-1].role != "assistant":
        parts.append("<|im_start|>assistant\n")
        if empty_think_block:
            parts.append("<think>\n\n</think>\n\n")
    return "".join(parts)


def _harmony(messages: Sequence[Message], tools: Sequence[Any], level: str) -> str:
    system = "\n\n".join(message.content for message in messages if message.role == "system")
    parts = [
        "<|start|>system<|message|>Knowledge cutoff: 2024-06\n\n"
        f"Reasoning: {level}\n\n# Valid channels: analysis, commentary, final.<|end|>"
    ]
    if system or tools:
        parts.append("<|start|>developer<|message|>")
        if system:
            parts.append("# Instructions\n\n" + system)
        if tools:
            parts.append("\n\n# Tools\n\nnamespace functions {\n")
            parts.extend(go_json(tool).decode() + "\n" for tool in tools)
            parts.append("}")
        parts.append("<|end|>")
    for message in messages:
        if message.role == "user":
            parts.append("<|start|>user<|message|>" + message.content + "<|end|>")
        elif message.role == "assistant":
            if message.calls:
                parts.append("<|start|>assistant" + calls_text("harmony", message.calls, False))
            else:
                parts.append(
                    "<|start|>assistant<|channel|>final<|message|>" + message.content + "<|end|>"
                )
        elif message.role == "tool":
            parts.append(
                f"<|start|>functions.{message.tool_name} to=assistant<|channel|>commentary"
                f"<|message|>{message.content}<|end|>"
            )
    parts.append("<|start|>assistant")
    return "".join(parts)


def render(
    profile: Profile, messages: Sequence[Message], tools: Sequence[Any], think: object
) -> str:
    """The prompt text of ``messages`` and ``tools`` for ``profile``.

    ``think`` is the request's effective think value (None, a bool or a level).
    """
    if profile.template == "llama3":
        return _llama3(messages, tools)
    if profile.template == "harmony":
        return _harmony(messages, tools, think if isinstance(think, str) else "medium")
    return _chatml(messages, tools, profile.thinking and think is False)


def chat_prompt(
    profile: Profile,
    messages: Sequence[Message],
    tools: Sequence[Any],
    think: object,
    num_ctx: int,
    truncate: bool,
) -> tuple[str, int]:
    """The prompt and how many messages were dropped to fit ``num_ctx`` tokens.

    As ``chatPrompt``: the first start index whose rendering fits wins (a
    shorter history never renders longer, so it is found by halving).
    """

    def fits(start: int) -> str | None:
        kept = [message for message in messages[:start] if message.role == "system"]
        text = render(profile, [*kept, *messages[start:]], tools, think)
        return text if count_tokens(text) <= num_ctx else None

    whole = render(profile, messages, tools, think)
    if not truncate or len(messages) <= 1 or count_tokens(whole) <= num_ctx:
        return whole, 0
    last = len(messages) - 1
    low, high = 0, last  # the prompt from ``low`` does not fit; from ``high`` it fits or is last
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle) is None:
            low = middle
        else:
            high = middle
    kept = [message for message in messages[:high] if message.role == "system"]
    dropped = high - len(kept)
    return render(profile, [*kept, *messages[high:]], tools, think), dropped
