"""VAPI's server URL: the webhook at ``POST /vapi/webhook``, and the assistant JSON.

VAPI posts ``{"message": {"type": ..., ...}}`` to an assistant's (or phone number's)
server URL. The webhook authenticates it (:mod:`.auth`: VAPI's bearer and HMAC
credentials, replays refused) and answers what VAPI waits for (:mod:`.answers`):
the assistant on ``assistant-request``, tool results on ``tool-calls`` and
``function-call``, a destination on ``transfer-destination-request`` and
``handoff-destination-request``, ``timeoutSeconds`` on ``call.endpointing.request``,
``eligible`` on ``campaign.predial``, and ``{}`` to everything else, known or not. The
RunPod worker's ``vapi_webhook`` job is answered by the same code.

``python -m server vapi-assistant`` prints the assistant JSON for VAPI's dashboard or
API (:func:`vapi_assistant`).

Modules: ``webhook`` (the endpoint), ``auth`` (secrets, signatures, replays),
``answers`` (what each message is answered), ``assistant`` (the assistant file and the
assistant built from it), ``destinations``, ``tool_calls``, ``report`` (the
end-of-call report line), ``message_types`` and ``cli`` (the command).
"""

from .answers import WebhookAnswers
from .assistant import (
    WEBHOOK_PATH,
    AssistantSpec,
    build_assistant,
    load_assistant_spec,
    model_url,
    runpod_url,
)
from .auth import WebhookAuth
from .cli import vapi_assistant
from .message_types import DEFAULT_SERVER_MESSAGES, MESSAGE_TYPES, SERVER_MESSAGES
from .report import report_line
from .webhook import VapiWebhook

__all__ = [
    "DEFAULT_SERVER_MESSAGES",
    "MESSAGE_TYPES",
    "SERVER_MESSAGES",
    "WEBHOOK_PATH",
    "AssistantSpec",
    "VapiWebhook",
    "WebhookAnswers",
    "WebhookAuth",
    "build_assistant",
    "load_assistant_spec",
    "model_url",
    "report_line",
    "runpod_url",
    "vapi_assistant",
]
