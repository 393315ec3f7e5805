"""Tool calls a model wrote as text, taken out of a turn's content so they are never spoken.

Ollama parses tool calls itself, but not always (``tools/tools.go``): for models whose
tool tag is ``{`` or ``[`` (llama3.1 and others), any text before the JSON switches its
parser off and the call arrives as plain content, token by token; and a model may write
a call in a form its template does not declare. A :class:`ToolCallFilter` reads the
content of one turn that offered tools and separates the calls from the text.

A call is a JSON object with ``name``, an offered tool, and its arguments under
``arguments`` or ``parameters``: an object, a string holding one, or nothing (no
arguments). OpenAI's shape, the same under ``function``, is a call too. Calls come
alone, as a JSON list (all of it calls, or it is text), one after another (llama3.1
puts ``;`` between them), and after a tag: ``<tool_call>`` (closed by
``</tool_call>``), ``[TOOL_CALLS]`` (mistral) or ``<|python_tag|>`` (llama3.1).

Content is held back only from where it begins like a call: ``{`` and then a key
``"name"`` (with an offered tool's name), ``"arguments"``, ``"parameters"``,
``"function"`` or ``"type"``; ``[`` and then such an object; or a tag. It is released
as text as soon as it cannot be a call: another key, another name, or a whole JSON value
that is not a call. Text before a call goes out at once, and so does text after one;
whitespace, ``;``, ``,`` and closing tags between or after calls are dropped, and so is
whitespace before a call that opens the response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["Call", "ToolCallFilter"]

Call = tuple[str, str]
"""A tool call: the tool's name, and its arguments as a JSON object serialised to a string."""

_NO_CALLS: tuple[Call, ...] = ()
_TAGS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")
_CLOSERS = ("</tool_call>", "[/TOOL_CALLS]")
_KEYS = ("name", "arguments", "parameters", "function", "type")
_SPACE = " \t\r\n"
_SEPARATORS = " \t\r\n;,"
_OPENER = re.compile(r"[{\[<]")
_SPECIAL = re.compile(r'["{}\[\]]')
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)

# What the start of the held content says.
_NOT_CALL = 0  # text up to the returned index
_UNDECIDED = 1  # may begin a call; text if the response ends here
_IN_CALL = 2  # begins a call; a call cut off if the response ends here
_CALL_AT = 3  # begins a call whose JSON value starts at the returned index

# Where the filter is in the content.
_TEXT = 0  # in text, nothing held
_START = 1  # holding what may begin a call
_VALUE = 2  # holding a call's JSON value until it is whole
_AFTER = 3  # after a call: dropping separators and closing tags


def _skip(s: str, i: int, chars: str = _SPACE) -> int:
    """The index of the first character of ``s`` from ``i`` not in ``chars``."""
    n = len(s)
    while i < n and s[i] in chars:
        i += 1
    return i


