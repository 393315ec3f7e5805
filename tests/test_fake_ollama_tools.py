"""Tests of tool calls and thinking as Ollama 0.32 sends them, per model profile."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from loadtest.fake_ollama import reply_text, thinking_text

from .fake_ollama_support import (
    GPT_OSS,
    MODEL,
    NATIVE,
    QWEN,
    TIME_TOOL,
    WEATHER_ARGUMENTS,
    WEATHER_TOOL,
    call,
    chat_body,
    configure,
    reset,
    simulator,
    stream_lines,
)

OLLAMA_ID = re.compile(r"call_[a-z0-9]{8}")
LLAMA_SERVER_ID = re.compile(r"call_[0-9A-Za-z]{32}")
# How llama3.1 writes the call: its template's form, one token per four characters.
_ARGUMENTS_JSON = orjson.dumps(WEATHER_ARGUMENTS).decode()
WEATHER_JSON = f'{{"name": "get_weather", "parameters": {_ARGUMENTS_JSON}}}'


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """One simulator process for the module."""
    yield from simulator()


@pytest.fixture(autouse=True)
def fresh(port: int) -> None:
    """Baseline knobs, no model loaded and an empty request log before each test."""
    reset(port)


def ask(content: str, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    """A chat offering the weather and time tools."""
    return chat_body(content, model=model, tools=[WEATHER_TOOL, TIME_TOOL], **extra)


def whole(port: int, body: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming chat's answer."""
    status, _, answer = call(port, "POST", "/api/chat", body | {"stream": False})
    assert status == 200, answer
    reply: dict[str, Any] = orjson.loads(answer)
    return reply


def calls_in(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every tool call in a stream, in order."""
    return [call for line in lines for call in line["message"].get("tool_calls", [])]


def content_of(lines: list[dict[str, Any]]) -> str:
    """A stream's content."""
    return "".join(line["message"]["content"] for line in lines)


def test_a_tool_call_has_an_id_and_an_index_and_comes_in_a_line_of_its_own(port: int) -> None:
    *lines, final = stream_lines(port, ask("weather?"))
    [line] = lines
    assert line["done"] is False
    assert line["message"]["content"] == ""
    [tool_call] = line["message"]["tool_calls"]
    assert list(tool_call) == ["id", "function"]
    assert OLLAMA_ID.fullmatch(tool_call["id"])
    assert tool_call["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": WEATHER_ARGUMENTS,
    }
    assert final["message"] == {"role": "assistant", "content": ""}
    assert (final["done_reason"], final["eval_count"]) == ("stop", (len(WEATHER_JSON) + 3) // 4)


@pytest.mark.parametrize("model", [MODEL, QWEN])
def test_several_calls_come_in_one_reply_each_with_its_index(port: int, model: str) -> None:
    body = ask("weather and time? [[calls:3]]", model=model)
    lines = stream_lines(port, body)
    lines = [line for line in lines if "thinking" not in line["message"]]
    assert [len(line["message"].get("tool_calls", [])) for line in lines] == [1, 1, 1, 0]
    calls = calls_in(lines)
    assert [tool_call["function"]["index"] for tool_call in calls] == [0, 1, 2]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time", "get_weather"]
    assert len({tool_call["id"] for tool_call in calls}) == 3
    reply = whole(port, body)
    assert [c["function"]["index"] for c in reply["message"]["tool_calls"]] == [0, 1, 2]


def test_text_before_a_call_turns_llama31s_json_into_plain_content(port: int) -> None:
    # tools/tools.go: for a "{" tag, text before the JSON switches tool parsing off.
    lines = stream_lines(port, ask("weather? [[say-first:2]]"))
    assert calls_in(lines) == []
    assert content_of(lines) == "Sure," + WEATHER_JSON
    assert sum(1 for line in lines if line["message"]["content"]) > 10  # token by token
    reply = whole(port, ask("weather? [[say-first:2]]"))
    assert reply["message"] == {"role": "assistant", "content": "Sure," + WEATHER_JSON}


def test_with_a_named_tag_the_text_streams_and_the_call_follows(port: int) -> None:
    configure(port, text_before_call=3)
    *lines, final = stream_lines(port, ask("weather?", model=QWEN, think=False))
    assert [line["message"]["content"] for line in lines] == ["Sure", ",", " here", ""]
    assert calls_in(lines)[0]["function"]["name"] == "get_weather"
    assert "tool_calls" not in final["message"]


def test_on_the_native_path_calls_come_only_on_the_done_line(port: int) -> None:
    *lines, final = stream_lines(port, ask("weather? [[say-first:1]]", model=NATIVE))
    assert [line["message"] for line in lines] == [{"role": "assistant", "content": "Sure"}]
    [tool_call] = final["message"]["tool_calls"]
    assert LLAMA_SERVER_ID.fullmatch(tool_call["id"])  # llama-server's id, not Ollama's
    assert tool_call["function"]["index"] == 0
    assert final["done"] is True
    *lines, final = stream_lines(port, ask("weather? [[tool:final]]"))
    assert lines == []
    assert calls_in([final])[0]["function"]["name"] == "get_weather"
    configure(port, tool_mode="chunk")
    lines = stream_lines(port, ask("weather?", model=NATIVE))
    assert calls_in(lines[:-1])[0]["function"]["name"] == "get_weather"


def test_no_tool_call_when_told_or_when_the_last_message_is_a_tool_result(port: int) -> None:
    after_tool = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "x"}}]},
            {"role": "tool", "content": "sunny"},
        ],
        "tools": [WEATHER_TOOL],
    }
    for body in (ask("weather? [[no-tool]]"), after_tool):
        assert whole(port, body)["message"] == {"role": "assistant", "content": reply_text(8)}


