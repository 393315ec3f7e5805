"""Hostile input: property-based fuzzing of the request parser, in process and on the wire."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.chat.request import parse_chat_request
from server.core.errors import ServiceError
from server.core.events import Turn

from .conftest import Process

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot"])
CONTENT = st.one_of(
    st.text(max_size=40),
    st.none(),
    st.integers(),
    st.lists(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["text", "refusal", "image_url", "input_audio", "file"]),
                "text": st.text(max_size=10),
            },
            optional={"refusal": st.text(max_size=10) | JSON},
        )
    ),
)
TOOL_CALLS = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=8),
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.text(max_size=8), "arguments": st.text(max_size=20) | JSON}
            ),
        }
    ),
    max_size=2,
)
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES, "content": CONTENT},
    optional={
        "name": st.text(max_size=8) | st.integers(),
        "tool_call_id": st.text(max_size=8),
        "toolCallId": st.text(max_size=8) | JSON,
        "tool_calls": TOOL_CALLS,
        "toolCalls": TOOL_CALLS | JSON,
        "function_call": st.fixed_dictionaries({"name": st.text(max_size=8)}) | JSON,
    },
)
CHOICE = st.sampled_from(["none", "auto", "required", "maybe"]) | JSON
BODY = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, max_size=4) | JSON},
    optional={
        "stream": st.booleans() | JSON,
        "max_tokens": st.integers(min_value=-5, max_value=50) | st.floats(-5, 50) | JSON,
        "temperature": st.floats(allow_nan=False) | JSON,
        "top_p": st.floats(allow_nan=False),
        "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3) | JSON,
        "seed": st.integers() | JSON,
        "tools": st.lists(JSON, max_size=2),
        "tool_choice": CHOICE,
        "functions": st.lists(JSON, max_size=2),
        "function_call": CHOICE,
        "parallel_tool_calls": st.booleans() | JSON,
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "json_object", "json_schema", "xml"])},
            optional={"json_schema": JSON},
        )
        | JSON,
        "reasoning_effort": st.sampled_from(["none", "low", "high"]) | JSON,
        "prompt_cache_key": st.text(max_size=8) | JSON,
        "user": st.text(max_size=8) | JSON,
        "call": JSON,
        "metadata": JSON,
        "stream_options": JSON,
    },
)


def _parse(data: object) -> Turn | ServiceError:
    try:
        return parse_chat_request(data, max_messages=3).to_turn("system")
    except ServiceError as exc:
        return exc


@settings(max_examples=400, deadline=None)
@given(st.one_of(JSON, BODY))
def test_the_parser_accepts_or_names_the_problem(data: Any) -> None:
    result = _parse(data)
    if isinstance(result, ServiceError):
        assert result.status == 400
        assert result.message
        assert result.code in {
            "invalid_request",
            "invalid_value",
            "too_many_messages",
        }
    else:  # never empty (an Ollama load request); at most the system prompt added
        assert 1 <= len(result.messages) <= 4
        for message in result.messages:
            assert message["role"] in ("system", "user", "assistant", "tool")
            assert isinstance(message["content"], str)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        BODY.map(lambda b: json.dumps({**b, "stream": bool(b.get("stream") is True)}).encode()),
        st.binary(max_size=200),
    )
)
def test_every_body_gets_a_2xx_or_a_clean_4xx(server: Process, body: bytes) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.post(f"{server.url}/v1/chat/completions", content=body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.content.endswith(b"data: [DONE]\n\n")
    else:
        assert response.json()["object"] == "chat.completion"


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=300))
def test_garbage_on_the_wire_leaves_the_server_serving(server: Process, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(garbage + b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4")
    with httpx.Client(timeout=5) as http:
        assert http.get(f"{server.url}/ping").status_code == 200
