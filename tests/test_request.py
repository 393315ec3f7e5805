"""The chat request: what the server accepts, what reaches Ollama, and what stays a 400.

Every liberal shape is posted to the real server (SSE and non-stream) and checked in
the request the simulator received; the same normalisation reaches ``/ws`` and the
RunPod worker. Every case that stays a 400 names the field and reaches nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import aclosing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from server.chat.normalise import KINDS, OPENING_LINE
from server.chat.request import parse_chat_request
from server.config import Config
from server.doors import serverless

from .bodies import BOOK_TOOL
from .conftest import MODEL, FakeOllama, Process, start_server

STREAMS = pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
USER = {"role": "user", "content": "Book it for Tuesday"}
REMIND_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "send_reminder",
        "parameters": {"type": "object", "properties": {"when": {"type": "string"}}},
    },
}


def post(server: Process, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(timeout=10) as http:
        return http.post(f"{server.url}/v1/chat/completions", json=body)


def answer_id(response: httpx.Response, stream: bool) -> str:
    """The completion id (the turn's id in the log), checking the answer is whole."""
    assert response.status_code == 200, response.text
    if stream:
        assert response.content.endswith(b"data: [DONE]\n\n")
        first = json.loads(response.content.split(b"\n\n", 1)[0][len(b"data: ") :])
        completion_id: str = first["id"]
        return completion_id
    completion = response.json()
    assert completion["object"] == "chat.completion"
    ident: str = completion["id"]
    return ident


def sent(server: Process, fake: FakeOllama, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The ``/api/chat`` body that reached the simulator for ``body``."""
    answer_id(post(server, {**body, "stream": stream}), stream)
    chat: dict[str, Any] = fake.last_chat()["body"]
    return chat


def offered_names(body: dict[str, Any]) -> list[str] | None:
    """The names of the tools an Ollama body offers, ``None`` without tools."""
    return [t["function"]["name"] for t in body["tools"]] if "tools" in body else None


def turn_log(server: Process, turn_id: str) -> dict[str, Any]:
    """The turn's JSON log line (written as the turn closes, just after its answer)."""
    deadline = time.monotonic() + 5
    while True:
        for line in server.output().decode().splitlines():
            if line.startswith("{") and f'"turn_id":"{turn_id}"' in line:
                record: dict[str, Any] = json.loads(line)
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line for turn {turn_id}")
        time.sleep(0.01)


def normalised(server: Process, body: dict[str, Any], stream: bool = True) -> list[str]:
    """The kinds the turn's log line lists for ``body``."""
    record = turn_log(server, answer_id(post(server, {**body, "stream": stream}), stream))
    kinds: list[str] = record.get("normalised", [])
    return kinds


# Accepted and normalised


@STREAMS
def test_object_arguments_are_used_as_they_are(
    server: Process, fake: FakeOllama, stream: bool
) -> None:
    history = [
        USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "book_appointment", "arguments": {"day": "Tuesday"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Booked for 9 am."},
    ]
    body = sent(server, fake, {"messages": history}, stream)
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "book_appointment", "arguments": {"day": "Tuesday"}}}
            ],
        },
        {"role": "tool", "content": "Booked for 9 am.", "tool_name": "book_appointment"},
    ]
    assert normalised(server, {"messages": history}, stream) == ["object_arguments"]


@STREAMS
def test_tools_of_other_types_are_not_offered(
    server: Process, fake: FakeOllama, stream: bool
) -> None:
    tools = [
        {
            "type": "transferCall",
            "destinations": [
                {"type": "number", "number": "+15550100003", "message": "One moment."}
            ],
            "function": {"name": "transferToDesk"},
        },
        {"type": "endCall"},
        {"type": "dtmf", "function": {"name": "dtmf", "parameters": "not a schema"}},
        {"type": "function", "function": {"name": "hang_up", "description": "End the call."}},
        {
            "type": "function",
            "function": {**BOOK_TOOL["function"], "strict": True, "x-vendor": 1},
            "server": {"url": "https://example.invalid/tools"},
            "messages": [{"type": "request-start", "content": "Booking..."}],
        },
    ]
    body = sent(server, fake, {"messages": [USER], "tools": tools}, stream)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "hang_up",
                "description": "End the call.",
                "parameters": {"type": "object", "properties": {}},
            },
        },
        BOOK_TOOL,
    ]
    assert normalised(server, {"messages": [USER], "tools": tools}, stream) == [
        "non_function_tools"
    ]


