"""Locust load test for the voice server: simulated phone calls over SSE and websockets.

Each locust user is one phone line that places calls back to back. A call is a
conversation of ``--turns`` turns: a system prompt of about ``--system-tokens``
tokens, a history that grows by the caller's short line and the assistant's reply
at every turn, and a think time (``--think-min`` to ``--think-max`` seconds, the
reply being spoken and the caller answering) before each request.

* :class:`SSEUser` posts VAPI-shaped bodies to ``{host}/v1/chat/completions`` with
  ``"stream": true`` and reads the ``data:`` lines as they arrive.
* :class:`WebSocketUser` opens one ``{host}/ws`` socket per call (the protocol in
  ``server/doors/ws.py``) and now and then barges in (``--barge-in``): it sends the
  next turn while a reply streams, and checks that the old turn's ``done`` arrives
  before any frame of the new turn.
* :class:`RetellUser` places calls as Retell does, one socket per call to
  ``{host}/llm-websocket/{call id}`` (``server/doors/retell.py``): the opening
  response, then per turn a ``ping_pong``, an ``update_only`` and a
  ``response_required``; a barge-in is the next ``response_required``, whose newer
  ``response_id`` supersedes the answer in flight. Retell sends no system prompt:
  the server's ``--system-prompt`` stands for it.

Locust's own timing of a streamed request stops at the response headers, so the
voice metrics are reported as entries of their own, request type ``SSE``, ``WS`` or
``Retell``:

* ``ttft``: from sending the request to the first non-empty content;
* ``itl``: every gap between two consecutive content tokens (its request count is
  the number of gaps, its rate about the tokens per second);
* ``turn``: from sending the request to the end of the reply (``[DONE]``, ``done``
  or ``content_complete``), with the reply's pieces of content (tokens, on this
  server) as the content size; every failed turn is a failure of this entry, named
  by its reason;
* ``connect`` (WS, Retell): the websocket handshake (for Retell, up to the opening
  response);
* ``barge-in``: WS, from sending the interrupting turn to the old turn's ``done``;
  Retell, from sending the newer ``response_required`` to the older response's last
  frame (0 when none came after it);
* ``ping`` (Retell): a ``ping_pong`` and its answer.

A failed turn ends its call, as VAPI ends a call whose LLM request fails. Run it::

    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8000

(or without ``--headless`` for the web UI, which shows the options below under its
custom parameters); name ``SSEUser``, ``WebSocketUser`` or ``RetellUser`` after the
options to run one kind only. The options and their environment variables are in
``_OPTIONS`` below and in ``docs/load-testing.md`` (locust's ``--help`` does not list
a locustfile's options).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from geventhttpclient.response import HTTPSocketPoolResponse
from locust import FastHttpUser, User, events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FAILURE_EXCEPTIONS
from locust.env import Environment
from locust.event import EventHook
from locust.exception import StopTest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

__all__ = ["RetellUser", "SSEUser", "Settings", "WebSocketUser"]

log = logging.getLogger("locustfile")

CHAT_PATH: Final = "/v1/chat/completions"
WS_PATH: Final = "/ws"
RETELL_PATH: Final = "/llm-websocket"
TEMPERATURE: Final = 0.5  # VAPI's default

_SYSTEM_PROMPT: Final = (
    "You are Maya, the receptionist of Brightside Dental Clinic, answering the phone. "
    "Speak naturally, in one or two short sentences, because everything you say is read "
    "aloud to the caller. Never use lists, markdown, emoji or abbreviations that sound odd "
    "when spoken. Ask one question at a time. The clinic is open Monday to Friday from "
    "eight in the morning to six in the evening and on Saturday mornings until noon. "
)
_POLICIES: Final = (
    "New patients need a first examination of forty-five minutes before any treatment. ",
    "Cleanings take thirty minutes and are booked with a hygienist, not a dentist. ",
    "Emergencies with pain or swelling are seen the same day; offer the first free slot. ",
    "Cancellations less than twenty-four hours ahead cost twenty-five dollars. ",
    "Confirm the caller's full name and date of birth before booking or changing anything. ",
    "If the caller asks about prices, give the range and offer to send a written estimate. ",
    "The clinic accepts most insurance plans; ask for the insurer's name and member number. ",
    "Parking is free behind the building; the entrance is on the side of the pharmacy. ",
    "Never give medical advice; offer an appointment or, for emergencies, the hotline. ",
    "If you cannot help, offer to take a message for the office manager, who calls back. ",
)
_CALLER_LINES: Final = (
    "Hi, I'd like to book a cleaning, please.",
    "Do you have anything next Tuesday afternoon?",
    "My name is Jordan Ellis, born March third, nineteen eighty-six.",
    "Is there something earlier in the morning?",
    "Okay, that works. Do you take Delta Dental?",
    "How long will the appointment take?",
    "Where do I park?",
    "Actually, I also have a tooth that's been hurting since yesterday.",
    "It's the lower left side, and it's a bit swollen.",
    "Can the dentist look at it the same day?",
    "How much would that cost without insurance?",
    "Great, can you send me a text to confirm?",
    "Sorry, could you repeat the time?",
    "Thanks, that's all. Bye!",
)


class TurnFailure(Exception):
    """A failed turn; its message, which is also its repr, is the reason locust lists."""

    def __repr__(self) -> str:
        return str(self)


# Options


@dataclass(frozen=True, slots=True)
class _Option:
    dest: str
    env: str
    kind: Callable[[str], Any]
    default: str
    help: str
    secret: bool = False


# Defaults are strings, parsed like a value from the command line or the environment.
_OPTIONS: Final = (
    _Option("api_key", "API_KEY", str, "", "key sent as 'Authorization: Bearer'", secret=True),
    _Option("model", "MODEL", str, "llama3.1:8b", "model named in requests"),
    _Option("system_tokens", "CALL_SYSTEM_TOKENS", int, "300", "system prompt size in tokens"),
    _Option("turns", "CALL_TURNS", int, "6", "LLM requests per call"),
    _Option("think_min", "CALL_THINK_MIN", float, "3", "shortest think time before a turn, s"),
    _Option("think_max", "CALL_THINK_MAX", float, "8", "longest think time before a turn, s"),
    _Option("max_tokens", "CALL_MAX_TOKENS", int, "250", "max_tokens of each request"),
    _Option("barge_in", "CALL_BARGE_IN", float, "0.1", "chance that a WS turn is interrupted"),
    _Option("token_timeout", "CALL_TOKEN_TIMEOUT", float, "20", "s without a token: failure"),
)


def _invalid(dest: str, value: float, problem: str) -> ValueError:
    env = next(option.env for option in _OPTIONS if option.dest == dest)
    return ValueError(f"--{dest.replace('_', '-')} ({env}) is {value:g}: {problem}")


@dataclass(frozen=True, slots=True)
class Settings:
    """The calls' shape and the server's credentials, from locust's options."""

    api_key: str
    model: str
    system_tokens: int
    turns: int
    think_min: float
    think_max: float
    max_tokens: int
    barge_in: float
    token_timeout: float

    def check(self) -> None:
        """Raise ValueError naming the first option that is out of range."""
        for name in ("system_tokens", "think_min", "think_max"):
            if getattr(self, name) < 0:
                raise _invalid(name, getattr(self, name), "must not be negative")
        for name in ("turns", "max_tokens", "token_timeout"):
            if getattr(self, name) <= 0:
                raise _invalid(name, getattr(self, name), "must be above zero")
        if not 0 <= self.barge_in <= 1:
            raise _invalid("barge_in", self.barge_in, "must be between 0 and 1")
        if self.think_max < self.think_min:
            raise _invalid("think_max", self.think_max, f"must not be below {self.think_min:g}")

    @classmethod
    def from_options(cls, options: argparse.Namespace | None) -> Settings:
        """Settings from parsed options, or from the environment when locust parsed none.

        Values are not range-checked here (see :meth:`check`).
        """
        values: dict[str, Any] = {}
        for option in _OPTIONS:
            value = getattr(options, option.dest, None)
            if value is None:
                value = option.kind(os.environ.get(option.env) or option.default)
            values[option.dest] = value
        return cls(**values)

    def think(self, rng: random.Random) -> float:
        """A think time in seconds."""
        return rng.uniform(self.think_min, self.think_max)


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_options(parser: LocustArgumentParser) -> None:
    for option in _OPTIONS:
        parser.add_argument(
            f"--{option.dest.replace('_', '-')}",
            dest=option.dest,
            type=option.kind,
            env_var=option.env,
            default=option.kind(option.default),
            help=f"{option.help} ({option.env}, default {option.default or 'none'})",
            is_secret=option.secret,
        )


