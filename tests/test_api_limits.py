"""Limits that hold under abuse: the HTTP API's deadlines and connection cap.

Each test runs the abuse against a real server (in-process on port 0, or a real
``raft-node`` process) with short deadlines, and checks two things: a normal client is
still served within a bound *while* the abuse goes on, and the abusive connections are
closed once their deadline passed (a 408 for a partial request, nothing for an idle
one).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx
import pytest
from node_procs import NodeProcs, wait_for_leader
from proc_helpers import kv_path, metric, parse_metrics
from testkit import until

from raft_core.node.http_server import HTTPServer, Request, Response, Router, json_response
from raft_core.node.http_server import start_server as _start_server

HEAD_TIMEOUT = 0.5
# A connection's deadline is checked by a sweep every timeout/4; allow that, plus
# scheduling slack on a loaded two-core machine.
SLACK = 2.5


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


BLOCKED: list[Request] = []  # requests inside the /block handler, for waits on the real state


def app() -> tuple[Router, asyncio.Event]:
    router = Router()
    gate = asyncio.Event()

    async def ok(req: Request) -> Response:
        return json_response(200, {"ok": True})

    async def blocked(req: Request) -> Response:
        BLOCKED.append(req)
        await gate.wait()
        return json_response(200, {"ok": True})

    router.add("GET", "/ok", ok)
    router.add("GET", "/block", blocked)
    return router, gate


async def start(router: Router, **kw: Any) -> HTTPServer:
    kw.setdefault("head_timeout", HEAD_TIMEOUT)
    return await _start_server(router, "127.0.0.1", 0, **kw)


async def timed_get(port: int, path: str = "/ok") -> tuple[bytes, float]:
    """One request on a fresh connection: (status line, seconds taken)."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
    return data.split(b"\r\n", 1)[0], time.monotonic() - t0


