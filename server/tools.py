"""Server-side tools that VAPI calls through the webhook's ``tool-calls`` messages.

A tool is an ``async`` function that takes the call's arguments (a dict) and returns
a string or any JSON-able value; it runs with a timeout. Tools live in a
:class:`ToolRegistry`; a module that defines one as ``tools`` can be loaded by name
with :func:`load_tools`::

    from server.tools import ToolError, ToolRegistry

    tools = ToolRegistry()

    @tools.tool(
        description="Look up the status of an order.",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
        timeout=3.0,
    )
    async def order_status(args: dict[str, Any]) -> dict[str, Any]:
        if args.get("order_id") != "A-1":
            raise ToolError("no order with that number")
        return {"status": "shipped"}

A tool's result and errors go back to the model, which speaks them: raise
:class:`ToolError` to give it a message, any other exception gives it a generic one
(the exception is logged here). Results and errors are single lines, as VAPI needs
them (a line break in a result breaks its parsing): :func:`single_line`. Registered
tools are also declared in the assistant the server builds, so the model knows their
names and parameters.

Retell's websocket runs the same tools in process, during the turn. There a tool can
also end the call or transfer it, by calling :func:`end_call` or :func:`transfer_call`
before it returns its result.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from .config import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Tool",
    "ToolError",
    "ToolOutcome",
    "ToolRegistry",
    "load_tools",
    "single_line",
]

log = logging.getLogger("server.tools")

DEFAULT_TIMEOUT = 10.0
"""Seconds a tool may run unless it says otherwise (VAPI waits 20 s for the webhook)."""

ToolFunction = Callable[[dict[str, Any]], Awaitable[Any]]
F = TypeVar("F", bound=ToolFunction)

# The function names OpenAI-style models (and VAPI) accept.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def single_line(text: str) -> str:
    """``text`` on one line: each line break, with the blanks around it, becomes a space."""
    lines = text.splitlines()
    if not lines or lines == [text]:
        return text
    return " ".join(line.strip() for line in lines if line and not line.isspace())


class ToolError(Exception):
    """Raised by a tool to give the model this message as the call's error."""


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one call gave: ``result`` text, or ``error`` text (each one line)."""

    result: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    """One registered tool."""

    name: str
    function: ToolFunction
    description: str
    parameters: dict[str, Any]
    timeout: float

    def definition(self) -> dict[str, Any]:
        """The tool as VAPI declares a function tool in ``model.tools``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class ToolRegistry:
    """Tools by name: registered at import time, called by the webhook."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def add(
        self,
        function: ToolFunction,
        *,
        description: str,
        name: str | None = None,
        parameters: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Register ``function`` under ``name`` (by default the function's own name).

        ``parameters`` is the JSON schema of the arguments object (by default an
        object with no declared properties). Raises :class:`ValueError` for a name
        models cannot call, a name already taken, a function that is not ``async``,
        or a timeout that is not above zero.
        """
        tool_name = name if name is not None else function.__name__
        if not _NAME.match(tool_name):
            raise ValueError(f"tool name {tool_name!r} must be 1 to 64 letters, digits, _ or -")
        if tool_name in self._tools:
            raise ValueError(f"a tool named {tool_name!r} is already registered")
        if not inspect.iscoroutinefunction(function):
            raise ValueError(f"tool {tool_name!r} must be an async function")
        if not timeout > 0:
            raise ValueError(f"tool {tool_name!r} timeout {timeout} must be above zero")
        schema = parameters if parameters is not None else {"type": "object", "properties": {}}
        self._tools[tool_name] = Tool(tool_name, function, description, schema, timeout)

    def tool(
        self,
        *,
        description: str,
        name: str | None = None,
        parameters: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`add`; the function is returned unchanged."""

        def register(function: F) -> F:
            self.add(
                function, description=description, name=name, parameters=parameters, timeout=timeout
            )
            return function

        return register

    def definitions(self) -> list[dict[str, Any]]:
        """Every tool as a VAPI function-tool definition, in registration order."""
        return [tool.definition() for tool in self._tools.values()]

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Run one tool call; never raises: unknown tools and failures are error outcomes."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolOutcome(error=f"there is no tool named {name!r}")
        try:
            async with asyncio.timeout(tool.timeout) as deadline:
                value = await tool.function(arguments)
        except ToolError as exc:
            return ToolOutcome(error=single_line(str(exc)) or f"tool {name} failed")
        except TimeoutError:
            if not deadline.expired():
                log.exception("tool %s failed", name)
                return ToolOutcome(error=f"tool {name} failed")
            log.warning("tool %s did not finish within %g s", name, tool.timeout)
            return ToolOutcome(error=f"tool {name} did not finish in time")
        except Exception:
            log.exception("tool %s failed", name)
            return ToolOutcome(error=f"tool {name} failed")
        if isinstance(value, str):
            return ToolOutcome(result=single_line(value))
        try:
            # orjson writes no line breaks: those inside strings are escaped.
            return ToolOutcome(result=orjson.dumps(value).decode())
        except TypeError:
            log.error("tool %s returned a %s, which is not JSON", name, type(value).__name__)
            return ToolOutcome(error=f"tool {name} returned a value that is not JSON")


def load_tools(module_name: str) -> ToolRegistry:
    """Import ``module_name`` and return the :class:`ToolRegistry` it names ``tools``.

    Raises :class:`ConfigError` with a one-line reason when the module cannot be
    imported or has no such registry.
    """
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"tools module {module_name!r} cannot be imported: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from None
    registry = getattr(module, "tools", None)
    if not isinstance(registry, ToolRegistry):
        raise ConfigError(
            f"tools module {module_name!r} has no 'tools = ToolRegistry()' at its top level"
        )
    return registry


# What a tool can ask of the call besides its result: hang up, or transfer.

__all__ += ["CallActions", "collect_call_actions", "end_call", "transfer_call"]


@dataclass(slots=True)
class CallActions:
    """What the tools run inside :func:`collect_call_actions` asked the call to do."""

    end_call: bool = False
    transfer_number: str | None = None


_call_actions: ContextVar[CallActions | None] = ContextVar("call_actions", default=None)


@contextmanager
def collect_call_actions() -> Iterator[CallActions]:
    """Collect what :func:`end_call` and :func:`transfer_call` ask for inside the block.

    A door that can act on them (Retell's websocket) runs its tool calls inside it.
    """
    actions = CallActions()
    token = _call_actions.set(actions)
    try:
        yield actions
    finally:
        _call_actions.reset(token)


def end_call() -> None:
    """Called by a tool: end the call once the answer to this turn is spoken.

    Acted on by Retell's websocket; elsewhere (VAPI's webhook) it does nothing.
    """
    actions = _call_actions.get()
    if actions is not None:
        actions.end_call = True


def transfer_call(number: str) -> None:
    """Called by a tool: transfer the call to ``number`` (E.164, such as ``+14155550100``).

    Acted on by Retell's websocket; elsewhere it does nothing. Raises
    :class:`ValueError` for an empty number or one with spaces.
    """
    if not number or any(c.isspace() for c in number):
        raise ValueError("a transfer number must be non-empty and without spaces")
    actions = _call_actions.get()
    if actions is not None:
        actions.transfer_number = number