@events.init.add_listener  # type: ignore[untyped-decorator]
def _check_options(environment: Environment, **_: Any) -> None:
    """Options from the command line or the environment: a bad one stops locust at once."""
    options = environment.parsed_options
    try:
        Settings.from_options(options).check()
        if options is not None and options.headless and not environment.host:
            raise ValueError("give the server's base URL with --host (or LOCUST_HOST)")
    except ValueError as exc:
        print(f"locustfile: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _check_web_options(environment: Environment, **_: Any) -> None:
    """Options edited in the web UI: a bad one stops the test as it starts."""
    try:
        Settings.from_options(environment.parsed_options).check()
    except ValueError as exc:
        log.error("not starting: %s", exc)
        if environment.runner is not None:
            environment.runner.greenlet.spawn(environment.runner.stop)


# Calls


def system_prompt(tokens: int) -> str:
    """A receptionist's system prompt of about ``tokens`` tokens (four characters each)."""
    text = _SYSTEM_PROMPT
    index = 0
    while len(text) < tokens * 4:
        text += _POLICIES[index % len(_POLICIES)]
        index += 1
    if len(text) > tokens * 4:
        text = text[: tokens * 4].rsplit(" ", 1)[0]
    return text.strip()


class Conversation:
    """One call's messages, growing by a caller line and the assistant's reply each turn."""

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self.call_id = str(uuid.uuid4())
        self.messages: list[dict[str, str]] = []
        prompt = system_prompt(settings.system_tokens)
        if prompt:
            self.messages.append({"role": "system", "content": prompt})
        self._settings = settings
        self._line = rng.randrange(len(_CALLER_LINES))
        self._turns = 0

    def ask(self) -> str:
        """Add the caller's next line; returns the new turn's id."""
        self.messages.append({"role": "user", "content": _CALLER_LINES[self._line]})
        self._line = (self._line + 1) % len(_CALLER_LINES)
        self._turns += 1
        return f"{self.call_id}.{self._turns}"

    def heard(self, reply: str) -> None:
        """Add what the assistant said (a barged-in reply only up to the interruption)."""
        if reply:
            self.messages.append({"role": "assistant", "content": reply})

    def body(self) -> dict[str, Any]:
        """The request fields for the current history, with VAPI's extra fields."""
        return {
            "model": self._settings.model,
            "messages": self.messages,
            "temperature": TEMPERATURE,
            "max_tokens": self._settings.max_tokens,
            "call": {"id": self.call_id, "type": "webCall", "status": "in-progress"},
            "metadata": {},
        }


def report(
    request: EventHook,
    kind: str,
    name: str,
    ms: float,
    length: int = 0,
    exception: Exception | None = None,
) -> None:
    """Report one measurement as a locust request: type ``kind``, name ``name``."""
    request.fire(  # type: ignore[no-untyped-call]
        request_type=kind,
        name=name,
        response_time=ms,
        response_length=length,
        exception=exception,
        context={},
    )


class TurnClock:
    """Times one streamed reply and reports it as locust entries of ``kind`` (SSE or WS)."""

    def __init__(self, request: EventHook, kind: str) -> None:
        self._request = request
        self._kind = kind
        self.started = time.perf_counter()
        self._last: float | None = None
        self.tokens = 0
        self._parts: list[str] = []

    def token(self, text: str) -> None:
        """A non-empty piece of content arrived: report time to first token or the gap."""
        now = time.perf_counter()
        last = self._last
        if last is None:
            self._fire("ttft", (now - self.started) * 1000)
        else:
            self._fire("itl", (now - last) * 1000)
        self._last = now
        self.tokens += 1
        self._parts.append(text)

    @property
    def text(self) -> str:
        """The reply so far."""
        return "".join(self._parts)

    def done(self) -> None:
        """The reply ended well: report the turn."""
        self._fire("turn", (time.perf_counter() - self.started) * 1000, self.tokens)

    def failed(self, reason: str) -> None:
        """The turn failed: report it as a failure named by ``reason``."""
        elapsed = (time.perf_counter() - self.started) * 1000
        self._fire("turn", elapsed, self.tokens, TurnFailure(reason))

    def _fire(
        self, name: str, ms: float, length: int = 0, exception: Exception | None = None
    ) -> None:
        report(self._request, self._kind, name, ms, length, exception)


def _describe(exc: BaseException) -> str:
    """A short, stable reason for a transport error (no URL in it)."""
    original = getattr(exc, "original", None)  # geventhttpclient's RetriesExceeded: the cause
    if isinstance(original, BaseException):
        return _describe(original)
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "text", None)  # geventhttpclient's errors: the message without the URL
    if not isinstance(text, str):
        text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_reason(status: int, body: bytes | None) -> str:
    """``HTTP <status> <code>: <message>`` from an OpenAI error body, as far as it goes."""
    try:
        error = orjson.loads(body or b"null")["error"]
        return f"HTTP {status} {error['code']}: {error['message']}"[:200]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return f"HTTP {status}"


