"""The RunPod serverless handler: called directly, and run by the RunPod SDK's real job loop.

Direct calls drive :meth:`serverless.Worker.handle` (what :func:`serverless.handler` serves
with) against the simulator, each job in its own event loop as the SDK would run it.
The SDK tests start ``python handler.py`` as a process, with its job loop pointed at
:class:`tests.runpod_jobs.JobServer` and the simulator behind it.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest

from server.config import Config
from server.doors import serverless

from .conftest import MODEL, ROOT, FakeOllama, Process, free_port, start_fake
from .runpod_jobs import JobServer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "book_appointment",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
        },
    }
]


def dead_url() -> str:
    """An Ollama URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def make_worker(ollama_url: str, **settings: Any) -> serverless.Worker:
    return serverless.Worker(Config(ollama_url=ollama_url, model=MODEL, **settings))


async def collect(worker: serverless.Worker, job_input: Any, job_id: str = "job-1") -> list[Any]:
    async with aclosing(worker.handle({"id": job_id, "input": job_input})) as items:
        return [item async for item in items]


def run_job(worker: serverless.Worker, job_input: Any) -> list[Any]:
    """Run one job to its end in a fresh event loop, as a new SDK loop would."""
    return asyncio.run(collect(worker, job_input))


def openai_job(content: str, stream: bool = True, **fields: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": content}], "stream": stream, **fields}
    return {"openai_route": "/v1/chat/completions", "openai_input": body}


def answer(worker: serverless.Worker, text: str) -> str:
    """The whole answer to one user message, from the non-streaming route."""
    completion = run_job(worker, openai_job(text, stream=False))[0]
    reply: str = completion["choices"][0]["message"]["content"]
    return reply


def sse_chunks(text: str) -> list[dict[str, Any]]:
    """The chunks of an SSE text, checking its framing: ``data: {json}\\n\\n``, then [DONE]."""
    assert text.endswith("data: [DONE]\n\n")
    events = text.split("\n\n")
    assert events.pop() == ""
    assert events.pop() == "data: [DONE]"
    for event in events:
        assert event.startswith("data: "), event
        assert "\n" not in event, event
    return [json.loads(event[len("data: ") :]) for event in events]


def content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def without_ids(chunk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in chunk.items() if k not in ("id", "created")}


def post(server: Process, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(timeout=10) as http:
        return http.post(f"{server.url}/v1/chat/completions", json=body)


@pytest.fixture
def worker(fake: FakeOllama) -> serverless.Worker:
    return make_worker(fake.url, max_concurrency=4)


def chat_record(fake: FakeOllama, marker: str) -> dict[str, Any]:
    """The simulator's record of the chat whose last message contains ``marker``."""
    for record in reversed(fake.requests()):
        messages = record["body"].get("messages") if record["path"] == "/api/chat" else None
        if messages and marker in messages[-1]["content"]:
            found: dict[str, Any] = record
            return found
    raise AssertionError(f"the simulator saw no chat with {marker!r}")


def wait_closed(fake: FakeOllama, marker: str) -> dict[str, Any]:
    """The chat's record once the simulator saw its client close it (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        record = chat_record(fake, marker)
        if record["client_closed_at"] is not None or time.monotonic() > deadline:
            return record
        time.sleep(0.02)


# Direct calls: each input form


def test_openai_route_streams_the_http_servers_sse(
    worker: serverless.Worker, server: Process
) -> None:
    body: dict[str, Any] = {"stream_options": {"include_usage": True}}
    items = run_job(worker, openai_job("Hi", **body))
    assert all(isinstance(item, str) and item.endswith("\n\n") for item in items)
    assert sse_chunks(items[0] + "data: [DONE]\n\n")[1]["choices"][0]["delta"] == {
        "content": "Sure"
    }  # the first token goes out alone, behind the role chunk
    chunks = sse_chunks("".join(items))
    assert len({c["id"] for c in chunks}) == 1

    expected = sse_chunks(
        post(
            server,
            {"messages": [{"role": "user", "content": "Hi"}], "stream": True, **body},
        ).text
    )
    assert (
        content(chunks)
        == content(expected)
        == "Sure, here is a short simulated reply from the fake model"
    )
    for index in (0, -2, -1):  # role, finish, usage: the same objects as the HTTP server's
        assert without_ids(chunks[index]) == without_ids(expected[index])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_openai_route_without_stream_is_one_completion(
    worker: serverless.Worker, server: Process
) -> None:
    items = run_job(worker, openai_job("Hi", stream=False))
    assert len(items) == 1
    completion = items[0]
    expected = post(server, {"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert completion["object"] == "chat.completion"
    assert completion["id"].startswith("chatcmpl-")
    assert without_ids(completion) == without_ids(expected)


def test_models_route_is_the_http_servers_models_list(
    worker: serverless.Worker, server: Process
) -> None:
    with httpx.Client(timeout=10) as http:
        expected = http.get(f"{server.url}/v1/models").json()
    assert run_job(worker, {"openai_route": "/v1/models"}) == [expected]


def test_chat_body_streams_chunk_objects(worker: serverless.Worker, server: Process) -> None:
    job = {
        "messages": [{"role": "user", "content": "Hi"}],
        "stream_options": {"include_usage": True},
    }
    chunks = run_job(worker, job)
    expected = sse_chunks(post(server, {**job, "stream": True}).text)
    assert without_ids(chunks[0]) == without_ids(expected[0])  # the role chunk first
    assert chunks[1]["choices"][0]["delta"] == {"content": "Sure"}
    assert content(chunks) == content(expected)
    assert [without_ids(c) for c in chunks[-2:]] == [without_ids(c) for c in expected[-2:]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1


@pytest.mark.parametrize("field", ["message", "prompt"])
def test_plain_forms_are_one_user_message(fake: FakeOllama, field: str) -> None:
    worker = make_worker(fake.url, system_prompt="Be brief.")
    marker = f"plain-{uuid.uuid4().hex[:8]}"
    job: dict[str, Any] = {field: f"Hello {marker}", "max_tokens": 5}
    if field == "message":
        job["type"] = "chat"
    chunks = run_job(worker, job)
    assert content(chunks) == "Sure, here is a"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    sent = chat_record(fake, marker)["body"]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"Hello {marker}"},
    ]
    assert sent["options"]["num_predict"] == 5


def test_tool_calls(worker: serverless.Worker) -> None:
    chunks = run_job(
        worker, {"messages": [{"role": "user", "content": "Book [[tool:chunk]]"}], "tools": TOOLS}
    )
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(calls) == 1
    assert calls[0][0]["function"]["name"] == "book_appointment"
    assert calls[0][0]["id"].startswith("call_")
    assert json.loads(calls[0][0]["function"]["arguments"]) == {"day": "example"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    items = run_job(worker, openai_job("Book [[tool:final]]", tools=TOOLS))
    sse = sse_chunks("".join(items))
    assert any("tool_calls" in c["choices"][0]["delta"] for c in sse)
    assert sse[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_module_handler_reads_its_configuration_from_the_environment(
    fake: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert inspect.isasyncgenfunction(serverless.handler)  # a sync generator would serialise jobs
    monkeypatch.setenv("OLLAMA_HOST", fake.url)
    monkeypatch.setenv("MODEL", MODEL)
    monkeypatch.setenv("MAX_CONCURRENCY", "3")
    monkeypatch.setattr(serverless, "_worker", None)

    async def run() -> list[Any]:
        job = {"id": "job-env", "input": {"prompt": "Hi [[tokens:2]]"}}
        async with aclosing(serverless.handler(job)) as items:
            return [item async for item in items]

    assert content(asyncio.run(run())) == "Sure,"
    assert serverless.current_worker().concurrency(1) == 3


def test_event_loops_and_workers_come_and_go(fake: FakeOllama) -> None:
    worker = make_worker(fake.url)
    for _ in range(2):  # each loop gets its own engine, closed when asyncio.run ends
        assert content(run_job(worker, {"prompt": "Hi [[tokens:2]]"})) == "Sure,"

    async def run() -> list[Any]:
        dropped = make_worker(fake.url)
        await collect(dropped, {"prompt": "Hi [[tokens:2]]"})
        del dropped
        gc.collect()  # its engine stays open until the loop ends, then closes cleanly
        return await collect(make_worker(fake.url), {"prompt": "Hi [[tokens:2]]"})

    assert content(asyncio.run(run())) == "Sure,"


# Coalescing


def test_first_token_alone_then_tokens_coalesced(fake: FakeOllama) -> None:
    worker = make_worker(fake.url, stream_window=0.1)
    items = run_job(worker, openai_job("Hi [[tokens:40]] [[itl:10]]"))
    first = sse_chunks(items[0] + "data: [DONE]\n\n")
    assert content(first) == "Sure"
    assert len(items) <= 20  # 40 tokens over about 400 ms, a yield at most every 100 ms
    assert content(sse_chunks("".join(items))) == answer(worker, "Hi [[tokens:40]]")

    chunks = run_job(
        worker, {"messages": [{"role": "user", "content": "Hi [[tokens:40]] [[itl:10]]"}]}
    )
    assert chunks[1]["choices"][0]["delta"] == {"content": "Sure"}
    assert len(chunks) <= 22  # role and finish chunks beside at most 20 batches
    assert content(chunks) == content(sse_chunks("".join(items)))


# Bad inputs and failures


@pytest.mark.parametrize(
    ("job_input", "message"),
    [
        ("Hello", "the job input must be a JSON object"),
        (None, "the job input must be a JSON object"),
        ([{"role": "user", "content": "Hi"}], "the job input must be a JSON object"),
        (
            {},
            'the job input is not one this worker serves: expected an OpenAI chat body {"messages"',
        ),
        ({"text": "Hi"}, "the job input is not one this worker serves"),
        ({"type": "ping"}, "input type 'ping' is not served: expected"),
        ({"type": "chat", "message": ""}, "'message' must be a non-empty string"),
        ({"prompt": 42}, "'prompt' must be a non-empty string"),
        ({"messages": "Hi"}, "'messages' is invalid"),
        ({"messages": [{"role": "robot", "content": "Hi"}]}, "'messages.0.role' is invalid"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "'messages.0.content.0.text' is invalid",
        ),
        (
            {"openai_route": "/v1/embeddings", "openai_input": {"input": "Hi"}},
            "openai_route '/v1/embeddings' is not served",
        ),
        ({"openai_route": ["/v1/models"]}, "openai_route must be a path such as"),
        (
            {"openai_route": "/v1/chat/completions"},
            "openai_input must be the chat completions request body",
        ),
        (
            {"openai_route": "/v1/chat/completions", "openai_input": "Hi"},
            "openai_input must be the chat completions request body",
        ),
        (
            {
                **openai_job("Hi"),
                "openai_input": {"messages": [{"role": "user", "content": "Hi"}], "stream": "yes"},
            },
            "'stream' is invalid",
        ),
        ({"prompt": "Hi", "temperature": "hot"}, "'temperature' is invalid"),
    ],
)
def test_bad_input_fails_the_job_and_the_worker_goes_on(
    worker: serverless.Worker, job_input: Any, message: str
) -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        return await collect(worker, job_input), await collect(worker, {"prompt": "Hi"})

    failed, served = asyncio.run(run())
    assert len(failed) == 1
    assert message in failed[0]["error"]
    assert content(served) == "Sure, here is a short simulated reply from the fake model"


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ("[[status:500]]", "Ollama answered 500: "),
        ("[[status:503]]", "Ollama is busy: "),
        ("[[status:400]]", "Ollama rejected the request: "),
        ("[[error-after:0]]", "Ollama answered 500: an error was encountered while running"),
        ("[[drop-after:0]]", "Ollama closed the connection mid-response"),
    ],
)
def test_failure_before_the_first_token_fails_the_job(
    worker: serverless.Worker, directive: str, message: str
) -> None:
    items = run_job(worker, openai_job(f"Hi {directive}"))
    assert len(items) == 1
    assert items[0]["error"].startswith(message)

    chunks = run_job(worker, {"messages": [{"role": "user", "content": f"Hi {directive}"}]})
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1:] == [items[0]]

    completion = run_job(worker, openai_job(f"Hi {directive}", stream=False))
    assert completion == items


def test_no_first_token_in_time_fails_the_job(fake: FakeOllama) -> None:
    worker = make_worker(fake.url, first_token_timeout=0.3)
    items = run_job(worker, openai_job("Hi [[ttft:3000]]"))
    assert items == [{"error": "no first token from Ollama in time"}]


def test_failure_mid_stream_ends_the_answer_cleanly(worker: serverless.Worker) -> None:
    items = run_job(worker, openai_job("Hi [[error-after:3]]"))
    chunks = sse_chunks("".join(items))
    assert content(chunks) == "Sure, here"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }

    chunks = run_job(worker, {"messages": [{"role": "user", "content": "Hi [[drop-after:3]]"}]})
    assert not any("error" in c for c in chunks)
    assert content(chunks) == "Sure, here"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_ollama_unreachable_fails_jobs_at_once() -> None:
    url = dead_url()
    worker = make_worker(url, queue_timeout=30)
    started = time.monotonic()
    for job in (openai_job("Hi"), openai_job("Hi", stream=False)):
        assert run_job(worker, job) == [{"error": f"Ollama is not reachable at {url}"}]
    assert time.monotonic() - started < 10  # not the 30 s a loading model would get


def test_a_loading_model_is_waited_for_up_to_the_queue_timeout() -> None:
    slow = start_fake("--model", MODEL, "--load-ms", "1500", "--ttft", "5", "--itl", "2")
    try:
        worker = make_worker(slow.url, queue_timeout=0.2)

        async def run() -> tuple[list[Any], list[Any]]:
            early = await collect(worker, openai_job("Hi"))
            await asyncio.sleep(2)  # the engine finishes loading the model meanwhile
            return early, await collect(worker, openai_job("Hi [[tokens:3]]"))

        early, later = asyncio.run(run())
        assert early == [{"error": f"model {MODEL} is still loading"}]
        assert content(sse_chunks("".join(later))) == "Sure, here"
    finally:
        slow.stop()


def test_cancelled_job_closes_its_ollama_request(
    worker: serverless.Worker, fake: FakeOllama
) -> None:
    marker = f"cancel-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[dict[str, Any], float]:
        items: list[Any] = []
        three = asyncio.Event()

        async def consume() -> None:
            async for item in worker.handle(
                {"id": "job-c", "input": openai_job(f"{marker} [[tokens:500]] [[itl:20]]")}
            ):
                items.append(item)
                if len(items) == 3:
                    three.set()

        task = asyncio.create_task(consume())
        await three.wait()
        task.cancel()
        cancelled_at = time.time()
        with pytest.raises(asyncio.CancelledError):
            await task  # the generator re-raised the cancellation
        return await asyncio.to_thread(wait_closed, fake, marker), cancelled_at

    record, cancelled_at = asyncio.run(run())
    assert record["outcome"] == "client_closed"
    assert record["client_closed_at"] - cancelled_at < 1.0
    assert record["tokens_sent"] < 100


def test_job_cancelled_between_items_closes_its_ollama_request(
    worker: serverless.Worker, fake: FakeOllama
) -> None:
    marker = f"between-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[dict[str, Any], float]:
        three = asyncio.Event()

        async def consume() -> None:
            count = 0
            job = {"id": "job-b", "input": {"prompt": f"{marker} [[tokens:500]] [[itl:20]]"}}
            items = worker.handle(job)  # a local of the job's task, as in the SDK
            async for _ in items:
                count += 1
                if count == 3:
                    three.set()
                    await asyncio.sleep(30)  # the SDK posting the item: cancelled here

        task = asyncio.create_task(consume())
        await three.wait()
        task.cancel()
        cancelled_at = time.time()
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await task
        # The cancellation's traceback keeps the task's frame, and the suspended generator.
        record = await asyncio.to_thread(wait_closed, fake, marker)
        assert cancelled.traceback
        return record, cancelled_at

    record, cancelled_at = asyncio.run(run())
    assert record["outcome"] == "client_closed"
    assert record["client_closed_at"] - cancelled_at < 1.0


# The RunPod SDK's job loop, with python handler.py as a process


def worker_env(**settings: str) -> dict[str, str]:
    """The environment of a handler.py process: no inherited RunPod settings, a bare HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNPOD_") and k not in ("API_KEY", "MODEL")
    }
    env.update(
        MODEL=MODEL,
        # The SDK's start-up checks probe the GPU and connect to 8.8.8.8: not in tests.
        RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true",
        RUNPOD_SKIP_GPU_CHECK="true",
        HOME=tempfile.gettempdir(),
    )
    env.update(settings)
    return env


def start_worker(*args: str, **env: str) -> Process:
    log = tempfile.NamedTemporaryFile(prefix="handler-", suffix=".log")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "handler.py", *args],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=worker_env(**env),
    )
    return Process(proc, "", 0, log)


