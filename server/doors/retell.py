"""Retell's custom-LLM websocket: ``/llm-websocket/{call_id}``, one socket per call.

Retell connects to ``{the agent's LLM URL}/{call_id}`` when a call starts. The server
sends a ``config`` frame (``auto_reconnect`` and ``call_details`` as configured,
``transcript_with_tool_calls`` when tools are loaded), then the opening ``response``
(``response_id`` 0: the begin message, or empty content to wait for the caller).
Then, by what Retell sends (:mod:`server.doors.retell_frames`):

- ``ping_pong``: answered with its ``timestamp``. With ``auto_reconnect`` the server
  also sends one every ``retell_ping_interval`` seconds.
- ``call_details``: its ``retell_llm_dynamic_variables`` fill the ``{{name}}``
  placeholders of the system prompt for the rest of the call.
- ``update_only``: the transcript is kept; nothing is generated.
- ``response_required``, ``reminder_required``: the transcript becomes a turn on the
  core (``agent`` → assistant, ``user`` and ``transfer_target`` → user; from
  ``transcript_with_tool_calls`` when present, tool calls and results in their place;
  a reminder adds a line asking the model to prompt the silent caller; past
  ``max_messages`` the oldest utterances are left out), and the answer streams as
  ``response`` frames of that ``response_id``, the last one with
  ``content_complete: true``. A turn that fails before its first token (Ollama down,
  overloaded...) gets an empty complete response, and the reason is logged.
- A newer ``response_id`` supersedes the answer in flight at once: its task is
  cancelled, which closes its Ollama request, and it sends nothing more. A frame whose
  ``response_id`` is not newer than the latest one is ignored.

The tools of ``TOOLS_MODULE`` run in process: the server sends ``tool_call_invocation``
and ``tool_call_result`` frames and gives the result back to the model, whose answer
is spoken, up to three rounds of tools per response. A tool that calls
:func:`~server.tools.end_call` puts ``end_call: true`` on the response's last frame;
one that calls :func:`~server.tools.transfer_call` puts ``transfer_number`` on the next
frame sent, the first of the answer after the tool.

A frame that cannot be read is logged (the first of each kind per call as a warning)
and the socket stays open; unknown ``interaction_type`` values are ignored. Both are
counted in :attr:`RetellEndpoint.frames`. Auth is ``/ws``'s: the API key in a header
or in ``?api_key=``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import orjson

from ..config import Config
from ..core.engine import Engine
from ..core.errors import ServiceError
from ..core.events import Failure, TextDelta, ToolCall, Turn
from ..tools import CallActions, ToolOutcome, ToolRegistry, collect_call_actions
from .asgi import Receive, Scope, Send, reap, websocket_texts
from .auth import KeyCheck, admit_websocket
from .retell_frames import (
    INTERACTION_TYPES,
    ConfigFrame,
    FrameError,
    PingPong,
    PingPongFrame,
    ResponseFrame,
    ResponseRequired,
    RetellConfig,
    ToolCallInvocation,
    ToolCallInvocationFrame,
    ToolCallResultFrame,
    TranscriptItem,
    UnknownFrame,
    UpdateOnly,
    Utterance,
    dump,
    parse_frame,
)

__all__ = ["RETELL_PATH", "RetellEndpoint", "fill_placeholders"]

log = logging.getLogger("server.retell")

RETELL_PATH = "/llm-websocket"

# Tool rounds per response; the answer after the last round is generated without tools.
_TOOL_ROUNDS = 3

_REMINDER = "(The caller has said nothing for a while. Say something short to prompt them.)"
_ROLES = {"agent": "assistant", "user": "user", "transfer_target": "user"}
_CALL_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")
_MORE = ',"content_complete":false}'


def _frame(text: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": text}


def fill_placeholders(template: str, values: dict[str, Any]) -> str:
    """``template`` with each ``{{name}}`` of ``values`` replaced; other ones are kept."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            return match[0]
        found = values[name]
        return found if isinstance(found, str) else orjson.dumps(found).decode()

    return _PLACEHOLDER.sub(value, template)


