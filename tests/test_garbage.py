"""Closed connections are freed at once, not left in reference cycles for the collector.

A garbage collection stops the event loop, and so every stream, for as long as it
takes; each cycle left behind makes collections come sooner and last longer. Each test
runs with the collector off, then asks it what it would have had to free.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.asyncio.client import connect
from websockets.server import ServerProtocol

from server.__main__ import build_app
from server.config import parse_config
from server.core.upstream import Connection, ConnectionPool, UpstreamClosed
from server.doors.protocol import WebSocketProtocol, http_protocol

from .conftest import MODEL, FakeOllama


@contextmanager
def collector_off() -> Iterator[list[Any]]:
    """Run the body with automatic collection off; yield what a collection then found."""
    gc.collect()
    gc.disable()
    found: list[Any] = []
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.extend(gc.garbage)
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def names(objects: list[Any], *kinds: type) -> list[str]:
    return [type(o).__qualname__ for o in objects if isinstance(o, kinds)]


async def _eventually(condition: Callable[[], bool]) -> None:
    """Poll state that has no event to wait on (uvicorn's, the engine's) for up to 5 s."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


def test_an_upstream_connection_cut_mid_answer_is_freed_at_once() -> None:
    async def ollama(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"a":}\n\r\n')
        await writer.drain()
        writer.close()  # mid-response

    async def scenario() -> bool:
        listener = await asyncio.start_server(ollama, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        pool = ConnectionPool("127.0.0.1", port, 1.0)
        conn = await pool.request("POST", "/api/chat", b"{}", 1.0, 1.0)
        assert await conn.readline() == b'{"a":}'
        try:
            await conn.readline()
        except UpstreamClosed:
            raised = True
        pool.release(conn)
        await _eventually(lambda: conn.closed)
        listener.close()
        await listener.wait_closed()
        return raised

    with collector_off() as garbage:
        assert asyncio.run(scenario())
    assert names(garbage, Connection, UpstreamClosed) == []


def _serve(
    app: Callable[..., Awaitable[None]], **options: Any
) -> tuple[uvicorn.Server, socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        http=http_protocol(5.0),
        ws=WebSocketProtocol,
        log_config=None,
        access_log=False,
        **{"lifespan": "off", **options},
    )
    return uvicorn.Server(config), sock


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "websocket.send", "text": message["text"]})
    await receive()  # websocket.disconnect


def test_a_closed_websocket_and_its_upgraded_request_are_freed_at_once() -> None:
    async def scenario() -> None:
        server, sock = _serve(_echo)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await _eventually(lambda: server.started)
        url = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
        with collector_off() as garbage:
            for _ in range(3):
                async with connect(url) as websocket:
                    await websocket.send("hello")
                    assert await websocket.recv() == "hello"
            await _eventually(lambda: not server.server_state.connections)
        server.should_exit = True
        await serving
        sock.close()
        assert names(garbage, WebSocketProtocol, ServerProtocol, HttpToolsProtocol) == []

    asyncio.run(scenario())


def test_a_call_of_each_door_leaves_no_server_object_to_collect(fake: FakeOllama) -> None:
    """SSE with a hang-up mid-answer, ``/ws`` with a barge-in, Retell with a barge-in."""
    config = parse_config(["--ollama-url", fake.url, "--model", MODEL], env={})
    app = build_app(config)

    async def scenario() -> list[Any]:
        server, sock = _serve(app, lifespan="on")
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await _eventually(lambda: server.started and app.engine.ready)
        base = f"127.0.0.1:{sock.getsockname()[1]}"
        slow = "Hello [[tokens:40]]"
        with collector_off() as garbage:
            async with httpx.AsyncClient() as http:
                body = {"stream": True, "messages": [{"role": "user", "content": slow}]}
                async with http.stream(
                    "POST", f"http://{base}/v1/chat/completions", json=body
                ) as r:
                    async for _ in r.aiter_bytes():
                        break  # the caller hangs up mid-answer
            async with connect(f"ws://{base}/ws") as ws:
                for turn in ("1", "2"):  # the second barges in on the first
                    await ws.send(
                        orjson.dumps(
                            {
                                "type": "chat",
                                "id": turn,
                                "messages": [{"role": "user", "content": slow}],
                            }
                        ).decode()
                    )
                while (frame := orjson.loads(await ws.recv()))["type"] != "done" or frame[
                    "id"
                ] != "2":
                    pass
            async with connect(f"ws://{base}/llm-websocket/call-1") as retell:
                await retell.recv()  # config
                await retell.recv()  # the opening response
                for response_id in (1, 2):
                    await retell.send(
                        orjson.dumps(
                            {
                                "interaction_type": "response_required",
                                "response_id": response_id,
                                "transcript": [{"role": "user", "content": slow}],
                            }
                        ).decode()
                    )
                while not orjson.loads(await retell.recv()).get("content_complete"):
                    pass
            await _eventually(lambda: not server.server_state.connections)
            await _eventually(lambda: app.engine.backends[0].in_flight == 0)
        server.should_exit = True
        await serving
        sock.close()
        return garbage

    garbage = asyncio.run(scenario())
    ours = [
        type(o).__qualname__
        for o in garbage
        if type(o).__module__.startswith("server.")
        or isinstance(o, WebSocketProtocol | ServerProtocol | HttpToolsProtocol)
    ]
    assert ours == []
