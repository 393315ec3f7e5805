"""The RunPod worker's ``vapi_webhook`` job: VAPI's server messages, answered as the webhook does.

Direct calls drive :meth:`serverless.Worker.handle`; the SDK test runs ``python handler.py``
with its real job loop pointed at :class:`tests.runpod_jobs.JobServer`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from server.config import Config, ConfigError
from server.doors import serverless

from .conftest import MODEL, ROOT, FakeOllama, Process
from .runpod_jobs import JobServer
from .vapi_bodies import (
    ASSISTANT_REQUEST,
    ASSISTANT_SPEC,
    CAMPAIGN_PREDIAL,
    ENDPOINTING_REQUEST,
    FRONT_DESK,
    INFORMATIONAL,
    PUBLIC_URL,
    SCHEDULER,
    TRANSFER_REQUEST,
    envelope,
    function_call,
    function_call_message,
    handoff_request,
    tool_calls,
)

# Nothing listens here: a webhook job never needs Ollama.
NO_OLLAMA = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def assistant_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vapi") / "assistant.json"
    path.write_text(json.dumps(ASSISTANT_SPEC))
    return path


@pytest.fixture
def worker(assistant_file: Path) -> serverless.Worker:
    config = Config(
        ollama_url=NO_OLLAMA,
        model=MODEL,
        public_url=PUBLIC_URL,
        assistant_file=str(assistant_file),
        tools_module="tests.test_vapi_tools",
        vapi_endpointing_timeout=1.2,
    )
    return serverless.Worker(config)


def run_job(worker: serverless.Worker, job_input: Any) -> list[Any]:
    """Run one job to its end in a fresh event loop, as a new SDK loop would."""

    async def collect() -> list[Any]:
        async with aclosing(worker.handle({"id": "job-1", "input": job_input})) as items:
            return [item async for item in items]

    return asyncio.run(collect())


def webhook_job(body: object) -> dict[str, Any]:
    return {"type": "vapi_webhook", "webhook_data": body}


def test_tool_calls_are_run_by_the_tools_module(worker: serverless.Worker) -> None:
    body = tool_calls(
        function_call("t1", "book_cleaning", {"day": "Tuesday"}),
        function_call("t2", "opening_hours", {}),
        function_call("t3", "no_such_tool", {}),
    )
    assert run_job(worker, webhook_job(body)) == [
        {
            "webhook_response": {
                "results": [
                    {
                        "name": "book_cleaning",
                        "toolCallId": "t1",
                        "result": '{"booked":true,"day":"Tuesday"}',
                    },
                    {
                        "name": "opening_hours",
                        "toolCallId": "t2",
                        "result": "Monday: 8 to 6 Tuesday: 8 to 6 Saturday: closed",
                    },
                    {
                        "name": "no_such_tool",
                        "toolCallId": "t3",
                        "error": "there is no tool named 'no_such_tool'",
                    },
                ]
            }
        }
    ]


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (TRANSFER_REQUEST, {"destination": FRONT_DESK}),
        (handoff_request("scheduler"), {"destination": SCHEDULER}),
        (ENDPOINTING_REQUEST, {"timeoutSeconds": 1.2}),
        (CAMPAIGN_PREDIAL, {"eligible": True}),
        (
            function_call_message("book_cleaning", {"day": "Friday"}),
            {"result": '{"booked":true,"day":"Friday"}'},
        ),
        (INFORMATIONAL["end-of-call-report"], {}),
        (INFORMATIONAL["status-update"], {}),
        (envelope("call.teleported"), {}),
    ],
    ids=[
        "transfer",
        "handoff",
        "endpointing",
        "predial",
        "function-call",
        "end-of-call-report",
        "status-update",
        "unknown",
    ],
)
def test_each_message_gets_what_vapi_expects(
    worker: serverless.Worker, body: dict[str, Any], answer: dict[str, Any]
) -> None:
    assert run_job(worker, webhook_job(body)) == [{"webhook_response": answer}]


def test_the_assistant_and_the_body_as_json_text(worker: serverless.Worker) -> None:
    [item] = run_job(worker, webhook_job(json.dumps(ASSISTANT_REQUEST)))
    assistant = item["webhook_response"]["assistant"]
    assert assistant["model"]["url"] == f"{PUBLIC_URL}/v1"
    assert assistant["name"] == ASSISTANT_SPEC["name"]
    assert [tool["function"]["name"] for tool in assistant["model"]["tools"]][:2] == [
        "book_cleaning",
        "open_office",
    ]


def test_an_answer_with_an_error_key_does_not_fail_the_job() -> None:
    """VAPI's own 'no destination' answer is {"error": ...}: wrapped, the job completes."""
    bare = serverless.Worker(Config(ollama_url=NO_OLLAMA, model=MODEL))
    assert run_job(bare, webhook_job(TRANSFER_REQUEST)) == [
        {"webhook_response": {"error": "no transfer destination is configured"}}
    ]
    assert bare.webhooks.counts == {"transfer-destination-request": 1}