def test_a_call_cut_short_hands_back_what_llama31s_parser_held(port: int) -> None:
    *lines, final = stream_lines(port, ask("weather?", options={"num_predict": 4}))
    assert lines == []
    assert final["message"]["content"] == WEATHER_JSON[:16]
    assert final["done_reason"] == "length"


def test_a_thinking_model_thinks_unless_told_not_to(port: int) -> None:
    *lines, _ = stream_lines(port, chat_body("hi", model=QWEN))
    thinking = [line["message"] for line in lines if "thinking" in line["message"]]
    assert [message["content"] for message in thinking] == ["", "", "", ""]
    assert "".join(message["thinking"] for message in thinking) == thinking_text(4)
    assert content_of(lines) == reply_text(8)
    reply = whole(port, chat_body("hi", model=QWEN, think="high"))
    assert reply["message"]["thinking"] == thinking_text(4)
    assert reply["eval_count"] == 4 + 2 + 8  # with the tokens opening and closing the thought
    lines = stream_lines(port, chat_body("hi", model=QWEN, think=False))
    assert all("thinking" not in line["message"] for line in lines)
    assert content_of(lines) == reply_text(8)
    assert "thinking" not in whole(port, chat_body("hi [[think:0]]", model=QWEN))["message"]


def test_a_model_that_thinks_anyway_sends_thinking_lines(port: int) -> None:
    # The native path (llama-server's reasoning parser) and harmony parse reasoning
    # whatever `think` says.
    configure(port, think_anyway=True)
    for body in (chat_body("hi", model=NATIVE), chat_body("hi", model=GPT_OSS, think=False)):
        *lines, _ = stream_lines(port, body)
        thinking = [line["message"] for line in lines if "thinking" in line["message"]]
        assert [message["content"] for message in thinking] == ["", "", "", ""]
        assert content_of(lines) == reply_text(8)
    assert whole(port, chat_body("hi", model=GPT_OSS, think=False))["message"]["thinking"]


def test_thinking_with_thinking_off_leaks_into_content_where_nothing_parses_it(port: int) -> None:
    # qwen3's parser with think false, and llama3.1's template, leave <think> as content.
    lines = stream_lines(port, chat_body("hi [[think-anyway]]", model=QWEN, think=False))
    assert all("thinking" not in line["message"] for line in lines)
    assert content_of(lines) == "<think>\n" + thinking_text(4) + "\n</think>\n\n" + reply_text(8)
    lines = stream_lines(port, chat_body("hi [[think-anyway]]"))
    assert content_of(lines).startswith("<think>" + thinking_text(4) + "</think>")
