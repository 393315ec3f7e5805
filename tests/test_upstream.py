"""The upstream client's keep-alive, against an Ollama stand-in that ends its answers late.

Ollama (Go's net/http) writes the done line in one write and the message's last, empty
chunk in another, after its handler returns; the server has usually read the done
line, and finished the turn, before that chunk arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from server.core.upstream import Connection, ConnectionPool

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_DONE = b'{"message":{"role":"assistant","content":""},"done":true}\n'


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def _with_ollama(
    end_after: float | None, scenario: Callable[[int, list[int]], Awaitable[None]]
) -> None:
    """Run ``scenario(port, accepted)`` against a stand-in answering each request with a
    token and the done line, then the last chunk ``end_after`` seconds later (never, if
    None). ``accepted`` counts its connections; each element is one connection's
    requests."""
    accepted: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(0)
        mine = len(accepted) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                accepted[mine] += 1
                token = b'{"message":{"role":"assistant","content":"Hi"},"done":false}\n'
                writer.write(_HEAD + _chunk(token) + _chunk(_DONE))
                await writer.drain()
                if end_after is None:
                    await reader.read()  # until the client closes
                    return
                await asyncio.sleep(end_after)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        await scenario(listener.sockets[0].getsockname()[1], accepted)
    finally:
        listener.close()
        await listener.wait_closed()


async def _read_to_done(pool: ConnectionPool, gap: float = 5.0) -> Connection:
    conn = await pool.request("POST", "/api/chat", b"{}", 5.0, gap)
    lines = [await conn.readline(), await conn.readline()]
    assert lines[1] == _DONE.rstrip(b"\n")
    assert not conn.complete  # the last chunk is still to come
    return conn


def test_a_connection_read_to_its_done_line_is_kept_once_its_answer_ends() -> None:
    async def scenario(port: int, accepted: list[int]) -> None:
        pool = ConnectionPool("127.0.0.1", port, 1.0)
        first = await _read_to_done(pool)
        pool.release(first, ended=True)
        await asyncio.sleep(0.15)  # the last chunk arrives meanwhile
        second = await _read_to_done(pool)
        assert second is first
        assert second.reused
        assert accepted == [2]
        pool.release(second, ended=True)
        pool.close()

    asyncio.run(_with_ollama(0.05, scenario))


def test_a_connection_released_mid_answer_is_closed_at_once() -> None:
    async def scenario(port: int, accepted: list[int]) -> None:
        pool = ConnectionPool("127.0.0.1", port, 1.0)
        conn = await pool.request("POST", "/api/chat", b"{}", 5.0, 5.0)
        await conn.readline()  # a token, then the caller barges in
        pool.release(conn)
        assert conn.closed
        await asyncio.sleep(0.15)
        second = await _read_to_done(pool)
        assert second is not conn
        assert accepted == [1, 1]
        pool.close()

    asyncio.run(_with_ollama(0.05, scenario))


def test_an_answer_whose_end_never_comes_is_closed_by_the_gap_timeout() -> None:
    async def scenario(port: int, accepted: list[int]) -> None:
        pool = ConnectionPool("127.0.0.1", port, 1.0)
        conn = await _read_to_done(pool, gap=0.1)
        pool.release(conn, ended=True)
        await asyncio.sleep(0.3)
        assert conn.closed
        second = await _read_to_done(pool)
        assert second is not conn
        pool.close()

    asyncio.run(_with_ollama(None, scenario))


def test_closing_the_pool_closes_a_connection_whose_end_is_still_to_come() -> None:
    async def scenario(port: int, accepted: list[int]) -> None:
        pool = ConnectionPool("127.0.0.1", port, 1.0)
        conn = await _read_to_done(pool)
        pool.release(conn, ended=True)
        pool.close()  # shutting down: nothing may stay open behind it
        assert conn.closed

    asyncio.run(_with_ollama(None, scenario))
