"""Events rendered as OpenAI chat-completion objects: chunks for streams, one object otherwise.

The one place that knows OpenAI's response shapes. The SSE route frames the chunks
as ``data: ...`` events, the RunPod OpenAI route yields the same text, and the RunPod
native route yields the same chunks as dicts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from random import getrandbits
from typing import Any

import orjson

from ..core.events import Event, Failure, Finish, TextDelta, ToolCall, Usage

__all__ = [
    "DONE",
    "ChunkRenderer",
    "collect_completion",
    "finish_reason",
    "models_list",
    "new_completion_id",
    "sse",
    "usage_dict",
]

DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    """Frame one JSON object as a server-sent event."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def usage_dict(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object.

    Without ``prompt_tokens_details.cached_tokens``: Ollama counts cached and evaluated
    prompt tokens together (``prompt_eval_count``), so the server cannot tell them apart.
    """
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def finish_reason(last: Finish | Failure | None) -> str:
    """The choice's ``finish_reason``: a turn cut short (by a failure, or not ended at all)
    reads as ``stop``, which every OpenAI client accepts."""
    return last.reason if isinstance(last, Finish) else "stop"


def models_list(model: str) -> dict[str, Any]:
    """OpenAI's models list, holding the one served model."""
    entry = {"id": model, "object": "model", "created": 0, "owned_by": "ollama"}
    return {"object": "list", "data": [entry]}


def new_completion_id() -> str:
    """A fresh id in OpenAI's style: 128 random bits.

    From :mod:`random` (reseeded after a fork), not ``uuid4``, whose ``getrandom``
    system call is on every turn's way to Ollama: ~0.4 µs against ~2.7 µs warm, and
    ~30 µs on a process woken from idle. The id names a completion; it is no secret.
    """
    return f"chatcmpl-{getrandbits(128):032x}"


class ChunkRenderer:
    """Renders the events of one stream as ``chat.completion.chunk`` objects.

    Every chunk of a stream carries the same ``id``, ``created`` and ``model``, and a
    ``choices`` list (VAPI fails on a chunk without one). Text deltas, the hot path,
    are rendered into SSE bytes from a prepared prefix and suffix: one ``orjson.dumps``
    of the text per token. :meth:`chunk` gives the same object as a dict.
    """

    def __init__(self, model: str, completion_id: str | None = None) -> None:
        self.id = completion_id or new_completion_id()
        self.created = int(time.time())
        self.model = model
        head = orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
            }
        )
        self._text_prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":{"content":'
        self._text_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
    ) -> dict[str, Any]:
        """One ``chat.completion.chunk`` with a single choice."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def role(self) -> dict[str, Any]:
        """The first chunk of a stream: the assistant role with empty content."""
        return self.chunk({"role": "assistant", "content": ""})

    def text_sse(self, text: str) -> bytes:
        """A content delta as SSE bytes, equal to ``sse(self.text(text))``."""
        return self._text_prefix + orjson.dumps(text) + self._text_suffix

    def text(self, text: str) -> dict[str, Any]:
        """A content delta."""
        return self.chunk({"content": text})

    def tool_call(self, call: ToolCall) -> dict[str, Any]:
        """A whole tool call as one ``tool_calls`` delta."""
        return self.chunk(
            {
                "tool_calls": [
                    {
                        "index": call.index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                ]
            }
        )

    def finish(self, reason: str) -> dict[str, Any]:
        """The chunk that ends the choice."""
        return self.chunk({}, reason)

    def end(self, last: Finish | Failure | None) -> dict[str, Any]:
        """The chunk that ends the choice after the turn's last event."""
        return self.finish(finish_reason(last))

    def usage(self, usage: Usage) -> dict[str, Any]:
        """The closing usage chunk (``stream_options.include_usage``): no choices."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_dict(usage),
        }

    def event(self, event: Event) -> list[dict[str, Any]]:
        """The chunks for one event (a :class:`Failure` ends the choice with ``stop``)."""
        if isinstance(event, TextDelta):
            return [self.text(event.text)]
        if isinstance(event, ToolCall):
            return [self.tool_call(event)]
        return [self.end(event)]


async def collect_completion(
    events: AsyncIterator[Event], model: str, completion_id: str | None = None
) -> tuple[dict[str, Any], Event | None]:
    """Gather a whole turn into one ``chat.completion`` object (with a fresh id if none given).

    Returns the object and the last event (a :class:`Finish` or :class:`Failure`).
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    last: Event | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            texts.append(event.text)
        elif isinstance(event, ToolCall):
            calls.append(
                {
                    "id": event.id,
                    "type": "function",
                    "function": {"name": event.name, "arguments": event.arguments},
                }
            )
        else:
            last = event
    usage = last.usage if isinstance(last, Finish | Failure) else Usage()
    reason = finish_reason(last if isinstance(last, Finish | Failure) else None)
    content = "".join(texts)
    # OpenAI sends null content beside tool calls, and a string otherwise.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": (content or None) if calls else content,
    }
    if calls:
        message["tool_calls"] = calls
    completion = {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
        "usage": usage_dict(usage),
    }
    return completion, last
