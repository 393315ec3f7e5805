"""``python -m server vapi-assistant``: print the assistant JSON for VAPI.

stdout is the assistant and nothing else; what to do next, and warnings (an
``http://`` URL VAPI will not call, a ``--system-prompt`` the assistant file's
``systemPrompt`` replaces), go to stderr as ``#`` lines.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from ...config import Config, ConfigError, parse_config
from ...tools import ToolRegistry, load_tools
from .assistant import (
    assistant_notes,
    build_assistant,
    load_assistant_spec,
    model_url,
    runpod_url,
)
from .auth import HmacPlan, WebhookAuth

__all__ = ["vapi_assistant"]

_CREDENTIAL_PLACEHOLDER = "REPLACE-WITH-YOUR-WEBHOOK-CREDENTIAL-ID"


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
        auth = WebhookAuth(config)
        tools = load_tools(config.tools_module) if config.tools_module else ToolRegistry()
    except ConfigError as exc:
        print(f"python -m server vapi-assistant: error: {exc}", file=sys.stderr)
        return 2
    server = None
    if webhook_url is not None and auth.enabled:
        credential = args.webhook_credential_id or _CREDENTIAL_PLACEHOLDER
        server = {"url": webhook_url, "credentialId": credential}
    assistant = build_assistant(config, spec, llm_url, tools, server)
    print(orjson.dumps(assistant, option=orjson.OPT_INDENT_2).decode())
    urls = [llm_url] if server is None else [llm_url, server["url"]]
    notes = assistant_notes(config, spec, urls)
    for line in [*notes, *_hints(config, auth, llm_url, webhook_url, server, args.serverless)]:
        print(f"# {line}", file=sys.stderr)
    return 0


def _hints(
    config: Config,
    auth: WebhookAuth,
    llm_url: str,
    webhook_url: str | None,
    server: dict[str, Any] | None,
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
        if auth.hmac is not None:
            kind = f"an HMAC credential ({_describe(auth.hmac)}) with VAPI_HMAC_SECRET"
        else:
            header = config.vapi_secret_header_name or "Authorization"
            kind = (
                f"a Bearer Token credential with VAPI_SECRET (header {header}, with or "
                "without the Bearer prefix)"
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


def _describe(plan: HmacPlan) -> str:
    """The HMAC credential's fields as VAPI's dashboard asks for them."""
    fields = [
        f"algorithm {plan.algorithm}",
        f"signature header {plan.signature_headers[0].decode()}",
    ]
    if plan.include_timestamp:
        fields.append(f"timestamp header {plan.timestamp_headers[0].decode()}")
    else:
        fields.append("no timestamp")
    fields.append(f"payload format {plan.payload_format}")
    if plan.message_id_header is not None:
        fields.append(f"message id header {plan.message_id_header.decode()}")
    if plan.prefix is not None:
        fields.append(f"signature prefix {plan.prefix.decode()}")
    fields.append("hex or base64 encoding")
    return ", ".join(fields)
