"""Latency of the VAPI webhook: ``assistant-request`` and ``tool-calls``, one at a time.

``python -m loadtest.webhook_latency [--requests 2000] [--auth secret|hmac]`` starts the
Ollama simulator and the server (:mod:`loadtest.processes`) with a webhook secret, a
public URL, ``examples/assistant.json`` and this module's tool registry, then posts
each message type ``--requests`` times in sequence over one keep-alive loopback
connection, from a raw socket so that the client adds as little as it can. Each
request is timed from its first byte sent to its answer's last byte read. With
``--auth hmac`` every request is signed as VAPI signs it (sha256 of
``{timestamp}.{body}``; each body is different, since a signature is accepted once),
the signatures made before the clock starts.

It prints p50, p90, p99 and the maximum, in milliseconds, per message type. Exit
status: 0, or 1 when an answer is not the one VAPI expects.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from server.tools import ToolRegistry

from .bench.stats import percentile
from .processes import simulator_and_server

__all__ = ["main", "tools"]

SECRET = "latency-secret"  # noqa: S105 - the benchmark's own server
PUBLIC_URL = "https://bench.example.com"
_WARMUP = 200

tools = ToolRegistry()
"""The registry the measured server loads (``--tools-module loadtest.webhook_latency``)."""


@tools.tool(
    description="Look up an order.",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}},
)
async def order_status(args: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": args.get("order_id"), "status": "shipped", "eta": "Tuesday"}


def _message(kind: str, index: int) -> dict[str, Any]:
    """A body of VAPI's shape; ``index`` makes each one different."""
    message: dict[str, Any] = {
        "timestamp": 1748876645123 + index,
        "type": kind,
        "call": {"id": f"call-{index}", "orgId": "org-1", "type": "inboundPhoneCall"},
        "phoneNumber": {"id": "pn-1", "number": "+15555550100", "provider": "twilio"},
        "customer": {"number": "+15555550101"},
    }
    if kind == "tool-calls":
        call = {
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": "order_status", "arguments": {"order_id": f"A-{index}"}},
        }
        message["toolCallList"] = [call]
        message["toolWithToolCallList"] = [
            {"type": "function", "function": {"name": "order_status"}, "toolCall": call}
        ]
    return {"message": message}


def _request(port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        "POST /vapi/webhook HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return {"x-signature": mac.hexdigest(), "x-timestamp": stamp}


class _Connection:
    """One keep-alive HTTP/1.1 connection that reads whole responses."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send a request; its status and body (sent with a length, or chunked)."""
        self.sock.sendall(request)
        head = self._until(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"content-length" in fields:
            return status, self._take(int(fields[b"content-length"]))
        chunks = []
        while size := int(self._until(b"\r\n"), 16):
            chunks.append(self._take(size))
            self._take(2)
        self._take(2)
        return status, b"".join(chunks)

    def _until(self, end: bytes) -> bytes:
        while end not in self._buffer:
            self._buffer += self._recv()
        found, _, self._buffer = self._buffer.partition(end)
        return found

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._recv()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def _measure(
    connection: _Connection,
    requests: list[bytes],
    expected: Callable[[Any], bool],
) -> tuple[list[float], int]:
    """Each request's time in milliseconds, and how many answers were not as expected."""
    times = []
    wrong = 0
    clock = time.perf_counter
    for request in requests:
        started = clock()
        status, body = connection.exchange(request)
        times.append((clock() - started) * 1000)
        if status != 200 or not expected(json.loads(body)):
            wrong += 1
    return times, wrong


def _is_assistant(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("assistant", {}).get("model", {}).get("url") == (
        f"{PUBLIC_URL}/v1"
    )


def _is_result(answer: Any) -> bool:
    results = answer.get("results") if isinstance(answer, dict) else None
    return isinstance(results, list) and len(results) == 1 and "result" in results[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.webhook_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per message type")
    parser.add_argument("--auth", choices=("secret", "hmac"), default="secret")
    args = parser.parse_args(argv)
    server_args = [
        "--model", "llama3.1:8b",
        "--public-url", PUBLIC_URL,
        "--assistant-file", "examples/assistant.json",
        "--tools-module", "loadtest.webhook_latency",
        "--log-level", "warning",
        "--vapi-secret" if args.auth == "secret" else "--vapi-hmac-secret", SECRET,
    ]  # fmt: skip
    sim_args = ["--model", "llama3.1:8b", "--load-ms", "10"]
    failed = False
    with simulator_and_server(sim_args, server_args) as (_, server):
        port = int(server.url.rsplit(":", 1)[1])
        connection = _Connection(port)
        try:
            print(
                f"webhook latency, {args.requests} sequential requests per type, one loopback "
                f"connection, auth {args.auth} (ms):"
            )
            print(f"{'message':>18} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
            for kind, expected in (
                ("assistant-request", _is_assistant),
                ("tool-calls", _is_result),
            ):
                bodies = [
                    json.dumps(_message(kind, i)).encode() for i in range(_WARMUP + args.requests)
                ]
                requests = [
                    _request(
                        port,
                        body,
                        _signed(body) if args.auth == "hmac" else {"x-vapi-secret": SECRET},
                    )
                    for body in bodies
                ]
                _measure(connection, requests[:_WARMUP], expected)
                times, wrong = _measure(connection, requests[_WARMUP:], expected)
                times.sort()
                figures = [percentile(times, q) for q in (50, 90, 99)] + [times[-1]]
                print(f"{kind:>18} " + " ".join(f"{value:7.3f}" for value in figures))
                if wrong:
                    print(f"{kind}: {wrong} answers were not what VAPI expects", file=sys.stderr)
                    failed = True
        finally:
            connection.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
