"""Request bodies as the voice stacks send them, replayed by the tests and the parser's timing.

Each body says where it comes from. Phone numbers, ids and secrets are made up.
"""

from __future__ import annotations

from typing import Any

SYSTEM = (
    "You are Sam, the receptionist of Bright Smile Dental. Answer in one or two short "
    "sentences, spoken style, no lists. Offer appointments Monday to Friday, 8 am to 5 pm. "
) * 8

BOOK_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "book_appointment",
        "description": "Book a cleaning or a check-up.",
        "parameters": {
            "type": "object",
            "properties": {
                "day": {"type": "string", "description": "The day, e.g. Tuesday"},
                "time": {"type": "string", "description": "The time, e.g. 9 am"},
            },
            "required": ["day"],
        },
    },
}

# A turn of a VAPI phone call with the default metadataSendMode ("variable"): OpenAI's
# fields plus call, customer, phoneNumber, metadata, timestamp (FACTS.md §1 and §9, from
# VAPI's OpenAPI schema and logged requests). The common path the parser must keep fast.
VAPI_TURN: dict[str, Any] = {
    "model": "llama3.1:8b",
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "assistant", "content": "Hello, thanks for calling Bright Smile. How can I help?"},
        {
            "role": "user",
            "content": "Hi, I'd like to book a cleaning.",
            "metadata": {"confidence": 0.93},
        },
        {"role": "assistant", "content": "Of course. Which day suits you best?"},
        {
            "role": "user",
            "content": "Tuesday morning, if you have anything.",
            "metadata": {"confidence": 0.88},
        },
    ],
    "temperature": 0.5,
    "max_tokens": 250,
    "stream": True,
    "tools": [BOOK_TOOL],
    "call": {
        "id": "5f1c6a52-33a8-4b8e-9a51-0c2b1e2d7f10",
        "orgId": "0e4d6f0a-8a9b-4c44-9e1f-2a7b5c3d9e11",
        "createdAt": "2026-08-20T14:03:11.512Z",
        "updatedAt": "2026-08-20T14:03:41.020Z",
        "type": "inboundPhoneCall",
        "status": "in-progress",
        "phoneCallProvider": "twilio",
        "phoneCallTransport": "pstn",
        "assistantId": "a1b2c3d4-0000-4000-8000-00000000beef",
        "monitor": {
            "listenUrl": "wss://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/x/listen",
            "controlUrl": "https://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/x/control",
        },
    },
    "customer": {"number": "+15550100001"},
    "phoneNumber": {
        "id": "9c0e5b1a-1111-4222-8333-444455556666",
        "number": "+15550100002",
        "provider": "twilio",
        "twilioAccountSid": "AC00000000000000000000000000000000",
        "twilioAuthToken": "not-a-real-token",
    },
    "metadata": {},
    "timestamp": 1787234621020,
}
