"""Asyncio TCP transport carrying Raft messages between nodes.

Model
-----
Every node dials one *outbound* connection to each peer and sends its messages over
it; connections a node *accepts* are read-only from its point of view (node A talks to
B over A's connection to B, B answers over B's connection to A). Nothing here blocks
or raises into the Raft node: :meth:`PeerTransport.send` only encodes and queues, and
per-peer tasks connect, reconnect with exponential backoff and jitter, and write.

Framing: a 4-byte big-endian length, then the payload. After the handshake every
payload is one :func:`raft_core.codec.encode_message` encoding. Handshake frames are
msgpack arrays (``bin`` for byte strings), at most ``HANDSHAKE_MAX_FRAME`` bytes::

    dialer   -> acceptor  HELLO   [1, version, cluster_id|nil, dialer_id, target_id, nonce_d]
    acceptor -> dialer    WELCOME [2, version, cluster_id|nil, acceptor_id, nonce_a, mac_a]
    dialer   -> acceptor  AUTH    [3, mac_d]
    acceptor -> dialer    OK      [4]
    acceptor -> dialer    REJECT  [5, code, reason]   (instead of WELCOME/OK; then close;
                                                       code 1 = configuration, 2 = auth)

With a cluster secret, nonces are 32 random bytes and
``mac_x = HMAC-SHA256(secret, msgpack([role_x, version, cluster_id, dialer_id,
acceptor_id, nonce_d, nonce_a]))`` with ``role_x`` ``"acceptor"``/``"dialer"``, so each
side proves knowledge of the secret over both fresh nonces and both ids, and a proof
cannot be reflected back. Without a secret the nonces and MACs are empty, and a node
with a secret refuses a peer without one (and vice versa). The acceptor checks the
dialer means to reach *it* (``target_id``) and the dialer checks it reached the peer it
meant (``acceptor_id``): a stale address cannot deliver messages to the wrong node.

Note: the challenge-response authenticates connection set-up only; frames after it are
not individually authenticated or encrypted. For that, use mutual TLS (``tls=``, see
:mod:`raft_core.node.tls`): every connection is then TLS with certificates from the
cluster's CA on both sides, a dialer without one is refused in the TLS handshake before
any frame is read, and after HELLO each side checks that the other's certificate names
the node id it claims. The secret handshake still runs inside TLS if both are set.
:attr:`PeerTransport.peer_auth` says which protection is on: ``"tls"``, ``"secret"``
or ``"none"`` (anything that can reach the port can then speak Raft).

Inbound messages whose ``frm`` differs from the connection's authenticated id, or whose
``to`` is not this node, are dropped with a warning (once per connection). A peer that
sends garbage (bad frame, over-size frame, undecodable message) has its connection
closed with a single warning naming its address; nothing else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
import socket
import ssl
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack

from raft_core.codec import MAX_NODE_ID_LEN, CodecError, decode_message, encode_message
from raft_core.node.tls import PeerTLS, cert_names
from raft_core.types import Message, MessageType, NodeId

from .address import parse_address

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HANDSHAKE_MAX_FRAME",
    "PROTOCOL_VERSION",
    "PeerTransport",
    "TransportStats",
    "parse_address",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 64 << 20
HANDSHAKE_MAX_FRAME = 4096
NONCE_BYTES = 32
MAX_PENDING_HANDSHAKES = 128

_HELLO, _WELCOME, _AUTH, _OK, _REJECT = 1, 2, 3, 4, 5
_REJECT_CONFIG, _REJECT_AUTH = 1, 2  # REJECT codes
_STREAM_LIMIT = 1 << 20  # StreamReader buffer high-water mark
_HEADER_LEN = 4

_TYPE_NAMES = {int(t): t.name for t in MessageType}

OnMessage = Callable[[Message], None]
OnUnreachable = Callable[[NodeId], None]


# --------------------------------------------------------------------------- helpers


class _ProtocolError(Exception):
    """The remote end broke the protocol (garbage, over-size frame, bad message)."""


class _HandshakeError(Exception):
    """The handshake failed for a configuration reason (ids, cluster, version)."""


class _AuthError(_HandshakeError):
    """Authentication failed or the two ends disagree on whether to authenticate."""


class _Rejected(_HandshakeError):
    """The acceptor sent REJECT with a reason."""


def _fmt_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peername(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return _fmt_addr(str(peer[0]), int(peer[1]))
    return str(peer)


def _cert_ids(writer: asyncio.StreamWriter) -> set[str]:
    """Node ids the other side's (verified) TLS certificate names."""
    return cert_names(writer.get_extra_info("peercert"))


