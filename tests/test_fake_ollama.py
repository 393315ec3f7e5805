"""Tests of the Ollama simulator: its wire format, its timing model and its control API.

Most tests share one simulator process, started as the command line starts it
(``--port 0``, the port read from the first stdout line); each test starts from
the same knobs, with the model evicted and the request log cleared.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import itertools
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ollama
import orjson
import pytest

from loadtest.fake_ollama import (
    BUSY_MESSAGE,
    MIDSTREAM_ERROR,
    SimConfig,
    parse_go_duration,
    parse_keep_alive,
    reply_text,
    start,
)

REPO = Path(__file__).resolve().parent.parent
MODEL = "llama3.1:8b"
BASELINE: dict[str, Any] = {
    "models": [MODEL],
    "ttft": 5,
    "ttft_per_prompt_token": 0,
    "itl": 2,
    "jitter": 0,
    "tokens": 8,
    "parallel": 4,
    "max_queue": 512,
    "slowdown": 0,
    "load_ms": 30,
    "keep_alive": "5m",
    "fail_rate": 0,
    "fail_mode": "error",
    "tool_mode": "chunk",
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "hours": {"type": "array", "items": {"type": "number"}},
            },
            "required": ["city"],
        },
    },
}


def launch(*flags: str) -> tuple[subprocess.Popen[str], int]:
    """Start the simulator from the command line; returns the process and its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest.fake_ollama", "--port", "0", *flags],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    prefix = "fake-ollama listening on http://127.0.0.1:"
    assert line.startswith(prefix), line
    return process, int(line.removeprefix(prefix))


def stop(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    """Signal the simulator and return its exit code."""
    process.send_signal(signum)
    code = process.wait(timeout=10)
    assert process.stdout is not None
    process.stdout.close()
    return code


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """One simulator process for the module."""
    process, number = launch("--ttft", "5", "--itl", "2", "--tokens", "8", "--load-ms", "30")
    yield number
    assert stop(process) == 0


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest) -> None:
    """Baseline knobs, no model loaded and an empty request log before each test."""
    if "port" not in request.fixturenames:
        return
    number = request.getfixturevalue("port")
    assert call(number, "POST", "/_sim/config", BASELINE)[0] == 200
    call(number, "POST", "/_sim/evict", {})
    call(number, "POST", "/_sim/reset", {})


