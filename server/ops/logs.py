"""Logging for the server and the RunPod worker: one format for every line on stderr.

``json`` (the default when stderr is not a terminal): one JSON object per line, with
``ts`` (UTC, ISO 8601), ``level``, ``logger`` and ``msg``, then the record's fields.
``text`` (the default on a terminal): ``time LEVEL logger: msg key=value ...``.

A record carries fields as ``extra={"fields": {...}}``::

    log.info("turn", extra={"fields": {"turn_id": "t-1", "outcome": "ok"}})

uvicorn's loggers go through the same handler. Its websocket handshake lines are
dropped: they are access-log lines (written whatever ``access_log`` says) and carry
the URL's query string, which may hold the API key; rejections are logged by
:func:`log_rejection` instead.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

import orjson

from ..config import Config
from ..core.errors import ServiceError

__all__ = ["Formatter", "log_ready", "log_rejection", "setup_logging"]

_COMMON = ("ts", "level", "logger", "msg")
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
_rejections = logging.getLogger("server.rejected")


def _fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """A record's message and fields."""
    fields: dict[str, Any] | None = getattr(record, "fields", None)
    return record.getMessage(), fields or {}


def _text_value(value: Any) -> str:
    if (
        isinstance(value, str)
        and value
        and value.isprintable()
        and not any(c in value for c in ' ="')
    ):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str | int) for v in value):
        return ",".join(_text_value(v) for v in value)
    return orjson.dumps(value, default=str).decode()


class Formatter(logging.Formatter):
    """Formats every record as one JSON object (``json=True``) or one readable line."""

    def __init__(self, json: bool) -> None:
        super().__init__()
        self.json = json

    def format(self, record: logging.LogRecord) -> str:
        message, fields = _fields(record)
        if self.json:
            line = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": message,
            }
            for key, value in fields.items():
                if key not in _COMMON:
                    line[key] = value
            if record.exc_info:
                line["exc"] = self.formatException(record.exc_info)
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        text = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: {message}"
        text += "".join(
            f" {key}={_text_value(value)}" for key, value in fields.items() if value is not None
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _not_a_websocket_request_line(record: logging.LogRecord) -> bool:
    """False for uvicorn's ``"WebSocket /path?query" [accepted]`` (or status) lines."""
    return not (isinstance(record.msg, str) and '"WebSocket %s"' in record.msg)


def setup_logging(config: Config, stream: IO[str] | None = None) -> None:
    """Send every log line (the server's, uvicorn's, httpx's) to stderr in one format.

    The format is ``config.log_format``, or text when stderr is a terminal and JSON
    otherwise; the level is ``config.log_level``.
    """
    stream = sys.stderr if stream is None else stream
    form = config.log_format or ("text" if stream.isatty() else "json")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(Formatter(json=form == "json"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    level = config.log_level.upper()
    root.setLevel(level)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level)  # uvicorn skips its trace lines by this logger's own level
    logging.getLogger("uvicorn.error").addFilter(_not_a_websocket_request_line)
    # The Ollama control client's: a line per request, and at DEBUG per step of each.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def log_ready(config: Config, mode: str, **details: Any) -> None:
    """The startup summary: one line once the server (or worker) is ready.

    Says what it serves and from where, its admission limit and where that came from,
    and whether a key is set (never the key); ``details`` adds what the mode knows
    (ports, timings).
    """
    fields: dict[str, Any] = {
        "mode": mode,
        "model": config.model,
        "ollama_urls": list(config.ollama_urls),
        "max_concurrency": config.max_concurrency,
        "max_concurrency_from": config.max_concurrency_from,
        "api_key_set": config.api_key is not None,
        **details,
    }
    logging.getLogger("server").info("ready", extra={"fields": fields})


def log_rejection(error: ServiceError, method: str | None, route: str | None) -> None:
    """One line for a request refused with a 4xx: status, code, route and the field.

    Never the body, the query string or the error's message (which may quote the body).
    """
    if error.status >= 500:
        return
    fields = {
        "status": error.status,
        "code": error.code,
        "method": method,
        "route": None if route is None else route[:200],
        "param": error.param,
    }
    _rejections.info("rejected", extra={"fields": fields})
