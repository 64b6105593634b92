"""Baseline: the lean HTTP server with a trivial in-memory KV handler, under loadgen.

Measures the HTTP layer alone (no Raft): the ceiling the node's client API can reach.

    # spawn the server in its own process, run loadgen from this one, print a table
    python -m mcp_server.bench.http_baseline run --clients 1,16,64 --duration 3

    # same against starlette+uvicorn (h11), or against a bare-minimum asyncio.Protocol
    # (no validation/routing: the floor), for comparison; or with bearer auth on
    python -m mcp_server.bench.http_baseline run --impl starlette
    python -m mcp_server.bench.http_baseline run --impl minimal
    python -m mcp_server.bench.http_baseline run --token secret

The table adds the server's and this process's CPU per request (from /proc and
getrusage): on a shared machine they are steadier than req/s.

    # just serve (prints "READY <port>"), e.g. to point `python -m mcp_server.bench.loadgen` at
    python -m mcp_server.bench.http_baseline serve --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import subprocess
import sys
from typing import Any

from mcp_server.bench.loadgen import KVPutRequests, format_header, format_row, run_load_processes
from mcp_server.bench.procinfo import proc_cpu_s


def _build_lean(token: str | None) -> Any:
    from raft_core.node.http_server import (
        HTTPError,
        Request,
        Response,
        Router,
        bearer_auth,
        json_response,
    )

    store: dict[str, Any] = {}
    router = Router(auth=bearer_auth(token) if token else None)

    async def put(req: Request) -> Response:
        body = req.json()
        if "value" not in body:
            raise HTTPError(400, "bad_request", "missing 'value'")
        key = req.path_params["key"]
        store[key] = body["value"]
        return json_response(200, {"key": key, "index": len(store)})

    async def get(req: Request) -> Response:
        key = req.path_params["key"]
        if key not in store:
            raise HTTPError(404, "not_found", "no such key", {"key": key})
        return json_response(200, {"key": key, "value": store[key]})

    async def status(req: Request) -> Response:
        return json_response(200, {"ok": True, "keys": len(store)})

    router.add("PUT", "/v1/kv/{key}", put)
    router.add("GET", "/v1/kv/{key}", get)
    router.add("GET", "/v1/status", status, public=True)
    return router


async def _serve_lean(host: str, port: int, token: str | None) -> None:
    from raft_core.node.http_server import start_server

    server = await start_server(_build_lean(token), host, port)
    print(f"READY {server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.wait_closed(grace=1.0)


def _serve_starlette(host: str, port: int) -> None:
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    store: dict[str, Any] = {}

    async def put(req: Request) -> JSONResponse:
        body = await req.json()
        key = req.path_params["key"]
        store[key] = body["value"]
        return JSONResponse({"key": key, "index": len(store)})

    app = Starlette(routes=[Route("/v1/kv/{key}", put, methods=["PUT"])])
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets whose proto says
    # TCP, and without it Nagle + delayed ACK put ~40 ms on every response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    print(f"READY {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, loop="asyncio")
    uvicorn.Server(config).run(sockets=[sock])


async def _serve_minimal(host: str, port: int) -> None:
    """The floor: an asyncio.Protocol that only finds the head end and Content-Length,
    one task per request, no validation/routing/error handling (benchmark reference)."""
    store: dict[str, Any] = {}
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    class Minimal(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: Any = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            i = self.buf.find(b"Content-Length: ")
            n = int(self.buf[i + 16 : self.buf.find(b"\r", i)]) if 0 <= i < end else 0
            if len(self.buf) < end + 4 + n:
                return
            path = self.buf[: self.buf.find(b"\r\n")].split(b" ")[1]
            body, self.buf = self.buf[end + 4 : end + 4 + n], self.buf[end + 4 + n :]
            tasks.add(t := loop.create_task(self.handle(path, body)))
            t.add_done_callback(tasks.discard)

        async def handle(self, path: bytes, body: bytes) -> None:
            key = path[7:].decode()
            store[key] = json.loads(body)["value"]
            out = json.dumps({"key": key, "index": len(store)}, separators=(",", ":")).encode()
            self.t.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                b"\r\n\r\n%s" % (len(out), out)
            )

    server = await loop.create_server(Minimal, host, port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)  # --processes workers, once reaped
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _run(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "mcp_server.bench.http_baseline", "serve", "--impl", args.impl]
    cmd += ["--host", args.host, "--port", "0"]
    if args.token:
        cmd += ["--token", args.token]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            print(f"server did not start: {line!r}", file=sys.stderr)
            return 1
        port = int(line.split()[1])
        headers = {"Content-Type": "application/json"}
        if args.token:
            headers["Authorization"] = f"Bearer {args.token}"
        results = []
        if not args.json:
            print(f"# impl={args.impl} processes={args.processes} duration={args.duration}s")
            print(format_header() + "  srv us/req  cli us/req", flush=True)
        for n in [int(x) for x in args.clients.split(",")]:
            srv0, cli0 = proc_cpu_s(proc.pid), _own_cpu_s()
            r = run_load_processes(
                args.host,
                port,
                clients=n,
                processes=args.processes,
                duration_s=args.duration,
                make_request=KVPutRequests(args.value_size),
                warmup_s=args.warmup,
                headers=headers,
            )
            # CPU per request over the whole level (warm-up included, so slightly high).
            total = r.requests * (args.warmup + args.duration) / args.duration
            srv_us = (proc_cpu_s(proc.pid) - srv0) / max(total, 1) * 1e6
            cli_us = (_own_cpu_s() - cli0) / max(total, 1) * 1e6
            results.append(
                {**r.to_dict(), "server_cpu_us_per_req": srv_us, "client_cpu_us_per_req": cli_us}
            )
            if not args.json:
                print(f"{format_row(r)}  {srv_us:10.1f}  {cli_us:10.1f}", flush=True)
        if args.json:
            print(
                json.dumps(
                    {"impl": args.impl, "processes": args.processes, "levels": results}, indent=2
                )
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mcp_server.bench.http_baseline")
    sub = ap.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve the in-memory KV API")
    run = sub.add_parser("run", help="spawn `serve` and load it from this process")
    for p in (serve, run):
        p.add_argument("--impl", choices=("lean", "minimal", "starlette"), default="lean")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--token", help="require Authorization: Bearer TOKEN (lean only)")
    serve.add_argument("--port", type=int, default=0)
    run.add_argument("--clients", default="1,16,64")
    run.add_argument("--duration", type=float, default=3.0)
    run.add_argument("--warmup", type=float, default=0.5)
    run.add_argument("--value-size", type=int, default=64)
    run.add_argument("--processes", type=int, default=1)
    run.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        if args.impl == "starlette":
            _serve_starlette(args.host, args.port)
        elif args.impl == "minimal":
            asyncio.run(_serve_minimal(args.host, args.port))
        else:
            asyncio.run(_serve_lean(args.host, args.port, args.token))
        return 0
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
