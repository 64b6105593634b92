"""One client connection's state machine: its phases and their deadlines, request
framing, dispatch to the router, writing responses, lingering close."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol, cast

from .messages import Deferred, HTTPError, Request, Response, json_response
from .router import Router, unauthorized
from .wire import CONN_CLOSE, CONTINUE, Head, encode, parse_head

log = logging.getLogger("raft_core.node.http_server")

# After an "error and close" response, keep discarding input this long before closing.
LINGER_S = 2.0


class ConnectionHost(Protocol):
    """What a connection needs of its server (``HTTPServer``)."""

    router: Router
    loop: asyncio.AbstractEventLoop
    max_body: int
    max_header: int
    idle_timeout: float
    head_timeout: float
    body_timeout: float
    closing: bool

    def admit(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


# Where a connection is; each phase but PHASE_BUSY has a deadline (see the module docstring).
PHASE_FRESH = 0  # accepted, nothing received yet: head deadline from accept
PHASE_HEAD = 1  # part of a request head received: head deadline from its first byte
PHASE_BODY = 2  # head complete, body incomplete: body deadline from the head
PHASE_BUSY = 3  # a handler is running: no deadline here
PHASE_IDLE = 4  # keep-alive, nothing in flight: idle deadline
PHASE_STALLED = 5  # our writes back up, or closing and flushing: aborted after the idle time


class Connection(asyncio.Protocol):
    __slots__ = (
        "_buf",
        "_busy",
        "_closing",
        "_eof",
        "_hiwat",
        "_linger",
        "_loop",
        "_pending",
        "_reading",
        "_remote",
        "_router",
        "_server",
        "_task",
        "_transport",
        "_write_paused",
        "deadline",
        "phase",
        "since",
    )

    def __init__(self, server: ConnectionHost) -> None:
        self._server = server
        self._router = server.router
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._buf: bytes | bytearray = b""
        self._pending: Head | None = None
        self._busy = False  # a handler task is running for this connection
        self._closing = False  # no more requests will be served
        self._eof = False
        self._write_paused = False
        self._reading = True
        self._hiwat = server.max_header + server.max_body + 65536
        self._task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.phase = PHASE_FRESH
        self.since = 0.0  # loop time the current phase began
        self.deadline = 0.0  # loop time the current phase must end (0: none)
        self._remote: Any = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # An asyncio.Transport in practice (uvloop's transports do not subclass it).
        self._transport = cast(asyncio.Transport, transport)
        self._remote = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio does this only when the socket's proto says TCP; be sure: with Nagle,
            # a response following a write the client has not yet ACKed waits ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._enter(PHASE_FRESH, self._server.head_timeout)
        self._server.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._buf = b""
        self._pending = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._server.forget(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering close, or shutting down: discard
        if self.phase == PHASE_IDLE:
            self._enter(PHASE_HEAD, self._server.head_timeout)
        elif self.phase == PHASE_FRESH:
            self.phase = PHASE_HEAD  # the deadline still counts from the accept
        buf = self._buf
        if not buf:
            self._buf = data
        else:
            if type(buf) is bytes:
                buf = bytearray(buf)
            buf += data
            self._buf = buf
        if self._busy or self._write_paused:
            if len(self._buf) > self._hiwat:
                self._update_reading()
        else:
            self._process()

    def eof_received(self) -> bool:
        self._eof = True
        # Keep the half-open connection while a request is in flight so its response can
        # still be written; otherwise let the transport close.
        return self._busy and not self._closing

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()
        if not self._busy:
            self._enter(PHASE_STALLED, self._server.idle_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        if not self._busy and not self._closing:
            self._process()

    # -- deadlines

    def _enter(self, phase: int, timeout: float) -> None:
        now = self._loop.time()
        self.phase = phase
        self.since = now
        self.deadline = now + timeout if timeout > 0 else 0.0

    def _arm(self) -> None:
        """Set the phase (and deadline) from what is buffered, after processing."""
        if self._closing:
            return
        if self._write_paused:
            if self.phase != PHASE_STALLED:
                self._enter(PHASE_STALLED, self._server.idle_timeout)
        elif self._busy:
            if self.phase != PHASE_BUSY:
                self._enter(PHASE_BUSY, 0)
        elif self._pending is not None:
            if self.phase != PHASE_BODY:
                self._enter(PHASE_BODY, self._server.body_timeout)
        elif self._buf:
            if self.phase not in (PHASE_FRESH, PHASE_HEAD):
                self._enter(PHASE_HEAD, self._server.head_timeout)
        elif self.phase not in (PHASE_FRESH, PHASE_IDLE):
            self._enter(PHASE_IDLE, self._server.idle_timeout)

    def expire(self) -> None:
        """The current phase's deadline passed (called by the server's sweep)."""
        phase = self.phase
        self.deadline = 0.0
        if phase == PHASE_STALLED:
            self.abort()
        elif phase in (PHASE_HEAD, PHASE_BODY) and self._transport is not None:
            what = "request head" if phase == PHASE_HEAD else "request body"
            # A client that is still sending (a slow loris) would get RST for its unread
            # bytes, which can destroy the 408 in flight: close the way _fail does.
            self._fail(HTTPError(408, "request_timeout", f"{what} not received in time"))
        else:  # PHASE_FRESH or PHASE_IDLE: nothing to answer
            self.close()

    # -- request processing

    def _update_reading(self) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return
        want = self._closing or (not self._write_paused and len(self._buf) <= self._hiwat)
        if want != self._reading:
            self._reading = want
            if want:
                t.resume_reading()
            else:
                t.pause_reading()

    def _process(self) -> None:
        """Parse and dispatch buffered requests until one needs a task or data runs out."""
        while not self._busy and not self._closing and not self._write_paused:
            buf = self._buf
            head = self._pending
            if head is None:
                if not buf:
                    break
                if buf[0] == 13 or buf[0] == 10:  # RFC 9112 2.2: ignore leading CRLFs
                    self._buf = buf = buf.lstrip(b"\r\n")
                    continue
                end = buf.find(b"\r\n\r\n")
                if end < 0 or end > self._server.max_header:
                    if end < 0 and len(buf) <= self._server.max_header + 3:
                        break
                    self._fail(
                        HTTPError(
                            431,
                            "headers_too_large",
                            f"request head exceeds {self._server.max_header} bytes",
                        )
                    )
                    return
                try:
                    head = parse_head(buf, end)
                except HTTPError as e:
                    self._fail(e)
                    return
                if head.clen > self._server.max_body:
                    self._fail(
                        HTTPError(
                            413,
                            "payload_too_large",
                            f"body of {head.clen} bytes exceeds {self._server.max_body}",
                            {"max_body": self._server.max_body},
                        )
                    )
                    return
                if len(buf) < head.body_start + head.clen:
                    if head.expect_continue:
                        assert self._transport is not None
                        self._transport.write(CONTINUE)
                    self._pending = head
                    break
            elif len(buf) < head.body_start + head.clen:
                break
            self._pending = None
            end = head.body_start + head.clen
            body = bytes(buf[head.body_start : end]) if head.clen else b""
            self._buf = buf[end:] if len(buf) > end else b""
            self._dispatch(head, body)
        if not self._busy and not self._closing and self._eof and not self._write_paused:
            self.close()  # client half-closed and everything complete has been answered
            return
        if not self._reading:
            self._update_reading()
        self._arm()

    def _dispatch(self, head: Head, body: bytes) -> None:
        target = head.target
        q = target.find("?")
        if q < 0:
            raw_path, qs = target, ""
        else:
            raw_path, qs = target[:q], target[q + 1 :]
        headers = head.headers
        keep_alive = head.keep_alive and not self._server.closing
        conn = head.conn if keep_alive else CONN_CLOSE
        where = "before handler"
        try:
            request = Request(head.method, raw_path, qs, headers, body, self._remote)
            handler, public, params = self._router.resolve(head.method, raw_path)
            request.path_params = params
            auth = self._router.auth
            if not public and auth is not None and not auth(request):
                raise unauthorized()
            where = "in handler"
            # A coroutine handler only creates its coroutine here; a plain one runs now.
            out = handler(request)
        except HTTPError as e:
            self._write(e.to_response(), keep_alive, conn)
            return
        except Exception:
            log.exception("unhandled error %s for %s %s", where, head.method, raw_path)
            self._write(_internal_error(), keep_alive, conn)
            return
        if type(out) is Response:
            self._write(out, keep_alive, conn)
            return
        self._busy = True
        if type(out) is Deferred:
            out.future.add_done_callback(
                partial(self._deferred_done, out.finish, request, keep_alive, conn)
            )
        else:
            self._task = self._loop.create_task(self._run(out, request, keep_alive, conn))

    async def _run(
        self, pending: Awaitable[Response], request: Request, keep_alive: bool, conn: bytes
    ) -> None:
        try:
            resp = await pending
            if not isinstance(resp, Response):
                raise TypeError(f"handler returned {type(resp).__name__}, not Response")
        except HTTPError as e:
            resp = e.to_response()
        except Exception:
            log.exception("unhandled error in handler for %s %s", request.method, request.path)
            resp = _internal_error()
        self._task = None
        self._respond(resp, keep_alive, conn)

    def _deferred_done(
        self,
        finish: Callable[[asyncio.Future[Any]], Response],
        request: Request,
        keep_alive: bool,
        conn: bytes,
        fut: asyncio.Future[Any],
    ) -> None:
        try:
            resp = finish(fut)
            if not isinstance(resp, Response):
                raise TypeError(f"handler returned {type(resp).__name__}, not Response")
        except HTTPError as e:
            resp = e.to_response()
        except asyncio.CancelledError:
            resp = HTTPError(503, "unavailable", "the request was cancelled").to_response()
        except Exception:
            log.exception("unhandled error in handler for %s %s", request.method, request.path)
            resp = _internal_error()
        self._respond(resp, keep_alive, conn)

    def _respond(self, resp: Response, keep_alive: bool, conn: bytes) -> None:
        """The handler is done: answer, then go on with what the client sent meanwhile."""
        self._busy = False
        if self._server.closing and keep_alive:  # shutdown began while the handler ran
            keep_alive, conn = False, CONN_CLOSE
        self._write(resp, keep_alive, conn)
        if keep_alive and (self._buf or self._eof):
            self._process()
        else:
            self._arm()

    def _write(self, resp: Response, keep_alive: bool, conn: bytes) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return  # client went away; the response is dropped
        try:
            data = encode(resp, conn)
        except Exception:  # e.g. CR/LF in a header value, non-bytes body
            log.exception("cannot encode response %r", resp)
            data = encode(_internal_error(), conn)
        t.write(data)
        if not keep_alive:
            self.close()

    def close(self) -> None:
        self._closing = True
        # close() waits for buffered output to flush: a client that never reads would
        # keep the connection forever, so the sweep aborts it after the idle time.
        self._enter(PHASE_STALLED, self._server.idle_timeout)
        if self._transport is not None:
            self._transport.close()

    def _fail(self, err: HTTPError) -> None:
        """Answer a request we cannot frame, then close gracefully.

        Half-close, keep discarding what the client still sends for LINGER_S, then close:
        closing a socket with unread input makes the kernel send RST, which can destroy
        the error response before the client reads it.
        """
        self._closing = True
        self._buf = b""
        self._pending = None
        self._enter(PHASE_STALLED, LINGER_S + self._server.idle_timeout)
        t = self._transport
        if t is None or t.is_closing():
            return
        t.write(encode(err.to_response(), CONN_CLOSE))
        if t.can_write_eof():
            t.write_eof()
            self._update_reading()  # make sure we keep draining
            self._linger = self._loop.call_later(LINGER_S, t.close)
        else:  # pragma: no cover - plain TCP always can
            t.close()

    # -- used by the server

    def evictable(self) -> bool:
        return not self._busy and not self._closing

    def refuse(self) -> None:
        """Over the connection cap with no room to make: say so and close."""
        err = HTTPError(503, "too_many_connections", "the node is at its connection limit")
        if self._transport is not None:
            self._transport.write(encode(err.to_response(), CONN_CLOSE))
        self.close()

    def shutdown(self) -> None:
        """Server closing: close now if idle, else after the current response."""
        if not self._busy:
            self.close()

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()


def _internal_error() -> Response:
    return json_response(
        500, {"error": "internal", "message": "internal server error; see the node log"}
    )
