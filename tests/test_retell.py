"""Retell's LLM websocket, ``/llm-websocket/{call_id}``, driven as Retell drives it.

The client below is written from Retell's LLM websocket reference and its demos: every
frame it sends is one of Retell's events, and every frame it receives must parse as
one of the events Retell accepts (strictly, no unknown fields), or the test fails.

The server loads this module as its ``TOOLS_MODULE``; ``RETELL_TEST_TOOLS`` chooses
which registry it finds as ``tools``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypeVar

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from server.config import ConfigError, parse_config
from server.tools import ToolRegistry, end_call, transfer_call

from .conftest import API_KEY, FakeOllama, Process, start_server

# Retell → server


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Word(_Event):
    word: str
    start: float
    end: float


class Utterance(_Event):
    role: Literal["agent", "user"]
    content: str
    words: list[Word] | None = None


class ToolCallInvocationItem(_Event):
    role: Literal["tool_call_invocation"] = "tool_call_invocation"
    tool_call_id: str
    name: str
    arguments: str


class ToolCallResultItem(_Event):
    role: Literal["tool_call_result"] = "tool_call_result"
    tool_call_id: str
    content: str


class NodeTransitionItem(_Event):
    role: Literal["node_transition"] = "node_transition"
    former_node_id: str
    former_node_name: str
    new_node_id: str
    new_node_name: str


TranscriptItem = Utterance | ToolCallInvocationItem | ToolCallResultItem | NodeTransitionItem


class PingPongRequest(_Event):
    interaction_type: Literal["ping_pong"] = "ping_pong"
    timestamp: int


class CallDetailsRequest(_Event):
    interaction_type: Literal["call_details"] = "call_details"
    call: dict[str, Any]


class UpdateOnlyRequest(_Event):
    interaction_type: Literal["update_only"] = "update_only"
    transcript: list[Utterance]
    transcript_with_tool_calls: list[TranscriptItem] | None = None
    turntaking: Literal["agent_turn", "user_turn"] | None = None


class ResponseRequiredRequest(_Event):
    interaction_type: Literal["response_required", "reminder_required"] = "response_required"
    response_id: int
    transcript: list[Utterance] | None = None
    transcript_with_tool_calls: list[TranscriptItem] | None = None


Request = PingPongRequest | CallDetailsRequest | UpdateOnlyRequest | ResponseRequiredRequest


# Server → Retell


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ConfigSettings(_Reply):
    auto_reconnect: bool
    call_details: bool
    transcript_with_tool_calls: bool = False


class ConfigResponse(_Reply):
    response_type: Literal["config"]
    config: ConfigSettings


class PingPongResponse(_Reply):
    response_type: Literal["ping_pong"]
    timestamp: int


class ResponseResponse(_Reply):
    response_type: Literal["response"]
    response_id: int
    content: str
    content_complete: bool
    no_interruption_allowed: bool | None = None
    end_call: bool | None = None
    transfer_number: str | None = None
    digit_to_press: str | None = None


class ToolCallInvocationResponse(_Reply):
    response_type: Literal["tool_call_invocation"]
    tool_call_id: str
    name: str
    arguments: str


class ToolCallResultResponse(_Reply):
    response_type: Literal["tool_call_result"]
    tool_call_id: str
    content: str


Reply = (
    ConfigResponse
    | PingPongResponse
    | ResponseResponse
    | ToolCallInvocationResponse
    | ToolCallResultResponse
)
REPLY: TypeAdapter[Reply] = TypeAdapter(Annotated[Reply, Field(discriminator="response_type")])
R = TypeVar("R", bound=Reply)


class RetellClient:
    """One call's socket, as Retell holds it."""

    def __init__(self, ws: ClientConnection, call_id: str) -> None:
        self.ws = ws
        self.call_id = call_id
        self._pinged: set[int] = set()
        self.config = self.expect(ConfigResponse)
        self.opening = self.expect(ResponseResponse)

    def send(self, event: Request) -> None:
        if isinstance(event, PingPongRequest):
            self._pinged.add(event.timestamp)
        self.ws.send(event.model_dump_json(exclude_none=True))

    def recv(self, pings: bool = False) -> Reply:
        """The next frame, parsed; the server's own pings are skipped unless ``pings``.

        A ``ping_pong`` with the timestamp of one this client sent is its answer.
        """
        while True:
            text = self.ws.recv(timeout=5)
            assert isinstance(text, str), "Retell reads text frames only"
            reply = REPLY.validate_json(text)
            own_ping = isinstance(reply, PingPongResponse) and reply.timestamp not in self._pinged
            if pings or not own_ping:
                return reply

    def expect(self, kind: type[R]) -> R:
        reply = self.recv()
        assert isinstance(reply, kind), reply
        return reply

    def response(self, response_id: int) -> list[Reply]:
        """Frames up to the complete response ``response_id``, that one included."""
        frames = []
        while True:
            reply = self.recv()
            frames.append(reply)
            if (
                isinstance(reply, ResponseResponse)
                and reply.response_id == response_id
                and reply.content_complete
            ):
                return frames

    def pong(self, timestamp: int = 4242) -> None:
        """Ping, and check that the next frame is the answer: nothing else was pending."""
        self.send(PingPongRequest(timestamp=timestamp))
        reply = self.recv()
        assert reply == PingPongResponse(response_type="ping_pong", timestamp=timestamp), reply


