"""VAPI's server URL (``POST /vapi/webhook``) and ``python -m server vapi-assistant``.

Webhook bodies follow the shapes VAPI documents for each message type. The endpoint
is driven through the real server process; the tool registry, which the server has
no setting to load yet, through the endpoint object itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.config import Config, ConfigError
from server.doors.asgi import Message
from server.doors.vapi import VapiWebhook
from server.tools import ToolError, ToolRegistry, load_tools

from .conftest import MODEL, ROOT, FakeOllama, Process, start_server

SECRET = "vapi-secret-5e1f0a"  # noqa: S105 - a test secret
HMAC_SECRET = "hmac-secret-77c2d9"  # noqa: S105 - a test secret
PUBLIC_URL = "https://voice.example.com"

ASSISTANT_SPEC: dict[str, Any] = {
    "name": "Front desk",
    "firstMessage": "Hello, thanks for calling Riverside Dental.",
    "systemPrompt": "You are the receptionist of Riverside Dental. Be brief.",
    "temperature": 0.4,
    "maxTokens": 200,
    "voice": {"provider": "vapi", "voiceId": "Elliot"},
    "transcriber": {"provider": "deepgram", "model": "nova-3", "language": "en"},
    "extra": {"silenceTimeoutSeconds": 30},
}

# Recorded-shape bodies: what VAPI posts, trimmed of the objects no test reads.

CALL: dict[str, Any] = {
    "id": "b7e6a1d2-3c4f-4e5a-9b8c-0d1e2f3a4b5c",
    "orgId": "0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f",
    "type": "inboundPhoneCall",
    "status": "in-progress",
    "phoneCallProvider": "twilio",
    "phoneCallProviderId": "CA0123456789abcdef0123456789abcdef",
    "phoneNumberId": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
    "customer": {"number": "+15551230001"},
    "createdAt": "2025-06-02T15:04:05.123Z",
    "updatedAt": "2025-06-02T15:04:06.456Z",
    "monitor": {
        "controlUrl": "https://phone-call-websocket.aws-us-west-2-backend-production2.vapi.ai/x/control"
    },
}
PHONE_NUMBER = {
    "id": CALL["phoneNumberId"],
    "number": "+15557650002",
    "provider": "twilio",
    "twilioAccountSid": "AC0123456789abcdef0123456789abcdef",
    "twilioAuthToken": "twilio-auth-token-9f8e",
}
CUSTOMER = {"number": "+15551230001"}
TIMESTAMP = 1748876645123


def envelope(kind: str, **fields: Any) -> dict[str, Any]:
    """A webhook body: ``{"message": {...}}`` with the metadata VAPI puts on most types."""
    message = {
        "timestamp": TIMESTAMP,
        "type": kind,
        "call": CALL,
        "phoneNumber": PHONE_NUMBER,
        "customer": CUSTOMER,
        **fields,
    }
    return {"message": message}


ASSISTANT_REQUEST = envelope("assistant-request")

END_OF_CALL_REPORT = envelope(
    "end-of-call-report",
    call={**CALL, "id": "eocr-call-0c1d2e3f", "status": "ended"},
    endedReason="customer-ended-call",
    cost=0.0871,
    costs=[{"type": "transport", "provider": "twilio", "minutes": 1.2, "cost": 0.0102}],
    startedAt="2025-06-02T15:04:05.000Z",
    endedAt="2025-06-02T15:05:17.500Z",
    artifact={
        "transcript": "AI: Hello, thanks for calling.\nUser: I need to move my cleaning.\n",
        "messages": [
            {"role": "bot", "message": "Hello, thanks for calling.", "time": 1748876645000},
            {"role": "user", "message": "I need to move my cleaning.", "time": 1748876650000},
        ],
        "recordingUrl": "https://storage.vapi.ai/recording-eocr-0c1d.wav",
        "stereoRecordingUrl": "https://storage.vapi.ai/recording-eocr-0c1d-stereo.wav",
    },
    analysis={"summary": "The caller asked to reschedule a cleaning.", "successEvaluation": "true"},
)

INFORMATIONAL = {
    "status-update": envelope("status-update", status="in-progress"),
    "end-of-call-report": END_OF_CALL_REPORT,
    "hang": envelope("hang"),
    "conversation-update": envelope(
        "conversation-update",
        messages=[
            {"role": "system", "message": "You are the receptionist.", "time": 1748876645000},
            {"role": "bot", "message": "Hello, thanks for calling.", "time": 1748876645100},
        ],
        messagesOpenAIFormatted=[
            {"role": "system", "content": "You are the receptionist."},
            {"role": "assistant", "content": "Hello, thanks for calling."},
        ],
    ),
    "speech-update": envelope("speech-update", status="started", role="assistant", turn=2),
    "transcript": envelope(
        "transcript", role="user", transcriptType="partial", transcript="I need to move"
    ),
    'transcript[transcriptType="final"]': envelope(
        'transcript[transcriptType="final"]',
        role="user",
        transcriptType="final",
        transcript="I need to move my cleaning.",
    ),
    "user-interrupted": envelope("user-interrupted"),
    "model-output": envelope("model-output", output="Sure"),
    "transfer-update": envelope(
        "transfer-update", destination={"type": "number", "number": "+15550001111"}
    ),
    "language-change-detected": envelope("language-change-detected", language="es"),
}


def tool_calls(*calls: dict[str, Any]) -> dict[str, Any]:
    """A ``tool-calls`` body carrying ``calls`` in ``toolCallList`` (and VAPI's twin list)."""
    return envelope(
        "tool-calls",
        toolCallList=list(calls),
        toolWithToolCallList=[
            {
                "type": "function",
                "function": {"name": c.get("function", {}).get("name", c.get("name"))},
                "toolCall": c,
            }
            for c in calls
        ],
        artifact={"messages": []},
    )


def function_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """A tool call as VAPI sends it: OpenAI's shape with the arguments as an object."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# Helpers


def sign(body: bytes, timestamp: str, secret: str = HMAC_SECRET) -> str:
    """The hex HMAC-SHA256 of ``{timestamp}.{body}``, as VAPI's HMAC credential sends it."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def post(
    server: Process, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST a webhook body (JSON-encoded unless bytes) with the shared secret by default."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"x-vapi-secret": SECRET} if headers is None else headers
    return httpx.post(
        f"{server.url}/vapi/webhook",
        content=content,
        headers={"content-type": "application/json", **sent},
        timeout=10,
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an OpenAI error object with this status and code."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def assert_serving(server: Process) -> None:
    """The webhook still answers a good request."""
    response = post(server, INFORMATIONAL["hang"])
    assert response.status_code == 200
    assert response.json() == {}


def report_lines(output: bytes) -> list[dict[str, Any]]:
    """The end-of-call report lines in a server's log."""
    lines = []
    for line in output.decode().splitlines():
        if '"msg":"end-of-call-report"' in line:
            lines.append(json.loads(line))
    return lines


@pytest.fixture(scope="module")
def assistant_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vapi") / "assistant.json"
    path.write_text(json.dumps(ASSISTANT_SPEC))
    return path


@pytest.fixture(scope="module")
def vapi_server(fake: FakeOllama, assistant_file: Path) -> Iterator[Process]:
    """A server with both webhook secrets, a public URL and an assistant file."""
    process = start_server(
        fake.url,
        "--vapi-secret", SECRET,
        "--public-url", PUBLIC_URL,
        "--assistant-file", str(assistant_file),
        "--max-body-bytes", "65536",
        VAPI_HMAC_SECRET=HMAC_SECRET,
    )  # fmt: skip
    yield process
    process.stop()


# Message types


def test_assistant_request_gets_a_custom_llm_assistant_pointing_here(vapi_server: Process) -> None:
    response = post(vapi_server, ASSISTANT_REQUEST)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "assistant": {
            "name": "Front desk",
            "firstMessage": "Hello, thanks for calling Riverside Dental.",
            "model": {
                "provider": "custom-llm",
                "url": f"{PUBLIC_URL}/v1",
                "model": MODEL,
                "metadataSendMode": "off",
                "temperature": 0.4,
                "maxTokens": 200,
                "messages": [
                    {
                        "role": "system",
                        "content": "You are the receptionist of Riverside Dental. Be brief.",
                    }
                ],
            },
            "voice": {"provider": "vapi", "voiceId": "Elliot"},
            "transcriber": {"provider": "deepgram", "model": "nova-3", "language": "en"},
            "serverMessages": ["tool-calls", "status-update", "end-of-call-report", "hang"],
            "silenceTimeoutSeconds": 30,
        }
    }


@pytest.mark.parametrize("kind", sorted(INFORMATIONAL))
def test_informational_messages_are_acknowledged(vapi_server: Process, kind: str) -> None:
    response = post(vapi_server, INFORMATIONAL[kind])
    assert response.status_code == 200
    assert response.json() == {}


def test_end_of_call_report_is_one_json_line_without_content(vapi_server: Process) -> None:
    assert post(vapi_server, END_OF_CALL_REPORT).status_code == 200
    deadline = time.monotonic() + 5
    while not (lines := report_lines(vapi_server.output())) and time.monotonic() < deadline:
        time.sleep(0.02)
    line = lines[-1]
    assert isinstance(line.pop("ts"), str)
    assert line == {
        "level": "info",
        "logger": "server.turn.vapi",
        "msg": "end-of-call-report",
        "call_id": "eocr-call-0c1d2e3f",
        "ended_reason": "customer-ended-call",
        "duration_s": 72.5,
        "cost": 0.0871,
    }
    logs = vapi_server.output()
    for content in (b"move my cleaning", b"+15551230001", b"storage.vapi.ai", b"reschedule"):
        assert content not in logs


def test_tool_calls_for_unknown_tools_get_error_results(vapi_server: Process) -> None:
    body = tool_calls(
        function_call("call_a1", "book_cleaning", {"day": "Tuesday"}),
        {"id": "call_b2", "name": "cancel_visit", "arguments": {"visit": "v-7"}},
        {"id": "call_c3", "name": "find_slot", "parameters": {}},
        function_call("call_d4", "book_cleaning", "{not json"),
    )
    response = post(vapi_server, body)
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {
                "name": "book_cleaning",
                "toolCallId": "call_a1",
                "error": "there is no tool named 'book_cleaning'",
            },
            {
                "name": "cancel_visit",
                "toolCallId": "call_b2",
                "error": "there is no tool named 'cancel_visit'",
            },
            {
                "name": "find_slot",
                "toolCallId": "call_c3",
                "error": "there is no tool named 'find_slot'",
            },
            {
                "name": "book_cleaning",
                "toolCallId": "call_d4",
                "error": "the arguments are not valid JSON",
            },
        ]
    }