@STREAMS
def test_content_parts_keep_their_text(server: Process, fake: FakeOllama, stream: bool) -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "text", "text": "this?"},
                {"type": "file", "file": {"file_id": "file-1"}},
                {"type": "video_url", "video_url": {"url": "https://example.invalid/v"}},
                {"type": "text"},
            ],
        },
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't see images."}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    ]
    body = sent(server, fake, {"messages": messages}, stream)
    assert [m["content"] for m in body["messages"]] == [
        "Be brief.",
        "What is this?",
        "I can't see images.",
        "",
    ]
    assert normalised(server, {"messages": messages}, stream) == [
        "content_parts_dropped",
        "refusal_text",
    ]


@STREAMS
@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "system", "content": "You are Sam."}]],
    ids=["no-messages", "system-only"],
)
def test_no_conversation_asks_for_the_opening_line(
    server: Process, fake: FakeOllama, stream: bool, messages: list[dict[str, Any]]
) -> None:
    response = post(server, {"messages": messages, "stream": stream})
    answer_id(response, stream)
    if stream:
        assert b'"content":"Sure"' in response.content  # spoken, not a load request's nothing
    else:
        assert response.json()["choices"][0]["message"]["content"]
    assert fake.last_chat()["body"]["messages"] == [*messages, OPENING_LINE]
    assert normalised(server, {"messages": messages}, stream) == ["opening_line"]


def test_the_opening_line_uses_the_configured_system_prompt(fake: FakeOllama) -> None:
    process = start_server(fake.url, "--system-prompt", "You are Sam.")
    try:
        answer_id(post(process, {"messages": []}), stream=False)
        assert fake.last_chat()["body"]["messages"] == [
            {"role": "system", "content": "You are Sam."},
            OPENING_LINE,
        ]
    finally:
        process.stop()


@STREAMS
def test_legacy_function_calling(server: Process, fake: FakeOllama, stream: bool) -> None:
    history = [
        USER,
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "book_appointment", "arguments": '{"day": "Tuesday"}'},
        },
        {"role": "function", "name": "book_appointment", "content": "Booked for 9 am."},
        {"role": "user", "content": "And remind me."},
    ]
    legacy = {
        "messages": history,
        "functions": [BOOK_TOOL["function"], REMIND_TOOL["function"]],
        "function_call": "auto",
    }
    body = sent(server, fake, legacy, stream)
    assert body["tools"] == [BOOK_TOOL, REMIND_TOOL]
    assert body["messages"][1:3] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "book_appointment", "arguments": {"day": "Tuesday"}}}
            ],
        },
        {"role": "tool", "content": "Booked for 9 am.", "tool_name": "book_appointment"},
    ]
    assert normalised(server, legacy, stream) == ["legacy_functions"]


@pytest.mark.parametrize(
    ("function_call", "offered"),
    [
        ("none", None),
        ({"name": "send_reminder"}, ["send_reminder"]),
    ],
)
def test_legacy_function_call_chooses_like_tool_choice(
    server: Process, fake: FakeOllama, function_call: Any, offered: list[str] | None
) -> None:
    legacy = {
        "messages": [USER],
        "functions": [BOOK_TOOL["function"], REMIND_TOOL["function"]],
        "function_call": function_call,
    }
    body = sent(server, fake, legacy, stream=True)
    assert offered_names(body) == offered


