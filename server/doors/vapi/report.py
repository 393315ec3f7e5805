"""The end-of-call report, as one log record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["report_line"]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _duration(message: dict[str, Any]) -> float | None:
    seconds = _number(message.get("durationSeconds"))
    if seconds is not None:
        return seconds
    millis = _number(message.get("durationMs"))
    if millis is not None:
        return millis / 1000
    started, ended = _text(message.get("startedAt")), _text(message.get("endedAt"))
    if started is None or ended is None:
        return None
    try:
        return (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    except (ValueError, TypeError):
        return None


def report_line(message: dict[str, Any], content: bool) -> dict[str, Any]:
    """The log fields of an end-of-call report; caller and words only when ``content``."""
    call = _object(message.get("call"))
    record: dict[str, Any] = {
        "call_id": _text(call.get("id")),
        "ended_reason": _text(message.get("endedReason")) or _text(call.get("endedReason")),
        "duration_s": _duration(message),
        "cost": _number(message.get("cost")),
    }
    if content:
        artifact = _object(message.get("artifact"))
        customer = _object(message.get("customer")) or _object(call.get("customer"))
        record["customer_number"] = _text(customer.get("number"))
        record["summary"] = _text(_object(message.get("analysis")).get("summary"))
        record["transcript"] = _text(artifact.get("transcript")) or _text(message.get("transcript"))
        record["recording_url"] = _text(artifact.get("recordingUrl")) or _text(
            message.get("recordingUrl")
        )
    return record