def test_end_of_call_report_content_and_assistant_request_without_public_url(
    fake: FakeOllama,
) -> None:
    process = start_server(fake.url, "--vapi-secret", SECRET, "--log-content")
    try:
        assert post(process, END_OF_CALL_REPORT).status_code == 200
        response = post(process, ASSISTANT_REQUEST)
        assert_error(response, 503, "assistant_not_configured")
        assert "PUBLIC_URL" in response.json()["error"]["message"]
        assert_serving(process)
    finally:
        process.stop()
    logs = process.output()
    assert b"no PUBLIC_URL, so assistant-request messages get 503" in logs
    [line] = report_lines(logs)
    assert line["call_id"] == "eocr-call-0c1d2e3f"
    assert line["customer_number"] == "+15551230001"
    assert line["transcript"].startswith("AI: Hello, thanks for calling.")
    assert line["summary"] == "The caller asked to reschedule a cleaning."
    assert line["recording_url"] == "https://storage.vapi.ai/recording-eocr-0c1d.wav"


# Authentication

BODY = json.dumps(INFORMATIONAL["status-update"]).encode()


def now_seconds() -> str:
    return str(int(time.time()))


def now_millis() -> str:
    return str(int(time.time() * 1000))


def signed(body: bytes, timestamp: str, secret: str = HMAC_SECRET) -> dict[str, str]:
    return {"x-signature": sign(body, timestamp, secret), "x-timestamp": timestamp}


