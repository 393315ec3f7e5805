"""VAPI's server URL: the webhook at ``POST /vapi/webhook``, and the assistant JSON.

VAPI posts ``{"message": {"type": ..., ...}}`` to an assistant's (or phone number's)
server URL. This endpoint answers:

- ``assistant-request``: ``{"assistant": {...}}``, a custom-llm assistant pointing at
  ``{PUBLIC_URL}/v1`` with this server's model, its system prompt, and the first
  message, voice and transcriber of the assistant file (``ASSISTANT_FILE``). The answer
  is built once at startup, so it costs no I/O (VAPI allows 7.5 s).
- ``tool-calls``: runs each call with the :class:`~server.tools.ToolRegistry` and
  answers ``{"results": [{"name", "toolCallId", "result" | "error"}]}``; an unknown
  tool or a failing one is an ``error`` result, never an HTTP error.
- every other type VAPI sends (``status-update``, ``end-of-call-report``, ``hang``,
  ``conversation-update``, ``speech-update``, ``transcript``...): ``{}``. An
  end-of-call report is logged as one JSON line (call id, ended reason, duration,
  cost); transcript, summary, caller number and recording URL only with
  ``--log-content``.

Authentication, checked before the body is parsed: the ``x-vapi-secret`` header or
``Authorization: Bearer <secret>`` against ``VAPI_SECRET``, or an HMAC-SHA256 signature
against ``VAPI_HMAC_SECRET``: the hex (or base64) HMAC of ``{timestamp}.{body}``, with
an optional ``sha256=`` prefix, in ``x-signature`` (or ``x-vapi-signature``), the
timestamp (seconds or milliseconds) in ``x-timestamp`` (or ``x-vapi-timestamp``) and
at most ``VAPI_HMAC_MAX_SKEW`` seconds off. With neither secret configured the webhook
is disabled: every request gets 401, whatever its address.

``python -m server vapi-assistant`` prints the assistant JSON for VAPI's dashboard or
API (:func:`vapi_assistant`).

Modules: ``webhook`` (the endpoint), ``auth`` (secrets and signatures), ``assistant``
(the assistant file and the assistant built from it), ``tool_calls``, ``report`` (the
end-of-call report line), ``message_types`` and ``cli`` (the command).
"""

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
from .message_types import DEFAULT_SERVER_MESSAGES, MESSAGE_TYPES
from .report import report_line
from .webhook import VapiWebhook

__all__ = [
    "DEFAULT_SERVER_MESSAGES",
    "MESSAGE_TYPES",
    "WEBHOOK_PATH",
    "AssistantSpec",
    "VapiWebhook",
    "WebhookAuth",
    "build_assistant",
    "load_assistant_spec",
    "model_url",
    "report_line",
    "runpod_url",
    "vapi_assistant",
]
