"""Phone calls through the server, as callers make them, and what each Ollama did with them.

A call is a conversation with one assistant: every turn resends the system prompt and
the whole history (as VAPI does) with what the caller just said, and the reply, as
streamed, becomes history for the next turn. :func:`make_scripts` writes the calls of a
run from a seed (what each caller says, when the call starts, how long the caller speaks
between turns), so every configuration compared in one run replays the same calls;
:func:`with_caller_details` gives each call a system prompt of its own.

Each turn is ``POST /v1/chat/completions`` on the server with a VAPI-shaped body, with
VAPI's ``call.id`` or (keyless) without any key, over the call's own keep-alive
connection (:class:`Conversation`). Its TTFT runs from writing the request to the first
non-empty content. A turn that fails (an HTTP error, an error event, no ``[DONE]``, its
time limit) ends its call, as any error ends a VAPI call.

Afterwards :func:`served_turns` reads the simulators' request logs (``GET
/_sim/requests``) and finds, for every turn, each attempt at it (the simulator, the slot,
how the slot was chosen, and how many prompt tokens were cached there, restored from the
RAM cache, and evaluated). A record belongs to a call by its first user message (unique
per call) and to a turn by its number of user messages.

The simulated GPU is :data:`H100_8B`: Llama 3.1 8B Q4_K_M (``llama3.1:8b``) on one
H100 PCIe, from llama.cpp's ``llama-bench`` (build e8496488) as published in
XiongjieDai/GPU-Benchmarks-on-LLM-Inference (``LLaMA 3/Professional GPUs/
H100_PCIe_v3.ipynb``): prompt processing 7,760 tokens/s (pp1024), generation 144.5
tokens/s (tg1024).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from ..processes import Child, start_server, start_simulators
from .http import HttpConnection, http_connect, http_get_json
from .streams import BodyParser, StreamFailed, decode_json

__all__ = [
    "H100_8B",
    "CallScript",
    "Conversation",
    "Gpu",
    "Served",
    "TurnResult",
    "api_key",
    "fetch_log",
    "fetch_metrics",
    "make_scripts",
    "run_call",
    "run_scenario",
    "served_turns",
    "start_fleet",
    "system_prompt",
    "wait_warm",
    "with_caller_details",
]


@dataclass(frozen=True)
class Gpu:
    """A model on a GPU, as the simulator's timing knobs (milliseconds)."""

    first_token_ms: float  # the fixed part of the time to first token
    prefill_ms_per_token: float  # per prompt token evaluated (not cached)
    restore_ms_per_token: float  # per token restored from llama-server's RAM cache
    itl_ms: float  # between tokens

    def simulator_args(self) -> list[str]:
        """The simulator flags for this GPU."""
        return [
            "--ttft", f"{self.first_token_ms:g}",
            "--ttft-per-prompt-token", f"{self.prefill_ms_per_token:g}",
            "--cache-restore-per-token", f"{self.restore_ms_per_token:g}",
            "--itl", f"{self.itl_ms:g}",
        ]  # fmt: skip

    @property
    def prefill_rate(self) -> float:
        """Prompt tokens evaluated per second (the server's ``--prefill-rate``)."""
        return 1000.0 / self.prefill_ms_per_token

    def first_token(self, evaluated: int, restored: int) -> float:
        """The simulated time to first token (ms) of a prompt that costs this much."""
        return (
            self.first_token_ms
            + evaluated * self.prefill_ms_per_token
            + restored * self.restore_ms_per_token
        )


# Prefill 1000 / 7,760 ms per token; between tokens 1000 / 144.5 ms. The first token
# of a short evaluation costs one forward pass (one token's generation time, 6.9 ms)
# plus Ollama's own work per request (rendering, tokenising, its HTTP hop to
# llama-server), taken as 3 ms. A RAM-cache restore copies 128 KiB of f16 KV state per
# token from host memory to the GPU, taken at about 13 GB/s: 0.01 ms per token.
H100_8B = Gpu(
    first_token_ms=10.0, prefill_ms_per_token=0.129, restore_ms_per_token=0.01, itl_ms=6.9
)

