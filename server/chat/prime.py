"""The prompt every call starts with, as turns that prime Ollama's slot caches.

A call's first turn sends the assistant's system prompt and tools before anything
the caller said. Evaluated once per slot after each model load, that prefix is in the
cache when the call arrives, so its first turn pays only for its own messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.events import Turn
from .request import parse_chat_request

__all__ = ["priming_turns"]


def priming_turns(system_prompts: Iterable[str | None], tools: list[dict[str, Any]]) -> list[Turn]:
    """One turn per distinct system prompt, with ``tools`` (OpenAI function tools) offered.

    The turns are built by the same request layer as every call's, so their Ollama
    messages and tools match a real turn's byte for byte.
    """
    turns = []
    seen = set()
    for prompt in system_prompts:
        if not prompt or prompt in seen:
            continue
        seen.add(prompt)
        body: dict[str, Any] = {"messages": [{"role": "system", "content": prompt}]}
        if tools:
            body["tools"] = tools
        turns.append(parse_chat_request(body).to_turn())
    return turns