class SSEUser(FastHttpUser):
    """Calls over VAPI's custom-llm protocol: ``POST /v1/chat/completions``, streamed.

    FastHttpUser (geventhttpclient) rather than HttpUser (requests): it costs the load
    generator less CPU per token (about 30 against 41 µs here), and it lets a stream be
    read one line at a time as it arrives. Not with ``iter_lines``/``iter_content``:
    those wait for 1024 bytes, several tokens, which would hide the gaps between tokens.
    """

    weight = 1
    insecure = False  # the key goes over this connection: verify the server's certificate

    def __init__(self, environment: Environment) -> None:
        self.settings = Settings.from_options(environment.parsed_options)
        self.network_timeout = self.connection_timeout = self.settings.token_timeout
        super().__init__(environment)
        # Locust's own entry for the POST would time the headers only (this server sends
        # them with the first token); the turn's entries replace it.
        self.client.request_event = EventHook()  # type: ignore[no-untyped-call]
        self.rng = random.Random()
        self.headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",  # a compressing proxy would hold tokens back
        }
        if self.settings.api_key:
            self.headers["Authorization"] = f"Bearer {self.settings.api_key}"

    def wait_time(self) -> float:
        """The pause between two calls on this line."""
        return self.settings.think(self.rng)

    @task
    def call(self) -> None:
        """Place one call: think, then a turn, ``--turns`` times; a failed turn hangs up."""
        conversation = Conversation(self.settings, self.rng)
        for _ in range(self.settings.turns):
            time.sleep(self.settings.think(self.rng))
            conversation.ask()
            reply = self.turn(conversation)
            if reply is None:
                return
            conversation.heard(reply)

    def turn(self, conversation: Conversation) -> str | None:
        """Stream one reply; returns its text, or None when the turn failed."""
        body = conversation.body()
        body["stream"] = True
        payload = orjson.dumps(body).decode()
        clock = TurnClock(self.environment.events.request, "SSE")
        response = self.client.request(
            "POST", CHAT_PATH, data=payload, headers=self.headers, stream=True
        )
        stream = response._response  # geventhttpclient's own response, read line by line below
        if stream is None:
            error = getattr(response, "error", None)
            clock.failed(f"no response: {_describe(error) if error else 'unknown error'}")
            return None
        try:
            if response.status_code != 200:
                try:
                    error_body = response.content
                except FAILURE_EXCEPTIONS:
                    error_body = None
                clock.failed(_error_reason(response.status_code, error_body))
                return None
            reason = self._read_stream(stream, clock)
        finally:
            stream.release()  # closes the connection unless the response was read to its end
        if reason is not None:
            clock.failed(reason)
            return None
        clock.done()
        return clock.text

    @staticmethod
    def _read_stream(stream: HTTPSocketPoolResponse, clock: TurnClock) -> str | None:
        """Read ``data:`` lines up to ``[DONE]``; returns why the stream failed, or None."""
        try:
            while True:
                line = stream.readline(b"\n")
                if not line:
                    return "the stream ended without [DONE]"
                if not line.startswith(b"data:"):
                    continue  # the blank line after an event, a comment or another field
                data = line[5:].strip()
                if data == b"[DONE]":
                    return None if clock.tokens else "empty reply: [DONE] before any content"
                chunk = orjson.loads(data)
                choices = chunk.get("choices") if isinstance(chunk, dict) else None
                if not isinstance(choices, list):
                    error = chunk.get("error") if isinstance(chunk, dict) else None
                    if error is not None:
                        return f"error in the stream: {error}"[:200]
                    return "a chunk without a 'choices' list"
                for choice in choices:
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if content:
                        clock.token(content)
        except orjson.JSONDecodeError:
            return "a data line that is not JSON"
        except FAILURE_EXCEPTIONS as exc:
            return f"stream broken: {_describe(exc)}"


