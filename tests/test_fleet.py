"""Several Ollamas behind one server: pinned calls, spreading, failover, hedging, priming.

Each backend is a simulator process of its own; which one served a turn is read from
its request log, by a marker in the turn's messages.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from server.config import Config
from server.core.backend import Backend
from server.core.events import Turn
from server.core.router import Router

from .conftest import MODEL, FakeOllama, Process, start_fake, start_server
from .test_operations import metrics, ping, wait_for

FAST = ("--model", MODEL, "--ttft", "5", "--itl", "2", "--tokens", "4", "--load-ms", "20")


@pytest.fixture
def trio() -> Iterator[list[FakeOllama]]:
    """Three fast simulators with four slots each."""
    fakes = [start_fake(*FAST, "--parallel", "4") for _ in range(3)]
    yield fakes
    for fake in fakes:
        fake.stop()


def fleet_server(fakes: list[FakeOllama], *args: str) -> Process:
    urls = [arg for fake in fakes for arg in ("--ollama-url", fake.url)]
    return start_server(urls[1], *urls[2:], *args)


def served_by(fakes: list[FakeOllama], marker: str) -> list[int]:
    """Which simulator (by index) got each chat whose messages hold ``marker``, in order."""
    seen: list[tuple[float, int]] = []
    for index, fake in enumerate(fakes):
        for record in fake.requests():
            messages = record["body"].get("messages") or []
            if record["path"] == "/api/chat" and any(
                marker in (m.get("content") or "") for m in messages
            ):
                seen.append((record["received_at"], index))
    return [index for _, index in sorted(seen)]


def post(server: Process, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(timeout=20) as http:
        return http.post(f"{server.url}/v1/chat/completions", json=body)


def spoken(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def conversation(marker: str, turns: int) -> list[dict[str, Any]]:
    """A growing call: system prompt, then user and assistant messages, ``turns`` users."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a receptionist."}]
    for n in range(turns):
        if n:
            messages.append({"role": "assistant", "content": f"Answer {n}."})
        messages.append({"role": "user", "content": f"{marker} question {n}"})
    return messages


def test_health_lists_every_backend(trio: list[FakeOllama]) -> None:
    server = fleet_server(trio)
    try:
        with httpx.Client(timeout=5) as http:
            health = http.get(f"{server.url}/health").json()
        assert [b["url"] for b in health["backends"]] == [f.url for f in trio]
        assert all(b["reachable"] and b["warm"] for b in health["backends"])
        assert health["status"] == "ok"
        samples = metrics(server)
        for fake in trio:
            assert samples[f"voice_llm_backend_warm[backend={fake.url}]"] == 1
        trio[0].stop()
        trio[1].stop()
        assert ping(server) == 200  # one warm backend is enough
        with httpx.Client(timeout=5) as http:
            health = http.get(f"{server.url}/health").json()
        assert [b["reachable"] for b in health["backends"]] == [False, False, True]
    finally:
        server.stop()


def test_a_calls_turns_stay_on_one_backend(trio: list[FakeOllama]) -> None:
    server = fleet_server(trio)
    try:
        keyed, keyless = f"keyed-{uuid.uuid4().hex[:8]}", f"keyless-{uuid.uuid4().hex[:8]}"
        for n in range(1, 6):
            call = {"id": keyed}
            assert spoken(post(server, {"messages": conversation(keyed, n), "call": call}))
            assert spoken(post(server, {"messages": conversation(keyless, n)}))
        keyed_on, keyless_on = served_by(trio, keyed), served_by(trio, keyless)
        assert len(keyed_on) == len(keyless_on) == 5
        assert len(set(keyed_on)) == 1
        assert len(set(keyless_on)) == 1  # the conversation is its own key
    finally:
        server.stop()


def test_a_websocket_is_one_call(trio: list[FakeOllama]) -> None:
    server = fleet_server(trio)
    marker = f"socket-{uuid.uuid4().hex[:8]}"
    try:
        with connect(server.url.replace("http", "ws", 1) + "/ws") as ws:
            for n in range(4):
                messages = [{"role": "user", "content": f"{marker} turn {n}"}]
                ws.send(json.dumps({"type": "chat", "id": f"t{n}", "messages": messages}))
                while '"done"' not in (frame := str(ws.recv(timeout=10))):
                    assert '"error"' not in frame, frame
        assert len(set(served_by(trio, marker))) == 1
    finally:
        server.stop()


def test_new_calls_spread_over_the_backends(trio: list[FakeOllama]) -> None:
    server = fleet_server(trio)
    marker = f"spread-{uuid.uuid4().hex[:8]}"
    try:
        for n in range(6):
            body = {"messages": [{"role": "user", "content": f"{marker} {n}"}], "user": f"u{n}"}
            assert spoken(post(server, body))
        assert set(served_by(trio, marker)) == {0, 1, 2}
    finally:
        server.stop()