Credentials = Callable[[bytes], dict[str, str]]

GOOD_CREDENTIALS: dict[str, Credentials] = {
    "x-vapi-secret": lambda body: {"x-vapi-secret": SECRET},
    "bearer": lambda body: {"authorization": f"Bearer {SECRET}"},
    "bare authorization": lambda body: {"authorization": SECRET},
    "hmac hex, seconds": lambda body: signed(body, now_seconds()),
    "hmac sha256= prefix, milliseconds, x-vapi- headers": lambda body: {
        "x-vapi-signature": "sha256=" + sign(body, ts := now_millis()),
        "x-vapi-timestamp": ts,
    },
    "hmac base64": lambda body: {
        "x-signature": base64.b64encode(bytes.fromhex(sign(body, ts := now_seconds()))).decode(),
        "x-timestamp": ts,
    },
    "hmac upper-case hex": lambda body: {
        "x-signature": sign(body, ts := now_seconds()).upper(),
        "x-timestamp": ts,
    },
}


@pytest.mark.parametrize("scheme", sorted(GOOD_CREDENTIALS))
def test_each_scheme_with_the_right_secret_is_accepted(vapi_server: Process, scheme: str) -> None:
    response = post(vapi_server, BODY, GOOD_CREDENTIALS[scheme](BODY))
    assert response.status_code == 200, response.text
    assert response.json() == {}