def ws_url(host: str, path: str = WS_PATH) -> str:
    """The websocket URL for an HTTP base URL: ``http(s)://h/p`` becomes ``ws(s)://h/p/ws``
    (or ``path`` instead of ``/ws``)."""
    base = host.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + path
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + path
    return base + path


def receive_frame(socket: ClientConnection, timeout: float) -> dict[str, Any]:
    """The next frame; raises TurnFailure when none comes or it is not a JSON object."""
    try:
        text = socket.recv(timeout=timeout)
    except TimeoutError:
        raise TurnFailure(f"no frame for {timeout:g} s") from None
    except ConnectionClosed as exc:
        raise TurnFailure(_closed(exc)) from None
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        frame = None
    if not isinstance(frame, dict):
        raise TurnFailure("a frame that is not a JSON object")
    return frame


class _SocketUser(User):
    """What a caller on one socket per call has: its URL, settings, auth and reports."""

    abstract = True
    path = WS_PATH
    kind = "WS"  # the request type its entries are reported under

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if self.host is None:
            raise StopTest("give the server's base URL with --host")
        self.url = ws_url(self.host, self.path)
        self.settings = Settings.from_options(environment.parsed_options)
        self.rng = random.Random()
        self.headers: dict[str, str] = {}
        if self.settings.api_key:
            self.headers["Authorization"] = f"Bearer {self.settings.api_key}"

    def wait_time(self) -> float:
        """The pause between two calls on this line."""
        return self.settings.think(self.rng)

    def _fire(self, name: str, started: float, exception: Exception | None = None) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        report(self.environment.events.request, self.kind, name, elapsed, 0, exception)