def test_a_dead_backend_fails_over_unseen(trio: list[FakeOllama]) -> None:
    server = fleet_server(trio)
    marker = f"dies-{uuid.uuid4().hex[:8]}"
    try:
        call = {"id": marker}
        assert spoken(post(server, {"messages": conversation(marker, 1), "call": call}))
        (pinned,) = served_by(trio, marker)
        trio[pinned].stop()
        for n in range(2, 5):
            assert spoken(post(server, {"messages": conversation(marker, n), "call": call}))
        after = served_by([f for i, f in enumerate(trio) if i != pinned], marker)
        assert len(after) == 3
        assert len(set(after)) == 1  # re-pinned where it landed
    finally:
        server.stop()


def test_a_call_whose_backend_is_not_warm_moves_without_an_error(trio: list[FakeOllama]) -> None:
    server = fleet_server(trio, "--warm-check-interval", "0.2")
    marker = f"cold-{uuid.uuid4().hex[:8]}"
    try:
        call = {"id": marker}
        assert spoken(post(server, {"messages": conversation(marker, 1), "call": call}))
        (pinned,) = served_by(trio, marker)
        trio[pinned].configure(load_ms=60000)  # its next load takes a minute
        httpx.post(f"{trio[pinned].url}/_sim/evict", timeout=5)
        with httpx.Client(timeout=5) as http:
            wait_for(
                lambda: not http.get(f"{server.url}/health").json()["backends"][pinned]["warm"]
            )
        for n in range(2, 4):
            assert spoken(post(server, {"messages": conversation(marker, n), "call": call}))
        assert served_by(trio, marker)[0] == pinned
        assert pinned not in served_by(trio, marker)[1:]
    finally:
        server.stop()


def test_a_slow_first_token_fails_over_within_the_budget() -> None:
    slow = start_fake(*FAST, "--parallel", "4", "--ttft", "5000")
    fast = start_fake(*FAST, "--parallel", "4")
    server = fleet_server([slow, fast], "--first-token-timeout", "2")
    marker = f"slow-{uuid.uuid4().hex[:8]}"
    try:
        for n in range(4):
            body = {"messages": [{"role": "user", "content": f"{marker} {n}"}], "user": f"u{n}"}
            assert spoken(post(server, body))
        abandoned = [r for r in slow.requests() if marker in str(r["body"].get("messages"))]
        assert abandoned  # the rotation sent some calls to the slow one first
        assert all(r["outcome"] == "client_closed" for r in abandoned)
        assert metrics(server)["voice_llm_failovers_total"] == len(abandoned)
    finally:
        server.stop()
        slow.stop()
        fast.stop()


def test_a_turn_kept_waiting_by_a_full_backend_fails_over() -> None:
    fakes = [start_fake(*FAST, "--parallel", "1") for _ in range(2)]
    # Re-evaluating a prompt elsewhere looks dear, so the call stays and waits for its slot.
    server = fleet_server(
        fakes, "--max-concurrency", "1", "--queue-timeout", "0.3", "--prefill-rate", "1"
    )
    marker = f"full-{uuid.uuid4().hex[:8]}"
    call = {"id": marker}
    try:
        assert spoken(post(server, {"messages": conversation(marker, 1), "call": call}))
        (pinned,) = served_by(fakes, marker)
        long_turn = [{"role": "user", "content": f"{marker} [[tokens:100]] [[itl:20]]"}]
        busy = threading.Thread(target=post, args=(server, {"messages": long_turn, "call": call}))
        busy.start()
        try:
            wait_for(lambda: metrics(server)["voice_llm_streams_in_flight"] == 1)
            assert spoken(post(server, {"messages": conversation(marker, 2), "call": call}))
        finally:
            busy.join()
        assert served_by(fakes, marker) == [pinned, pinned, 1 - pinned]
        assert metrics(server)["voice_llm_failovers_total"] == 1
    finally:
        server.stop()
        for fake in fakes:
            fake.stop()


def test_hedging_takes_the_first_answer_and_closes_the_other() -> None:
    slow = start_fake(*FAST, "--parallel", "4", "--ttft", "3000")
    fast = start_fake(*FAST, "--parallel", "4")
    server = fleet_server([slow, fast], "--hedge-after", "100")
    marker = f"hedge-{uuid.uuid4().hex[:8]}"
    try:
        for n in range(4):
            body = {"messages": [{"role": "user", "content": f"{marker} {n}"}], "user": f"u{n}"}
            started = time.monotonic()
            assert spoken(post(server, body))
            assert time.monotonic() - started < 2.5  # never waited for the slow one
        hedged = [r for r in slow.requests() if marker in str(r["body"].get("messages"))]
        assert hedged
        for record in hedged:
            assert record["outcome"] == "client_closed"
            winner = [
                r
                for r in fast.requests()
                if r["body"].get("messages") == record["body"].get("messages")
            ]
            assert record["client_closed_at"] - winner[0]["first_byte_at"] < 0.1
        samples = metrics(server)
        assert samples["voice_llm_hedges_total"] == len(hedged)
        assert samples["voice_llm_hedge_wins_total"] == len(hedged)
    finally:
        server.stop()
        slow.stop()
        fast.stop()