BAD_CREDENTIALS: dict[str, tuple[Credentials, str]] = {
    "nothing": (lambda body: {}, "missing_webhook_secret"),
    "wrong x-vapi-secret": (lambda body: {"x-vapi-secret": "guess"}, "invalid_webhook_secret"),
    "wrong bearer": (lambda body: {"authorization": "Bearer guess"}, "invalid_webhook_secret"),
    "the hmac secret as the shared secret": (
        lambda body: {"authorization": f"Bearer {HMAC_SECRET}"},
        "invalid_webhook_secret",
    ),
    "hmac with another secret": (
        lambda body: signed(body, now_seconds(), "another-secret"),
        "invalid_webhook_signature",
    ),
    "hmac of another body": (
        lambda body: signed(body + b" ", now_seconds()),
        "invalid_webhook_signature",
    ),
    "hmac of another timestamp": (
        lambda body: {"x-signature": sign(body, now_seconds()), "x-timestamp": "1748876645"},
        "invalid_webhook_signature",
    ),
    "hmac without a timestamp": (
        lambda body: {"x-signature": sign(body, now_seconds())},
        "invalid_webhook_signature",
    ),
    "hmac with a timestamp that is not a number": (
        lambda body: signed(body, "yesterday"),
        "invalid_webhook_signature",
    ),
    "hmac an hour old": (
        lambda body: signed(body, str(int(time.time()) - 3600)),
        "stale_webhook_signature",
    ),
    "hmac an hour ahead, in milliseconds": (
        lambda body: signed(body, str(int(time.time() * 1000) + 3_600_000)),
        "stale_webhook_signature",
    ),
}


@pytest.mark.parametrize(("index", "case"), list(enumerate(sorted(BAD_CREDENTIALS))))
def test_bad_credentials_get_401_and_change_nothing(
    vapi_server: Process, index: int, case: str
) -> None:
    headers, code = BAD_CREDENTIALS[case]
    marker = f"+1555010{index:04d}"
    body = json.dumps(envelope("end-of-call-report", customer={"number": marker})).encode()
    response = post(vapi_server, body, headers(body))
    error = assert_error(response, 401, code)
    assert error["type"] == "authentication_error"
    assert marker.encode() not in vapi_server.output()
    assert_serving(vapi_server)


def test_webhook_without_a_secret_is_disabled(server: Process) -> None:
    for headers in ({}, {"x-vapi-secret": SECRET}, {"authorization": f"Bearer {SECRET}"}):
        response = post(server, ASSISTANT_REQUEST, headers)
        assert_error(response, 401, "webhook_disabled")
    assert b"VAPI webhook /vapi/webhook is disabled" in server.output()


def test_hmac_secret_alone_takes_no_shared_secret(fake: FakeOllama) -> None:
    process = start_server(fake.url, wait_warm=False, VAPI_HMAC_SECRET=HMAC_SECRET)
    try:
        response = post(process, BODY, {"x-vapi-secret": HMAC_SECRET})
        assert_error(response, 401, "missing_webhook_secret")
        assert post(process, BODY, signed(BODY, now_seconds())).status_code == 200
    finally:
        process.stop()


# Bad requests

