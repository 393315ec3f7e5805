"""The server against what Ollama 0.32 really does, as the simulator models it.

Tool calls written as content, thinking that arrives anyway, a response with no
``done`` line, a slot leaked by a lost request (ollama/ollama#17131), loads aborted
by a client that leaves, a backend that refuses every turn.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from .conftest import MODEL, Process, start_fake, start_server
from .test_fleet import fleet_server, served_by, spoken
from .test_operations import metrics, ping, turn_records, wait_for

QUICK = ("--ttft", "5", "--itl", "2", "--load-ms", "20", "--no-crash-on-error")
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "book",
            "description": "Book an appointment.",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
        },
    }
]


def stream(server: Process, content: str, **fields: Any) -> tuple[str, list[Any], list[str]]:
    """Spoken text, tool calls and finish reasons of a stream read by the openai SDK."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    text: list[str] = []
    calls: list[Any] = []
    reasons: list[str] = []
    with client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], stream=True, **fields
    ) as chunks:
        for chunk in chunks:
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                calls.extend(choice.delta.tool_calls or [])
                if choice.finish_reason:
                    reasons.append(choice.finish_reason)
    return "".join(text), calls, reasons


@pytest.fixture(scope="module")
def models() -> Any:
    """One simulator serving a llama3.1, a qwen3 and a gpt-oss model, and a server for each."""
    names = ("llama3.1:8b", "qwen3:8b", "gpt-oss:20b")
    fake = start_fake(*(a for name in names for a in ("--model", name)), *QUICK, "--tokens", "4")
    servers = {name: start_server(fake.url, "--model", name) for name in names}
    yield fake, servers
    for server in servers.values():
        server.stop()
    fake.stop()


# No JSON is ever spoken


def test_a_call_written_as_content_after_text_is_a_tool_call(models: Any) -> None:
    _, servers = models
    text, calls, reasons = stream(servers["llama3.1:8b"], "Book it [[say-first:3]]", tools=TOOLS)
    assert text == "Sure, here"  # what came before the call, and nothing of its JSON
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("book", {"day": "example"})
    ]
    assert reasons == ["tool_calls"]


def test_several_calls_written_as_content_are_all_tool_calls(models: Any) -> None:
    _, servers = models
    text, calls, _ = stream(
        servers["llama3.1:8b"], "Book both [[say-first:2]] [[calls:2]]", tools=TOOLS
    )
    assert "{" not in text
    assert [c.index for c in calls] == [0, 1]


def test_a_plain_answer_with_tools_offered_streams_as_text(models: Any) -> None:
    _, servers = models
    assert stream(servers["llama3.1:8b"], "Hi [[no-tool]]", tools=TOOLS)[0] == "Sure, here is"


@pytest.mark.parametrize("model", ["llama3.1:8b", "qwen3:8b"])
def test_calls_parsed_by_ollama_pass_through(models: Any, model: str) -> None:
    _, servers = models
    text, calls, reasons = stream(servers[model], "Book it", tools=TOOLS)
    assert text == ""
    assert [c.function.name for c in calls] == ["book"]
    assert reasons == ["tool_calls"]


def test_text_then_a_tagged_call_streams_the_text_then_the_call(models: Any) -> None:
    _, servers = models
    text, calls, _ = stream(servers["qwen3:8b"], "Book it [[say-first:3]]", tools=TOOLS)
    assert text == "Sure, here"
    assert [c.function.name for c in calls] == ["book"]


def test_calls_on_the_native_path_come_with_the_done_line() -> None:
    fake = start_fake("--model", "mine:latest", "--profile", "mine:latest=native", *QUICK)
    server = start_server(fake.url, "--model", "mine:latest")
    try:
        text, calls, reasons = stream(server, "Book it", tools=TOOLS)
        assert (text, [c.function.name for c in calls], reasons) == ("", ["book"], ["tool_calls"])
    finally:
        server.stop()
        fake.stop()


# Thinking is never spoken


def test_thinking_lines_are_not_spoken_and_are_counted_once(models: Any) -> None:
    _, servers = models
    server = servers["gpt-oss:20b"]  # harmony: it reasons whatever think says
    for _ in range(2):
        assert stream(server, "Hi [[think:5]]")[0] == "Sure, here is"
    assert metrics(server)["voice_llm_thinking_lines_total"] == 10
    warnings = [
        line
        for line in server.output().decode().splitlines()
        if "thinks although every turn sends think: false" in line
    ]
    assert len(warnings) == 1
    assert "gpt-oss:20b" in warnings[0]


def test_thinking_in_think_tags_is_not_spoken(models: Any) -> None:
    _, servers = models
    text, _, _ = stream(servers["qwen3:8b"], "Hi [[think-anyway]] [[think:4]]")
    assert text == "Sure, here is"


def test_thinking_is_not_the_first_token_but_keeps_the_stream_alive() -> None:
    fake = start_fake("--model", "gpt-oss:20b", *QUICK, "--itl", "20", "--tokens", "3")
    server = start_server(
        fake.url, "--model", "gpt-oss:20b", "--token-timeout", "0.2", "--first-token-timeout", "3"
    )
    try:
        # 40 thinking lines, 20 ms apart: 0.8 s of thinking, never 0.2 s without a line.
        assert stream(server, "Hi [[think:40]]")[0] == "Sure, here"
        wait_for(lambda: turn_records(server.output()))  # logged once the stream has ended
        (record,) = turn_records(server.output())
        assert record["outcome"] == "ok"
        assert record["ttft_ms"] >= 800  # the first spoken token, after the thinking
        with httpx.Client(timeout=10) as http:
            answer = http.post(
                f"{server.url}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi [[think:200]]"}]},
            )
        assert answer.status_code == 504  # 4 s of thinking: no spoken token within 3 s
    finally:
        server.stop()
        fake.stop()


