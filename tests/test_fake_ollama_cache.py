"""Tests of the simulator's prompt cache: llama-server's slots, slot choice and RAM cache.

Each request's log entry says which slot it took and how many of its prompt
tokens were cached there; ``/_sim/stats`` shows each slot's cache size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from .fake_ollama_support import (
    MODEL,
    QWEN,
    WEATHER_TOOL,
    call,
    load,
    records,
    reset,
    simulator,
    stats,
    stream_lines,
)

SYSTEM = "You are the voice agent of a dental practice; keep answers short. " * 25


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """One simulator process for the module."""
    yield from simulator()


@pytest.fixture(autouse=True)
def fresh(port: int) -> None:
    """Baseline knobs with three slots, the model loaded, an empty request log."""
    reset(port, parallel=3)
    load(port)
    load(port, QWEN)
    load(port)
    call(port, "POST", "/_sim/reset", {})


class Call:
    """One phone call's conversation, a turn at a time."""

    def __init__(self, port: int, system: str = SYSTEM, model: str = MODEL, **extra: Any) -> None:
        self.port = port
        self.model = model
        self.extra = extra
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system}]

    def turn(self, text: str, **extra: Any) -> dict[str, Any]:
        """Send the next user line; returns the request's log entry (the reply is kept)."""
        self.messages.append({"role": "user", "content": text})
        body = {"model": self.model, "messages": self.messages, "stream": False}
        status, _, answer = call(self.port, "POST", "/api/chat", body | self.extra | extra)
        assert status == 200, answer
        reply = orjson.loads(answer)
        message = {"role": "assistant", "content": reply["message"]["content"]}
        self.messages.append(message)
        record: dict[str, Any] = records(self.port)[-1]
        assert reply["prompt_eval_count"] == record["prompt_tokens"]
        assert record["cached_tokens"] + record["evaluated_tokens"] == record["prompt_tokens"]
        record["reply"] = reply
        return record


def test_a_conversation_keeps_its_slot_and_evaluates_only_its_new_tokens(port: int) -> None:
    call(port, "POST", "/_sim/config", {"ttft_per_prompt_token": 0.5})
    conversation = Call(port)
    first = conversation.turn("Hi, I'd like to book a cleaning.")
    assert (first["slot"], first["slot_selection"], first["cached_tokens"]) == (2, "lru", 0)
    assert first["evaluated_tokens"] == first["prompt_tokens"] > 400
    # prompt_eval_duration counts only the evaluated tokens, at 0.5 ms each.
    assert first["reply"]["prompt_eval_duration"] >= first["evaluated_tokens"] * 500_000
    second = conversation.turn("Tuesday works.")
    assert (second["slot"], second["slot_selection"]) == (2, "similarity")
    assert second["cached_tokens"] > first["prompt_tokens"]  # the prompt and the reply
    assert second["evaluated_tokens"] < 40
    assert second["reply"]["prompt_eval_duration"] >= second["evaluated_tokens"] * 500_000
    slot = stats(port)["slots"][2]
    assert slot == {"id": 2, "busy": False, "cached_tokens": slot["cached_tokens"]}
    assert slot["cached_tokens"] > second["prompt_tokens"]


def test_a_long_streamed_reply_resent_as_history_is_cached_whole(port: int) -> None:
    # Past the reply's word cycle (21 tokens) every token streams with its leading
    # space, as the slot holds it; only the reply's first token has none.
    call(port, "POST", "/_sim/config", {"tokens": 50})
    conversation = Call(port)
    conversation.messages.append({"role": "user", "content": "Hi, I'd like to book a cleaning."})
    lines = stream_lines(port, {"model": MODEL, "messages": conversation.messages})
    words = [line["message"]["content"] for line in lines if not line["done"]]
    assert len(words) == 50
    assert (words[0], words[21], words[42]) == ("Sure", " Sure", " Sure")
    first = records(port)[-1]
    reply = "".join(words)
    conversation.messages.append({"role": "assistant", "content": reply})
    second = conversation.turn("Tuesday works.")
    assert second["slot"] == first["slot"]
    # The first prompt is at least 4 * tokens - 3 characters; all of it and the reply match.
    assert second["cached_tokens"] >= (4 * first["prompt_tokens"] - 3 + len(reply)) // 4
    assert second["evaluated_tokens"] < 40  # the template's headers and the caller's words


