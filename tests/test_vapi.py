"""VAPI's server URL (``POST /vapi/webhook``): what each message type is answered.

Driven through the real server process with bodies in the shapes VAPI documents
(:mod:`tests.vapi_bodies`). Authentication is in ``test_vapi_auth``, tools in
``test_vapi_tools``, the assistant file and the command in ``test_vapi_assistant``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.config import Config
from server.doors.asgi import Message
from server.doors.vapi import VapiWebhook

from .conftest import MODEL, FakeOllama, Process, start_server
from .vapi_bodies import (
    ASSISTANT_REQUEST,
    ASSISTANT_SPEC,
    BILLING,
    CAMPAIGN_PREDIAL,
    END_OF_CALL_REPORT,
    ENDPOINTING_REQUEST,
    FRONT_DESK,
    INFORMATIONAL,
    PUBLIC_URL,
    SCHEDULER,
    SECRET,
    SPANISH_DESK,
    TRANSFER_REQUEST,
    TRANSFER_TOOL,
    assert_error,
    assert_serving,
    envelope,
    handoff_request,
    post,
    report_lines,
)


@pytest.fixture(scope="module")
def assistant_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vapi") / "assistant.json"
    path.write_text(json.dumps(ASSISTANT_SPEC))
    return path


@pytest.fixture(scope="module")
def vapi_server(fake: FakeOllama, assistant_file: Path) -> Iterator[Process]:
    """A server with a webhook secret, a public URL, an assistant file with destinations."""
    process = start_server(
        fake.url,
        "--vapi-secret", SECRET,
        "--public-url", PUBLIC_URL,
        "--assistant-file", str(assistant_file),
        "--max-body-bytes", "65536",
        "--vapi-endpointing-timeout", "0.8",
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def bare_server(fake: FakeOllama) -> Iterator[Process]:
    """A server with a webhook secret and nothing else: no destinations, no public URL."""
    process = start_server(
        fake.url, "--vapi-secret", SECRET, "--log-content", VAPI_CAMPAIGN_ELIGIBLE="false"
    )
    yield process
    process.stop()


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
                "tools": [TRANSFER_TOOL],
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


def test_transfer_destination_request_gets_the_default_destination(vapi_server: Process) -> None:
    response = post(vapi_server, TRANSFER_REQUEST)
    assert response.status_code == 200
    assert response.json() == {"destination": FRONT_DESK}


@pytest.mark.parametrize(
    ("asked", "destination"),
    [
        ("sip:billing@pbx.example.com", BILLING),
        ("+1 (555) 555-0100", FRONT_DESK),
        ("+15555550199", FRONT_DESK),  # not configured: the first one
        ("dynamic", FRONT_DESK),
    ],
)
def test_transfer_destination_request_by_what_the_model_asked_for(
    vapi_server: Process, asked: str, destination: dict[str, str]
) -> None:
    body = envelope("transfer-destination-request", parameters={"destination": asked})
    response = post(vapi_server, body)
    assert response.status_code == 200
    assert response.json() == {"destination": destination}
    assert b"+15555550199" not in vapi_server.output()


@pytest.mark.parametrize(
    ("asked", "destination"),
    [
        ("scheduler", SCHEDULER),
        ("7f3c2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b", SPANISH_DESK),
        ("dynamic", SCHEDULER),
        ("Billing bot", SCHEDULER),
    ],
)
def test_handoff_destination_request_by_name_or_id_else_the_first(
    vapi_server: Process, asked: str, destination: dict[str, str]
) -> None:
    response = post(vapi_server, handoff_request(asked, customerIntent="new-customer"))
    assert response.status_code == 200
    assert response.json() == {"destination": destination}


def test_endpointing_request_gets_the_configured_timeout(vapi_server: Process) -> None:
    response = post(vapi_server, ENDPOINTING_REQUEST)
    assert response.status_code == 200
    assert response.json() == {"timeoutSeconds": 0.8}


def test_campaign_predial_is_eligible_by_default(vapi_server: Process) -> None:
    response = post(vapi_server, CAMPAIGN_PREDIAL)
    assert response.status_code == 200
    assert response.json() == {"eligible": True}


def test_unconfigured_answers(bare_server: Process) -> None:
    """No destinations: VAPI's error answer; predial as configured; the default timeout."""
    transfer = post(bare_server, TRANSFER_REQUEST)
    assert transfer.status_code == 200
    assert transfer.json() == {"error": "no transfer destination is configured"}
    handoff = post(bare_server, handoff_request("dynamic"))
    assert handoff.status_code == 200
    assert handoff.json() == {"error": "no handoff destination is configured"}
    assert post(bare_server, CAMPAIGN_PREDIAL).json() == {"eligible": False}
    assert post(bare_server, ENDPOINTING_REQUEST).json() == {"timeoutSeconds": 0.5}