def _loads(text: str) -> Any:
    """``text`` parsed as JSON, or None if it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:  # models put raw newlines and tabs in strings, which strict JSON forbids
        return json.loads(text, strict=False)
    except (ValueError, RecursionError):
        return None


class ToolCallFilter:
    """Splits the content of one turn into text to speak and tool calls.

    ``names`` are the tools the turn offered. Feed every piece of content in order,
    then call :meth:`finish` once. ``truncated`` tells, after it, whether the response
    ended inside a call (which was dropped).
    """

    __slots__ = (
        "_busy",
        "_depth",
        "_fresh",
        "_held",
        "_names",
        "_pos",
        "_state",
        "_value",
        "truncated",
    )

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(names)
        self._held = ""
        self._state = _TEXT
        self._fresh = True  # nothing released yet: leading whitespace waits with a call
        self._busy = True  # whether content needs more than the plain-text test
        self._value = 0  # where the held JSON value starts
        self._pos = 0  # how far it has been scanned
        self._depth = 0  # brackets open at _pos
        self.truncated = False

    def feed(self, text: str) -> tuple[str, tuple[Call, ...]]:
        """The text that may be spoken now, and the calls completed by ``text``."""
        if not self._busy and "{" not in text and "[" not in text and "<" not in text:
            return text, _NO_CALLS
        return self._run(self._held + text, False)

    def finish(self) -> tuple[str, tuple[Call, ...]]:
        """At the end of the response: what is held, as calls or text.

        A call cut off (the response ended after it began like one) is dropped, and
        :attr:`truncated` set: it is JSON or markup, and cannot be called.
        """
        return self._run(self._held, True)

    def _run(self, held: str, final: bool) -> tuple[str, tuple[Call, ...]]:
        spoken: list[str] = []
        calls: list[Call] = []
        state = self._state
        while held:
            if state == _TEXT:
                if not self._fresh:
                    match = _OPENER.search(held)
                    if match is None:
                        spoken.append(held)
                        held = ""
                        break
                    i = match.start()
                    if i:
                        spoken.append(held[:i])
                        held = held[i:]
                state = _START
            elif state == _START:
                verdict, i = self._classify(held)
                if verdict == _CALL_AT:
                    self._value = self._pos = i
                    self._depth = 0
                    state = _VALUE
                elif verdict == _NOT_CALL or (verdict == _UNDECIDED and final):
                    spoken.append(held[:i])
                    held = held[i:]
                    state = _TEXT
                elif final:
                    self.truncated = True
                    held = ""
                else:
                    break
                self._fresh = False
            elif state == _VALUE:
                end = self._scan(held)
                if end < 0:
                    if final:
                        self.truncated = True
                        held = ""
                    break
                found = self._calls(held[self._value : end])
                if found:
                    calls += found
                    state = _AFTER
                else:
                    spoken.append(held[:end])
                    state = _TEXT
                held = held[end:]
            else:
                held = held[_skip(held, 0, _SEPARATORS) :]
                for closer in _CLOSERS:
                    if held.startswith(closer):
                        held = held[len(closer) :]
                        break
                else:
                    if held and (final or not any(c.startswith(held) for c in _CLOSERS)):
                        state = _TEXT
                    else:
                        break
        self._held = held
        self._state = state
        self._busy = state != _TEXT or self._fresh
        return "".join(spoken), tuple(calls) if calls else _NO_CALLS

    def _classify(self, s: str) -> tuple[int, int]:
        """What ``s`` (held from a possible start of a call) is, and the index that goes with it.

        Whitespace before the start belongs to it. On ``_NOT_CALL`` and ``_UNDECIDED`` the
        index ends what is text if this is not a call: that whitespace and the start's
        first character.
        """
        n = len(s)
        i = _skip(s, 0)
        if i == n:
            return _UNDECIDED, n
        text = i + 1
        pending = _UNDECIDED
        if s[i] in "<[":
            for tag in _TAGS:
                if s.startswith(tag, i):
                    i = _skip(s, i + len(tag))
                    pending = _IN_CALL
                    break
                if tag.startswith(s[i:]):
                    return _UNDECIDED, text
            else:
                if s[i] == "<":
                    return _NOT_CALL, text
            if i == n:
                return pending, text
        start = i
        if s[i] == "[":
            i = _skip(s, i + 1)
            if i == n:
                return pending, text
        if s[i] != "{":
            return _NOT_CALL, text
        i = _skip(s, i + 1)
        if i == n:
            return pending, text
        if s[i] != '"':
            return _NOT_CALL, text
        end = s.find('"', i + 1)
        if end < 0:
            key = s[i + 1 :]
            return (pending if any(k.startswith(key) for k in _KEYS) else _NOT_CALL), text
        key = s[i + 1 : end]
        if key not in _KEYS:
            return _NOT_CALL, text
        if key != "name":
            return _CALL_AT, start
        i = _skip(s, end + 1)
        if i == n:
            return _IN_CALL, text
        if s[i] != ":":
            return _NOT_CALL, text
        i = _skip(s, i + 1)
        if i == n:
            return _IN_CALL, text
        if s[i] != '"':
            return _NOT_CALL, text
        end = s.find('"', i + 1)
        if end < 0:
            name = s[i + 1 :]
            return (_IN_CALL if any(t.startswith(name) for t in self._names) else _NOT_CALL), text
        return (_CALL_AT, start) if s[i + 1 : end] in self._names else (_NOT_CALL, text)

    def _scan(self, s: str) -> int:
        """The end of the JSON value held from ``_value``, or -1 while it is incomplete."""
        i = self._pos
        depth = self._depth
        while True:
            match = _SPECIAL.search(s, i)
            if match is None:
                i = len(s)
                break
            j = match.start()
            c = s[j]
            if c == '"':
                string = _STRING.match(s, j)
                if string is None:  # not closed yet: scanned again from its quote
                    i = j
                    break
                i = string.end()
                continue
            i = j + 1
            if c == "{" or c == "[":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return i
        self._pos = i
        self._depth = depth
        return -1

    def _calls(self, value: str) -> list[Call] | None:
        """The calls a whole JSON value holds, or None if it is not calls."""
        data = _loads(value)
        calls = []
        for item in data if isinstance(data, list) else (data,):
            call = self._call(item)
            if call is None:
                return None
            calls.append(call)
        return calls

    def _call(self, item: object) -> Call | None:
        if not isinstance(item, dict):
            return None
        function = item.get("function")
        if "name" not in item and isinstance(function, dict):
            item = function
        name = item.get("name")
        if not isinstance(name, str) or name not in self._names:
            return None
        arguments = item["arguments"] if "arguments" in item else item.get("parameters")
        if arguments is None:
            return name, "{}"
        if isinstance(arguments, str):
            arguments = _loads(arguments) if arguments.strip() else {}
        if not isinstance(arguments, dict):
            return None
        try:
            return name, orjson.dumps(arguments).decode()
        except orjson.JSONEncodeError:  # an integer beyond 64 bits
            return name, json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