def call(
    port: int,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns status, lowercased headers and the whole body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else orjson.dumps(body)
        conn.request(method, path, body=payload, headers=headers or {})
        response = conn.getresponse()
        return (
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def get_json(port: int, path: str) -> Any:
    """GET a JSON document."""
    status, _, body = call(port, "GET", path)
    assert status == 200
    return orjson.loads(body)


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    """A chat request with one user message."""
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def raw_request(path: str, body: object) -> bytes:
    """The bytes of a POST asking the server to close the connection after its answer."""
    payload = orjson.dumps(body)
    return (
        b"POST %b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%b"
        % (path.encode(), len(payload), payload)
    )


def raw_exchange(port: int, body: object, path: str = "/api/chat") -> bytes:
    """Everything the server sends for one request, read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request(path, body))
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def parse_chunked(raw: bytes) -> tuple[bytes, list[bytes], bool]:
    """Split a chunked response into its head, its chunks, and whether the last chunk came."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    chunks: list[bytes] = []
    while rest:
        size_line, found, rest = rest.partition(b"\r\n")
        if not found:
            break
        size = int(size_line, 16)
        if size == 0:
            return head, chunks, True
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    return head, chunks, False


def ndjson(chunks: list[bytes]) -> list[dict[str, Any]]:
    """The objects of an NDJSON stream whose chunks each hold exactly one line."""
    for chunk in chunks:
        assert chunk.endswith(b"\n")
        assert chunk.count(b"\n") == 1
    return [orjson.loads(chunk) for chunk in chunks]


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll ``predicate`` until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def records(port: int) -> list[dict[str, Any]]:
    """The simulator's request log."""
    log: list[dict[str, Any]] = get_json(port, "/_sim/requests")
    return log


def stats(port: int) -> dict[str, Any]:
    """The simulator's counters."""
    counters: dict[str, Any] = get_json(port, "/_sim/stats")
    return counters


async def stream_chat(port: int, body: object) -> list[dict[str, Any]]:
    """A streaming chat over a raw asyncio connection; returns the NDJSON objects."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw_request("/api/chat", body))
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    _, chunks, complete = parse_chunked(raw)
    assert complete
    return ndjson(chunks)


def test_command_line_announces_its_port_and_exits_cleanly() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        process, number = launch("--preloaded")
        status, headers, body = call(number, "GET", "/")
        assert (status, body) == (200, b"Ollama is running")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert stop(process, signum) == 0


def test_general_endpoints_and_routing(port: int) -> None:
    status, headers, body = call(port, "HEAD", "/")
    assert (status, body, headers["content-length"]) == (200, b"", "17")
    status, headers, body = call(port, "GET", "/api/version")
    assert (status, orjson.loads(body)) == (200, {"version": "0.12.6"})
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert call(port, "GET", "/api/nothing")[::2] == (404, b"404 page not found")
    assert call(port, "GET", "/api/chat")[::2] == (405, b"405 method not allowed")
    tags = get_json(port, "/api/tags")["models"]
    assert [model["name"] for model in tags] == [MODEL]
    assert set(tags[0]) == {"name", "model", "modified_at", "size", "digest", "details"}


def test_streaming_chat_is_one_chunk_per_line_then_the_counts(port: int) -> None:
    head, chunks, complete = parse_chunked(raw_exchange(port, chat_body("Hello there")))
    assert complete
    status_line, *header_lines = head.split(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert b"Content-Type: application/x-ndjson" in header_lines
    assert b"Transfer-Encoding: chunked" in header_lines
    lines = ndjson(chunks)
    *tokens, final = lines
    assert len(tokens) == 8
    for line in tokens:
        assert set(line) == {"model", "created_at", "message", "done"}
        assert line["done"] is False
        assert line["message"]["role"] == "assistant"
        datetime.datetime.fromisoformat(line["created_at"])
    assert "".join(line["message"]["content"] for line in tokens) == reply_text(8)
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == 8
    assert final["prompt_eval_count"] == len("Hello there") // 4
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)
        assert final[key] > 0
    assert final["load_duration"] >= 30_000_000  # the model was cold
    [record] = records(port)
    assert record["outcome"] == "done"
    assert record["tokens_sent"] == 8
    assert record["body"]["messages"][0]["content"] == "Hello there"
    assert record["received_at"] < record["first_byte_at"] < record["finished_at"]
    assert record["client_closed_at"] is None


def test_non_streaming_chat_is_one_json_object(port: int) -> None:
    status, headers, body = call(port, "POST", "/api/chat", chat_body("hi", stream=False))
    assert status == 200
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    reply = orjson.loads(body)
    assert reply["message"] == {"role": "assistant", "content": reply_text(8)}
    assert (reply["done"], reply["done_reason"], reply["eval_count"]) == (True, "stop", 8)


def test_generate_streams_response_fields(port: int) -> None:
    body = {"model": MODEL, "prompt": "Why is the sky blue? [[tokens:3]]"}
    _, chunks, complete = parse_chunked(raw_exchange(port, body, "/api/generate"))
    *tokens, final = ndjson(chunks)
    assert complete
    assert "".join(line["response"] for line in tokens) == reply_text(3)
    assert (final["done"], final["done_reason"], final["eval_count"]) == (True, "stop", 3)


def test_the_ollama_client_library_understands_it(port: int) -> None:
    with ollama.Client(host=f"http://127.0.0.1:{port}") as client:
        reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert reply.message.content == reply_text(8)
        assert reply.done_reason == "stop"
        pieces = list(
            client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
        )
        assert "".join(piece.message.content or "" for piece in pieces) == reply_text(8)
        assert pieces[-1].done
        assert pieces[-1].eval_count == 8
        assert [model.model for model in client.list().models] == [MODEL]
        [running] = client.ps().models
        assert running.model == MODEL
        assert running.context_length == 4096
        assert running.expires_at is not None
        shown = client.show(MODEL)
        assert shown.capabilities == ["completion", "tools"]
        assert shown.details is not None
        assert shown.details.family == "llama"
        assert shown.modelinfo is not None
        assert shown.modelinfo["general.architecture"] == "llama"
        with pytest.raises(ollama.ResponseError) as missing:
            client.chat(model="nope:1b", messages=[{"role": "user", "content": "hi"}])
        assert missing.value.status_code == 404


def test_the_async_ollama_client_streams_and_sees_tool_calls(port: int) -> None:
    async def scenario() -> None:
        async with ollama.AsyncClient(host=f"http://127.0.0.1:{port}") as client:
            stream = await client.chat(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([piece.message.content or "" async for piece in stream])
            assert text == reply_text(8)
            reply = await client.chat(
                model=MODEL,
                messages=[{"role": "user", "content": "weather?"}],
                tools=[WEATHER_TOOL],
            )
            [tool_call] = reply.message.tool_calls or []
            assert tool_call.function.name == "get_weather"
            assert tool_call.function.arguments["city"] == "example"
            with pytest.raises(ollama.ResponseError, match=MIDSTREAM_ERROR):
                async for _ in await client.chat(
                    model=MODEL,
                    messages=[{"role": "user", "content": "hi [[error-after:2]]"}],
                    stream=True,
                ):
                    pass

    asyncio.run(scenario())


def test_empty_messages_load_and_keep_alive_zero_unloads(port: int) -> None:
    assert stats(port)["loaded"] is False
    started = time.monotonic()
    status, _, body = call(port, "POST", "/api/chat", {"model": MODEL, "messages": []})
    assert time.monotonic() - started >= 0.03
    reply = orjson.loads(body)
    assert status == 200
    assert reply["done_reason"] == "load"
    assert reply["done"] is True
    assert reply["message"] == {"role": "assistant", "content": ""}
    assert stats(port)["loaded"] is True
    assert stats(port)["loads"] == 1
    assert [model["name"] for model in get_json(port, "/api/ps")["models"]] == [MODEL]
    unload = {"model": MODEL, "messages": [], "keep_alive": 0}
    assert orjson.loads(call(port, "POST", "/api/chat", unload)[2])["done_reason"] == "unload"
    assert get_json(port, "/api/ps") == {"models": []}
    status, _, body = call(port, "POST", "/api/generate", {"model": MODEL, "keep_alive": "10m"})
    assert (status, orjson.loads(body)["done_reason"]) == (200, "load")
    assert stats(port)["loaded"] is True


def test_keep_alive_sets_expiry_and_the_model_unloads_when_it_passes(port: int) -> None:
    call(port, "POST", "/api/chat", {"model": MODEL, "messages": [], "keep_alive": -1})
    [forever] = get_json(port, "/api/ps")["models"]
    assert datetime.datetime.fromisoformat(forever["expires_at"]).year > 2300
    call(port, "POST", "/api/chat", chat_body("hi", keep_alive="300ms", stream=False))
    [running] = get_json(port, "/api/ps")["models"]
    expires_at = datetime.datetime.fromisoformat(running["expires_at"]).timestamp()
    assert 0 < expires_at - time.time() <= 0.3
    wait_until(lambda: not get_json(port, "/api/ps")["models"], timeout=2)
    status, _, body = call(port, "POST", "/api/chat", chat_body("hi", keep_alive="-1"))
    assert (status, orjson.loads(body)) == (400, {"error": 'time: missing unit in duration "-1"'})


def test_changed_load_time_options_reload_and_same_ones_do_not(port: int) -> None:
    def chat(options: dict[str, Any]) -> None:
        body = chat_body("hi [[tokens:1]]", stream=False, options=options)
        assert call(port, "POST", "/api/chat", body)[0] == 200

    chat({"num_ctx": 2048})
    chat({"num_ctx": 2048, "temperature": 0.2, "num_predict": 5, "num_gpu": -1})
    assert (stats(port)["loads"], stats(port)["reloads"]) == (1, 0)
    assert get_json(port, "/api/ps")["models"][0]["context_length"] == 2048
    chat({"num_ctx": 8192})
    assert (stats(port)["loads"], stats(port)["reloads"]) == (2, 1)
    chat({})
    assert (stats(port)["loads"], stats(port)["reloads"]) == (3, 2)
    assert get_json(port, "/api/ps")["models"][0]["context_length"] == 4096


def test_request_errors_answer_with_a_status_and_an_error_object(port: int) -> None:
    cases: list[tuple[object, int, str]] = [
        (chat_body("hi") | {"model": "nope"}, 404, "model 'nope' not found"),
        ({"messages": []}, 400, "model is required"),
        (chat_body("hi", think=True), 400, '"llama3.1:8b" does not support thinking'),
        (chat_body("hi [[status:500]]"), 500, "llama runner process has terminated: exit status 2"),
        ([], 400, "json: cannot unmarshal array into Go value of type api.ChatRequest"),
    ]
    for body, status, message in cases:
        answer = call(port, "POST", "/api/chat", body)
        assert (answer[0], orjson.loads(answer[2])) == (status, {"error": message})
    answer = call(port, "POST", "/api/chat", None, {"Content-Type": "application/json"})
    assert orjson.loads(answer[2]) == {"error": "missing request body"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/chat", body=b'{"model": x}')
    response = conn.getresponse()
    assert response.status == 400
    assert orjson.loads(response.read())["error"].startswith("invalid character 'x'")
    conn.close()
    status, _, body = call(port, "POST", "/api/show", {"model": "missing"})
    assert (status, orjson.loads(body)) == (404, {"error": "model 'missing' not found"})
    assert {record["outcome"] for record in records(port)} == {"rejected"}


def test_mid_stream_error_is_an_error_line_and_no_done_line(port: int) -> None:
    _, chunks, complete = parse_chunked(raw_exchange(port, chat_body("hi [[error-after:3]]")))
    lines = ndjson(chunks)
    assert complete
    assert [line.get("done") for line in lines] == [False, False, False, None]
    assert lines[-1] == {"error": MIDSTREAM_ERROR}
    status, _, body = call(port, "POST", "/api/chat", chat_body("[[error-after:0]]", stream=False))
    assert (status, orjson.loads(body)) == (500, {"error": MIDSTREAM_ERROR})
    assert [record["outcome"] for record in records(port)] == ["error", "error"]


def test_drop_closes_mid_stream_and_random_failures_follow_the_knobs(port: int) -> None:
    _, chunks, complete = parse_chunked(raw_exchange(port, chat_body("hi [[drop-after:2]]")))
    assert not complete
    assert len(ndjson(chunks)) == 2
    call(port, "POST", "/_sim/config", {"fail_rate": 1.0, "fail_mode": "error"})
    _, chunks, complete = parse_chunked(raw_exchange(port, chat_body("hi")))
    assert complete
    assert ndjson(chunks)[-1] == {"error": MIDSTREAM_ERROR}
    assert [record["outcome"] for record in records(port)] == ["dropped", "error"]
    assert call(port, "POST", "/_sim/config", {"fail_mode": "later"})[0] == 400
    assert call(port, "POST", "/_sim/config", {"no_such_knob": 1})[0] == 400


@pytest.mark.parametrize("mode", ["chunk", "final"])
def test_tool_calls_on_either_path(port: int, mode: str) -> None:
    body = chat_body(f"weather? [[tool:{mode}]]", tools=[WEATHER_TOOL])
    _, chunks, _ = parse_chunked(raw_exchange(port, body))
    lines = ndjson(chunks)
    expected = {
        "function": {
            "name": "get_weather",
            "arguments": {
                "city": "example",
                "days": 1,
                "metric": True,
                "unit": "celsius",
                "hours": [],
            },
        }
    }
    carrying = [line for line in lines if "tool_calls" in line["message"]]
    assert len(carrying) == 1
    assert carrying[0]["message"]["tool_calls"] == [expected]
    assert carrying[0]["message"]["content"] == ""
    assert carrying[0]["done"] is (mode == "final")
    assert len(lines) == (2 if mode == "chunk" else 1)
    assert lines[-1]["done_reason"] == "stop"
    assert lines[-1]["message"]["content"] == ""


def test_no_tool_call_when_told_or_when_the_last_message_is_a_tool_result(port: int) -> None:
    declined = chat_body("weather? [[no-tool]]", tools=[WEATHER_TOOL], stream=False)
    after_tool = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "x"}}]},
            {"role": "tool", "content": "sunny"},
        ],
        "tools": [WEATHER_TOOL],
        "stream": False,
    }
    for body in (declined, after_tool):
        reply = orjson.loads(call(port, "POST", "/api/chat", body)[2])
        assert reply["message"] == {"role": "assistant", "content": reply_text(8)}


def test_num_predict_cuts_the_reply_with_length_and_stop_strings_end_it(port: int) -> None:
    body = chat_body("hi", options={"num_predict": 3})
    _, chunks, _ = parse_chunked(raw_exchange(port, body))
    *tokens, final = ndjson(chunks)
    assert len(tokens) == 3
    assert (final["done_reason"], final["eval_count"]) == ("length", 3)
    body = chat_body("hi", stream=False, options={"stop": [" is"]})
    reply = orjson.loads(call(port, "POST", "/api/chat", body)[2])
    assert reply["message"]["content"] == "Sure, here"
    assert reply["done_reason"] == "stop"


def test_timing_follows_directives_and_prompt_length(port: int) -> None:
    call(port, "POST", "/api/chat", {"model": MODEL, "messages": []})
    call(port, "POST", "/api/chat", chat_body("[[ttft:150]] [[itl:20]] [[tokens:5]]"))
    call(port, "POST", "/_sim/config", {"ttft_per_prompt_token": 1})
    call(port, "POST", "/api/chat", chat_body("x" * 400 + " [[tokens:1]]"))
    _, directed, by_length = records(port)
    assert 0.15 <= directed["first_byte_at"] - directed["received_at"] < 0.4
    assert 0.1 <= directed["finished_at"] - directed["first_byte_at"] < 0.4
    assert 0.1 <= by_length["first_byte_at"] - by_length["received_at"] < 0.4


def test_requests_beyond_the_slots_wait_in_arrival_order(port: int) -> None:
    call(port, "POST", "/_sim/config", {"parallel": 1, "itl": 5})
    call(port, "POST", "/api/chat", {"model": MODEL, "messages": []})

    async def scenario() -> list[list[dict[str, Any]]]:
        tasks = []
        for name in ("first", "second", "third"):
            tasks.append(asyncio.create_task(stream_chat(port, chat_body(name))))
            await asyncio.sleep(0.01)
        return list(await asyncio.gather(*tasks))

    replies = asyncio.run(scenario())
    assert all(reply[-1]["done"] for reply in replies)
    log = [record for record in records(port) if record["body"]["messages"]]
    assert [record["body"]["messages"][0]["content"] for record in log] == [
        "first",
        "second",
        "third",
    ]
    for earlier, later in itertools.pairwise(log):
        assert later["received_at"] < earlier["finished_at"]
        assert later["first_byte_at"] >= earlier["finished_at"]


def test_client_disconnect_is_recorded_and_frees_the_slot(port: int) -> None:
    call(port, "POST", "/_sim/config", {"parallel": 1})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as streaming:
        streaming.sendall(raw_request("/api/chat", chat_body("long [[tokens:1000]]")))
        assert b'"done":false' in streaming.recv(65536)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as queued:
            queued.sendall(raw_request("/api/chat", chat_body("queued")))
            wait_until(lambda: stats(port)["queued"] == 1)
        wait_until(lambda: stats(port)["queued"] == 0)
        closed_at = time.time()
    wait_until(lambda: stats(port)["active"] == 0)
    long, waiting = records(port)
    assert long["outcome"] == "client_closed"
    assert closed_at - 0.05 <= long["client_closed_at"] <= closed_at + 0.5
    assert 0 < long["tokens_sent"] < 1000
    assert long["finished_at"] is None
    assert waiting["outcome"] == "client_closed"
    assert waiting["first_byte_at"] is None
    assert waiting["client_closed_at"] < long["client_closed_at"]


def test_a_load_goes_on_when_its_client_leaves(port: int) -> None:
    call(port, "POST", "/_sim/config", {"load_ms": 200})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request("/api/chat", chat_body("hi")))
        wait_until(lambda: stats(port)["queued"] == 1)
    wait_until(lambda: stats(port)["queued"] == 0)
    assert stats(port)["loaded"] is False
    wait_until(lambda: stats(port)["loaded"] is True)
    [record] = records(port)
    assert record["outcome"] == "client_closed"
    assert stats(port)["loads"] == 1


def test_a_full_load_queue_answers_busy(port: int) -> None:
    call(port, "POST", "/_sim/config", {"max_queue": 0})
    status, _, body = call(port, "POST", "/api/chat", chat_body("hi"))
    assert (status, orjson.loads(body)) == (503, {"error": BUSY_MESSAGE})
    call(port, "POST", "/_sim/config", {"max_queue": 1})
    assert call(port, "POST", "/api/chat", chat_body("hi", stream=False))[0] == 200
    call(port, "POST", "/_sim/config", {"max_queue": 0})
    assert call(port, "POST", "/api/chat", chat_body("hi", stream=False))[0] == 200


def test_in_process_api_and_host_check() -> None:
    async def scenario() -> None:
        config = SimConfig(ttft=5, itl=1, tokens=4, preloaded=True, check_host=True)
        sim = await start(config, "127.0.0.1", 0)
        try:
            async with ollama.AsyncClient(host=f"http://localhost:{sim.port}") as client:
                reply = await client.chat(model=MODEL, messages=[{"role": "user", "content": "x"}])
                assert reply.message.content == reply_text(4)
                assert sim.stats()["loads"] == 0
                sim.config.tokens = 2
                reply = await client.chat(model=MODEL, messages=[{"role": "user", "content": "x"}])
                assert reply.message.content == reply_text(2)
            assert [record.outcome for record in sim.requests()] == ["done", "done"]
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 403 Forbidden\r\n")
            writer.close()
            await writer.wait_closed()
            with pytest.raises(ValueError, match="out of range"):
                sim.update_config({"parallel": 0})
        finally:
            await sim.close()

    asyncio.run(scenario())


def test_go_durations_read_as_go_reads_them() -> None:
    assert parse_go_duration("1h30m") == 5400
    assert parse_go_duration("1.5s") == 1.5
    assert parse_go_duration("-1m") == -60
    assert parse_go_duration("0") == 0
    with pytest.raises(ValueError, match='missing unit in duration "-1"'):
        parse_go_duration("-1")
    with pytest.raises(ValueError, match='unknown unit "x"'):
        parse_go_duration("5x")
    assert parse_keep_alive(-1) is None
    assert parse_keep_alive("-1m") is None
    assert parse_keep_alive(30) == 30
    with pytest.raises(ValueError, match="Unsupported type: 'bool'"):
        parse_keep_alive(True)