@STREAMS
def test_camel_case_tool_calls(server: Process, fake: FakeOllama, stream: bool) -> None:
    history = [
        USER,
        {
            "role": "assistant",
            "content": "",
            "toolCalls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "book_appointment", "arguments": '{"day": "Friday"}'},
                }
            ],
        },
        {"role": "tool", "toolCallId": "call_9", "content": "Booked."},
    ]
    body = sent(server, fake, {"messages": history}, stream)
    assert body["messages"][1]["tool_calls"] == [
        {"function": {"name": "book_appointment", "arguments": {"day": "Friday"}}}
    ]
    assert body["messages"][2] == {
        "role": "tool",
        "content": "Booked.",
        "tool_name": "book_appointment",
    }
    assert normalised(server, {"messages": history}, stream) == ["camel_case"]


@STREAMS
@pytest.mark.parametrize(
    ("field", "value", "num_predict"),
    [("max_tokens", 250.0, 250), ("max_tokens", 99.9, 99), ("max_completion_tokens", 120.0, 120)],
)
def test_float_max_tokens_become_whole_tokens(
    server: Process, fake: FakeOllama, stream: bool, field: str, value: float, num_predict: int
) -> None:
    body = sent(server, fake, {"messages": [USER], field: value}, stream)
    assert body["options"] == {"num_predict": num_predict}
    assert normalised(server, {"messages": [USER], field: value}, stream) == ["float_max_tokens"]


@STREAMS
def test_sampling_options_are_clamped(server: Process, fake: FakeOllama, stream: bool) -> None:
    wild = {
        "messages": [USER],
        "temperature": 3.5,
        "top_p": 1.5,
        "frequency_penalty": -7,
        "presence_penalty": 2.5,
    }
    body = sent(server, fake, wild, stream)
    assert body["options"] == {
        "temperature": 2.0,
        "top_p": 1.0,
        "frequency_penalty": -2.0,
        "presence_penalty": 2.0,
    }
    body = sent(server, fake, {"messages": [USER], "temperature": -0.5, "top_p": 0.5}, stream)
    assert body["options"] == {"temperature": 0.0, "top_p": 0.5}
    assert normalised(server, wild, stream) == ["clamped_sampling"]


@STREAMS
def test_a_500000_character_system_prompt_is_accepted_by_default(
    server: Process, fake: FakeOllama, stream: bool
) -> None:
    knowledge = "Opening hours, prices and policies, pasted into the prompt. " * 8334
    knowledge = knowledge[:500_000]
    body = sent(
        server, fake, {"messages": [{"role": "system", "content": knowledge}, USER]}, stream
    )
    assert body["messages"][0] == {"role": "system", "content": knowledge}


@pytest.mark.parametrize("field", ["id", "callId"])
def test_the_call_id_is_read_for_the_logs(server: Process, field: str) -> None:
    body = {"messages": [USER], "call": {field: f"call-{field}-77", "orgId": "org-1"}}
    record = turn_log(server, answer_id(post(server, body), stream=False))
    assert record["call_id"] == f"call-{field}-77"


# The OpenAI dialect of the other voice stacks


@STREAMS
@pytest.mark.parametrize(
    ("tool_choice", "offered", "kinds"),
    [
        ("auto", ["book_appointment", "send_reminder"], []),
        ("none", None, []),
        ("required", ["book_appointment", "send_reminder"], ["tool_choice"]),
        (
            {"type": "function", "function": {"name": "send_reminder"}},
            ["send_reminder"],
            ["tool_choice"],
        ),
        (
            {"type": "function", "function": {"name": "not_offered"}},
            ["book_appointment", "send_reminder"],
            ["tool_choice"],
        ),
    ],
    ids=["auto", "none", "required", "named", "unknown-name"],
)
def test_tool_choice_decides_what_is_offered(
    server: Process,
    fake: FakeOllama,
    stream: bool,
    tool_choice: Any,
    offered: list[str] | None,
    kinds: list[str],
) -> None:
    request = {"messages": [USER], "tools": [BOOK_TOOL, REMIND_TOOL], "tool_choice": tool_choice}
    body = sent(server, fake, request, stream)
    assert offered_names(body) == offered
    assert normalised(server, request, stream) == kinds


