"""llama-server's slots and prompt caches, behind Ollama's slot semaphore.

Ollama lets ``parallel`` requests at a time reach a loaded model, the others
waiting in arrival order (``llm/llama_server.go``, ``Completion``: ``s.sem.Acquire``).
llama-server, started with ``-np parallel``, keeps in each slot the tokens of its
last prompt and reply, and gives a request its slot as ``get_available_slot``
does (``tools/server/server-context.cpp``):

1. the idle slot whose cache shares the largest fraction of the new prompt
   (common prefix / prompt tokens), if that fraction is above
   ``--slot-prompt-similarity`` (0.1; Ollama does not set it);
2. else the least recently used idle slot (the last of equals, so a fresh
   server starts from its last slot).

When the chosen slot would lose its cache (chosen by LRU, or keeping less than
half of it), its tokens are saved in the RAM prompt cache (``--cache-ram``,
8192 MiB by default) and the saved prompt that suits the request best is
restored into the slot instead (``server_prompt_cache::load``: one keeping at
least a quarter of itself, better both in what it keeps and in similarity).
Once the request has its slot, every other idle slot is copied into the RAM
cache too (``process_single_task``, ``--cache-idle-slots``, on by default).
Then only the tokens past the common prefix are evaluated, and at least one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from typing import Final, Literal

from .prompt import CHARS_PER_TOKEN, count_tokens, shared_tokens
from .wire import JsonObject

Selection = Literal["similarity", "lru"]
_MIB: Final = 1 << 20


@dataclasses.dataclass(slots=True)
class Slot:
    """One llama-server slot: the text of the tokens it holds, and when it was last used."""

    id: int
    text: str = ""
    last_used: int = -1
    busy: bool = False
    saved: bool = False  # whether the RAM cache holds ``text`` already


@dataclasses.dataclass(frozen=True, slots=True)
class Assignment:
    """A request's slot and what its prompt costs there (in tokens)."""

    slot: Slot
    prompt_tokens: int
    cached: int
    restored: int
    selected_by: Selection

    @property
    def evaluated(self) -> int:
        """Prompt tokens evaluated: those past the cached prefix."""
        return self.prompt_tokens - self.cached


class RamCache:
    """llama-server's RAM prompt cache (``server_prompt_cache``): saved prompts, oldest first."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.tokens = 0

    def save(self, text: str) -> None:
        """Save a slot's tokens, unless held already; drop saved prefixes of them (``alloc``)."""
        if any(entry.startswith(text) for entry in self.entries):
            return
        kept = [entry for entry in self.entries if not text.startswith(entry)]
        if len(kept) < len(self.entries):
            self.entries = kept
            self.tokens = sum(map(count_tokens, kept))
        self.entries.append(text)
        self.tokens += count_tokens(text)

    def take_better(self, current: str, prompt: str, prompt_tokens: int) -> str | None:
        """Remove and return the saved prompt suiting ``prompt`` better than ``current`` does."""
        shared = shared_tokens(current, prompt)
        keep_best = shared / count_tokens(current) if current else -1.0
        similarity_best = shared / prompt_tokens
        best: str | None = None
        for entry in self.entries:
            shared = shared_tokens(entry, prompt)
            keep = shared / count_tokens(entry)
            similarity = shared / prompt_tokens
            if keep >= 0.25 and keep_best < keep and similarity_best < similarity:
                best, keep_best, similarity_best = entry, keep, similarity
        if best is not None:
            self.entries.remove(best)
            self.tokens -= count_tokens(best)
        return best

    def trim(self, limit_tokens: int) -> list[str]:
        """Drop the oldest prompts beyond the limit, always keeping one (``update``)."""
        dropped: list[str] = []
        while len(self.entries) > 1 and self.tokens > limit_tokens:
            dropped.append(self.entries.pop(0))
            self.tokens -= count_tokens(dropped[-1])
        return dropped


