"""The server's log on stderr: one format, no secrets, a startup summary, one line per 4xx."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import MODEL, ROOT, FakeOllama, Process, free_port, start_server

KEY = "k3y-in-the-query-0451"
PHONE = "+15550100777"


def records(output: bytes) -> list[dict[str, Any]]:
    """Every line of a server's log, each of which must be one JSON object."""
    lines = []
    for line in output.decode().splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "msg"} <= record.keys(), line
        lines.append(record)
    return lines


def ws_url(server: Process, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/ws" + query


def turn(content: str) -> str:
    return json.dumps(
        {"type": "chat", "id": "t1", "messages": [{"role": "user", "content": content}]}
    )


def test_no_key_query_string_or_phone_number_reaches_any_log_line(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--api-key", KEY, "--log-level", "debug")
    try:
        with connect(ws_url(server, f"?api_key={KEY}&phone={PHONE}"), open_timeout=5) as ws:
            ws.send(turn("Hi [[tokens:2]]"))
            while json.loads(ws.recv(timeout=5))["type"] != "done":
                pass
        with connect(ws_url(server), additional_headers={"Authorization": KEY}) as ws:
            ws.send(turn(f"my number is {PHONE} [[tokens:1]]"))
            while json.loads(ws.recv(timeout=5))["type"] != "done":
                pass
        for query in (f"?api_key=wrong-{KEY}", f"?api_key={KEY[:-1]}"):
            with pytest.raises(InvalidStatus):
                connect(ws_url(server, query), open_timeout=5)
        with httpx.Client(timeout=10) as http:
            body = {"messages": [{"role": "user", "content": "Hi [[tokens:1]]"}]}
            headers = {"Authorization": f"Bearer {KEY}"}
            for path in ("/v1/chat/completions", "/chat/completions"):
                answer = http.post(f"{server.url}{path}?api_key={KEY}", json=body, headers=headers)
                assert answer.status_code == 200
                answer = http.post(f"{server.url}{path}?api_key={KEY}&phone={PHONE}", json=body)
                assert answer.status_code == 401
            for path in ("/v1/models", "/health", "/ping", "/metrics", "/nope", "/ws"):
                http.get(f"{server.url}{path}?api_key={KEY}&phone={PHONE}")
    finally:
        server.stop()
    output = server.output()
    lines = records(output)
    assert any(r["level"] == "debug" for r in lines)  # the check below reads debug lines too
    assert sum(r["msg"] == "turn" for r in lines) == 4
    for secret in (KEY.encode(), KEY[:-1].encode(), PHONE.encode(), b"api_key=", b"phone="):
        assert secret not in output
    # A refused handshake is not a server error (uvicorn logged one for each).
    assert [r for r in lines if r["level"] == "error"] == []


def rejections(server: Process) -> list[dict[str, Any]]:
    return [r for r in records(server.output()) if r["logger"] == "server.rejected"]


def rejections_after(server: Process, before: int, count: int) -> list[dict[str, Any]]:
    """The ``count`` rejection lines logged after the first ``before``, once all are there."""
    deadline = time.monotonic() + 5
    while len(seen := rejections(server)) < before + count:
        assert time.monotonic() < deadline, server.output().decode()
        time.sleep(0.02)
    return seen[before:]


def test_every_rejected_request_is_one_line_with_status_code_route(keyed_server: Process) -> None:
    before = len(rejections(keyed_server))
    bad_role = {"messages": [{"role": "robot", "content": f"call {PHONE}"}]}
    with httpx.Client(timeout=5) as http:
        http.post(f"{keyed_server.url}/v1/chat/completions", json=bad_role)
        wrong = {"Authorization": "Bearer wrong"}
        http.post(f"{keyed_server.url}/v1/chat/completions", json=bad_role, headers=wrong)
        http.delete(f"{keyed_server.url}/v1/models/")
    with pytest.raises(InvalidStatus):
        connect(ws_url(keyed_server), open_timeout=5)
    seen = rejections_after(keyed_server, before, 4)
    assert [(r["status"], r["code"], r["method"], r["route"]) for r in seen] == [
        (401, "missing_api_key", "POST", "/v1/chat/completions"),
        (401, "invalid_api_key", "POST", "/v1/chat/completions"),
        (405, "method_not_allowed", "DELETE", "/v1/models"),
        (401, "missing_api_key", "GET", "/ws"),
    ]
    assert PHONE.encode() not in keyed_server.output()


def test_a_bad_field_is_logged_by_name_without_its_value(server: Process) -> None:
    before = len(rejections(server))
    body = {"messages": [{"role": "robot", "content": f"call {PHONE}"}]}
    with httpx.Client(timeout=5) as http:
        answer = http.post(f"{server.url}/v1/chat/completions", json=body)
    assert answer.status_code == 400
    (line,) = rejections_after(server, before, 1)
    assert (line["status"], line["route"]) == (400, "/v1/chat/completions")
    assert (line["code"], line["param"]) == (answer.json()["error"]["code"], "messages.0.role")
    assert b"robot" not in server.output()
    assert PHONE.encode() not in server.output()


def test_startup_summary_says_what_is_served_and_never_the_key(fake: FakeOllama) -> None:
    health_port = free_port()
    server = start_server(
        fake.url,
        "--api-key", KEY, "--health-port", str(health_port),
        wait_warm=False, OLLAMA_NUM_PARALLEL="3",
    )  # fmt: skip
    server.stop()
    (ready,) = [r for r in records(server.output()) if r["msg"] == "ready"]
    assert ready == {
        "ts": ready["ts"],
        "level": "info",
        "logger": "server",
        "msg": "ready",
        "mode": "server",
        "model": MODEL,
        "ollama_urls": [fake.url],
        "max_concurrency": 3,
        "max_concurrency_from": "OLLAMA_NUM_PARALLEL",
        "api_key_set": True,
        "host": "127.0.0.1",
        "ports": [server.port, health_port],
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ready["ts"])
    assert KEY.encode() not in server.output()


def test_text_format_turns_records_into_readable_lines(fake: FakeOllama) -> None:
    server = start_server(fake.url, "--max-concurrency", "2", LOG_FORMAT="text")
    try:
        with httpx.Client(timeout=10) as http:
            body = {"messages": [{"role": "user", "content": "Hi [[tokens:3]]"}]}
            http.post(f"{server.url}/v1/chat/completions", json=body)
    finally:
        server.stop()
    lines = server.output().decode().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) +[\w.]+: "
    assert all(re.match(stamp, line) for line in lines), lines
    (ready,) = [line for line in lines if " server: ready " in line]
    assert "max_concurrency=2 max_concurrency_from=--max-concurrency" in ready
    (turn_line,) = [line for line in lines if " server.turn: turn " in line]
    assert "outcome=ok" in turn_line
    assert "tokens=3" in turn_line
    assert "{" not in turn_line


def test_a_terminal_gets_text_and_a_bad_format_is_refused(fake: FakeOllama) -> None:
    leader, follower = pty.openpty()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", str(port), "--ollama-url", fake.url],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"server: ready" not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.close(leader)
    assert b" INFO    server: ready mode=server " in seen, seen
    assert b'{"ts"' not in seen

    refused = subprocess.run(
        [sys.executable, "-m", "server", "--log-format", "xml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr == "python -m server: error: log format 'xml' is not json or text\n"
