"""The server: listening, the one deadline sweep, the connection cap and shutdown."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from .connection import PHASE_BODY, PHASE_FRESH, PHASE_HEAD, PHASE_IDLE, Connection
from .router import Router

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
DEFAULT_MAX_HEADER = 16 << 10  # 16 KiB
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1000


class HTTPServer:
    """A running server; create with :func:`start_server`."""

    def __init__(
        self,
        router: Router,
        loop: asyncio.AbstractEventLoop,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_header: int = DEFAULT_MAX_HEADER,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.router = router
        self.loop = loop
        self.max_body = max_body
        self.max_header = max_header
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        # Connections closed to make room, and ones refused at the cap (for metrics).
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self.closing = False
        self.host = ""  # bound address, set by start_server (kept after close)
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[Connection] = set()
        self._all_closed = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        timeouts = [t for t in (idle_timeout, head_timeout, body_timeout) if t > 0]
        self._sweep_every = max(0.02, min([t / 4 for t in timeouts] + [1.0]))

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets (empty once closed)."""
        assert self._server is not None
        return tuple(self._server.sockets)

    @property
    def active_connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        """Stop accepting, close idle connections; busy ones close after their response."""
        if self.closing:
            return
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for c in list(self._conns):
            c.shutdown()
        if not self._conns:
            self._all_closed.set()

    async def wait_closed(self, grace: float = 5.0) -> None:
        """Wait for connections to finish; after ``grace`` seconds cancel and abort them."""
        self.close()
        try:
            await asyncio.wait_for(self._all_closed.wait(), grace)
        except TimeoutError:
            for c in list(self._conns):
                c.abort()
            await self._all_closed.wait()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> HTTPServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.wait_closed()

    # -- internals

    async def _start(
        self, host: str, port: int, backlog: int, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._server = await self.loop.create_server(
            lambda: Connection(self),
            host,
            port,
            backlog=backlog,
            reuse_address=True,
            ssl=ssl_context,
            # The TLS handshake of a stalled client must not outlive the head deadline.
            ssl_handshake_timeout=(self.head_timeout or None) if ssl_context else None,
        )
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for c in [c for c in self._conns if 0 < c.deadline <= now]:
            # A connection that sent nothing since its accept timed out sending a request
            # as much as one that sent half a head (a starved client's bytes may arrive
            # after the deadline); only an idle keep-alive connection is not counted.
            if c.phase in (PHASE_FRESH, PHASE_HEAD, PHASE_BODY):
                self.timed_out += 1
            c.expire()
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def admit(self, conn: Connection) -> None:
        if self.closing:
            self._conns.add(conn)
            conn.close()
            return
        if len(self._conns) >= self.max_connections and not self._make_room():
            self.refused += 1
            self._conns.add(conn)
            conn.refuse()
            return
        self._conns.add(conn)

    def _make_room(self) -> bool:
        """At the cap: close the oldest connection with a request still arriving, else the
        oldest idle one. False if every connection is busy (the new one is refused)."""
        victim: Connection | None = None
        best = (True, 0.0)
        for c in self._conns:
            if c.evictable():
                key = (c.phase == PHASE_IDLE, c.since)
                if victim is None or key < best:
                    victim, best = c, key
        if victim is None:
            return False
        self.evicted += 1
        if victim.phase == PHASE_IDLE:
            victim.close()
        else:
            victim.abort()
        self._conns.discard(victim)  # its slot is free now; connection_lost follows
        return True

    def forget(self, conn: Connection) -> None:
        self._conns.discard(conn)
        if self.closing and not self._conns:
            self._all_closed.set()


async def start_server(
    router: Router,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_header: int = DEFAULT_MAX_HEADER,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    backlog: int = 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> HTTPServer:
    """Listen on ``host:port`` (``port=0`` picks a free port; see ``server.port``).

    Timeouts are in seconds; a timeout ``<= 0`` disables that deadline. With
    ``ssl_context`` the server speaks HTTPS only (a plain-HTTP client fails the TLS
    handshake and is disconnected).
    """
    server = HTTPServer(
        router,
        asyncio.get_running_loop(),
        max_body=max_body,
        max_header=max_header,
        idle_timeout=idle_timeout,
        head_timeout=head_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
    )
    await server._start(host, port, backlog, ssl_context)
    return server