class WebSocketUser(_SocketUser):
    """Calls over ``/ws``: one socket per call, turns as ``chat`` frames, some barged in.

    ``websockets.sync.client`` runs as it is under locust's gevent monkey-patching: its
    reader thread, locks and selector become greenlets and gevent primitives, so
    hundreds of sockets share the one locust process like any other user.
    """

    weight = 1

    @task
    def call(self) -> None:
        """Place one call on its own socket; a failed turn hangs up."""
        started = time.perf_counter()
        try:
            socket = connect(
                self.url,
                additional_headers=self.headers,
                open_timeout=self.settings.token_timeout,
                close_timeout=2,
                compression=None,
            )
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            self._fire("connect", started, TurnFailure(f"connect failed: {_describe(exc)}"))
            return
        self._fire("connect", started)
        with socket:
            self._converse(socket, Conversation(self.settings, self.rng))

    def _converse(self, socket: ClientConnection, conversation: Conversation) -> None:
        settings = self.settings
        pending: tuple[str, TurnClock] | None = None  # a turn already sent by a barge-in
        for index in range(settings.turns):
            if pending is None:
                time.sleep(settings.think(self.rng))
                pending = self._send(socket, conversation)
                if pending is None:
                    return
            turn_id, clock = pending
            interrupt_at = None
            if index + 1 < settings.turns and self.rng.random() < settings.barge_in:
                interrupt_at = self.rng.randint(1, 3)
            outcome = self._stream(socket, turn_id, clock, interrupt_at)
            if outcome == "failed":
                return
            conversation.heard(clock.text)
            pending = None
            if outcome == "interrupted":
                pending = self._send(socket, conversation)
                if pending is None or not self._barge_in(socket, turn_id, pending[0]):
                    return

    def _send(
        self, socket: ClientConnection, conversation: Conversation
    ) -> tuple[str, TurnClock] | None:
        """Send the caller's next turn; None (reported) when the socket is closed."""
        turn_id = conversation.ask()
        frame = {"type": "chat", "id": turn_id, **conversation.body()}
        clock = TurnClock(self.environment.events.request, "WS")
        try:
            socket.send(orjson.dumps(frame).decode())
        except ConnectionClosed as exc:
            clock.failed(_closed(exc))
            return None
        return turn_id, clock

    def _receive(self, socket: ClientConnection) -> dict[str, Any]:
        return receive_frame(socket, self.settings.token_timeout)

    def _stream(
        self, socket: ClientConnection, turn_id: str, clock: TurnClock, interrupt_at: int | None
    ) -> str:
        """Read one turn's frames to ``"done"`` or ``"failed"`` (reported), or to
        ``"interrupted"`` once ``interrupt_at`` deltas have come, for a barge-in."""
        try:
            while True:
                frame = self._receive(socket)
                kind = frame.get("type")
                if kind == "error" and frame.get("id") in (turn_id, None):
                    raise TurnFailure(f"error frame {frame.get('code')}: {frame.get('message')}")
                if frame.get("id") != turn_id:
                    raise TurnFailure(f"a {kind} frame for another turn")
                if kind == "delta":
                    content = frame.get("content")
                    if content:
                        clock.token(content)
                        if clock.tokens == interrupt_at:
                            return "interrupted"
                elif kind == "done":
                    if frame.get("finish_reason") == "cancelled":
                        raise TurnFailure("done/cancelled without a barge-in")
                    if not clock.tokens:
                        raise TurnFailure("empty reply: done before any content")
                    clock.done()
                    return "done"
        except TurnFailure as exc:
            clock.failed(str(exc)[:200])
            return "failed"

    def _barge_in(self, socket: ClientConnection, old_id: str, new_id: str) -> bool:
        """After the interrupting turn was sent: the old turn's ``done`` must come first.

        Reports the ``barge-in`` entry; True when the order was right.
        """
        started = time.perf_counter()
        try:
            while True:
                frame = self._receive(socket)
                kind = frame.get("type")
                if frame.get("id") == old_id:
                    if kind == "done":
                        self._fire("barge-in", started)
                        return True
                    if kind == "error":
                        raise TurnFailure(f"the old turn ended with error {frame.get('code')}")
                elif frame.get("id") == new_id:
                    raise TurnFailure(f"a {kind} of the new turn before the old turn's done")
        except TurnFailure as exc:
            self._fire("barge-in", started, exc)
            return False


