"""The load generator against scripted servers: every response shape it may meet is
counted right, and a connection that breaks is counted and replaced, never hangs."""

from __future__ import annotations

import asyncio

import pytest

from mcp_server.bench.loadgen import LoadResult, run_load

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _read_request(reader: asyncio.StreamReader) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return True


def _load(answer, clients: int = 2, duration_s: float = 0.3, **kw) -> LoadResult:
    """Serve ``answer(n, writer)`` for the n-th request on a connection; run the load."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        n = 0
        try:
            while await _read_request(reader):
                n += 1
                if await answer(n, writer) is False:
                    break
        finally:
            writer.close()

    async def main() -> LoadResult:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await run_load(
                "127.0.0.1",
                port,
                clients=clients,
                duration_s=duration_s,
                warmup_s=0.0,
                grace_s=1.0,
                make_request=kw.pop("make_request", lambda c, s: ("PUT", f"/k{c}-{s}", b"{}")),
                **kw,
            )
        finally:
            server.close()

    result = asyncio.run(main())
    result.connections = connections  # type: ignore[attr-defined]
    return result


async def _ok(n: int, w: asyncio.StreamWriter) -> None:
    w.write(OK)


def test_keep_alive_responses_are_all_counted_on_one_connection_per_client():
    r = _load(_ok)
    assert r.requests > 50 and r.errors == 0 and r.timeouts == 0
    assert r.status_counts == {200: r.requests}
    assert r.connections == 2  # type: ignore[attr-defined]
    assert 0 < r.p50_ms <= r.p99_ms <= r.max_ms


def test_a_response_split_across_writes_is_one_response():
    async def split(n: int, w: asyncio.StreamWriter) -> None:
        w.write(OK[:10])
        await w.drain()
        await asyncio.sleep(0.001)
        w.write(OK[10:])

    r = _load(split, clients=1)
    assert r.requests > 10 and r.errors == 0


def test_connection_close_makes_the_client_reconnect_without_an_error():
    async def close_every_third(n: int, w: asyncio.StreamWriter) -> bool:
        if n % 3:
            w.write(OK)
            return True
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        return False

    r = _load(close_every_third, clients=1)
    assert r.requests > 10 and r.errors == 0
    assert r.connections > 3  # type: ignore[attr-defined]


def test_a_body_delimited_by_eof_counts_once_the_server_closes():
    async def eof_body(n: int, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 201 Created\r\n\r\nsome body")
        return False

    r = _load(eof_body, clients=1)
    assert r.requests > 5 and r.errors == 0
    assert r.status_counts == {201: r.requests}


def test_an_interim_100_continue_is_skipped():
    async def cont(n: int, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)

    r = _load(cont, clients=1)
    assert r.requests > 10 and r.status_counts == {200: r.requests}


def test_non_2xx_answers_are_errors_by_status():
    async def busy(n: int, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n")

    r = _load(busy, clients=1)
    assert r.requests > 10 and r.errors == r.requests and r.status_counts == {503: r.requests}


@pytest.mark.parametrize(
    ("breakage", "server_closes"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", True),  # body cut short
        (b"garbage\r\n\r\n", False),  # not HTTP
        (OK + b"extra", False),  # bytes nobody asked for
    ],
)
def test_a_broken_connection_is_counted_and_replaced(breakage, server_closes):
    async def break_every_fifth(n: int, w: asyncio.StreamWriter) -> bool:
        if n % 5:
            w.write(OK)
            return True
        w.write(breakage)
        return not server_closes  # else the client must give up the connection itself

    r = _load(break_every_fifth, clients=1)
    assert r.requests > 10 and r.timeouts == 0
    assert r.conn_errors > 0 and r.errors == r.conn_errors
    assert r.connections > 2  # type: ignore[attr-defined]


def test_a_server_that_never_answers_ends_as_timeouts_not_a_hang():
    async def mute(n: int, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    r = _load(mute, clients=2, duration_s=0.1)
    assert r.requests == 0 and r.timeouts == 2 and r.errors == 2


def test_a_bug_in_make_request_surfaces_from_the_run():
    def bad(c: int, s: int) -> tuple[str, str, bytes]:
        if s == 3:
            raise KeyError("boom")
        return "GET", "/", b""

    with pytest.raises(KeyError):
        _load(_ok, clients=1, make_request=bad)