@pytest.fixture(scope="module")
def jobs(fake: FakeOllama) -> Iterator[JobServer]:
    """A job server with ``python handler.py`` (3 concurrent jobs) taking its jobs."""
    server = JobServer()
    worker = start_worker(OLLAMA_HOST=fake.url, MAX_CONCURRENCY="3", **server.env())
    try:
        server.wait_polled()
        yield server
    finally:
        worker.stop()
        server.close()
    assert worker.proc.returncode == 0, worker.output().decode()


def test_sdk_streams_items_and_returns_them_aggregated(
    jobs: JobServer, worker: serverless.Worker
) -> None:
    job_id = jobs.submit(openai_job("Hi [[tokens:40]] [[itl:20]]"))
    result = jobs.result(job_id)
    streamed = jobs.streamed(job_id)
    assert result.body == {"output": [posted.body["output"] for posted in streamed]}
    chunks = sse_chunks("".join(result.body["output"]))
    assert content(chunks) == answer(worker, "Hi [[tokens:40]]")
    assert len(streamed) < 40  # coalesced: fewer yields than tokens
    assert result.at - streamed[0].at > 0.3  # streamed as generated, not all at the end


def test_sdk_runs_three_jobs_at_once(jobs: JobServer, fake: FakeOllama) -> None:
    markers = [f"together-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    ids = [jobs.submit({"prompt": f"{marker} [[tokens:100]] [[itl:20]]"}) for marker in markers]
    for job_id in ids:
        assert content(jobs.result(job_id).body["output"]).startswith("Sure, here")
    records = [chat_record(fake, marker) for marker in markers]
    assert max(r["received_at"] for r in records) < min(r["finished_at"] for r in records)


def test_sdk_fails_a_bad_job_and_goes_on(jobs: JobServer) -> None:
    bad = jobs.submit({"type": "chat", "message": ["Hi"]})
    assert jobs.result(bad).body == {"error": "'message' must be a non-empty string"}
    down = jobs.submit(openai_job("Hi [[status:500]]"))
    assert jobs.result(down).body["error"].startswith("Ollama answered 500: ")
    good = jobs.submit({"openai_route": "/v1/models"})
    assert jobs.result(good).body["output"][0]["data"][0]["id"] == MODEL


def test_sdk_stop_cancels_the_job_and_closes_its_ollama_request(
    jobs: JobServer, fake: FakeOllama
) -> None:
    marker = f"stop-{uuid.uuid4().hex[:8]}"
    job_id = jobs.submit({"prompt": f"{marker} [[tokens:1000]] [[itl:20]]"})
    jobs.streamed(job_id, count=3)
    jobs.stop(job_id)
    stopped_at = time.time()
    record = wait_closed(fake, marker)
    assert record["outcome"] == "client_closed"
    assert record["client_closed_at"] - stopped_at < 5  # the SDK polls for stops every second
    after = jobs.submit({"prompt": "Hi [[tokens:2]]"})
    assert content(jobs.result(after).body["output"]) == "Sure,"
    assert not jobs.has_result(job_id)  # a stopped job posts no result


def test_worker_starts_without_ollama_and_fails_jobs_clearly() -> None:
    url = dead_url()
    server = JobServer()
    worker = start_worker(OLLAMA_HOST=url, WARM_TIMEOUT="0.5", **server.env())
    try:
        server.wait_polled()
        for job in (openai_job("Hi"), {"prompt": "Hi"}):
            result = jobs_result(server, job)
            assert result["error"] == f"Ollama is not reachable at {url}"
        assert worker.proc.poll() is None
        log = worker.output().decode()
        assert f"Ollama is not reachable at {url} after 0.5 s: serving anyway" in log
    finally:
        worker.stop()
        server.close()


def jobs_result(server: JobServer, job_input: Any) -> dict[str, Any]:
    body: dict[str, Any] = server.result(server.submit(job_input)).body
    return body


def test_rp_serve_api_answers_runsync(fake: FakeOllama) -> None:
    port = free_port()
    worker = start_worker("--rp_serve_api", "--rp_api_port", str(port), OLLAMA_HOST=fake.url)
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=10) as http:
            while True:
                try:
                    response = http.post(
                        f"http://127.0.0.1:{port}/runsync",
                        json={"input": {"type": "chat", "message": "Hi [[tokens:3]]"}},
                    )
                    break
                except httpx.TransportError:
                    assert worker.proc.poll() is None, worker.output().decode()
                    assert time.monotonic() < deadline, worker.output().decode()
                    time.sleep(0.1)
        answer = response.json()
        assert answer["status"] == "COMPLETED"
        assert content(answer["output"]) == "Sure, here"
        assert answer["output"][-1]["choices"][0]["finish_reason"] == "stop"
    finally:
        worker.stop()


# Start-up


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"WARM_TIMEOUT": "soon"},
            "handler.py: error: WARM_TIMEOUT='soon' is not a number",
        ),
        ({"MAX_CONCURRENCY": "0"}, "handler.py: error: max-concurrency 0 must be above zero"),
    ],
)
def test_bad_settings_stop_the_worker_with_one_line(env: dict[str, str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "handler.py"],
        cwd=ROOT,
        env=worker_env(**env),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip() == message


def test_runpod_stays_out_of_the_servers_import_path() -> None:
    code = (
        "import sys, server.__main__, server.doors.http, handler; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'runpod'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True, timeout=30
    )
    assert done.stdout.decode().strip() == "[]"
