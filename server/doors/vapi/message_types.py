"""The ``message.type`` values VAPI sends to a server URL."""

from __future__ import annotations

__all__ = ["DEFAULT_SERVER_MESSAGES", "MESSAGE_TYPES"]

MESSAGE_TYPES = frozenset(
    {
        "assistant-request",
        "assistant.started",
        "assistant.speechStarted",
        "call.artifact.upload",
        "call.delete.failed",
        "call.deleted",
        "call.endpointing.request",
        "chat.created",
        "chat.deleted",
        "conversation-update",
        "end-of-call-report",
        "function-call",
        "handoff-destination-request",
        "hang",
        "knowledge-base-request",
        "language-change-detected",
        "language-changed",
        "model-output",
        "phone-call-control",
        "session.created",
        "session.deleted",
        "session.updated",
        "speech-update",
        "status-update",
        "tool-calls",
        "transcript",
        'transcript[transcriptType="final"]',
        "transfer-destination-request",
        "transfer-update",
        "user-interrupted",
        "voice-input",
        "voice-request",
    }
)
"""Every ``message.type`` VAPI documents for a server URL; any other is a 400."""

DEFAULT_SERVER_MESSAGES = ("tool-calls", "status-update", "end-of-call-report", "hang")
"""What the built assistant asks VAPI to send: no per-turn transcripts or updates."""
