"""Server-side tools: ``tool-calls`` and legacy ``function-call`` messages, and the registry.

The registry below is what a server started with ``TOOLS_MODULE=tests.test_vapi_tools``
loads; the tests post VAPI's bodies to that server.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from server.config import Config, ConfigError
from server.doors.vapi import WebhookAnswers
from server.tools import ToolError, ToolRegistry, load_tools, single_line

from .conftest import FakeOllama, Process, start_server
from .vapi_bodies import (
    ASSISTANT_REQUEST,
    PUBLIC_URL,
    SECRET,
    function_call,
    function_call_message,
    post,
    tool_calls,
)

tools = ToolRegistry()
"""The registry ``load_tools("tests.test_vapi_tools")`` finds."""


@tools.tool(
    description="Book a cleaning on a day.",
    parameters={
        "type": "object",
        "properties": {"day": {"type": "string"}},
        "required": ["day"],
    },
)
async def book_cleaning(args: dict[str, Any]) -> dict[str, Any]:
    return {"booked": True, "day": args["day"]}


@tools.tool(description="Say which office is open.")
async def open_office(args: dict[str, Any]) -> str:
    return "The Main Street office is open until 6 pm."


@tools.tool(description="Read the opening hours, one line per day.")
async def opening_hours(args: dict[str, Any]) -> str:
    return "Monday: 8 to 6\r\nTuesday: 8 to 6\n\n  Saturday: closed\n"


@tools.tool(description="Find a visit.")
async def find_visit(args: dict[str, Any]) -> str:
    raise ToolError(f"there is no visit {args.get('visit')}\nplease check the number")


@tools.tool(description="Always fails.")
async def broken(args: dict[str, Any]) -> str:
    raise RuntimeError("database password is hunter2")


@tools.tool(description="Never finishes in time.", timeout=0.05)
async def slow(args: dict[str, Any]) -> str:
    await asyncio.sleep(30)
    return "too late"


@tools.tool(description="Returns something JSON cannot hold.")
async def not_json(args: dict[str, Any]) -> object:
    return object()


@tools.tool(description="Times out on its own.")
async def own_timeout(args: dict[str, Any]) -> str:
    raise TimeoutError


@tools.tool(description="Waits for the given number of milliseconds.", timeout=5)
async def wait_ms(args: dict[str, Any]) -> str:
    await asyncio.sleep(args["ms"] / 1000)
    return f"waited {args['ms']} ms"


@pytest.fixture(scope="module")
def tools_server(fake: FakeOllama) -> Iterator[Process]:
    """A server that loads this module's registry."""
    process = start_server(
        fake.url,
        "--vapi-secret", SECRET,
        "--public-url", PUBLIC_URL,
        TOOLS_MODULE="tests.test_vapi_tools",
    )  # fmt: skip
    yield process
    process.stop()


def test_registered_tools_run_and_report_results_and_errors(
    tools_server: Process,
) -> None:
    body = tool_calls(
        function_call("t1", "book_cleaning", {"day": "Tuesday"}),
        function_call("t2", "open_office", "{}"),
        {"id": "t3", "name": "find_visit", "arguments": {"visit": "v-9"}},
        function_call("t4", "broken", {}),
        function_call("t5", "slow", {}),
        function_call("t6", "not_json", {}),
        function_call("t7", "own_timeout", {}),
        function_call("t8", "book_cleaning", '["Tuesday"]'),
        function_call("t9", "no_such_tool", {}),
        {"id": "t10", "name": "find_slot", "parameters": {}},
        function_call("t11", "book_cleaning", "{not json"),
        function_call("t12", "opening_hours", {}),
    )
    response = post(tools_server, body)
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {
                "name": "book_cleaning",
                "toolCallId": "t1",
                "result": '{"booked":true,"day":"Tuesday"}',
            },
            {
                "name": "open_office",
                "toolCallId": "t2",
                "result": "The Main Street office is open until 6 pm.",
            },
            {
                "name": "find_visit",
                "toolCallId": "t3",
                "error": "there is no visit v-9 please check the number",
            },
            {"name": "broken", "toolCallId": "t4", "error": "tool broken failed"},
            {"name": "slow", "toolCallId": "t5", "error": "tool slow did not finish in time"},
            {
                "name": "not_json",
                "toolCallId": "t6",
                "error": "tool not_json returned a value that is not JSON",
            },
            {"name": "own_timeout", "toolCallId": "t7", "error": "tool own_timeout failed"},
            {
                "name": "book_cleaning",
                "toolCallId": "t8",
                "error": "the arguments are not a JSON object",
            },
            {
                "name": "no_such_tool",
                "toolCallId": "t9",
                "error": "there is no tool named 'no_such_tool'",
            },
            {
                "name": "find_slot",
                "toolCallId": "t10",
                "error": "there is no tool named 'find_slot'",
            },
            {
                "name": "book_cleaning",
                "toolCallId": "t11",
                "error": "the arguments are not valid JSON",
            },
            {
                "name": "opening_hours",
                "toolCallId": "t12",
                "result": "Monday: 8 to 6 Tuesday: 8 to 6 Saturday: closed",
            },
        ]
    }
    # The exception is logged for the operator; the model only hears that the tool failed.
    assert b"hunter2" in tools_server.output()
    assert "hunter2" not in response.text