# A response that ends with neither done nor an error


def test_a_response_without_a_done_line_ends_the_stream_cleanly(models: Any) -> None:
    _, servers = models
    server = servers["llama3.1:8b"]
    marker = uuid.uuid4().hex[:8]
    with httpx.Client(timeout=10) as http:
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": f"{marker} [[end-after:2]]"}],
            "stream": True,
        }
        response = http.post(f"{server.url}/v1/chat/completions", json=body)
        assert response.status_code == 200
        assert response.text.endswith('"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
        assert '"content":"Sure"' in response.text
        body["messages"][0]["content"] = f"{marker} [[end-after:0]]"
        assert http.post(f"{server.url}/v1/chat/completions", json=body).status_code == 502
    records = [r for r in turn_records(server.output()) if r["outcome"] == "upstream_error"]
    assert all("without a done line" in r["error"] for r in records[-2:])


# A slot leaked by a lost request: the stuck Ollama is noticed and reported


def test_a_leaked_slot_makes_the_backend_stuck_and_unhealthy() -> None:
    fake = start_fake(*QUICK, "--parallel", "1")
    server = start_server(fake.url, "--first-token-timeout", "0.5")
    try:
        body = json.dumps(
            {
                "messages": [{"role": "user", "content": "Hi [[leak]] [[tokens:500]]"}],
                "stream": True,
            }
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            while b"data: " not in sock.recv(65536):
                pass
        # The caller hung up: Ollama never gives the slot back.
        wait_for(lambda: fake.stats()["leaked_slots"] == 1)
        with httpx.Client(timeout=10) as http:
            for _ in range(2):
                answer = http.post(
                    f"{server.url}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "Hello"}]},
                )
                assert answer.json()["error"]["code"] == "upstream_timeout"
            assert ping(server) == 503
            health = http.get(f"{server.url}/health")
        assert health.status_code == 503
        assert "ollama/ollama#17131" in health.json()["backends"][0]["stuck"]
        assert metrics(server)[f"voice_llm_backend_stuck[backend={fake.url}]"] == 1
    finally:
        server.stop()
        fake.stop()


# A barge-in never costs a reload


def test_turns_during_the_preload_are_refused_and_never_abort_it() -> None:
    fake = start_fake(*QUICK, "--load-ms", "1500")
    server = start_server(fake.url, wait_warm=False)
    try:
        with httpx.Client(timeout=10) as http:
            for _ in range(3):
                answer = http.post(
                    f"{server.url}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "Hi"}], "stream": True},
                )
                assert answer.json()["error"]["code"] == "model_not_warm"
        wait_for(lambda: ping(server) == 200)
        stats = fake.stats()
        assert stats["loads"] == 1  # the preload's own, never aborted and restarted
        chats = [r for r in fake.requests() if r["path"] == "/api/chat"]
        assert [r["outcome"] for r in chats] == ["done"]
    finally:
        server.stop()
        fake.stop()


def test_a_load_aborted_by_a_barge_in_is_made_again_by_the_server() -> None:
    fake = start_fake(*QUICK, "--load-ms", "800")
    server = start_server(fake.url, "--warm-check-interval", "600")  # no poll would see it
    try:
        post_json_evict = httpx.post(f"{fake.url}/_sim/evict", timeout=5)
        assert post_json_evict.status_code == 200
        # The server still thinks the model is warm: this turn makes Ollama load it.
        body = json.dumps(
            {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            time.sleep(0.2)
        # The caller barged in during the load, which aborted it: the server loads again.
        wait_for(lambda: fake.stats()["loaded"] is not None and ping(server) == 200)
        aborted = [r for r in fake.requests() if r["path"] == "/api/chat"][-2:]
        assert aborted[0]["outcome"] == "client_closed"
        assert aborted[1]["body"]["messages"] == []  # the server's own preload
        assert stream(server, "Hi [[tokens:2]]")[0] == "Sure,"
    finally:
        server.stop()
        fake.stop()


# Failover when one backend refuses every turn


def test_a_backend_answering_500_before_the_first_token_fails_over() -> None:
    broken = start_fake(*QUICK, "--parallel", "4", "--tokens", "1", "--fail-rate", "1")
    good = start_fake(*QUICK, "--parallel", "4", "--tokens", "1")
    server = fleet_server([broken, good])
    marker = f"refused-{uuid.uuid4().hex[:8]}"
    try:
        for n in range(4):
            body = {"messages": [{"role": "user", "content": f"{marker} {n}"}], "user": f"u{n}"}
            with httpx.Client(timeout=10) as http:
                assert spoken(http.post(f"{server.url}/v1/chat/completions", json=body)) == "Sure"
        assert 0 in served_by([broken, good], marker)  # the rotation tried the broken one
        assert metrics(server)["voice_llm_failovers_total"] >= 1
    finally:
        server.stop()
        broken.stop()
        good.stop()
