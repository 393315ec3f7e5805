"""Errors that end a request before it streams, each with its HTTP status and a short code.

Adapters render them for their wire: an OpenAI error object over HTTP, an ``error``
frame over a websocket, a failed job on RunPod.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServiceError"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    426: "invalid_request_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ServiceError(Exception):
    """A request that cannot be served, with everything needed to say why.

    ``status`` is the HTTP status; ``code`` a short word a program can test
    (``model_not_warm``, ``ollama_unreachable``...); ``param`` the request field at
    fault, if any; ``retry_after`` seconds, for 503.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after

    def to_openai(self) -> dict[str, Any]:
        """The error in OpenAI's shape: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }
