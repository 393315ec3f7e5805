"""Where a call goes when VAPI asks: the assistant file's transfer and handoff destinations.

VAPI sends ``transfer-destination-request`` when the model calls a ``transferCall`` tool
that has no destination, and ``handoff-destination-request`` for a handoff tool's
``dynamic`` destination. Each is answered ``{"destination": {...}}``: the configured
destination the model's call asks for (``message.parameters.destination``: a number, a
SIP URI, an assistant's name or id, a squad's id), else the first one configured; or
``{"error": "..."}`` when none is configured. Destinations are VAPI's own objects
(``TransferDestinationNumber``/``Sip``/``Assistant``, ``HandoffDestinationAssistant``/
``Squad``), checked when the file is read and answered as they are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

__all__ = ["Destinations", "check_destinations"]

log = logging.getLogger("server.vapi")

Kind = Literal["transfer", "handoff"]

# For each destination type, the fields of which one must be given (a string, or for
# an inline assistant or squad an object).
_REQUIRED: dict[Kind, dict[str, tuple[str, ...]]] = {
    "transfer": {"number": ("number",), "sip": ("sipUri",), "assistant": ("assistantName",)},
    "handoff": {
        "assistant": ("assistantId", "assistantName", "assistant"),
        "squad": ("squadId", "squad"),
    },
}
# The fields a request may name a destination by.
_NAMES = ("number", "sipUri", "assistantName", "assistantId", "squadId", "entryAssistantName")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_PHONE = re.compile(r"^\+?[\d\s().-]+$")


def check_destinations(kind: Kind, value: list[Any]) -> list[Any]:
    """``value`` if each item is a destination VAPI accepts; else :class:`ValueError`."""
    required = _REQUIRED[kind]
    types = ", ".join(repr(name) for name in required)
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} must be an object, a VAPI {kind} destination")
        kind_of = item.get("type")
        if kind_of not in required:
            raise ValueError(f"item {i}: 'type' must be one of {types}")
        fields = required[kind_of]
        if not any(isinstance(item.get(name), str | dict) and item[name] for name in fields):
            wanted = " or ".join(repr(name) for name in fields)
            raise ValueError(f"item {i}: a {kind_of!r} destination needs {wanted}")
        number = item.get("number")
        if kind_of == "number" and not isinstance(number, str):
            raise ValueError(f"item {i}: 'number' must be a string")
        if (
            kind_of == "number"
            and item.get("numberE164CheckEnabled", True) is not False
            and not _E164.match(str(number))
        ):
            raise ValueError(
                f"item {i}: 'number' must be E.164, like +15555550100 (or set "
                "numberE164CheckEnabled to false)"
            )
    return value


def _key(text: str) -> str:
    """How a destination's name or number is compared: case, and a number's punctuation, aside."""
    text = text.strip()
    if _PHONE.match(text) and sum(c.isdigit() for c in text) >= 3:
        return "".join(c for c in text if c.isdigit())
    return text.lower()


class Destinations:
    """The configured destinations of one kind, and the answer to VAPI's request for one."""

    def __init__(self, kind: Kind, destinations: Sequence[dict[str, Any]]) -> None:
        self.kind = kind
        self._default = destinations[0] if destinations else None
        self._by_name: dict[str, dict[str, Any]] = {}
        for destination in destinations:
            for field in _NAMES:
                name = destination.get(field)
                if isinstance(name, str) and name:
                    self._by_name.setdefault(_key(name), destination)

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        """``{"destination": ...}`` for a request message, or ``{"error": ...}``."""
        if self._default is None:
            return {"error": f"no {self.kind} destination is configured"}
        parameters = message.get("parameters")
        asked = parameters.get("destination") if isinstance(parameters, dict) else None
        if isinstance(asked, str) and asked.strip() and asked != "dynamic":
            found = self._by_name.get(_key(asked))
            if found is not None:
                return {"destination": found}
            # Never the value itself: it may be a phone number.
            log.info(
                "VAPI asked for a %s destination that is not configured: answered the first one",
                self.kind,
            )
        return {"destination": self._default}
