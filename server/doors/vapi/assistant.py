"""The assistant: the assistant file, and the VAPI assistant built from it.

The assistant file (``ASSISTANT_FILE``) holds what VAPI's assistant gets besides the
model, under VAPI's own field names, and the destinations the webhook answers with;
:func:`build_assistant` makes a custom-llm assistant pointing at this server from it.
The file is checked against VAPI's own limits and enums when it is read, so a value
VAPI would refuse stops the server (or the command) at once, not a live call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...config import Config, ConfigError
from ...tools import ToolRegistry
from .destinations import check_destinations
from .message_types import DEFAULT_SERVER_MESSAGES, SERVER_MESSAGES

__all__ = [
    "WEBHOOK_PATH",
    "AssistantSpec",
    "assistant_notes",
    "build_assistant",
    "load_assistant_spec",
    "model_url",
    "runpod_url",
]

WEBHOOK_PATH = "/vapi/webhook"

# Assistant fields the server builds; the assistant file's "extra" may not set them.
_BUILT_FIELDS = frozenset(
    {"name", "firstMessage", "model", "voice", "transcriber", "server", "serverMessages"}
)

_RUNPOD_URL = re.compile(r"^https://api\.runpod\.ai/v2/([A-Za-z0-9-]+)(?:/openai(?:/v1)?)?/?$")
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9-]+$")


class AssistantSpec(BaseModel):
    """The assistant file (``ASSISTANT_FILE``): what VAPI's assistant gets besides the model.

    Field names are VAPI's, with VAPI's limits (``maxTokens`` 50 to 10000,
    ``temperature`` 0 to 2, ``name`` at most 40 characters, ``serverMessages`` from its
    enum). ``systemPrompt`` replaces ``--system-prompt`` in the assistant; ``tools``
    (VAPI's own tool objects, such as ``transferCall``) and ``toolIds`` go into its
    model, after the registry's tools; ``extra`` holds any further VAPI assistant
    fields, passed on as they are.
    ``transferDestinations`` and ``handoffDestinations`` are not sent to VAPI: they are
    what the webhook answers VAPI's requests for a destination with (the first is the
    default; see :mod:`.destinations`).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    name: str = Field(default="Voice assistant", min_length=1, max_length=40)
    firstMessage: str | None = None
    systemPrompt: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    maxTokens: int | None = Field(default=None, ge=50, le=10000)
    metadataSendMode: Literal["off", "variable", "destructured"] = "off"
    voice: dict[str, Any] | None = None
    transcriber: dict[str, Any] | None = None
    serverMessages: list[str] = Field(default_factory=lambda: list(DEFAULT_SERVER_MESSAGES))
    extra: dict[str, Any] = Field(default_factory=dict)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    toolIds: list[str] = Field(default_factory=list)
    transferDestinations: list[Any] = Field(default_factory=list)
    handoffDestinations: list[Any] = Field(default_factory=list)

    @field_validator("voice", "transcriber")
    @classmethod
    def _has_provider(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("provider"), str):
            raise ValueError("needs a 'provider' string, as VAPI requires")
        return value

    @field_validator("serverMessages")
    @classmethod
    def _known_messages(cls, value: list[str]) -> list[str]:
        unknown = [kind for kind in value if kind not in SERVER_MESSAGES]
        if unknown:
            raise ValueError(f"{unknown} are not among the values VAPI accepts (docs/vapi.md)")
        return value

    @field_validator("tools")
    @classmethod
    def _typed(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, tool in enumerate(value):
            if not isinstance(tool.get("type"), str):
                raise ValueError(f"item {i} needs a 'type' string, as VAPI requires")
        return value

    @field_validator("transferDestinations")
    @classmethod
    def _transfer(cls, value: list[Any]) -> list[Any]:
        return check_destinations("transfer", value)

    @field_validator("handoffDestinations")
    @classmethod
    def _handoff(cls, value: list[Any]) -> list[Any]:
        return check_destinations("handoff", value)

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
        reason = first["msg"].removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"assistant file {path!r}: {where}: {reason}{more}") from None


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


def assistant_notes(config: Config, spec: AssistantSpec, urls: Iterable[str]) -> list[str]:
    """What the operator should know about an assistant with these URLs and settings."""
    notes = []
    for url in urls:
        if urlsplit(url).scheme == "http":
            notes.append(
                f"warning: {url} is http://, and VAPI calls only https:// URLs: give the "
                "public https:// URL (RunPod's proxy, or a TLS proxy in front of the server)"
            )
    if spec.systemPrompt is not None and config.system_prompt:
        notes.append(
            "--system-prompt (SYSTEM_PROMPT) is not in the assistant: the assistant file's "
            "systemPrompt replaces it"
        )
    return notes


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
    if len(tools) or spec.tools:
        model["tools"] = [*tools.definitions(), *spec.tools]
    if spec.toolIds:
        model["toolIds"] = list(spec.toolIds)
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