def ws_url(server: Process, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


@pytest.fixture
def call_id(request: pytest.FixtureRequest) -> str:
    """A call id of the test's own, so its log lines can be found."""
    return "call_" + re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-40:]


@contextmanager
def open_call(
    server: Process, call_id: str, query: str = "", headers: dict[str, str] | None = None
) -> Iterator[RetellClient]:
    """A call's socket to ``/llm-websocket/{call_id}``, its config and opening read."""
    with connect(
        ws_url(server, f"/llm-websocket/{call_id}{query}"),
        additional_headers=headers,
        open_timeout=5,
        close_timeout=2,
        max_size=None,
    ) as ws:
        yield RetellClient(ws, call_id)


@pytest.fixture
def call(retell_server: Process, call_id: str) -> Iterator[RetellClient]:
    with open_call(retell_server, call_id) as client:
        yield client


def said(role: Literal["agent", "user"], content: str) -> Utterance:
    return Utterance(role=role, content=content)


def asked(response_id: int, *transcript: Utterance) -> ResponseRequiredRequest:
    return ResponseRequiredRequest(response_id=response_id, transcript=list(transcript))


def text_of(frames: list[Reply], response_id: int) -> str:
    return "".join(
        f.content
        for f in frames
        if isinstance(f, ResponseResponse) and f.response_id == response_id
    )


def chats(fake: FakeOllama, marker: str) -> list[list[dict[str, Any]]]:
    """The messages of every chat request whose messages mention ``marker``."""
    return [
        r["body"]["messages"]
        for r in fake.requests()
        if r["path"] == "/api/chat" and marker in json.dumps(r["body"].get("messages", []))
    ]