def test_a_request_takes_the_most_similar_idle_slot_else_the_least_recently_used(
    port: int,
) -> None:
    calls = [Call(port, system=f"Agent {name}. " + name * 600) for name in "abc"]
    slots = [conversation.turn("hello")["slot"] for conversation in calls]
    assert slots == [2, 1, 0]  # none similar: least recently used, the last of equals first
    assert [conversation.turn("and then?")["slot"] for conversation in calls] == [2, 1, 0]
    newcomer = Call(port, system="Someone else entirely. " * 40).turn("hi")
    assert (newcomer["slot"], newcomer["slot_selection"]) == (2, "lru")


def test_a_call_sharing_the_system_prompt_takes_over_the_slot(port: int) -> None:
    # Similar enough and keeping over half of the slot: no copy goes to the RAM cache,
    # so the first call, back on that slot, finds only the system prompt cached.
    call(port, "POST", "/_sim/config", {"parallel": 1})
    first = Call(port)
    opening = first.turn("Hi, I'd like to book a cleaning.")
    first.turn("Tuesday works.")
    other = Call(port).turn("Do you take new patients?")
    assert other["slot_selection"] == "similarity"
    assert other["cached_tokens"] > len(SYSTEM) // 4  # the system prompt
    again = first.turn("At nine, please.")
    assert again["restored_tokens"] == 0
    assert again["cached_tokens"] < opening["prompt_tokens"]
    assert stats(port)["ram_cache"] == {"prompts": 0, "tokens": 0}


def test_the_ram_cache_brings_a_conversation_back(port: int) -> None:
    call(port, "POST", "/_sim/config", {"parallel": 1})
    first = Call(port)
    opening = first.turn("Hi, I'd like to book a cleaning.")
    stranger = Call(port, system="A different assistant altogether. " * 30)
    assert stranger.turn("hello")["slot_selection"] == "lru"
    ram = stats(port)["ram_cache"]
    assert ram["prompts"] == 1
    assert ram["tokens"] > opening["prompt_tokens"]
    back = first.turn("Tuesday works.")
    assert back["restored_tokens"] > opening["prompt_tokens"]
    assert back["cached_tokens"] > opening["prompt_tokens"]
    call(port, "POST", "/_sim/config", {"cache_ram_mib": 0})
    stranger.turn("again")
    lost = first.turn("At nine.")
    assert lost["restored_tokens"] == 0
    assert lost["cached_tokens"] < 20  # the system header both prompts start with


def test_idle_slots_are_copied_to_the_ram_cache_when_a_request_starts(port: int) -> None:
    Call(port).turn("hello")
    assert stats(port)["ram_cache"]["prompts"] == 0
    Call(port, system="Another agent. " * 60).turn("hello")
    assert stats(port)["ram_cache"]["prompts"] == 1


def test_llama31_sends_its_tools_in_the_last_user_message_so_they_are_evaluated_every_turn(
    port: int,
) -> None:
    llama = Call(port, tools=[WEATHER_TOOL])
    opening = llama.turn("Hi [[no-tool]]")
    following = llama.turn("And tomorrow? [[no-tool]]")
    assert following["cached_tokens"] < opening["prompt_tokens"]
    assert following["evaluated_tokens"] > 60
    qwen = Call(port, model=QWEN, tools=[WEATHER_TOOL], think=False)
    opening = qwen.turn("Hi [[no-tool]]")
    following = qwen.turn("And tomorrow? [[no-tool]]")
    assert following["cached_tokens"] >= opening["prompt_tokens"] - 10
    assert following["evaluated_tokens"] < 40


def test_history_beyond_num_ctx_is_trimmed_keeping_system_messages(port: int) -> None:
    conversation = Call(port, system="Be brief. " * 40, options={"num_ctx": 300})
    for index in range(12):
        conversation.messages += [
            {"role": "user", "content": f"question {index} " * 8},
            {"role": "assistant", "content": f"answer {index} " * 8},
        ]
    record = conversation.turn("last question")
    assert record["dropped_messages"] > 0
    assert 100 < record["prompt_tokens"] <= 300  # the 100-token system message stayed
    whole = conversation.turn("again", options={"num_ctx": 300}, truncate=False)
    assert whole["dropped_messages"] == 0
    assert whole["prompt_tokens"] > 300
    huge = Call(port, options={"num_ctx": 300}).turn("x" * 4000)
    assert huge["prompt_tokens"] > 1000  # the last message always stays


def test_the_prompt_cache_can_be_turned_off(port: int) -> None:
    call(port, "POST", "/_sim/config", {"prompt_cache": False})
    conversation = Call(port)
    conversation.turn("hello")
    again = conversation.turn("hello again")
    assert (again["cached_tokens"], again["slot_selection"]) == (0, "lru")
    assert again["evaluated_tokens"] == again["prompt_tokens"]