def test_results_keep_the_order_of_the_calls_whatever_finishes_first(
    tools_server: Process,
) -> None:
    waits = [300, 10, 150, 0]
    body = tool_calls(
        *(function_call(f"w{i}", "wait_ms", {"ms": ms}) for i, ms in enumerate(waits))
    )
    results = post(tools_server, body).json()["results"]
    assert [(r["toolCallId"], r["result"]) for r in results] == [
        (f"w{i}", f"waited {ms} ms") for i, ms in enumerate(waits)
    ]


@pytest.mark.parametrize(
    ("parameters", "answer"),
    [
        ({"day": "Friday"}, {"result": '{"booked":true,"day":"Friday"}'}),
        ('{"day": "Monday"}', {"result": '{"booked":true,"day":"Monday"}'}),
        ("[1]", {"result": "the arguments are not a JSON object"}),
    ],
)
def test_legacy_function_call_gets_a_result(
    tools_server: Process, parameters: Any, answer: dict[str, str]
) -> None:
    response = post(tools_server, function_call_message("book_cleaning", parameters))
    assert response.status_code == 200
    assert response.json() == answer


def test_legacy_function_call_errors_are_its_result(tools_server: Process) -> None:
    for name, error in [
        ("find_visit", "there is no visit None please check the number"),
        ("no_such_tool", "there is no tool named 'no_such_tool'"),
    ]:
        response = post(tools_server, function_call_message(name, {}))
        assert response.status_code == 200
        assert response.json() == {"result": error}


def test_registered_tools_are_declared_in_the_assistant_and_counted(
    tools_server: Process,
) -> None:
    declared = post(tools_server, ASSISTANT_REQUEST).json()["assistant"]["model"]["tools"]
    assert declared[0] == {
        "type": "function",
        "function": {
            "name": "book_cleaning",
            "description": "Book a cleaning on a day.",
            "parameters": {
                "type": "object",
                "properties": {"day": {"type": "string"}},
                "required": ["day"],
            },
        },
    }
    assert declared[1]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert [d["function"]["name"] for d in declared] == [
        "book_cleaning",
        "open_office",
        "opening_hours",
        "find_visit",
        "broken",
        "slow",
        "not_json",
        "own_timeout",
        "wait_ms",
    ]
    metrics = httpx.get(f"{tools_server.url}/metrics", timeout=5).text
    assert re.search(r'voice_llm_webhooks_total\{type="assistant-request"\} [1-9]', metrics)


def test_tool_calls_run_concurrently() -> None:
    registry = ToolRegistry()
    both_started = asyncio.Event()
    started = 0

    async def meet(args: dict[str, Any]) -> str:
        nonlocal started
        started += 1
        if started == 2:
            both_started.set()
        await both_started.wait()
        return "met"

    registry.add(meet, description="Waits for the other call.", name="first", timeout=5)
    registry.add(meet, description="Waits for the other call.", name="second", timeout=5)
    answers = WebhookAnswers(Config(), registry)
    body = tool_calls(function_call("m1", "first", {}), function_call("m2", "second", {}))
    answer = asyncio.run(answers.answer(json.loads(json.dumps(body))))
    assert [r.get("result") for r in answer["results"]] == ["met", "met"]
    assert answers.counts == {"tool-calls": 1}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("one line", "one line"),
        ("", ""),
        ("trailing\n", "trailing"),
        ("a\nb", "a b"),
        ("  one \r\n\n  two\u2028three  ", "one two three"),
        ("\n\n", ""),
        ("kept  inner  spaces", "kept  inner  spaces"),
    ],
)
def test_single_line(text: str, line: str) -> None:
    assert single_line(text) == line


def test_registry_refuses_tools_models_cannot_call() -> None:
    registry = ToolRegistry()

    async def ok(args: dict[str, Any]) -> str:
        return ""

    def blocking(args: dict[str, Any]) -> str:
        return ""

    registry.add(ok, description="Fine.")
    with pytest.raises(ValueError, match="already registered"):
        registry.add(ok, description="Again.")
    with pytest.raises(ValueError, match="letters, digits"):
        registry.add(ok, description="Spaces.", name="look up")
    with pytest.raises(ValueError, match="must be an async function"):
        registry.add(blocking, description="Sync.")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="above zero"):
        registry.add(ok, description="No time.", name="instant", timeout=0)
    assert len(registry) == 1
    assert "ok" in registry


def test_load_tools_by_module_name() -> None:
    assert load_tools("tests.test_vapi_tools") is tools
    with pytest.raises(ConfigError, match=re.escape("'tests.no_such_module' cannot be imported")):
        load_tools("tests.no_such_module")
    with pytest.raises(ConfigError, match=re.escape("has no 'tools = ToolRegistry()'")):
        load_tools("tests.conftest")
