"""The VAPI custom-llm route over HTTP: streaming and not, checked with real clients."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from .conftest import API_KEY, MODEL, FakeOllama, Process, start_server

TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "book_appointment",
            "description": "Book a slot.",
            "parameters": {
                "type": "object",
                "properties": {
                    "day": {"type": "string"},
                    "attendees": {"type": "integer"},
                    "details": {
                        "type": "object",
                        "properties": {"room": {"type": "object", "properties": {}}},
                    },
                },
                "required": ["day"],
            },
        },
    }
]

VAPI_BODY: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a receptionist."},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "I'd like to book a table."},
    ],
    "temperature": 0.5,
    "max_tokens": 250,
    "stream": True,
    "call": {
        "id": "call-8d2f",
        "orgId": "org-1",
        "type": "inboundPhoneCall",
        "monitor": {"controlUrl": "https://example.invalid/control"},
    },
    "customer": {"number": "+15551234567"},
    "phoneNumber": {"twilioAuthToken": "secret-token-xyz", "number": "+15557654321"},
    "metadata": {"crm": "abc"},
    "timestamp": 1764300000000,
    "assistant": {"name": "front desk"},
    "somethingNew": [1, 2, 3],
}


def client(server: Process, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def sse_events(raw: bytes) -> list[bytes]:
    """Split an SSE body into event payloads, checking the framing byte by byte."""
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events.pop() == b""
    payloads = []
    for event in events:
        assert event.startswith(b"data: "), event
        assert b"\n" not in event, event
        payloads.append(event[len(b"data: ") :])
    return payloads


def post_raw(
    server: Process, body: bytes, path: str = "/chat/completions", **headers: str
) -> httpx.Response:
    with httpx.Client(timeout=10) as http:
        return http.post(f"{server.url}{path}", content=body, headers=headers)


def test_openai_sdk_streams_tokens(server: Process) -> None:
    stream = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    assert sum(1 for c in chunks if c.choices[0].delta.content) == 12
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_openai_sdk_without_stream(server: Process) -> None:
    completion = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 12


def test_sse_bytes_follow_the_openai_chunk_shape(server: Process) -> None:
    body = json.dumps(
        {"messages": [{"role": "user", "content": "Hi [[tokens:3]]"}], "stream": True}
    )
    response = post_raw(server, body.encode(), **{"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_events(response.content)
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        *({"content": c["choices"][0]["delta"]["content"]} for c in chunks[1:4]),
        {},
    ]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == chunks[0]["id"]
        assert chunk["model"] == MODEL
        assert isinstance(chunk["created"], int)
        assert chunk["choices"][0]["index"] == 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", chunks[0]["id"])
    again = sse_events(
        post_raw(server, body.encode(), **{"Content-Type": "application/json"}).content
    )
    assert json.loads(again[0])["id"] != chunks[0]["id"]  # a fresh id per completion


def test_usage_chunk_when_asked(server: Process) -> None:
    body = {
        "messages": [{"role": "user", "content": "Hi [[tokens:2]]"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payloads = sse_events(post_raw(server, json.dumps(body).encode()).content)
    usage_chunk = json.loads(payloads[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 2
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 2


def test_stream_is_decided_by_the_body_not_accept(server: Process) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "stream": True}).encode()
    response = post_raw(server, body, Accept="application/json")
    assert response.headers["content-type"].startswith("text/event-stream")
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode()
    response = post_raw(server, body, Accept="text/event-stream")
    assert response.headers["content-type"] == "application/json"
    assert response.json()["object"] == "chat.completion"


@pytest.mark.parametrize(
    "path", ["/chat/completions", "/v1/chat/completions", "/chat/completions/chat/completions"]
)
def test_every_chat_path(server: Process, path: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "Hi [[tokens:1]]"}]}).encode()
    assert post_raw(server, body, path).json()["object"] == "chat.completion"


def test_vapi_body_is_accepted_and_only_the_chat_reaches_ollama(
    server: Process, fake: FakeOllama
) -> None:
    response = post_raw(server, json.dumps(VAPI_BODY).encode())
    assert response.status_code == 200
    assert sse_events(response.content)[-1] == b"[DONE]"
    sent = fake.last_chat()["body"]
    assert sent["model"] == MODEL  # the configured model, not the requested "gpt-4o"
    assert sent["think"] is False
    assert sent["keep_alive"] == -1
    assert sent["stream"] is True
    assert sent["options"] == {"num_predict": 250, "temperature": 0.5}
    assert [m["role"] for m in sent["messages"]] == ["system", "assistant", "user"]
    assert set(sent) == {"model", "messages", "stream", "think", "keep_alive", "options"}


def test_system_prompt_fills_in_a_missing_one(fake: FakeOllama) -> None:
    process = start_server(fake.url, "--system-prompt", "Be brief.")
    try:
        body = {"messages": [{"role": "user", "content": "Hi [[tokens:1]]"}]}
        post_raw(process, json.dumps(body).encode())
        assert fake.last_chat()["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
        body["messages"].insert(0, {"role": "system", "content": "Own prompt."})
        post_raw(process, json.dumps(body).encode())
        assert [m["content"] for m in fake.last_chat()["body"]["messages"]] == [
            "Own prompt.",
            "Hi [[tokens:1]]",
        ]
    finally:
        process.stop()


def test_load_time_options_never_reload_the_model(fake: FakeOllama) -> None:
    before = fake.stats()["reloads"]
    process = start_server(fake.url, "--num-ctx", "4096")
    try:
        for _ in range(3):
            body = {"messages": [{"role": "user", "content": "Hi [[tokens:1]]"}], "max_tokens": 5}
            post_raw(process, json.dumps(body).encode())
        assert fake.last_chat()["body"]["options"] == {"num_ctx": 4096, "num_predict": 5}
        preloads = [r for r in fake.requests() if not r["body"].get("messages")]
        assert preloads[-1]["body"]["options"] == {"num_ctx": 4096}
        # One reload when this server's num_ctx first differed from the session's; no more.
        assert fake.stats()["reloads"] - before <= 1
        reloads = fake.stats()["reloads"]
        post_raw(process, json.dumps(body).encode())
        assert fake.stats()["reloads"] == reloads
    finally:
        process.stop()


@pytest.mark.parametrize("path", ["chunk", "final"])
def test_tool_calls_stream_on_both_ollama_paths(server: Process, path: str) -> None:
    stream = client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"Book Monday [[tool:{path}]]"}],
        tools=TOOLS,
        stream=True,
    )
    chunks = list(stream)
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert len(calls) == 1
    call = calls[0]
    assert call.index == 0
    assert call.type == "function"
    assert call.id
    assert call.id.startswith("call_")
    assert call.function is not None
    assert call.function.name == "book_appointment"
    arguments = json.loads(call.function.arguments or "")
    assert arguments == {"day": "example", "attendees": 1, "details": {}}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_call_without_stream_and_the_result_round_trip(
    server: Process, fake: FakeOllama
) -> None:
    completion = client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Book Monday [[tool:final]]"}],
        tools=TOOLS,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert json.loads(call.function.arguments)["day"] == "example"
    assert fake.last_chat()["body"]["tools"] == TOOLS  # nested schemas reach Ollama whole

    client(server).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Book Monday"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "book_appointment", "arguments": '{"day": "Monday"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "booked"},
        ],
    )
    messages = fake.last_chat()["body"]["messages"]
    assert messages[1]["tool_calls"] == [
        {"function": {"name": "book_appointment", "arguments": {"day": "Monday"}}}
    ]
    assert messages[2] == {"role": "tool", "content": "booked", "tool_name": "book_appointment"}


def test_mid_stream_error_ends_the_stream_cleanly(server: Process) -> None:
    body = {"messages": [{"role": "user", "content": "Hi [[error-after:3]]"}], "stream": True}
    payloads = sse_events(post_raw(server, json.dumps(body).encode()).content)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) == 3
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("directive", "status", "code"),
    [
        ("[[status:500]]", 502, "upstream_error"),
        ("[[status:503]]", 503, "ollama_busy"),
        ("[[status:400]]", 400, "rejected_by_ollama"),
        ("[[error-after:0]]", 502, "upstream_error"),
        ("[[drop-after:0]]", 502, "upstream_error"),
    ],
)
def test_failure_before_the_first_token_is_a_real_status(
    server: Process, directive: str, status: int, code: str
) -> None:
    body = {"messages": [{"role": "user", "content": f"Hi {directive}"}], "stream": True}
    response = post_raw(server, json.dumps(body).encode())
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    if status == 503:
        assert response.headers["retry-after"] == "2"


def test_ollama_down(fake: FakeOllama) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    process = start_server(dead, wait_warm=False)
    try:
        with httpx.Client(timeout=5) as http:
            assert http.get(f"{process.url}/ping").status_code == 204
            health = http.get(f"{process.url}/health")
            assert health.status_code == 503
            assert health.json()["ollama"]["reachable"] is False
            assert health.json()["model"] == {"name": MODEL, "warm": False}
            body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
            response = http.post(f"{process.url}/v1/chat/completions", json=body)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "2"
            assert response.json()["error"]["code"] == "ollama_unreachable"
    finally:
        process.stop()


def test_health_ping_and_models(server: Process) -> None:
    with httpx.Client(timeout=5) as http:
        assert http.get(f"{server.url}/ping").status_code == 200
        health = http.get(f"{server.url}/health").json()
        assert health["status"] == "ok"
        assert health["ollama"]["reachable"] is True
        assert health["ollama"]["version"]
        assert health["model"] == {"name": MODEL, "warm": True}
    models = client(server).models.list()
    assert [m.id for m in models.data] == [MODEL]


# Auth


def test_auth_accepts_bearer_and_bare_key(keyed_server: Process) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "Hi [[tokens:1]]"}]}).encode()
    assert post_raw(keyed_server, body, Authorization=f"Bearer {API_KEY}").status_code == 200
    assert post_raw(keyed_server, body, Authorization=API_KEY).status_code == 200
    completion = client(keyed_server, API_KEY).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi [[tokens:1]]"}]
    )
    assert completion.choices[0].message.content


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "missing_api_key"),  # "Bearer " arrives so, trimmed
        ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"Authorization": "wrong"}, "invalid_api_key"),
        ({"Authorization": f"Basic {API_KEY}"}, "invalid_api_key"),
    ],
)
def test_auth_refuses_missing_or_wrong_keys(
    keyed_server: Process, fake: FakeOllama, headers: dict[str, str], code: str
) -> None:
    seen = len(fake.requests())
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "stream": True}).encode()
    response = post_raw(keyed_server, body, **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert len(fake.requests()) == seen
    with httpx.Client(timeout=5) as http:
        assert http.get(f"{keyed_server.url}/v1/models", headers=headers).status_code == 401
        assert http.get(f"{keyed_server.url}/ping").status_code == 200
        assert http.get(f"{keyed_server.url}/health").status_code == 200


def test_no_key_on_a_public_address_is_a_loud_warning(fake: FakeOllama) -> None:
    public = start_server(fake.url, "--host", "0.0.0.0")
    loopback = start_server(fake.url)
    public.stop()
    loopback.stop()
    assert b"NO API KEY" in public.output()
    assert b"NO API KEY" not in loopback.output()


def test_openai_sdk_sees_a_wrong_key_as_authentication_error(keyed_server: Process) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(keyed_server, "wrong").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}]
        )


# Bad input: a clear 4xx, nothing sent to Ollama, and the server keeps serving.

BAD_BODIES = [
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_request", None),
    (b'"hello"', 400, "invalid_request", None),
    (b"{}", 400, "invalid_value", "messages"),
    (b'{"messages": "hi"}', 400, "invalid_value", "messages"),
    (b'{"messages": [{"content": "hi"}]}', 400, "invalid_value", "messages.0.role"),
    (
        b'{"messages": [{"role": "robot", "content": "hi"}]}',
        400,
        "invalid_value",
        "messages.0.role",
    ),
    (b'{"messages": [{"role": "user", "content": 5}]}', 400, "invalid_value", "messages.0.content"),
    (
        b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
        400,
        "invalid_value",
        "stream",
    ),
    (
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
        400,
        "invalid_value",
        "temperature",
    ),
    (
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
        400,
        "invalid_value",
        "max_tokens",
    ),
    (
        b'{"messages": [{"role": "user", "content": "hi"}], "tools": [{}]}',
        400,
        "invalid_value",
        "tools.0.type",
    ),
    (
        b'{"messages": [{"role": "assistant", "tool_calls": '
        b'[{"function": {"name": "f", "arguments": "{x"}}]}]}',
        400,
        "invalid_value",
        "messages.0.tool_calls.0.function.arguments",
    ),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), BAD_BODIES)
def test_bad_bodies_get_a_clear_error(
    server: Process, fake: FakeOllama, body: bytes, status: int, code: str, param: str | None
) -> None:
    seen = len(fake.requests())
    response = post_raw(server, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if param:
        assert param in error["message"]
    assert len(fake.requests()) == seen
    ok = post_raw(
        server, json.dumps({"messages": [{"role": "user", "content": "Hi [[tokens:1]]"}]}).encode()
    )
    assert ok.status_code == 200


def test_unknown_route_and_wrong_method(server: Process) -> None:
    with httpx.Client(timeout=5) as http:
        response = http.get(f"{server.url}/nope")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        response = http.get(f"{server.url}/v1/chat/completions")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json()["error"]["code"] == "method_not_allowed"
        response = http.get(f"{server.url}/ws")  # a websocket route, without the upgrade
        assert response.status_code == 426
        assert response.headers["upgrade"] == "websocket"
        assert response.json()["error"]["code"] == "upgrade_required"


def test_body_over_the_limit(server: Process) -> None:
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (17 * 1024 * 1024) + b'"}]}'
    response = post_raw(server, big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"

    def chunked() -> Any:
        yield big[: 1024 * 1024]
        yield big[1024 * 1024 :]

    with httpx.Client(timeout=10) as http:
        response = http.post(f"{server.url}/chat/completions", content=chunked())
    assert response.status_code == 413


def test_bodies_are_never_logged(fake: FakeOllama) -> None:
    process = start_server(fake.url, "--log-level", "debug")
    try:
        post_raw(process, json.dumps(VAPI_BODY).encode())
        post_raw(process, b'{"messages": [{"role": "robot", "content": "+15551234567"}]}')
    finally:
        process.stop()
    logs = process.output()
    assert b"is warm" in logs  # the check below reads the real logs
    for secret in (b"+15551234567", b"secret-token-xyz", b"receptionist"):
        assert secret not in logs


def test_disconnect_closes_the_ollama_request_within_100_ms(
    server: Process, fake: FakeOllama
) -> None:
    body = json.dumps(
        {"messages": [{"role": "user", "content": "Hi [[tokens:500]] [[itl:20]]"}], "stream": True}
    ).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request)
        received = b""
        while received.count(b"data: ") < 3:
            received += sock.recv(65536)
        left_at = time.time()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = fake.last_chat()
        if record["client_closed_at"] is not None:
            break
        time.sleep(0.02)
    assert record["outcome"] == "client_closed"
    assert record["client_closed_at"] - left_at < 0.1
    assert record["tokens_sent"] < 100