BAD_MESSAGES = [
    (b"{not json", "invalid_json", None),
    (b"[1, 2]", "invalid_request", "message"),
    (b"{}", "invalid_request", "message"),
    (b'{"message": "status-update"}', "invalid_request", "message"),
    (b'{"message": {"status": "ended"}}', "invalid_value", "message.type"),
    (b'{"message": {"type": 42}}', "invalid_value", "message.type"),
    (b'{"message": {"type": "call-teleported"}}', "unknown_message_type", "message.type"),
    (b'{"message": {"type": "tool-calls"}}', "invalid_value", "message.toolCallList"),
    (
        b'{"message": {"type": "tool-calls", "toolCallList": "book"}}',
        "invalid_value",
        "message.toolCallList",
    ),
    (
        b'{"message": {"type": "tool-calls", "toolCallList": [{"id": 7, "name": "book"}]}}',
        "invalid_value",
        "message.toolCallList.0.id",
    ),
    (
        b'{"message": {"type": "tool-calls", "toolCallList": [{"id": "c1"}]}}',
        "invalid_value",
        "message.toolCallList.0.function.name",
    ),
    (
        b'{"message": {"type": "tool-calls", "toolCallList": '
        b'[{"id": "c1", "function": {"name": "book", "arguments": 5}}]}}',
        "invalid_value",
        "message.toolCallList.0.function.arguments",
    ),
]


@pytest.mark.parametrize(("body", "code", "param"), BAD_MESSAGES)
def test_malformed_messages_get_400_naming_the_fault(
    vapi_server: Process, body: bytes, code: str, param: str | None
) -> None:
    response = post(vapi_server, body)
    error = assert_error(response, 400, code)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if param is not None and code == "invalid_value":
        assert param in error["message"]
    assert_serving(vapi_server)


def test_malformed_messages_are_checked_after_the_signature(vapi_server: Process) -> None:
    body = b"{not json"
    assert_error(post(vapi_server, body, {}), 401, "missing_webhook_secret")
    assert_error(post(vapi_server, body, signed(body, now_seconds())), 400, "invalid_json")


def test_body_over_the_limit(vapi_server: Process) -> None:
    big = json.dumps(envelope("conversation-update", messages=["x" * 70_000])).encode()
    assert_error(post(vapi_server, big), 413, "body_too_large")

    def chunked() -> Iterator[bytes]:
        yield big[:40_000]
        yield big[40_000:]

    response = httpx.post(
        f"{vapi_server.url}/vapi/webhook",
        content=chunked(),
        headers={"x-vapi-secret": SECRET},
        timeout=10,
    )
    assert_error(response, 413, "body_too_large")
    assert_serving(vapi_server)


def test_wrong_method(vapi_server: Process) -> None:
    response = httpx.get(f"{vapi_server.url}/vapi/webhook", timeout=5)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_invalid_assistant_file_stops_the_server_at_startup(
    fake: FakeOllama, tmp_path: Path
) -> None:
    path = tmp_path / "assistant.json"
    path.write_text(json.dumps({"voice": {"voiceId": "Elliot"}}))
    with pytest.raises(RuntimeError, match="the server exited") as exited:
        start_server(fake.url, "--vapi-secret", SECRET, "--assistant-file", str(path))
    assert f"assistant file '{path}': voice: " in str(exited.value)
    assert "needs a 'provider' string" in str(exited.value)


# Tools: the registry below, loaded by a server with TOOLS_MODULE and driven in process

tools = ToolRegistry()
"""The registry ``load_tools("tests.test_vapi")`` finds."""


@tools.tool(
    description="Book a cleaning on a day.",
    parameters={
        "type": "object",
        "properties": {"day": {"type": "string"}},
        "required": ["day"],
    },
)
async def book_cleaning(args: dict[str, Any]) -> dict[str, Any]:
    return {"booked": True, "day": args["day"]}


@tools.tool(description="Say which office is open.")
async def open_office(args: dict[str, Any]) -> str:
    return "The Main Street office is open until 6 pm."


@tools.tool(description="Find a visit.")
async def find_visit(args: dict[str, Any]) -> str:
    raise ToolError(f"there is no visit {args.get('visit')}")


@tools.tool(description="Always fails.")
async def broken(args: dict[str, Any]) -> str:
    raise RuntimeError("database password is hunter2")


@tools.tool(description="Never finishes in time.", timeout=0.05)
async def slow(args: dict[str, Any]) -> str:
    await asyncio.sleep(30)
    return "too late"


@tools.tool(description="Returns something JSON cannot hold.")
async def not_json(args: dict[str, Any]) -> object:
    return object()


@tools.tool(description="Times out on its own.")
async def own_timeout(args: dict[str, Any]) -> str:
    raise TimeoutError