@STREAMS
@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, "json"),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "booking",
                    "strict": True,
                    "schema": {"type": "object", "properties": {"day": {"type": "string"}}},
                },
            },
            {"type": "object", "properties": {"day": {"type": "string"}}},
        ),
        ({"type": "json_schema", "json_schema": {"name": "anything"}}, "json"),
        ({"type": "text"}, None),
    ],
    ids=["json_object", "json_schema", "json_schema-without-schema", "text"],
)
def test_response_format_becomes_ollamas_format(
    server: Process, fake: FakeOllama, stream: bool, response_format: Any, expected: Any
) -> None:
    body = sent(server, fake, {"messages": [USER], "response_format": response_format}, stream)
    assert body.get("format") == expected


@STREAMS
def test_reasoning_effort_never_makes_the_model_think(
    server: Process, fake: FakeOllama, stream: bool
) -> None:
    request = {"messages": [USER], "reasoning_effort": "high"}
    assert sent(server, fake, request, stream)["think"] is False
    assert normalised(server, request, stream) == ["reasoning_effort"]
    assert normalised(server, {"messages": [USER], "reasoning_effort": "none"}, stream) == []


@STREAMS
def test_tiers_keys_and_extra_bodies_are_accepted_and_not_forwarded(
    server: Process, fake: FakeOllama, stream: bool
) -> None:
    request = {
        "messages": [USER],
        "service_tier": "flex",
        "prompt_cache_key": "conv-1",
        "user": "user-1",
        "user_id": "end-user-1",
        "safety_identifier": "hashed-user",
        "elevenlabs_extra_body": {"UUID": "123e4567-e89b-12d3-a456-426614174000"},
        "parallel_tool_calls": True,
        "metadata": {"room": "r1"},
        "store": False,
        "verbosity": "low",
        "model": 42,
    }
    body = sent(server, fake, request, stream)
    assert set(body) == {"model", "messages", "stream", "think", "keep_alive", "options"}
    assert body["model"] == MODEL


def test_the_call_key_names_the_conversation() -> None:
    def key(**fields: Any) -> str | None:
        return parse_chat_request({"messages": [USER], **fields}).to_turn().call_key

    everything = {
        "call": {"id": "vapi-1", "callId": "vapi-old"},
        "prompt_cache_key": "cache-1",
        "user": "user-1",
        "user_id": "eleven-1",
    }
    assert key(**everything) == "vapi-1"
    assert key(**{**everything, "call": {"callId": "vapi-old"}}) == "vapi-old"
    assert key(**{**everything, "call": {"orgId": "org"}}) == "cache-1"
    assert key(prompt_cache_key="", user="user-1", user_id="eleven-1") == "user-1"
    assert key(user_id="eleven-1") == "eleven-1"
    assert key() is None


