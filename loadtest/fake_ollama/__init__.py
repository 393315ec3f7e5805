"""A simulated Ollama server for tests, benchmarks and load tests.

It speaks Ollama's HTTP API (``/api/chat``, ``/api/generate``, ``/api/tags``,
``/api/ps``, ``/api/show``, ``/api/version``) with the same JSON shapes, status
codes and framing as the real server: NDJSON streams sent with chunked transfer
encoding, one chunk per line, and errors as ``{"error": "..."}``. Nothing is
generated: replies are a fixed cycle of words, written on timers that model
time to first token, inter-token latency, parallel slots with a FIFO queue,
model loading, keep-alive expiry and reloads on changed load-time options.

It runs on a raw ``asyncio.Protocol`` with httptools (uvloop from the command
line), so each token costs one ``transport.write`` and a client that goes away
is seen at once in ``connection_lost``.

Run it::

    python -m loadtest.fake_ollama --port 11434 --ttft 50 --itl 20 --tokens 40

It prints ``fake-ollama listening on http://HOST:PORT`` once it accepts
connections. Behaviour can be steered three ways:

* knobs: command-line flags, the same names in ``POST /_sim/config`` (for
  example ``{"itl": 5, "fail_rate": 0.1}``), or :class:`SimConfig` in-process;
* directives in the last user message (or the generate prompt):
  ``[[tokens:N]]``, ``[[ttft:MS]]``, ``[[itl:MS]]``, ``[[error-after:N]]``,
  ``[[drop-after:N]]``, ``[[stall-after:N]]``, ``[[tool:chunk]]``,
  ``[[tool:final]]``, ``[[no-tool]]``, ``[[status:CODE]]``;
* the control API under ``/_sim/``: ``GET requests``, ``GET stats``,
  ``GET|POST config``, ``POST evict``, ``POST reset``.

The modules, from the bottom up:

* ``config``: the knobs (:class:`SimConfig`) and Go durations (``keep_alive``);
* ``wire``: Go's JSON decoding errors, timestamps and model-name resolution;
* ``connection``: HTTP/1.1 connections (httptools), responses whole or chunked;
* ``scheduler``: the loaded model, reloads, parallel slots, the queue, keep-alive;
* ``replies``: request validation, directives and the plan of each reply;
* ``generation``: replies in progress, one timer and one write per token;
* ``api`` and ``control``: Ollama's endpoints and the ``/_sim/`` control API;
* ``server``: :class:`FakeOllama`, which routes requests and keeps the request log;
* ``cli``: the command line (``__main__`` runs it).
"""

from .api import BUSY_MESSAGE
from .cli import build_arg_parser, config_from_args, main, serve
from .config import FailMode, SimConfig, ToolMode, parse_go_duration, parse_keep_alive
from .generation import MIDSTREAM_ERROR
from .replies import reply_text
from .scheduler import LoadOptions
from .server import REQUEST_LOG_SIZE, FakeOllama, Outcome, RequestRecord, start
from .wire import JsonObject

__all__ = [
    "BUSY_MESSAGE",
    "MIDSTREAM_ERROR",
    "REQUEST_LOG_SIZE",
    "FailMode",
    "FakeOllama",
    "JsonObject",
    "LoadOptions",
    "Outcome",
    "RequestRecord",
    "SimConfig",
    "ToolMode",
    "build_arg_parser",
    "config_from_args",
    "main",
    "parse_go_duration",
    "parse_keep_alive",
    "reply_text",
    "serve",
    "start",
]