def _wrong_cert(claimed: str, names: set[str], who: str) -> str:
    """Why a certificate from the cluster's CA is still refused: it is another node's
    (copied to the wrong host, or a host posing as another member)."""
    return (
        f"{who} claims to be {claimed!r} but its TLS certificate names "
        f"{', '.join(sorted(names)) or 'nothing'}: a certificate issued for another node; "
        f"give {claimed} its own (raft-manager certs issue {claimed})"
    )


def _valid_id(v: Any) -> bool:
    return type(v) is str and 0 < len(v) <= MAX_NODE_ID_LEN


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(_HEADER_LEN, "big") + payload


def _mac(
    secret: bytes,
    role: str,
    cluster_id: str | None,
    dialer: str,
    acceptor: str,
    nonce_d: bytes,
    nonce_a: bytes,
) -> bytes:
    transcript = msgpack.packb(
        [role, PROTOCOL_VERSION, cluster_id, dialer, acceptor, nonce_d, nonce_a],
        use_bin_type=True,
    )
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def _set_keepalive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def _close(writer: asyncio.StreamWriter | None, *, abort: bool = False) -> None:
    if writer is None:
        return
    with contextlib.suppress(Exception):
        if abort:
            writer.transport.abort()
        else:
            writer.close()


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    """Read one frame. ``IncompleteReadError`` on EOF; ``_ProtocolError`` if over ``limit``."""
    header = await reader.readexactly(_HEADER_LEN)
    n = int.from_bytes(header, "big")
    if n > limit:
        raise _ProtocolError(f"frame of {n} bytes exceeds the limit of {limit}")
    return await reader.readexactly(n)


def _unpack_handshake(payload: bytes, expected: int, shape: tuple[Any, ...]) -> list:
    """Decode a handshake frame of kind ``expected`` whose fields match ``shape`` types.

    A REJECT frame raises :class:`_Rejected`; anything malformed raises
    :class:`_ProtocolError`.
    """
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            max_str_len=4 * 256,
            max_bin_len=64,
            max_array_len=8,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:
        raise _ProtocolError(f"malformed handshake frame ({type(exc).__name__})") from None
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise _ProtocolError("malformed handshake frame")
    if (
        obj[0] == _REJECT
        and expected != _HELLO
        and len(obj) == 3
        and type(obj[1]) is int
        and type(obj[2]) is str
    ):
        cls = _AuthError if obj[1] == _REJECT_AUTH else _Rejected
        raise cls(f"rejected by peer: {obj[2][:200]}")
    if obj[0] != expected or len(obj) != len(shape) + 1:
        raise _ProtocolError(f"expected handshake frame kind {expected}, got {obj[0]}")
    for value, kinds in zip(obj[1:], shape, strict=True):
        if type(value) not in kinds:
            raise _ProtocolError(f"malformed handshake frame kind {expected}")
    return obj


_HELLO_SHAPE = ((int,), (str, type(None)), (str,), (str,), (bytes,))
_WELCOME_SHAPE = ((int,), (str, type(None)), (str,), (bytes,), (bytes,))
_AUTH_SHAPE = ((bytes,),)
_OK_SHAPE: tuple[Any, ...] = ()


# ----------------------------------------------------------------------------- stats


