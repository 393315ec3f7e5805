"""The ``POST /vapi/webhook`` endpoint: read, authenticate, then answer (:mod:`.answers`)."""

from __future__ import annotations

import logging

import orjson

from ...config import Config
from ...core.errors import ServiceError
from ...ops.logs import log_rejection
from ...tools import ToolRegistry
from ..asgi import Disconnected, Receive, Scope, Send, read_body, respond
from .answers import WebhookAnswers
from .assistant import WEBHOOK_PATH
from .auth import WebhookAuth

__all__ = ["VapiWebhook"]

log = logging.getLogger("server.vapi")


class VapiWebhook:
    """The ``POST /vapi/webhook`` endpoint, as an ASGI callable.

    The body is read within ``--max-body-bytes`` and authenticated (:mod:`.auth`) before
    it is parsed. ``counts`` holds how many authenticated messages arrived, by type
    (:attr:`WebhookAnswers.counts`); ``rejected`` how many requests got an error, by
    its code (``webhook_disabled``, ``missing_webhook_secret``,
    ``invalid_webhook_secret``, ``invalid_webhook_signature``,
    ``stale_webhook_signature``, ``replayed_webhook_signature``, ``body_too_large``,
    ``invalid_json``, ``invalid_request``, ``invalid_value``,
    ``assistant_not_configured``).

    Raises :class:`ConfigError` when the assistant file, the public URL or a webhook
    setting is invalid.
    """

    def __init__(self, config: Config, tools: ToolRegistry | None = None) -> None:
        self.config = config
        self.auth = WebhookAuth(config)
        self.answers = WebhookAnswers(config, tools)
        self.tools = self.answers.tools
        self.counts = self.answers.counts
        self.rejected: dict[str, int] = {}
        if not self.auth.enabled:
            log.info(
                "VAPI webhook %s is disabled: set VAPI_SECRET or VAPI_HMAC_SECRET to enable it",
                WEBHOOK_PATH,
            )
        elif self.answers.assistant is None:
            log.warning(
                "VAPI webhook %s: no PUBLIC_URL, so assistant-request messages get 503",
                WEBHOOK_PATH,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if not self.auth.enabled:
                raise ServiceError(
                    401,
                    "webhook_disabled",
                    "the VAPI webhook is disabled: the server has no VAPI_SECRET or "
                    "VAPI_HMAC_SECRET",
                )
            body = await read_body(scope, receive, self.config.max_body_bytes)
            self.auth.check(scope, body)
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise ServiceError(
                    400, "invalid_json", "the request body is not valid JSON"
                ) from None
            answer = orjson.dumps(await self.answers.answer(data))
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
        if error.status < 500:
            log_rejection(error, "POST", WEBHOOK_PATH)
        elif count == 1:  # the server's own problem: worth a look, once
            log.warning("VAPI webhook answered %d %s: %s", error.status, error.code, error.message)
