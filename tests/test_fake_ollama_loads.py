"""Tests of the simulator's loads: aborted by a leaving client, failing, reloading, crashing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from loadtest.fake_ollama import LOAD_ERROR, MIDSTREAM_ERROR, RUNNER_GONE_ERROR

from .fake_ollama_support import (
    call,
    chat_body,
    configure,
    load,
    parse_chunked,
    post_json,
    raw_exchange,
    raw_request,
    records,
    reset,
    simulator,
    stats,
    stream_chat,
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


def chat(port: int, content: str, **extra: Any) -> tuple[int, Any]:
    """A non-streaming chat; returns the status and the decoded answer."""
    return post_json(port, "/api/chat", chat_body(content, stream=False, **extra))


def test_a_client_leaving_during_its_load_aborts_it(port: int) -> None:
    configure(port, load_ms=300)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request("/api/chat", chat_body("hi")))
        wait_until(lambda: stats(port)["loading"])
    wait_until(lambda: not stats(port)["loading"])
    assert (stats(port)["loaded"], stats(port)["loads"]) == (False, 1)
    status, reply = chat(port, "again")
    assert status == 200
    assert reply["load_duration"] >= 300_000_000  # from zero
    assert stats(port)["loads"] == 2
    assert [record["outcome"] for record in records(port)] == ["client_closed", "done"]


def test_requests_waiting_for_an_aborted_load_start_it_again(port: int) -> None:
    configure(port, load_ms=300)

    async def scenario() -> list[dict[str, Any]]:
        owner = await asyncio.open_connection("127.0.0.1", port)
        owner[1].write(raw_request("/api/chat", chat_body("first")))
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(stream_chat(port, chat_body("second")))
        await asyncio.sleep(0.05)
        owner[1].close()
        return await waiting

    lines = asyncio.run(scenario())
    assert lines[-1]["done"] is True
    # Had the load gone on, it would have been ready 200 ms after the second request came.
    assert lines[-1]["load_duration"] >= 300_000_000 + 40_000_000
    assert stats(port)["loads"] == 2


def test_with_abort_load_off_a_load_goes_on_without_its_client(port: int) -> None:
    configure(port, load_ms=200, abort_load=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request("/api/chat", chat_body("hi")))
        wait_until(lambda: stats(port)["loading"])
    wait_until(lambda: stats(port)["loaded"])
    assert stats(port)["loads"] == 1
    wait_until(lambda: stats(port)["queued"] == 0)
    assert chat(port, "again")[0] == 200
    assert stats(port)["loads"] == 1


def test_a_load_can_fail_with_ollama_0_32s_wording(port: int) -> None:
    status, _, body = call(port, "POST", "/api/chat", chat_body("hi [[load-fail]]"))
    assert (status, orjson.loads(body)) == (500, {"error": LOAD_ERROR})
    assert LOAD_ERROR.startswith("llama-server process has terminated: ")
    assert stats(port)["loaded"] is False
    assert chat(port, "hi")[0] == 200
    configure(port, load_fail=True)
    call(port, "POST", "/_sim/evict", {})
    assert chat(port, "hi") == (500, {"error": LOAD_ERROR})
    status, reply = post_json(port, "/api/chat", {"model": "llama3.1:8b", "messages": []})
    assert (status, reply) == (500, {"error": LOAD_ERROR})
    assert [record["outcome"] for record in records(port)] == ["error", "done", "error", "error"]


def test_a_reload_waits_for_in_flight_requests_which_keep_the_old_runner(port: int) -> None:
    configure(port, parallel=2, load_ms=50)
    load(port)

    async def scenario() -> None:
        running = asyncio.create_task(stream_chat(port, chat_body("long [[tokens:30]] [[itl:10]]")))
        await asyncio.sleep(0.05)
        reloading = asyncio.create_task(
            stream_chat(port, chat_body("new options", options={"num_ctx": 2048}))
        )
        await asyncio.sleep(0.05)
        assert stats(port)["loaded_model"] == "llama3.1:8b"
        assert stats(port)["queued"] == 1
        old = await stream_chat(port, chat_body("old options [[tokens:2]]"))
        assert old[-1]["load_duration"] < 50_000_000  # no load: the old runner served it
        await asyncio.gather(running, reloading)

    asyncio.run(scenario())
    _, running, reloading, old = records(port)
    assert old["finished_at"] < running["finished_at"] < reloading["first_byte_at"]
    assert (stats(port)["loads"], stats(port)["reloads"]) == (2, 1)


def test_an_old_option_request_with_keep_alive_postpones_the_reload(port: int) -> None:
    # useLoadedRunner resets the runner's duration, so the runner the reload waits for
    # now unloads only when that keep-alive runs out (server/sched.go).
    configure(port, load_ms=20)
    load(port)

    async def scenario() -> None:
        running = asyncio.create_task(stream_chat(port, chat_body("long [[tokens:10]] [[itl:10]]")))
        await asyncio.sleep(0.03)
        reloading = asyncio.create_task(stream_chat(port, chat_body("x", options={"num_ctx": 99})))
        await asyncio.sleep(0.03)
        await stream_chat(port, chat_body("old [[tokens:1]]", keep_alive="400ms"))
        await asyncio.gather(running, reloading)

    asyncio.run(scenario())
    _, running, reloading, old = records(port)
    assert reloading["first_byte_at"] >= max(old["finished_at"], running["finished_at"]) + 0.4


def test_a_crash_mid_stream_ends_the_runner_and_every_request_on_it(port: int) -> None:
    configure(port, parallel=2)
    load(port)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        other = asyncio.create_task(stream_chat(port, chat_body("long [[tokens:200]] [[itl:5]]")))
        await asyncio.sleep(0.05)
        crashing = await stream_chat(port, chat_body("hi [[error-after:2]]"))
        return crashing, await other

    crashing, other = asyncio.run(scenario())
    assert crashing[-1] == {"error": MIDSTREAM_ERROR}
    assert other[-1] == {"error": MIDSTREAM_ERROR}
    assert stats(port)["loaded"] is False
    status, reply = chat(port, "after the crash")
    assert status == 200
    assert reply["load_duration"] >= 30_000_000
    assert stats(port)["loads"] == 2


def test_a_request_waiting_for_a_slot_of_a_crashed_runner_fails(port: int) -> None:
    configure(port, parallel=1)
    load(port)

    async def scenario() -> bytes:
        crashing = asyncio.create_task(stream_chat(port, chat_body("[[error-after:5]] [[itl:10]]")))
        await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw_request("/api/chat", chat_body("waiting")))
        raw = await reader.read()
        writer.close()
        await crashing
        return raw

    head, chunks, complete = parse_chunked(asyncio.run(scenario()))
    assert head.startswith(b"HTTP/1.1 500 ")
    assert complete
    assert [orjson.loads(chunk) for chunk in chunks] == [{"error": RUNNER_GONE_ERROR}]


def test_without_crash_on_error_the_runner_survives_an_error(port: int) -> None:
    configure(port, crash_on_error=False)
    _, chunks, _ = parse_chunked(raw_exchange(port, chat_body("hi [[error-after:1]]")))
    assert orjson.loads(chunks[-1]) == {"error": MIDSTREAM_ERROR}
    assert stats(port)["loaded"] is True
    assert chat(port, "again")[1]["load_duration"] < 30_000_000