def test_a_dead_backend_fails_over_when_hedging_too(trio: list[FakeOllama]) -> None:
    server = fleet_server(trio, "--hedge-after", "5000")
    marker = f"hedged-dies-{uuid.uuid4().hex[:8]}"
    try:
        call = {"id": marker}
        assert spoken(post(server, {"messages": conversation(marker, 1), "call": call}))
        (pinned,) = served_by(trio, marker)
        trio[pinned].stop()  # refuses at once, long before the hedge would start
        assert spoken(post(server, {"messages": conversation(marker, 2), "call": call}))
        samples = metrics(server)
        assert samples["voice_llm_failovers_total"] == 1
        assert samples["voice_llm_hedges_total"] == 0
    finally:
        server.stop()


def test_every_slot_of_every_backend_is_primed() -> None:
    fakes = [start_fake(*FAST, "--parallel", "2") for _ in range(2)]
    prompt = f"You are the front desk of hotel {uuid.uuid4().hex[:8]}."
    server = fleet_server(fakes, "--max-concurrency", "2", "--system-prompt", prompt)
    try:
        for fake in fakes:
            primes = [
                r["body"]
                for r in fake.requests()
                if r["path"] == "/api/chat" and r["body"].get("messages")
            ]
            assert len(primes) == 2
            for body in primes:
                # Built as a call's opening turn is: the system prompt comes first.
                assert body["messages"][0] == {"role": "system", "content": prompt}
                assert body["options"]["num_predict"] == 1
                assert body["keep_alive"] == -1
            slots = fake.stats()["slots"]
            assert len(slots) == 2
            assert all(slot["cached_tokens"] > len(prompt) // 4 for slot in slots)
    finally:
        server.stop()
        for fake in fakes:
            fake.stop()


def test_a_new_call_goes_where_fewer_calls_are_active() -> None:
    async def run() -> list[int]:
        backends = [Backend(Config(), f"http://127.0.0.1:{port}") for port in (1, 2)]
        for backend in backends:
            backend._warm.set()  # as the warm loop would, once the model is loaded
        router = Router(backends, "pinned", 5000.0)
        router.pin(router.key(Turn(messages=[], call_key="between-turns")), backends[0])
        chosen = []
        for n in range(4):  # idle, but its prompt is in a slot of the first backend
            new = router.key(Turn(messages=[], call_key=f"new-{n}"))
            chosen.append(backends.index(router.choose(new)))  # type: ignore[arg-type]
        for backend in backends:
            await backend.close()
        return chosen

    assert asyncio.run(run()) == [1, 1, 1, 1]


def test_the_call_table_stays_bounded() -> None:
    async def run() -> int:
        config = Config()
        backends = [Backend(config, f"http://127.0.0.1:{port}") for port in (1, 2)]
        router = Router(backends, "pinned", 5000.0, table_size=100)
        for n in range(1000):
            keyed = Turn(messages=[{"role": "user", "content": "hi"}], call_key=f"call-{n}")
            router.pin(router.key(keyed), backends[n % 2])
            keyless = Turn(
                messages=[
                    {"role": "system", "content": "prompt"},
                    {"role": "user", "content": f"hello {n}"},
                ]
            )
            router.pin(router.key(keyless), backends[n % 2])
        for backend in backends:
            await backend.close()
        return router.pinned_calls

    assert asyncio.run(run()) == 200


def test_a_backend_whose_turns_never_start_is_reported_stuck() -> None:
    fake = start_fake(*FAST, "--parallel", "1", "--ttft", "2000")
    server = start_server(fake.url, "--first-token-timeout", "0.3", "--warm-check-interval", "0.2")
    try:
        with httpx.Client(timeout=10) as http:
            for _ in range(2):
                answer = http.post(
                    f"{server.url}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "Hi"}]},
                )
                assert answer.json()["error"]["code"] == "upstream_timeout"
            wait_for(lambda: ping(server) == 503)
            health = http.get(f"{server.url}/health")
            assert health.status_code == 503
            assert health.json()["status"] == "stuck"
            assert "ollama/ollama#17131" in health.json()["backends"][0]["stuck"]
            refused = http.post(
                f"{server.url}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi"}]},
            )
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "ollama_stuck"
            assert metrics(server)["voice_llm_backend_stuck[backend=" + fake.url + "]"] == 1
            fake.configure(ttft=5)  # Ollama answers again (restarted, say): the probe sees it
            wait_for(lambda: ping(server) == 200)
    finally:
        server.stop()
        fake.stop()
