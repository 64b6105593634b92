"""PeerTransport: the peer links of one node. Sending queues and hands frames to the
peer pump (``pump``), accepting runs the handshake (``handshake``) and then reads and
delivers messages, and fault injection (``faults``) sits on both paths."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

from raft_core.codec import MAX_NODE_ID_LEN, CodecError, decode_message, encode_message
from raft_core.node.tls import PeerTLS
from raft_core.types import Message, MessageType, NodeId

from ..address import parse_address
from . import handshake
from .faults import DelayLine, FaultSet
from .handshake import (
    HANDSHAKE_MAX_FRAME,
    HEADER_LEN,
    STREAM_LIMIT,
    AuthError,
    HandshakeError,
    ProtocolError,
    close_writer,
    describe,
    peername,
    read_frame,
    set_keepalive,
    valid_id,
)
from .pump import Peer, pump
from .stats import TransportStats

log = logging.getLogger("raft_core.node.transport")

DEFAULT_MAX_FRAME = 64 << 20
MAX_PENDING_HANDSHAKES = 128

TYPE_NAMES = {int(t): t.name for t in MessageType}

OnMessage = Callable[[Message], None]
OnUnreachable = Callable[[NodeId], None]


class HeldStreamProtocol(asyncio.StreamReaderProtocol):
    """An accepted connection that reads nothing until its handler starts.

    With peer TLS the dialer's ClientHello may arrive before the handler calls
    ``start_tls``; read by the plain stream reader first, it would be lost and the
    handshake would hang until its timeout (uvloop reads eagerly enough to make that
    the common case). Reading resumes in ``start_tls`` or, without TLS, explicitly.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the method without subclassing ReadTransport.
        cast(asyncio.ReadTransport, transport).pause_reading()
        super().connection_made(transport)


class Inbound:
    """One accepted, authenticated connection."""

    __slots__ = ("addr", "peer_id", "superseded", "warned", "writer")

    def __init__(self, peer_id: NodeId, addr: str, writer: asyncio.StreamWriter) -> None:
        self.peer_id = peer_id
        self.addr = addr
        self.writer = writer
        self.superseded = False
        self.warned: set[str] = set()


# ------------------------------------------------------------------------- transport


