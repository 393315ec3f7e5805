"""Tests of the Ollama simulator: its wire format, its endpoints, its queue and its control API.

The prompt cache, loads, tool calls and thinking, and failures have test files
of their own (``test_fake_ollama_*.py``).
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import itertools
import signal
import socket
import time
from collections.abc import Iterator
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

from .fake_ollama_support import (
    MODEL,
    QWEN,
    WEATHER_ARGUMENTS,
    WEATHER_TOOL,
    call,
    chat_body,
    configure,
    get_json,
    launch,
    load,
    ndjson,
    parse_chunked,
    raw_exchange,
    raw_request,
    records,
    reset,
    simulator,
    stats,
    stop,
    stream_chat,
    wait_until,
)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """One simulator process for the module."""
    yield from simulator()


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest) -> None:
    """Baseline knobs, no model loaded and an empty request log before each test."""
    if "port" in request.fixturenames:
        reset(request.getfixturevalue("port"))


def test_command_line_announces_its_port_and_exits_cleanly() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        process, number = launch("--preloaded")
        status, headers, body = call(number, "GET", "/")
        assert (status, body) == (200, b"Ollama is running")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert stop(process, signum) == 0


def test_defaults_are_ollama_0_32s() -> None:
    process, number = launch("--profile", "x:1=native", "--no-crash-on-error")
    try:
        config = get_json(number, "/_sim/config")
        assert get_json(number, "/api/version") == {"version": "0.32.15"}
        assert (config["parallel"], config["keep_alive"]) == (1, "5m")
        assert (config["profiles"], config["crash_on_error"]) == ({"x:1": "native"}, False)
    finally:
        assert stop(process) == 0
    assert SimConfig().parallel == 1
    with pytest.raises(ValueError, match="'profiles'"):
        SimConfig(profiles={"x": "mystery"})


def test_general_endpoints_and_routing(port: int) -> None:
    status, headers, body = call(port, "HEAD", "/")
    assert (status, body, headers["content-length"]) == (200, b"", "17")
    status, headers, body = call(port, "GET", "/api/version")
    assert (status, orjson.loads(body)) == (200, {"version": "0.32.15"})
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert call(port, "GET", "/api/nothing")[::2] == (404, b"404 page not found")
    assert call(port, "GET", "/api/chat")[::2] == (405, b"405 method not allowed")


def test_tags_list_each_models_capabilities(port: int) -> None:
    tags = {model["name"]: model for model in get_json(port, "/api/tags")["models"]}
    assert tags[MODEL]["capabilities"] == ["completion", "tools"]
    assert tags[QWEN]["capabilities"] == ["completion", "tools", "thinking"]
    assert set(tags[MODEL]) == {
        "name",
        "model",
        "modified_at",
        "size",
        "digest",
        "details",
        "capabilities",
    }
    assert tags[MODEL]["details"]["context_length"] == 131_072
    assert tags[QWEN]["details"]["family"] == "qwen3"


def test_show_resolves_the_canonical_name(port: int) -> None:
    configure(port, models=["llama3.1"])
    status, _, body = call(port, "POST", "/api/show", {"model": "LLAMA3.1"})
    shown = orjson.loads(body)
    assert status == 200
    assert "# FROM llama3.1:latest\n" in shown["modelfile"]
    status, _, body = call(port, "POST", "/api/show", {"model": "Missing"})
    assert (status, orjson.loads(body)) == (404, {"error": "model 'Missing:latest' not found"})
    status, _, body = call(port, "POST", "/api/show", {})
    assert (status, orjson.loads(body)) == (400, {"error": "model is required"})


def test_long_json_bodies_are_chunked_and_short_ones_are_not(port: int) -> None:
    # Go's net/http sends a handler's body of over 2048 bytes chunked, in one chunk.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request("/api/show", {"model": MODEL}))
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, chunks, complete = parse_chunked(raw)
    assert complete
    assert len(chunks) == 1
    assert len(chunks[0]) > 2048
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Length" not in head
    assert orjson.loads(chunks[0])["capabilities"] == ["completion", "tools"]
    status, headers, _ = call(port, "GET", "/api/version")
    assert (status, "transfer-encoding" in headers) == (200, False)
    long_reply = chat_body("hi [[tokens:600]]", stream=False)
    status, headers, body = call(port, "POST", "/api/chat", long_reply)
    assert headers["transfer-encoding"] == "chunked"
    assert orjson.loads(body)["message"]["content"] == reply_text(600)


def test_json_escapes_html_characters_as_go_does(port: int) -> None:
    # encoding/json writes <, > and & as \u003c, \u003e, \u0026.
    status, _, body = call(port, "POST", "/api/chat", chat_body("hi", model="a<b>&c"))
    assert status == 404
    assert body == b'{"error":"model \'a\\u003cb\\u003e\\u0026c\' not found"}'
    configure(port, models=["a<b>&c"])
    body = raw_exchange(port, chat_body("hi [[tokens:1]]", model="a<b>&c"))
    assert b'"model":"a\\u003cb\\u003e\\u0026c"' in body
    assert b"<" not in body.partition(b"\r\n\r\n")[2]


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
        assert list(line) == ["model", "created_at", "message", "done"]
        assert line["done"] is False
        assert line["message"]["role"] == "assistant"
        datetime.datetime.fromisoformat(line["created_at"])
    assert "".join(line["message"]["content"] for line in tokens) == reply_text(8)
    assert list(final)[:5] == ["model", "created_at", "message", "done", "done_reason"]
    assert (final["done"], final["done_reason"]) == (True, "stop")
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == 8
    [record] = records(port)
    assert final["prompt_eval_count"] == record["prompt_tokens"] > len("Hello there") // 4
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)
        assert final[key] > 0
    assert final["load_duration"] >= 30_000_000  # the model was cold
    assert record["outcome"] == "done"
    assert record["tokens_sent"] == 8
    assert record["body"]["messages"][0]["content"] == "Hello there"
    assert record["received_at"] < record["first_byte_at"] < record["finished_at"]
    assert record["client_closed_at"] is None
    assert (record["profile"], record["slot"], record["slot_selection"]) == ("llama3.1", 3, "lru")


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
        assert MODEL in [model.model for model in client.list().models]
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
            assert dict(tool_call.function.arguments) == WEATHER_ARGUMENTS
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
    assert list(reply) == ["model", "created_at", "message", "done", "done_reason"]
    assert (reply["done"], reply["done_reason"]) == (True, "load")
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
    load(port, keep_alive=-1)
    [forever] = get_json(port, "/api/ps")["models"]
    assert datetime.datetime.fromisoformat(forever["expires_at"]).year > 2300
    call(port, "POST", "/api/chat", chat_body("hi", keep_alive="300ms", stream=False))
    [running] = get_json(port, "/api/ps")["models"]
    expires_at = datetime.datetime.fromisoformat(running["expires_at"]).timestamp()
    assert 0 < expires_at - time.time() <= 0.3
    wait_until(lambda: not get_json(port, "/api/ps")["models"], timeout=2)
    status, _, body = call(port, "POST", "/api/chat", chat_body("hi", keep_alive="-1"))
    assert (status, orjson.loads(body)) == (400, {"error": 'time: missing unit in duration "-1"'})


def test_a_request_without_keep_alive_keeps_the_runners_duration(port: int) -> None:
    # useLoadedRunner (server/sched.go) sets the duration only from a request that gives one.
    load(port, keep_alive=-1)
    call(port, "POST", "/api/chat", chat_body("hi [[tokens:1]]", stream=False))
    [running] = get_json(port, "/api/ps")["models"]
    assert datetime.datetime.fromisoformat(running["expires_at"]).year > 2300


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
    choices = '"high", "medium", "low", "max", true, or false'
    cases: list[tuple[object, int, str]] = [
        (chat_body("hi") | {"model": "nope"}, 404, "model 'nope' not found"),
        ({"messages": []}, 400, "model is required"),
        (chat_body("hi", think=True), 400, '"llama3.1:8b" does not support thinking'),
        (chat_body("hi", think="high"), 400, '"llama3.1:8b" does not support thinking'),
        (chat_body("hi", think="x"), 400, f'invalid think value: "x" (must be {choices})'),
        (chat_body("hi", think=1), 400, f"think must be a boolean or string ({choices})"),
        (chat_body("hi", top_logprobs=21), 400, "top_logprobs must be between 0 and 20"),
        (
            chat_body("hi", model="no", top_logprobs=-1),
            400,
            "top_logprobs must be between 0 and 20",
        ),
        (chat_body("hi [[status:500]]"), 500, "llama-server process has terminated: exit status 2"),
        ([], 400, "json: cannot unmarshal array into Go value of type api.ChatRequest"),
    ]
    for body, status, message in cases:
        answer = call(port, "POST", "/api/chat", body)
        assert (answer[0], orjson.loads(answer[2])) == (status, {"error": message})
    assert call(port, "POST", "/api/chat", chat_body("hi", think=False, stream=False))[0] == 200
    answer = call(port, "POST", "/api/chat", chat_body("hi", top_logprobs=20, stream=False))
    assert answer[0] == 200
    answer = call(port, "POST", "/api/chat", None, {"Content-Type": "application/json"})
    assert orjson.loads(answer[2]) == {"error": "missing request body"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/chat", body=b'{"model": x}')
    response = conn.getresponse()
    assert response.status == 400
    assert orjson.loads(response.read())["error"].startswith("invalid character 'x'")
    conn.close()
    assert {record["outcome"] for record in records(port)} == {"rejected", "done"}


def test_mid_stream_error_is_an_error_line_and_no_done_line(port: int) -> None:
    configure(port, crash_on_error=False)
    _, chunks, complete = parse_chunked(raw_exchange(port, chat_body("hi [[error-after:3]]")))
    lines = ndjson(chunks)
    assert complete
    assert [line.get("done") for line in lines] == [False, False, False, None]
    assert lines[-1] == {"error": MIDSTREAM_ERROR}
    status, _, body = call(port, "POST", "/api/chat", chat_body("[[error-after:0]]", stream=False))
    assert (status, orjson.loads(body)) == (500, {"error": MIDSTREAM_ERROR})
    # Before any line, a stream's error is a status with a chunked application/json body.
    head, chunks, complete = parse_chunked(raw_exchange(port, chat_body("[[error-after:0]]")))
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Content-Type: application/json\r\n" in head + b"\r\n"
    assert complete
    assert [orjson.loads(chunk) for chunk in chunks] == [{"error": MIDSTREAM_ERROR}]
    assert [record["outcome"] for record in records(port)] == ["error", "error", "error"]


def test_drop_closes_mid_stream_and_random_failures_follow_the_knobs(port: int) -> None:
    configure(port, crash_on_error=False)
    _, chunks, complete = parse_chunked(raw_exchange(port, chat_body("hi [[drop-after:2]]")))
    assert not complete
    assert len(ndjson(chunks)) == 2
    configure(port, fail_rate=1.0, fail_mode="error")
    _, chunks, complete = parse_chunked(raw_exchange(port, chat_body("hi [[tokens:20]]")))
    assert complete
    assert orjson.loads(chunks[-1]) == {"error": MIDSTREAM_ERROR}
    assert [record["outcome"] for record in records(port)] == ["dropped", "error"]
    assert call(port, "POST", "/_sim/config", {"fail_mode": "later"})[0] == 400
    assert call(port, "POST", "/_sim/config", {"no_such_knob": 1})[0] == 400


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


def test_timing_follows_directives(port: int) -> None:
    load(port)
    call(port, "POST", "/api/chat", chat_body("[[ttft:150]] [[itl:20]] [[tokens:5]]"))
    _, directed = records(port)
    assert 0.15 <= directed["first_byte_at"] - directed["received_at"] < 0.4
    assert 0.1 <= directed["finished_at"] - directed["first_byte_at"] < 0.4


def test_requests_beyond_the_slots_wait_in_arrival_order(port: int) -> None:
    configure(port, parallel=1, itl=5)
    load(port)

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
    configure(port, parallel=1)
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
    assert stats(port)["leaked_slots"] == 0
    assert call(port, "POST", "/api/chat", chat_body("after", stream=False))[0] == 200


def test_a_full_load_queue_answers_busy(port: int) -> None:
    configure(port, max_queue=0)
    status, _, body = call(port, "POST", "/api/chat", chat_body("hi"))
    assert (status, orjson.loads(body)) == (503, {"error": BUSY_MESSAGE})
    configure(port, max_queue=1)
    assert call(port, "POST", "/api/chat", chat_body("hi", stream=False))[0] == 200
    configure(port, max_queue=0)
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
