"""Overload, timeouts, Ollama faults, shutdown, metrics, logs and limits, against real processes."""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from .conftest import API_KEY, FakeOllama, Process, start_fake, start_server


def chat_body(content: str, stream: bool = True, **fields: Any) -> bytes:
    return json.dumps(
        {"messages": [{"role": "user", "content": content}], "stream": stream, **fields}
    ).encode()


@contextmanager
def open_stream(server: Process, content: str) -> Iterator[socket.socket]:
    """A raw SSE request whose first event has arrived; the socket stays open."""
    body = chat_body(content)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"data: " not in received:
            received += sock.recv(65536)
        yield sock


def read_to_end(sock: socket.socket) -> bytes:
    """Read a chunked SSE response until the connection closes or the last chunk arrives."""
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def metrics(server: Process, **headers: str) -> dict[str, Any]:
    """Samples of /metrics by name and labels."""
    with httpx.Client(timeout=5) as http:
        response = http.get(f"{server.url}/metrics", headers=headers)
    assert response.status_code == 200
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = sample.name + "".join(f"[{k}={v}]" for k, v in sorted(sample.labels.items()))
            samples[key] = sample.value
    return samples


def wait_for(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def ping(server: Process) -> int:
    try:
        with httpx.Client(timeout=2) as http:
            return http.get(f"{server.url}/ping").status_code
    except httpx.HTTPError:
        return 0


# Admission control


def test_overload_is_a_fast_503_never_a_queue_inside_ollama(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--max-concurrency", "1", "--queue-timeout", "0.3")
    try:
        with (
            open_stream(server, "hold [[tokens:400]] [[itl:10]]"),
            httpx.Client(timeout=10) as http,
        ):
            started = time.monotonic()
            response = http.post(f"{server.url}/v1/chat/completions", content=chat_body("Hi"))
            waited = time.monotonic() - started
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "overloaded"
            assert 0.25 < waited < 5
            with connect(server.url.replace("http", "ws") + "/ws", open_timeout=5) as ws:
                ws.send(
                    json.dumps(
                        {
                            "type": "chat",
                            "id": "t1",
                            "messages": [{"role": "user", "content": "Hi"}],
                        }
                    )
                )
                frame = json.loads(ws.recv(timeout=5))
                assert (frame["type"], frame["id"], frame["code"]) == ("error", "t1", "overloaded")
            samples = metrics(server)
            assert samples["voice_llm_streams_in_flight"] == 1
            assert samples["voice_llm_turns_total[outcome=rejected]"] == 2
            in_progress = [r for r in fake.requests() if r["outcome"] == "in_progress"]
            assert len(in_progress) == 1  # nothing waits inside Ollama
            assert "hold" in json.dumps(in_progress[0]["body"])
        # The slot is free again once the long stream's caller has gone.
        wait_for(lambda: metrics(server)["voice_llm_streams_in_flight"] == 0)
        with httpx.Client(timeout=10) as http:
            response = http.post(
                f"{server.url}/v1/chat/completions",
                content=chat_body("Hi [[tokens:2]]", stream=False),
            )
            assert response.status_code == 200
    finally:
        server.stop()


def test_a_queued_turn_gets_the_next_free_slot(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--max-concurrency", "1", "--queue-timeout", "5")
    try:
        with (
            open_stream(server, "short [[tokens:20]] [[itl:10]]") as sock,
            httpx.Client(timeout=10) as http,
        ):
            response = http.post(
                f"{server.url}/v1/chat/completions",
                content=chat_body("Hi [[tokens:2]]", stream=False),
            )
            assert response.status_code == 200
            assert read_to_end(sock).count(b"data: [DONE]") == 1
    finally:
        server.stop()


# Timeouts


def test_first_token_timeout_is_a_504_and_closes_ollama(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--first-token-timeout", "0.3")
    try:
        with httpx.Client(timeout=10) as http:
            response = http.post(
                f"{server.url}/v1/chat/completions", content=chat_body("slow-first [[ttft:3000]]")
            )
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        record = next(r for r in reversed(fake.requests()) if "slow-first" in json.dumps(r["body"]))
        assert record["outcome"] == "client_closed"
        assert metrics(server)["voice_llm_turns_total[outcome=timeout]"] == 1
    finally:
        server.stop()


def test_token_gap_timeout_ends_the_stream_cleanly(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--token-timeout", "0.3")
    try:
        with httpx.Client(timeout=10) as http:
            response = http.post(
                f"{server.url}/v1/chat/completions", content=chat_body("Hi [[stall-after:2]]")
            )
        events = response.content.split(b"\n\n")
        assert events[-2] == b"data: [DONE]"
        finish = json.loads(events[-3][len(b"data: ") :])
        assert finish["choices"][0]["finish_reason"] == "stop"
        assert sum(1 for e in events if b'"content":"' in e and b'"content":""' not in e) == 2
        assert metrics(server)["voice_llm_turns_total[outcome=timeout]"] == 1
    finally:
        server.stop()


# Ollama faults


@contextmanager
def never_accepting() -> Iterator[int]:
    """A loopback port whose full accept queue leaves new connections hanging."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_connecting_to_ollama_times_out_fast() -> None:
    with never_accepting() as port:
        server = start_server(
            f"http://127.0.0.1:{port}", "--connect-timeout", "0.3", wait_warm=False
        )
        try:
            with httpx.Client(timeout=10) as http:
                started = time.monotonic()
                health = http.get(f"{server.url}/health")
                assert time.monotonic() - started < 2
                assert health.status_code == 503
                assert health.json()["ollama"]["reachable"] is False
                response = http.post(f"{server.url}/v1/chat/completions", content=chat_body("Hi"))
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "ollama_unreachable"
        finally:
            server.stop()


def test_ollama_dies_mid_stream_then_comes_back() -> None:
    fake = start_fake("--ttft", "5", "--itl", "5", "--load-ms", "20")
    server = start_server(fake.url, "--warm-check-interval", "0.5")
    try:
        with open_stream(server, "Hi [[tokens:2000]] [[itl:10]]") as sock:
            fake.proc.kill()
            started = time.monotonic()
            rest = read_to_end(sock)
            assert time.monotonic() - started < 3
        assert rest.count(b"data: [DONE]") == 1
        assert b'"finish_reason":"stop"' in rest
        wait_for(lambda: ping(server) == 204)
        with httpx.Client(timeout=10) as http:
            response = http.post(f"{server.url}/v1/chat/completions", content=chat_body("Hi"))
            assert response.status_code == 503
            assert http.get(f"{server.url}/health").json()["ollama"]["reachable"] is False
        fake.stop()
        fake = start_fake("--port", str(fake.port), "--ttft", "5", "--itl", "5", "--load-ms", "20")
        wait_for(lambda: ping(server) == 200)
        with httpx.Client(timeout=10) as http:
            response = http.post(
                f"{server.url}/v1/chat/completions", content=chat_body("Hi [[tokens:3]]")
            )
            assert response.status_code == 200
            assert response.content.endswith(b"data: [DONE]\n\n")
    finally:
        server.stop()
        fake.stop()


class _GatewayError(http.server.BaseHTTPRequestHandler):
    """A proxy in front of an Ollama that is not up: an HTML 502 to every request."""

    def do_GET(self) -> None:
        body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_html_error_page_in_front_of_ollama_is_waited_out() -> None:
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatewayError)
    port = proxy.server_address[1]
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    server = start_server(
        f"http://127.0.0.1:{port}", "--warm-check-interval", "0.2", wait_warm=False
    )
    fake = None
    try:
        with httpx.Client(timeout=10) as http_client:
            wait_for(lambda: b"answered 502 to GET /api/version" in server.output())
            health = http_client.get(f"{server.url}/health")
            assert health.status_code == 503
            assert health.json()["ollama"]["reachable"] is False
            proxy.shutdown()
            proxy.server_close()
            fake = start_fake("--port", str(port), "--load-ms", "20")
            wait_for(lambda: ping(server) == 200)
    finally:
        server.stop()
        if fake is not None:
            fake.stop()


class _ClosesKeptConnections(BaseHTTPRequestHandler):
    """An Ollama behind something that closes a kept connection as the next request comes."""

    protocol_version = "HTTP/1.1"
    chats = 0  # on this connection

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._send({"version": "0.32.15"})
        else:
            self._send({"models": [{"name": "llama3.1:8b", "model": "llama3.1:8b"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        head = {"model": "llama3.1:8b", "created_at": "2026-08-20T14:03:11Z"}
        if not body["messages"]:
            self._send({**head, "message": {"role": "assistant", "content": ""}, "done": True})
            return
        self.chats += 1
        if self.chats > 1:
            self.close_connection = True  # gone without a word
            return
        self._send(
            {**head, "message": {"role": "assistant", "content": "Hello"}, "done": False},
            {**head, "message": {"role": "assistant", "content": ""}, "done": True},
        )

    def _send(self, *objects: dict[str, Any]) -> None:
        payload = b"".join(json.dumps(o).encode() + b"\n" for o in objects)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_kept_connection_closed_before_an_answer_is_replaced_unseen() -> None:
    ollama = ThreadingHTTPServer(("127.0.0.1", 0), _ClosesKeptConnections)
    thread = threading.Thread(target=ollama.serve_forever, daemon=True)
    thread.start()
    server = start_server(f"http://127.0.0.1:{ollama.server_address[1]}")
    try:
        with httpx.Client(timeout=10) as http:
            for _ in range(3):  # the second and third go out on a kept connection first
                response = http.post(
                    f"{server.url}/v1/chat/completions", content=chat_body("Hi", stream=False)
                )
                assert response.status_code == 200, response.text
                assert response.json()["choices"][0]["message"]["content"] == "Hello"
    finally:
        server.stop()
        ollama.shutdown()
        ollama.server_close()


def test_turns_one_after_another_reuse_one_connection_to_ollama(
    fake: FakeOllama, server: Process
) -> None:
    # Ollama writes the message's last chunk after the done line, so the turn is over
    # before it arrives; the connection must still be kept for the next turn, which
    # comes once the caller has spoken (here 50 ms later).
    before = fake.stats()["connections_total"]
    with httpx.Client(timeout=10) as http:
        for _ in range(10):
            response = http.post(f"{server.url}/v1/chat/completions", content=chat_body("Hi"))
            assert response.status_code == 200
            assert response.text.endswith("data: [DONE]\n\n")
            time.sleep(0.05)
    with connect(server.url.replace("http", "ws") + "/ws") as websocket:
        for turn in range(10):
            websocket.send(
                json.dumps(
                    {
                        "type": "chat",
                        "id": str(turn),
                        "messages": [{"role": "user", "content": "Hi"}],
                    }
                )
            )
            while json.loads(websocket.recv())["type"] != "done":
                pass
            time.sleep(0.05)
    # 20 turns; one more connection may be the warm loop's (its own client's pool).
    assert fake.stats()["connections_total"] - before <= 2


def test_warmth_follows_reachability() -> None:
    fake = start_fake("--load-ms", "20")
    server = start_server(fake.url, "--warm-check-interval", "60")  # no poll in between
    try:
        fake.stop()
        with httpx.Client(timeout=10) as http:
            health = http.get(f"{server.url}/health").json()
        assert health["ollama"]["reachable"] is False
        assert health["model"]["warm"] is False
        assert ping(server) == 204
    finally:
        server.stop()


def test_a_model_missing_from_ollama_says_how_to_fix_it() -> None:
    fake = start_fake("--model", "qwen2.5:7b", "--load-ms", "20")
    fix = f"model 'llama3.1:8b' is not in Ollama at {fake.url}: run ollama pull llama3.1:8b"
    server: Process | None = None
    try:
        server = start_server(fake.url, wait_warm=False)
        with httpx.Client(timeout=10) as http:
            wait_for(
                lambda: http.get(f"{server.url}/health").json()["backends"][0]["model_missing"]
            )
            health = http.get(f"{server.url}/health")
            assert health.status_code == 503
            assert health.json()["ollama"]["reachable"] is True
            answer = http.get(f"{server.url}/ping")  # waiting will not help: not "warming"
            assert answer.status_code == 503
            assert answer.json() == {"status": "unhealthy", "reasons": [fix]}
            response = http.post(f"{server.url}/v1/chat/completions", content=chat_body("Hi"))
        assert response.status_code == 503
        assert response.json()["error"] == {
            "message": fix,
            "type": "service_unavailable",
            "param": None,
            "code": "model_missing",
        }
        wait_for(lambda: len([r for r in fake.requests() if r["path"] == "/api/chat"]) >= 3)
        assert server.output().decode().count(fix) == 2  # logged once, and the turn's line
    finally:
        if server is not None:
            server.stop()
        fake.stop()


def test_an_evicted_model_is_warmed_again() -> None:
    fake = start_fake("--load-ms", "20")
    server = start_server(fake.url, "--warm-check-interval", "0.2")
    try:
        loads = fake.stats()["loads"]
        with httpx.Client(timeout=5) as http:
            assert http.post(f"{fake.url}/_sim/evict").status_code == 200
        wait_for(lambda: fake.stats()["loads"] > loads and fake.stats()["loaded"])
        wait_for(lambda: ping(server) == 200)
        assert fake.stats()["reloads"] == 0
    finally:
        server.stop()
        fake.stop()


# Graceful shutdown


def test_sigterm_lets_in_flight_streams_finish(fake: FakeOllama) -> None:
    server = start_server(fake.url)
    with open_stream(server, "Hi [[tokens:40]] [[itl:20]]") as sock:
        server.proc.send_signal(signal.SIGTERM)
        rest = read_to_end(sock)
    assert rest.count(b"data: [DONE]") == 1
    assert b'"finish_reason":"stop"' in rest
    assert server.proc.wait(timeout=10) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    server.stop()


def test_sigterm_deadline_closes_long_streams_cleanly(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--shutdown-timeout", "1")
    with open_stream(server, "long-drain [[tokens:2000]] [[itl:20]]") as sock:
        server.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest = read_to_end(sock)
        assert time.monotonic() - started < 5
    assert rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert server.proc.wait(timeout=10) == 0
    record = next(r for r in reversed(fake.requests()) if "long-drain" in json.dumps(r["body"]))
    assert record["outcome"] == "client_closed"
    server.stop()


# Metrics and logs


def test_metrics_count_turns_and_latencies(server: Process) -> None:
    with httpx.Client(timeout=10) as http:
        for _ in range(3):
            http.post(f"{server.url}/v1/chat/completions", content=chat_body("Hi [[tokens:5]]"))
    samples = metrics(server)
    assert samples["voice_llm_turns_total[outcome=ok]"] >= 3
    assert samples["voice_llm_ttft_seconds_count"] >= 3
    assert samples["voice_llm_inter_token_seconds_count"] >= 12
    assert samples["voice_llm_model_warm"] == 1
    assert samples["voice_llm_ollama_reachable"] == 1
    assert samples["voice_llm_streams_waiting"] == 0


def test_startup_objects_are_frozen_and_collections_timed(server: Process) -> None:
    samples = metrics(server)
    # The full collection before the freeze was timed; the app's objects are exempt.
    assert samples["voice_llm_gc_pause_seconds_count[generation=2]"] >= 1
    assert samples["voice_llm_gc_frozen_objects"] > 10_000


def test_metrics_need_the_key_when_one_is_set(keyed_server: Process) -> None:
    with httpx.Client(timeout=5) as http:
        assert http.get(f"{keyed_server.url}/metrics").status_code == 401
    assert metrics(keyed_server, Authorization=f"Bearer {API_KEY}")["voice_llm_model_warm"] == 1


def turn_records(output: bytes) -> list[dict[str, Any]]:
    records = []
    for line in output.splitlines():
        if line.startswith(b"{"):
            record = json.loads(line)
            if record["logger"] == "server.turn" and record["msg"] == "turn":
                records.append(record)
    return records


def test_one_json_log_line_per_turn_without_content(fake: FakeOllama) -> None:
    server = start_server(fake.url)
    try:
        body = {
            "messages": [{"role": "user", "content": "secret words [[tokens:3]]"}],
            "stream": True,
            "call": {"id": "call-123"},
            "customer": {"number": "+15551234567"},
        }
        with httpx.Client(timeout=10) as http:
            http.post(f"{server.url}/v1/chat/completions", json=body)
            http.post(
                f"{server.url}/v1/chat/completions", content=chat_body("Hi [[error-after:1]]")
            )
    finally:
        server.stop()
    ok, failed = turn_records(server.output())
    assert ok["call_id"] == "call-123"
    assert ok["turn_id"].startswith("chatcmpl-")
    assert ok["outcome"] == "ok"
    assert ok["tokens"] == 3
    assert ok["ttft_ms"] > 0
    assert ok["duration_ms"] >= ok["ttft_ms"]
    assert ok["model"] == "llama3.1:8b"
    assert failed["outcome"] == "upstream_error"
    assert "mid-stream" in failed["error"]
    assert b"secret words" not in server.output()
    assert b"+15551234567" not in server.output()


def test_a_tool_call_turns_log_counts_ollamas_tokens(fake: FakeOllama) -> None:
    server = start_server(fake.url)
    tool = {"type": "function", "function": {"name": "book", "parameters": {"type": "object"}}}
    body = {"messages": [{"role": "user", "content": "Book it"}], "tools": [tool], "stream": True}
    try:
        with httpx.Client(timeout=10) as http:
            reply = http.post(f"{server.url}/v1/chat/completions", json=body).text
    finally:
        server.stop()
    assert '"finish_reason":"tool_calls"' in reply
    (record,) = turn_records(server.output())
    assert record["tokens"] > 0  # a tool call streams no text, but Ollama counted its tokens


def test_log_content_flag_adds_the_messages(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--log-content")
    try:
        with httpx.Client(timeout=10) as http:
            http.post(
                f"{server.url}/v1/chat/completions", content=chat_body("visible words [[tokens:1]]")
            )
    finally:
        server.stop()
    (record,) = turn_records(server.output())
    assert record["messages"] == [{"role": "user", "content": "visible words [[tokens:1]]"}]


# Limits


def test_too_many_messages_or_too_long_a_message(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--max-messages", "3", "--max-message-chars", "10")
    try:
        with httpx.Client(timeout=10) as http:
            long = [{"role": "user", "content": "x" * 11}]
            response = http.post(f"{server.url}/v1/chat/completions", json={"messages": long})
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "message_too_long"
            assert response.json()["error"]["param"] == "messages.0.content"
        messages = [{"role": "user", "content": "hi"}] * 4
        with httpx.Client(timeout=10) as http:
            response = http.post(f"{server.url}/v1/chat/completions", json={"messages": messages})
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "too_many_messages"
            assert response.json()["error"]["param"] == "messages"
            response = http.post(
                f"{server.url}/v1/chat/completions", json={"messages": messages[:3]}
            )
            assert response.status_code == 200
    finally:
        server.stop()


def test_slow_headers_get_a_408(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--read-timeout", "0.3")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"code":"request_timeout"' in answer
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")  # a silent one as well
        assert ping(server) == 200
    finally:
        server.stop()


def test_connection_cap(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--max-connections", "3")
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            with httpx.Client(timeout=5) as http:
                assert http.get(f"{server.url}/health").status_code == 503
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: ping(server) == 200)
    finally:
        server.stop()
