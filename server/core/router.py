"""Which Ollama serves a turn: each call is pinned to the backend that holds its prompt.

Every voice turn resends the whole conversation, and an Ollama that served the call's
last turn has that prompt in a slot's cache: only the new messages cost prompt
evaluation there. So, with the ``pinned`` policy (the default):

- A turn belongs to a call by its key (:attr:`Turn.call_key`: VAPI's call id, the
  websocket, the RunPod job's call id, OpenAI's ``prompt_cache_key`` or ``user``).
  Without a key, the conversation itself is the key: the longest prefix of its
  messages that an earlier turn sent, never a prefix of system messages alone (every
  call of one assistant shares those).
- A known call goes back to the backend of its last turn, if that backend is ready.
  If it is full while another ready backend has a free slot, the turn moves when
  waiting would cost more than evaluating its whole prompt elsewhere: when
  ``(turns waiting + 1) / slots * mean turn time`` exceeds
  ``prompt tokens / PREFILL_RATE``.
- A new call goes to the ready backend with the fewest active calls per slot (calls
  that had a turn in the last minute: an idle call's prompt still sits in a slot,
  which a new call would take over), then the least loaded (turns streaming and
  waiting per slot); ties rotate.

``least-loaded`` and ``round-robin`` ignore calls, for comparison. The tables of pins
are bounded (least recently used calls are forgotten first), so memory stays flat
however many calls come and go.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from .backend import Backend
from .events import Turn

__all__ = ["CallKey", "Router"]

# Calls (and keyless conversations) remembered; one entry is a few hundred bytes.
_TABLE_SIZE = 10_000
# Seconds after its last turn that a call still counts as active where it is pinned.
_ACTIVE_SECONDS = 60.0
# Characters per token, to estimate a prompt Ollama has not counted yet.
_CHARS_PER_TOKEN = 4


@dataclass(slots=True)
class _Pin:
    backend: Backend
    prompt_tokens: int
    used_at: float


@dataclass(frozen=True, slots=True)
class CallKey:
    """What ties a turn to its call: an explicit key, or its conversation's prefixes.

    ``prefixes`` holds a hash of each prefix of the messages (the first message,
    the first two...) that does not consist of system messages alone, longest last;
    ``chars`` estimates the prompt's size.
    """

    key: str | None
    prefixes: tuple[int, ...]
    chars: int


class Router:
    """Chooses a backend for each turn by the configured policy."""

    def __init__(
        self,
        backends: Sequence[Backend],
        policy: str,
        prefill_rate: float,
        table_size: int = _TABLE_SIZE,
    ) -> None:
        self.backends = tuple(backends)
        self.policy = policy
        self.prefill_rate = prefill_rate
        self.table_size = table_size
        self._calls: OrderedDict[str, _Pin] = OrderedDict()
        self._conversations: OrderedDict[int, _Pin] = OrderedDict()
        self._next = 0
        self.moved = 0  # turns of a known call sent elsewhere because its backend was full

    def key(self, turn: Turn) -> CallKey:
        """The call a turn belongs to (computed once per turn)."""
        chars = sum(len(m.get("content") or "") for m in turn.messages)
        if turn.call_key is not None or self.policy != "pinned" or len(self.backends) == 1:
            return CallKey(turn.call_key, (), chars)
        prefixes = []
        digest = 0
        only_system = True
        for message in turn.messages:
            role = message.get("role")
            digest = hash((digest, role, message.get("content"), str(message.get("tool_calls"))))
            only_system = only_system and role == "system"
            if not only_system:
                prefixes.append(digest)
        return CallKey(None, tuple(prefixes), chars)

    def choose(self, call: CallKey, exclude: Backend | None = None) -> Backend | None:
        """The backend for a turn of ``call``, or None when no backend is ready."""
        ready = [b for b in self.backends if b.ready and b is not exclude]
        if not ready:
            return None
        if len(ready) == 1:
            return ready[0]
        if self.policy == "round-robin":
            self._next += 1
            return ready[self._next % len(ready)]
        if self.policy == "pinned":
            pin = self._pin(call)
            if pin is not None and pin.backend in ready:
                backend = pin.backend
                if backend.free_slots:
                    return backend
                free = [b for b in ready if b.free_slots]
                if free and backend.expected_wait() > pin.prompt_tokens / self.prefill_rate:
                    self.moved += 1
                    return self._least_loaded(free)
                return backend
            active = self._active_calls()
            return self._least_loaded(ready, lambda b: (active.get(b, 0) / b.slots, b.load))
        return self._least_loaded(ready)

    def _least_loaded(
        self, backends: list[Backend], load: Callable[[Backend], Any] = attrgetter("load")
    ) -> Backend:
        self._next += 1
        start = self._next % len(backends)
        rotated = backends[start:] + backends[:start]
        return min(rotated, key=load)

    def _active_calls(self) -> dict[Backend, int]:
        """How many calls had a turn on each backend in the last ``_ACTIVE_SECONDS``."""
        since = time.monotonic() - _ACTIVE_SECONDS
        active: dict[Backend, int] = {}
        for table in (self._calls, self._conversations):
            for pin in reversed(table.values()):  # most recently used first
                if pin.used_at < since:
                    break
                active[pin.backend] = active.get(pin.backend, 0) + 1
        return active

    def _pin(self, call: CallKey) -> _Pin | None:
        if call.key is not None:
            return self._calls.get(call.key)
        # The newest turn's whole conversation is not a prefix an earlier turn sent.
        for digest in reversed(call.prefixes[:-1]):
            pin = self._conversations.get(digest)
            if pin is not None:
                return pin
        return None

    def pin(self, call: CallKey, backend: Backend, prompt_tokens: int | None = None) -> None:
        """Remember that ``backend`` holds this call's prompt (``prompt_tokens`` long).

        Called when a turn starts streaming there and again when Ollama has counted its
        prompt and reply. A keyless conversation is remembered by its whole prefix,
        and the shorter prefixes that led to it are forgotten.
        """
        if self.policy != "pinned" or len(self.backends) == 1:
            return
        tokens = prompt_tokens if prompt_tokens is not None else call.chars // _CHARS_PER_TOKEN
        pin = _Pin(backend, tokens, time.monotonic())
        if call.key is not None:
            table: OrderedDict[str, _Pin] | OrderedDict[int, _Pin] = self._calls
            self._calls[call.key] = pin
            self._calls.move_to_end(call.key)
        elif call.prefixes:
            table = self._conversations
            for digest in call.prefixes[:-1]:
                self._conversations.pop(digest, None)
            self._conversations[call.prefixes[-1]] = pin
            self._conversations.move_to_end(call.prefixes[-1])
        else:
            return
        while len(table) > self.table_size:
            table.popitem(last=False)

    @property
    def pinned_calls(self) -> int:
        """Calls and keyless conversations remembered now."""
        return len(self._calls) + len(self._conversations)
