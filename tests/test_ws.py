"""The ``/ws`` endpoint: many turns on one socket, barge-in, bad frames, auth."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from .conftest import API_KEY, FakeOllama, Process, start_server


def ws_url(server: Process, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/ws" + query


@pytest.fixture
def ws(server: Process) -> Iterator[ClientConnection]:
    with connect(ws_url(server), open_timeout=5, close_timeout=2) as connection:
        yield connection


def chat(turn_id: str, content: str, **fields: Any) -> str:
    return json.dumps(
        {
            "type": "chat",
            "id": turn_id,
            "messages": [{"role": "user", "content": content}],
            **fields,
        }
    )


def recv(ws: ClientConnection) -> dict[str, Any]:
    frame = ws.recv(timeout=5)
    assert isinstance(frame, str)
    result: dict[str, Any] = json.loads(frame)
    return result


def until_end(ws: ClientConnection, turn_id: str) -> list[dict[str, Any]]:
    """Frames up to and including the turn's ``done`` or ``error``."""
    frames = []
    while True:
        frame = recv(ws)
        frames.append(frame)
        if frame["id"] == turn_id and frame["type"] in ("done", "error"):
            return frames


def wait_closed(fake: FakeOllama, content_marker: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        record = next(
            r
            for r in reversed(fake.requests())
            if content_marker in json.dumps(r["body"].get("messages", []))
        )
        if record["client_closed_at"] is not None or time.monotonic() > deadline:
            result: dict[str, Any] = record
            return result
        time.sleep(0.02)


def test_many_turns_on_one_socket(ws: ClientConnection) -> None:
    for turn_id in ("t1", "t2", "t3"):
        ws.send(chat(turn_id, "Hi [[tokens:4]]"))
        frames = until_end(ws, turn_id)
        assert [f["type"] for f in frames] == ["delta"] * 4 + ["done"]
        assert all(f["id"] == turn_id for f in frames)
        assert all(isinstance(f["content"], str) and f["content"] for f in frames[:4])
        done = frames[-1]
        assert done["finish_reason"] == "stop"
        assert done["usage"]["completion_tokens"] == 4


def test_openai_fields_beside_messages(ws: ClientConnection, fake: FakeOllama) -> None:
    ws.send(chat("t1", "Hi [[tokens:9]]", max_tokens=3, temperature=0.2, model="anything"))
    frames = until_end(ws, "t1")
    assert frames[-1]["finish_reason"] == "length"
    assert fake.last_chat()["body"]["options"] == {"num_predict": 3, "temperature": 0.2}


def test_tool_call_frame(ws: ClientConnection) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "hang_up",
                "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
            },
        }
    ]
    ws.send(chat("t1", "Bye [[tool:final]]", tools=tools))
    frames = until_end(ws, "t1")
    call = next(f for f in frames if f["type"] == "tool_call")["tool_call"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "hang_up"
    assert json.loads(call["function"]["arguments"]) == {"reason": "example"}
    assert frames[-1]["finish_reason"] == "tool_calls"


def test_barge_in_cancels_the_older_turn_first(ws: ClientConnection, fake: FakeOllama) -> None:
    ws.send(chat("old", "barge-old [[tokens:500]] [[itl:20]]"))
    assert recv(ws)["type"] == "delta"
    ws.send(chat("new", "barge-new [[tokens:3]]"))
    sent_at = time.time()
    frames = until_end(ws, "new")
    old_end = next(i for i, f in enumerate(frames) if f["id"] == "old" and f["type"] == "done")
    assert frames[old_end]["finish_reason"] == "cancelled"
    assert all(f["id"] == "old" for f in frames[:old_end])
    assert [f["type"] for f in frames[old_end + 1 :]] == ["delta"] * 3 + ["done"]
    record = wait_closed(fake, "barge-old")
    assert record["outcome"] == "client_closed"
    assert record["client_closed_at"] - sent_at < 0.1


def test_cancel_ends_the_turn_and_closes_ollama(ws: ClientConnection, fake: FakeOllama) -> None:
    ws.send(chat("t1", "cancel-me [[tokens:500]] [[itl:20]]"))
    assert recv(ws)["type"] == "delta"
    ws.send(json.dumps({"type": "cancel", "id": "t1"}))
    sent_at = time.time()
    frames = until_end(ws, "t1")
    assert frames[-1]["type"] == "done"
    assert frames[-1]["finish_reason"] == "cancelled"
    record = wait_closed(fake, "cancel-me")
    assert record["client_closed_at"] - sent_at < 0.1
    ws.send(json.dumps({"type": "cancel", "id": "t1"}))  # already ended: ignored
    ws.send(chat("t2", "Hi [[tokens:1]]"))
    assert [f["type"] for f in until_end(ws, "t2")] == ["delta", "done"]


@pytest.mark.parametrize(
    ("frame", "code", "turn_id"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_frame", None),
        ('{"type": "chat"}', "invalid_id", None),
        ('{"type": "chat", "id": 7, "messages": []}', "invalid_id", None),
        ('{"type": "dance", "id": "t1"}', "unknown_type", "t1"),
        ('{"type": "chat", "id": "t1"}', "invalid_value", "t1"),
        ('{"type": "chat", "id": "t1", "messages": {}}', "invalid_value", "t1"),
        ('{"type": "chat", "id": "t1", "messages": [{"role": "x"}]}', "invalid_value", "t1"),
        (
            '{"type": "chat", "id": "t1", "stream": 1,'
            ' "messages": [{"role": "user", "content": "hi"}]}',
            "invalid_value",
            "t1",
        ),
    ],
)
def test_bad_frames_get_an_error_and_the_socket_stays(
    ws: ClientConnection, frame: str, code: str, turn_id: str | None
) -> None:
    ws.send(frame)
    error = recv(ws)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["id"] == turn_id
    assert error["message"]
    ws.send(chat("ok", "Hi [[tokens:1]]"))
    assert until_end(ws, "ok")[-1]["type"] == "done"


def test_binary_frame_gets_an_error(ws: ClientConnection) -> None:
    ws.send(b"\x00\x01")
    assert recv(ws)["code"] == "binary_frame"
    ws.send(chat("ok", "Hi [[tokens:1]]"))
    assert until_end(ws, "ok")[-1]["type"] == "done"


def test_frame_over_the_limit_closes_with_1009(fake: FakeOllama) -> None:
    process = start_server(fake.url, "--max-body-bytes", "2048")
    try:
        with connect(ws_url(process), open_timeout=5) as ws:
            ws.send(chat("t1", "Hi [[tokens:1]]"))
            assert until_end(ws, "t1")[-1]["type"] == "done"
            ws.send(chat("t2", "x" * 3000))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
    finally:
        process.stop()


def test_mid_stream_failure_is_an_error_frame(ws: ClientConnection) -> None:
    ws.send(chat("t1", "Hi [[error-after:2]]"))
    frames = until_end(ws, "t1")
    assert [f["type"] for f in frames] == ["delta", "delta", "error"]
    assert frames[-1]["code"] == "upstream_error"


def test_failure_before_streaming_is_an_error_frame(ws: ClientConnection) -> None:
    ws.send(chat("t1", "Hi [[status:503]]"))
    frames = until_end(ws, "t1")
    assert len(frames) == 1
    assert (frames[0]["type"], frames[0]["code"]) == ("error", "ollama_busy")
    assert "busy" in frames[0]["message"]


def test_ollama_down_is_an_error_frame_and_the_socket_stays(fake: FakeOllama) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    process = start_server(dead, wait_warm=False)
    try:
        with connect(ws_url(process), open_timeout=5) as ws:
            for turn_id in ("t1", "t2"):
                ws.send(chat(turn_id, "Hi"))
                error = recv(ws)
                assert (error["type"], error["id"], error["code"]) == (
                    "error",
                    turn_id,
                    "ollama_unreachable",
                )
    finally:
        process.stop()


def test_client_leaving_mid_turn_closes_ollama(server: Process, fake: FakeOllama) -> None:
    with connect(ws_url(server), open_timeout=5) as ws:
        ws.send(chat("t1", "leave-me [[tokens:500]] [[itl:20]]"))
        assert recv(ws)["type"] == "delta"
    left_at = time.time()
    record = wait_closed(fake, "leave-me")
    assert record["outcome"] == "client_closed"
    assert record["client_closed_at"] - left_at < 0.1


def test_auth_in_the_handshake(keyed_server: Process) -> None:
    for query, headers in (("", {}), ("?api_key=wrong", {}), ("", {"Authorization": "Bearer no"})):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(keyed_server, query), additional_headers=headers, open_timeout=5)
        assert refused.value.response.status_code == 401
    for query, headers in (
        ("", {"Authorization": f"Bearer {API_KEY}"}),
        ("", {"Authorization": API_KEY}),
        (f"?api_key={API_KEY}", {}),
    ):
        with connect(ws_url(keyed_server, query), additional_headers=headers, open_timeout=5) as ws:
            ws.send(chat("t1", "Hi [[tokens:1]]"))
            assert until_end(ws, "t1")[-1]["type"] == "done"
