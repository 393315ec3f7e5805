"""Benchmark: the server against direct (simulated) Ollama under the same streaming load.

``python -m loadtest.bench`` starts the Ollama simulator (``loadtest.fake_ollama``) and
the server (``python -m server``) as child processes (:mod:`loadtest.processes`), then,
for each concurrency level, drives the same closed-loop load (N virtual clients, each
streaming one chat turn after another over its own keep-alive connection or websocket)
against each target in turn:

- ``direct``: ``POST /api/chat`` on the simulator, NDJSON; a token is a line with a
  non-empty ``message.content``;
- ``sse``: ``POST /v1/chat/completions`` on the server with a VAPI-shaped body, SSE; a
  token is a ``data:`` event with a non-empty ``choices[0].delta.content``;
- ``ws``: the server's ``/ws``, one socket per virtual client kept open across its turns;
  a turn is a ``chat`` frame with the same messages and settings as the SSE body, a
  token is a ``delta`` frame of that turn with non-empty ``content``, and the turn ends
  at its ``done`` (``stop`` or ``length``; anything else, or an ``error``, fails it);
- ``retell``: the server's ``/llm-websocket/{call_id}``, one socket (a call) per virtual
  client; a turn is a ``response_required`` frame with the same conversation as Retell's
  transcript (the server adds the system prompt: ``--system-prompt``), a token is a
  ``response`` frame of that ``response_id`` with non-empty ``content``, and the turn ends
  at its ``content_complete`` frame (one without any content fails it).

By default the levels are 1, 50 and 200, and each level runs direct, then the server
targets, then direct again: the two direct runs bracket the server runs, are pooled as
their baseline, and their difference is printed as the drift of the machine over the
level. ``--scaling`` runs the levels 1, 10, 50, 200 and 500 instead and writes the
tables as markdown (``--markdown``, default ``bench-results/scaling.md``) and a PNG of
TTFT p50/p99 against concurrency per target (``--plot``, default
``bench-results/scaling.png``); either file is written by any run that is given its path.

Each run has a discarded warm-up, then a measured window in which the load is steady.
Per run it reports TTFT (request or chat frame sent to first non-empty content)
p50/p90/p99, ITL (gap between successive content tokens of a stream) p50/p99, content
tokens per second over the window, errors with their reasons, and CPU per content token
of the server, the simulator and the load generator itself (on-CPU time of each process
over the window: ``/proc/<pid>/task/*/schedstat``, nanosecond resolution, checked
against psutil's user+system, 10 ms ticks), and how busy the machine was, in total and
by programs other than these three. The "server vs direct" section checks the deltas
against the latency and CPU targets and marks each PASS or MISS.

The load generator is this process: uvloop, one :class:`asyncio.Protocol` per
connection. HTTP has a hand-written HTTP/1.1 response parser (chunked or sized bodies);
the websocket a minimal RFC 6455 client (:class:`WsConnection`: handshake, masked client
frames, unmasked server text frames, ping answered by pong, close). Both take one clock
reading per ``data_received`` and one ``orjson.loads`` per line, event or frame.

A target is "how one virtual client opens a stream and records its token arrival
times" (:class:`Target`, :class:`TargetClient`), registered in ``TARGETS``.

The children are always stopped: on return, on error, on Ctrl-C and SIGTERM, and (by
``PR_SET_PDEATHSIG``) if this process is killed. A stream that fails or exceeds
``--timeout`` counts as an error with its reason. Exit status: 0 when every checked
target passes, 1 when one is missed, 2 when a child fails, 130 when interrupted.

The modules: ``settings`` (the command line, the children's arguments), ``streams``
(stream records, token parsers), ``http`` and ``websocket`` (the client protocols),
``targets``, ``cpu`` (CPU accounting), ``run`` (one run, the plan of runs), ``stats``,
``compare`` (server against direct), ``report`` (printed tables, markdown), ``plot``
(the PNG) and ``cli`` (the command itself).

Two scenarios replay multi-turn calls through the server against the simulator's prompt
cache: ``python -m loadtest.bench.cache`` (one Ollama: a call's TTFT per turn, its slot
warm or taken between turns) and ``python -m loadtest.bench.fleet`` (several Ollamas:
routing policies on multi-slot and one-slot Ollamas, with and without priming, with
per-call system prompts, with failover); ``calls`` is what they share.
"""

from __future__ import annotations

from .cli import main
from .http import HttpConnection
from .settings import parse_args
from .stats import percentile
from .streams import NdjsonTokens, SseTokens, StreamFailed, StreamRecord
from .targets import TARGETS, HttpTarget, RetellTarget, Target, TargetClient, WsTarget
from .websocket import RetellConnection, WsConnection, ws_connect, ws_frame

__all__ = [
    "TARGETS",
    "HttpConnection",
    "HttpTarget",
    "NdjsonTokens",
    "RetellConnection",
    "RetellTarget",
    "SseTokens",
    "StreamFailed",
    "StreamRecord",
    "Target",
    "TargetClient",
    "WsConnection",
    "WsTarget",
    "main",
    "parse_args",
    "percentile",
    "ws_connect",
    "ws_frame",
]
