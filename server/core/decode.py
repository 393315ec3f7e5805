"""Ollama's NDJSON lines, decoded into the events of one turn.

Only spoken text becomes a :class:`TextDelta`. Thinking never does: neither
``message.thinking`` lines, nor a ``<think>...</think>`` block that opens the content
(qwen3's parser passes a model's thinking through as content when ``think`` is false,
``model/parsers/qwen3.go``); both are only counted. When tools were offered, a tool
call the model wrote as text (Ollama's parser is off for ``{``-tagged models once any
text came first, ``tools/tools.go``) is held back and becomes a :class:`ToolCall`
(:mod:`.toolcalls`). Tool calls get ids of the server's own and consecutive indexes.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from .events import Event, Finish, FinishReason, TextDelta, ToolCall, Usage
from .toolcalls import ToolCallFilter
from .upstream import UpstreamClosed

__all__ = ["Decoder"]

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


def _usage(chunk: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=chunk.get("prompt_eval_count", 0),
        completion_tokens=chunk.get("eval_count", 0),
        load_seconds=chunk.get("load_duration", 0) / 1e9,
        prompt_seconds=chunk.get("prompt_eval_duration", 0) / 1e9,
        eval_seconds=chunk.get("eval_duration", 0) / 1e9,
        total_seconds=chunk.get("total_duration", 0) / 1e9,
    )


class Decoder:
    """Turns the lines of one ``/api/chat`` response into events.

    ``tools`` are the names of the tools the turn offered (None: no tools, so no
    content is held back). Without ``parallel_tool_calls``, calls after the first
    are dropped. ``thinking`` counts the lines that carried thinking, ``truncated``
    says whether the response ended inside a tool call written as text (dropped).
    """

    __slots__ = ("_filter", "_opening", "_thinking_tags", "calls", "parallel", "thinking")

    def __init__(self, parallel_tool_calls: bool, tools: list[str] | None = None) -> None:
        self.parallel = parallel_tool_calls
        self.calls = 0
        self.thinking = 0
        self._filter = ToolCallFilter(tools) if tools else None
        self._opening = ""  # content held while it may open a <think> block
        self._thinking_tags: bool | None = None  # None until the content's start is known

    @property
    def truncated(self) -> bool:
        """Whether the response ended inside a tool call written as text."""
        return self._filter is not None and self._filter.truncated

    def feed(self, line: bytes) -> tuple[Event, ...]:
        """The events of one line (often one :class:`TextDelta`, often none).

        Raises :class:`UpstreamClosed` for an error line, and ``orjson.JSONDecodeError``
        for a line that is not JSON.
        """
        chunk = orjson.loads(line)
        message = chunk.get("message")
        events: tuple[Event, ...] = ()
        if message is None:
            error = chunk.get("error")  # an error line carries nothing else
            if error is not None:
                raise UpstreamClosed(f"Ollama failed mid-stream: {error}")
        else:
            content = message.get("content")
            if content:
                if self._thinking_tags is not False:
                    content = self._strip_thinking(content)
                if content:
                    if self._filter is None:
                        events = (TextDelta(content),)
                    else:
                        events = self._filtered(*self._filter.feed(content))
            if message.get("thinking"):
                self.thinking += 1
            tool_calls = message.get("tool_calls")
            if tool_calls:
                events += self._calls(
                    (str(f.get("name", "")), f.get("arguments"))
                    for f in (call.get("function") or {} for call in tool_calls)
                )
        if chunk.get("done"):
            if self._opening:  # the whole answer was a prefix of "<think>": it is text
                events += self._spoken(self._opening)
                self._opening = ""
            if self._filter is not None:
                events += self._filtered(*self._filter.finish())
            reason = chunk.get("done_reason")
            finish: FinishReason = (
                "tool_calls" if self.calls else "length" if reason == "length" else "stop"
            )
            return (*events, Finish(finish, _usage(chunk)))
        return events

    def _spoken(self, text: str) -> tuple[Event, ...]:
        if self._filter is not None:
            return self._filtered(*self._filter.feed(text))
        return (TextDelta(text),)

    def _strip_thinking(self, content: str) -> str:
        """``content`` without a ``<think>`` block that opens the response."""
        if self._thinking_tags:  # inside the block
            self.thinking += 1
            end = content.find(_THINK_CLOSE)
            if end < 0:
                return ""
            self._thinking_tags = False
            return content[end + len(_THINK_CLOSE) :].lstrip()
        held = self._opening + content
        start = held.lstrip()
        if _THINK_OPEN.startswith(start):  # still only a prefix of "<think>" (or space)
            self._opening = held
            return ""
        self._opening = ""
        if not start.startswith(_THINK_OPEN):
            self._thinking_tags = False
            return held
        self._thinking_tags = True
        return self._strip_thinking(start[len(_THINK_OPEN) :])

    def _filtered(self, text: str, calls: tuple[tuple[str, str], ...]) -> tuple[Event, ...]:
        events: tuple[Event, ...] = (TextDelta(text),) if text else ()
        if calls:
            events += self._calls(calls)
        return events

    def _calls(self, calls: Any) -> tuple[ToolCall, ...]:
        made = []
        for name, arguments in calls:
            if self.calls and not self.parallel:  # the client takes one call per reply
                break
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
            made.append(
                ToolCall(
                    index=self.calls,
                    id=f"call_{uuid.uuid4().hex[:24]}",
                    name=name,
                    arguments=arguments,
                )
            )
            self.calls += 1
        return tuple(made)