class PeerTransport:
    """Carries Raft messages to and from peers over TCP. See the module docstring.

    All methods must be called from the event loop thread. ``on_message``,
    ``on_unreachable`` and ``on_disconnected`` are invoked from the event loop;
    exceptions they raise are logged and swallowed. ``on_disconnected(peer)``: the
    connection ``peer`` sends on was closed by its end (the process died or closed
    it), not replaced by a newer one.
    """

    def __init__(
        self,
        node_id: NodeId,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        *,
        on_message: OnMessage,
        on_unreachable: OnUnreachable | None = None,
        on_disconnected: OnUnreachable | None = None,
        cluster_secret: bytes | None = None,
        cluster_id: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        queue_limit: int = 4096,
        queue_max_bytes: int = 256 << 20,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        handshake_timeout: float = 5.0,
        allow_unknown_peers: bool = False,
        rng: random.Random | None = None,
        tls: PeerTLS | None = None,
    ) -> None:
        if not valid_id(node_id):
            raise ValueError(f"node id must be a 1..{MAX_NODE_ID_LEN} character string")
        if cluster_id is not None and not valid_id(cluster_id):
            raise ValueError(f"cluster id must be a 1..{MAX_NODE_ID_LEN} character string")
        if cluster_secret is not None and (
            not isinstance(cluster_secret, bytes) or len(cluster_secret) < 16
        ):
            raise ValueError("cluster secret must be bytes, at least 16 long")
        if max_frame < HANDSHAKE_MAX_FRAME or max_frame >= 1 << 32:
            raise ValueError(f"max_frame must be in [{HANDSHAKE_MAX_FRAME}, 2**32)")
        if queue_limit < 1 or queue_max_bytes < 1:
            raise ValueError("queue limits must be positive")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self.node_id = node_id
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.on_disconnected = on_disconnected
        self.cluster_id = cluster_id
        self.max_frame = max_frame
        self.queue_limit = queue_limit
        self.queue_max_bytes = queue_max_bytes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.handshake_timeout = handshake_timeout
        self.allow_unknown_peers = allow_unknown_peers
        self.stats = TransportStats()
        self._secret = cluster_secret
        self._tls = tls
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._peers: dict[NodeId, Peer] = {}
        self._inbound: dict[NodeId, set[Inbound]] = {}
        self._inbound_tasks: set[asyncio.Task[Any]] = set()
        self._peer_tasks: set[asyncio.Task[Any]] = set()
        self._pending_handshakes = 0
        self._in_delay: dict[NodeId, DelayLine] = {}
        self._faults = FaultSet()
        self._started = False
        self._bound_port: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on ``listen_host:listen_port`` and start dialing known peers."""
        if self._started:
            raise RuntimeError("transport already started")
        loop = self._loop = asyncio.get_running_loop()

        def accept() -> HeldStreamProtocol:
            reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
            return HeldStreamProtocol(reader, self._handle_inbound, loop=loop)

        self._server = await loop.create_server(
            accept, self.listen_host, self.listen_port, reuse_address=True
        )
        self._bound_port = int(self._server.sockets[0].getsockname()[1])
        self._started = True
        for peer in self._peers.values():
            self._spawn(peer)

    async def close(self) -> None:
        """Stop listening, close every connection, drop what is queued. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for peer in self._peers.values():
            self._discard_peer(peer, "closed")
        tasks: list[asyncio.Task[Any]] = list(self._peer_tasks)
        for conns in self._inbound.values():
            for conn in conns:
                close_writer(conn.writer, abort=True)
        for task in self._inbound_tasks:
            task.cancel()
        tasks.extend(self._inbound_tasks)
        for line in self._in_delay.values():
            self.stats.dropped["closed"] += len(line.cancel())
        self._in_delay.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    @property
    def peer_auth(self) -> str:
        """``"tls"`` (mutual TLS), ``"secret"`` (HMAC handshake only) or ``"none"``."""
        if self._tls is not None:
            return "tls"
        return "secret" if self._secret is not None else "none"

    @property
    def bound_port(self) -> int:
        """The port listened on (useful with ``listen_port=0``); kept after close()."""
        if self._bound_port is None:
            raise RuntimeError("transport not started")
        return self._bound_port

    # ------------------------------------------------------------------ membership

    def set_peers(self, peers: Mapping[NodeId, str]) -> None:
        """Replace the peer set: ``{node_id: "host:port"}``. Own id is ignored.

        New peers are dialed, removed peers' connections (both directions) are closed
        and their queues dropped, peers whose address changed are re-dialed with their
        queue kept. Raises ``ValueError`` (changing nothing) on a malformed id/address.
        """
        parsed: dict[NodeId, tuple[str, int]] = {}
        for pid, addr in peers.items():
            if not valid_id(pid):
                raise ValueError(f"invalid peer id {pid!r}")
            if pid != self.node_id:
                parsed[pid] = parse_address(addr, f"address of peer {pid}")
        for pid in list(self._peers):
            if pid not in parsed:
                peer = self._peers.pop(pid)
                self._discard_peer(peer, "peer_removed")
                self._close_inbound(pid)
                log.info("peer %s removed (was %s)", pid, peer.address)
        for pid, (host, port) in parsed.items():
            old = self._peers.get(pid)
            if old is not None and (old.host, old.port) == (host, port):
                continue
            peer = Peer(pid, host, port)
            if old is not None:
                # New address: a fresh peer object/task takes over the queue.
                log.info("peer %s moved from %s to %s", pid, old.address, peer.address)
                peer.queue, peer.queued_bytes = old.queue, old.queued_bytes
                peer.out_delay, old.out_delay = old.out_delay, None
                old.queue, old.queued_bytes = deque(), 0
                self._discard_peer(old, "peer_removed")
            self._peers[pid] = peer
            if self._started and not self._closed:
                self._spawn(peer)

    def peers(self) -> dict[NodeId, str]:
        return {pid: p.address for pid, p in self._peers.items()}

    def peer_status(self) -> dict[NodeId, dict[str, Any]]:
        """Per-peer view for status pages: address, connected, queued messages/bytes."""
        return {
            pid: {
                "address": p.address,
                "connected": p.connected,
                "queued": len(p.queue) + (len(p.out_delay) if p.out_delay else 0),
                "queued_bytes": p.queued_bytes,
                "last_error": p.last_error or None,
            }
            for pid, p in self._peers.items()
        }

    def inbound_peers(self) -> dict[NodeId, int]:
        """Authenticated inbound connections per peer id (normally 0 or 1)."""
        return {pid: len(conns) for pid, conns in self._inbound.items() if conns}

    # ------------------------------------------------------------------ faults

    def set_faults(
        self,
        drop: set[NodeId] | frozenset[NodeId] = frozenset(),
        delay_ms: int = 0,
        *,
        drop_out: set[NodeId] | frozenset[NodeId] = frozenset(),
        drop_in: set[NodeId] | frozenset[NodeId] = frozenset(),
    ) -> None:
        """Fault injection; replaces the whole fault set, ``set_faults()`` clears it.

        ``drop``: discard all traffic to and from these peers. ``drop_out``: discard
        only this node's messages to them (they still reach us: a one-way partition).
        ``drop_in``: discard only their messages to this node, on receipt. Messages
        already queued (or held by a delay) for a peer we no longer send to are
        discarded too. ``delay_ms``: hold every inbound and outbound message this long
        (per-peer order preserved). Every discarded message counts as
        ``dropped["fault"]``."""
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        self._faults = FaultSet(
            frozenset(drop), frozenset(drop_out), frozenset(drop_in), delay_ms / 1000.0
        )
        for pid in self._faults.no_send:
            peer = self._peers.get(pid)
            if peer is not None and peer.queue:
                self.stats.dropped["fault"] += len(peer.queue)
                peer.queue.clear()
                peer.queued_bytes = 0

    @property
    def faults(self) -> dict[str, Any]:
        """The fault set as :meth:`set_faults` took it (ids sorted)."""
        return self._faults.to_dict()

    # ------------------------------------------------------------------ sending

    def send(self, messages: list[Message]) -> None:
        """Queue messages for their peers. Never blocks, never raises for a message:
        problems are counted in ``stats.dropped`` (and logged)."""
        if self._closed:
            self.stats.dropped["closed"] += len(messages)
            return
        touched: list[Peer] = []
        faults = self._faults
        for m in messages:
            peer = self._peers.get(m.to)
            if peer is None:
                self.stats.dropped["unknown_peer"] += 1
                log.debug("dropping %s to unknown peer %r", type_name(m.type), m.to)
                continue
            if m.frm != self.node_id:
                self.stats.dropped["bad_sender"] += 1
                log.error("refusing to send %s claiming to be from %r", type_name(m.type), m.frm)
                continue
            if m.to in faults.no_send:
                self.stats.dropped["fault"] += 1
                continue
            try:
                payload = encode_message(m)
            except Exception as exc:
                self.stats.dropped["unencodable"] += 1
                log.error("cannot encode %s to %s: %s", type_name(m.type), m.to, exc)
                continue
            if len(payload) > self.max_frame:
                self.stats.dropped["oversize"] += 1
                log.warning(
                    "dropping %s to %s: %d bytes exceeds max frame %d",
                    type_name(m.type),
                    m.to,
                    len(payload),
                    self.max_frame,
                )
                continue
            item = (type_name(m.type), payload)
            line = peer.out_delay
            if faults.delay > 0 or (line is not None and line.items):
                if line is None:
                    pid = peer.id
                    line = peer.out_delay = DelayLine(
                        self._get_loop(), lambda it, pid=pid: self._enqueue_delayed(pid, it)
                    )
                if len(line) >= self.queue_limit:
                    self.stats.dropped["queue_full"] += 1
                    continue
                line.add(item, faults.delay)
            elif self._enqueue(peer, item) and peer not in touched:
                touched.append(peer)
        for peer in touched:
            peer.flush(self.stats)

    def _enqueue_delayed(self, pid: NodeId, item: tuple[str, bytes]) -> None:
        peer = self._peers.get(pid)
        if peer is None or self._closed:
            self.stats.dropped["peer_removed"] += 1
        elif pid in self._faults.no_send:
            self.stats.dropped["fault"] += 1
        elif self._enqueue(peer, item):
            peer.flush(self.stats)

    def _enqueue(self, peer: Peer, item: tuple[str, bytes]) -> bool:
        """Queue ``item`` for ``peer``; False if it was dropped (queue full)."""
        size = len(item[1])
        if len(peer.queue) >= self.queue_limit or (
            peer.queue and peer.queued_bytes + size > self.queue_max_bytes
        ):
            self.stats.dropped["queue_full"] += 1
            if not peer.queue_full_warned:
                peer.queue_full_warned = True
                log.warning(
                    "queue to %s (%s) is full (%d messages, %d bytes): dropping new messages",
                    peer.id,
                    peer.address,
                    len(peer.queue),
                    peer.queued_bytes,
                )
            return False
        peer.queue.append(item)
        peer.queued_bytes += size
        return True

    # ------------------------------------------------------------------ outbound

    def _spawn(self, peer: Peer) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run_peer(peer), name=f"raft-transport-{self.node_id}->{peer.id}"
        )
        peer.task = task
        self._peer_tasks.add(task)
        task.add_done_callback(self._peer_tasks.discard)

    def _discard_peer(self, peer: Peer, reason: str) -> None:
        if peer.queue:
            self.stats.dropped[reason] += len(peer.queue)
            peer.queue.clear()
            peer.queued_bytes = 0
        if peer.out_delay is not None:
            self.stats.dropped[reason] += len(peer.out_delay.cancel())
            peer.out_delay = None
        if peer.task is not None:
            peer.task.cancel()
        peer.wake()

    def _jitter(self, delay: float) -> float:
        return delay * (0.5 + 0.5 * self._rng.random())

    async def _run_peer(self, peer: Peer) -> None:
        backoff = self.backoff_initial
        while not self._closed and self._peers.get(peer.id) is peer:
            self.stats.connect_attempts += 1
            try:
                reader, writer = await self._dial(peer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.connect_failures += 1
                if isinstance(exc, AuthError):
                    self.stats.auth_failures += 1
                self._note_failure(peer, describe(exc))
                if peer.queue:
                    self._report_unreachable(peer.id)
                await asyncio.sleep(self._jitter(backoff))
                backoff = min(backoff * 2, self.backoff_max)
                continue
            backoff = self.backoff_initial
            self.stats.connections_established += 1
            if peer.failing:
                log.info("connected to %s at %s", peer.id, peer.address)
            else:
                log.debug("connected to %s at %s", peer.id, peer.address)
            peer.failing = False
            peer.last_error = ""
            try:
                await pump(peer, reader, writer, self.stats)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_failure(peer, f"connection lost: {describe(exc)}")
            finally:
                peer.connected = False
                close_writer(writer, abort=True)
            if self._closed or self._peers.get(peer.id) is not peer:
                return
            self._report_unreachable(peer.id)
            await asyncio.sleep(self._jitter(backoff))

    def _note_failure(self, peer: Peer, reason: str) -> None:
        # Warn when an outage starts or its cause changes; stay quiet while it lasts.
        if not peer.failing or reason != peer.last_error:
            log.warning("peer %s at %s: %s", peer.id, peer.address, reason)
        else:
            log.debug("peer %s at %s: %s", peer.id, peer.address, reason)
        peer.failing = True
        peer.last_error = reason

    async def _dial(self, peer: Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.handshake_timeout):
                reader, writer = await asyncio.open_connection(
                    peer.host,
                    peer.port,
                    limit=STREAM_LIMIT,
                    ssl=self._tls.client if self._tls else None,
                    server_hostname="" if self._tls else None,
                )
                await handshake.dial(
                    reader,
                    writer,
                    node_id=self.node_id,
                    peer_id=peer.id,
                    cluster_id=self.cluster_id,
                    secret=self._secret,
                    tls=self._tls is not None,
                )
        except BaseException:
            close_writer(writer, abort=True)
            raise
        set_keepalive(writer)
        return reader, writer

    def _report_unreachable(self, pid: NodeId) -> None:
        self._notify(self.on_unreachable, pid)

    @staticmethod
    def _notify(callback: OnUnreachable | None, pid: NodeId) -> None:
        if callback is None:
            return
        try:
            callback(pid)
        except Exception:
            log.exception("%s(%s) raised", getattr(callback, "__name__", "callback"), pid)

    # ------------------------------------------------------------------ inbound

    async def _handle_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inbound_tasks.add(task)
        addr = peername(writer)
        conn: Inbound | None = None
        try:
            if self._closed:
                return
            if self._pending_handshakes >= MAX_PENDING_HANDSHAKES:
                log.warning("refusing connection from %s: too many pending handshakes", addr)
                return
            self._pending_handshakes += 1
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    if self._tls is not None:
                        # TLS is started here rather than by the server so that a failed
                        # handshake is logged and counted, and TLS handshakes share the
                        # pending-handshake cap and timeout. start_tls resumes reading.
                        await writer.start_tls(self._tls.server)
                    else:
                        cast(asyncio.ReadTransport, writer.transport).resume_reading()
                    peer_id = await handshake.accept(
                        reader,
                        writer,
                        addr,
                        node_id=self.node_id,
                        cluster_id=self.cluster_id,
                        secret=self._secret,
                        tls=self._tls is not None,
                        knows=self._knows,
                    )
            finally:
                self._pending_handshakes -= 1
            if peer_id is None:
                log.debug("connection from %s closed before hello", addr)
                return
            conn = Inbound(peer_id, addr, writer)
            for old in self._inbound.get(peer_id, ()):
                old.superseded = True
                close_writer(old.writer, abort=True)
            self._inbound.setdefault(peer_id, set()).add(conn)
            self.stats.connections_accepted += 1
            set_keepalive(writer)
            log.debug("accepted connection from %s at %s", peer_id, addr)
            await self._read_messages(reader, conn)
        except ProtocolError as exc:
            self.stats.protocol_errors += 1
            who = f"{conn.peer_id} at {addr}" if conn else addr
            log.warning("closing connection from %s: %s", who, exc)
        except HandshakeError as exc:
            if isinstance(exc, AuthError):
                self.stats.auth_failures += 1
            log.warning("rejected connection from %s: %s", addr, exc)
        except ssl.SSLError as exc:
            self.stats.auth_failures += 1
            log.warning("rejected connection from %s: TLS handshake failed: %s", addr, exc)
        except TimeoutError:
            log.info("closing connection from %s: handshake timed out", addr)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            who = f"{conn.peer_id} at {addr}" if conn else addr
            log.debug("connection from %s closed: %s", who, describe(exc))
        except asyncio.CancelledError:
            pass  # close(); fall through to cleanup
        except Exception:
            log.exception("unexpected error on connection from %s", addr)
        finally:
            if conn is not None:
                conns = self._inbound.get(conn.peer_id)
                if conns is not None:
                    conns.discard(conn)
                    if not conns:
                        del self._inbound[conn.peer_id]
                if not conn.superseded and not self._closed:
                    self._notify(self.on_disconnected, conn.peer_id)
            close_writer(writer, abort=True)
            if task is not None:
                self._inbound_tasks.discard(task)

    def _knows(self, peer_id: NodeId) -> bool:
        """Whether ``peer_id`` may connect: a member, or anyone if so configured."""
        return self.allow_unknown_peers or peer_id in self._peers

    async def _read_messages(self, reader: asyncio.StreamReader, conn: Inbound) -> None:
        stats = self.stats
        pid = conn.peer_id
        me = self.node_id
        while True:
            payload = await read_frame(reader, self.max_frame)
            try:
                m = decode_message(payload)
            except CodecError as exc:
                raise ProtocolError(f"undecodable message: {exc}") from None
            if conn.superseded:
                return
            name = TYPE_NAMES[int(m.type)]
            if m.frm != pid:
                stats.dropped["spoofed"] += 1
                self._warn_once(conn, "spoofed", "dropping %s claiming frm=%r", name, m.frm)
                continue
            if m.to != me:
                stats.dropped["misaddressed"] += 1
                self._warn_once(conn, "misaddressed", "dropping %s addressed to %r", name, m.to)
                continue
            stats.received_messages[name] += 1
            stats.received_bytes[name] += len(payload) + HEADER_LEN
            faults = self._faults
            if pid in faults.no_recv:
                stats.dropped["fault"] += 1
                continue
            line = self._in_delay.get(pid)
            if faults.delay > 0 or (line is not None and line.items):
                if line is None:
                    line = self._in_delay[pid] = DelayLine(self._get_loop(), self._deliver_delayed)
                line.add(m, faults.delay)
            else:
                self._deliver(m)

    def _warn_once(self, conn: Inbound, key: str, fmt: str, *args: Any) -> None:
        if key in conn.warned:
            log.debug("from %s at %s: " + fmt, conn.peer_id, conn.addr, *args)
            return
        conn.warned.add(key)
        log.warning(
            "from %s at %s: " + fmt + " (further ones on this connection logged at debug)",
            conn.peer_id,
            conn.addr,
            *args,
        )

    def _deliver_delayed(self, m: Message) -> None:
        if self._closed:
            self.stats.dropped["closed"] += 1
        elif m.frm in self._faults.no_recv:
            self.stats.dropped["fault"] += 1
        else:
            self._deliver(m)

    def _deliver(self, m: Message) -> None:
        try:
            self.on_message(m)
        except Exception:
            log.exception("on_message raised for %s from %s", TYPE_NAMES[int(m.type)], m.frm)

    def _close_inbound(self, pid: NodeId) -> None:
        for conn in self._inbound.pop(pid, ()):
            conn.superseded = True
            close_writer(conn.writer, abort=True)
        line = self._in_delay.pop(pid, None)
        if line is not None:
            self.stats.dropped["peer_removed"] += len(line.cancel())

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()


def type_name(t: Any) -> str:
    try:
        return TYPE_NAMES[int(t)]
    except (KeyError, TypeError, ValueError):
        return str(t)