@dataclass
class TransportStats:
    """Counters for metrics. ``*_messages``/``*_bytes`` are keyed by message type name;
    ``dropped`` by reason: ``queue_full``, ``fault``, ``unknown_peer``, ``bad_sender``,
    ``unencodable``, ``oversize``, ``spoofed``, ``misaddressed``, ``peer_removed``,
    ``closed``."""

    sent_messages: Counter[str] = field(default_factory=Counter)
    sent_bytes: Counter[str] = field(default_factory=Counter)
    received_messages: Counter[str] = field(default_factory=Counter)
    received_bytes: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    connect_attempts: int = 0
    connect_failures: int = 0
    connections_established: int = 0
    connections_accepted: int = 0
    auth_failures: int = 0
    protocol_errors: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A plain, JSON-friendly copy (totals included)."""
        out: dict[str, Any] = {}
        for name in ("sent_messages", "sent_bytes", "received_messages", "received_bytes"):
            c: Counter[str] = getattr(self, name)
            out[name] = dict(c)
            out[name + "_total"] = sum(c.values())
        out["dropped"] = dict(self.dropped)
        out["dropped_total"] = sum(self.dropped.values())
        for name in (
            "connect_attempts",
            "connect_failures",
            "connections_established",
            "connections_accepted",
            "auth_failures",
            "protocol_errors",
        ):
            out[name] = getattr(self, name)
        return out


# ----------------------------------------------------------------------- delay lines


class _DelayLine:
    """FIFO that releases items ``delay`` seconds after they were added, in order.

    Due times never decrease, so lowering the delay cannot let a later item overtake
    an earlier one.
    """

    __slots__ = ("deliver", "items", "last_due", "loop", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[Any], None]) -> None:
        self.loop = loop
        self.deliver = deliver
        self.items: deque[tuple[float, Any]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.last_due = 0.0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Any, delay: float) -> None:
        due = max(self.loop.time() + delay, self.last_due)
        self.last_due = due
        self.items.append((due, item))
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        items = self.items
        # The timer was armed for the head, so it is due (the loop may fire timers up
        # to one clock resolution early); anything else due by now goes with it.
        _, item = items.popleft()
        self.deliver(item)
        now = self.loop.time()
        while items and items[0][0] <= now:
            _, item = items.popleft()
            self.deliver(item)
        if items and self.timer is None:
            self.timer = self.loop.call_at(items[0][0], self._fire)

    def cancel(self) -> list[Any]:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        dropped = [item for _, item in self.items]
        self.items.clear()
        return dropped


# ----------------------------------------------------------------------------- peers


class _Peer:
    """Outbound state for one peer: its queue and the task that owns its connection."""

    __slots__ = (
        "connected",
        "failing",
        "host",
        "id",
        "last_error",
        "out_delay",
        "port",
        "queue",
        "queue_full_warned",
        "queued_bytes",
        "task",
        "waiter",
        "writer",
    )

    def __init__(self, peer_id: NodeId, host: str, port: int) -> None:
        self.id = peer_id
        self.host = host
        self.port = port
        self.queue: deque[tuple[str, bytes]] = deque()
        self.queued_bytes = 0
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        # The open connection while the pump is idle on it (waiting for frames):
        # ``flush`` may then write from the caller without waking the pump.
        self.writer: asyncio.StreamWriter | None = None
        self.connected = False
        self.failing = False
        self.last_error = ""
        self.queue_full_warned = False
        self.out_delay: _DelayLine | None = None

    @property
    def address(self) -> str:
        return _fmt_addr(self.host, self.port)

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def take_frames(self, stats: TransportStats) -> list[bytes]:
        """Everything queued, framed for one ``writelines``; the queue is emptied."""
        parts: list[bytes] = []
        queue = self.queue
        while queue:
            name, payload = queue.popleft()
            parts.append(len(payload).to_bytes(_HEADER_LEN, "big"))
            parts.append(payload)
            stats.sent_messages[name] += 1
            stats.sent_bytes[name] += len(payload) + _HEADER_LEN
        self.queued_bytes = 0
        self.queue_full_warned = False
        return parts

    def flush(self, stats: TransportStats) -> None:
        """Send what is queued now, from the caller, when the connection is idle and
        its buffer empty; otherwise the pump sends it (it also waits out back-pressure).

        Writing here saves a loop iteration per batch: a leader's appends are on the
        wire before it blocks in its own fsync, and an acknowledgement leaves as soon
        as it may.
        """
        w, waiter = self.writer, self.waiter
        if (
            w is None
            or waiter is None
            or waiter.done()  # the pump is about to run (or the connection dropped)
            or w.transport.is_closing()
            or w.transport.get_write_buffer_size()
        ):
            self.wake()
            return
        w.writelines(self.take_frames(stats))


class _HeldStreamProtocol(asyncio.StreamReaderProtocol):
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


class _Inbound:
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
        if not _valid_id(node_id):
            raise ValueError(f"node id must be a 1..{MAX_NODE_ID_LEN} character string")
        if cluster_id is not None and not _valid_id(cluster_id):
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
        self._peers: dict[NodeId, _Peer] = {}
        self._inbound: dict[NodeId, set[_Inbound]] = {}
        self._inbound_tasks: set[asyncio.Task[Any]] = set()
        self._peer_tasks: set[asyncio.Task[Any]] = set()
        self._pending_handshakes = 0
        self._in_delay: dict[NodeId, _DelayLine] = {}
        self._drop: frozenset[NodeId] = frozenset()
        self._drop_out: frozenset[NodeId] = frozenset()
        self._drop_in: frozenset[NodeId] = frozenset()
        self._no_send: frozenset[NodeId] = frozenset()  # drop | drop_out
        self._no_recv: frozenset[NodeId] = frozenset()  # drop | drop_in
        self._delay = 0.0
        self._started = False
        self._bound_port: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on ``listen_host:listen_port`` and start dialing known peers."""
        if self._started:
            raise RuntimeError("transport already started")
        loop = self._loop = asyncio.get_running_loop()

        def accept() -> _HeldStreamProtocol:
            reader = asyncio.StreamReader(limit=_STREAM_LIMIT, loop=loop)
            return _HeldStreamProtocol(reader, self._handle_inbound, loop=loop)

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
                _close(conn.writer, abort=True)
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
            if not _valid_id(pid):
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
            peer = _Peer(pid, host, port)
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
        self._drop = frozenset(drop)
        self._drop_out = frozenset(drop_out)
        self._drop_in = frozenset(drop_in)
        self._no_send = self._drop | self._drop_out
        self._no_recv = self._drop | self._drop_in
        self._delay = delay_ms / 1000.0
        for pid in self._no_send:
            peer = self._peers.get(pid)
            if peer is not None and peer.queue:
                self.stats.dropped["fault"] += len(peer.queue)
                peer.queue.clear()
                peer.queued_bytes = 0

    @property
    def faults(self) -> dict[str, Any]:
        """The fault set as :meth:`set_faults` took it (ids sorted)."""
        return {
            "drop": sorted(self._drop),
            "drop_out": sorted(self._drop_out),
            "drop_in": sorted(self._drop_in),
            "delay_ms": round(self._delay * 1000),
        }

    # ------------------------------------------------------------------ sending

    def send(self, messages: list[Message]) -> None:
        """Queue messages for their peers. Never blocks, never raises for a message:
        problems are counted in ``stats.dropped`` (and logged)."""
        if self._closed:
            self.stats.dropped["closed"] += len(messages)
            return
        touched: list[_Peer] = []
        for m in messages:
            peer = self._peers.get(m.to)
            if peer is None:
                self.stats.dropped["unknown_peer"] += 1
                log.debug("dropping %s to unknown peer %r", _type_name(m.type), m.to)
                continue
            if m.frm != self.node_id:
                self.stats.dropped["bad_sender"] += 1
                log.error("refusing to send %s claiming to be from %r", _type_name(m.type), m.frm)
                continue
            if m.to in self._no_send:
                self.stats.dropped["fault"] += 1
                continue
            try:
                payload = encode_message(m)
            except Exception as exc:
                self.stats.dropped["unencodable"] += 1
                log.error("cannot encode %s to %s: %s", _type_name(m.type), m.to, exc)
                continue
            if len(payload) > self.max_frame:
                self.stats.dropped["oversize"] += 1
                log.warning(
                    "dropping %s to %s: %d bytes exceeds max frame %d",
                    _type_name(m.type),
                    m.to,
                    len(payload),
                    self.max_frame,
                )
                continue
            item = (_type_name(m.type), payload)
            line = peer.out_delay
            if self._delay > 0 or (line is not None and line.items):
                if line is None:
                    pid = peer.id
                    line = peer.out_delay = _DelayLine(
                        self._get_loop(), lambda it, pid=pid: self._enqueue_delayed(pid, it)
                    )
                if len(line) >= self.queue_limit:
                    self.stats.dropped["queue_full"] += 1
                    continue
                line.add(item, self._delay)
            elif self._enqueue(peer, item) and peer not in touched:
                touched.append(peer)
        for peer in touched:
            peer.flush(self.stats)

    def _enqueue_delayed(self, pid: NodeId, item: tuple[str, bytes]) -> None:
        peer = self._peers.get(pid)
        if peer is None or self._closed:
            self.stats.dropped["peer_removed"] += 1
        elif pid in self._no_send:
            self.stats.dropped["fault"] += 1
        elif self._enqueue(peer, item):
            peer.flush(self.stats)

    def _enqueue(self, peer: _Peer, item: tuple[str, bytes]) -> bool:
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

    def _spawn(self, peer: _Peer) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run_peer(peer), name=f"raft-transport-{self.node_id}->{peer.id}"
        )
        peer.task = task
        self._peer_tasks.add(task)
        task.add_done_callback(self._peer_tasks.discard)

    def _discard_peer(self, peer: _Peer, reason: str) -> None:
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

    async def _run_peer(self, peer: _Peer) -> None:
        backoff = self.backoff_initial
        while not self._closed and self._peers.get(peer.id) is peer:
            self.stats.connect_attempts += 1
            try:
                reader, writer = await self._dial(peer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.connect_failures += 1
                if isinstance(exc, _AuthError):
                    self.stats.auth_failures += 1
                self._note_failure(peer, _describe(exc))
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
                await self._pump(peer, reader, writer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_failure(peer, f"connection lost: {_describe(exc)}")
            finally:
                peer.connected = False
                _close(writer, abort=True)
            if self._closed or self._peers.get(peer.id) is not peer:
                return
            self._report_unreachable(peer.id)
            await asyncio.sleep(self._jitter(backoff))

    def _note_failure(self, peer: _Peer, reason: str) -> None:
        # Warn when an outage starts or its cause changes; stay quiet while it lasts.
        if not peer.failing or reason != peer.last_error:
            log.warning("peer %s at %s: %s", peer.id, peer.address, reason)
        else:
            log.debug("peer %s at %s: %s", peer.id, peer.address, reason)
        peer.failing = True
        peer.last_error = reason

    async def _dial(self, peer: _Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.handshake_timeout):
                reader, writer = await asyncio.open_connection(
                    peer.host,
                    peer.port,
                    limit=_STREAM_LIMIT,
                    ssl=self._tls.client if self._tls else None,
                    server_hostname="" if self._tls else None,
                )
                secret = self._secret
                nonce_d = os.urandom(NONCE_BYTES) if secret else b""
                hello = [_HELLO, PROTOCOL_VERSION, self.cluster_id, self.node_id, peer.id, nonce_d]
                writer.write(_frame(msgpack.packb(hello, use_bin_type=True)))
                await writer.drain()
                _, version, cluster, acceptor, nonce_a, mac_a = await self._read_hs(
                    reader, _WELCOME, _WELCOME_SHAPE
                )
                if version != PROTOCOL_VERSION:
                    raise _HandshakeError(f"peer speaks protocol version {version}")
                if cluster != self.cluster_id:
                    raise _HandshakeError(
                        f"cluster id mismatch (peer {cluster!r}, ours {self.cluster_id!r})"
                    )
                if acceptor != peer.id:
                    raise _HandshakeError(f"reached node {acceptor!r}, expected {peer.id!r}")
                if self._tls is not None and peer.id not in (names := _cert_ids(writer)):
                    raise _AuthError(_wrong_cert(peer.id, names, "the peer at " + peer.address))
                if secret is None:
                    if nonce_a or mac_a:
                        raise _AuthError("peer requires a cluster secret; none configured here")
                    mac_d = b""
                else:
                    if not nonce_a or len(nonce_a) != NONCE_BYTES:
                        raise _AuthError("peer has no cluster secret configured")
                    args = (self.cluster_id, self.node_id, peer.id, nonce_d, nonce_a)
                    expected = _mac(secret, "acceptor", *args)
                    if not hmac.compare_digest(expected, mac_a):
                        raise _AuthError("peer failed authentication (cluster secret mismatch?)")
                    mac_d = _mac(secret, "dialer", *args)
                writer.write(_frame(msgpack.packb([_AUTH, mac_d], use_bin_type=True)))
                await writer.drain()
                await self._read_hs(reader, _OK, _OK_SHAPE)
        except BaseException:
            _close(writer, abort=True)
            raise
        _set_keepalive(writer)
        return reader, writer

    async def _read_hs(
        self, reader: asyncio.StreamReader, kind: int, shape: tuple[Any, ...]
    ) -> list:
        try:
            payload = await _read_frame(reader, HANDSHAKE_MAX_FRAME)
        except asyncio.IncompleteReadError:
            raise ConnectionError("connection closed during handshake") from None
        return _unpack_handshake(payload, kind, shape)

    async def _pump(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Write queued frames until the connection breaks. Frames queued during one
        loop iteration leave in a single ``writelines`` call."""
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(reader.read(1))  # acceptor never writes after OK

        def watched(t: asyncio.Task[bytes]) -> None:
            if not t.cancelled():
                t.exception()  # mark retrieved; the loop below reports it
            peer.wake()

        watcher.add_done_callback(watched)
        peer.connected = True
        stats = self.stats
        try:
            while True:
                if watcher.done():
                    if watcher.cancelled() or watcher.exception() is not None:
                        raise ConnectionError("connection lost")
                    if watcher.result():
                        raise _ProtocolError("peer wrote on a send-only connection")
                    raise ConnectionError("closed by peer")
                if not peer.queue:
                    peer.waiter = loop.create_future()
                    peer.writer = writer
                    try:
                        await peer.waiter
                    finally:
                        peer.waiter = None
                        peer.writer = None
                    continue
                writer.writelines(peer.take_frames(stats))
                await writer.drain()
        finally:
            watcher.cancel()

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
        addr = _peername(writer)
        conn: _Inbound | None = None
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
                    peer_id = await self._accept_handshake(reader, writer, addr)
            finally:
                self._pending_handshakes -= 1
            if peer_id is None:
                return
            conn = _Inbound(peer_id, addr, writer)
            for old in self._inbound.get(peer_id, ()):
                old.superseded = True
                _close(old.writer, abort=True)
            self._inbound.setdefault(peer_id, set()).add(conn)
            self.stats.connections_accepted += 1
            _set_keepalive(writer)
            log.debug("accepted connection from %s at %s", peer_id, addr)
            await self._read_messages(reader, conn)
        except _ProtocolError as exc:
            self.stats.protocol_errors += 1
            who = f"{conn.peer_id} at {addr}" if conn else addr
            log.warning("closing connection from %s: %s", who, exc)
        except _HandshakeError as exc:
            if isinstance(exc, _AuthError):
                self.stats.auth_failures += 1
            log.warning("rejected connection from %s: %s", addr, exc)
        except ssl.SSLError as exc:
            self.stats.auth_failures += 1
            log.warning("rejected connection from %s: TLS handshake failed: %s", addr, exc)
        except TimeoutError:
            log.info("closing connection from %s: handshake timed out", addr)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            who = f"{conn.peer_id} at {addr}" if conn else addr
            log.debug("connection from %s closed: %s", who, _describe(exc))
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
            _close(writer, abort=True)
            if task is not None:
                self._inbound_tasks.discard(task)

    async def _accept_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: str
    ) -> NodeId | None:
        try:
            payload = await _read_frame(reader, HANDSHAKE_MAX_FRAME)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise _ProtocolError("truncated handshake frame") from None
            log.debug("connection from %s closed before hello", addr)
            return None
        _, version, cluster, dialer, target, nonce_d = _unpack_handshake(
            payload, _HELLO, _HELLO_SHAPE
        )
        if not _valid_id(dialer):
            raise _ProtocolError("hello carries an invalid node id")

        async def reject(reason: str, exc_type: type[_HandshakeError] = _HandshakeError) -> None:
            code = _REJECT_AUTH if issubclass(exc_type, _AuthError) else _REJECT_CONFIG
            writer.write(_frame(msgpack.packb([_REJECT, code, reason], use_bin_type=True)))
            with contextlib.suppress(Exception):
                await writer.drain()
            raise exc_type(f"{dialer!r}: {reason}")

        if version != PROTOCOL_VERSION:
            await reject(f"unsupported protocol version {version} (this node speaks 1)")
        if cluster != self.cluster_id:
            await reject(f"cluster id mismatch (this node is in {self.cluster_id!r})")
        if target != self.node_id:
            await reject(f"wrong node: this is {self.node_id!r}, not {target!r}")
        if dialer == self.node_id:
            await reject("dialer claims this node's own id")
        if not self.allow_unknown_peers and dialer not in self._peers:
            await reject("unknown peer (not in this node's peer set)")
        if self._tls is not None and dialer not in (names := _cert_ids(writer)):
            await reject(_wrong_cert(dialer, names, "the dialer"), _AuthError)
        secret = self._secret
        if secret is None and nonce_d:
            await reject("authentication offered but no cluster secret configured here", _AuthError)
        if secret is not None and len(nonce_d) != NONCE_BYTES:
            await reject("authentication required (cluster secret)", _AuthError)
        nonce_a = os.urandom(NONCE_BYTES) if secret else b""
        args = (self.cluster_id, dialer, self.node_id, nonce_d, nonce_a)
        mac_a = _mac(secret, "acceptor", *args) if secret else b""
        welcome = [_WELCOME, PROTOCOL_VERSION, self.cluster_id, self.node_id, nonce_a, mac_a]
        writer.write(_frame(msgpack.packb(welcome, use_bin_type=True)))
        await writer.drain()
        try:
            payload = await _read_frame(reader, HANDSHAKE_MAX_FRAME)
        except asyncio.IncompleteReadError:
            raise ConnectionError(f"{dialer!r} closed the connection during handshake") from None
        (_, mac_d) = _unpack_handshake(payload, _AUTH, _AUTH_SHAPE)
        if secret is None:
            if mac_d:
                await reject("authentication failed", _AuthError)
        elif not hmac.compare_digest(_mac(secret, "dialer", *args), mac_d):
            await reject("authentication failed", _AuthError)
        writer.write(_frame(msgpack.packb([_OK], use_bin_type=True)))
        await writer.drain()
        return dialer

    async def _read_messages(self, reader: asyncio.StreamReader, conn: _Inbound) -> None:
        stats = self.stats
        pid = conn.peer_id
        me = self.node_id
        while True:
            payload = await _read_frame(reader, self.max_frame)
            try:
                m = decode_message(payload)
            except CodecError as exc:
                raise _ProtocolError(f"undecodable message: {exc}") from None
            if conn.superseded:
                return
            name = _TYPE_NAMES[int(m.type)]
            if m.frm != pid:
                stats.dropped["spoofed"] += 1
                self._warn_once(conn, "spoofed", "dropping %s claiming frm=%r", name, m.frm)
                continue
            if m.to != me:
                stats.dropped["misaddressed"] += 1
                self._warn_once(conn, "misaddressed", "dropping %s addressed to %r", name, m.to)
                continue
            stats.received_messages[name] += 1
            stats.received_bytes[name] += len(payload) + _HEADER_LEN
            if pid in self._no_recv:
                stats.dropped["fault"] += 1
                continue
            line = self._in_delay.get(pid)
            if self._delay > 0 or (line is not None and line.items):
                if line is None:
                    line = self._in_delay[pid] = _DelayLine(self._get_loop(), self._deliver_delayed)
                line.add(m, self._delay)
            else:
                self._deliver(m)

    def _warn_once(self, conn: _Inbound, key: str, fmt: str, *args: Any) -> None:
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
        elif m.frm in self._no_recv:
            self.stats.dropped["fault"] += 1
        else:
            self._deliver(m)

    def _deliver(self, m: Message) -> None:
        try:
            self.on_message(m)
        except Exception:
            log.exception("on_message raised for %s from %s", _TYPE_NAMES[int(m.type)], m.frm)

    def _close_inbound(self, pid: NodeId) -> None:
        for conn in self._inbound.pop(pid, ()):
            conn.superseded = True
            _close(conn.writer, abort=True)
        line = self._in_delay.pop(pid, None)
        if line is not None:
            self.stats.dropped["peer_removed"] += len(line.cancel())

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()


def _type_name(t: Any) -> str:
    try:
        return _TYPE_NAMES[int(t)]
    except (KeyError, TypeError, ValueError):
        return str(t)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    if isinstance(exc, _HandshakeError | _ProtocolError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
