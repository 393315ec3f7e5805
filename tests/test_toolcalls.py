"""Tool calls written as text: the filter that keeps them from being spoken.

The filter is a pure function of the content it is fed, so it is tested directly: every
case in one piece, split at every position and split at random must give one result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.toolcalls import Call, ToolCallFilter

TOOLS = ("get_weather", "say_hello", "say_hello_world", "end_call")
Result = tuple[str, list[Call], bool]


def run(pieces: Sequence[str], tools: Sequence[str] = TOOLS) -> Result:
    """Text, calls and whether a call was cut off, for content fed in these pieces."""
    tool_filter = ToolCallFilter(tools)
    spoken: list[str] = []
    calls: list[Call] = []
    for piece in pieces:
        text, found = tool_filter.feed(piece)
        spoken.append(text)
        calls.extend(found)
    text, found = tool_filter.finish()
    spoken.append(text)
    calls.extend(found)
    return "".join(spoken), calls, tool_filter.truncated


def splits(content: str) -> list[list[str]]:
    """Content cut once at every position, and cut into single characters."""
    return [[content[:i], content[i:]] for i in range(len(content) + 1)] + [list(content)]


WEATHER = ("get_weather", '{"city":"Paris"}')
HELLO = ("say_hello", "{}")

CASES: dict[str, tuple[str, Result]] = {
    "plain text": (
        "Sure, the weather in Paris is sunny.",
        ("Sure, the weather in Paris is sunny.", [], False),
    ),
    "call with parameters (llama3.1)": (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        ("", [WEATHER], False),
    ),
    "call with arguments": (
        '{"name":"get_weather","arguments":{"city":"Paris"}}',
        ("", [WEATHER], False),
    ),
    "whitespace before a call that opens the response": (
        ' \n {\n  "name": "get_weather",\n  "parameters": {"city": "Paris"}\n}\n',
        ("", [WEATHER], False),
    ),
    "text then call": (
        'Let me check. {"name": "get_weather", "parameters": {"city": "Paris"}}',
        ("Let me check. ", [WEATHER], False),
    ),
    "text after a call": (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}\n\nOne moment.',
        ("One moment.", [WEATHER], False),
    ),
    "a list of calls": (
        '[{"name": "get_weather", "parameters": {"city": "Paris"}}, {"name": "say_hello"}]',
        ("", [WEATHER, HELLO], False),
    ),
    "calls separated by semicolons (llama3.1)": (
        'Sure. {"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "say_hello", "parameters": {}};',
        ("Sure. ", [WEATHER, HELLO], False),
    ),
    "calls one after another": (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}\n{"name": "say_hello"}',
        ("", [WEATHER, HELLO], False),
    ),
    "tagged calls (qwen)": (
        'Checking. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "say_hello", "arguments": {}}\n</tool_call>',
        ("Checking. ", [WEATHER, HELLO], False),
    ),
    "tagged call never closed": (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}',
        ("", [WEATHER], False),
    ),
    "[TOOL_CALLS] list (mistral)": (
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "say_hello", "arguments": {}}][/TOOL_CALLS]',
        ("", [WEATHER, HELLO], False),
    ),
    "<|python_tag|> (llama3.1)": (
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        ("", [WEATHER], False),
    ),
    "OpenAI's shape": (
        '{"type": "function", "function": {"name": "get_weather", "arguments": '
        '"{\\"city\\": \\"Paris\\"}"}}',
        ("", [WEATHER], False),
    ),
    "type before name (llama3.2)": (
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
        ("", [WEATHER], False),
    ),
    "arguments before name": (
        '{"arguments": {"city": "Paris"}, "name": "get_weather"}',
        ("", [WEATHER], False),
    ),
    "arguments as a string": (
        '{"name": "get_weather", "parameters": "{\\"city\\": \\"Paris\\"}"}',
        ("", [WEATHER], False),
    ),
    "no arguments": (
        '{"name": "end_call"} {"name": "say_hello", "arguments": ""}',
        ("", [("end_call", "{}"), HELLO], False),
    ),
    "braces, brackets and escaped quotes in strings": (
        '{"name": "get_weather", "parameters": {"note": "a } b { \\" ] [ \\\\", "x": "}"}}',
        ("", [("get_weather", '{"note":"a } b { \\" ] [ \\\\","x":"}"}')], False),
    ),
    "nested objects and lists in arguments": (
        '{"name": "get_weather", "parameters": {"where": {"city": "Paris", "at": [1, {"d": []}]}}}',
        ("", [("get_weather", '{"where":{"city":"Paris","at":[1,{"d":[]}]}}')], False),
    ),
    "a raw newline in a string": (
        '{"name": "get_weather", "parameters": {"note": "two\nlines\u00e9"}}',
        ("", [("get_weather", '{"note":"two\\nlines\u00e9"}')], False),
    ),
    "a prefix of two tools' names": (
        '{"name": "say_hello_world", "arguments": {}}{"name": "say_hello", "arguments": {}}',
        ("", [("say_hello_world", "{}"), HELLO], False),
    ),
    "JSON that is not a call": (
        '{"city": "Paris"} is the answer.',
        ('{"city": "Paris"} is the answer.', [], False),
    ),
    "a call key, but no call": (
        'Schema: {"type": "object", "properties": {"a": {}}}.',
        ('Schema: {"type": "object", "properties": {"a": {}}}.', [], False),
    ),
    "a name that is not an offered tool": (
        '{"name": "get_time", "parameters": {}}',
        ('{"name": "get_time", "parameters": {}}', [], False),
    ),
    "a name that only begins a tool's name": (
        '{"name": "say", "arguments": {}}',
        ('{"name": "say", "arguments": {}}', [], False),
    ),
    "a name that is not a string": ('{"name": 3}', ('{"name": 3}', [], False)),
    "arguments that are not an object": (
        '{"name": "get_weather", "parameters": [1]}',
        ('{"name": "get_weather", "parameters": [1]}', [], False),
    ),
    "a list not all calls": (
        '[{"name": "get_weather", "parameters": {}}, 3]',
        ('[{"name": "get_weather", "parameters": {}}, 3]', [], False),
    ),
    "balanced but not JSON": (
        '{"name": "get_weather", "parameters": {city: Paris}}',
        ('{"name": "get_weather", "parameters": {city: Paris}}', [], False),
    ),
    "brackets and angles in speech": (
        "Press [1] or <2>, {maybe} [TOOL] <b>ok</b> a < b {",
        ("Press [1] or <2>, {maybe} [TOOL] <b>ok</b> a < b {", [], False),
    ),
    "a tag without JSON": ("<tool_call>get_weather", ("<tool_call>get_weather", [], False)),
    "a call cut off": ('Okay. {"name": "get_weather", "parameters": {"ci', ("Okay. ", [], True)),
    "a call cut off in its name": ('{"name": "get_w', ("", [], True)),
    "a tag cut off": ("<tool_call>", ("", [], True)),
    "undecided at the end": ('Look {"na', ('Look {"na', [], False)),
    "a partial tag at the end": ("Look <tool_c", ("Look <tool_c", [], False)),
    "a partial closing tag after a call": (
        '{"name": "say_hello"}</tool_',
        ("</tool_", [HELLO], False),
    ),
    "only whitespace": (" \n", (" \n", [], False)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_cases_at_every_split(case: str) -> None:
    content, expected = CASES[case]
    assert run([content]) == expected
    for pieces in splits(content):
        assert run(pieces) == expected, pieces


def test_plain_text_goes_out_as_it_comes() -> None:
    tool_filter = ToolCallFilter(TOOLS)
    for token in ["Hello", " there", ",", " how", " can", " I", " help", "?"]:
        assert tool_filter.feed(token) == (token, ())
    assert tool_filter.finish() == ("", ())


def test_leading_whitespace_waits_for_the_first_character() -> None:
    tool_filter = ToolCallFilter(TOOLS)
    assert tool_filter.feed("\n") == ("", ())
    assert tool_filter.feed(" Hi") == ("\n Hi", ())
    assert tool_filter.feed(" there") == (" there", ())


def test_text_before_a_call_goes_out_at_once() -> None:
    tool_filter = ToolCallFilter(TOOLS)
    assert tool_filter.feed("Let me check") == ("Let me check", ())
    assert tool_filter.feed(". {") == (". ", ())
    assert tool_filter.feed('"na') == ("", ())
    assert tool_filter.feed('me": "get_weather", "parameters": {"city": "Paris"') == ("", ())
    assert tool_filter.feed("}}") == ("", (WEATHER,))
    assert tool_filter.feed(" Done") == ("Done", ())
    assert tool_filter.finish() == ("", ())


def test_what_cannot_be_a_call_goes_out_as_soon_as_that_is_known() -> None:
    tool_filter = ToolCallFilter(TOOLS)
    assert tool_filter.feed("{") == ("", ())
    assert tool_filter.feed('"ci') == ('{"ci', ())
    assert tool_filter.feed('ty": 1}') == ('ty": 1}', ())

    tool_filter = ToolCallFilter(TOOLS)
    assert tool_filter.feed('{"name": "say_h') == ("", ())
    assert tool_filter.feed("i") == ('{"name": "say_hi', ())

    tool_filter = ToolCallFilter(TOOLS)
    assert tool_filter.feed('{"name": "say') == ("", ())
    assert tool_filter.feed('", ') == ('{"name": "say", ', ())

    tool_filter = ToolCallFilter(TOOLS)
    assert tool_filter.feed("[") == ("", ())
    assert tool_filter.feed("laughs]") == ("[laughs]", ())

    tool_filter = ToolCallFilter(TOOLS)
    assert tool_filter.feed('{"type": "object"') == ("", ())
    assert tool_filter.feed("} ok") == ('{"type": "object"} ok', ())


def test_a_call_is_returned_by_the_piece_that_completes_it() -> None:
    tool_filter = ToolCallFilter(TOOLS)
    assert tool_filter.feed('[{"name": "say_hello"}, ') == ("", ())
    assert tool_filter.feed('{"name": "end_call"}') == ("", ())
    assert tool_filter.feed("]") == ("", (HELLO, ("end_call", "{}")))
    assert tool_filter.finish() == ("", ())
    assert not tool_filter.truncated


def test_without_tools_nothing_is_a_call() -> None:
    content = '{"name": "get_weather", "parameters": {}}'
    assert run([content], tools=()) == (content, [], False)


# Random content, random splits.

SPEECH = st.text(alphabet="abc .,!?'\n", max_size=12)
JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
ARGUMENTS = st.dictionaries(st.text(max_size=6), JSON_VALUE, max_size=4)


@st.composite
def calls_as_text(draw: st.DrawFn) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """Some calls written in one of the forms models use, and what they are."""
    calls = draw(st.lists(st.tuples(st.sampled_from(TOOLS), ARGUMENTS), min_size=1, max_size=3))
    key = draw(st.sampled_from(["parameters", "arguments"]))
    indent = draw(st.sampled_from([None, 2]))
    ensure_ascii = draw(st.booleans())

    def dumps(value: object) -> str:
        return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)

    objects = [dumps({"name": name, key: arguments}) for name, arguments in calls]
    form = draw(st.sampled_from(["bare", "list", "tagged", "mistral", "python_tag"]))
    if form == "bare":
        text = draw(st.sampled_from(["", "; ", "\n", ", "])).join(objects)
    elif form == "list":
        text = dumps([json.loads(o) for o in objects])
    elif form == "tagged":
        text = "".join(f"<tool_call>\n{o}\n</tool_call>\n" for o in objects)
    elif form == "mistral":
        text = "[TOOL_CALLS] " + dumps([json.loads(o) for o in objects])
    else:
        text = "<|python_tag|>" + "; ".join(objects)
    return text, calls


@st.composite
def cut(draw: st.DrawFn, content: str) -> list[str]:
    """``content`` cut at random places."""
    points = sorted(draw(st.sets(st.integers(0, len(content)), max_size=len(content))))
    return [content[a:b] for a, b in zip([0, *points], [*points, len(content)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(st.data(), SPEECH, calls_as_text(), SPEECH)
def test_calls_between_text_at_random_splits(
    data: st.DataObject,
    before: str,
    written: tuple[str, list[tuple[str, dict[str, Any]]]],
    after: str,
) -> None:
    text, calls = written
    content = before + text + after
    spoken, found, truncated = run(data.draw(cut(content)))
    after = after.lstrip(" \t\r\n;,")
    assert spoken == (before + after if before.strip() else after)
    assert [(name, json.loads(arguments)) for name, arguments in found] == calls
    assert not truncated


NOISE = st.lists(
    st.sampled_from(
        [
            *'{}[]<>"\\:,; \nax',
            *('"name"', '"get_weather"', '"parameters"', "<tool_call>", "</tool_call>"),
            "[TOOL_CALLS]",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.data(), NOISE)
def test_any_content_splits_alike_and_loses_nothing_but_calls(
    data: st.DataObject, content: str
) -> None:
    whole = run([content])
    assert run(data.draw(cut(content))) == whole
    spoken, found, truncated = whole
    if not found and not truncated:
        assert spoken == content
