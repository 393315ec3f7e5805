"""A simulated Ollama 0.32 server for tests, benchmarks and load tests.

It speaks Ollama's HTTP API (``/api/chat``, ``/api/generate``, ``/api/tags``,
``/api/ps``, ``/api/show``, ``/api/version``) with the same JSON shapes, status
codes, wording and framing as Ollama 0.32.15 (read from its source; files are
named where it matters): NDJSON streams sent with chunked transfer encoding,
one chunk per line, errors as ``{"error": "..."}``, JSON as Go writes it. Nothing
is generated: replies are a fixed cycle of words, written on timers that model
time to first token, prompt evaluation, inter-token latency, parallel slots with
llama-server's prompt cache, a FIFO queue, model loading, keep-alive, reloads
and crashes.

It runs on a raw ``asyncio.Protocol`` with httptools (uvloop from the command
line), so each token costs one timer and at most one ``transport.write``, and a
client that goes away is seen at once in ``connection_lost``.

Run it::

    python -m loadtest.fake_ollama --port 11434 --ttft 50 --itl 20 --tokens 40

It prints ``fake-ollama listening on http://HOST:PORT`` once it accepts
connections. Behaviour can be steered three ways:

* knobs: command-line flags, the same names in ``POST /_sim/config`` (for
  example ``{"itl": 5, "fail_rate": 0.1}``), or :class:`SimConfig` in-process.
  Timing: ``ttft`` (the fixed part), ``ttft_per_prompt_token`` (per prompt token
  not cached in the slot), ``cache_restore_per_token`` (per token brought back
  from the RAM cache), ``itl``, ``jitter``, ``slowdown``, ``load_ms``. Replies:
  ``tokens``, ``think_tokens``, ``think_anyway``, ``tool_calls``,
  ``text_before_call``, ``tool_mode`` (``auto``, ``chunk``: in a line of its own,
  ``final``: on the ``done`` line). Models: ``models``, ``profiles``
  (``{model: profile}``, see :mod:`.profiles`), ``parallel`` (default 1, as
  ``OLLAMA_NUM_PARALLEL``), ``max_queue``, ``keep_alive`` (default ``5m``),
  ``preloaded``, ``version`` (default ``0.32.15``). llama-server: ``prompt_cache``,
  ``slot_similarity`` (0.1), ``cache_ram_mib`` (8192). Faults: ``abort_load``
  (on), ``load_fail``, ``crash_on_error`` (on), ``slot_leak``, ``fail_rate`` and
  ``fail_mode`` (``error``, ``stall``, ``drop``, ``end``), ``check_host``;
* directives in the last user message (or the generate prompt):
  ``[[tokens:N]]``, ``[[ttft:MS]]``, ``[[itl:MS]]``, ``[[think:N]]``,
  ``[[think-anyway]]``, ``[[calls:N]]``, ``[[say-first:N]]`` (content tokens
  before the calls), ``[[tool:chunk]]``, ``[[tool:final]]``, ``[[no-tool]]``,
  ``[[error-after:N]]``, ``[[drop-after:N]]``, ``[[stall-after:N]]``,
  ``[[end-after:N]]`` (the stream ends with neither ``done`` nor an error),
  ``[[load-fail]]``, ``[[leak]]``, ``[[status:CODE]]``;
* the control API under ``/_sim/``: ``GET requests`` (each request's outcome,
  slot and cached and evaluated prompt tokens), ``GET stats`` (including each
  slot's cache size and the RAM cache), ``GET|POST config``, ``POST evict``,
  ``POST reset``.

The modules, from the bottom up:

* ``config``: the knobs (:class:`SimConfig`) and Go durations (``keep_alive``);
* ``wire``: Go's JSON (decoding errors, HTML escaping), timestamps, model names;
* ``connection``: HTTP/1.1 connections (httptools), responses framed as net/http;
* ``profiles``: the simulated models: rendered or native path, tool tag, thinking;
* ``prompt``: messages and tools rendered as each template does, tokens, ``num_ctx``;
* ``slots``: Ollama's slot semaphore, llama-server's slot choice and RAM cache;
* ``scheduler``: runners, loads, reloads, keep-alive, crashes;
* ``replies``: request validation, directives and the plan of each reply;
* ``generation``: replies in progress, one timer and at most one write per token;
* ``api`` and ``control``: Ollama's endpoints and the ``/_sim/`` control API;
* ``server``: :class:`FakeOllama`, which routes requests and keeps the request log;
* ``cli``: the command line (``__main__`` runs it).
"""

from .api import BUSY_MESSAGE
from .cli import build_arg_parser, config_from_args, main, serve
from .config import FailMode, SimConfig, ToolMode, parse_go_duration, parse_keep_alive
from .generation import MIDSTREAM_ERROR, RUNNER_GONE_ERROR
from .profiles import PROFILES, Profile, profile_for
from .replies import reply_text, thinking_text
from .scheduler import LOAD_ERROR, LoadOptions
from .server import REQUEST_LOG_SIZE, FakeOllama, Outcome, RequestRecord, start
from .wire import JsonObject

__all__ = [
    "BUSY_MESSAGE",
    "LOAD_ERROR",
    "MIDSTREAM_ERROR",
    "PROFILES",
    "REQUEST_LOG_SIZE",
    "RUNNER_GONE_ERROR",
    "FailMode",
    "FakeOllama",
    "JsonObject",
    "LoadOptions",
    "Outcome",
    "Profile",
    "RequestRecord",
    "SimConfig",
    "ToolMode",
    "build_arg_parser",
    "config_from_args",
    "main",
    "parse_go_duration",
    "parse_keep_alive",
    "profile_for",
    "reply_text",
    "serve",
    "start",
    "thinking_text",
]
