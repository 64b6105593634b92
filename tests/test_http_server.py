"""Tests for the lean HTTP/1.1 server (raft_core.node.http_server) and mcp_server.bench.loadgen.

Every test runs its own server on port 0 inside ``asyncio.run``; clients speak raw bytes
so the wire format itself is what is checked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_server.bench.loadgen import run_load
from raft_core.node.http_server import (
    Deferred,
    HTTPError,
    HTTPServer,
    Request,
    Response,
    Router,
    bearer_auth,
    json_response,
    start_server,
    text_response,
)

TOKEN = "s3cret-token"
LOGGER = "raft_core.node.http_server"


def run(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


# --------------------------------------------------------------------------- helpers


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader) -> Resp:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), lines[0]
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Resp(status, headers, body)


def req(
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    h = {"Host": "test"}
    if body or method in ("PUT", "POST"):
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    lines = [f"{method} {target} {version}"] + [f"{k}: {v}" for k, v in h.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: HTTPServer) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, method: str, target: str, body: bytes = b"", **kw: Any) -> Resp:
        await self.send(req(method, target, body, **kw))
        return await read_response(self.reader)

    async def read(self) -> Resp:
        return await read_response(self.reader)

    async def at_eof(self) -> bool:
        """True if the server closed the connection (after any remaining bytes)."""
        rest = await asyncio.wait_for(self.reader.read(), 5)
        return rest == b"" or self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


def make_app(**router_kw: Any) -> tuple[Router, dict[str, Any]]:
    """A small KV app plus helpers that tests poke at through ``state``."""
    store: dict[str, Any] = {}
    state: dict[str, Any] = {"store": store, "events": [], "gate": None, "calls": 0}
    router = Router(**router_kw)

    async def put(r: Request) -> Response:
        state["calls"] += 1
        body = r.json()
        store[r.path_params["key"]] = body.get("value")
        return json_response(200, {"key": r.path_params["key"]})

    async def get(r: Request) -> Response:
        state["calls"] += 1
        key = r.path_params["key"]
        if key not in store:
            raise HTTPError(404, "not_found", "no such key", {"key": key})
        return json_response(200, {"key": key, "value": store[key]})

    async def cas(r: Request) -> Response:
        return json_response(200, {"cas": r.path_params["key"]})

    async def echo(r: Request) -> Response:
        return json_response(
            200,
            {
                "method": r.method,
                "path": r.path,
                "raw_path": r.raw_path,
                "query": r.query,
                "params": r.path_params,
                "body": r.body.decode("latin-1"),
                "remote_port": r.remote[1],
            },
        )

    async def slow(r: Request) -> Response:
        name = r.query.get("name", "slow")
        state["events"].append(("start", name))
        gate = state["gate"]
        if gate is not None:
            await gate.wait()
        else:
            for _ in range(5):
                await asyncio.sleep(0)
        state["events"].append(("end", name))
        return json_response(200, {"name": name})

    async def fast(r: Request) -> Response:
        name = r.query.get("name", "fast")
        state["events"].append(("start", name))
        state["events"].append(("end", name))
        return json_response(200, {"name": name})

    async def boom(r: Request) -> Response:
        raise RuntimeError("kaboom")

    async def bad_return(r: Request) -> Response:
        return {"not": "a response"}  # type: ignore[return-value]

    async def status(r: Request) -> Response:
        return json_response(200, {"ok": True})

    async def big(r: Request) -> Response:
        n = int(r.query.get("n", "65536"))
        return text_response(200, "y" * n)

    # Deferred handlers: run at once, answered when the test completes their future.
    state["later"] = []

    def later(r: Request) -> Deferred:
        name = r.query.get("name", "later")
        fut = asyncio.get_running_loop().create_future()
        state["later"].append(fut)

        def finish(done: asyncio.Future[Any]) -> Response:
            value = done.result()
            if value == "conflict":
                raise HTTPError(409, "conflict", "finish refused it")
            return json_response(200, {"name": name, "value": value})

        return Deferred(fut, finish)

    def now(r: Request) -> Response:
        if r.query.get("fail") == "http":
            raise HTTPError(400, "bad_request", "refused at once")
        if r.query.get("fail") == "bug":
            raise RuntimeError("kaboom-now")
        return json_response(200, {"now": True})

    router.add("GET", "/later", later)
    router.add("GET", "/now", now)
    router.add("PUT", "/v1/kv/{key}", put)
    router.add("GET", "/v1/kv/{key}", get)
    router.add("POST", "/v1/kv/{key}/cas", cas)
    router.add("GET", "/echo", echo)
    router.add("POST", "/echo", echo)
    router.add("GET", "/echo/{a}/x/{b}", echo)
    router.add("GET", "/slow", slow)
    router.add("GET", "/fast", fast)
    router.add("GET", "/boom", boom)
    router.add("GET", "/bad-return", bad_return)
    router.add("GET", "/big", big)
    router.add("GET", "/v1/status", status, public=True)
    return router, state


def serve_test(
    fn: Callable[[HTTPServer, dict[str, Any]], Awaitable[None]],
    *,
    router_kw: dict[str, Any] | None = None,
    **server_kw: Any,
) -> None:
    async def main() -> None:
        router, state = make_app(**(router_kw or {}))
        server = await start_server(router, "127.0.0.1", 0, **server_kw)
        try:
            await fn(server, state)
        finally:
            if state["gate"] is not None:
                state["gate"].set()
            await server.wait_closed(grace=2.0)

    run(main())


# --------------------------------------------------------------------------- basics


def test_put_get_round_trip_with_path_params_and_percent_decoding() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        body = json.dumps({"value": "hello \u00e9"}).encode()
        r = await c.request("PUT", "/v1/kv/a%2Fb%20c%C3%A9", body)
        assert r.status == 200
        assert r.headers["content-type"] == "application/json"
        assert r.body == b'{"key":"a/b c\\u00e9"}'  # compact separators
        assert state["store"] == {"a/b c\u00e9": "hello \u00e9"}

        r = await c.request("GET", "/v1/kv/a%2Fb%20c%C3%A9")
        assert (r.status, r.json()) == (200, {"key": "a/b c\u00e9", "value": "hello \u00e9"})

        r = await c.request("GET", "/v1/kv/missing")
        assert r.status == 404
        assert r.json() == {"error": "not_found", "message": "no such key", "key": "missing"}

        r = await c.request("POST", "/v1/kv/k1/cas", b"{}")
        assert (r.status, r.json()) == (200, {"cas": "k1"})

        r = await c.request("GET", "/echo/one%20/x/t%77o")
        assert r.json()["params"] == {"a": "one ", "b": "two"}
        assert r.json()["path"] == "/echo/one /x/two"
        assert r.json()["raw_path"] == "/echo/one%20/x/t%77o"
        c.close()

    serve_test(t)


def test_query_parsing_last_value_wins_and_path_excludes_query() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        r = await c.request("GET", "/echo?x=1&y=&x=3&z=a%20b+c&flag")
        assert r.status == 200
        got = r.json()
        assert got["path"] == "/echo"
        assert got["query"] == {"x": "3", "y": "", "z": "a b c", "flag": ""}
        r = await c.request("GET", "/echo")
        assert r.json()["query"] == {}
        c.close()

    serve_test(t)


def test_absolute_form_target_and_leading_crlf_are_accepted() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        r = await c.request("GET", "http://example.com/echo?q=1")
        assert r.json()["path"] == "/echo" and r.json()["query"] == {"q": "1"}
        await c.send(b"\r\n" + req("GET", "/v1/status"))
        assert (await c.read()).status == 200
        c.close()

    serve_test(t)


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        ports = set()
        for i in range(10):
            r = await c.request("POST", f"/echo?i={i}", b"x" * i)
            assert r.status == 200
            assert "connection" not in r.headers  # HTTP/1.1 default: keep-alive
            assert r.json()["body"] == "x" * i
            ports.add(r.json()["remote_port"])
        assert len(ports) == 1
        assert server.active_connections == 1
        c.close()

    serve_test(t)


def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        # All three in one write; the first is the slow one.
        await c.send(
            req("GET", "/slow?name=a")
            + req("GET", "/fast?name=b")
            + req("PUT", "/v1/kv/p", b'{"value":1}')
            + req("GET", "/fast?name=c")
        )
        names = [(await c.read()).json() for _ in range(4)]
        assert names == [{"name": "a"}, {"name": "b"}, {"key": "p"}, {"name": "c"}]
        # One at a time: b did not start before a finished.
        assert state["events"] == [
            ("start", "a"),
            ("end", "a"),
            ("start", "b"),
            ("end", "b"),
            ("start", "c"),
            ("end", "c"),
        ]
        c.close()

    serve_test(t)


def test_pipelined_requests_split_across_writes_byte_by_byte() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        data = req("POST", "/echo", b'{"a":1}') + req("GET", "/echo?x=2")
        for i in range(len(data)):
            await c.send(data[i : i + 1])
        r1, r2 = await c.read(), await c.read()
        assert r1.json()["body"] == '{"a":1}'
        assert r2.json()["query"] == {"x": "2"}
        c.close()

    serve_test(t)


def test_connection_close_is_honoured() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        r = await c.request("GET", "/v1/status", headers={"Connection": "close"})
        assert r.status == 200
        assert r.headers["connection"] == "close"
        assert await c.at_eof()
        c.close()

    serve_test(t)


def test_http10_closes_unless_keep_alive_requested() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        r = await c.request("GET", "/v1/status", version="HTTP/1.0")
        assert r.status == 200 and r.headers["connection"] == "close"
        assert await c.at_eof()
        c.close()

        c = await Conn.open(server)
        for _ in range(2):
            r = await c.request(
                "GET", "/v1/status", version="HTTP/1.0", headers={"Connection": "Keep-Alive"}
            )
            assert r.status == 200 and r.headers["connection"] == "keep-alive"
        c.close()

    serve_test(t)


def test_missing_host_is_tolerated() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        await c.send(b"GET /v1/status HTTP/1.1\r\n\r\n")
        assert (await c.read()).status == 200
        c.close()

    serve_test(t)


def test_header_parsing_lower_cases_joins_repeats_and_allows_colons_in_values() -> None:
    captured: list[Request] = []

    async def grab(r: Request) -> Response:
        captured.append(r)
        return json_response(200, {})

    async def main() -> None:
        router = Router()
        router.add("GET", "/h", grab)
        async with await start_server(router) as server:
            c = await Conn.open(server)
            await c.send(
                b"GET /h HTTP/1.1\r\nX-Time: 12 :30 : 45\r\nX-Many: a\r\nx-many:  b \t\r\n"
                b"Empty:\r\n\r\n"
            )
            assert (await c.read()).status == 200
            c.close()
        (r,) = captured
        assert r.headers == {"x-time": "12 :30 : 45", "x-many": "a, b", "empty": ""}

    run(main())


@pytest.mark.parametrize("bad", [b"Name\t: v", b"A: 1\r\nName : v"])
def test_whitespace_before_colon_is_rejected(bad: bytes) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        await c.send(b"GET /v1/status HTTP/1.1\r\nX-Ok: a :b\r\n" + bad + b"\r\n\r\n")
        assert (await c.read()).status == 400
        c.close()

    serve_test(t)


def test_expect_100_continue() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        body = b'{"value":"v"}'
        await c.send(
            b"PUT /v1/kv/e HTTP/1.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
            % len(body)
        )
        interim = await c.reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await c.send(body)
        assert (await c.read()).status == 200
        assert state["store"] == {"e": "v"}
        c.close()

    serve_test(t)


# --------------------------------------------------------------------------- protocol errors


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/status\r\n\r\n",
        b"GET  /v1/status HTTP/1.1\r\n\r\n",
        b"GET v1/status HTTP/1.1\r\n\r\n",
        b"GET /v1/status HTTP/1.1 extra\r\n\r\n",
        b"GET /v1/status HTTX/1.1\r\n\r\n",
        b"G(T /v1/status HTTP/1.1\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nNoColonHere\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nName : value\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\n: value\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nA: b\r\n folded: x\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nA: b\nB: c\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"GET /v1/st\xffatus HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_request_gives_400_and_closes(raw: bytes) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        await c.send(raw)
        r = await c.read()
        assert r.status == 400
        assert r.json()["error"] == "bad_request"
        assert r.json()["message"]
        assert r.headers["connection"] == "close"
        assert await c.at_eof()
        c.close()

    serve_test(t)


def test_unsupported_http_version_gives_505() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        await c.send(b"GET /v1/status HTTP/2.0\r\n\r\n")
        r = await c.read()
        assert r.status == 505 and r.json()["error"] == "http_version_not_supported"
        assert await c.at_eof()
        c.close()

    serve_test(t)


def test_header_block_over_limit_gives_431_and_closes() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        # Complete head over the limit.
        c = await Conn.open(server)
        await c.send(req("GET", "/v1/status", headers={"X-Big": "a" * 2000}))
        r = await c.read()
        assert r.status == 431 and r.json()["error"] == "headers_too_large"
        assert r.headers["connection"] == "close"
        assert await c.at_eof()
        c.close()
        # Head that never ends: rejected as soon as the limit is passed, not buffered.
        c = await Conn.open(server)
        await c.send(b"GET /v1/status HTTP/1.1\r\nX-Big: " + b"a" * 1100)
        r = await c.read()
        assert r.status == 431
        assert await c.at_eof()
        c.close()
        # Just under the limit is fine.
        c = await Conn.open(server)
        fill = 1024 - len(req("GET", "/v1/status", headers={"X-Pad": ""})) + 4
        r = await c.request("GET", "/v1/status", headers={"X-Pad": "p" * fill})
        assert r.status == 200
        c.close()

    serve_test(t, max_header=1024)


def test_body_over_limit_gives_413_without_reading_the_body() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        # Announce a body over the limit but send none: the answer must not wait for it.
        c = await Conn.open(server)
        await c.send(b"PUT /v1/kv/x HTTP/1.1\r\nContent-Length: 4097\r\n\r\n")
        r = await c.read()
        assert r.status == 413
        assert r.json() == {
            "error": "payload_too_large",
            "message": "body of 4097 bytes exceeds 4096",
            "max_body": 4096,
        }
        assert r.headers["connection"] == "close"
        assert await c.at_eof()
        c.close()

        # A naive blocking client that sends the whole (too large) body before reading
        # must still get the 413: the server half-closes and drains instead of closing
        # with unread input, which would reset the connection under the client.
        def blocking_client() -> bytes:
            big = b"z" * (4 << 20)
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                s.sendall(b"PUT /v1/kv/x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(big))
                s.sendall(big)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data

        data = await asyncio.to_thread(blocking_client)
        assert data.startswith(b"HTTP/1.1 413 ")
        # Exactly at the limit is accepted.
        c = await Conn.open(server)
        value = "v" * (4096 - len('{"value":""}'))
        body = json.dumps({"value": value}, separators=(",", ":")).encode()
        assert len(body) == 4096
        r = await c.request("PUT", "/v1/kv/x", body)
        assert r.status == 200
        assert state["store"]["x"] == value
        c.close()

    serve_test(t, max_body=4096)


@pytest.mark.parametrize("te", ["chunked", "gzip, chunked", "identity"])
def test_transfer_encoding_gives_411_and_closes(te: str) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        await c.send(
            f"PUT /v1/kv/x HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n".encode()
            + b"5\r\nhello\r\n0\r\n\r\n"
        )
        r = await c.read()
        assert r.status == 411
        assert r.json()["error"] == "length_required"
        assert "Content-Length" in r.json()["message"]
        assert await c.at_eof()
        c.close()
        assert state["store"] == {}

    serve_test(t)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"[1, 2]", "must be an object"),
        (b'"str"', "must be an object"),
        (b'{"value": "\xff"}', "malformed JSON"),
        (b"[" * 100_000, "malformed JSON"),
    ],
)
def test_bad_json_body_gives_400_contract(body: bytes, fragment: str) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        r = await c.request("PUT", "/v1/kv/x", body)
        assert r.status == 400
        assert set(r.json()) == {"error", "message"}
        assert r.json()["error"] == "bad_request"
        assert fragment in r.json()["message"]
        # A handler-level 400 does not close the connection.
        assert (await c.request("GET", "/v1/status")).status == 200
        c.close()

    serve_test(t)


def test_unknown_route_404_and_wrong_method_405() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        for target in ("/nope", "/v1/kv", "/v1/kv/", "/v1/kv/a/b", "/v1/status/", "/v1//x"):
            r = await c.request("GET", target)
            assert r.status == 404, target
            assert r.json()["error"] == "not_found"
        r = await c.request("DELETE", "/v1/kv/x")
        assert r.status == 405
        assert r.json()["error"] == "method_not_allowed"
        assert r.headers["allow"] == "GET, PUT"
        r = await c.request("get", "/v1/status")  # methods are case-sensitive
        assert r.status == 405
        r = await c.request("GET", "/v1/kv/%FF%FE")
        assert r.status == 400 and r.json()["error"] == "bad_request"
        assert (await c.request("GET", "/v1/status")).status == 200
        c.close()

    serve_test(t)


def test_handler_exception_gives_500_logged_and_connection_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            r = await c.request("GET", "/boom")
        assert r.status == 500
        assert r.json()["error"] == "internal"
        assert "kaboom" not in r.body.decode()  # details stay in the log
        assert "connection" not in r.headers
        errors = [rec for rec in caplog.records if rec.name == LOGGER]
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert "kaboom" in caplog.text and "/boom" in caplog.text
        r = await c.request("GET", "/bad-return")
        assert r.status == 500
        assert (await c.request("GET", "/v1/status")).status == 200
        c.close()

    serve_test(t)


async def _pending(state: dict[str, Any], n: int) -> list[asyncio.Future[Any]]:
    while len(state["later"]) < n:
        await asyncio.sleep(0)
    return state["later"]


def test_a_deferred_response_waits_for_its_future_and_pipelined_requests_wait_behind_it() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        await c.send(req("GET", "/later?name=a") + req("GET", "/fast?name=b"))
        (fut,) = await _pending(state, 1)
        for _ in range(20):
            await asyncio.sleep(0)
        assert state["events"] == []  # b waits behind a, which waits for its future
        fut.set_result(7)
        assert (await c.read()).json() == {"name": "a", "value": 7}
        assert (await c.read()).json() == {"name": "b"}
        # The connection goes on: another deferred request on it.
        await c.send(req("GET", "/later?name=c"))
        (_, fut2) = await _pending(state, 2)
        fut2.set_result("x")
        assert (await c.read()).json() == {"name": "c", "value": "x"}
        c.close()

    serve_test(t)


def test_a_deferred_that_fails_is_answered_and_the_connection_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        outcomes = [
            (lambda f: f.set_result("conflict"), 409, "conflict"),  # finish raises HTTPError
            (lambda f: f.set_exception(RuntimeError("kaboom-later")), 500, "internal"),
            (lambda f: f.cancel(), 503, "unavailable"),
        ]
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            for i, (complete, status, error) in enumerate(outcomes):
                await c.send(req("GET", "/later"))
                complete((await _pending(state, i + 1))[i])
                r = await c.read()
                assert (r.status, r.json()["error"]) == (status, error)
        assert "kaboom-later" in caplog.text and "kaboom-later" not in r.body.decode()
        assert (await c.request("GET", "/v1/status")).status == 200
        c.close()

    serve_test(t)


def test_a_plain_handler_answers_at_once_or_fails_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        await c.send(req("GET", "/now") + req("GET", "/now?fail=http") + req("GET", "/now"))
        assert (await c.read()).json() == {"now": True}
        r = await c.read()
        assert (r.status, r.json()["message"]) == (400, "refused at once")
        assert (await c.read()).json() == {"now": True}
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            r = await c.request("GET", "/now?fail=bug")
        assert r.status == 500 and "kaboom-now" in caplog.text
        assert (await c.request("GET", "/now")).status == 200
        c.close()

    serve_test(t)


def test_a_deferred_whose_client_left_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        await c.send(req("GET", "/later"))
        (fut,) = await _pending(state, 1)
        c.writer.transport.abort()
        await asyncio.sleep(0.05)
        with caplog.at_level(logging.WARNING):
            fut.set_result(1)
            while server.active_connections:
                await asyncio.sleep(0.01)
        assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert (await (await Conn.open(server)).request("GET", "/v1/status")).status == 200

    serve_test(t)


def test_server_close_answers_a_deferred_in_flight_then_closes() -> None:
    async def main() -> None:
        router, state = make_app()
        server = await start_server(router, "127.0.0.1", 0)
        c = await Conn.open(server)
        await c.send(req("GET", "/later?name=last"))
        (fut,) = await _pending(state, 1)
        closing = asyncio.create_task(server.wait_closed(grace=5))
        await asyncio.sleep(0.01)
        fut.set_result(1)
        r = await c.read()
        assert r.status == 200 and r.headers["connection"] == "close"
        assert await c.at_eof()
        await closing
        assert server.active_connections == 0
        c.close()

    run(main())


# --------------------------------------------------------------------------- auth


def test_bearer_auth_with_exempt_route() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        for hdrs in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer \u00e9"},
        ):
            r = await c.request("GET", "/v1/kv/x", headers=hdrs)
            assert r.status == 401, hdrs
            assert r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert state["calls"] == 0  # the handler never ran
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert (await c.request("PUT", "/v1/kv/x", b'{"value":1}', headers=ok)).status == 200
        r = await c.request("GET", "/v1/kv/x", headers={"Authorization": f"bearer {TOKEN}"})
        assert (r.status, r.json()["value"]) == (200, 1)
        assert (await c.request("GET", "/v1/status")).status == 200  # exempt
        c.close()

    serve_test(t, router_kw={"auth": bearer_auth(TOKEN)})


def test_auth_hook_may_raise_403() -> None:
    def hook(r: Request) -> bool:
        if r.headers.get("x-role") == "reader" and r.method != "GET":
            raise HTTPError(403, "forbidden", "read-only token")
        return bearer_auth(TOKEN)(r)

    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        hdrs = {"Authorization": f"Bearer {TOKEN}", "X-Role": "reader"}
        r = await c.request("PUT", "/v1/kv/x", b"{}", headers=hdrs)
        assert (r.status, r.json()["error"]) == (403, "forbidden")
        c.close()

    serve_test(t, router_kw={"auth": hook})


# --------------------------------------------------------------------------- concurrency


def test_slow_handler_on_one_connection_does_not_block_another() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        state["gate"] = gate = asyncio.Event()
        a = await Conn.open(server)
        b = await Conn.open(server)
        await a.send(req("GET", "/slow?name=a"))
        while ("start", "a") not in state["events"]:
            await asyncio.sleep(0)
        # a is parked on the gate; b is served meanwhile.
        r = await b.request("GET", "/fast?name=b")
        assert r.json() == {"name": "b"}
        assert ("end", "a") not in state["events"]
        gate.set()
        assert (await a.read()).json() == {"name": "a"}
        a.close()
        b.close()

    serve_test(t)


def test_client_disconnects_mid_request_do_not_hurt_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        # 1. Partial head, then gone.
        c = await Conn.open(server)
        await c.send(b"GET /v1/sta")
        c.close()
        # 2. Full head, partial body, then gone.
        c = await Conn.open(server)
        await c.send(b'PUT /v1/kv/x HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"val')
        c.close()
        # 3. Request in flight in a handler, then gone: (a) with a FIN, which looks like
        # a half-close until the response is written; (b) with a RST (SO_LINGER 0), which
        # drops the connection while the handler still runs.
        state["gate"] = gate = asyncio.Event()
        for how in ("fin", "rst"):
            gate.clear()
            c = await Conn.open(server)
            await c.send(req("GET", f"/slow?name={how}"))
            while ("start", how) not in state["events"]:
                await asyncio.sleep(0)
            sock = c.writer.get_extra_info("socket")
            if how == "rst":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.writer.transport.abort()
                while server.active_connections:
                    await asyncio.sleep(0.001)
            else:
                c.close()
            gate.set()
            while ("end", how) not in state["events"]:
                await asyncio.sleep(0)
            while server.active_connections:
                await asyncio.sleep(0.001)
        # 4. Half-close (shutdown SHUT_WR) while the handler runs: still answered.
        gate.clear()
        c = await Conn.open(server)
        await c.send(req("GET", "/slow?name=half"))
        c.writer.write_eof()
        while not any(conn._eof for conn in server._conns):  # white-box: EOF seen
            await asyncio.sleep(0.001)
        gate.set()
        assert (await c.read()).json() == {"name": "half"}
        assert await c.at_eof()
        c.close()
        # The server is fine and logged nothing at error level.
        c = await Conn.open(server)
        assert (await c.request("GET", "/v1/status")).status == 200
        c.close()
        assert state["store"] == {}

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        serve_test(t)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_many_pipelined_large_responses_with_a_slow_reader() -> None:
    """Responses larger than the socket buffers, client not reading: the server pauses
    (backpressure) and, once the client reads, delivers everything in order."""

    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        n = 64
        await c.send(b"".join(req("GET", f"/big?n={100_000 + i}") for i in range(n)))
        await asyncio.sleep(0.05)  # let the server fill the socket buffers
        # White-box: the server stopped producing once the transport said "pause"; without
        # backpressure it would have queued all ~6.5 MB of responses in user space.
        (conn,) = server._conns
        assert conn._transport is not None
        assert conn._transport.get_write_buffer_size() < 1_000_000
        for i in range(n):
            r = await c.read()
            assert r.status == 200 and len(r.body) == 100_000 + i
        c.close()

    serve_test(t)


def test_idle_connections_are_closed() -> None:
    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        assert (await c.request("GET", "/v1/status")).status == 200
        assert await c.at_eof()  # closed by the sweep after ~0.1-0.15 s
        c.close()

    serve_test(t, idle_timeout=0.1)


def test_server_close_finishes_in_flight_request_then_closes() -> None:
    async def main() -> None:
        router, state = make_app()
        server = await start_server(router, "127.0.0.1", 0)
        state["gate"] = gate = asyncio.Event()
        busy = await Conn.open(server)
        idle = await Conn.open(server)
        assert (await idle.request("GET", "/v1/status")).status == 200
        await busy.send(req("GET", "/slow?name=s"))
        while ("start", "s") not in state["events"]:
            await asyncio.sleep(0)
        closing = asyncio.create_task(server.wait_closed(grace=5))
        assert await idle.at_eof()  # idle keep-alive connection closed at once
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)
        gate.set()
        r = await busy.read()
        assert r.status == 200 and r.headers["connection"] == "close"
        assert await busy.at_eof()
        await closing
        assert server.active_connections == 0
        busy.close()
        idle.close()

    run(main())


def test_server_wait_closed_aborts_stuck_handlers_after_grace() -> None:
    async def main() -> None:
        router, state = make_app()
        server = await start_server(router, "127.0.0.1", 0)
        state["gate"] = asyncio.Event()  # never set
        c = await Conn.open(server)
        await c.send(req("GET", "/slow?name=stuck"))
        while ("start", "stuck") not in state["events"]:
            await asyncio.sleep(0)
        await server.wait_closed(grace=0.05)
        assert server.active_connections == 0
        assert await c.at_eof()
        c.close()

    run(main())


# --------------------------------------------------------------------------- router units


def test_router_rejects_bad_patterns_and_duplicates() -> None:
    async def h(r: Request) -> Response:
        return json_response(200, {})

    router = Router()
    router.add("GET", "/a/{x}", h)
    with pytest.raises(ValueError):
        router.add("GET", "/a/{x}", h)
    with pytest.raises(ValueError):
        router.add("GET", "a/{x}", h)
    with pytest.raises(ValueError):
        router.add("GET", "/a/{x}/{x}", h)
    with pytest.raises(ValueError):
        router.add("GET", "/a/pre{x}", h)
    with pytest.raises(ValueError):
        bearer_auth("")


def test_router_static_routes_win_and_methods_fall_through() -> None:
    async def static(r: Request) -> Response:
        return json_response(200, {"route": "static"})

    async def dynamic(r: Request) -> Response:
        return json_response(200, {"route": "dynamic", **r.path_params})

    router = Router()
    router.add("GET", "/v1/kv/{key}", dynamic)
    router.add("PUT", "/v1/kv/{key}", dynamic)
    router.add("GET", "/v1/kv/_status", static)
    h, public, params = router.resolve("GET", "/v1/kv/_status")
    assert h is static and params == {} and public is False
    h, _, params = router.resolve("PUT", "/v1/kv/_status")
    assert h is dynamic and params == {"key": "_status"}
    h, _, params = router.resolve("GET", "/v1/kv/a%2Fb")
    assert h is dynamic and params == {"key": "a/b"}
    with pytest.raises(HTTPError) as ei:
        router.resolve("DELETE", "/v1/kv/_status")
    assert ei.value.status == 405 and ei.value.headers == {"Allow": "GET, PUT"}


# --------------------------------------------------------------------------- property


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.lists(st.text(max_size=30), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_split_of_a_pipelined_stream_gives_the_same_responses(
    values: list[str], cuts: list[int]
) -> None:
    stream = b"".join(
        req("PUT", f"/v1/kv/k{i}", json.dumps({"value": v}).encode()) + req("GET", f"/v1/kv/k{i}")
        for i, v in enumerate(values)
    )
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points) if b > a]

    async def t(server: HTTPServer, state: dict[str, Any]) -> None:
        c = await Conn.open(server)
        for chunk in chunks:
            await c.send(chunk)
            await asyncio.sleep(0)
        for i, v in enumerate(values):
            assert (await c.read()).json() == {"key": f"k{i}"}
            assert (await c.read()).json() == {"key": f"k{i}", "value": v}
        c.close()

    serve_test(t)


# --------------------------------------------------------------------------- loadgen


def test_loadgen_counts_requests_and_statuses() -> None:
    async def main() -> None:
        router, state = make_app()
        server = await start_server(router, "127.0.0.1", 0)

        def make(client: int, seq: int) -> tuple[str, str, bytes]:
            if seq % 3 == 2:
                return "GET", f"/v1/kv/missing-{client}-{seq}", b""
            return "PUT", f"/v1/kv/k{client}-{seq}", b'{"value":"v"}'

        res = await run_load(
            "127.0.0.1", server.port, clients=4, duration_s=0.3, warmup_s=0.05, make_request=make
        )
        await server.wait_closed()
        assert res.clients == 4
        assert res.requests > 20
        assert set(res.status_counts) == {200, 404}
        assert sum(res.status_counts.values()) == res.requests
        assert res.errors == res.status_counts[404]
        # Every third request per client is a 404.
        assert abs(res.status_counts[404] / res.requests - 1 / 3) < 0.1
        assert res.conn_errors == 0 and res.timeouts == 0
        assert res.requests <= state["calls"]  # warm-up and tail are not counted
        assert 0 < res.p50_ms <= res.p90_ms <= res.p99_ms <= res.max_ms
        assert res.throughput == pytest.approx(res.requests / 0.3)
        assert len(state["store"]) >= res.status_counts[200]

    run(main())


def test_loadgen_spreads_clients_round_robin_over_targets() -> None:
    async def main() -> None:
        apps = [make_app() for _ in range(3)]
        servers = [await start_server(router, "127.0.0.1", 0) for router, _ in apps]
        res = await run_load(
            "127.0.0.1",
            servers[0].port,
            clients=6,
            duration_s=0.3,
            warmup_s=0.05,
            make_request=lambda c, s: ("GET", f"/v1/kv/c{c}", b""),
            extra_targets=[("127.0.0.1", s.port) for s in servers[1:]],
        )
        for server in servers:
            await server.wait_closed()
        assert res.requests > 20 and res.conn_errors == 0
        # Two clients on each server, all busy.
        assert all(state["calls"] > 10 for _, state in apps), [s["calls"] for _, s in apps]

    run(main())


def test_loadgen_handles_connection_close_and_reconnects_after_loss() -> None:
    """Against a stub server that drops every third connection's request unanswered
    and says ``Connection: close`` on others."""

    async def main() -> None:
        served = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    served += 1
                    if served % 3 == 0:  # connection loss mid-request
                        writer.transport.abort()
                        return
                    if served % 3 == 1:
                        writer.write(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n"
                            b"Connection: close\r\n\r\n{}"
                        )
                        await writer.drain()
                        writer.close()
                        return
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        stub = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = stub.sockets[0].getsockname()[1]
        res = await run_load(
            "127.0.0.1",
            port,
            clients=2,
            duration_s=0.3,
            warmup_s=0.0,
            make_request=lambda c, s: ("GET", "/", b""),
        )
        stub.close()
        await stub.wait_closed()
        assert res.status_counts.keys() == {200, 503}
        assert res.conn_errors > 0
        assert res.errors == res.status_counts[503] + res.conn_errors
        # roughly one loss, one 503, one 200 per three requests served
        assert abs(res.status_counts[200] - res.status_counts[503]) <= 0.2 * res.requests + 2

    run(main())