@pytest.mark.parametrize(
    "kind", ["call.teleported", "workflow.node.started", "x" * 300, "tool-calls-result"]
)
def test_unknown_message_types_get_200_and_are_counted_as_unknown(
    vapi_server: Process, kind: str
) -> None:
    response = post(vapi_server, envelope(kind, detail={"anything": [1, 2, 3]}))
    assert response.status_code == 200
    assert response.json() == {}
    assert_serving(vapi_server)


def test_unknown_types_are_logged_once_and_counted_under_one_label(fake: FakeOllama) -> None:
    process = start_server(fake.url, "--vapi-secret", SECRET)
    try:
        for kind in ("call.teleported", "call.teleported", "session.beamed"):
            assert post(process, envelope(kind)).json() == {}
        assert post(process, INFORMATIONAL["hang"]).json() == {}
        metrics = httpx.get(f"{process.url}/metrics", timeout=5).text
    finally:
        process.stop()
    assert 'voice_llm_webhooks_total{type="unknown"} 3.0' in metrics
    assert 'voice_llm_webhooks_total{type="hang"} 1.0' in metrics
    assert "teleported" not in metrics
    logs = process.output().decode()
    assert logs.count("message type 'call.teleported' is new to this server") == 1
    assert logs.count("message type 'session.beamed' is new to this server") == 1


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


def test_end_of_call_report_content_and_assistant_request_without_public_url(
    bare_server: Process,
) -> None:
    assert post(bare_server, END_OF_CALL_REPORT).status_code == 200
    response = post(bare_server, ASSISTANT_REQUEST)
    assert_error(response, 503, "assistant_not_configured")
    assert "PUBLIC_URL" in response.json()["error"]["message"]
    assert_serving(bare_server)
    logs = bare_server.output()
    assert b"no PUBLIC_URL, so assistant-request messages get 503" in logs
    [line] = report_lines(logs)
    assert line["call_id"] == "eocr-call-0c1d2e3f"
    assert line["customer_number"] == "+15551230001"
    assert line["transcript"].startswith("AI: Hello, thanks for calling.")
    assert line["summary"] == "The caller asked to reschedule a cleaning."
    assert line["recording_url"] == "https://storage.vapi.ai/recording-eocr-0c1d.wav"


# Bad requests

BAD_MESSAGES = [
    (b"{not json", "invalid_json", None),
    (b"[1, 2]", "invalid_request", "message"),
    (b"{}", "invalid_request", "message"),
    (b'{"message": "status-update"}', "invalid_request", "message"),
    (b'{"message": {"status": "ended"}}', "invalid_value", "message.type"),
    (b'{"message": {"type": 42}}', "invalid_value", "message.type"),
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
    (b'{"message": {"type": "function-call"}}', "invalid_value", "message.functionCall"),
    (
        b'{"message": {"type": "function-call", "functionCall": {"parameters": {}}}}',
        "invalid_value",
        "message.functionCall.name",
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


# The endpoint object, driven as uvicorn drives it


def asgi_post(endpoint: VapiWebhook, body: bytes, headers: dict[str, str]) -> int:
    """POST to the endpoint as uvicorn would; its status."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/vapi/webhook",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[Message] = []
    incoming: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(endpoint(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    status: int = sent[0]["status"]
    return status


def test_counters_by_type_and_by_rejection() -> None:
    endpoint = VapiWebhook(Config(vapi_secret=SECRET))
    good = {"x-vapi-secret": SECRET}
    for kind in ("status-update", "status-update", "end-of-call-report", "hang"):
        assert asgi_post(endpoint, json.dumps(INFORMATIONAL[kind]).encode(), good) == 200
    assert asgi_post(endpoint, b'{"message": {"type": "call-teleported"}}', good) == 200
    hang = json.dumps(INFORMATIONAL["hang"]).encode()
    assert asgi_post(endpoint, hang, {"x-vapi-secret": "guess"}) == 401
    assert asgi_post(endpoint, hang, {}) == 401
    assert asgi_post(endpoint, b"{not json", good) == 400
    assert endpoint.counts == {
        "status-update": 2,
        "end-of-call-report": 1,
        "hang": 1,
        "unknown": 1,
    }
    assert endpoint.rejected == {
        "invalid_webhook_secret": 1,
        "missing_webhook_secret": 1,
        "invalid_json": 1,
    }


def test_caller_gone_before_the_body_gets_no_answer() -> None:
    endpoint = VapiWebhook(Config(vapi_secret=SECRET))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/vapi/webhook", "headers": []}
    asyncio.run(endpoint(scope, receive, send))
    assert sent == []
    assert endpoint.counts == {}