def _closed(exc: ConnectionClosed) -> str:
    """Why a websocket closed, for a failure's reason."""
    return f"socket closed: {exc.rcvd.code if exc.rcvd else 'no close frame'}"


def retell_transcript(conversation: Conversation) -> list[dict[str, str]]:
    """The conversation as Retell's transcript: ``agent`` and ``user`` utterances.

    Retell sends no system message; the server's ``--system-prompt`` stands for it.
    """
    return [
        {"role": "agent" if m["role"] == "assistant" else "user", "content": m["content"]}
        for m in conversation.messages
        if m["role"] != "system"
    ]


class RetellUser(_SocketUser):
    """Calls as Retell places them: one socket per call to ``{host}/llm-websocket/{call id}``.

    The server sends its config and the opening response (``response_id`` 0) first. Each
    turn, after the think time, the caller pings (``ping_pong``, answered with the same
    timestamp), the transcript goes as an ``update_only`` as Retell sends it while the
    caller speaks, then as a ``response_required`` with the next ``response_id``; the
    answer is the ``response`` frames of that id, up to the one with
    ``content_complete``. With probability ``--barge-in`` a turn is interrupted after 1
    to 3 tokens by the next ``response_required`` (a newer id): no frame of the older
    id may come after the first frame of the newer one.
    """

    weight = 1
    path = RETELL_PATH
    kind = "Retell"

    def _receive(self, socket: ClientConnection) -> dict[str, Any]:
        """The next frame but the server's own pings."""
        while True:
            frame = receive_frame(socket, self.settings.token_timeout)
            if frame.get("response_type") != "ping_pong":
                return frame

    @task
    def call(self) -> None:
        """Place one call on its own socket; a failed turn hangs up."""
        conversation = Conversation(self.settings, self.rng)
        started = time.perf_counter()
        try:
            socket = connect(
                f"{self.url}/{conversation.call_id}",
                additional_headers=self.headers,
                open_timeout=self.settings.token_timeout,
                close_timeout=2,
                compression=None,
                max_size=None,
            )
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            self._fire("connect", started, TurnFailure(f"connect failed: {_describe(exc)}"))
            return
        with socket:
            try:
                config = self._receive(socket)
                if config.get("response_type") != "config":
                    raise TurnFailure(f"the first frame is a {config.get('response_type')}")
                opening = self._receive(socket)
                if opening.get("response_id") != 0 or not opening.get("content_complete"):
                    raise TurnFailure("the second frame is not the opening response")
            except TurnFailure as exc:
                self._fire("connect", started, exc)
                return
            self._fire("connect", started)
            conversation.heard(str(opening.get("content") or ""))
            self._converse(socket, conversation)

    def _converse(self, socket: ClientConnection, conversation: Conversation) -> None:
        settings = self.settings
        pending: tuple[int, TurnClock] | None = None  # a response asked for by a barge-in
        first: dict[str, Any] | None = None  # its first frame, read by the barge-in
        for index in range(settings.turns):
            if pending is None:
                time.sleep(settings.think(self.rng))
                if not self._ping(socket):
                    return
                conversation.ask()
                pending = self._ask(socket, conversation, index + 1, update=True)
                if pending is None:
                    return
            response_id, clock = pending
            interrupt_at = None
            if index + 1 < settings.turns and self.rng.random() < settings.barge_in:
                interrupt_at = self.rng.randint(1, 3)
            outcome = self._stream(socket, response_id, clock, interrupt_at, first)
            if outcome == "failed":
                return
            conversation.heard(clock.text)
            pending = first = None
            if outcome == "interrupted":
                conversation.ask()
                pending = self._ask(socket, conversation, response_id + 1, update=False)
                if pending is None:
                    return
                first = self._barge_in(socket, response_id, *pending)
                if first is None:
                    return

    def _ping(self, socket: ClientConnection) -> bool:
        """Ping as Retell does; reports the ``ping`` entry. True when it was answered."""
        started = time.perf_counter()
        stamp = int(time.time() * 1000)
        try:
            socket.send(
                orjson.dumps({"interaction_type": "ping_pong", "timestamp": stamp}).decode()
            )
            while True:
                frame = receive_frame(socket, self.settings.token_timeout)
                if frame.get("response_type") == "ping_pong" and frame.get("timestamp") == stamp:
                    self._fire("ping", started)
                    return True
                if frame.get("response_type") != "ping_pong":
                    raise TurnFailure(f"a {frame.get('response_type')} frame between turns")
        except ConnectionClosed as exc:
            self._fire("ping", started, TurnFailure(_closed(exc)))
        except TurnFailure as exc:
            self._fire("ping", started, exc)
        return False

    def _ask(
        self, socket: ClientConnection, conversation: Conversation, response_id: int, update: bool
    ) -> tuple[int, TurnClock] | None:
        """Ask for response ``response_id`` (after an ``update_only`` when ``update``)."""
        transcript = retell_transcript(conversation)
        clock = TurnClock(self.environment.events.request, "Retell")
        try:
            if update:
                update_only = {"interaction_type": "update_only", "transcript": transcript}
                socket.send(orjson.dumps(update_only).decode())
            frame = {
                "interaction_type": "response_required",
                "response_id": response_id,
                "transcript": transcript,
            }
            clock.started = time.perf_counter()
            socket.send(orjson.dumps(frame).decode())
        except ConnectionClosed as exc:
            clock.failed(_closed(exc))
            return None
        return response_id, clock

    def _stream(
        self,
        socket: ClientConnection,
        response_id: int,
        clock: TurnClock,
        interrupt_at: int | None,
        first: dict[str, Any] | None,
    ) -> str:
        """Read one response to ``"done"`` or ``"failed"`` (reported), or to
        ``"interrupted"`` once ``interrupt_at`` tokens have come, for a barge-in."""
        try:
            while True:
                if first is not None:
                    frame, first = first, None
                else:
                    frame = self._receive(socket)
                kind = frame.get("response_type")
                if kind != "response":
                    raise TurnFailure(f"a {kind} frame in a response")
                if frame.get("response_id") != response_id:
                    raise TurnFailure(f"a frame of response {frame.get('response_id')} in another")
                content = frame.get("content")
                if content:
                    clock.token(content)
                    if clock.tokens == interrupt_at:
                        return "interrupted"
                if frame.get("content_complete"):
                    if not clock.tokens:
                        raise TurnFailure("empty response: complete before any content")
                    clock.done()
                    return "done"
        except TurnFailure as exc:
            clock.failed(str(exc)[:200])
            return "failed"

    def _barge_in(
        self, socket: ClientConnection, old_id: int, new_id: int, clock: TurnClock
    ) -> dict[str, Any] | None:
        """After the newer response was asked for: read to its first frame.

        Reports the ``barge-in`` entry, from asking to the older response's last frame
        (0 when none came after the asking): how long the old answer kept talking (its
        natural end, if it was already on its way, is no failure). Returns the newer
        response's first frame, or None when something else came.
        """
        asked = clock.started
        last = asked
        try:
            while True:
                frame = self._receive(socket)
                got = frame.get("response_id")
                if got == new_id:
                    report(
                        self.environment.events.request,
                        "Retell",
                        "barge-in",
                        (last - asked) * 1000,
                    )
                    return frame
                if got != old_id:
                    raise TurnFailure(f"a {frame.get('response_type')} frame during a barge-in")
                last = time.perf_counter()  # the older response's frames still on their way
        except TurnFailure as exc:
            self._fire("barge-in", asked, exc)
            return None
