"""What each VAPI server message is answered, whichever door it came through.

The HTTP webhook (:mod:`.webhook`) and the RunPod ``vapi_webhook`` job both hand
:meth:`WebhookAnswers.answer` the decoded body, ``{"message": {"type": ..., ...}}``:

- ``assistant-request``: ``{"assistant": {...}}``, a custom-llm assistant pointing at
  ``{PUBLIC_URL}/v1``, built once at startup (no I/O per request; VAPI allows 7.5 s).
  Without ``PUBLIC_URL``: a 503, ``assistant_not_configured``.
- ``tool-calls``: every call run at once with the :class:`~server.tools.ToolRegistry`;
  ``{"results": [{"name", "toolCallId", "result" | "error"}]}`` in the order of the
  calls. An unknown tool, unusable arguments or a failing tool is that call's
  ``error``, never an HTTP error.
- legacy ``function-call``: the call run the same way; ``{"result": "..."}`` (an error's
  text is the result, so the model hears it).
- ``transfer-destination-request``, ``handoff-destination-request``: a destination from
  the assistant file (:mod:`.destinations`), or ``{"error": "..."}`` without one.
- ``call.endpointing.request``: ``{"timeoutSeconds": VAPI_ENDPOINTING_TIMEOUT}``.
- ``campaign.predial``: ``{"eligible": VAPI_CAMPAIGN_ELIGIBLE}`` (true by default).
- ``end-of-call-report``: ``{}``, and one JSON log line (:func:`.report.report_line`).
- every other type, documented or not: ``{}``. VAPI keeps adding types, and an error
  would only make noise, or end a call.

``counts`` holds how many well-formed messages came, by ``message.type`` for the
documented types and under ``"unknown"`` for the rest (so its keys are bounded); the
first of each unknown type is logged by name.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...config import Config, ConfigError
from ...core.errors import ServiceError
from ...tools import ToolRegistry
from .assistant import assistant_notes, build_assistant, load_assistant_spec, model_url
from .destinations import Destinations
from .message_types import MESSAGE_TYPES, UNKNOWN_TYPE
from .report import report_line
from .tool_calls import parse_calls, parse_function_call, result, run

__all__ = ["WebhookAnswers"]

log = logging.getLogger("server.vapi")
# End-of-call reports are JSON lines, on the channel of the turn records.
report_log = logging.getLogger("server.turn.vapi")

# VAPI's limits on call.endpointing.request's answer.
_MAX_ENDPOINTING_TIMEOUT = 15.0
# Unknown message types logged by name, at most (each once).
_UNKNOWN_LOGGED = 100


class WebhookAnswers:
    """The answers to VAPI's server messages for one configuration.

    Raises :class:`ConfigError` when the assistant file, the public URL or a webhook
    setting is invalid.
    """

    def __init__(self, config: Config, tools: ToolRegistry | None = None) -> None:
        self.config = config
        self.tools = tools if tools is not None else ToolRegistry()
        self.counts: dict[str, int] = {}
        timeout = config.vapi_endpointing_timeout
        if not 0 <= timeout <= _MAX_ENDPOINTING_TIMEOUT:
            raise ConfigError(
                f"vapi-endpointing-timeout {timeout:g} is not between 0 and "
                f"{_MAX_ENDPOINTING_TIMEOUT:g} seconds (VAPI's limits)"
            )
        self._endpointing = {"timeoutSeconds": timeout}
        self._predial = {"eligible": config.vapi_campaign_eligible}
        spec = load_assistant_spec(config.assistant_file)
        self._transfer = Destinations("transfer", spec.transferDestinations)
        self._handoff = Destinations("handoff", spec.handoffDestinations)
        # What the model of the built assistant sends on every turn (primes Ollama's slots).
        self.system_prompt = (
            spec.systemPrompt if spec.systemPrompt is not None else config.system_prompt
        )
        self.model_tools = [*self.tools.definitions(), *spec.tools]
        self.assistant: dict[str, Any] | None = None
        if config.public_url is not None:
            llm_url, _ = model_url(config.public_url)
            for note in assistant_notes(config, spec, [llm_url]):
                log.warning("VAPI assistant: %s", note)
            # No "server" in it: VAPI then keeps sending this call's messages to the
            # server URL (and credential) that asked for the assistant.
            assistant = build_assistant(config, spec, llm_url, self.tools)
            self.assistant = {"assistant": assistant}
        self._unknown: set[str] = set()

    async def answer(self, data: object) -> dict[str, Any]:
        """The answer to a decoded webhook body; raises :class:`ServiceError` (400 or 503).

        A 400 names the field at fault: a body that is not ``{"message": {...}}``, a
        ``message.type`` that is not a string, or tool calls without an id or a name.
        """
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            raise ServiceError(
                400,
                "invalid_request",
                'the body must be a JSON object {"message": {"type": ...}}',
                param="message",
            )
        kind = message.get("type")
        if not isinstance(kind, str):
            raise ServiceError(
                400, "invalid_value", "'message.type' must be a string", param="message.type"
            )
        if kind == "tool-calls":
            calls = parse_calls(message)
            self._count(kind)
            outcomes = await asyncio.gather(*(run(self.tools, call) for call in calls))
            return {
                "results": [
                    result(call, outcome) for call, outcome in zip(calls, outcomes, strict=True)
                ]
            }
        if kind == "assistant-request":
            self._count(kind)
            if self.assistant is None:
                raise ServiceError(
                    503,
                    "assistant_not_configured",
                    "this server has no PUBLIC_URL, so it cannot point an assistant at itself",
                )
            return self.assistant
        if kind == "function-call":
            call = parse_function_call(message)
            self._count(kind)
            outcome = await run(self.tools, call)
            return {"result": outcome.result if outcome.error is None else outcome.error}
        self._count(kind)
        if kind == "transfer-destination-request":
            return self._transfer.answer(message)
        if kind == "handoff-destination-request":
            return self._handoff.answer(message)
        if kind == "call.endpointing.request":
            return self._endpointing
        if kind == "campaign.predial":
            return self._predial
        if kind == "end-of-call-report":
            report = report_line(message, self.config.log_content)
            report_log.info("end-of-call-report", extra={"fields": report})
        return {}

    def _count(self, kind: str) -> None:
        if kind not in MESSAGE_TYPES:
            if kind not in self._unknown and len(self._unknown) < _UNKNOWN_LOGGED:
                self._unknown.add(kind)
                log.warning(
                    "VAPI webhook: message type %r is new to this server: answered {} and "
                    "counted as %r",
                    kind[:64],
                    UNKNOWN_TYPE,
                )
            kind = UNKNOWN_TYPE
        self.counts[kind] = self.counts.get(kind, 0) + 1