_ASSISTANTS = (
    ("Ava", "Northwind Dental", "dental clinic"),
    ("Max", "Harbor Auto Repair", "car repair shop"),
)
_RULES = (
    "Greet the caller by name once you know it, and keep every answer to one or two "
    "short sentences, because the caller hears them spoken.",
    "Never read out lists, links, prices with cents, or anything formatted; say numbers "
    "the way a person says them on the phone.",
    "Appointments can be booked from Monday to Saturday between eight in the morning and "
    "six in the evening; offer the two nearest free times first.",
    "Before you book, confirm the caller's full name, a phone number to reach them, and "
    "the reason for the visit, then read the booking back once.",
    "If the caller is upset, acknowledge it in a few words, apologise once, and move on "
    "to what you can do for them right now.",
    "Cancellations are free up to twenty-four hours before the appointment; later ones "
    "cost a fee that the front desk explains, not you.",
    "You cannot give medical, legal or financial advice; offer to book a visit or to pass "
    "a message to a member of staff instead.",
    "When you do not understand, ask the caller to repeat, once; after that, offer to "
    "transfer them to a person.",
    "Do not ask for card numbers, passwords or any identity document over the phone, "
    "whatever the caller offers.",
    "Opening hours change on public holidays; when a caller asks about one, say the "
    "office will confirm by text message the day before.",
    "If the caller wants a person, say you are transferring them, and end your turn "
    "without asking anything else.",
    "Keep the tone warm and plain: no jargon, no filler phrases, and never pretend to be "
    "a person when you are asked whether you are one.",
)
_NAMES = (
    "Maria Lopez", "James Carter", "Aisha Khan", "Tom Becker", "Yuki Tanaka", "Liam Walsh",
    "Sofia Rossi", "Noah Fischer", "Emma Dubois", "Omar Haddad", "Chloe Martin", "Ivan Petrov",
)  # fmt: skip
_SAYINGS = (
    "I would like to book an appointment for next week, ideally in the morning if you have "
    "anything free.",
    "Could you tell me whether you are open on Saturday, and until what time?",
    "Actually, Tuesday does not work for me after all, is there anything on Thursday?",
    "Yes, that time is fine, please go ahead and put me down for it.",
    "My phone number is the one I am calling from, you can text me there.",
    "Sorry, I did not catch that, could you say the time again please?",
    "How long does the visit usually take, because I need to get back to work after.",
    "Is there parking near you, or should I take the bus?",
    "And what happens if I need to cancel at the last minute?",
    "Great, thank you, that is everything I needed for today.",
    "Can my daughter come to the same appointment, or does she need her own?",
    "I was there last month and I think I left my umbrella, has anyone found it?",
)


def system_prompt(tokens: int, assistant: int = 0) -> str:
    """A phone assistant's system prompt of ``tokens`` tokens (four characters each).

    ``assistant`` 0 and 1 are two different assistants: their prompts differ from the
    ninth character on.
    """
    name, business, kind = _ASSISTANTS[assistant % len(_ASSISTANTS)]
    parts = [f"You are {name}, the phone assistant of {business}, a {kind}."]
    size = len(parts[0])
    rule = 0
    while size < tokens * 4:
        text = f" Rule {rule + 1}: {_RULES[(rule + assistant * 5) % len(_RULES)]}"
        parts.append(text)
        size += len(text)
        rule += 1
    return "".join(parts)[: tokens * 4].rstrip()


@dataclass(frozen=True)
class CallScript:
    """One call: who calls, what they say each turn, when they start, how long they speak."""

    index: int
    call_id: str
    system: str
    users: tuple[str, ...]
    start: float  # seconds after the run starts
    thinks: tuple[float, ...]  # seconds between a reply's end and the next turn