class _TwoCalls(BaseHTTPRequestHandler):
    """Ollama as it answers for a model that calls two tools at once: both in one chunk."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._send({"version": "0.32.15"})
        else:
            self._send({"models": [{"name": MODEL, "model": MODEL}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        done = {"model": MODEL, "created_at": "2026-08-20T14:03:11Z", "done": True}
        if not body["messages"]:
            self._send(
                {**done, "message": {"role": "assistant", "content": ""}, "done_reason": "load"}
            )
            return
        calls = [
            {"function": {"index": i, "name": tool["function"]["name"], "arguments": {}}}
            for i, tool in enumerate(body["tools"])
        ]
        message = {"role": "assistant", "content": "", "tool_calls": calls}
        lines = [
            {**done, "done": False, "message": message},
            {
                **done,
                "message": {"role": "assistant", "content": ""},
                "done_reason": "stop",
                "prompt_eval_count": 40,
                "eval_count": 30,
            },
        ]
        self._send(*lines)

    def _send(self, *objects: dict[str, Any]) -> None:
        payload = b"".join(json.dumps(o).encode() + b"\n" for o in objects)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def two_calls_server() -> Iterator[Process]:
    ollama = ThreadingHTTPServer(("127.0.0.1", 0), _TwoCalls)
    thread = threading.Thread(target=ollama.serve_forever, daemon=True)
    thread.start()
    process = start_server(f"http://127.0.0.1:{ollama.server_address[1]}")
    yield process
    process.stop()
    ollama.shutdown()
    ollama.server_close()


@STREAMS
@pytest.mark.parametrize(("parallel", "names"), [(None, 2), (True, 2), (False, 1)])
def test_parallel_tool_calls_false_keeps_the_first_call(
    two_calls_server: Process, stream: bool, parallel: bool | None, names: int
) -> None:
    request: dict[str, Any] = {
        "messages": [USER],
        "tools": [BOOK_TOOL, REMIND_TOOL],
        "stream": stream,
    }
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    response = post(two_calls_server, request)
    answer_id(response, stream)
    if stream:
        chunks = [json.loads(e[6:]) for e in response.text.split("\n\n")[:-2]]
        calls = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls", [])]
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        calls = response.json()["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["book_appointment", "send_reminder"][:names]


def test_normalisation_is_counted_by_kind(server: Process) -> None:
    def counted() -> dict[str, float]:
        with httpx.Client(timeout=5) as http:
            text = http.get(f"{server.url}/metrics").text
        prefix = "voice_llm_requests_normalised_total{kind="
        return {
            line[len(prefix) + 1 : line.index('"}')]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix)
        }

    before = counted()
    history = [USER, {"role": "assistant", "toolCalls": [], "content": 5.0}]
    assert post(server, {"messages": history, "max_tokens": 9.0}).status_code == 400
    body = {"messages": [USER, {"role": "assistant", "toolCalls": []}], "max_tokens": 9.0}
    answer_id(post(server, body), stream=False)
    after = counted()
    assert after["camel_case"] == before.get("camel_case", 0) + 1
    assert after["float_max_tokens"] == before.get("float_max_tokens", 0) + 1
    assert set(after) <= set(KINDS)


# The same normalisation on every door

LIBERAL: dict[str, Any] = {
    "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Book"}, {"type": "image_url"}]},
        {
            "role": "assistant",
            "toolCalls": [{"id": "c1", "function": {"name": "book_appointment", "arguments": {}}}],
        },
        {"role": "tool", "toolCallId": "c1", "content": "Booked."},
    ],
    "tools": [{"type": "endCall"}, BOOK_TOOL],
    "max_tokens": 40.0,
    "temperature": 2.5,
    "response_format": {"type": "json_object"},
}
LIBERAL_SENT: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Book"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "book_appointment", "arguments": {}}}],
        },
        {"role": "tool", "content": "Booked.", "tool_name": "book_appointment"},
    ],
    "tools": [BOOK_TOOL],
    "options": {"num_predict": 40, "temperature": 2.0},
    "format": "json",
}


def reached(fake: FakeOllama) -> dict[str, Any]:
    body = fake.last_chat()["body"]
    return {key: body[key] for key in LIBERAL_SENT}


@STREAMS
def test_http_normalises(server: Process, fake: FakeOllama, stream: bool) -> None:
    sent(server, fake, LIBERAL, stream)
    assert reached(fake) == LIBERAL_SENT


def test_the_websocket_normalises_the_same(server: Process, fake: FakeOllama) -> None:
    url = server.url.replace("http://", "ws://") + "/ws"
    with connect(url, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "chat", "id": "t1", **LIBERAL}))
        frames = [json.loads(ws.recv(timeout=5))]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.recv(timeout=5)))
    assert frames[-1]["type"] == "done", frames
    assert reached(fake) == LIBERAL_SENT


@pytest.mark.parametrize("route", ["native", "openai"])
def test_the_runpod_worker_normalises_the_same(fake: FakeOllama, route: str) -> None:
    worker = serverless.Worker(Config(ollama_url=fake.url, model=MODEL))
    job = (
        LIBERAL
        if route == "native"
        else {"openai_route": "/v1/chat/completions", "openai_input": LIBERAL}
    )

    async def run() -> list[Any]:
        async with aclosing(worker.handle({"id": "job-1", "input": job})) as items:
            return [item async for item in items]

    items = asyncio.run(run())
    assert items
    assert not any(isinstance(item, dict) and "error" in item for item in items)
    assert reached(fake) == LIBERAL_SENT


# What stays a 400


def only(message: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [message]}


def call_with(arguments: Any, field: str = "tool_calls") -> dict[str, Any]:
    call = {"function": {"name": "f", "arguments": arguments}}
    return only({"role": "assistant", field: [call]})


BAD = [
    ({"messages": [USER], "stream": "yes"}, "stream"),
    ({"messages": [USER], "temperature": "hot"}, "temperature"),
    ({"messages": [USER], "max_tokens": "250"}, "max_tokens"),
    ({"messages": [USER], "max_tokens": 0.5}, "max_tokens"),
    ({"messages": [USER], "max_completion_tokens": -3.0}, "max_completion_tokens"),
    ({"messages": [USER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [USER], "tool_choice": {"type": "function"}}, "tool_choice"),
    ({"messages": [USER], "function_call": 5}, "function_call"),
    ({"messages": [USER], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"messages": [USER], "response_format": "json"}, "response_format"),
    ({"messages": [USER], "response_format": {"type": "xml"}}, "response_format.type"),
    ({"messages": [USER], "reasoning_effort": 3}, "reasoning_effort"),
    ({"messages": [USER], "prompt_cache_key": 7}, "prompt_cache_key"),
    ({"messages": [USER], "user": ["me"]}, "user"),
    ({"messages": [USER], "user_id": 7}, "user_id"),
    ({"messages": [USER], "tools": [{"type": "function"}]}, "tools.0.function"),
    (
        {"messages": [USER], "tools": [{"type": "function", "function": {}}]},
        "tools.0.function.name",
    ),
    ({"messages": [USER], "functions": [{"name": 5}]}, "functions.0.name"),
    (only({"role": "user", "content": {"type": "text", "text": "hi"}}), "messages.0.content"),
    (only({"role": "user", "content": [{"type": "text", "text": 5}]}), "messages.0.content.0.text"),
    (only({"role": "user", "content": ["hi"]}), "messages.0.content.0"),
    (only({"role": "User", "content": "hi"}), "messages.0.role"),
    (only({"role": "tool", "toolCallId": 5, "content": "ok"}), "messages.0.toolCallId"),
    (call_with('["Tuesday"]'), "messages.0.tool_calls.0.function.arguments"),
    (call_with("{x", "toolCalls"), "messages.0.toolCalls.0.function.arguments"),
    (
        only({"role": "assistant", "function_call": {"name": "f", "arguments": [1]}}),
        "messages.0.function_call.arguments",
    ),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[param for _, param in BAD])
def test_ambiguous_bodies_get_a_clear_error(
    server: Process, fake: FakeOllama, body: dict[str, Any], param: str
) -> None:
    seen = len(fake.requests())
    response = post(server, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_value"
    assert error["param"] == param
    assert f"'{param}'" in error["message"]
    assert len(fake.requests()) == seen


def test_the_websocket_and_runpod_name_the_field_too(server: Process, fake: FakeOllama) -> None:
    bad = {"messages": [USER], "tool_choice": "sometimes"}
    url = server.url.replace("http://", "ws://") + "/ws"
    with connect(url, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "chat", "id": "t1", **bad}))
        error = json.loads(ws.recv(timeout=5))
    assert error["type"] == "error"
    assert error["code"] == "invalid_value"
    assert "'tool_choice'" in error["message"]

    worker = serverless.Worker(Config(ollama_url=fake.url, model=MODEL))

    async def run() -> list[Any]:
        async with aclosing(worker.handle({"id": "job-1", "input": bad})) as items:
            return [item async for item in items]

    failed = asyncio.run(run())
    assert len(failed) == 1
    assert "'tool_choice' is invalid" in failed[0]["error"]
