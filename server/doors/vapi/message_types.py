"""The ``message.type`` values VAPI sends to a server URL, from its API reference."""

from __future__ import annotations

__all__ = ["DEFAULT_SERVER_MESSAGES", "MESSAGE_TYPES", "SERVER_MESSAGES", "UNKNOWN_TYPE"]

SERVER_MESSAGES = (
    "assistant.started",
    "assistant.speechStarted",
    "conversation-update",
    "end-of-call-report",
    "function-call",
    "hang",
    "language-changed",
    "language-change-detected",
    "model-output",
    "phone-call-control",
    "speech-update",
    "status-update",
    "transcript",
    'transcript[transcriptType="final"]',
    "tool-calls",
    "transfer-destination-request",
    "handoff-destination-request",
    "transfer-update",
    "user-interrupted",
    "voice-input",
    "chat.created",
    "chat.deleted",
    "session.created",
    "session.updated",
    "session.deleted",
    "call.deleted",
    "call.delete.failed",
    "call.artifact.upload",
)
"""What an assistant's ``serverMessages`` may list (VAPI's enum; VAPI refuses others)."""

MESSAGE_TYPES = frozenset(
    {
        *SERVER_MESSAGES,
        # Sent whatever serverMessages says, to the server that asked for them.
        "assistant-request",
        "call.endpointing.request",
        "campaign.predial",
        "knowledge-base-request",
        "voice-request",
    }
)
"""Every ``message.type`` VAPI documents for a server URL: each is counted by name."""

UNKNOWN_TYPE = "unknown"
"""The count of every other ``message.type`` (VAPI keeps adding them)."""

DEFAULT_SERVER_MESSAGES = ("tool-calls", "status-update", "end-of-call-report", "hang")
"""What the built assistant asks VAPI to send: no per-turn transcripts or updates."""