def make_scripts(
    count: int,
    turns: int,
    system: str,
    think: float,
    jitter: float,
    spread: float,
    seed: int,
) -> list[CallScript]:
    """``count`` calls of ``turns`` turns, starting uniformly over ``spread`` seconds.

    The caller speaks ``think`` ± ``jitter`` seconds (uniform) before each later turn.
    The first thing a caller says names them and their account, so it is unique to the
    call (the request logs are joined on it).
    """
    rng = random.Random(seed)
    scripts = []
    for index in range(count):
        name, account = _caller(index)
        first = (
            f"Hello, this is {name}, account number {account}. "
            f"{_SAYINGS[rng.randrange(len(_SAYINGS))]}"
        )
        later = [_SAYINGS[rng.randrange(len(_SAYINGS))] for _ in range(turns - 1)]
        thinks = tuple(max(0.0, think + rng.uniform(-jitter, jitter)) for _ in later)
        scripts.append(
            CallScript(
                index=index,
                call_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                system=system,
                users=(first, *later),
                start=rng.uniform(0.0, spread) if spread > 0 else 0.0,
                thinks=thinks,
            )
        )
    return scripts


def _caller(index: int) -> tuple[str, int]:
    """Call ``index``'s caller: their name and account number."""
    return _NAMES[index % len(_NAMES)], 4000 + index * 37


_PLANS = ("basic", "family", "premium")
_MONTHS = ("January", "March", "May", "July", "September", "November")


def with_caller_details(scripts: Sequence[CallScript]) -> list[CallScript]:
    """The same calls, each system prompt ending with a block about its caller.

    As VAPI's dynamic variables fill in an assistant's prompt: the shared prompt, then
    the caller's name and account details (about 60 tokens), so no two calls send the
    same system prompt.
    """
    calls = []
    for script in scripts:
        index = script.index
        name, account = _caller(index)
        details = (
            f"\n\nAbout this caller: {name}, account number {account}, on the "
            f"{_PLANS[index % len(_PLANS)]} plan since {2015 + index % 10}. Last visit: "
            f"{_MONTHS[index % len(_MONTHS)]} {index % 28 + 1}. Open balance: "
            f"{index * 13 % 200} dollars. Next appointment: none booked. Call them by "
            "their first name and never read the account number out."
        )
        calls.append(replace(script, system=script.system + details))
    return calls


@dataclass
class TurnResult:
    """One turn as the caller saw it."""

    call: int
    turn: int  # 1 for the first
    sent_at: float  # seconds after the run started
    ttft_ms: float | None
    tokens: int  # content tokens received
    error: str | None = None


class _Reply(BodyParser):
    """The server's SSE answer: when the first content came, the content, its tokens."""

    def __init__(self) -> None:
        self.first_at: float | None = None
        self.parts: list[str] = []
        self.done = False
        self._partial = b""

    def feed(self, data: bytes, now: float) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line, now)

    def finish(self, now: float) -> None:
        if self._partial:
            self._line(self._partial, now)
            self._partial = b""
        if not self.done:
            raise StreamFailed("SSE ended without data: [DONE]")

    def _line(self, line: bytes, now: float) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        chunk = decode_json(payload, "SSE data")
        if not isinstance(chunk, dict):
            raise StreamFailed(f"SSE data is not an object: {payload[:80]!r}")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise StreamFailed(f"error event: {str(chunk.get('error'))[:120]}")
        for choice in choices:
            content = (choice.get("delta") or {}).get("content")
            if content:
                if self.first_at is None:
                    self.first_at = now
                self.parts.append(content)


