"""Closed-loop HTTP/1.1 load generator on raw asyncio streams.

Each client holds one keep-alive connection and has exactly one request outstanding:
send, read the full response (``Content-Length`` framed, or until EOF when absent), record
latency, repeat. An httpx client costs ~1.5 ms of CPU per request, far more than the
server under test, so this speaks the wire format itself.

Only responses completing inside the measurement window (after ``warmup_s``, before the
deadline) are counted. Non-2xx responses are errors, counted by status; connection losses
are counted in ``conn_errors`` (and in ``errors``) and the client reconnects. Redirects
(e.g. 421 "not the leader") are not followed: point writes at the leader. Clients can
be spread round-robin over several nodes (``extra_targets``), e.g. linearizable reads,
which every member serves.

Library::

    result = await run_load("127.0.0.1", 8080, clients=16, duration_s=3,
                            make_request=lambda c, s: ("GET", "/v1/status", b""))

CLI (``PUT /v1/kv/k{client}-{seq}`` with ``{"value": "<value-size chars>"}``)::

    python -m mcp_server.bench.loadgen --target 127.0.0.1:8080 --clients 1,16,64 \\
        --duration 5 --value-size 64 [--processes N] [--token T] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from raft_core.node.eventloop import loop_runner

__all__ = [
    "KVPutRequests",
    "LoadResult",
    "MakeRequest",
    "run_load",
    "run_load_processes",
    "run_load_sync",
]

# (client_idx, seq) -> (method, path, body)
MakeRequest = Callable[[int, int], tuple[str, str, bytes]]

_CONNECT_BACKOFF_S = 0.05
_READY_TIMEOUT_S = 10.0
_READ_SIZE = 65536
_MAX_HEAD = 65536


@dataclass
class LoadResult:
    clients: int
    duration_s: float  # length of the measurement window
    requests: int  # responses completed in the window, any status
    errors: int  # non-2xx responses + connection errors, in the window
    status_counts: dict[int, int]
    conn_errors: int  # connection failures/losses (each followed by a reconnect)
    timeouts: int  # clients still waiting for a response long after the deadline
    throughput: float  # requests / duration_s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # This process's CPU seconds over the run (warm-up included): a load generator near
    # one core's worth of CPU measures itself, not the server.
    client_cpu_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["latencies_s"]
        d["status_counts"] = {str(k): v for k, v in sorted(self.status_counts.items())}
        for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            if math.isnan(d[k]):
                d[k] = None
        return d


class _Stats:
    __slots__ = (
        "all_ready",
        "conn_errors",
        "latencies",
        "not_ready",
        "status_counts",
        "t_end",
        "t_warm",
    )

    def __init__(self, clients: int) -> None:
        self.t_warm = math.inf  # set when the clock starts
        self.t_end = math.inf
        self.latencies: list[float] = []
        self.status_counts: dict[int, int] = {}
        self.conn_errors = 0
        self.not_ready = clients  # clients that have not yet tried their first connect
        self.all_ready = asyncio.Event()

    def ready(self) -> None:
        self.not_ready -= 1
        if not self.not_ready:
            self.all_ready.set()

    def in_window(self, t: float) -> bool:
        return self.t_warm <= t <= self.t_end


def _encode_request(method: str, path: str, body: bytes, host_hdr: bytes, extra: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        method.encode(),
        path.encode(),
        host_hdr,
        len(body),
        extra,
        body,
    )


def _parse_response_head(head: bytes) -> tuple[int, int | None, bool]:
    """(status, content_length or None, server_will_close)."""
    if not head.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x response: {head[:40]!r}")
    status = int(head[9:12])
    lower = head.lower()
    clen: int | None = None
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        j = lower.find(b"\r\n", i + 2)
        clen = int(lower[i + 17 : j])
    if b"\r\ntransfer-encoding:" in lower:
        raise ValueError("chunked responses are not supported")
    close = b"\r\nconnection: close" in lower or (
        head.startswith(b"HTTP/1.0") and b"\r\nconnection: keep-alive" not in lower
    )
    return status, clen, close


class _Exchange(asyncio.Protocol):
    """One client's connection, driven from the loop's callbacks: a response completes,
    the next request goes out in the same callback. No task wake-up or stream buffer per
    request, so the generator's CPU per request stays well below the server's.

    ``ended`` resolves when the connection can carry no more requests: ``"deadline"``
    (the run is over), ``"close"`` (the server said so, or the response ran to EOF) or
    ``"lost"`` (a reset, an early EOF, or a response that cannot be parsed).
    """

    __slots__ = (
        "_buf", "_close_delimited", "_counts", "_ended", "_latencies", "_next", "_stats",
        "_t0", "_transport", "waiting",
    )  # fmt: skip

    def __init__(self, stats: _Stats, next_request: Callable[[], bytes]) -> None:
        self._stats = stats
        self._latencies = stats.latencies
        self._counts = stats.status_counts
        self._next = next_request
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._t0 = 0.0
        self._close_delimited: int | None = None  # status of a response read to EOF
        self._ended: asyncio.Future[str] | None = None
        self.waiting = False  # a request is outstanding

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def run(self, ended: asyncio.Future[str]) -> None:
        """Start the closed loop; ``ended`` gets why it stopped."""
        self._ended = ended
        self._send()

    def _finish(self, why: str) -> None:
        self.waiting = False
        if self._transport is not None:
            self._transport.close()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(why)

    def _send(self) -> None:
        t0 = time.perf_counter()
        if t0 >= self._stats.t_end:
            self._finish("deadline")
            return
        try:
            data = self._next()
        except Exception as e:  # a bug in make_request: end the run, surface it
            self.waiting = False
            if self._transport is not None:
                self._transport.close()
            if self._ended is not None and not self._ended.done():
                self._ended.set_exception(e)
            return
        self._t0 = t0
        self.waiting = True
        assert self._transport is not None
        self._transport.write(data)

    def _record(self, status: int) -> None:
        t1 = time.perf_counter()
        self.waiting = False
        stats = self._stats
        if stats.t_warm <= t1 <= stats.t_end:
            self._latencies.append(t1 - self._t0)
            self._counts[status] = self._counts.get(status, 0) + 1

    def data_received(self, data: bytes) -> None:
        if self._close_delimited is not None:
            return  # the body runs to EOF; its bytes are not needed
        buf = self._buf + data if self._buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._finish("lost")  # response head too large
                    return
                self._buf = buf
                return
            start = end + 4
            try:
                status, clen, close = _parse_response_head(buf[:start])
            except ValueError:
                self._finish("lost")
                return
            if status < 200:  # interim (100 Continue): drop it, read the real one
                buf = buf[start:]
                continue
            if not self.waiting:
                self._finish("lost")  # a response nobody asked for
                return
            if clen is None:
                self._close_delimited = status
                self._buf = b""
                return
            total = start + clen
            if len(buf) < total:
                self._buf = buf
                return
            self._buf = b""
            if len(buf) > total:  # one request outstanding: nothing may follow
                self._finish("lost")
                return
            self._record(status)
            if close:
                self._finish("close")
            else:
                self._send()
            return

    def eof_received(self) -> bool:
        if self._close_delimited is not None:
            self._record(self._close_delimited)
            self._finish("close")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._finish("lost")


async def _client(
    idx: int,
    host: str,
    port: int,
    make_request: MakeRequest,
    host_hdr: bytes,
    extra: bytes,
    stats: _Stats,
    start: asyncio.Event,
    tls: ssl.SSLContext | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    seq = 0

    def next_request() -> bytes:
        nonlocal seq
        method, path, body = make_request(idx, seq)
        seq += 1
        return _encode_request(method, path, body, host_hdr, extra)

    async def connect() -> _Exchange:
        _, proto = await loop.create_connection(
            lambda: _Exchange(stats, next_request), host, port, ssl=tls
        )
        return proto

    ex: _Exchange | None = None
    try:
        try:  # connect before the clock starts
            ex = await connect()
        except OSError:
            ex = None
        finally:
            stats.ready()
        await start.wait()
        while time.perf_counter() < stats.t_end:
            if ex is None:
                try:
                    ex = await connect()
                except OSError:
                    if stats.in_window(time.perf_counter()):
                        stats.conn_errors += 1
                    await asyncio.sleep(_CONNECT_BACKOFF_S)
                    continue
            ended: asyncio.Future[str] = loop.create_future()
            ex.run(ended)
            why = await ended
            if why == "lost" and stats.in_window(time.perf_counter()):
                stats.conn_errors += 1
            ex = None
    finally:
        if ex is not None:
            ex._finish("deadline")


def _percentile(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return math.nan
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def in_process_row(
    clients: int, latencies: list[float], duration_s: float, errors: int, leader_cpu_s: float
) -> dict[str, Any]:
    """One level's figures when the callers run inside the leader's process (our embedded
    proposals, PySyncObj): the same fields as the HTTP rows that ``report`` shows."""
    lat = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(lat),
        "throughput": len(lat) / duration_s,
        "p50_ms": _percentile(lat, 50) * 1e3,
        "p99_ms": _percentile(lat, 99) * 1e3,
        "errors": errors,
        "leader_cpu_s": round(leader_cpu_s, 2),
    }


def _summarize(
    clients: int,
    window: float,
    latencies: list[float],
    status_counts: dict[int, int],
    conn_errors: int,
    timeouts: int,
    client_cpu_s: float = 0.0,
) -> LoadResult:
    lat = sorted(latencies)
    requests = sum(status_counts.values())
    non2xx = sum(n for s, n in status_counts.items() if not 200 <= s < 300)
    return LoadResult(
        clients=clients,
        duration_s=window,
        requests=requests,
        errors=non2xx + conn_errors + timeouts,
        status_counts=dict(sorted(status_counts.items())),
        conn_errors=conn_errors,
        timeouts=timeouts,
        throughput=requests / window if window > 0 else 0.0,
        p50_ms=_percentile(lat, 50) * 1e3,
        p90_ms=_percentile(lat, 90) * 1e3,
        p99_ms=_percentile(lat, 99) * 1e3,
        max_ms=(lat[-1] * 1e3) if lat else math.nan,
        client_cpu_s=client_cpu_s,
        latencies_s=lat,
    )


async def run_load(
    host: str,
    port: int,
    *,
    clients: int,
    duration_s: float,
    make_request: MakeRequest,
    warmup_s: float = 0.5,
    headers: Mapping[str, str] | None = None,
    start_at: float | None = None,
    client_offset: int = 0,
    grace_s: float = 5.0,
    tls: ssl.SSLContext | None = None,
    extra_targets: Sequence[tuple[str, int]] = (),
) -> LoadResult:
    """Run ``clients`` closed-loop clients for ``warmup_s + duration_s`` seconds.

    ``headers`` are sent with every request (e.g. ``Authorization``). ``start_at`` is a
    ``time.time()`` at which to start (to line up several processes); clients connect
    before it. ``client_offset`` is added to the client index passed to ``make_request``.
    Clients still waiting ``grace_s`` after the deadline are cancelled and counted as
    ``timeouts``. ``tls``: speak HTTPS (each client's one connection is kept).
    ``extra_targets``: client ``i`` connects to the ``i``-th of ``(host, port)`` and
    these, round-robin.
    """
    if clients < 1:
        raise ValueError("clients must be >= 1")
    targets = [(host, port), *extra_targets]
    extra = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (headers or {}).items())
    stats = _Stats(clients)
    cpu0 = time.process_time()
    start = asyncio.Event()
    tasks = []
    for i in range(clients):
        h, p = targets[i % len(targets)]
        client = _client(
            client_offset + i, h, p, make_request, f"{h}:{p}".encode(), extra, stats, start, tls
        )
        tasks.append(asyncio.create_task(client))
    # Connection setup stays outside the clock (a client that could not connect retries
    # once the run starts).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stats.all_ready.wait(), _READY_TIMEOUT_S)
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    stats.t_warm = t0 + warmup_s
    stats.t_end = stats.t_warm + duration_s
    start.set()
    done, pending = await asyncio.wait(tasks, timeout=warmup_s + duration_s + grace_s)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        t.result()  # surface bugs (e.g. in make_request)
    return _summarize(
        clients,
        duration_s,
        stats.latencies,
        stats.status_counts,
        stats.conn_errors,
        len(pending),
        time.process_time() - cpu0,
    )


def run_load_sync(host: str, port: int, **kwargs: Any) -> LoadResult:
    """:func:`run_load` on an event loop of its own: uvloop where installed, which
    roughly halves the generator's CPU per request (it shares the machine with the
    servers it measures), else asyncio."""
    _, run = loop_runner("auto")
    result: LoadResult = run(run_load(host, port, **kwargs))
    return result


# --------------------------------------------------------------------------- multi-process


def _worker(args: tuple[Any, ...]) -> LoadResult:
    host, port, clients, offset, duration_s, warmup_s, make_request, headers, start_at = args
    return run_load_sync(
        host,
        port,
        clients=clients,
        duration_s=duration_s,
        make_request=make_request,
        warmup_s=warmup_s,
        headers=headers,
        start_at=start_at,
        client_offset=offset,
    )


def run_load_processes(
    host: str,
    port: int,
    *,
    clients: int,
    processes: int,
    duration_s: float,
    make_request: MakeRequest,
    warmup_s: float = 0.5,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """:func:`run_load` spread over ``processes`` worker processes (``make_request`` must
    be picklable), started together and merged into one result. Synchronous."""
    processes = max(1, min(processes, clients))
    if processes == 1:
        return _worker((host, port, clients, 0, duration_s, warmup_s, make_request, headers, None))
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0  # spawn + import + connect
    jobs = []
    offset = 0
    for p in range(processes):
        n = clients // processes + (1 if p < clients % processes else 0)
        hdrs = dict(headers or {})
        jobs.append((host, port, n, offset, duration_s, warmup_s, make_request, hdrs, start_at))
        offset += n
    with ctx.Pool(processes) as pool:
        parts = pool.map(_worker, jobs)
    counts: dict[int, int] = {}
    for r in parts:
        for s, n in r.status_counts.items():
            counts[s] = counts.get(s, 0) + n
    return _summarize(
        clients,
        duration_s,
        [x for r in parts for x in r.latencies_s],
        counts,
        sum(r.conn_errors for r in parts),
        sum(r.timeouts for r in parts),
        sum(r.client_cpu_s for r in parts),
    )


# --------------------------------------------------------------------------- CLI


class KVPutRequests:
    """``PUT /v1/kv/k{client}-{seq}`` with body ``{"value": "<value_size x's>"}``."""

    def __init__(self, value_size: int, prefix: str = "/v1/kv/k") -> None:
        self.body = json.dumps({"value": "x" * value_size}, separators=(",", ":")).encode()
        self.prefix = prefix

    def __call__(self, client: int, seq: int) -> tuple[str, str, bytes]:
        return "PUT", f"{self.prefix}{client}-{seq}", self.body


_COLS = (
    "clients", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "cli cpu s"
)  # fmt: skip
_WIDTHS = (7, 9, 9, 8, 8, 8, 8, 7, 9)


def _row(cells: tuple[str, ...]) -> str:
    return "  ".join(c.rjust(w) for c, w in zip(cells, _WIDTHS, strict=True))


def format_header() -> str:
    return _row(_COLS)


def format_row(r: LoadResult) -> str:
    line = _row(
        (
            str(r.clients),
            str(r.requests),
            f"{r.throughput:.0f}",
            f"{r.p50_ms:.3f}",
            f"{r.p90_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.max_ms:.2f}",
            str(r.errors),
            f"{r.client_cpu_s:.2f}",
        )
    )
    if r.errors or set(r.status_counts) - {200, 201, 204}:
        line += f"   status={r.status_counts} conn_errors={r.conn_errors} timeouts={r.timeouts}"
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mcp_server.bench.loadgen",
        description="Closed-loop HTTP/1.1 load generator.",
    )
    ap.add_argument("--target", required=True, help="HOST:PORT of the node (the leader)")
    ap.add_argument("--clients", default="1,16,64", help="comma-separated concurrency levels")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--value-size", type=int, default=64)
    ap.add_argument("--processes", type=int, default=1, help="spread clients over N processes")
    ap.add_argument("--token", help="send Authorization: Bearer TOKEN")
    ap.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    args = ap.parse_args(argv)

    host, _, port_s = args.target.rpartition(":")
    if not host or not port_s.isdigit():
        ap.error("--target must be HOST:PORT")
    levels = [int(x) for x in args.clients.split(",") if x.strip()]
    headers = {"Content-Type": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    make = KVPutRequests(args.value_size)
    results = []
    for n in levels:
        r = run_load_processes(
            host,
            int(port_s),
            clients=n,
            processes=args.processes,
            duration_s=args.duration,
            make_request=make,
            warmup_s=args.warmup,
            headers=headers,
        )
        results.append(r)
        if not args.json:
            if len(results) == 1:
                print(format_header())
            print(format_row(r), flush=True)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