async def open_half(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``n`` connections that send half a request head and then nothing."""
    conns = []
    for i in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Abuse: " + str(i).encode())
        conns.append((r, w))
    return conns


async def outcome(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """Everything the server sent until it closed; None if still open after ``within``."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


# --------------------------------------------------------------------------- in-process


def test_2000_half_open_heads_are_closed_at_the_deadline_while_others_are_served() -> None:
    head_timeout = 2.0

    async def watch(reader: asyncio.StreamReader) -> tuple[float, bytes]:
        data = await outcome(reader, head_timeout + SLACK + 5)
        return time.monotonic(), data if data is not None else b"<still open>"

    async def main() -> None:
        router, _ = app()
        server = await start(router, max_connections=5000, head_timeout=head_timeout)
        try:
            # Before asking to connect, and once connected: the server's deadline starts
            # in between (at accept).
            opening_at: list[float] = []
            opened_at: list[float] = []
            watchers = []
            writers = []
            peak = 0
            for i in range(2000):
                opening_at.append(time.monotonic())
                (r, w), *_ = await open_half(server.port, 1)
                opened_at.append(time.monotonic())
                watchers.append(asyncio.create_task(watch(r)))
                writers.append(w)
                if i % 200 == 199:
                    # While they hang on, a normal client is served promptly.
                    peak = max(peak, server.active_connections)
                    status, took = await timed_get(server.port)
                    assert status == b"HTTP/1.1 200 OK" and took < 1.5, (status, took)
            assert peak >= 500, f"at most {peak} abusive connections were open together"
            results = await asyncio.gather(*watchers)
            closed_at = [closed for closed, _ in results]
            shortest = min(c - t for c, t in zip(closed_at, opening_at, strict=True))
            longest = max(c - t for c, t in zip(closed_at, opened_at, strict=True))
            answers = [data for _, data in results]
            assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {
                a[:20] for a in answers if not a.startswith(b"HTTP/1.1 408")
            }
            # Each lived about as long as the deadline: no shorter, not much longer.
            assert shortest >= head_timeout - 0.05, shortest
            assert longest < head_timeout + SLACK, longest
            assert server.timed_out == 2000
            for w in writers:
                w.close()
            status, _ = await timed_get(server.port)
            assert status == b"HTTP/1.1 200 OK"
        finally:
            await server.wait_closed(grace=1)

    run(main(), timeout=120)


def test_slowloris_trickling_bytes_does_not_extend_the_head_deadline() -> None:
    async def main() -> None:
        router, _ = app()
        server = await start(router)
        try:
            conns = await open_half(server.port, 100)
            t0 = time.monotonic()

            async def trickle(w: asyncio.StreamWriter) -> None:
                while not w.is_closing():
                    w.write(b"a")
                    await asyncio.sleep(0.05)

            tricklers = [asyncio.create_task(trickle(w)) for _, w in conns]
            results = await asyncio.gather(*(outcome(r, HEAD_TIMEOUT + SLACK) for r, _ in conns))
            assert all(x is not None and x.startswith(b"HTTP/1.1 408") for x in results)
            assert time.monotonic() - t0 < HEAD_TIMEOUT + SLACK
            for t in tricklers:
                t.cancel()
            for _, w in conns:
                w.close()
        finally:
            await server.wait_closed(grace=1)

    run(main())


def test_body_deadline_and_idle_keep_alive_deadline() -> None:
    async def main() -> None:
        router, _ = app()
        server = await start(router, body_timeout=0.4, idle_timeout=0.4, head_timeout=5)
        try:
            # A body that trickles slower than the deadline allows: 408.
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(b"GET /ok HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
            t0 = time.monotonic()
            for _ in range(4):
                w.write(b"x")
                await asyncio.sleep(0.05)
            got = await outcome(r, 0.4 + SLACK)
            assert got is not None and got.startswith(b"HTTP/1.1 408"), got
            assert b"request body" in got and time.monotonic() - t0 < 0.4 + SLACK
            w.close()
            # A keep-alive connection idle after its response: closed, without a 408.
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await r.readuntil(b'{"ok":true}')
            assert first.startswith(b"HTTP/1.1 200")
            t0 = time.monotonic()
            assert await outcome(r, 0.4 + SLACK) == b""
            assert 0.3 < time.monotonic() - t0 < 0.4 + SLACK
            w.close()
        finally:
            await server.wait_closed(grace=1)

    run(main())


def test_connection_cap_evicts_oldest_stalled_and_refuses_when_all_are_busy() -> None:
    async def main() -> None:
        router, gate = app()
        server = await start(router, max_connections=50, head_timeout=30)
        try:
            abusers = await open_half(server.port, 200)
            await until(lambda: server.evicted >= 150, what="the server to evict 150 stalled")
            assert server.active_connections <= 50
            # A normal client is served at once: the oldest stalled connection makes room.
            status, took = await timed_get(server.port)
            assert status == b"HTTP/1.1 200 OK" and took < 1.5
            # The first abusers were the ones closed (oldest first); the newest survive.
            firsts = await asyncio.gather(*(outcome(r, 0.5) for r, _ in abusers[:100]))
            assert all(x == b"" for x in firsts)
            lasts = await asyncio.gather(*(outcome(r, 0.1) for r, _ in abusers[-40:]))
            assert all(x is None for x in lasts)
            for _, w in abusers:
                w.close()
            await until(lambda: server.active_connections == 0, what="the abusers' slots freed")
            # Every slot running a handler: a new connection is told 503 and closed.
            BLOCKED.clear()
            busy = [asyncio.create_task(timed_get(server.port, "/block")) for _ in range(50)]
            await until(lambda: len(BLOCKED) == 50, what="50 requests inside the handler")
            status, _ = await timed_get(server.port)
            assert status == b"HTTP/1.1 503 Service Unavailable"
            assert server.refused >= 1
            gate.set()
            assert all(s == b"HTTP/1.1 200 OK" for s, _ in await asyncio.gather(*busy))
            status, _ = await timed_get(server.port)
            assert status == b"HTTP/1.1 200 OK"
        finally:
            await server.wait_closed(grace=1)

    run(main())


def test_client_that_stops_reading_is_aborted_after_the_idle_time() -> None:
    async def main() -> None:
        router = Router()

        async def big(req: Request) -> Response:
            return Response(200, b"x" * (8 << 20), "application/octet-stream")

        router.add("GET", "/big", big)
        server = await start(router, idle_timeout=0.4)
        try:
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.2)
            assert server.active_connections == 1
            t0 = time.monotonic()
            while server.active_connections and time.monotonic() - t0 < 0.4 + SLACK:
                await asyncio.sleep(0.05)
            assert server.active_connections == 0, "a client that never reads is kept"
            sock.close()
        finally:
            await server.wait_closed(grace=1)

    run(main())


# --------------------------------------------------------------------------- real process


@pytest.mark.processes
def test_raft_node_under_2000_half_open_connections(tmp_path: Path) -> None:
    procs = NodeProcs(tmp_path)
    try:
        nodes = procs.define(
            ["n1"],
            lambda _id: [
                "--max-api-connections", "500",
                "--request-head-timeout-ms", str(int(HEAD_TIMEOUT * 1000)),
            ],
        )  # fmt: skip
        node = procs.start("n1")
        with httpx.Client(timeout=5.0) as http:
            wait_for_leader(http, "http", list(nodes.values()))
            host, port = node.api.split(":")
            abusers = []
            t0 = time.monotonic()
            for i in range(2000):
                s = socket.create_connection((host, int(port)))
                s.sendall(b"PUT /v1/kv/x HTTP/1.1\r\nHost: x\r\nX-Abuse: %d" % i)
                abusers.append(s)
            # While the abusive connections are open, writes and linearizable reads work.
            for i in range(5):
                t = time.monotonic()
                url = f"http://{node.api}{kv_path(f'k{i}')}"
                assert http.put(url, json={"value": str(i)}).status_code == 200
                r = http.get(url, params={"consistency": "linearizable"})
                assert r.status_code == 200 and r.json()["value"] == str(i)
                assert time.monotonic() - t < 2.0, "served slowly under abuse"
            # Each abusive connection is closed: by eviction (cap 500) or at the deadline.
            deadline = t0 + 2000 * 0.001 + HEAD_TIMEOUT + SLACK + 2.0
            open_count = 0
            for s in abusers:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    while s.recv(65536):
                        pass
                except TimeoutError:
                    open_count += 1
                except ConnectionError:
                    pass
                s.close()
            assert open_count == 0, f"{open_count} of 2000 abusive connections still open"
            assert http.get(f"http://{node.api}/v1/status").status_code == 200
            samples = parse_metrics(http.get(f"http://{node.api}/metrics").text)
            evicted = metric(samples, "raft_api_connections_limited_total", reason="evicted")
            timed_out = metric(samples, "raft_api_connections_limited_total", reason="timed_out")
            assert evicted is not None and timed_out is not None
            # Which limit closed each one depends on how fast they were opened.
            assert evicted + timed_out >= 2000, (evicted, timed_out)
    finally:
        procs.close()
