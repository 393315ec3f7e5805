"""Replies in progress: loading the model, taking a slot, then writing the planned steps.

A :class:`Generation` waits for the model and a slot, then runs its plan one
step (token) per timer, each writing at most one NDJSON line; a
:class:`LoadReply` answers a request that only loads the model. Both stop when
the client goes away. The request's entry in the log records its slot and what
its prompt cost there.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from typing import TYPE_CHECKING, Final

from .connection import CHUNK_END, JSON_BARE, Connection
from .replies import Inference, Plan
from .scheduler import Admission, Runner
from .slots import Assignment, ram_cache_tokens, text_of_tokens
from .wire import CLOCK, HttpError, JsonObject, go_json

if TYPE_CHECKING:
    from .server import FakeOllama, Outcome, RequestRecord

MIDSTREAM_ERROR: Final = "an error was encountered while running the model: unexpected EOF"
# What a request waiting for a slot gets once the runner has crashed (getServerStatus).
RUNNER_GONE_ERROR: Final = "llama-server process no longer running: unknown "


def _watch(task: asyncio.Task[None], conn: Connection) -> None:
    """Report a simulator bug in ``task`` on stderr and drop the connection, rather than hang."""

    def done(finished: asyncio.Task[None]) -> None:
        if not finished.cancelled() and (error := finished.exception()) is not None:
            traceback.print_exception(error, file=sys.stderr)
            conn.drop()

    task.add_done_callback(done)


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
            "done": True,
            "done_reason": reason,
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
        _watch(self._task, self._conn)

    async def _run(self) -> None:
        ask = self._ask
        host = self._sim.host
        admission = Admission(
            ask.canonical,
            ask.load_options,
            ask.profile,
            ask.session,
            ask.session_set,
            self._sim.config.load_fail,
            self,
        )
        record = self._record
        try:
            runner, _ = await host.admit(admission)
        except HttpError as error:
            self._task = None
            record.outcome = "error"
            record.first_byte_at = record.finished_at = time.time()
            self._conn.respond_json(error.status, {"error": error.message})
            return
        host.release(runner, self)
        self._task = None
        record.outcome = "done"
        record.first_byte_at = record.finished_at = time.time()
        self._conn.respond_json(200, done_object(ask.chat, ask.model, "load"))

    def runner_died(self) -> None:
        """Nothing to do: a load request holds the runner only for an instant."""

    def client_lost(self) -> None:
        """Stop waiting (which aborts a load this request started)."""
        if self._record.outcome == "in_progress":
            self._record.outcome = "client_closed"
            self._record.client_closed_at = time.time()
        if self._task is not None:
            self._task.cancel()
            self._task = None


class Generation:
    """A generating request: wait for the model and a slot, then write the reply on timers.

    Streaming replies are chunked NDJSON, one chunk per line and one write per
    line; non-streaming ones are generated on the same timers and sent whole.
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
        self._runner: Runner | None = None
        self._assignment: Assignment | None = None
        self._has_permit = False
        self._headers_sent = False
        self._sent = 0
        self._load_ns = 0
        self._slot_ns = 0
        self._restore_ns = 0
        self._first_ns = 0
        self._head = b'{"model":' + go_json(plan.model) + b',"created_at":"'

    def begin(self) -> None:
        """Start waiting for the model and a slot."""
        self._task = self._sim.loop.create_task(self._admit())
        _watch(self._task, self._conn)

    async def _admit(self) -> None:
        plan = self._plan
        sim = self._sim
        admission = Admission(
            plan.canonical,
            plan.load_options,
            plan.profile,
            plan.session,
            plan.session_set,
            plan.fail_load,
            self,
        )
        try:
            self._runner, self._load_ns = await sim.host.admit(admission)
        except HttpError as error:
            self._task = None
            self._record.outcome = "error"
            self._record.first_byte_at = self._record.finished_at = time.time()
            self._conn.respond_json(error.status, {"error": error.message})
            return
        slots = self._runner.slots
        await slots.acquire()
        self._has_permit = True
        self._task = None
        config = sim.config
        assignment = slots.assign(
            plan.prompt,
            reuse=config.prompt_cache,
            similarity=config.slot_similarity,
            ram_tokens=ram_cache_tokens(config.cache_ram_mib, plan.profile.kv_bytes_per_token),
        )
        self._assignment = assignment
        record = self._record
        record.slot = assignment.slot.id
        record.slot_selection = assignment.selected_by
        record.prompt_tokens = assignment.prompt_tokens
        record.cached_tokens = assignment.cached
        record.evaluated_tokens = assignment.evaluated
        record.restored_tokens = assignment.restored
        self._slot_ns = time.perf_counter_ns()
        restore_ms = assignment.restored * config.cache_restore_per_token
        self._restore_ns = int(restore_ms * 1e6)
        first_ms = plan.ttft_ms + assignment.evaluated * config.ttft_per_prompt_token + restore_ms
        self._timer = sim.loop.call_later(sim.jittered(first_ms), self._tick)

    def client_lost(self) -> None:
        """Cancel the generation and free its slot (or its place in the queue).

        With a leak (``slot_leak``, ``[[leak]]``), a request that had its slot
        keeps Ollama's permit forever, as in ollama/ollama#17131: the route's
        callback blocks on an unbuffered channel nobody reads any more
        (``server/routes.go``, ``ChatHandler``), so ``Completion`` never returns
        to release ``s.sem``.
        """
        record = self._record
        if record.outcome not in ("in_progress", "stalled"):
            return
        record.client_closed_at = time.time()
        if record.outcome == "in_progress":
            record.outcome = "client_closed"
        leak = self._plan.leak and self._assignment is not None
        record.slot_leaked = leak
        self._stop(leak=leak)

    def runner_died(self) -> None:
        """The runner crashed under this request: fail it as Ollama would."""
        if self._record.outcome not in ("in_progress", "stalled"):
            return
        if self._assignment is None:
            self._stop()
            self._answer_error(500, RUNNER_GONE_ERROR)
        else:
            self._error(MIDSTREAM_ERROR)

    def _stop(self, leak: bool = False) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._let_go(leak)

    def _let_go(self, leak: bool = False) -> None:
        """Give back the slot (keeping what it computed), the permit and the runner."""
        runner, assignment = self._runner, self._assignment
        if runner is None:
            return
        self._runner = self._assignment = None
        if assignment is not None:
            plan = self._plan
            if self._sent:
                text = plan.prompt + "".join(plan.raw[: self._sent])
            else:
                text = text_of_tokens(plan.prompt, assignment.cached)
            runner.slots.finish(assignment.slot, text, leak=leak)
        elif self._has_permit:
            runner.slots.release()
        self._has_permit = False
        self._sim.host.release(runner, self)

    def _tick(self) -> None:
        self._timer = None
        plan = self._plan
        sent = self._sent
        if sent == plan.fail_after:
            self._fail()
            return
        if sent == len(plan.lines):
            self._finish()
            return
        if not sent:
            self._first_ns = time.perf_counter_ns()
        if plan.stream:
            line = plan.lines[sent]
            if line is not None:
                self._write_line(self._head + CLOCK.stamp() + line)
                self._record.tokens_sent += 1
        self._sent = sent + 1
        self._timer = self._sim.loop.call_later(self._next_delay(), self._tick)

    def _next_delay(self) -> float:
        config = self._sim.config
        itl = self._plan.itl_ms
        if config.slowdown and self._runner is not None:
            slots = self._runner.slots
            itl *= 1.0 + config.slowdown * slots.busy / slots.capacity
        return self._sim.jittered(itl)

    def _write_line(self, line: bytes) -> None:
        chunk = b"%x\r\n%b\r\n" % (len(line), line)
        if not self._headers_sent:
            self._headers_sent = True
            self._record.first_byte_at = time.time()
            chunk = self._conn.chunked_head() + chunk
        self._conn.write(chunk)

    def _message(self, final: bool) -> JsonObject:
        """The reply's message: on the ``done`` line of a stream, or whole."""
        plan = self._plan
        sent = self._sent
        if final and plan.stream:
            content, thinking, calls = plan.leftover, "", list(plan.final_calls)
        else:
            content = "".join(plan.content[:sent]) + plan.leftover
            thinking = "".join(plan.thinking[:sent])
            calls = [
                call for index in sorted(plan.calls) if index < sent for call in plan.calls[index]
            ]
            calls += plan.final_calls if final else []
        if not plan.chat:
            body: JsonObject = {"response": content}
            if thinking:
                body["thinking"] = thinking
            return body
        message: JsonObject = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        return {"message": message}

    def _final_object(self) -> JsonObject:
        plan = self._plan
        now = time.perf_counter_ns()
        first = self._first_ns or now
        assignment = self._assignment
        metrics = _metrics(
            total_duration=now - self._received_ns,
            load_duration=self._load_ns,
            prompt_eval_count=assignment.prompt_tokens if assignment is not None else 0,
            prompt_eval_duration=max(first - self._slot_ns - self._restore_ns, 1),
            eval_count=self._sent,
            eval_duration=now - first,
        )
        head: JsonObject = {"model": plan.model, "created_at": CLOCK.stamp().decode()}
        return {
            **head,
            **self._message(True),
            "done": True,
            "done_reason": plan.done_reason,
            **metrics,
        }

    def _finish(self) -> None:
        final = self._final_object()
        self._settle("done")
        if self._plan.stream:
            self._write_line(go_json(final) + b"\n")
            self._end_stream()
        else:
            self._record.tokens_sent = self._sent
            self._record.first_byte_at = self._record.finished_at
            self._conn.respond_json(200, final)

    def _end_stream(self) -> None:
        """End the chunked body cleanly (sending the head first if nothing went yet)."""
        end = CHUNK_END
        if not self._headers_sent:
            self._headers_sent = True
            self._record.first_byte_at = time.time()
            end = self._conn.chunked_head() + end
        self._conn.write(end)
        self._conn.end_exchange()

    def _fail(self) -> None:
        mode = self._plan.fail_mode
        if mode == "stall":
            self._record.outcome = "stalled"
        elif mode == "drop":
            self._settle("dropped")
            self._conn.drop()
        elif mode == "end":
            self._incomplete()
        else:
            runner = self._runner
            self._error(MIDSTREAM_ERROR)
            if runner is not None and self._sim.config.crash_on_error:
                self._sim.host.crash(runner, self)

    def _incomplete(self) -> None:
        """End with neither a ``done`` line nor an error, as Ollama does when
        llama-server's stream ends early or after 30 identical tokens
        (``llm/llama_server.go``, ``Completion``: ``return ctx.Err()``, nil).
        """
        self._settle("incomplete")
        if self._plan.stream:
            self._end_stream()
        else:
            self._record.tokens_sent = self._sent
            self._record.first_byte_at = self._record.finished_at
            head: JsonObject = {"model": self._plan.model, "created_at": CLOCK.stamp().decode()}
            self._conn.respond_json(200, {**head, **self._message(False), "done": False})

    def _error(self, message: str) -> None:
        """Fail with ``message``: a last line mid-stream, else a status (``streamResponse``)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._plan.stream and self._headers_sent:
            self._settle("error")
            self._write_line(go_json({"error": message}) + b"\n")
            self._end_stream()
        else:
            self._settle("error")
            self._answer_error(500, message)

    def _answer_error(self, status: int, message: str) -> None:
        """An error before any line: chunked ``application/json`` on a stream, else gin's JSON."""
        record = self._record
        record.outcome = "error"
        record.first_byte_at = record.finished_at = time.time()
        if not self._plan.stream:
            self._conn.respond_json(status, {"error": message})
            return
        body = go_json({"error": message})
        self._headers_sent = True
        self._conn.write(
            self._conn.chunked_head(status, JSON_BARE)
            + b"%x\r\n%b\r\n" % (len(body), body)
            + CHUNK_END
        )
        self._conn.end_exchange()

    def _settle(self, outcome: Outcome) -> None:
        self._record.outcome = outcome
        self._record.finished_at = time.time()
        self._let_go()
