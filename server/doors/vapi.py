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
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import logging
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..chat.request import field_error
from ..config import Config, ConfigError, parse_config
from ..core.errors import ServiceError
from ..tools import ToolOutcome, ToolRegistry, load_tools
from .asgi import Disconnected, Receive, Scope, Send, read_body, respond

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

log = logging.getLogger("server.vapi")
# End-of-call reports are JSON lines, on the channel of the turn records.
report_log = logging.getLogger("server.turn.vapi")

WEBHOOK_PATH = "/vapi/webhook"

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

# Assistant fields the server builds; the assistant file's "extra" may not set them.
_BUILT_FIELDS = frozenset(
    {"name", "firstMessage", "model", "voice", "transcriber", "server", "serverMessages"}
)

_RUNPOD_URL = re.compile(r"^https://api\.runpod\.ai/v2/([A-Za-z0-9-]+)(?:/openai(?:/v1)?)?/?$")
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9-]+$")
_CREDENTIAL_PLACEHOLDER = "REPLACE-WITH-YOUR-WEBHOOK-CREDENTIAL-ID"


# The assistant


class AssistantSpec(BaseModel):
    """The assistant file (``ASSISTANT_FILE``): what VAPI's assistant gets besides the model.

    Field names are VAPI's. ``systemPrompt`` replaces ``--system-prompt`` in the
    assistant; ``extra`` holds any further VAPI assistant fields, passed on as they are.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    name: str = Field(default="Voice assistant", min_length=1, max_length=40)
    firstMessage: str | None = None
    systemPrompt: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    maxTokens: int | None = Field(default=None, ge=1)
    metadataSendMode: Literal["off", "variable", "destructured"] = "off"
    voice: dict[str, Any] | None = None
    transcriber: dict[str, Any] | None = None
    serverMessages: list[str] = Field(default_factory=lambda: list(DEFAULT_SERVER_MESSAGES))
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("voice", "transcriber")
    @classmethod
    def _has_provider(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("provider"), str):
            raise ValueError("needs a 'provider' string, as VAPI requires")
        return value

    @field_validator("serverMessages")
    @classmethod
    def _known_messages(cls, value: list[str]) -> list[str]:
        unknown = [kind for kind in value if kind not in MESSAGE_TYPES]
        if unknown:
            raise ValueError(f"unknown server message types {unknown}")
        return value

    @field_validator("extra")
    @classmethod
    def _not_built(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(_BUILT_FIELDS.intersection(value))
        if taken:
            raise ValueError(f"{taken} are set by the server or by their own fields")
        return value


def load_assistant_spec(path: str | None) -> AssistantSpec:
    """Read and validate the assistant file; the defaults when ``path`` is None.

    Raises :class:`ConfigError` with a one-line reason when the file cannot be read,
    is not JSON, or does not fit :class:`AssistantSpec`.
    """
    if path is None:
        return AssistantSpec()
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"assistant file {path!r} cannot be read: {exc.strerror}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"assistant file {path!r} is not valid JSON: {exc}") from None
    try:
        return AssistantSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"assistant file {path!r}: {where}: {first['msg']}{more}") from None


def _base_url(public_url: str) -> str:
    """A public base URL, checked, without a trailing slash or ``/v1``."""
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"public URL {public_url!r} must look like https://host[:port][/path]")
    url = public_url.rstrip("/")
    return url.removesuffix("/v1")


def runpod_url(endpoint_id: str) -> str:
    """The OpenAI base URL of a RunPod serverless endpoint."""
    if not _ENDPOINT_ID.match(endpoint_id):
        raise ConfigError(f"RunPod endpoint id {endpoint_id!r} has characters ids never have")
    return f"https://api.runpod.ai/v2/{endpoint_id}/openai/v1"


def model_url(public_url: str) -> tuple[str, str | None]:
    """VAPI's custom-llm URL for a public URL, and the webhook URL there (None on RunPod).

    A RunPod serverless URL (``https://api.runpod.ai/v2/<id>[/openai[/v1]]``) gives the
    endpoint's ``/openai/v1``: serverless endpoints serve only OpenAI routes, so no
    webhook. Any other URL gives ``{url}/v1`` and ``{url}/vapi/webhook``.
    """
    match = _RUNPOD_URL.match(public_url)
    if match:
        return runpod_url(match.group(1)), None
    base = _base_url(public_url)
    return f"{base}/v1", f"{base}{WEBHOOK_PATH}"


def build_assistant(
    config: Config,
    spec: AssistantSpec,
    llm_url: str,
    tools: ToolRegistry,
    server: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A VAPI assistant whose model is this server at ``llm_url`` (custom-llm).

    ``server`` is the assistant's own server URL object, if it should have one.
    """
    model: dict[str, Any] = {
        "provider": "custom-llm",
        "url": llm_url,
        "model": config.model,
        "metadataSendMode": spec.metadataSendMode,
    }
    if spec.temperature is not None:
        model["temperature"] = spec.temperature
    if spec.maxTokens is not None:
        model["maxTokens"] = spec.maxTokens
    prompt = spec.systemPrompt if spec.systemPrompt is not None else config.system_prompt
    if prompt:
        model["messages"] = [{"role": "system", "content": prompt}]
    if len(tools):
        model["tools"] = tools.definitions()
    assistant: dict[str, Any] = {"name": spec.name}
    if spec.firstMessage is not None:
        assistant["firstMessage"] = spec.firstMessage
    assistant["model"] = model
    if spec.voice is not None:
        assistant["voice"] = spec.voice
    if spec.transcriber is not None:
        assistant["transcriber"] = spec.transcriber
    assistant["serverMessages"] = list(spec.serverMessages)
    assistant.update(spec.extra)
    if server is not None:
        assistant["server"] = server
    return assistant


# Authentication


_AUTH_HEADERS = frozenset(
    {
        b"authorization",
        b"x-vapi-secret",
        b"x-signature",
        b"x-vapi-signature",
        b"x-timestamp",
        b"x-vapi-timestamp",
    }
)


def _header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {name: value.strip() for name, value in headers if name in _AUTH_HEADERS}


class WebhookAuth:
    """Checks a webhook request against the configured secrets, in constant time."""

    def __init__(self, secret: str | None, hmac_secret: str | None, max_skew: float) -> None:
        self._secret = secret.encode() if secret else None
        self._hmac_key = hmac_secret.encode() if hmac_secret else None
        self._max_skew = max_skew

    @property
    def enabled(self) -> bool:
        """Whether any secret is configured; without one every request is refused."""
        return self._secret is not None or self._hmac_key is not None

    def check(self, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> None:
        """Raise a 401 :class:`ServiceError` unless the request proves it comes from VAPI.

        A signature header is checked when an HMAC secret is configured; otherwise the
        secret, from ``x-vapi-secret`` or ``Authorization`` (``Bearer <secret>`` or bare).
        Callers refuse every request themselves when the check is not :attr:`enabled`.
        """
        given = _header_map(headers)
        signature = given.get(b"x-signature") or given.get(b"x-vapi-signature")
        if self._hmac_key is not None and signature is not None:
            timestamp = given.get(b"x-timestamp") or given.get(b"x-vapi-timestamp")
            self._check_signature(self._hmac_key, signature, timestamp, body)
            return
        candidates = [given[b"x-vapi-secret"]] if b"x-vapi-secret" in given else []
        authorization = given.get(b"authorization")
        if authorization is not None:
            scheme, _, rest = authorization.partition(b" ")
            bearer = rest and scheme.lower() == b"bearer"
            candidates.append(rest.strip() if bearer else authorization)
        if self._secret is not None and candidates:
            # Every candidate is compared, so the time taken says nothing about which.
            matches = [hmac.compare_digest(c, self._secret) for c in candidates]
            if any(matches):
                return
            raise ServiceError(401, "invalid_webhook_secret", "the webhook secret is not valid")
        wanted = []
        if self._secret is not None:
            wanted.append("'x-vapi-secret: <secret>' or 'Authorization: Bearer <secret>'")
        if self._hmac_key is not None:
            wanted.append("an HMAC signature in 'x-signature' with 'x-timestamp'")
        raise ServiceError(
            401, "missing_webhook_secret", f"this webhook needs {' or '.join(wanted)}"
        )

    def _check_signature(
        self, key: bytes, signature: bytes, timestamp: bytes | None, body: bytes
    ) -> None:
        if timestamp is None:
            raise ServiceError(
                401, "invalid_webhook_signature", "a signed webhook needs an 'x-timestamp' header"
            )
        mac = hmac.new(key, timestamp + b".", hashlib.sha256)
        mac.update(body)
        digest = mac.digest()
        if signature[:7].lower() == b"sha256=":
            signature = signature[7:]
        as_hex = hmac.compare_digest(signature.lower(), digest.hex().encode())
        as_base64 = hmac.compare_digest(signature, base64.b64encode(digest))
        if not (as_hex or as_base64) or not timestamp.isdigit() or len(timestamp) > 16:
            raise ServiceError(
                401, "invalid_webhook_signature", "the webhook signature is not valid"
            )
        # Seconds or milliseconds since the epoch: 1e11 s is 5138 AD, 1e11 ms is 1973.
        seconds = int(timestamp) / (1000 if int(timestamp) >= 10**11 else 1)
        skew = abs(time.time() - seconds)
        if skew > self._max_skew:
            raise ServiceError(
                401,
                "stale_webhook_signature",
                f"the webhook timestamp is {skew:.0f} s off; at most {self._max_skew:g} s is "
                "accepted (check the clocks, or a request was replayed)",
            )


# Messages


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Function(_Model):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str | None = None
    parameters: dict[str, Any] | None = None


class _ToolCall(_Model):
    # VAPI sends {id, type, function: {name, arguments}}; its docs also show
    # {id, name, arguments} and {id, name, parameters}.
    id: str = Field(min_length=1)
    function: _Function | None = None
    name: str | None = Field(default=None, min_length=1)
    arguments: dict[str, Any] | str | None = None
    parameters: dict[str, Any] | None = None


class _ToolCalls(_Model):
    toolCallList: list[_ToolCall]


_FIELD_NAMES = frozenset(
    name for model in (_Function, _ToolCall, _ToolCalls) for name in model.model_fields
)


@dataclass(frozen=True, slots=True)
class _Call:
    """One tool call to run: its arguments, or why they are unusable."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    problem: str | None = None


def _calls(message: dict[str, Any]) -> list[_Call]:
    """The tool calls of a ``tool-calls`` message; raises a 400 naming a bad field."""
    try:
        parsed = _ToolCalls.model_validate(message)
    except ValidationError as exc:
        raise field_error(exc, _FIELD_NAMES, "message.") from None
    calls = []
    for i, item in enumerate(parsed.toolCallList):
        name = item.function.name if item.function is not None else item.name
        if name is None:
            param = f"message.toolCallList.{i}.function.name"
            raise ServiceError(400, "invalid_value", f"'{param}' is required", param=param)
        raw: dict[str, Any] | str | None = None
        for value in (
            item.function.arguments if item.function else None,
            item.function.parameters if item.function else None,
            item.arguments,
            item.parameters,
        ):
            if value is not None:
                raw = value
                break
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw) if raw.strip() else {}
            except orjson.JSONDecodeError:
                calls.append(_Call(item.id, name, None, "the arguments are not valid JSON"))
                continue
        if raw is not None and not isinstance(raw, dict):
            calls.append(_Call(item.id, name, None, "the arguments are not a JSON object"))
            continue
        calls.append(_Call(item.id, name, raw or {}))
    return calls


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
    """The log record of an end-of-call report; caller and words only when ``content``."""
    call = _object(message.get("call"))
    record: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "event": "end-of-call-report",
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
        # What the assistant this webhook hands out tells VAPI to send as the system prompt.
        self.system_prompt = (
            spec.systemPrompt if spec.systemPrompt is not None else config.system_prompt
        )
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
        calls = _calls(message) if kind == "tool-calls" else []
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
            results = [
                _result(call, outcome) for call, outcome in zip(calls, outcomes, strict=True)
            ]
            return orjson.dumps({"results": results})
        if kind == "end-of-call-report":
            report = report_line(message, self.config.log_content)
            report_log.info("%s", orjson.dumps(report).decode())
        return b"{}"

    async def _run(self, call: _Call) -> ToolOutcome:
        if call.arguments is None:
            return ToolOutcome(error=call.problem)
        return await self.tools.call(call.name, call.arguments)


def _result(call: _Call, outcome: ToolOutcome) -> dict[str, Any]:
    result: dict[str, Any] = {"name": call.name, "toolCallId": call.id}
    if outcome.error is not None:
        result["error"] = outcome.error
    else:
        result["result"] = outcome.result
    return result


# python -m server vapi-assistant


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server vapi-assistant",
        description=(
            "Print a VAPI assistant (JSON) whose model is this server, for VAPI's dashboard "
            "or POST https://api.vapi.ai/assistant. Give --public-url (a pod) or "
            "--serverless (a RunPod serverless endpoint); every server flag and its "
            "environment variable counts too (--model, --system-prompt, --assistant-file, "
            "--vapi-secret, --vapi-hmac-secret...)."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--serverless",
        metavar="ENDPOINT_ID",
        help="RunPod serverless endpoint id: the model URL is its /openai/v1",
    )
    parser.add_argument(
        "--webhook-credential-id",
        metavar="ID",
        help="id of the VAPI credential holding the webhook secret (server.credentialId)",
    )
    return parser


def vapi_assistant(argv: Sequence[str]) -> int:
    """``python -m server vapi-assistant``: print the assistant JSON; hints go to stderr.

    Returns the exit status: 0, or 2 with a one-line reason on stderr.
    """
    args, rest = _parser().parse_known_args(argv)
    try:
        config = parse_config(rest)
        spec = load_assistant_spec(config.assistant_file)
        webhook_url: str | None = None
        if args.serverless is not None:
            llm_url = runpod_url(args.serverless)
            if config.public_url is not None:
                webhook_url = model_url(config.public_url)[1]
        elif config.public_url is not None:
            llm_url, webhook_url = model_url(config.public_url)
        else:
            raise ConfigError("give --public-url URL (or PUBLIC_URL) or --serverless ENDPOINT_ID")
    except ConfigError as exc:
        print(f"python -m server vapi-assistant: error: {exc}", file=sys.stderr)
        return 2
    auth = WebhookAuth(config.vapi_secret, config.vapi_hmac_secret, config.vapi_hmac_max_skew)
    server = None
    if webhook_url is not None and auth.enabled:
        credential = args.webhook_credential_id or _CREDENTIAL_PLACEHOLDER
        server = {"url": webhook_url, "credentialId": credential}
    tools = load_tools(config.tools_module) if config.tools_module else ToolRegistry()
    assistant = build_assistant(config, spec, llm_url, tools, server)
    print(orjson.dumps(assistant, option=orjson.OPT_INDENT_2).decode())
    for line in _hints(config, llm_url, webhook_url, server, serverless=args.serverless):
        print(f"# {line}", file=sys.stderr)
    return 0


def _hints(
    config: Config,
    llm_url: str,
    webhook_url: str | None,
    server: dict[str, Any] | None,
    *,
    serverless: str | None,
) -> list[str]:
    """What to do next, for stderr: credentials, the webhook, and posting the assistant."""
    hints = []
    if serverless is not None or webhook_url is None:
        hints.append(
            f"VAPI calls {llm_url} with your custom-llm credential: on RunPod serverless it "
            "must hold your RunPod API key."
        )
    else:
        hints.append(
            f"VAPI calls {llm_url} with your custom-llm credential: it must hold this "
            "server's API_KEY."
        )
        if config.api_key is None:
            hints.append("API_KEY is not set here: the server needs one before it is exposed.")
    hints.append(
        "Create it once: curl -X POST https://api.vapi.ai/credential "
        '-H "Authorization: Bearer $VAPI_API_KEY" -H "Content-Type: application/json" '
        """-d '{"provider": "custom-llm", "apiKey": "<key>"}'"""
    )
    if server is not None and server["credentialId"] == _CREDENTIAL_PLACEHOLDER:
        if config.vapi_hmac_secret:
            kind = (
                "an HMAC credential (SHA256, signature header x-signature, timestamp header "
                "x-timestamp, payload {timestamp}.{body}, hex) with VAPI_HMAC_SECRET"
            )
        else:
            kind = (
                "a Bearer Token credential with VAPI_SECRET (header Authorization with the "
                "Bearer prefix, or header X-Vapi-Secret without it)"
            )
        hints.append(
            f"The webhook {webhook_url} needs {kind}: create it in VAPI's dashboard and put "
            "its id in server.credentialId (or pass --webhook-credential-id)."
        )
    elif server is None and webhook_url is not None:
        hints.append(
            f"No webhook: start the server with VAPI_SECRET or VAPI_HMAC_SECRET to serve "
            f"{webhook_url} (tool calls, end-of-call reports)."
        )
    elif webhook_url is None:
        hints.append(
            "No webhook: RunPod serverless endpoints serve only OpenAI routes; give the "
            "--public-url of a pod running the server to add one."
        )
    hints.append(
        "Then: curl -X POST https://api.vapi.ai/assistant "
        '-H "Authorization: Bearer $VAPI_API_KEY" -H "Content-Type: application/json" '
        "-d @assistant.json"
    )
    return hints
