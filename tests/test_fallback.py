"""A turn that cannot start: the fallback sentence instead of an error, and the hold sentence.

With ``--fallback-message`` every failure before the first token is answered 200 with
that sentence; with ``--hold-message`` a slow first token is preceded by it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from websockets.sync.client import connect

from server.config import Config
from server.doors import serverless

from .conftest import MODEL, FakeOllama, Process, free_port, start_fake, start_server
from .test_handler import openai_job, run_job
from .test_operations import metrics, turn_records, wait_for

SORRY = "Sorry, I am having trouble right now. Please call back in a minute."
HOLD = "One moment, please."


@pytest.fixture(scope="module")
def sorry_server(fake: FakeOllama) -> Iterator[Process]:
    """The server with a fallback message, a short first-token deadline and one slot."""
    server = start_server(
        fake.url,
        "--fallback-message",
        SORRY,
        "--first-token-timeout",
        "0.5",
        "--max-concurrency",
        "1",
        "--queue-timeout",
        "0.2",
    )
    yield server
    server.stop()


def sdk_stream(server: Process, content: str) -> tuple[str, list[str | None]]:
    """The spoken text and the finish reasons of a stream read by the openai SDK."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    text, reasons = [], []
    with client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], stream=True
    ) as stream:
        for chunk in stream:
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                reasons.append(choice.finish_reason)
    return "".join(text), [r for r in reasons if r is not None]


def raw_stream(server: Process, content: str) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "stream": True}
    with httpx.Client(timeout=20) as http:
        return http.post(f"{server.url}/v1/chat/completions", json=body)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("Hi [[status:500]]", "upstream_error"),
        ("Hi [[ttft:3000]]", "upstream_timeout"),
    ],
)
def test_ollama_failing_before_the_first_token_speaks_the_fallback(
    sorry_server: Process, content: str, reason: str
) -> None:
    response = raw_stream(sorry_server, content)
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert sdk_stream(sorry_server, content) == (SORRY, ["stop"])
    *_, record = [r for r in turn_records(sorry_server.output()) if r["outcome"] == "fallback"]
    assert record["error"].startswith(reason)


def test_overloaded_speaks_the_fallback(sorry_server: Process) -> None:
    busy = threading.Thread(target=raw_stream, args=(sorry_server, "Hi [[tokens:60]] [[itl:20]]"))
    busy.start()
    try:
        wait_for(lambda: metrics(sorry_server)["voice_llm_streams_in_flight"] == 1)
        assert sdk_stream(sorry_server, "Hi") == (SORRY, ["stop"])
    finally:
        busy.join()
    records = [r for r in turn_records(sorry_server.output()) if r["outcome"] == "fallback"]
    assert any(r["error"].startswith("overloaded") for r in records)


def test_a_non_streamed_turn_gets_the_fallback_completion(sorry_server: Process) -> None:
    body = {"messages": [{"role": "user", "content": "Hi [[status:500]]"}]}
    with httpx.Client(timeout=10) as http:
        response = http.post(f"{sorry_server.url}/v1/chat/completions", json=body)
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == SORRY
    assert choice["finish_reason"] == "stop"


def test_the_websocket_marks_the_fallback(sorry_server: Process) -> None:
    with connect(sorry_server.url.replace("http", "ws", 1) + "/ws") as ws:
        frame = {
            "type": "chat",
            "id": "t1",
            "messages": [{"role": "user", "content": "Hi [[status:503]]"}],
        }
        ws.send(json.dumps(frame))
        delta, done = json.loads(ws.recv(timeout=10)), json.loads(ws.recv(timeout=10))
    assert delta == {"type": "delta", "id": "t1", "content": SORRY}
    assert done["type"] == "done"
    assert done["finish_reason"] == "stop"
    assert done["fallback"] is True


def test_a_fallback_is_counted_as_its_own_outcome(sorry_server: Process) -> None:
    before = metrics(sorry_server)["voice_llm_turns_total[outcome=fallback]"]
    raw_stream(sorry_server, "Hi [[status:500]]")
    assert metrics(sorry_server)["voice_llm_turns_total[outcome=fallback]"] == before + 1


def test_ollama_down_or_the_model_not_warm_speaks_the_fallback() -> None:
    down = start_server(
        f"http://127.0.0.1:{free_port()}", "--fallback-message", SORRY, wait_warm=False
    )
    loading = start_fake("--model", MODEL, "--load-ms", "60000")
    cold = start_server(loading.url, "--fallback-message", SORRY, wait_warm=False)
    try:
        for server, reason in ((down, "ollama_unreachable"), (cold, "model_not_warm")):
            assert sdk_stream(server, "Hi") == (SORRY, ["stop"])
            wait_for(lambda s=server: turn_records(s.output()))  # logged after the stream
            (record,) = turn_records(server.output())
            assert record["outcome"] == "fallback"
            assert record["error"].startswith(reason)
    finally:
        down.stop()
        cold.stop()
        loading.stop()


def test_the_runpod_openai_route_speaks_the_fallback(fake: FakeOllama) -> None:
    worker = serverless.Worker(Config(ollama_url=fake.url, model=MODEL, fallback_message=SORRY))
    items = run_job(worker, openai_job("Hi [[status:500]]"))
    text = "".join(items)
    assert f'"content":{json.dumps(SORRY)}' in text
    assert text.endswith("data: [DONE]\n\n")


def test_without_a_fallback_the_error_is_real(server: Process) -> None:
    response = raw_stream(server, "Hi [[status:500]]")
    assert response.status_code == 502


def test_a_slow_first_token_is_preceded_by_the_hold_message(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--hold-message", HOLD, "--hold-after", "0.2")
    try:
        text, reasons = sdk_stream(server, "Hi [[ttft:800]] [[tokens:3]]")
        assert text == f"{HOLD} Sure, here"
        assert reasons == ["stop"]
        assert sdk_stream(server, "Hi [[tokens:3]]") == ("Sure, here", ["stop"])  # fast: no hold
        assert metrics(server)["voice_llm_holds_total"] == 1
        wait_for(lambda: len(turn_records(server.output())) == 2)
        records = turn_records(server.output())
        assert [r.get("held") for r in records] == [True, None]
        assert records[0]["ttft_ms"] >= 800  # the model's first token, not the hold message
    finally:
        server.stop()


def test_a_whole_completion_never_carries_the_hold_message(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--hold-message", HOLD, "--hold-after", "0.1")
    try:
        body = {"messages": [{"role": "user", "content": "Hi [[ttft:500]] [[tokens:3]]"}]}
        with httpx.Client(timeout=10) as http:
            response = http.post(f"{server.url}/v1/chat/completions", json=body)
        assert response.json()["choices"][0]["message"]["content"] == "Sure, here"
        assert metrics(server)["voice_llm_holds_total"] == 0
    finally:
        server.stop()


def test_a_hold_then_a_failure_ends_the_stream_cleanly(fake: FakeOllama) -> None:
    server = start_server(
        fake.url, "--hold-message", HOLD, "--hold-after", "0.1", "--first-token-timeout", "0.5"
    )
    marker = uuid.uuid4().hex[:8]
    try:
        response = raw_stream(server, f"{marker} [[ttft:3000]]")
        assert response.status_code == 200
        assert HOLD in response.text
        assert response.text.endswith('"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
        wait_for(lambda: turn_records(server.output()))
        (record,) = turn_records(server.output())
        assert record["outcome"] == "timeout"
    finally:
        server.stop()
