"""What VAPI posts to a server URL, and helpers to post it: shared by the VAPI tests.

Bodies follow the shapes VAPI documents for each message type (its API reference and
server-URL event docs), trimmed of the objects no test reads. ``unique`` keeps every
signed body different, since the webhook accepts a signed request only once.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from typing import Any

import httpx

from .conftest import Process

SECRET = "vapi-secret-5e1f0a"  # noqa: S105 - a test secret
HMAC_SECRET = "hmac-secret-77c2d9"  # noqa: S105 - a test secret
PUBLIC_URL = "https://voice.example.com"

FRONT_DESK = {
    "type": "number",
    "number": "+15555550100",
    "message": "Connecting you to the front desk.",
}
BILLING = {"type": "sip", "sipUri": "sip:billing@pbx.example.com"}
SCHEDULER = {"type": "assistant", "assistantName": "Scheduler"}
SPANISH_DESK = {"type": "assistant", "assistantId": "7f3c2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b"}

# A transfer tool without destinations: VAPI asks the webhook for one.
TRANSFER_TOOL = {"type": "transferCall", "destinations": [], "function": {"name": "transferCall"}}

ASSISTANT_SPEC: dict[str, Any] = {
    "name": "Front desk",
    "firstMessage": "Hello, thanks for calling Riverside Dental.",
    "systemPrompt": "You are the receptionist of Riverside Dental. Be brief.",
    "temperature": 0.4,
    "maxTokens": 200,
    "voice": {"provider": "vapi", "voiceId": "Elliot"},
    "transcriber": {"provider": "deepgram", "model": "nova-3", "language": "en"},
    "extra": {"silenceTimeoutSeconds": 30},
    "tools": [TRANSFER_TOOL],
    "transferDestinations": [FRONT_DESK, BILLING],
    "handoffDestinations": [SCHEDULER, SPANISH_DESK],
}

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
ARTIFACT = {
    "messages": [
        {"role": "bot", "message": "Hello, thanks for calling.", "time": 1748876645000},
        {"role": "user", "message": "Can I talk to a person?", "time": 1748876650000},
    ],
    "messagesOpenAIFormatted": [
        {"role": "assistant", "content": "Hello, thanks for calling."},
        {"role": "user", "content": "Can I talk to a person?"},
    ],
    "transcript": "AI: Hello, thanks for calling.\nUser: Can I talk to a person?\n",
}


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


def unique(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with a fresh call id, so that no two signed requests are the same."""
    message = body["message"]
    return {"message": {**message, "call": {**message.get("call", {}), "id": str(uuid.uuid4())}}}


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
    "assistant.started": envelope("assistant.started", newAssistant={"name": "Front desk"}),
    "knowledge-base-request": envelope(
        "knowledge-base-request",
        messages=[{"role": "user", "content": "What are your hours?"}],
        messagesOpenAIFormatted=[{"role": "user", "content": "What are your hours?"}],
    ),
}

TRANSFER_REQUEST = envelope(
    "transfer-destination-request", artifact=ARTIFACT, assistant={"id": "assistant-123"}
)


def handoff_request(destination: str, **parameters: Any) -> dict[str, Any]:
    """A ``handoff-destination-request`` for a dynamic handoff the model asked for."""
    return envelope(
        "handoff-destination-request",
        artifact=ARTIFACT,
        parameters={"destination": destination, **parameters},
    )


ENDPOINTING_REQUEST = envelope(
    "call.endpointing.request",
    messages=[
        {
            "role": "user",
            "message": "Hello, how are you?",
            "time": 1748876650000,
            "secondsFromStart": 0,
        }
    ],
    messagesOpenAIFormatted=[{"role": "user", "content": "Hello, how are you?"}],
)

CAMPAIGN_PREDIAL = {
    "message": {
        "timestamp": TIMESTAMP,
        "type": "campaign.predial",
        "campaignId": "c0ffee00-1111-4222-8333-944455556666",
        "contact": {"number": "+15551230002", "name": "Dana"},
        "phoneNumber": PHONE_NUMBER,
    }
}


def function_call_message(name: str, parameters: Any) -> dict[str, Any]:
    """A legacy ``function-call`` message, as VAPI sent them before ``tool-calls``."""
    return envelope("function-call", functionCall={"name": name, "parameters": parameters})


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


def sign(
    body: bytes,
    timestamp: str,
    secret: str = HMAC_SECRET,
    algorithm: str = "sha256",
) -> str:
    """The hex HMAC of ``{timestamp}.{body}``, as VAPI's default HMAC credential sends it."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, algorithm).hexdigest()


def now_seconds() -> str:
    return str(int(time.time()))


def now_millis() -> str:
    return str(int(time.time() * 1000))


def signed(body: bytes, timestamp: str | None = None, secret: str = HMAC_SECRET) -> dict[str, str]:
    """VAPI's default HMAC headers for ``body``: ``x-signature`` and ``x-timestamp``."""
    stamp = now_seconds() if timestamp is None else timestamp
    return {"x-signature": sign(body, stamp, secret), "x-timestamp": stamp}


def encode(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def post(
    server: Process, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST a webhook body (JSON-encoded unless bytes) with the shared secret by default."""
    sent = {"x-vapi-secret": SECRET} if headers is None else headers
    return httpx.post(
        f"{server.url}/vapi/webhook",
        content=encode(body),
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
