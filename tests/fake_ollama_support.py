"""Helpers for the simulator's tests: start it from its command line, talk to it over HTTP.

Each test module starts one simulator process (``--port 0``, the port read
from its first stdout line) and, before each test, sets the :data:`BASELINE`
knobs (plus its own), evicts the model and clears the request log.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
MODEL = "llama3.1:8b"
QWEN = "qwen3:8b"
GPT_OSS = "gpt-oss:20b"
NATIVE = "imported:latest"
MODELS = [MODEL, QWEN, GPT_OSS, NATIVE]
BASELINE: dict[str, Any] = {
    "models": MODELS,
    "profiles": {NATIVE: "native"},
    "ttft": 5,
    "ttft_per_prompt_token": 0,
    "cache_restore_per_token": 0,
    "itl": 2,
    "jitter": 0,
    "tokens": 8,
    "think_tokens": 4,
    "think_anyway": False,
    "tool_calls": 1,
    "text_before_call": 0,
    "parallel": 4,
    "max_queue": 512,
    "slowdown": 0,
    "load_ms": 30,
    "keep_alive": "5m",
    "prompt_cache": True,
    "slot_similarity": 0.1,
    "cache_ram_mib": 8192,
    "abort_load": True,
    "load_fail": False,
    "crash_on_error": True,
    "slot_leak": False,
    "fail_rate": 0,
    "fail_mode": "error",
    "tool_mode": "auto",
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "hours": {"type": "array", "items": {"type": "number"}},
            },
            "required": ["city"],
        },
    },
}
WEATHER_ARGUMENTS: dict[str, Any] = {
    "city": "example",
    "days": 1,
    "metric": True,
    "unit": "celsius",
    "hours": [],
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def launch(*flags: str) -> tuple[subprocess.Popen[str], int]:
    """Start the simulator from the command line; returns the process and its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest.fake_ollama", "--port", "0", *flags],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    prefix = "fake-ollama listening on http://127.0.0.1:"
    assert line.startswith(prefix), line
    return process, int(line.removeprefix(prefix))


def stop(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    """Signal the simulator and return its exit code."""
    process.send_signal(signum)
    code = process.wait(timeout=10)
    assert process.stdout is not None
    process.stdout.close()
    return code


def simulator() -> Iterator[int]:
    """Body of a module's ``port`` fixture: one simulator process, stopped at the end."""
    process, number = launch("--ttft", "5", "--itl", "2", "--tokens", "8", "--load-ms", "30")
    yield number
    assert stop(process) == 0


def reset(port: int, **knobs: Any) -> None:
    """Baseline knobs (and ``knobs``), no model loaded, an empty request log."""
    assert call(port, "POST", "/_sim/config", BASELINE | knobs)[0] == 200
    call(port, "POST", "/_sim/evict", {})
    call(port, "POST", "/_sim/reset", {})


def call(
    port: int,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns status, lowercased headers and the whole body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else orjson.dumps(body)
        conn.request(method, path, body=payload, headers=headers or {})
        response = conn.getresponse()
        return (
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def get_json(port: int, path: str) -> Any:
    """GET a JSON document."""
    status, _, body = call(port, "GET", path)
    assert status == 200
    return orjson.loads(body)


def post_json(port: int, path: str, body: object) -> tuple[int, Any]:
    """POST ``body``; returns the status and the decoded answer."""
    status, _, answer = call(port, "POST", path, body)
    return status, orjson.loads(answer)


def configure(port: int, **knobs: Any) -> None:
    """Change knobs live."""
    assert call(port, "POST", "/_sim/config", knobs)[0] == 200


def chat_body(content: str, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    """A chat request with one user message."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def raw_request(path: str, body: object, *, close: bool = True) -> bytes:
    """The bytes of a POST (asking the server to close the connection after it, by default)."""
    payload = orjson.dumps(body)
    return (
        b"POST %b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%b\r\n%b"
        % (path.encode(), len(payload), b"Connection: close\r\n" if close else b"", payload)
    )


def raw_exchange(port: int, body: object, path: str = "/api/chat") -> bytes:
    """Everything the server sends for one request, read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw_request(path, body))
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def parse_chunked(raw: bytes) -> tuple[bytes, list[bytes], bool]:
    """Split a chunked response into its head, its chunks, and whether the last chunk came."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    chunks: list[bytes] = []
    while rest:
        size_line, found, rest = rest.partition(b"\r\n")
        if not found:
            break
        size = int(size_line, 16)
        if size == 0:
            return head, chunks, True
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    return head, chunks, False


def ndjson(chunks: list[bytes]) -> list[dict[str, Any]]:
    """The objects of an NDJSON stream whose chunks each hold exactly one line."""
    for chunk in chunks:
        assert chunk.endswith(b"\n")
        assert chunk.count(b"\n") == 1
    return [orjson.loads(chunk) for chunk in chunks]


def stream_lines(port: int, body: object) -> list[dict[str, Any]]:
    """A streaming chat's NDJSON objects, the chunked body checked complete."""
    _, chunks, complete = parse_chunked(raw_exchange(port, body))
    assert complete
    return ndjson(chunks)


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll ``predicate`` until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def records(port: int) -> list[dict[str, Any]]:
    """The simulator's request log."""
    log: list[dict[str, Any]] = get_json(port, "/_sim/requests")
    return log


def stats(port: int) -> dict[str, Any]:
    """The simulator's counters."""
    counters: dict[str, Any] = get_json(port, "/_sim/stats")
    return counters


def load(port: int, model: str = MODEL, **extra: Any) -> None:
    """Load ``model`` (an empty chat) and wait for it."""
    status, reply = post_json(port, "/api/chat", {"model": model, "messages": [], **extra})
    assert (status, reply["done_reason"]) == (200, "load")


async def stream_chat(port: int, body: object) -> list[dict[str, Any]]:
    """A streaming chat over a raw asyncio connection; returns the NDJSON objects."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw_request("/api/chat", body))
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    _, chunks, complete = parse_chunked(raw)
    assert complete
    return ndjson(chunks)