@pytest.mark.parametrize(
    ("job_input", "error"),
    [
        (
            {"type": "vapi_webhook"},
            'webhook_data must be the body VAPI posts, {"message": {"type": ...}}',
        ),
        (
            webhook_job(["hang"]),
            'webhook_data must be the body VAPI posts, {"message": {"type": ...}}',
        ),
        (
            webhook_job("{not json"),
            'webhook_data must be the body VAPI posts, {"message": {"type": ...}}',
        ),
        (
            webhook_job({"type": "hang"}),
            'the body must be a JSON object {"message": {"type": ...}}',
        ),
        (webhook_job({"message": {"type": 7}}), "'message.type' must be a string"),
        (
            webhook_job({"message": {"type": "tool-calls", "toolCallList": [{"id": "c1"}]}}),
            "'message.toolCallList.0.function.name' is required",
        ),
        (
            webhook_job(ASSISTANT_REQUEST),
            "this server has no PUBLIC_URL, so it cannot point an assistant at itself",
        ),
    ],
)
def test_bad_webhook_jobs_fail_with_the_field_named(job_input: dict[str, Any], error: str) -> None:
    bare = serverless.Worker(Config(ollama_url=NO_OLLAMA, model=MODEL))
    assert run_job(bare, job_input) == [{"error": error}]


def test_a_bad_assistant_file_stops_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "assistant.json"
    path.write_text(json.dumps({"temperature": 5}))
    with pytest.raises(ConfigError, match="temperature: Input should be less than or equal to 2"):
        serverless.Worker(Config(assistant_file=str(path)))
    done = subprocess.run(
        [sys.executable, "handler.py"],
        cwd=ROOT,
        env={**handler_env(), "ASSISTANT_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"handler.py: error: assistant file '{path}': temperature: ")


# The RunPod SDK's job loop, with python handler.py as a process


def handler_env(**settings: str) -> dict[str, str]:
    """A handler.py environment: no inherited RunPod or server settings, a bare HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RUNPOD_", "VAPI_")) and k not in ("API_KEY", "MODEL", "PUBLIC_URL")
    }
    env.update(
        MODEL=MODEL,
        # The SDK's start-up checks probe the GPU and connect to 8.8.8.8: not in tests.
        RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true",
        RUNPOD_SKIP_GPU_CHECK="true",
        HOME=tempfile.gettempdir(),
        WARM_TIMEOUT="20",
    )
    env.update(settings)
    return env


@pytest.fixture(scope="module")
def jobs(fake: FakeOllama, assistant_file: Path) -> Iterator[JobServer]:
    server = JobServer()
    log = tempfile.NamedTemporaryFile(prefix="handler-", suffix=".log")  # noqa: SIM115
    env = handler_env(
        OLLAMA_HOST=fake.url,
        MAX_CONCURRENCY="2",
        ASSISTANT_FILE=str(assistant_file),
        TOOLS_MODULE="tests.test_vapi_tools",
        PUBLIC_URL=PUBLIC_URL,
        **server.env(),
    )
    proc = subprocess.Popen(
        [sys.executable, "handler.py"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
    )
    worker = Process(proc, "", 0, log)
    try:
        server.wait_polled()
        yield server
    finally:
        worker.stop()
        server.close()
    assert worker.proc.returncode == 0, worker.output().decode()


def test_sdk_answers_webhook_jobs(jobs: JobServer) -> None:
    tools_job = jobs.submit(
        webhook_job(tool_calls(function_call("t1", "book_cleaning", {"day": "Monday"})))
    )
    transfer_job = jobs.submit(webhook_job(TRANSFER_REQUEST))
    bad_job = jobs.submit(webhook_job({"message": {"type": 7}}))
    assert jobs.result(tools_job).body == {
        "output": [
            {
                "webhook_response": {
                    "results": [
                        {
                            "name": "book_cleaning",
                            "toolCallId": "t1",
                            "result": '{"booked":true,"day":"Monday"}',
                        }
                    ]
                }
            }
        ]
    }
    assert jobs.result(transfer_job).body == {
        "output": [{"webhook_response": {"destination": FRONT_DESK}}]
    }
    assert jobs.result(bad_job).body == {"error": "'message.type' must be a string"}
