"""The ``POST /vapi/webhook`` endpoint."""

from __future__ import annotations

import asyncio
import logging

import orjson

from ...config import Config
from ...core.errors import ServiceError
from ...tools import ToolOutcome, ToolRegistry
from ..asgi import Disconnected, Receive, Scope, Send, read_body, respond
from .assistant import WEBHOOK_PATH, build_assistant, load_assistant_spec, model_url
from .auth import WebhookAuth
from .message_types import MESSAGE_TYPES
from .report import report_line
from .tool_calls import Call, parse_calls, result

__all__ = ["VapiWebhook"]

log = logging.getLogger("server.vapi")
# End-of-call reports are JSON lines, on the channel of the turn records.
report_log = logging.getLogger("server.turn.vapi")


class VapiWebhook:
    """The ``POST /vapi/webhook`` endpoint, as an ASGI callable.

    ``counts`` holds how many authenticated, well-formed messages arrived, by
    ``message.type`` (VAPI's documented types only, so the keys are bounded);
    ``rejected`` how many requests got an error, by its code (``webhook_disabled``,
    ``missing_webhook_secret``, ``invalid_webhook_secret``, ``invalid_webhook_signature``,
    ``stale_webhook_signature``, ``body_too_large``, ``invalid_json``,
    ``invalid_request``, ``invalid_value``, ``unknown_message_type``,
    ``assistant_not_configured``).

    Raises :class:`ConfigError` when the assistant file or the public URL is invalid.
    """

    def __init__(self, config: Config, tools: ToolRegistry | None = None) -> None:
        self.config = config
        self.tools = tools if tools is not None else ToolRegistry()
        self.counts: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self._auth = WebhookAuth(
            config.vapi_secret, config.vapi_hmac_secret, config.vapi_hmac_max_skew
        )
        spec = load_assistant_spec(config.assistant_file)
        self._assistant: bytes | None = None
        if config.public_url is not None:
            llm_url, _ = model_url(config.public_url)
            # No "server" in it: VAPI then keeps sending this call's messages to the
            # server URL (and credential) that asked for the assistant.
            assistant = build_assistant(config, spec, llm_url, self.tools)
            self._assistant = orjson.dumps({"assistant": assistant})
        if not self._auth.enabled:
            log.info(
                "VAPI webhook %s is disabled: set VAPI_SECRET or VAPI_HMAC_SECRET to enable it",
                WEBHOOK_PATH,
            )
        elif self._assistant is None:
            log.warning(
                "VAPI webhook %s: no PUBLIC_URL, so assistant-request messages get 503",
                WEBHOOK_PATH,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if not self._auth.enabled:
                raise ServiceError(
                    401,
                    "webhook_disabled",
                    "the VAPI webhook is disabled: the server has no VAPI_SECRET or "
                    "VAPI_HMAC_SECRET",
                )
            body = await read_body(scope, receive, self.config.max_body_bytes)
            self._auth.check(scope["headers"], body)
            answer = await self._handle(body)
        except Disconnected:
            return
        except ServiceError as exc:
            self._reject(exc)
            await respond(send, exc.status, orjson.dumps(exc.to_openai()))
            return
        await respond(send, 200, answer)

    def _reject(self, error: ServiceError) -> None:
        count = self.rejected.get(error.code, 0) + 1
        self.rejected[error.code] = count
        # The first of each kind is worth a look; the rest are only counted.
        level = logging.WARNING if count == 1 else logging.DEBUG
        log.log(level, "VAPI webhook answered %d %s: %s", error.status, error.code, error.message)

    async def _handle(self, body: bytes) -> bytes:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ServiceError(400, "invalid_json", "the request body is not valid JSON") from None
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
        if kind not in MESSAGE_TYPES:
            raise ServiceError(
                400,
                "unknown_message_type",
                f"unknown message type {kind[:64]!r}",
                param="message.type",
            )
        calls = parse_calls(message) if kind == "tool-calls" else []
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "assistant-request":
            if self._assistant is None:
                raise ServiceError(
                    503,
                    "assistant_not_configured",
                    "this server has no PUBLIC_URL, so it cannot point an assistant at itself",
                )
            return self._assistant
        if kind == "tool-calls":
            outcomes = await asyncio.gather(*(self._run(call) for call in calls))
            results = [result(call, outcome) for call, outcome in zip(calls, outcomes, strict=True)]
            return orjson.dumps({"results": results})
        if kind == "end-of-call-report":
            report = report_line(message, self.config.log_content)
            report_log.info("%s", orjson.dumps(report).decode())
        return b"{}"

    async def _run(self, call: Call) -> ToolOutcome:
        if call.arguments is None:
            return ToolOutcome(error=call.problem)
        return await self.tools.call(call.name, call.arguments)
