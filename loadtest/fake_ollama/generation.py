"""Replies in progress: loading the model, then writing the planned tokens on timers.

A :class:`Generation` waits for the model and a slot, then writes one NDJSON
line per token, each on its own timer; a :class:`LoadReply` answers a request
that only loads the model. Both stop when the client goes away.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import orjson

from .connection import CHUNK_END, Connection
from .replies import FIRST_TOKEN_JSON, VOCAB, VOCAB_JSON, Inference, Plan, token_text
from .wire import CLOCK, JsonObject

if TYPE_CHECKING:
    from .server import FakeOllama, Outcome, RequestRecord

MIDSTREAM_ERROR: Final = "an error was encountered while running the model: unexpected EOF"


def _metrics(**values: int) -> JsonObject:
    """Ollama's metrics fields, zeros left out as Go's ``omitempty`` leaves them out."""
    return {name: value for name, value in values.items() if value}


def done_object(chat: bool, model: str, reason: str) -> JsonObject:
    """The one-line answer to a load or unload request."""
    stamp = CLOCK.stamp().decode()
    if chat:
        return {
            "model": model,
            "created_at": stamp,
            "message": {"role": "assistant", "content": ""},
            "done_reason": reason,
            "done": True,
        }
    return {
        "model": model,
        "created_at": stamp,
        "response": "",
        "done": True,
        "done_reason": reason,
    }


class LoadReply:
    """An empty chat or generate request: load the model, then answer ``done_reason: load``."""

    def __init__(
        self, sim: FakeOllama, conn: Connection, record: RequestRecord, ask: Inference
    ) -> None:
        self._sim = sim
        self._conn = conn
        self._record = record
        self._ask = ask
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        """Start waiting for the model."""
        self._task = self._sim.loop.create_task(self._run())

    async def _run(self) -> None:
        ask = self._ask
        host = self._sim.host
        await host.prepare(ask.canonical, ask.load_options, ask.session)
        host.settle()
        self._task = None
        record = self._record
        record.outcome = "done"
        record.first_byte_at = record.finished_at = time.time()
        self._conn.respond_json(200, done_object(ask.chat, ask.model, "load"))

    def client_lost(self) -> None:
        """Stop waiting; the load itself goes on."""
        if self._record.outcome == "in_progress":
            self._record.outcome = "client_closed"
            self._record.client_closed_at = time.time()
        if self._task is not None:
            self._task.cancel()
            self._task = None


class Generation:
    """A generating request: wait for the model and a slot, then write the reply on timers.

    Streaming replies are chunked NDJSON, one chunk per line and one write per
    token; non-streaming ones are generated on the same timers and sent whole.
    """

    def __init__(
        self,
        sim: FakeOllama,
        conn: Connection,
        record: RequestRecord,
        plan: Plan,
        received_ns: int,
    ) -> None:
        self._sim = sim
        self._conn = conn
        self._record = record
        self._plan = plan
        self._received_ns = received_ns
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._has_slot = False
        self._headers_sent = False
        self._sent = 0
        self._text: list[str] = []
        self._load_ns = 0
        self._slot_ns = 0
        self._first_ns = 0
        model_json = orjson.dumps(plan.model)
        self._head = b'{"model":' + model_json + b',"created_at":"'
        if plan.chat:
            self._middle = b'","message":{"role":"assistant","content":'
            self._tail = b'},"done":false}\n'
        else:
            self._middle = b'","response":'
            self._tail = b',"done":false}\n'

    def begin(self) -> None:
        """Start waiting for the model and a slot."""
        self._task = self._sim.loop.create_task(self._admit())

    async def _admit(self) -> None:
        plan = self._plan
        host = self._sim.host
        self._load_ns = await host.prepare(plan.canonical, plan.load_options, plan.session)
        await host.acquire_slot()
        self._has_slot = True
        self._task = None
        self._slot_ns = time.perf_counter_ns()
        delay = self._sim.jittered(plan.first_delay_ms)
        self._timer = self._sim.loop.call_later(delay, self._tick)

    def client_lost(self) -> None:
        """Cancel the generation and free its slot (or its place in the queue)."""
        record = self._record
        if record.outcome not in ("in_progress", "stalled"):
            return
        record.client_closed_at = time.time()
        if record.outcome == "in_progress":
            record.outcome = "client_closed"
        self._stop()

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._has_slot:
            self._has_slot = False
            self._sim.host.release()

    def _tick(self) -> None:
        self._timer = None
        plan = self._plan
        sent = self._sent
        if sent == plan.fail_after:
            self._fail()
            return
        if sent == plan.emissions:
            self._finish(plan.done_reason)
            return
        if not sent:
            self._first_ns = time.perf_counter_ns()
        if plan.tool_call is not None:
            self._emit_tool_call(plan.tool_call)
        elif plan.stops:
            if self._emit_until_stop(sent, plan.stops):
                return
        elif plan.stream:
            self._write_line(
                b"".join(
                    (
                        self._head,
                        CLOCK.stamp(),
                        self._middle,
                        VOCAB_JSON[sent % len(VOCAB)] if sent else FIRST_TOKEN_JSON,
                        self._tail,
                    )
                )
            )
        else:
            self._text.append(token_text(sent))
        self._sent = self._record.tokens_sent = sent + 1
        self._timer = self._sim.loop.call_later(self._next_delay(), self._tick)

    def _next_delay(self) -> float:
        config = self._sim.config
        itl = self._plan.itl_ms
        if config.slowdown:
            itl *= 1.0 + config.slowdown * self._sim.host.active / config.parallel
        return self._sim.jittered(itl)

    def _emit_text(self, text: str) -> None:
        self._text.append(text)
        if self._plan.stream:
            self._write_line(
                b"".join((self._head, CLOCK.stamp(), self._middle, orjson.dumps(text), self._tail))
            )

    def _emit_until_stop(self, index: int, stops: tuple[str, ...]) -> bool:
        """Emit token ``index`` unless the text would then hold a stop string; True if it ended."""
        so_far = "".join(self._text)
        candidate = so_far + token_text(index)
        cuts = [position for position in map(candidate.find, stops) if position >= 0]
        if not cuts:
            self._emit_text(candidate[len(so_far) :])
            return False
        cut = min(cuts)
        if cut > len(so_far):
            self._emit_text(candidate[len(so_far) : cut])
            self._sent = self._record.tokens_sent = index + 1
        self._finish("stop")
        return True

    def _emit_tool_call(self, call: JsonObject) -> None:
        if self._plan.stream:
            self._write_line(
                orjson.dumps(
                    {
                        "model": self._plan.model,
                        "created_at": CLOCK.stamp().decode(),
                        "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                        "done": False,
                    }
                )
                + b"\n"
            )

    def _write_line(self, line: bytes) -> None:
        chunk = b"%x\r\n%b\r\n" % (len(line), line)
        if not self._headers_sent:
            self._headers_sent = True
            self._record.first_byte_at = time.time()
            chunk = self._conn.chunked_head() + chunk
        self._conn.write(chunk)

    def _final_object(self, reason: str) -> JsonObject:
        plan = self._plan
        now = time.perf_counter_ns()
        first = self._first_ns or now
        metrics = _metrics(
            total_duration=now - self._received_ns,
            load_duration=self._load_ns,
            prompt_eval_count=plan.prompt_tokens,
            prompt_eval_duration=first - self._slot_ns,
            eval_count=plan.tool_tokens if plan.tool_call is not None else self._sent,
            eval_duration=now - first,
        )
        content = "" if plan.stream else "".join(self._text)
        stamp = CLOCK.stamp().decode()
        if not plan.chat:
            return {
                "model": plan.model,
                "created_at": stamp,
                "response": content,
                "done": True,
                "done_reason": reason,
                **metrics,
            }
        message: JsonObject = {"role": "assistant", "content": content}
        if plan.tool_call is not None and (plan.tool_on_final or not plan.stream):
            message["tool_calls"] = [plan.tool_call]
        return {
            "model": plan.model,
            "created_at": stamp,
            "message": message,
            "done_reason": reason,
            "done": True,
            **metrics,
        }

    def _finish(self, reason: str) -> None:
        final = self._final_object(reason)
        self._settle("done")
        if self._plan.stream:
            self._write_line(orjson.dumps(final) + b"\n")
            self._conn.write(CHUNK_END)
            self._conn.end_exchange()
        else:
            self._record.first_byte_at = self._record.finished_at
            self._conn.respond_json(200, final)

    def _fail(self) -> None:
        mode = self._plan.fail_mode
        if mode == "stall":
            self._record.outcome = "stalled"
        elif mode == "drop":
            self._settle("dropped")
            self._conn.drop()
        elif self._headers_sent:
            self._settle("error")
            self._write_line(orjson.dumps({"error": MIDSTREAM_ERROR}) + b"\n")
            self._conn.write(CHUNK_END)
            self._conn.end_exchange()
        else:
            self._settle("error")
            self._record.first_byte_at = self._record.finished_at
            self._conn.respond_json(500, {"error": MIDSTREAM_ERROR})

    def _settle(self, outcome: Outcome) -> None:
        self._record.outcome = outcome
        self._record.finished_at = time.time()
        if self._has_slot:
            self._has_slot = False
            self._sim.host.release()
