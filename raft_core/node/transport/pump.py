"""The peer pump: one outbound connection per peer, fed from a queue. A batch of
frames leaves in one ``writelines``, from the caller when the connection is idle
(``Peer.flush``), else from the pump task (``pump``), which also waits out
back-pressure and notices the connection closing."""

from __future__ import annotations

import asyncio
from collections import deque

from raft_core.types import NodeId

from .faults import DelayLine
from .handshake import HEADER_LEN, ProtocolError, fmt_addr
from .stats import TransportStats


class Peer:
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
        self.out_delay: DelayLine | None = None

    @property
    def address(self) -> str:
        return fmt_addr(self.host, self.port)

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
            parts.append(len(payload).to_bytes(HEADER_LEN, "big"))
            parts.append(payload)
            stats.sent_messages[name] += 1
            stats.sent_bytes[name] += len(payload) + HEADER_LEN
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


async def pump(
    peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: TransportStats
) -> None:
    """Write ``peer``'s queued frames until the connection breaks. Frames queued during
    one loop iteration leave in a single ``writelines`` call."""
    loop = asyncio.get_running_loop()
    watcher = loop.create_task(reader.read(1))  # acceptor never writes after OK

    def watched(t: asyncio.Task[bytes]) -> None:
        if not t.cancelled():
            t.exception()  # mark retrieved; the loop below reports it
        peer.wake()

    watcher.add_done_callback(watched)
    peer.connected = True
    try:
        while True:
            if watcher.done():
                if watcher.cancelled() or watcher.exception() is not None:
                    raise ConnectionError("connection lost")
                if watcher.result():
                    raise ProtocolError("peer wrote on a send-only connection")
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
