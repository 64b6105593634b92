"""ReadIndex bookkeeping on the leader (dissertation 6.4).

A read is recorded with the commit index at the time it arrived and a context that
the leader puts on its next heartbeat. Once a quorum has answered a heartbeat carrying
that context, the leader knows it was still the leader when the read arrived, so the
read, and every read queued before it, may be served at its recorded index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import NodeId


@dataclass(slots=True)
class PendingRead:
    index: int
    context: bytes
    acks: set[NodeId] = field(default_factory=set)


class ReadOnlyQueue:
    __slots__ = ("_by_context", "_queue")

    def __init__(self) -> None:
        self._by_context: dict[bytes, PendingRead] = {}
        self._queue: list[bytes] = []

    def add(self, index: int, context: bytes, self_id: NodeId) -> bool:
        """Queue a read; False if the context is already pending (a duplicate)."""
        if context in self._by_context:
            return False
        self._by_context[context] = PendingRead(index, context, {self_id})
        self._queue.append(context)
        return True

    def ack(self, frm: NodeId, context: bytes) -> set[NodeId] | None:
        read = self._by_context.get(context)
        if read is None:
            return None
        read.acks.add(frm)
        return read.acks

    def release_through(self, context: bytes) -> list[PendingRead]:
        """Remove and return all reads queued up to and including ``context``."""
        if context not in self._by_context:
            return []
        n = self._queue.index(context) + 1
        released = [self._by_context.pop(c) for c in self._queue[:n]]
        del self._queue[:n]
        return released

    def last_context(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def drain(self) -> list[bytes]:
        """Forget every pending read (the leader stepped down) and return their contexts."""
        contexts = list(self._queue)
        self._queue.clear()
        self._by_context.clear()
        return contexts

    def __len__(self) -> int:
        return len(self._queue)