class Conversation:
    """One call's side of the line: its history and its keep-alive connection."""

    def __init__(
        self, script: CallScript, host: str, port: int, api_key: str | None, keyed: bool
    ) -> None:
        self.script = script
        self.host = host
        self.port = port
        self.keyed = keyed
        self.messages: list[dict[str, str]] = [{"role": "system", "content": script.system}]
        self._headers = [
            "POST /v1/chat/completions HTTP/1.1",
            f"Host: {host}:{port}",
            "User-Agent: loadtest-bench",
            "Content-Type: application/json",
            "Accept: */*",
        ]
        if api_key:
            self._headers.append(f"Authorization: Bearer {api_key}")
        self._conn: HttpConnection | None = None
        self.turns = 0

    def _request(self) -> bytes:
        body: dict[str, Any] = {
            "model": "gpt-4o",
            "messages": self.messages,
            "temperature": 0.5,
            "max_tokens": 250,
            "stream": True,
            "metadata": {},
        }
        if self.keyed:
            body["call"] = {
                "id": self.script.call_id,
                "orgId": "bench-org",
                "type": "inboundPhoneCall",
                "status": "in-progress",
            }
        data = orjson.dumps(body)
        head = [*self._headers, f"Content-Length: {len(data)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + data

    async def turn(self, started: float, limit: float) -> TurnResult:
        """Say the next line and hear the reply; a failed turn has ``error`` set.

        ``started`` is the run's start (``time.perf_counter``); ``limit`` the seconds the
        turn may take.
        """
        self.turns += 1
        self.messages.append({"role": "user", "content": self.script.users[self.turns - 1]})
        request = self._request()
        reply = _Reply()
        result = TurnResult(self.script.index, self.turns, time.perf_counter() - started, None, 0)
        sent = 0.0
        try:
            async with asyncio.timeout(limit):
                for attempt in range(2):
                    conn = await self._connection()
                    reused = conn.received_any
                    sent = time.perf_counter()
                    result.sent_at = sent - started
                    try:
                        await conn.request(request, reply)
                    except StreamFailed:
                        # A keep-alive connection the server closed while the caller
                        # spoke: retry once on a new one, as any HTTP client does.
                        if attempt == 0 and reused and conn.closed and not conn.received_any:
                            continue
                        raise
                    break
        except StreamFailed as exc:
            result.error = str(exc)
        except TimeoutError:
            result.error = f"no complete reply within {limit:g} s"
        if result.error is not None:
            self.close()
        if reply.first_at is not None:
            result.ttft_ms = (reply.first_at - sent) * 1000
        result.tokens = len(reply.parts)
        self.messages.append({"role": "assistant", "content": "".join(reply.parts)})
        return result

    async def _connection(self) -> HttpConnection:
        conn = self._conn
        if conn is None or conn.closed:
            try:
                conn = await http_connect(self.host, self.port)
            except OSError as exc:
                raise StreamFailed(f"connect failed: {exc.strerror or exc}") from None
            self._conn = conn
        return conn

    def close(self) -> None:
        """Drop the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def run_call(
    script: CallScript,
    host: str,
    port: int,
    api_key: str | None,
    keyed: bool,
    started: float,
    limit: float,
) -> list[TurnResult]:
    """Make one call from start to hang-up (or to its first failed turn)."""
    call = Conversation(script, host, port, api_key, keyed)
    results: list[TurnResult] = []
    try:
        await asyncio.sleep(max(0.0, started + script.start - time.perf_counter()))
        for index in range(len(script.users)):
            if index:
                await asyncio.sleep(script.thinks[index - 1])
            result = await call.turn(started, limit)
            results.append(result)
            if result.error is not None:
                break
    finally:
        call.close()
    return results


@dataclass(frozen=True)
class Served:
    """One attempt at a turn, as a simulator logged it (``backend``: its index)."""

    backend: int
    slot: int | None
    selection: str | None
    prompt: int
    cached: int
    restored: int
    evaluated: int
    outcome: str
    received_at: float  # time.time() when the simulator received it
    first_byte_ms: float | None  # from then to its first byte (the first token's line)


class _Text(BodyParser):
    def __init__(self) -> None:
        self.body = bytearray()

    def feed(self, data: bytes, now: float) -> None:
        self.body += data

    def finish(self, now: float) -> None:
        pass


async def fetch_metrics(server: Child, api_key: str | None) -> dict[str, float]:
    """The server's unlabelled ``/metrics`` samples by name; RuntimeError if unreadable."""
    host, port = server.url.split("://", 1)[1].rsplit(":", 1)
    head = f"GET /metrics HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    if api_key:
        head += f"Authorization: Bearer {api_key}\r\n"
    text = _Text()
    conn: HttpConnection | None = None
    try:
        async with asyncio.timeout(10.0):
            conn = await http_connect(host, int(port))
            await conn.request((head + "\r\n").encode(), text)
    except (OSError, TimeoutError, StreamFailed) as exc:
        raise RuntimeError(f"could not read the server's /metrics: {exc}") from None
    finally:
        if conn is not None:
            conn.close()
    samples = {}
    for line in text.body.decode().splitlines():
        name, _, value = line.partition(" ")
        if name and not name.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def api_key(server_args: Sequence[str]) -> str | None:
    """The key given to the server in ``server_args`` (``--api-key K`` or ``--api-key=K``)."""
    for i, arg in enumerate(server_args):
        if arg == "--api-key" and i + 1 < len(server_args):
            return server_args[i + 1]
        if arg.startswith("--api-key="):
            return arg.split("=", 1)[1]
    return None


async def fetch_log(sim: Child) -> list[dict[str, Any]]:
    """A simulator's request log, oldest first; RuntimeError if it cannot be read."""
    host, port = sim.url.split("://", 1)[1].rsplit(":", 1)
    log = await http_get_json(host, int(port), "/_sim/requests", wait=30.0)
    if not isinstance(log, list):
        raise RuntimeError(f"could not read the request log of {sim.name} at {sim.url}")
    return log


def _messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    body = record.get("body")
    messages = body.get("messages") if isinstance(body, dict) else None
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _since(record: dict[str, Any], name: str) -> float | None:
    at, received = record.get(name), record.get("received_at")
    if isinstance(at, int | float) and isinstance(received, int | float):
        return (at - received) * 1000
    return None


def served_turns(
    logs: Sequence[Sequence[dict[str, Any]]], scripts: Sequence[CallScript]
) -> dict[tuple[int, int], list[Served]]:
    """Every attempt at each (call, turn), oldest first (``logs[i]`` is backend i's log).

    Records that never got a slot (refused, or waiting when the log was read) are left out.
    """
    calls = {script.users[0]: script.index for script in scripts}
    served: dict[tuple[int, int], list[Served]] = {}
    for backend, log in enumerate(logs):
        for record in log:
            if record.get("slot") is None:
                continue
            users = [str(m.get("content")) for m in _messages(record) if m.get("role") == "user"]
            call = calls.get(users[0]) if users else None
            if call is None:
                continue
            served.setdefault((call, len(users)), []).append(
                Served(
                    backend=backend,
                    slot=record.get("slot"),
                    selection=record.get("slot_selection"),
                    prompt=int(record.get("prompt_tokens") or 0),
                    cached=int(record.get("cached_tokens") or 0),
                    restored=int(record.get("restored_tokens") or 0),
                    evaluated=int(record.get("evaluated_tokens") or 0),
                    outcome=str(record.get("outcome")),
                    received_at=float(record.get("received_at") or 0.0),
                    first_byte_ms=_since(record, "first_byte_at"),
                )
            )
    for attempts in served.values():
        attempts.sort(key=lambda attempt: attempt.received_at)
    return served


def start_fleet(
    count: int, sim_args: Sequence[str], server_args: Sequence[str], log_dir: Any
) -> tuple[list[Child], Child]:
    """``count`` simulators and one server with every one of them as an ``--ollama-url``."""
    sims = start_simulators(count, sim_args, log_dir)
    try:
        more = [arg for sim in sims[1:] for arg in ("--ollama-url", sim.url)]
        server = start_server(sims[0].url, [*more, *server_args], log_dir)
    except BaseException:
        for sim in sims:
            sim.stop()
        raise
    return sims, server


async def wait_warm(server: Child, count: int, wait: float = 60.0) -> None:
    """Return once ``/health`` shows all ``count`` backends warm (their slots primed)."""
    host, port = server.url.split("://", 1)[1].rsplit(":", 1)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        server.check_alive()
        health = await http_get_json(host, int(port), "/health")
        backends = health.get("backends") if isinstance(health, dict) else None
        if (
            isinstance(backends, list)
            and len(backends) == count
            and all(isinstance(b, dict) and b.get("warm") for b in backends)
        ):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the server's {count} backends were not all warm within {wait:g} s")


def run_scenario(name: str, work: Callable[[Path, float], int]) -> int:
    """Run a scenario: ``work(log_dir, load_before)`` gives its exit status.

    The children's logs go to a fresh folder, kept (and named) only when something
    failed: 130 after ^C, 2 when a child failed (a ``RuntimeError``).
    """
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    failed = True
    try:
        status = work(log_dir, os.getloadavg()[0])
        failed = False
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    finally:
        if failed:
            print(f"child logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
