"""Tests of the simulator's failures: streams ending early, stalls, the slot leak of #17131."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from loadtest.fake_ollama import reply_text

from .fake_ollama_support import (
    call,
    chat_body,
    configure,
    load,
    ndjson,
    parse_chunked,
    raw_exchange,
    raw_request,
    records,
    reset,
    simulator,
    stats,
    wait_until,
)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """One simulator process for the module."""
    yield from simulator()


@pytest.fixture(autouse=True)
def fresh(port: int) -> None:
    """Baseline knobs, no model loaded and an empty request log before each test."""
    reset(port)


def test_a_stream_can_end_with_neither_a_done_line_nor_an_error(port: int) -> None:
    head, chunks, complete = parse_chunked(raw_exchange(port, chat_body("hi [[end-after:3]]")))
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert complete  # a clean chunked end
    lines = ndjson(chunks)
    assert [line["message"]["content"] for line in lines] == ["Sure", ",", " here"]
    assert all(line["done"] is False for line in lines)
    head, chunks, complete = parse_chunked(raw_exchange(port, chat_body("[[end-after:0]]")))
    assert (head.startswith(b"HTTP/1.1 200 OK\r\n"), chunks, complete) == (True, [], True)
    # The connection stays usable, as after any complete response.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):
        conn.request("POST", "/api/chat", body=orjson.dumps(chat_body("hi [[end-after:2]]")))
        response = conn.getresponse()
        assert (response.status, len(response.read().splitlines())) == (200, 2)
    conn.close()
    # Not streaming, Ollama answers the last line it had, with its content so far.
    body = chat_body("hi [[end-after:3]]", stream=False)
    status, _, answer = call(port, "POST", "/api/chat", body)
    reply = orjson.loads(answer)
    assert (status, reply["done"], reply["message"]["content"]) == (200, False, reply_text(3))
    assert "done_reason" not in reply
    assert {record["outcome"] for record in records(port)} == {"incomplete"}
    configure(port, fail_rate=1.0, fail_mode="end")
    _, chunks, complete = parse_chunked(raw_exchange(port, chat_body("hi [[tokens:30]]")))
    assert complete
    assert all(line["done"] is False for line in ndjson(chunks))


def test_a_stall_sends_nothing_more_and_holds_the_slot_until_the_client_leaves(port: int) -> None:
    load(port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request("/api/chat", chat_body("hi [[stall-after:2]]")))
        wait_until(lambda: records(port)[-1]["outcome"] == "stalled")
        assert stats(port)["active"] == 1
    wait_until(lambda: stats(port)["active"] == 0)
    assert records(port)[-1]["tokens_sent"] == 2


def test_a_leaked_slot_stays_held_so_later_requests_wait(port: int) -> None:
    # ollama/ollama#17131: a disconnect can leave Ollama's slot permit taken forever;
    # with one slot, every later request waits, until the runner unloads.
    configure(port, parallel=1, keep_alive="100ms")
    load(port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request("/api/chat", chat_body("long [[tokens:500]] [[leak]]")))
        assert b'"done":false' in sock.recv(65536)
    wait_until(lambda: stats(port)["leaked_slots"] == 1)
    leaked = records(port)[-1]
    assert (leaked["outcome"], leaked["slot_leaked"]) == ("client_closed", True)
    assert stats(port)["slots"][0]["busy"] is False  # llama-server's slot is free again
    with socket.create_connection(("127.0.0.1", port), timeout=10) as waiting:
        waiting.sendall(raw_request("/api/chat", chat_body("after")))
        wait_until(lambda: stats(port)["queued"] == 1)
        time.sleep(0.3)  # well past the 5 ms a reply takes
        assert (stats(port)["queued"], records(port)[-1]["first_byte_at"]) == (1, None)
    # Once nobody holds the runner its keep-alive unloads it, and the leak with it.
    wait_until(lambda: not stats(port)["loaded"])
    assert call(port, "POST", "/api/chat", chat_body("fresh", stream=False))[0] == 200
    configure(port, slot_leak=True)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request("/api/chat", chat_body("long [[tokens:500]]")))
        assert b'"done":false' in sock.recv(65536)
    wait_until(lambda: stats(port)["leaked_slots"] == 1)