def _call_id(scope: Scope) -> str | None:
    """The call id of the path, or None when it has none or an odd one.

    Retell appends ``/{call_id}`` to the configured URL; when that URL ends in a query
    string (``...?api_key=KEY``), the id lands at the end of the query, and is taken
    from there.
    """
    path = scope["path"]
    if path != RETELL_PATH and not path.startswith(RETELL_PATH + "/"):
        return None
    rest = path[len(RETELL_PATH) :].strip("/")
    if not rest:
        query, slash, tail = scope.get("query_string", b"").rpartition(b"/")
        if slash and _CALL_ID.fullmatch(tail.decode("latin-1")):
            scope["query_string"] = query
            rest = tail.decode("latin-1")
    return rest if _CALL_ID.fullmatch(rest) else None


class RetellEndpoint:
    """Serves ``/llm-websocket/{call_id}`` connections for one engine.

    ``frames`` counts the frames received, by ``interaction_type``; unknown types are
    counted as ``unknown`` and frames that cannot be read as ``invalid``.
    """

    def __init__(self, config: Config, engine: Engine, tools: ToolRegistry | None) -> None:
        self.config = config
        self.engine = engine
        self.tools = tools if tools is not None else ToolRegistry()
        self.tool_definitions = self.tools.definitions() or None
        self.frames: dict[str, int] = dict.fromkeys((*INTERACTION_TYPES, "unknown", "invalid"), 0)
        self._keys = KeyCheck(config.api_key)
        self.config_frame = dump(
            ConfigFrame(
                config=RetellConfig(
                    auto_reconnect=config.retell_auto_reconnect,
                    call_details=config.retell_call_details,
                    transcript_with_tool_calls=bool(self.tools),
                )
            )
        )
        self.opening_frame = dump(
            ResponseFrame(
                response_id=0,
                content=config.retell_begin_message or "",
                content_complete=True,
            )
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call_id = _call_id(scope)  # first: it may take the id off the query string
        if not await admit_websocket(self._keys, scope, receive, send):
            return
        if call_id is None:
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        call = _Call(self, send, call_id)
        try:
            await call.open()
            async for text in websocket_texts(receive):
                if text is None:
                    call.invalid("binary_frame", "a binary frame: Retell sends JSON text")
                else:
                    await call.handle(text)
        except OSError:
            log.debug("Retell call %s: the socket went away", call_id)
        finally:
            await call.close()


class _Call:
    """One call's socket: its transcript, its system prompt, and the answer in flight."""

    def __init__(self, endpoint: RetellEndpoint, send: Send, call_id: str) -> None:
        self._endpoint = endpoint
        self._send = send
        self.call_id = call_id
        self._system = endpoint.config.system_prompt
        self._transcript: list[Utterance] = []
        self._with_tools: list[TranscriptItem] | None = None
        self._latest = -1
        self._answer: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._logged: set[str] = set()

    async def open(self) -> None:
        """Send the config and the opening response; start pinging if asked to."""
        endpoint = self._endpoint
        await self._send(_frame(endpoint.config_frame))
        await self._send(_frame(endpoint.opening_frame))
        if endpoint.config.retell_auto_reconnect:
            self._pinger = asyncio.create_task(
                self._ping(endpoint.config.retell_ping_interval), name="Retell pings"
            )
            self._pinger.add_done_callback(reap)

    async def close(self) -> None:
        """Stop the answer in flight (closing its Ollama request) and the pings."""
        await self._stop()
        if self._pinger is not None:
            self._pinger.cancel()
            await asyncio.wait({self._pinger})
            self._pinger = None  # its CancelledError holds, by its traceback, this call

    def invalid(self, code: str, message: str) -> None:
        """Count and log a frame that cannot be read (the first of each kind as a warning)."""
        self._endpoint.frames["invalid"] += 1
        first = code not in self._logged
        self._logged.add(code)
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "Retell call %s: ignored a frame: %s", self.call_id, message)

    async def handle(self, text: str) -> None:
        """Act on one frame from Retell."""
        try:
            frame = parse_frame(text)
        except UnknownFrame as exc:
            self._endpoint.frames["unknown"] += 1
            level = logging.DEBUG if "unknown" in self._logged else logging.INFO
            self._logged.add("unknown")
            kind = exc.interaction_type[:64]
            log.log(level, "Retell call %s: ignored interaction_type %r", self.call_id, kind)
            return
        except FrameError as exc:
            self.invalid(exc.kind, str(exc))
            return
        self._endpoint.frames[frame.interaction_type] += 1
        if isinstance(frame, ResponseRequired):
            await self._respond(frame)
        elif isinstance(frame, PingPong):
            await self._send(_frame(dump(PingPongFrame(timestamp=frame.timestamp))))
        elif isinstance(frame, UpdateOnly):
            self._transcript = frame.transcript
            self._with_tools = frame.transcript_with_tool_calls
        else:
            values = frame.call.retell_llm_dynamic_variables
            prompt = self._endpoint.config.system_prompt
            if values and prompt:
                self._system = fill_placeholders(prompt, values)

    async def _respond(self, frame: ResponseRequired) -> None:
        if frame.response_id <= self._latest:
            log.debug(
                "Retell call %s: ignored response_id %d (not newer than %d)",
                self.call_id,
                frame.response_id,
                self._latest,
            )
            return
        self._latest = frame.response_id
        await self._stop()
        if frame.transcript is not None or frame.transcript_with_tool_calls is not None:
            self._transcript = frame.transcript or []
            self._with_tools = frame.transcript_with_tool_calls
        turn = self._turn(frame.response_id, frame.interaction_type == "reminder_required")
        self._answer = asyncio.create_task(
            self._stream(frame.response_id, turn), name=f"Retell response {frame.response_id}"
        )
        self._answer.add_done_callback(reap)

    async def _stop(self) -> None:
        """Cancel the answer in flight, if any, and wait until it has ended."""
        task = self._answer
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        self._answer = None  # a cancelled one holds, by its traceback, this call

    def _turn(self, response_id: int, reminder: bool) -> Turn:
        """The transcript as a turn in Ollama's message shape."""
        messages: list[dict[str, Any]] = []
        if self._system:
            messages.append({"role": "system", "content": self._system})
        normalised: list[str] = []
        names: dict[str, str] = {}
        items = self._with_tools or self._transcript
        for item in items:
            if isinstance(item, Utterance):
                role = _ROLES.get(item.role)
                if role is None:
                    if "skipped_transcript_items" not in normalised:
                        normalised.append("skipped_transcript_items")
                    continue
                messages.append({"role": role, "content": item.content})
            elif isinstance(item, ToolCallInvocation):
                arguments = _arguments(item.arguments)
                if arguments is None:
                    arguments = {}
                    if "tool_arguments_not_an_object" not in normalised:
                        normalised.append("tool_arguments_not_an_object")
                names[item.tool_call_id] = item.name
                call = {"function": {"name": item.name, "arguments": arguments}}
                last = messages[-1] if messages else None
                if last is not None and last["role"] == "assistant":
                    last.setdefault("tool_calls", []).append(call)
                else:
                    messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            else:
                result: dict[str, Any] = {"role": "tool", "content": item.content}
                name = names.get(item.tool_call_id)
                if name:
                    result["tool_name"] = name
                messages.append(result)
        if reminder:
            messages.append({"role": "user", "content": _REMINDER})
        limit = self._endpoint.config.max_messages
        if len(messages) > limit:
            system = messages[:1] if self._system else []
            kept = messages[len(system) + len(messages) - limit :]
            while kept and kept[0]["role"] == "tool":  # a result whose call was left out
                del kept[0]
            messages = system + kept
            normalised.append("transcript_trimmed")
        return Turn(
            messages=messages,
            tools=self._endpoint.tool_definitions,
            call_id=self.call_id,
            turn_id=str(response_id),
            call_key=self.call_id,
            normalised=tuple(normalised),
        )

    async def _stream(self, response_id: int, turn: Turn) -> None:
        """Stream one response, running its tools; always ends with a complete frame."""
        send = self._send
        dumps = orjson.dumps
        prefix = f'{{"response_type":"response","response_id":{response_id},"content":'
        more = _MORE
        engine = self._endpoint.engine
        actions = CallActions()
        transfer: str | None = None  # to put on the next frame sent
        try:
            rounds = 0
            while True:
                spoken: list[str] = []
                calls: list[ToolCall] = []
                async with aclosing(engine.stream(turn)) as events:
                    async for event in events:
                        if type(event) is TextDelta:
                            spoken.append(event.text)
                            if transfer is None:
                                text = prefix + dumps(event.text).decode() + more
                            else:
                                frame = ResponseFrame(
                                    response_id=response_id,
                                    content=event.text,
                                    content_complete=False,
                                    transfer_number=transfer,
                                )
                                text, transfer = dump(frame), None
                            await send({"type": "websocket.send", "text": text})
                        elif type(event) is ToolCall:
                            calls.append(event)
                        elif type(event) is Failure:
                            log.warning(
                                "Retell call %s: response %d ended early: %s",
                                self.call_id,
                                response_id,
                                event.message,
                            )
                if not calls or turn.tools is None:
                    break
                turn, round_actions = await self._run_tools(turn, calls, "".join(spoken))
                actions.end_call = actions.end_call or round_actions.end_call
                if round_actions.transfer_number is not None:
                    transfer = round_actions.transfer_number
                rounds += 1
                if rounds == _TOOL_ROUNDS:
                    turn = replace(turn, tools=None)
        except ServiceError as exc:
            log.warning(
                "Retell call %s: response %d: no answer from the model: %s: %s",
                self.call_id,
                response_id,
                exc.code,
                exc.message,
            )
        except OSError:
            log.debug("Retell call %s: the socket went away", self.call_id)
            return
        last = ResponseFrame(
            response_id=response_id,
            content="",
            content_complete=True,
            end_call=True if actions.end_call else None,
            transfer_number=transfer,
        )
        try:
            await send(_frame(dump(last)))
        except OSError:
            log.debug("Retell call %s: the socket went away", self.call_id)

    async def _run_tools(
        self, turn: Turn, calls: list[ToolCall], spoken: str
    ) -> tuple[Turn, CallActions]:
        """Run one round of tool calls; the turn that gives their results to the model."""
        send = self._send
        for call in calls:
            invocation = ToolCallInvocationFrame(
                tool_call_id=call.id, name=call.name, arguments=call.arguments
            )
            await send(_frame(dump(invocation)))
        arguments = [_arguments(call.arguments) for call in calls]
        with collect_call_actions() as actions:
            outcomes = await asyncio.gather(
                *(self._run_tool(call, args) for call, args in zip(calls, arguments, strict=True))
            )
        messages = list(turn.messages)
        messages.append(
            {
                "role": "assistant",
                "content": spoken,
                "tool_calls": [
                    {"function": {"name": call.name, "arguments": args or {}}}
                    for call, args in zip(calls, arguments, strict=True)
                ],
            }
        )
        for call, outcome in zip(calls, outcomes, strict=True):
            content = (outcome.result or "") if outcome.error is None else f"Error: {outcome.error}"
            await send(_frame(dump(ToolCallResultFrame(tool_call_id=call.id, content=content))))
            messages.append({"role": "tool", "content": content, "tool_name": call.name})
        return replace(turn, messages=messages), actions

    async def _run_tool(self, call: ToolCall, arguments: dict[str, Any] | None) -> ToolOutcome:
        if arguments is None:
            return ToolOutcome(error="the arguments are not a JSON object")
        return await self._endpoint.tools.call(call.name, arguments)

    async def _ping(self, interval: float) -> None:
        """Send a ``ping_pong`` every ``interval`` seconds until cancelled."""
        try:
            while True:
                await asyncio.sleep(interval)
                ping = PingPongFrame(timestamp=int(time.time() * 1000))
                await self._send(_frame(dump(ping)))
        except OSError:
            return


def _arguments(text: str) -> dict[str, Any] | None:
    """A tool call's arguments (JSON text) as an object, or None when they are not one."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
