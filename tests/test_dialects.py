"""The voice stacks' own requests, replayed against the real server, read as each stack reads.

The bodies (tests/bodies.py) are what each stack's current release sends, read from
its source or docs; the stream is checked the way that stack consumes it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionChunk

from server.chat.request import parse_chat_request

from .bodies import (
    BOOK_TOOL,
    ELEVENLABS_TURN,
    LIVEKIT_CREATE,
    LIVEKIT_TOOL,
    PIPECAT_CREATE,
    PIPECAT_TOOL,
    SYSTEM,
    VAPI_TURN,
)
from .conftest import MODEL, FakeOllama, Process


def client(server: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def sse_chunks(raw: bytes) -> list[dict[str, Any]]:
    """The chunks of an SSE body framed as ElevenLabs and VAPI require: ``data: {json}``
    events, then ``data: [DONE]``."""
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    assert all(event.startswith(b"data: {") for event in events[:-2])
    return [json.loads(event[len(b"data: ") :]) for event in events[:-2]]


def spoken(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


class LiveKitReader:
    """What livekit-agents 1.7.0's LLMStream._run and _parse_choice take from the stream
    (livekit-agents/livekit/agents/inference/llm.py): text, whole tool calls (id and
    name on a call's first delta, arguments appended), and the usage chunk with
    ``prompt_tokens_details.cached_tokens`` (0 when absent)."""

    def __init__(self) -> None:
        self.text = ""
        self.calls: list[tuple[str, str, str]] = []
        self.usage: tuple[int, int, int] | None = None
        self._call: list[str] | None = None

    def read(self, chunk: ChatCompletionChunk) -> None:
        for choice in chunk.choices:
            for tool in choice.delta.tool_calls or ():
                assert tool.function is not None
                if tool.function.name:
                    assert tool.id
                    self._call = [tool.id, tool.function.name, tool.function.arguments or ""]
                elif tool.function.arguments:
                    assert self._call is not None
                    self._call[2] += tool.function.arguments
            if choice.finish_reason in ("tool_calls", "stop") and self._call is not None:
                self.calls.append((self._call[0], self._call[1], self._call[2]))
                self._call = None
            self.text += choice.delta.content or ""
        if chunk.usage is not None:
            details = chunk.usage.prompt_tokens_details
            cached = (details.cached_tokens if details else 0) or 0
            self.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens, cached)


def test_livekit_agents(server: Process, fake: FakeOllama) -> None:
    reader = LiveKitReader()
    for chunk in client(server).chat.completions.create(**LIVEKIT_CREATE):
        reader.read(chunk)
    assert reader.text.startswith("Sure, here is a short simulated reply")  # after the tool
    assert reader.calls == []
    assert reader.usage is not None
    assert reader.usage[1] == 12
    assert reader.usage[2] == 0  # the server cannot tell yet: no prompt_tokens_details

    sent = fake.last_chat()["body"]
    assert sent["model"] == MODEL
    assert sent["think"] is False  # reasoning_effort "minimal" does not make it think
    assert sent["options"] == {"num_predict": 300, "temperature": 0.8, "top_p": 0.9}
    strict_dropped = {k: v for k, v in LIVEKIT_TOOL["function"].items() if k != "strict"}
    assert sent["tools"] == [{"type": "function", "function": strict_dropped}]
    assert sent["messages"][2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "function": {
                        "name": "lookup_weather",
                        "arguments": {"location": "Paris", "unit": None},
                    }
                }
            ],
        },
        {"role": "tool", "content": "sunny, 21 degrees", "tool_name": "lookup_weather"},
    ]
    turn = parse_chat_request(LIVEKIT_CREATE).to_turn()
    assert turn.call_key == "room-42"  # prompt_cache_key before user
    assert turn.parallel_tool_calls is False

    # The caller asks again: a tool call, read whole by LiveKit.
    follow_up = copy.deepcopy(LIVEKIT_CREATE)
    follow_up["messages"] += [
        {"role": "assistant", "content": "It's sunny and 21 degrees in Paris."},
        {"role": "user", "content": "And in London?"},
    ]
    reader = LiveKitReader()
    for chunk in client(server).chat.completions.create(**follow_up):
        reader.read(chunk)
    assert reader.text == ""
    [(call_id, name, arguments)] = reader.calls
    assert call_id.startswith("call_")
    assert name == "lookup_weather"
    assert set(json.loads(arguments)) == {"location", "unit"}


def test_pipecat(server: Process, fake: FakeOllama) -> None:
    # BaseOpenAILLMService._process_context (src/pipecat/services/openai/base_llm.py):
    # usage from any chunk that has it, then chunks with choices: tool calls or text.
    text, calls, usage = "", [], None
    for chunk in client(server).chat.completions.create(**PIPECAT_CREATE):
        if chunk.usage:
            details = chunk.usage.prompt_tokens_details
            usage = (chunk.usage.prompt_tokens, details.cached_tokens if details else None)
        if chunk.choices is None or len(chunk.choices) == 0:
            continue
        delta = chunk.choices[0].delta
        if delta.tool_calls:
            calls.extend(delta.tool_calls)
        elif delta.content:
            text += delta.content
    assert text.startswith("Sure, here is")
    assert calls == []
    assert usage is not None
    assert usage[0] > 0
    assert usage[1] is None

    sent = fake.last_chat()["body"]
    assert sent["options"] == {"num_predict": 200, "temperature": 0.7}
    assert sent["tools"] == [PIPECAT_TOOL]
    assert sent["messages"][-1] == {
        "role": "tool",
        "content": '{"conditions": "foggy", "temperature": "16"}',
        "tool_name": "get_current_weather",
    }
    assert "service_tier" not in sent
    assert parse_chat_request(PIPECAT_CREATE).to_turn().call_key is None


def test_elevenlabs_agents(server: Process, fake: FakeOllama) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.post(f"{server.url}/v1/chat/completions", json=ELEVENLABS_TURN)
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(response.content)
    calls = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls", [])]
    assert [(c["type"], c["function"]["name"]) for c in calls] == [("function", "end_call")]
    assert set(json.loads(calls[0]["function"]["arguments"])) == {"reason", "message"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    sent = fake.last_chat()["body"]
    assert sent["options"] == {"num_predict": 5000, "temperature": 0.5}
    assert [t["function"]["name"] for t in sent["tools"]] == ["end_call", "skip_turn"]
    assert "user_id" not in sent
    assert "elevenlabs_extra_body" not in json.dumps(sent)
    assert parse_chat_request(ELEVENLABS_TURN).to_turn().call_key == "end-user-1234"

    # The extra-body example request has no tools: the agent speaks.
    no_tools = {k: v for k, v in ELEVENLABS_TURN.items() if k != "tools"}
    no_tools["messages"] = [
        *ELEVENLABS_TURN["messages"][:2],
        {"role": "user", "content": "Hey, who are you?"},
    ]
    with httpx.Client(timeout=10) as http:
        response = http.post(f"{server.url}/v1/chat/completions", json=no_tools)
    assert spoken(sse_chunks(response.content)).startswith("Sure, here is")


def test_a_vapi_call(server: Process, fake: FakeOllama) -> None:
    """A phone call's turns as an older VAPI assistant sends them: legacy ``functions``,
    ``call.callId``, a long knowledge prompt, a tool round trip, then a content array."""
    knowledge = (SYSTEM + "Price list and policies follow. ") * 600
    knowledge = knowledge[:500_000]
    turn: dict[str, Any] = {
        **{k: v for k, v in VAPI_TURN.items() if k not in ("tools", "call")},
        "functions": [BOOK_TOOL["function"]],
        "call": {"callId": "0c1d2e3f-old-style", "orgId": "org-1"},
        "messages": [
            {"role": "system", "content": knowledge},
            {
                "role": "assistant",
                "content": "Hello, thanks for calling Bright Smile. How can I help?",
            },
            {"role": "user", "content": "I'd like a cleaning on Tuesday morning."},
        ],
    }

    def say(body: dict[str, Any]) -> list[dict[str, Any]]:
        with httpx.Client(timeout=20) as http:
            response = http.post(f"{server.url}/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return sse_chunks(response.content)

    # Turn 1: the model books through the legacy function.
    chunks = say(turn)
    [call] = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls", [])]
    assert call["function"]["name"] == "book_appointment"
    sent = fake.last_chat()["body"]
    assert sent["messages"][0] == {"role": "system", "content": knowledge}
    assert sent["tools"] == [BOOK_TOOL]

    # Turn 2: VAPI ran the tool; the result is in the history and the model speaks.
    history_call = {k: v for k, v in call.items() if k != "index"}
    turn["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [history_call]},
        {
            "role": "tool",
            "tool_call_id": call["id"],
            "name": "book_appointment",
            "content": "Booked: Tuesday 9 am with Dr. Lee.",
            "metadata": {"toolCallId": call["id"]},
        },
    ]
    first_answer = spoken(say(turn))
    assert first_answer.startswith("Sure, here is")
    assert fake.last_chat()["body"]["messages"][-1] == {
        "role": "tool",
        "content": "Booked: Tuesday 9 am with Dr. Lee.",
        "tool_name": "book_appointment",
    }

    # Turn 3: the caller's words arrive as a content array beside a part the model cannot read.
    turn["messages"] += [
        {"role": "assistant", "content": first_answer},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Great, see you then. [[no-tool]]"},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            ],
            "metadata": {"confidence": 0.91},
        },
    ]
    assert spoken(say(turn)).startswith("Sure, here is")
    sent = fake.last_chat()["body"]
    assert sent["messages"][-1] == {"role": "user", "content": "Great, see you then. [[no-tool]]"}
    assert len(sent["messages"]) == 7
    assert sent["messages"][0]["content"] == knowledge