def asgi_post(
    endpoint: VapiWebhook, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """POST to the endpoint as uvicorn would; its status and decoded JSON answer."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent_headers = {"x-vapi-secret": SECRET} if headers is None else headers
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/vapi/webhook",
        "headers": [(k.encode(), v.encode()) for k, v in sent_headers.items()],
    }
    sent: list[Message] = []
    incoming: list[Message] = [{"type": "http.request", "body": content, "more_body": False}]

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(endpoint(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return sent[0]["status"], json.loads(sent[1]["body"])


CONFIG = Config(vapi_secret=SECRET, public_url=PUBLIC_URL)


def test_registered_tools_run_and_report_results_and_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = VapiWebhook(CONFIG, tools)
    body = tool_calls(
        function_call("t1", "book_cleaning", {"day": "Tuesday"}),
        function_call("t2", "open_office", "{}"),
        {"id": "t3", "name": "find_visit", "arguments": {"visit": "v-9"}},
        function_call("t4", "broken", {}),
        function_call("t5", "slow", {}),
        function_call("t6", "not_json", {}),
        function_call("t7", "own_timeout", {}),
        function_call("t8", "book_cleaning", '["Tuesday"]'),
        function_call("t9", "no_such_tool", {}),
    )
    status, answer = asgi_post(endpoint, body)
    assert status == 200
    assert answer == {
        "results": [
            {
                "name": "book_cleaning",
                "toolCallId": "t1",
                "result": '{"booked":true,"day":"Tuesday"}',
            },
            {
                "name": "open_office",
                "toolCallId": "t2",
                "result": "The Main Street office is open until 6 pm.",
            },
            {"name": "find_visit", "toolCallId": "t3", "error": "there is no visit v-9"},
            {"name": "broken", "toolCallId": "t4", "error": "tool broken failed"},
            {"name": "slow", "toolCallId": "t5", "error": "tool slow did not finish in time"},
            {
                "name": "not_json",
                "toolCallId": "t6",
                "error": "tool not_json returned a value that is not JSON",
            },
            {"name": "own_timeout", "toolCallId": "t7", "error": "tool own_timeout failed"},
            {
                "name": "book_cleaning",
                "toolCallId": "t8",
                "error": "the arguments are not a JSON object",
            },
            {
                "name": "no_such_tool",
                "toolCallId": "t9",
                "error": "there is no tool named 'no_such_tool'",
            },
        ]
    }
    # The exception is logged for the operator; the model only hears that the tool failed.
    assert "hunter2" in caplog.text
    assert "hunter2" not in json.dumps(answer)
    assert endpoint.counts == {"tool-calls": 1}


def test_a_server_loads_its_tools_module_and_counts_webhooks(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--vapi-secret", SECRET, TOOLS_MODULE="tests.test_vapi")
    try:
        body = tool_calls(function_call("t1", "book_cleaning", {"day": "Friday"}))
        response = post(server, body)
        assert response.json() == {
            "results": [
                {
                    "name": "book_cleaning",
                    "toolCallId": "t1",
                    "result": '{"booked":true,"day":"Friday"}',
                }
            ]
        }
        with httpx.Client(timeout=5) as http:
            metrics = http.get(f"{server.url}/metrics").text
        assert 'voice_llm_webhooks_total{type="tool-calls"} 1.0' in metrics
    finally:
        server.stop()


def test_tool_calls_run_concurrently() -> None:
    registry = ToolRegistry()
    both_started = asyncio.Event()
    started = 0

    async def meet(args: dict[str, Any]) -> str:
        nonlocal started
        started += 1
        if started == 2:
            both_started.set()
        await both_started.wait()
        return "met"

    registry.add(meet, description="Waits for the other call.", name="first", timeout=5)
    registry.add(meet, description="Waits for the other call.", name="second", timeout=5)
    status, answer = asgi_post(
        VapiWebhook(CONFIG, registry),
        tool_calls(function_call("m1", "first", {}), function_call("m2", "second", {})),
    )
    assert status == 200
    assert [r.get("result") for r in answer["results"]] == ["met", "met"]


def test_registered_tools_are_declared_in_the_assistant() -> None:
    status, answer = asgi_post(VapiWebhook(CONFIG, tools), ASSISTANT_REQUEST)
    assert status == 200
    declared = answer["assistant"]["model"]["tools"]
    assert declared[0] == {
        "type": "function",
        "function": {
            "name": "book_cleaning",
            "description": "Book a cleaning on a day.",
            "parameters": {
                "type": "object",
                "properties": {"day": {"type": "string"}},
                "required": ["day"],
            },
        },
    }
    assert declared[1]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert [d["function"]["name"] for d in declared] == [
        "book_cleaning",
        "open_office",
        "find_visit",
        "broken",
        "slow",
        "not_json",
        "own_timeout",
    ]


def test_counters_by_type_and_by_rejection() -> None:
    endpoint = VapiWebhook(CONFIG)
    for kind in ("status-update", "status-update", "end-of-call-report", "hang"):
        assert asgi_post(endpoint, INFORMATIONAL[kind])[0] == 200
    assert asgi_post(endpoint, INFORMATIONAL["hang"], {"x-vapi-secret": "guess"})[0] == 401
    assert asgi_post(endpoint, INFORMATIONAL["hang"], {})[0] == 401
    assert asgi_post(endpoint, b"{not json")[0] == 400
    assert asgi_post(endpoint, {"message": {"type": "call-teleported"}})[0] == 400
    assert endpoint.counts == {"status-update": 2, "end-of-call-report": 1, "hang": 1}
    assert endpoint.rejected == {
        "invalid_webhook_secret": 1,
        "missing_webhook_secret": 1,
        "invalid_json": 1,
        "unknown_message_type": 1,
    }


def test_caller_gone_before_the_body_gets_no_answer() -> None:
    endpoint = VapiWebhook(CONFIG)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/vapi/webhook", "headers": []}
    asyncio.run(endpoint(scope, receive, send))
    assert sent == []
    assert endpoint.counts == {}


def test_registry_refuses_tools_models_cannot_call() -> None:
    registry = ToolRegistry()

    async def ok(args: dict[str, Any]) -> str:
        return ""

    def blocking(args: dict[str, Any]) -> str:
        return ""

    registry.add(ok, description="Fine.")
    with pytest.raises(ValueError, match="already registered"):
        registry.add(ok, description="Again.")
    with pytest.raises(ValueError, match="letters, digits"):
        registry.add(ok, description="Spaces.", name="look up")
    with pytest.raises(ValueError, match="must be an async function"):
        registry.add(blocking, description="Sync.")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="above zero"):
        registry.add(ok, description="No time.", name="instant", timeout=0)
    assert len(registry) == 1
    assert "ok" in registry


def test_load_tools_by_module_name() -> None:
    assert load_tools("tests.test_vapi") is tools
    with pytest.raises(ConfigError, match=re.escape("'tests.no_such_module' cannot be imported")):
        load_tools("tests.no_such_module")
    with pytest.raises(ConfigError, match=re.escape("has no 'tools = ToolRegistry()'")):
        load_tools("tests.conftest")


# python -m server vapi-assistant

_SETTINGS_ENV = (
    "PUBLIC_URL", "VAPI_SECRET", "VAPI_HMAC_SECRET", "ASSISTANT_FILE", "MODEL", "SYSTEM_PROMPT",
    "API_KEY",
)  # fmt: skip


def run_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m server vapi-assistant`` with only the given settings in its env."""
    environment = {k: v for k, v in os.environ.items() if k not in _SETTINGS_ENV}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "server", "vapi-assistant", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_command_prints_the_assistant_for_a_pod(assistant_file: Path) -> None:
    done = run_command(
        "--public-url", "https://abc123-8000.proxy.runpod.net/",
        "--model", "qwen2.5:7b",
        "--webhook-credential-id", "cred-1234",
        ASSISTANT_FILE=str(assistant_file),
        VAPI_SECRET=SECRET,
        API_KEY="k",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assistant = json.loads(done.stdout)
    assert assistant["model"]["provider"] == "custom-llm"
    assert assistant["model"]["url"] == "https://abc123-8000.proxy.runpod.net/v1"
    assert assistant["model"]["model"] == "qwen2.5:7b"
    assert assistant["model"]["metadataSendMode"] == "off"
    assert assistant["firstMessage"] == ASSISTANT_SPEC["firstMessage"]
    assert assistant["voice"] == ASSISTANT_SPEC["voice"]
    assert assistant["server"] == {
        "url": "https://abc123-8000.proxy.runpod.net/vapi/webhook",
        "credentialId": "cred-1234",
    }
    assert SECRET not in done.stdout
    assert all(line.startswith("# ") for line in done.stderr.splitlines())
    assert '"provider": "custom-llm"' in done.stderr
    assert "curl -X POST https://api.vapi.ai/assistant" in done.stderr


def test_command_without_a_webhook_secret_has_no_server() -> None:
    done = run_command(
        "--public-url", "https://voice.example.com/v1", "--system-prompt", "Be kind."
    )
    assert done.returncode == 0, done.stderr
    assistant = json.loads(done.stdout)
    assert assistant["model"]["url"] == "https://voice.example.com/v1"
    assert assistant["model"]["messages"] == [{"role": "system", "content": "Be kind."}]
    assert assistant["name"] == "Voice assistant"
    assert "server" not in assistant
    assert "No webhook: start the server with VAPI_SECRET" in done.stderr
    assert "API_KEY is not set here" in done.stderr


def test_command_with_an_hmac_secret_explains_the_credential() -> None:
    done = run_command("--public-url", PUBLIC_URL, VAPI_HMAC_SECRET=HMAC_SECRET)
    assert done.returncode == 0, done.stderr
    server = json.loads(done.stdout)["server"]
    assert server["url"] == f"{PUBLIC_URL}/vapi/webhook"
    assert server["credentialId"] == "REPLACE-WITH-YOUR-WEBHOOK-CREDENTIAL-ID"
    assert "an HMAC credential (SHA256, signature header x-signature" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--serverless", "r2d2xyz9"),
        ("--public-url", "https://api.runpod.ai/v2/r2d2xyz9/openai"),
        ("--public-url", "https://api.runpod.ai/v2/r2d2xyz9/openai/v1"),
    ],
)
def test_command_for_runpod_serverless(args: tuple[str, str]) -> None:
    done = run_command(*args, VAPI_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    assistant = json.loads(done.stdout)
    assert assistant["model"]["url"] == "https://api.runpod.ai/v2/r2d2xyz9/openai/v1"
    assert "server" not in assistant
    assert "RunPod API key" in done.stderr


def test_command_serverless_model_with_a_pod_webhook() -> None:
    done = run_command("--serverless", "r2d2xyz9", "--public-url", PUBLIC_URL, VAPI_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    assistant = json.loads(done.stdout)
    assert assistant["model"]["url"] == "https://api.runpod.ai/v2/r2d2xyz9/openai/v1"
    assert assistant["server"]["url"] == f"{PUBLIC_URL}/vapi/webhook"


def test_command_accepts_the_example_assistant_file() -> None:
    done = run_command(
        "--public-url", PUBLIC_URL, "--assistant-file", str(ROOT / "examples" / "assistant.json")
    )
    assert done.returncode == 0, done.stderr
    example = json.loads((ROOT / "examples" / "assistant.json").read_text())
    assistant = json.loads(done.stdout)
    assert assistant["firstMessage"] == example["firstMessage"]
    assert assistant["transcriber"] == example["transcriber"]
    for key, value in example["extra"].items():
        assert assistant[key] == value


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((), "give --public-url URL (or PUBLIC_URL) or --serverless ENDPOINT_ID"),
        (("--public-url", "ftp://voice.example.com"), "must look like https://host"),
        (("--serverless", "r2/../d2"), "has characters ids never have"),
        (
            ("--public-url", PUBLIC_URL, "--assistant-file", "/nonexistent/assistant.json"),
            "cannot be read: No such file or directory",
        ),
        (("--public-url", PUBLIC_URL, "--model", "two words"), "is empty or contains spaces"),
    ],
)
def test_command_errors_are_one_line(args: tuple[str, ...], reason: str) -> None:
    done = run_command(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("python -m server vapi-assistant: error: ")
    assert reason in line


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "is not valid JSON"),
        ('{"name": ""}', "name: String should have at least 1 character"),
        ('{"temperature": "warm"}', "temperature: Input should be a valid number"),
        ('{"voice": {"voiceId": "Elliot"}}', "voice: Value error, needs a 'provider' string"),
        ('{"serverMessages": ["tool-calls", "coffee"]}', "unknown server message types ['coffee']"),
        ('{"extra": {"model": {}}}', "['model'] are set by the server"),
        ('{"firstMesage": "Hi"}', "firstMesage: Extra inputs are not permitted"),
    ],
)
def test_command_names_the_fault_in_an_assistant_file(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "assistant.json"
    path.write_text(content)
    done = run_command("--public-url", PUBLIC_URL, "--assistant-file", str(path))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert f"assistant file '{path}'" in line
    assert reason in line