def wait_closed(fake: FakeOllama, marker: str) -> dict[str, Any]:
    """The request mentioning ``marker``, once the server has closed it (or after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        record: dict[str, Any] = next(
            r
            for r in reversed(fake.requests())
            if marker in json.dumps(r["body"].get("messages", []))
        )
        if record["client_closed_at"] is not None or time.monotonic() > deadline:
            return record
        time.sleep(0.02)


def metrics(server: Process) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=5).text


def frames_counted(server: Process, kind: str) -> float:
    match = re.search(
        rf'^voice_llm_retell_frames_total{{interaction_type="{kind}"}} (\S+)$',
        metrics(server),
        re.M,
    )
    assert match is not None
    return float(match[1])


SYSTEM_PROMPT = "You answer the phone at {{clinic}}; {{visits}} visits so far."


@pytest.fixture(scope="module")
def retell_server(fake: FakeOllama) -> Iterator[Process]:
    """The server with a system prompt of placeholders and no tools."""
    process = start_server(fake.url, "--system-prompt", SYSTEM_PROMPT, "--max-concurrency", "8")
    yield process
    process.stop()


# Opening, turns, transcripts


def test_open_sends_the_config_then_an_empty_opening_response(call: RetellClient) -> None:
    assert call.config.config == ConfigSettings(
        auto_reconnect=True, call_details=True, transcript_with_tool_calls=False
    )
    assert call.opening == ResponseResponse(
        response_type="response", response_id=0, content="", content_complete=True
    )


def test_the_begin_message_opens_and_pings_come_every_interval(fake: FakeOllama) -> None:
    server = start_server(
        fake.url,
        "--retell-begin-message",
        "Bright Smile Dental, how can I help?",
        "--retell-ping-interval",
        "0.05",
    )
    try:
        with open_call(server, "call_greeting") as client:
            assert client.opening.content == "Bright Smile Dental, how can I help?"
            assert client.opening.content_complete
            before = int(time.time() * 1000)
            pings = [client.recv(pings=True) for _ in range(3)]
        assert all(isinstance(p, PingPongResponse) for p in pings)
        stamps = [p.timestamp for p in pings if isinstance(p, PingPongResponse)]
        assert stamps == sorted(stamps)
        assert stamps[-1] >= before - 1000  # milliseconds of the wall clock
    finally:
        server.stop()


def test_turns_stream_with_their_response_id_from_the_transcript(
    call: RetellClient, fake: FakeOllama
) -> None:
    call.send(
        CallDetailsRequest(
            call={
                "call_id": call.call_id,
                "call_type": "phone_call",
                "agent_id": "agent_1",
                "retell_llm_dynamic_variables": {"clinic": "Bright Smile", "visits": 3},
                "metadata": {"crm": "x1"},
            }
        )
    )
    history = [said("agent", "Bright Smile, how can I help?"), said("user", "multi-1 [[tokens:3]]")]
    call.send(asked(1, *history))
    first = call.response(1)
    assert [f.content_complete for f in first if isinstance(f, ResponseResponse)] == [
        False,
        False,
        False,
        True,
    ]
    assert all(isinstance(f, ResponseResponse) and f.response_id == 1 for f in first)
    assert first[-1] == ResponseResponse(
        response_type="response", response_id=1, content="", content_complete=True
    )
    reply = text_of(first, 1)
    history += [said("agent", reply), said("user", "multi-2 [[tokens:2]]")]
    call.send(asked(2, *history))
    second = call.response(2)
    assert len(second) == 3
    messages = chats(fake, "multi-2")[-1]
    assert messages == [
        {"role": "system", "content": "You answer the phone at Bright Smile; 3 visits so far."},
        {"role": "assistant", "content": "Bright Smile, how can I help?"},
        {"role": "user", "content": "multi-1 [[tokens:3]]"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "multi-2 [[tokens:2]]"},
    ]


def test_without_call_details_the_placeholders_stay(call: RetellClient, fake: FakeOllama) -> None:
    call.send(asked(1, said("user", "no-details [[tokens:1]]")))
    call.response(1)
    assert chats(fake, "no-details")[-1][0] == {"role": "system", "content": SYSTEM_PROMPT}


def test_a_reminder_asks_the_model_to_prompt_the_caller(
    call: RetellClient, fake: FakeOllama
) -> None:
    transcript = [said("agent", "Are you still there?"), said("user", "reminder-1")]
    call.send(
        ResponseRequiredRequest(
            interaction_type="reminder_required", response_id=4, transcript=transcript
        )
    )
    frames = call.response(4)
    assert all(isinstance(f, ResponseResponse) and f.response_id == 4 for f in frames)
    assert text_of(frames, 4)
    messages = chats(fake, "reminder-1")[-1]
    assert messages[1:3] == [
        {"role": "assistant", "content": "Are you still there?"},
        {"role": "user", "content": "reminder-1"},
    ]
    # One more line, the last, asks the model to prompt the silent caller.
    assert len(messages) == 4
    assert messages[3]["role"] == "user"
    assert messages[3]["content"] not in ("", "reminder-1")


def test_update_only_keeps_the_transcript_and_generates_nothing(
    call: RetellClient, fake: FakeOllama, retell_server: Process
) -> None:
    transcript = [said("agent", "Hello!"), said("user", "update-only [[tokens:2]]")]
    counted = frames_counted(retell_server, "update_only")
    call.send(UpdateOnlyRequest(transcript=transcript, turntaking="user_turn"))
    call.pong()  # the next frame is the pong: no response was started
    assert chats(fake, "update-only") == []
    assert frames_counted(retell_server, "update_only") == counted + 1
    # A response without a transcript answers the one the update left.
    call.send(ResponseRequiredRequest(response_id=1))
    assert len(call.response(1)) == 3
    assert chats(fake, "update-only")[-1][1:] == [
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "update-only [[tokens:2]]"},
    ]


def test_the_transcript_with_tool_calls_puts_them_in_their_place(
    call: RetellClient, fake: FakeOllama, retell_server: Process
) -> None:
    plain = [said("user", "Book me Monday"), said("agent", "Done."), said("user", "thanks")]
    call.send(
        ResponseRequiredRequest(
            response_id=1,
            transcript=plain,
            transcript_with_tool_calls=[
                said("user", "Book me Monday"),
                said("agent", "Let me check."),
                ToolCallInvocationItem(tool_call_id="t1", name="book", arguments='{"day":"Mon"}'),
                ToolCallResultItem(tool_call_id="t1", content="booked"),
                NodeTransitionItem(
                    former_node_id="a", former_node_name="A", new_node_id="b", new_node_name="B"
                ),
                said("agent", "Done."),
                said("user", "with-tools [[tokens:1]]"),
            ],
        )
    )
    call.response(1)
    assert chats(fake, "with-tools")[-1][1:] == [
        {"role": "user", "content": "Book me Monday"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [{"function": {"name": "book", "arguments": {"day": "Mon"}}}],
        },
        {"role": "tool", "content": "booked", "tool_name": "book"},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "with-tools [[tokens:1]]"},
    ]
    assert 'voice_llm_requests_normalised_total{kind="skipped_transcript_items"}' in metrics(
        retell_server
    )


def test_a_trimmed_transcript_never_starts_with_a_result_whose_call_was_cut(
    fake: FakeOllama,
) -> None:
    server = start_server(fake.url, "--system-prompt", "Be brief.", "--max-messages", "4")
    try:
        with open_call(server, "call_trimmed") as client:
            client.send(
                ResponseRequiredRequest(
                    response_id=1,
                    transcript=[said("user", "trim-tools [[tokens:1]]")],
                    transcript_with_tool_calls=[
                        said("user", "Book me Monday"),
                        said("agent", "Let me check."),
                        ToolCallInvocationItem(
                            tool_call_id="t1", name="book", arguments='{"day":"Mon"}'
                        ),
                        ToolCallResultItem(tool_call_id="t1", content="booked"),
                        said("agent", "Done."),
                        said("user", "trim-tools [[tokens:1]]"),
                    ],
                )
            )
            client.response(1)
    finally:
        server.stop()
    assert chats(fake, "trim-tools")[-1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "trim-tools [[tokens:1]]"},
    ]


def test_an_empty_transcript_with_tool_calls_leaves_the_transcript(
    call: RetellClient, fake: FakeOllama
) -> None:
    call.send(
        ResponseRequiredRequest(
            response_id=1,
            transcript=[said("user", "empty-with-tools [[tokens:1]]")],
            transcript_with_tool_calls=[],
        )
    )
    call.response(1)
    assert chats(fake, "empty-with-tools")[-1][1:] == [
        {"role": "user", "content": "empty-with-tools [[tokens:1]]"}
    ]


def test_a_four_mib_transcript_with_word_timings_is_answered(
    call: RetellClient, fake: FakeOllama, retell_server: Process
) -> None:
    line = "I would like to book a cleaning for next Tuesday afternoon if you have one"
    transcript: list[Utterance] = []
    size = 0
    clock = 0.0
    while size < 4 * 1024 * 1024:
        words = []
        for word in line.split():
            words.append(Word(word=word, start=round(clock, 3), end=round(clock + 0.3, 3)))
            clock += 0.35
        role: Literal["agent", "user"] = "user" if len(transcript) % 2 == 0 else "agent"
        transcript.append(Utterance(role=role, content=line, words=words))
        size += len(transcript[-1].model_dump_json())
    transcript.append(said("user", "long-call [[tokens:2]]"))
    frame = asked(1, *transcript)
    assert len(frame.model_dump_json()) > 4 * 1024 * 1024
    call.send(frame)
    assert len(call.response(1)) == 3
    # Past --max-messages (1000) the oldest utterances are left out, never the system prompt.
    messages = chats(fake, "long-call")[-1]
    assert len(messages) == 1000
    assert messages[0]["role"] == "system"
    assert messages[1]["content"] == line
    assert messages[-1] == {"role": "user", "content": "long-call [[tokens:2]]"}
    assert 'voice_llm_requests_normalised_total{kind="transcript_trimmed"}' in metrics(
        retell_server
    )


# Superseding


def test_a_newer_response_id_supersedes_the_older_one_at_once(
    call: RetellClient, fake: FakeOllama
) -> None:
    call.send(asked(1, said("user", "supersede-old [[tokens:500]] [[itl:20]]")))
    first = call.recv()
    assert isinstance(first, ResponseResponse)
    assert first.response_id == 1
    call.send(asked(2, said("user", "supersede-new [[tokens:3]]")))
    sent_at = time.time()
    frames = [first, *call.response(2)]
    ids = [f.response_id for f in frames if isinstance(f, ResponseResponse)]
    newer = ids.index(2)
    assert set(ids[:newer]) == {1}
    assert set(ids[newer:]) == {2}  # no frame of 1 after the first one of 2
    assert not any(
        f.content_complete for f in frames if isinstance(f, ResponseResponse) and f.response_id == 1
    )
    assert text_of(frames, 2) == "Sure, here"
    record = wait_closed(fake, "supersede-old")
    assert record["outcome"] == "client_closed"
    assert record["client_closed_at"] - sent_at < 0.1


def test_a_response_id_not_newer_than_the_latest_is_ignored(call: RetellClient) -> None:
    call.send(asked(5, said("user", "Hi [[tokens:1]]")))
    call.response(5)
    for stale in (3, 5):
        call.send(asked(stale, said("user", "Hi [[tokens:1]]")))
    call.pong()


def test_leaving_mid_answer_closes_ollama(retell_server: Process, fake: FakeOllama) -> None:
    with open_call(retell_server, "call_leaves") as client:
        client.send(asked(1, said("user", "leave-me [[tokens:500]] [[itl:20]]")))
        client.expect(ResponseResponse)
    left_at = time.time()
    record = wait_closed(fake, "leave-me")
    assert record["outcome"] == "client_closed"
    assert record["client_closed_at"] - left_at < 0.1


# Ping, bad frames, unknown frames


def test_ping_pong_is_answered_with_its_timestamp(call: RetellClient) -> None:
    call.pong(1703302407333)
    call.pong(1703302409333)


BAD_FRAMES = [
    ("{not json", "the frame is not valid JSON"),
    ("[1, 2]", "a frame must be a JSON object"),
    ('{"response_id": 1}', "'interaction_type' is required"),
    ('{"interaction_type": "response_required"}', "response_required: 'response_id' is required"),
    (
        '{"interaction_type": "response_required", "response_id": "7"}',
        "response_required: 'response_id' is invalid: Input should be a valid integer",
    ),
    (
        '{"interaction_type": "reminder_required", "response_id": -1}',
        "reminder_required: 'response_id' is invalid",
    ),
    (
        '{"interaction_type": "response_required", "response_id": 1,'
        ' "transcript": [{"content": "hi"}]}',
        "response_required: 'transcript.0.role' is required",
    ),
    (
        '{"interaction_type": "response_required", "response_id": 1, "transcript_with_tool_calls":'
        ' [{"role": "tool_call_result", "content": "ok"}]}',
        "response_required: 'transcript_with_tool_calls.0.tool_call_id' is required",
    ),
    (
        '{"interaction_type": "update_only", "transcript": "hello"}',
        "update_only: 'transcript' is invalid",
    ),
    ('{"interaction_type": "ping_pong"}', "ping_pong: 'timestamp' is required"),
    (
        '{"interaction_type": "call_details", "call": {"retell_llm_dynamic_variables": []}}',
        "call_details: 'call.retell_llm_dynamic_variables' is invalid",
    ),
]


@pytest.mark.parametrize(("frame", "logged"), BAD_FRAMES)
def test_bad_frames_are_logged_and_the_socket_stays(
    call: RetellClient, retell_server: Process, frame: str, logged: str
) -> None:
    invalid = frames_counted(retell_server, "invalid")
    call.ws.send(frame)
    call.pong()
    expected = f"Retell call {call.call_id}: ignored a frame: {logged}"
    lines = [json.loads(line) for line in retell_server.output().splitlines()]
    assert any(
        line["level"] == "warning"
        and line["logger"] == "server.retell"
        and line["msg"].startswith(expected)
        for line in lines
    )
    assert frames_counted(retell_server, "invalid") == invalid + 1
    call.send(asked(1, said("user", "Hi [[tokens:1]]")))
    assert len(call.response(1)) == 2


def test_a_binary_frame_is_logged_and_the_socket_stays(
    call: RetellClient, retell_server: Process
) -> None:
    call.ws.send(b"\x00\x01")
    call.pong()
    assert f"Retell call {call.call_id}: ignored a frame: a binary frame" in (
        retell_server.output().decode()
    )


def test_unknown_interaction_types_are_counted_and_ignored(
    call: RetellClient, retell_server: Process
) -> None:
    unknown = frames_counted(retell_server, "unknown")
    call.ws.send('{"interaction_type": "agent_swap", "agent_id": "a2"}')
    call.ws.send('{"interaction_type": "agent_swap"}')
    call.pong()
    assert frames_counted(retell_server, "unknown") == unknown + 2
    assert f"Retell call {call.call_id}: ignored interaction_type 'agent_swap'" in (
        retell_server.output().decode()
    )
    call.send(asked(1, said("user", "Hi [[tokens:1]]")))
    assert len(call.response(1)) == 2


# Ollama down, settings


def test_ollama_down_gets_a_complete_empty_response_and_the_socket_stays() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = start_server(
        dead, "--retell-auto-reconnect", "no", wait_warm=False, RETELL_CALL_DETAILS="off"
    )
    try:
        with open_call(server, "call_down") as client:
            assert client.config.config == ConfigSettings(
                auto_reconnect=False, call_details=False, transcript_with_tool_calls=False
            )
            for response_id in (1, 2):
                client.send(asked(response_id, said("user", "Hello?")))
                assert client.recv() == ResponseResponse(
                    response_type="response",
                    response_id=response_id,
                    content="",
                    content_complete=True,
                )
            client.pong()
        assert (
            "Retell call call_down: response 1: no answer from the model: ollama_unreachable: "
            "Ollama is not reachable" in server.output().decode()
        )
    finally:
        server.stop()


def test_ollama_down_with_a_fallback_message_speaks_it() -> None:
    sorry = "Sorry, I am having trouble right now. Please call back in a minute."
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = start_server(dead, "--fallback-message", sorry, wait_warm=False)
    try:
        with open_call(server, "call_sorry") as client:
            client.send(asked(1, said("user", "Hello?")))
            frames = [client.recv(), client.recv()]
        assert frames == [
            ResponseResponse(
                response_type="response", response_id=1, content=sorry, content_complete=False
            ),
            ResponseResponse(
                response_type="response", response_id=1, content="", content_complete=True
            ),
        ]
    finally:
        server.stop()


def test_retell_settings_are_checked() -> None:
    config = parse_config(
        ["--retell-auto-reconnect", "off", "--retell-begin-message", "Hi!"],
        {"RETELL_CALL_DETAILS": "no", "RETELL_PING_INTERVAL": "0.5"},
    )
    assert (config.retell_auto_reconnect, config.retell_call_details) == (False, False)
    assert (config.retell_begin_message, config.retell_ping_interval) == ("Hi!", 0.5)
    with pytest.raises(ConfigError, match="RETELL_AUTO_RECONNECT='maybe' is not true or false"):
        parse_config([], {"RETELL_AUTO_RECONNECT": "maybe"})
    with pytest.raises(ConfigError, match=r"retell-ping-interval 0\.0 must be above zero"):
        parse_config(["--retell-ping-interval", "0"], {})


# Auth and paths


def test_auth_in_the_handshake(keyed_server: Process) -> None:
    for path, headers in (
        ("/llm-websocket/call_k0", {}),
        ("/llm-websocket/call_k0?api_key=wrong", {}),
        ("/llm-websocket?api_key=wrong/call_k0", {}),
        ("/llm-websocket/call_k0", {"Authorization": "Bearer no"}),
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(keyed_server, path), additional_headers=headers, open_timeout=5)
        assert refused.value.response.status_code == 401
    for number, (path, headers) in enumerate(
        (
            ("/llm-websocket/call_k{n}", {"Authorization": f"Bearer {API_KEY}"}),
            ("/llm-websocket/call_k{n}", {"Authorization": API_KEY}),
            (f"/llm-websocket/call_k{{n}}?api_key={API_KEY}", {}),
            # Retell appends "/{call_id}" to a URL that ends in its query string.
            (f"/llm-websocket?api_key={API_KEY}/call_k{{n}}", {}),
        ),
        start=1,
    ):
        with connect(
            ws_url(keyed_server, path.format(n=number)), additional_headers=headers, open_timeout=5
        ) as ws:
            client = RetellClient(ws, f"call_k{number}")
            client.send(asked(1, said("user", "Hi [[tokens:1]]")))
            assert len(client.response(1)) == 2
        assert f'"call_id":"call_k{number}","turn_id":"1"' in keyed_server.output().decode()


@pytest.mark.parametrize(
    "path", ["/llm-websocket", "/llm-websocket/", "/llm-websocket/a/b", "/llm-websocketx"]
)
def test_a_path_without_a_call_id_is_refused(retell_server: Process, path: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(retell_server, path), open_timeout=5)
    assert refused.value.response.status_code == 403


# Tools: the registries this module gives a server as TOOLS_MODULE


def _registry(kind: str) -> ToolRegistry:
    registry = ToolRegistry()
    if kind == "booking":

        @registry.tool(
            description="Book a cleaning on a day.",
            parameters={
                "type": "object",
                "properties": {"day": {"type": "string"}},
                "required": ["day"],
            },
        )
        async def book_cleaning(args: dict[str, Any]) -> dict[str, Any]:
            return {"booked": True, "day": args["day"]}

    elif kind == "hang_up":

        @registry.tool(description="End the call when the caller says goodbye.")
        async def hang_up(args: dict[str, Any]) -> str:
            end_call()
            return "The call ends after your goodbye."

    elif kind == "transfer":

        @registry.tool(description="Transfer the caller to the front desk.")
        async def front_desk(args: dict[str, Any]) -> str:
            transfer_call("+14155550100")
            return "The caller is being transferred to the front desk."

    return registry


tools = _registry(os.environ.get("RETELL_TEST_TOOLS", "booking"))
"""The registry a server started with ``TOOLS_MODULE=tests.test_retell`` finds."""


def tools_server(fake: FakeOllama, kind: str) -> Process:
    return start_server(fake.url, TOOLS_MODULE="tests.test_retell", RETELL_TEST_TOOLS=kind)


def test_a_tool_round_trip(fake: FakeOllama) -> None:
    server = tools_server(fake, "booking")
    try:
        with open_call(server, "call_tools") as client:
            assert client.config.config.transcript_with_tool_calls
            client.send(asked(1, said("user", "round-trip [[tokens:3]]")))
            frames = client.response(1)
        invocation, result, *answer = frames
        assert isinstance(invocation, ToolCallInvocationResponse)
        assert invocation.name == "book_cleaning"
        assert json.loads(invocation.arguments) == {"day": "example"}
        assert result == ToolCallResultResponse(
            response_type="tool_call_result",
            tool_call_id=invocation.tool_call_id,
            content='{"booked":true,"day":"example"}',
        )
        assert [f.content for f in answer if isinstance(f, ResponseResponse)] == [
            "Sure",
            ",",
            " here",
            "",
        ]
        asked_model, answered = chats(fake, "round-trip")[-2:]
        assert asked_model[-1] == {"role": "user", "content": "round-trip [[tokens:3]]"}
        assert answered[-2:] == [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "book_cleaning", "arguments": {"day": "example"}}}
                ],
            },
            {
                "role": "tool",
                "content": '{"booked":true,"day":"example"}',
                "tool_name": "book_cleaning",
            },
        ]
    finally:
        server.stop()


def test_an_end_call_tool_ends_the_call_after_the_answer(fake: FakeOllama) -> None:
    server = tools_server(fake, "hang_up")
    try:
        with open_call(server, "call_hang_up") as client:
            client.send(asked(1, said("user", "Bye now [[tokens:2]]")))
            frames = client.response(1)
        responses = [f for f in frames if isinstance(f, ResponseResponse)]
        assert [f.content for f in responses] == ["Sure", ",", ""]
        assert [f.end_call for f in responses] == [None, None, True]
        assert isinstance(frames[0], ToolCallInvocationResponse)
        assert frames[0].name == "hang_up"
    finally:
        server.stop()


def test_a_transfer_tool_puts_the_number_on_the_first_frame_of_its_answer(
    fake: FakeOllama,
) -> None:
    server = tools_server(fake, "transfer")
    try:
        with open_call(server, "call_transfer") as client:
            client.send(asked(1, said("user", "A human, please [[tokens:3]]")))
            frames = client.response(1)
        assert isinstance(frames[1], ToolCallResultResponse)
        responses = [f for f in frames if isinstance(f, ResponseResponse)]
        assert [f.transfer_number for f in responses] == ["+14155550100", None, None, None]
        assert responses[0].content == "Sure"
        assert "+14155550100" not in server.output().decode()  # never logged
    finally:
        server.stop()


def test_a_transfer_number_must_be_one() -> None:
    for number in ("", "+1 415 555"):
        with pytest.raises(ValueError, match="a transfer number"):
            transfer_call(number)