class Slots:
    """A loaded model's slots: Ollama's FIFO semaphore, llama-server's slots and RAM cache."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.capacity = count
        self.slots = [Slot(index) for index in range(count)]
        self.ram = RamCache()
        self.held = 0  # permits taken, leaked ones included
        self.leaked = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._clock = 0

    @property
    def busy(self) -> int:
        """Slots generating."""
        return sum(slot.busy for slot in self.slots)

    @property
    def waiting(self) -> int:
        """Requests waiting for a permit."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Wait for a permit, first come first served."""
        if self.held < self.capacity and not self._waiters:
            self.held += 1
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a permit back: to the first waiter, else free."""
        self.held -= 1
        self.grant()

    def grant(self) -> None:
        """Hand free permits to waiters in arrival order."""
        while self._waiters and self.held < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.held += 1

    def assign(self, prompt: str, *, reuse: bool, similarity: float, ram_tokens: int) -> Assignment:
        """Give ``prompt`` an idle slot as llama-server does (the caller holds a permit).

        A prompt is at least one token (the tokenizer's BOS), even rendered empty.
        """
        prompt_tokens = max(count_tokens(prompt), 1)
        idle = [slot for slot in self.slots if not slot.busy]
        chosen: Slot | None = None
        selected_by: Selection = "lru"
        save = True
        if reuse and similarity > 0:
            best = 0.0
            shared: dict[str, int] = {}  # slots often hold the same text
            for slot in idle:
                if slot.text:
                    if slot.text not in shared:
                        shared[slot.text] = shared_tokens(slot.text, prompt)
                    fraction = shared[slot.text] / prompt_tokens
                    if fraction > best and fraction > similarity:
                        best, chosen = fraction, slot
            if chosen is not None:
                selected_by = "similarity"
                save = best * prompt_tokens / count_tokens(chosen.text) < 0.5
        if chosen is None:
            for slot in idle:
                if chosen is None or slot.last_used <= chosen.last_used:
                    chosen = slot
        assert chosen is not None, "a permit always finds an idle slot"
        restored = 0
        ram = reuse and ram_tokens > 0
        if ram and save:
            if chosen.text:
                self.ram.save(chosen.text)
            better = self.ram.take_better(chosen.text, prompt, prompt_tokens)
            if better is not None:
                chosen.text = better
                restored = count_tokens(better)
            self._trim(ram_tokens)
        cached = min(shared_tokens(chosen.text, prompt), prompt_tokens - 1) if reuse else 0
        chosen.busy = True
        if ram:
            for slot in idle:
                if slot is not chosen and slot.text and not slot.saved:
                    self.ram.save(slot.text)
                    slot.saved = True
            self._trim(ram_tokens)
        return Assignment(chosen, prompt_tokens, max(cached, 0), restored, selected_by)

    def _trim(self, ram_tokens: int) -> None:
        """Trim the RAM cache; slots whose copy went are no longer saved."""
        dropped = set(self.ram.trim(ram_tokens))
        if dropped:
            for slot in self.slots:
                if slot.text in dropped:
                    slot.saved = False

    def finish(self, slot: Slot, text: str, *, leak: bool = False) -> None:
        """The slot is idle again holding ``text``; its permit returns unless ``leak``."""
        slot.busy = False
        slot.text = text
        slot.saved = False
        self._clock += 1
        slot.last_used = self._clock
        if len(self.slots) > self.capacity:
            self.slots.remove(slot)
        if leak:
            self.leaked += 1
        else:
            self.release()

    def resize(self, count: int) -> None:
        """Change the number of slots (idle ones go at once, busy ones when they finish)."""
        self.capacity = count
        while len(self.slots) < count:
            self.slots.append(Slot(max((slot.id for slot in self.slots), default=-1) + 1))
        for slot in reversed(self.slots[:]):
            if len(self.slots) <= count:
                break
            if not slot.busy:
                self.slots.remove(slot)
        self.grant()

    def describe(self) -> JsonObject:
        """The slots and the RAM cache, as ``/_sim/stats`` shows them."""
        return {
            "slots": [
                {"id": slot.id, "busy": slot.busy, "cached_tokens": count_tokens(slot.text)}
                for slot in self.slots
            ],
            "leaked_slots": self.leaked,
            "ram_cache": {"prompts": len(self.ram.entries), "tokens": self.ram.tokens},
        }


def ram_cache_tokens(cache_ram_mib: int, kv_bytes_per_token: int) -> int:
    """How many tokens ``--cache-ram`` MiB of KV state hold."""
    return cache_ram_mib * _MIB // kv_bytes_per_token


def text_of_tokens(text: str, tokens: int) -> str:
    """The first ``tokens`` tokens of ``text``."""
    return text[: tokens * CHARS_PER_TOKEN]
